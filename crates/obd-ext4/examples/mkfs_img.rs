//! Makes an image with the engine's mkfs: `cargo run --example mkfs_img -- PATH SIZE_BYTES`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: u64 = args[2].parse().expect("size in bytes");
    let dev = obd_format::io::RawImage::create(&args[1], size).expect("create image");
    obd_ext4::Ext4::mkfs(dev, &obd_ext4::MkfsOptions::default()).expect("mkfs");
}
