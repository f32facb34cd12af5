//! `obd_tar::apply_tar` of arbitrary bytes onto a fresh 16 MiB in-memory ext4, then a flush,
//! a re-open and a bounded walk of the result. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obd_ext4::Ext4;
use obdconv_fuzz::{empty_fs, walk};

fuzz_target!(|data: &[u8]| {
    let Ok(mut fs) = Ext4::open(empty_fs()) else {
        panic!("the base image must open");
    };
    if obd_tar::apply_tar(&mut fs, data).is_err() {
        return;
    }
    if fs.flush().is_err() {
        return;
    }
    if let Ok(mut fs) = Ext4::open(fs.into_device()) {
        let _ = walk(&mut fs);
    }
});
