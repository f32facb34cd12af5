//! dir_nlink: a directory with more than 64998 subdirectories gets a link count of 1, and
//! returns to an exact count when they are removed.

mod common;

use obd_ext4::{Attrs, Ext4, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::RawImage;

#[test]
fn many_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut fs = Ext4::mkfs(
        RawImage::create(&img, 2 << 30).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let a = Attrs::new(0o755, 0, 0, Timestamp::from_secs(0));
    let top = fs.mkdir(ROOT_INO, b"top", &a).unwrap();
    for i in 0..65_000 {
        fs.mkdir(top, format!("{i}").as_bytes(), &a).unwrap();
    }
    fs.flush().unwrap();
    assert_eq!(fs.metadata(top).unwrap().links, 1);
    drop(fs);
    let tools = common::tools_available("many_subdirectories");
    if tools {
        common::fsck_clean(&img);
    }
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    let top = fs.lookup(ROOT_INO, b"top").unwrap().unwrap();
    for i in 0..10 {
        fs.remove_all(top, format!("{i}").as_bytes()).unwrap();
    }
    fs.flush().unwrap();
    assert_eq!(fs.metadata(top).unwrap().links, 64_992);
    drop(fs);
    if tools {
        common::fsck_clean(&img);
    }
}
