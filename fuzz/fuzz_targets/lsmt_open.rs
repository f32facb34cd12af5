//! A layer file over arbitrary bytes: `detect::unwrap` (tar wrapper, ZFile), `LsmtRo::open`
//! (header, index, trailer checks), then reads at the start, at each of the first index
//! segments and at the end of the virtual device.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use obd_format::lsmt::LsmtRo;
use obd_format::{detect, ReadAt};

fuzz_target!(|data: &[u8]| {
    let Ok(u) = detect::unwrap(Arc::new(data.to_vec())) else {
        return;
    };
    let Ok(ro) = LsmtRo::open(u.payload) else {
        return;
    };
    let _ = (
        ro.header(),
        ro.trailer(),
        ro.raw_index_entries(),
        ro.is_warp(),
    );
    let size = ro.size();
    let mut buf = vec![0u8; 64 << 10];
    let _ = ro.read_at(&mut buf, 0);
    let offs: Vec<u64> = ro.index().iter().take(32).map(|s| s.offset * 512).collect();
    for off in offs {
        let _ = ro.read_at(&mut buf[..8192], off.saturating_sub(512));
    }
    let _ = ro.read_at(&mut buf[..4096], size.saturating_sub(1000));
    let _ = ro.read_at(&mut buf[..512], size);
});
