//! `Ext4::open` over a fuzzed 16 MiB image (input: sparse records of
//! `[block u16][offset u16][len u16][bytes]`, see `obdconv_fuzz::encode_image`), then a
//! bounded walk: `read_dir`, `lookup`, `metadata`, `read_file`, `read_link`, `xattrs`, and
//! `stats`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obd_ext4::Ext4;
use obdconv_fuzz::{decode_image, walk};

fuzz_target!(|data: &[u8]| {
    let Ok(mut fs) = Ext4::open(decode_image(data)) else {
        return;
    };
    let _ = fs.stats();
    let _ = walk(&mut fs);
    let _ = fs.resolve(b"/etc/fast", true);
});
