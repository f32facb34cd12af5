//! Layer behaviour: few blocks written per small change, the upstream baselayer shape
//! (journal, uninit_bg, flex_bg 16) made with the real mke2fs, and path resolution.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::sync::Mutex;

use obd_ext4::{Attrs, Error, Ext4, FileKind, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::{RawImage, ReadAt, WriteAt};

/// Wraps a device and records every 4 KiB block written.
struct Counting {
    inner: RawImage,
    written: Mutex<BTreeSet<u64>>,
    bytes: u64,
}

impl ReadAt for Counting {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
}

impl WriteAt for Counting {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut w = self.written.lock().unwrap();
        for b in off / 4096..(off + buf.len() as u64).div_ceil(4096) {
            w.insert(b);
        }
        self.bytes += buf.len() as u64;
        self.inner.write_at(buf, off)
    }
}

fn attrs(perm: u16) -> Attrs {
    Attrs::new(perm, 0, 0, Timestamp::from_secs(1_600_000_000))
}

fn counting(img: &std::path::Path) -> Counting {
    Counting {
        inner: RawImage::open(img).unwrap(),
        written: Mutex::new(BTreeSet::new()),
        bytes: 0,
    }
}

#[test]
fn one_small_file_writes_a_handful_of_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    Ext4::mkfs(
        RawImage::create(&img, 64 << 30).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let mut fs = Ext4::open(counting(&img)).unwrap();
    let data = b"hello\n";
    fs.create_file(
        ROOT_INO,
        b"hello",
        &attrs(0o644),
        data.len() as u64,
        &mut &data[..],
    )
    .unwrap();
    fs.flush().unwrap();
    let dev = fs.into_device();
    let blocks = dev.written.lock().unwrap().clone();
    // data, root dir block, inode table block, block bitmap, inode bitmap, GDT, superblock.
    eprintln!(
        "one small file: {} blocks written: {blocks:?}",
        blocks.len()
    );
    assert!(
        blocks.len() <= 7,
        "wrote {} blocks: {blocks:?}",
        blocks.len()
    );
    assert!(dev.bytes < 64 << 10, "wrote {} bytes", dev.bytes);
    if common::tools_available("one_small_file_writes_a_handful_of_blocks") {
        common::fsck_clean(&img);
        assert_eq!(common::debugfs_bytes(&img, "cat /hello"), data);
    }
    // Nothing changed: nothing written.
    let mut fs = Ext4::open(counting(&img)).unwrap();
    assert!(fs.lookup(ROOT_INO, b"hello").unwrap().is_some());
    fs.flush().unwrap();
    assert!(fs.into_device().written.lock().unwrap().is_empty());
}

#[test]
fn big_directory_second_layer_writes_little() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut fs = Ext4::mkfs(
        RawImage::create(&img, 8 << 30).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let big = fs.mkdir(ROOT_INO, b"big", &attrs(0o755)).unwrap();
    for i in 0..20_000 {
        let name = format!("file-{i:05}");
        fs.create_file(big, name.as_bytes(), &attrs(0o644), 0, &mut io::empty())
            .unwrap();
    }
    fs.flush().unwrap();
    drop(fs);
    let mut fs = Ext4::open(counting(&img)).unwrap();
    let big = fs.lookup(ROOT_INO, b"big").unwrap().unwrap();
    fs.create_file(big, b"one-more", &attrs(0o644), 0, &mut io::empty())
        .unwrap();
    fs.unlink(big, b"file-00007").unwrap();
    fs.flush().unwrap();
    let n = fs.into_device().written.lock().unwrap().len();
    eprintln!("big dir second layer: {n} blocks written");
    assert!(n <= 12, "wrote {n} blocks");
    if common::tools_available("big_directory_second_layer_writes_little") {
        common::fsck_clean(&img);
    }
}

#[test]
fn baselayer_shape_uninit_bg_journal_flex16() {
    if !common::tools_available("baselayer_shape_uninit_bg_journal_flex16") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    common::mke2fs(
        &img,
        "64G",
        &[
            "-O",
            "uninit_bg,^metadata_csum,flex_bg,has_journal",
            "-E",
            "lazy_itable_init=1",
            "-G",
            "16",
        ],
    );
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    let before = fs.stats();
    let d = fs.mkdir_all(b"/usr/share/doc", &attrs(0o755)).unwrap();
    for i in 0..3000 {
        let body = format!("file {i}\n").repeat(i % 50 + 1);
        fs.create_file(
            d,
            format!("doc-{i}").as_bytes(),
            &attrs(0o644),
            body.len() as u64,
            &mut body.as_bytes(),
        )
        .unwrap();
    }
    // Enough inodes to spill into later (INODE_UNINIT) groups.
    let many = fs.mkdir(ROOT_INO, b"many", &attrs(0o755)).unwrap();
    for i in 0..20_000 {
        fs.mknod(
            many,
            format!("p{i}").as_bytes(),
            FileKind::Fifo,
            (0, 0),
            &attrs(0o644),
        )
        .unwrap();
    }
    fs.set_xattr(d, "user.k", &[9u8; 3000]).unwrap();
    fs.flush().unwrap();
    drop(fs);
    common::fsck_clean(&img);
    assert_eq!(
        common::debugfs_bytes(&img, "cat /usr/share/doc/doc-3"),
        b"file 3\n".repeat(4)
    );
    // Second layer on it: remove most of it again.
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    assert!(fs.remove_all(ROOT_INO, b"many").unwrap());
    assert!(fs.remove_all(ROOT_INO, b"usr").unwrap());
    fs.flush().unwrap();
    assert_eq!(fs.stats().free_inodes, before.free_inodes);
    assert_eq!(fs.stats().free_blocks, before.free_blocks);
    drop(fs);
    common::fsck_clean(&img);
}

