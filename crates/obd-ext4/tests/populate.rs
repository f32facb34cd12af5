//! Populating a tree with every kind of inode, then checking it with e2fsck and debugfs, and
//! a second "layer" that deletes and recreates.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use obd_ext4::{Attrs, Ext4, FileKind, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::RawImage;

/// Deterministic pseudo-random bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A reader of `len` bytes that are zero except for 4 KiB marks at the given offsets.
struct Sparse {
    len: u64,
    pos: u64,
    marks: Vec<u64>,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.pos) as usize);
        buf[..n].fill(0);
        for &m in &self.marks {
            for k in 0..4096u64 {
                let p = m + k;
                if p >= self.pos && p < self.pos + n as u64 {
                    buf[(p - self.pos) as usize] = (k % 251) as u8 + 1;
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn attrs(perm: u16) -> Attrs {
    Attrs::new(perm, 0, 0, Timestamp::from_secs(1_600_000_000))
}

fn file<D: obd_format::io::BlockDevice>(
    fs: &mut Ext4<D>,
    dir: u32,
    name: &str,
    data: &[u8],
) -> u32 {
    fs.create_file(
        dir,
        name.as_bytes(),
        &attrs(0o644),
        data.len() as u64,
        &mut &data[..],
    )
    .unwrap()
}

const SIZES: &[usize] = &[
    0,
    1,
    59,
    60,
    4095,
    4096,
    4097,
    65536,
    1 << 20,
    (3 << 20) + 17,
];

fn big_names(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("entry-{i:06}-{}", "x".repeat(i % 23)))
}

fn setup(img: &Path) -> Ext4<RawImage> {
    let dev = RawImage::create(img, 64 << 30).unwrap();
    Ext4::mkfs(dev, &MkfsOptions::default()).unwrap()
}

/// Builds the test tree; returns the 100k-entry directory's inode.
fn populate<D: obd_format::io::BlockDevice>(fs: &mut Ext4<D>, big_entries: usize) {
    let data = fs.mkdir(ROOT_INO, b"data", &attrs(0o755)).unwrap();
    for (i, &s) in SIZES.iter().enumerate() {
        file(fs, data, &format!("f{s}"), &pattern(i as u64, s));
    }
    // Many extents: alternate data and hole blocks -> an extent tree with index nodes.
    let mut frag = vec![0u8; 3000 * 4096];
    for b in (0..3000).step_by(2) {
        frag[b * 4096..b * 4096 + 4096].copy_from_slice(&pattern(b as u64, 4096));
    }
    file(fs, data, "fragmented", &frag);
    // Hard links.
    let host = file(fs, data, "hostname", b"obdconv\n");
    fs.link(data, b"hostname.link", host).unwrap();
    let etc = fs.mkdir_all(b"/etc/sub/deeper", &attrs(0o750)).unwrap();
    fs.link(etc, b"hostname", host).unwrap();
    // Symlinks.
    fs.symlink(data, b"fast", b"hostname", &attrs(0o777))
        .unwrap();
    let slow_target = format!("/data/{}", "long-component/".repeat(8));
    fs.symlink(data, b"slow", slow_target.as_bytes(), &attrs(0o777))
        .unwrap();
    fs.symlink(ROOT_INO, b"etc-link", b"../../etc", &attrs(0o777))
        .unwrap();
    // Devices and friends.
    let dev = fs.mkdir(ROOT_INO, b"dev", &attrs(0o755)).unwrap();
    fs.mknod(dev, b"null", FileKind::CharDevice, (1, 3), &attrs(0o666))
        .unwrap();
    fs.mknod(dev, b"sda1", FileKind::BlockDevice, (8, 1), &attrs(0o660))
        .unwrap();
    fs.mknod(
        dev,
        b"big",
        FileKind::CharDevice,
        (300, 70000),
        &attrs(0o600),
    )
    .unwrap();
    fs.mknod(dev, b"fifo", FileKind::Fifo, (0, 0), &attrs(0o644))
        .unwrap();
    fs.mknod(dev, b"sock", FileKind::Socket, (0, 0), &attrs(0o755))
        .unwrap();
    // Owners, modes, times.
    let own = file(fs, data, "owned", b"owned\n");
    fs.set_owner(own, u32::MAX, u32::MAX - 1).unwrap();
    fs.set_perm(own, 0o4751).unwrap();
    let old = file(fs, data, "old", b"1969\n");
    let t69 = Timestamp {
        secs: -1_000_000,
        nanos: 123_456_789,
    };
    fs.set_times(old, t69, t69, t69).unwrap();
    let new = file(fs, data, "new", b"2040\n");
    let t40 = Timestamp {
        secs: 2_208_988_800,
        nanos: 987_654_321,
    };
    fs.set_times(new, t40, t40, t40).unwrap();
    // Xattrs: small (in inode), large (block), capability, trusted, ACL.
    fs.set_xattr(host, "user.small", b"tiny").unwrap();
    let xb = file(fs, data, "xattr-big", b"x\n");
    fs.set_xattr(xb, "user.big", &pattern(7, 1500)).unwrap();
    fs.set_xattr(xb, "trusted.overlay.opaque", b"y").unwrap();
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    fs.set_xattr(xb, "security.capability", &cap).unwrap();
    let mut acl = vec![2u8, 0, 0, 0];
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1000),
        (4, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    fs.set_xattr(data, "system.posix_acl_access", &acl).unwrap();
    // A file over 4 GiB, mostly holes.
    let huge = fs.mkdir(ROOT_INO, b"huge", &attrs(0o755)).unwrap();
    let len = (5u64 << 30) + 12345;
    let mut src = Sparse {
        len,
        pos: 0,
        marks: vec![0, 1 << 32, (4 << 30) + 8192 + 100, len - 4096],
    };
    fs.create_file(huge, b"sparse", &attrs(0o600), len, &mut src)
        .unwrap();
    // A big directory.
    let big = fs.mkdir(ROOT_INO, b"big", &attrs(0o755)).unwrap();
    for (i, name) in big_names(big_entries).enumerate() {
        if i % 1000 == 0 {
            fs.mkdir(big, name.as_bytes(), &attrs(0o755)).unwrap();
        } else {
            fs.create_file(
                big,
                name.as_bytes(),
                &attrs(0o644),
                0,
                &mut std::io::empty(),
            )
            .unwrap();
        }
    }
}

fn check_debugfs(img: &Path, out_dir: &Path) {
    // Contents through rdump.
    let dump = out_dir.join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    common::debugfs(img, &format!("rdump /data {}", dump.display()));
    for (i, &s) in SIZES.iter().enumerate() {
        let got = std::fs::read(dump.join(format!("data/f{s}"))).unwrap();
        assert!(got == pattern(i as u64, s), "content of f{s}");
    }
    let frag = std::fs::read(dump.join("data/fragmented")).unwrap();
    assert_eq!(frag.len(), 3000 * 4096);
    assert!(frag[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(&frag[..4096], &pattern(0, 4096)[..]);
    assert_eq!(
        common::debugfs_bytes(img, "cat /etc/sub/deeper/hostname"),
        b"obdconv\n"
    );
    // stat fields.
    let st = common::debugfs(img, "stat /data/owned");
    // debugfs prints the 32-bit ids with %d: 2^32-1 shows as -1.
    assert!(st.contains("User:    -1   Group:    -2"), "{st}");
    assert!(st.contains("Mode:  04751"), "{st}");
    let st = common::debugfs(img, "stat /data/hostname");
    assert!(st.contains("Links: 3"), "{st}");
    let st = common::debugfs(img, "stat /data/old");
    assert!(
        st.contains(&format!(
            "mtime: 0x{:08x}:{:08x}",
            -1_000_000i32 as u32,
            123_456_789u32 << 2
        )),
        "{st}"
    );
    assert!(st.contains("1969"), "{st}");
    let st = common::debugfs(img, "stat /data/new");
    assert!(
        st.contains(&format!(
            "mtime: 0x{:08x}:{:08x}",
            2_208_988_800u64 as u32,
            (987_654_321u32 << 2) | 1
        )),
        "{st}"
    );
    assert!(st.contains("2040"), "{st}");
    let st = common::debugfs(img, "stat /huge/sparse");
    assert!(
        st.contains(&format!("Size: {}", (5u64 << 30) + 12345)),
        "{st}"
    );
    let st = common::debugfs(img, "stat /data/fragmented");
    assert!(
        st.contains("(ETB0)") || st.contains("ETB"),
        "index node expected: {st}"
    );
    // Symlinks.
    let st = common::debugfs(img, "stat /data/fast");
    assert!(st.contains("Fast link dest: \"hostname\""), "{st}");
    let slow_target = format!("/data/{}", "long-component/".repeat(8));
    assert_eq!(
        common::debugfs_bytes(img, "cat /data/slow"),
        slow_target.as_bytes()
    );
    // Devices.
    for (path, want) in [
        ("/dev/null", "Device major/minor number: 01:03"),
        ("/dev/sda1", "Device major/minor number: 08:01"),
        (
            "/dev/big",
            "(New-style) Device major/minor number: 300:70000",
        ),
    ] {
        let st = common::debugfs(img, &format!("stat {path}"));
        assert!(st.contains(want), "{want} in {st}");
    }
    let st = common::debugfs(img, "stat /dev/fifo");
    assert!(st.contains("Type: FIFO"), "{st}");
    let st = common::debugfs(img, "stat /dev/sock");
    assert!(st.contains("Type: socket"), "{st}");
    // Xattrs.
    let ea = common::debugfs(img, "ea_list /data/hostname");
    assert!(ea.contains("user.small") && ea.contains("tiny"), "{ea}");
    let ea = common::debugfs(img, "ea_list /data/xattr-big");
    assert!(
        ea.contains("user.big")
            && ea.contains("trusted.overlay.opaque")
            && ea.contains("security.capability"),
        "{ea}"
    );
    let st = common::debugfs(img, "stat /data/xattr-big");
    assert!(
        st.contains("File ACL: ") && !st.contains("File ACL: 0 "),
        "{st}"
    );
    let ea = common::debugfs(img, "ea_list /data");
    assert!(ea.contains("system.posix_acl_access"), "{ea}");
    // Big directory.
    let st = common::debugfs(img, "stat /big");
    assert!(st.contains("Flags: 0x81000"), "htree expected: {st}");
    let ls = common::debugfs(img, "ls /big/entry-099999-xxxxxxxxxxxxxxxxxx");
    assert!(!ls.contains("not found"), "{ls}");
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    (d, img)
}

#[test]
fn populate_fsck_and_debugfs() {
    if !common::tools_available("populate_fsck_and_debugfs") {
        return;
    }
    let (d, img) = tempdir();
    let mut fs = setup(&img);
    let before = fs.stats();
    populate(&mut fs, 100_000);
    fs.flush().unwrap();
    drop(fs);
    common::fsck_clean(&img);
    check_debugfs(&img, d.path());

    // Our own reader agrees.
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    let host = fs
        .resolve(b"/etc-link/sub/deeper/hostname", true)
        .unwrap()
        .unwrap();
    assert_eq!(fs.read_file(host).unwrap(), b"obdconv\n");
    assert_eq!(fs.metadata(host).unwrap().links, 3);
    let big = fs.resolve(b"/big", true).unwrap().unwrap();
    assert_eq!(fs.read_dir(big).unwrap().len(), 100_000);
    let newf = fs.resolve(b"/data/new", true).unwrap().unwrap();
    let md = fs.metadata(newf).unwrap();
    assert_eq!(
        md.mtime,
        Timestamp {
            secs: 2_208_988_800,
            nanos: 987_654_321
        }
    );

    // Layer 2: delete things and recreate some.
    assert!(fs.remove_all(ROOT_INO, b"big").unwrap());
    assert!(fs.remove_all(ROOT_INO, b"huge").unwrap());
    let data = fs.resolve(b"/data", true).unwrap().unwrap();
    fs.unlink(data, b"hostname").unwrap();
    fs.unlink(data, b"hostname.link").unwrap();
    fs.remove_all(data, b"xattr-big").unwrap();
    fs.remove_all(data, b"fragmented").unwrap();
    // Replace a file by a directory and a directory by a file.
    fs.remove_all(data, b"f4096").unwrap();
    let d2 = fs.mkdir(data, b"f4096", &attrs(0o700)).unwrap();
    file(&mut fs, d2, "inside", b"inside\n");
    let dev = fs.resolve(b"/dev", true).unwrap().unwrap();
    fs.remove_all(ROOT_INO, b"dev").unwrap();
    assert!(fs.lookup(ROOT_INO, b"dev").unwrap().is_none());
    let _ = dev;
    file(&mut fs, ROOT_INO, "dev", b"now a file\n");
    fs.flush().unwrap();
    drop(fs);
    common::fsck_clean(&img);
    assert_eq!(
        common::debugfs_bytes(&img, "cat /etc/sub/deeper/hostname"),
        b"obdconv\n"
    );
    assert!(common::debugfs(&img, "stat /etc/sub/deeper/hostname").contains("Links: 1"));
    assert_eq!(
        common::debugfs_bytes(&img, "cat /data/f4096/inside"),
        b"inside\n"
    );
    assert_eq!(common::debugfs_bytes(&img, "cat /dev"), b"now a file\n");

    // Layer 3: remove everything else; free counts return to the mkfs values.
    let mut fs = Ext4::open(RawImage::open(&img).unwrap()).unwrap();
    for name in ["data", "etc", "etc-link", "dev"] {
        assert!(fs.remove_all(ROOT_INO, name.as_bytes()).unwrap(), "{name}");
    }
    fs.flush().unwrap();
    let after = fs.stats();
    assert_eq!(after.free_blocks, before.free_blocks);
    assert_eq!(after.free_inodes, before.free_inodes);
    drop(fs);
    common::fsck_clean(&img);
}

#[test]
fn same_operations_same_bytes() {
    let run = || {
        let (d, img) = tempdir();
        let dev = RawImage::create(&img, 1 << 30).unwrap();
        let mut fs = Ext4::mkfs(dev, &MkfsOptions::default()).unwrap();
        let data = fs.mkdir(ROOT_INO, b"d", &attrs(0o755)).unwrap();
        for i in 0..500 {
            file(
                &mut fs,
                data,
                &format!("file-{i}"),
                &pattern(i, (i as usize * 997) % 20000),
            );
        }
        fs.set_xattr(data, "user.a", b"b").unwrap();
        fs.flush().unwrap();
        drop(fs);
        let bytes = std::fs::read(&img).unwrap();
        drop(d);
        bytes
    };
    assert!(run() == run());
}
