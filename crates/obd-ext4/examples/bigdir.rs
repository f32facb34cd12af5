//! Makes an 8 GiB image with one directory of N empty files, for inspecting htrees with
//! debugfs: `cargo run --example bigdir -- PATH N`.
use obd_ext4::{Attrs, Ext4, MkfsOptions, Timestamp, ROOT_INO};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[2].parse().expect("entry count");
    let dev = obd_format::io::RawImage::create(&args[1], 8 << 30).expect("create image");
    let mut fs = Ext4::mkfs(dev, &MkfsOptions::default()).expect("mkfs");
    let a = Attrs::new(0o644, 0, 0, Timestamp::from_secs(0));
    let d = fs.mkdir(ROOT_INO, b"big", &a).expect("mkdir");
    for i in 0..n {
        let name = format!("entry-{i:06}-{}", "x".repeat(i % 23));
        fs.create_file(d, name.as_bytes(), &a, 0, &mut std::io::empty())
            .expect("create");
    }
    fs.flush().expect("flush");
}
