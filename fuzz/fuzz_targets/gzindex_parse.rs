//! A fuzzed `gzip.meta` over a fixed, valid gzip blob: `GzIndex::parse_bytes`, then
//! `GzIndexedFile` reads at and between the access points (windows, primed bits, cached
//! cursors), compared with the real data when the index is the true one.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use obd_format::gzindex::{GzIndex, GzIndexedFile};
use obd_format::ReadAt;
use obdconv_fuzz::gzip_fixture;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = GzIndex::parse_bytes(data) else {
        return;
    };
    let (gz, _plain) = gzip_fixture();
    let _ = index.find(12345);
    let gz: Arc<dyn ReadAt> = Arc::new(gz.clone());
    let meta: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let Ok(f) = GzIndexedFile::with_index(gz, meta, index) else {
        return;
    };
    let size = f.size();
    let points: Vec<u64> = f.index().entries.iter().take(8).map(|e| e.de_pos).collect();
    let mut buf = vec![0u8; 3000];
    for p in points {
        let _ = f.read_at(&mut buf, p);
        let _ = f.read_at(&mut buf, p + 1000);
    }
    let _ = f.read_at(&mut buf, size.saturating_sub(100));
    let _ = f.read_at(&mut buf, 0);
});
