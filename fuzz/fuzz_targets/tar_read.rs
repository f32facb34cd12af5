//! `obd_tar::TarReader` over arbitrary bytes: reads every entry and all of its data
//! (ustar, GNU long names and sparse maps, PAX records, base-256 numbers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use obd_tar::TarReader;

fuzz_target!(|data: &[u8]| {
    let mut r = TarReader::new(data);
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match r.next_entry() {
            Ok(Some(e)) => {
                let _ = e.display_name();
                loop {
                    match r.read_data(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
