//! `ZFileReader` over arbitrary bytes: detect, open (header, trailer, block index), then
//! block reads, unaligned `read_at`s across block boundaries and a bounded `verify_all`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use obd_format::zfile::ZFileReader;
use obd_format::ReadAt;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let _ = ZFileReader::detect(src.as_ref());
    let Ok(z) = ZFileReader::open(src) else {
        return;
    };
    let _ = (z.header(), z.algorithm());
    let blocks = z.block_count();
    let mut out = Vec::new();
    for i in 0..blocks.min(16) {
        let _ = z.compressed_len(i);
        let _ = z.read_block(i, &mut out);
    }
    let size = z.size();
    let mut buf = vec![0u8; 10_000];
    for off in [0, 1000, 4095, size / 2, size.saturating_sub(5000), size] {
        let _ = z.read_at(&mut buf, off);
    }
    if blocks <= 64 {
        let _ = z.verify_all();
    }
});
