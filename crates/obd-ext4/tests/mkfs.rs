//! mkfs at several sizes: e2fsck clean, dumpe2fs counts, determinism.

mod common;

use obd_ext4::{Ext4, MkfsOptions};
use obd_format::io::RawImage;

fn make(size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let dev = RawImage::create(&img, size).unwrap();
    let fs = Ext4::mkfs(dev, &MkfsOptions::default()).unwrap();
    drop(fs);
    (dir, img)
}

#[test]
fn mkfs_64g_counts_and_fsck() {
    if !common::tools_available("mkfs_64g_counts_and_fsck") {
        return;
    }
    let (_d, img) = make(64 << 30);
    common::fsck_clean(&img);
    let h = common::dumpe2fs(&img);
    assert_eq!(common::field(&h, "Block count"), "16777216");
    assert_eq!(common::field(&h, "Inode count"), "4194304");
    assert_eq!(common::field(&h, "Reserved block count"), "838860");
    assert_eq!(common::field(&h, "Reserved GDT blocks"), "1024");
    assert_eq!(common::field(&h, "Inodes per group"), "8192");
    assert_eq!(common::field(&h, "Inode blocks per group"), "512");
    assert_eq!(common::field(&h, "Inode size"), "256");
    assert_eq!(common::field(&h, "Backup block groups"), "1 511");
    assert_eq!(common::field(&h, "Free inodes"), (4194304 - 11).to_string());
    assert_eq!(common::field(&h, "Filesystem UUID"), "<none>");
    assert_eq!(common::field(&h, "Default directory hash"), "half_md4");
    assert_eq!(common::field(&h, "Maximum mount count"), "-1");
    let features = common::field(&h, "Filesystem features");
    for f in [
        "ext_attr",
        "resize_inode",
        "dir_index",
        "filetype",
        "extent",
        "64bit",
        "flex_bg",
        "sparse_super2",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
    ] {
        assert!(
            features.split_whitespace().any(|x| x == f),
            "missing {f} in {features}"
        );
    }
    assert!(!features.contains("has_journal"));
    assert!(!features.contains("metadata_csum"));
    assert!(common::field(&h, "Filesystem flags").contains("signed_directory_hash"));
    let ls = common::debugfs(&img, "ls -l /");
    assert!(ls.contains("lost+found"), "{ls}");
    let st = common::debugfs(&img, "stat /lost+found");
    assert!(st.contains("Mode:  0700"), "{st}");
}

#[test]
fn mkfs_1g_and_1t() {
    if !common::tools_available("mkfs_1g_and_1t") {
        return;
    }
    for (size, blocks, inodes) in [
        (1u64 << 30, 262144u64, 65536u64),
        (1 << 40, 268435456, 67108864),
    ] {
        let (_d, img) = make(size);
        if size < 1 << 40 {
            common::fsck_clean(&img);
        }
        let h = common::dumpe2fs(&img);
        assert_eq!(common::field(&h, "Block count"), blocks.to_string());
        assert_eq!(common::field(&h, "Inode count"), inodes.to_string());
        assert_eq!(common::field(&h, "Free inodes"), (inodes - 11).to_string());
        // Reopens with our own reader too.
        let fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
        assert_eq!(fs.stats().free_inodes as u64, inodes - 11);
    }
}

/// e2fsck of a 1 TiB image reads 16 GiB of (sparse) inode tables: about 80 s.
#[test]
#[ignore = "slow: e2fsck reads 16 GiB of inode tables"]
fn mkfs_1t_fsck() {
    if !common::tools_available("mkfs_1t_fsck") {
        return;
    }
    let (_d, img) = make(1 << 40);
    common::fsck_clean(&img);
}

#[test]
fn mkfs_odd_size_and_deterministic() {
    if !common::tools_available("mkfs_odd_size_and_deterministic") {
        return;
    }
    // Not a multiple of the group size: the short last group is kept.
    let (_d, img) = make((300 << 20) + 12345);
    common::fsck_clean(&img);
    let (_e, img2) = make((300 << 20) + 12345);
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&img2).unwrap());
}

#[test]
fn mkfs_refuses_tiny_device() {
    let dir = tempfile::tempdir().unwrap();
    let dev = RawImage::create(dir.path().join("img"), 64 << 10).unwrap();
    assert!(matches!(
        Ext4::mkfs(dev, &MkfsOptions::default()),
        Err(obd_ext4::Error::Mkfs(_))
    ));
}