#[test]
fn refuses_unsupported_features() {
    if !common::tools_available("refuses_unsupported_features") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    common::mke2fs(&img, "256M", &["-O", "metadata_csum"]);
    match Ext4::open(RawImage::open(&img).unwrap()) {
        Err(Error::UnsupportedFeature(f)) => assert!(f.contains("metadata_csum"), "{f}"),
        other => panic!("expected UnsupportedFeature, got {:?}", other.err()),
    }
    common::mke2fs(&img, "256M", &["-O", "^metadata_csum,inline_data"]);
    assert!(matches!(
        Ext4::open(RawImage::open(&img).unwrap()),
        Err(Error::UnsupportedFeature(_))
    ));
    common::mke2fs(
        &img,
        "256M",
        &["-O", "^metadata_csum,bigalloc", "-C", "16384"],
    );
    assert!(matches!(
        Ext4::open(RawImage::open(&img).unwrap()),
        Err(Error::UnsupportedFeature(_))
    ));
    // needs_recovery flag set by hand.
    common::mke2fs(&img, "256M", &["-O", "^metadata_csum"]);
    let mut dev = RawImage::open(&img).unwrap();
    let mut sb = [0u8; 4];
    dev.read_exact_at(&mut sb, 1024 + 0x60).unwrap();
    let incompat = u32::from_le_bytes(sb) | 0x4;
    dev.write_at(&incompat.to_le_bytes(), 1024 + 0x60).unwrap();
    assert!(matches!(Ext4::open(dev), Err(Error::NeedsRecovery)));
}

#[test]
fn path_resolution_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut fs = Ext4::mkfs(
        RawImage::create(&img, 1 << 30).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let a = attrs(0o755);
    let usr = fs.mkdir_all(b"/usr/lib", &a).unwrap();
    fs.symlink(ROOT_INO, b"lib", b"usr/lib", &a).unwrap();
    fs.symlink(usr, b"up", b"../../../../..", &a).unwrap();
    fs.symlink(usr, b"abs", b"/usr", &a).unwrap();
    fs.symlink(ROOT_INO, b"loop1", b"loop2", &a).unwrap();
    fs.symlink(ROOT_INO, b"loop2", b"/loop1", &a).unwrap();
    assert_eq!(fs.resolve(b"/lib", true).unwrap(), Some(usr));
    assert_ne!(fs.resolve(b"/lib", false).unwrap(), Some(usr));
    assert_eq!(fs.resolve(b"../../../usr/lib", true).unwrap(), Some(usr));
    assert_eq!(fs.resolve(b"lib/up", true).unwrap(), Some(ROOT_INO));
    assert_eq!(
        fs.resolve(b"lib/up/usr/lib/abs/lib", true).unwrap(),
        Some(usr)
    );
    assert_eq!(fs.resolve(b"/nope/x", true).unwrap(), None);
    assert!(matches!(
        fs.resolve(b"/loop1/x", true),
        Err(Error::SymlinkLoop(_))
    ));
    // Creating through a symlinked parent lands inside the image.
    let (p, name) = fs.resolve_parent(b"/lib/up/etc").unwrap();
    assert_eq!((p, name.as_slice()), (ROOT_INO, b"etc".as_slice()));
    let x = fs.mkdir_all(b"/lib/new/dir", &a).unwrap();
    assert_eq!(fs.resolve(b"/usr/lib/new/dir", true).unwrap(), Some(x));
    // Errors for bad names and duplicates.
    assert!(matches!(
        fs.mkdir(ROOT_INO, b"a/b", &a),
        Err(Error::InvalidName(_))
    ));
    assert!(matches!(
        fs.mkdir(ROOT_INO, b"..", &a),
        Err(Error::InvalidName(_))
    ));
    assert!(matches!(
        fs.mkdir(ROOT_INO, b"usr", &a),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        fs.unlink(ROOT_INO, b"usr"),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        fs.rmdir(ROOT_INO, b"usr"),
        Err(Error::DirectoryNotEmpty(_))
    ));
    assert!(matches!(
        fs.link(ROOT_INO, b"hl", usr),
        Err(Error::IsADirectory(_))
    ));
}

/// Non-zero filler data.
struct Filler(u64);

impl io::Read for Filler {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0 as usize);
        buf[..n].fill(0xA5);
        self.0 -= n as u64;
        Ok(n)
    }
}

#[test]
fn allocation_through_block_uninit_groups() {
    if !common::tools_available("allocation_through_block_uninit_groups") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    common::mke2fs(
        &img,
        "2G",
        &[
            "-O",
            "uninit_bg,^metadata_csum,flex_bg,has_journal",
            "-E",
            "lazy_itable_init=1",
            "-G",
            "2",
        ],
    );
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    let before = fs.stats();
    // Spans groups 0-4, among them BLOCK_UNINIT groups 1 and 3 (backup superblocks, and the
    // bitmaps of other groups living elsewhere).
    let len = 560u64 << 20;
    fs.create_file(ROOT_INO, b"big", &attrs(0o644), len, &mut Filler(len))
        .unwrap();
    fs.flush().unwrap();
    drop(fs);
    common::fsck_clean(&img);
    let st = common::debugfs(&img, "stat /big");
    assert!(st.contains(&format!("Size: {len}")), "{st}");
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    fs.remove_all(ROOT_INO, b"big").unwrap();
    fs.flush().unwrap();
    assert_eq!(fs.stats().free_blocks, before.free_blocks);
    drop(fs);
    common::fsck_clean(&img);
}
