//! `obd_registry::parse_www_authenticate` over arbitrary header values (one per line),
//! looking up the usual parameters of each challenge; each line is also tried as an image
//! reference (`Reference::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use obd_registry::{parse_www_authenticate, Reference};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for c in parse_www_authenticate(text.lines()) {
        let _ = (c.param("realm"), c.param("service"), c.param("scope"));
    }
    for line in text.lines().take(8) {
        let _ = Reference::parse(line);
    }
});
