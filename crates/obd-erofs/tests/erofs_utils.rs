//! Images built from handmade layer tars must pass `fsck.erofs` and extract (with
//! `fsck.erofs --extract`) to exactly the expected merged tree after every layer: names,
//! types, permissions, owners, contents, symlink targets, device numbers and mtimes.
//! Link counts and xattrs, which extraction does not show, are checked with `dump.erofs`
//! and the crate's own reader.

mod common;

use std::collections::BTreeMap;

use common::*;
use obd_erofs::{list_image, Kind};
use obd_format::io::FileSource;

type Model = BTreeMap<String, Ent>;

const T0: u64 = 1_700_000_000;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put(m: &mut Model, p: &str, e: Ent) {
    m.insert(p.to_string(), e);
}

fn remove_tree(m: &mut Model, p: &str) {
    let pre = format!("{p}/");
    m.retain(|k, _| k != p && !k.starts_with(&pre));
}

fn dev_ent(kind: char, perm: u32, rdev: (u32, u32)) -> Ent {
    let mut e = ent(kind, perm, 0, 0, b"", 0);
    e.rdev = rdev;
    e
}

fn long_target(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str("seg/");
    }
    s.truncate(n);
    s
}

fn bigdir_name(i: usize) -> String {
    format!("file-with-a-rather-longish-name-{i:05}")
}

/// Layer 1 and the tree it should produce.
fn layer1() -> (Vec<u8>, Model) {
    let mut t = TarB::new();
    let mut m = Model::new();
    let d = attr(0o755, 0, 0, T0);
    t.dir("./", &d);
    t.dir("etc", &d);
    put(&mut m, "etc", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.file("etc/passwd", &attr(0o644, 0, 0, T0), b"root:x:0:0\n");
    put(
        &mut m,
        "etc/passwd",
        ent('f', 0o644, 0, 0, b"root:x:0:0\n", T0 as i64),
    );
    t.file("etc/empty", &attr(0o600, 0, 0, T0), b"");
    put(&mut m, "etc/empty", ent('f', 0o600, 0, 0, b"", T0 as i64));
    t.dir("sizes", &d);
    put(&mut m, "sizes", ent('d', 0o755, 0, 0, b"", T0 as i64));
    for (i, n) in [1usize, 511, 512, 513, 4095, 4096, 4097, 8192, 100_000]
        .into_iter()
        .enumerate()
    {
        let data = pattern(n, i as u8);
        let p = format!("sizes/s{n}");
        t.file(&p, &attr(0o644, 0, 0, T0 + i as u64), &data);
        put(
            &mut m,
            &p,
            ent('f', 0o644, 0, 0, &data, (T0 + i as u64) as i64),
        );
    }
    t.dir("bin", &d);
    put(&mut m, "bin", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.file("bin/sh", &attr(0o755, 0, 0, T0), b"#!sh\n");
    put(
        &mut m,
        "bin/sh",
        ent('f', 0o755, 0, 0, b"#!sh\n", T0 as i64),
    );
    t.file("bin/suid", &attr(0o4755, 0, 0, T0), b"suid");
    put(
        &mut m,
        "bin/suid",
        ent('f', 0o4755, 0, 0, b"suid", T0 as i64),
    );
    t.symlink("bin/link", &attr(0o777, 0, 0, T0), "sh");
    put(&mut m, "bin/link", ent('l', 0o777, 0, 0, b"sh", T0 as i64));
    t.symlink("bin/abs", &attr(0o777, 0, 0, T0 + 5), "/etc/passwd");
    put(
        &mut m,
        "bin/abs",
        ent('l', 0o777, 0, 0, b"/etc/passwd", (T0 + 5) as i64),
    );
    t.dir("long", &d);
    put(&mut m, "long", ent('d', 0o755, 0, 0, b"", T0 as i64));
    for n in [300usize, 2000, 4000] {
        let target = long_target(n);
        let p = format!("long/sym{n}");
        t.symlink(&p, &attr(0o777, 0, 0, T0), &target);
        put(
            &mut m,
            &p,
            ent('l', 0o777, 0, 0, target.as_bytes(), T0 as i64),
        );
    }
    let ln = format!("long/{}", "n".repeat(200));
    t.file(&ln, &attr(0o644, 0, 0, T0), b"long name");
    put(&mut m, &ln, ent('f', 0o644, 0, 0, b"long name", T0 as i64));
    t.dir("links", &d);
    put(&mut m, "links", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.file("links/a", &attr(0o640, 5, 6, T0), b"hard");
    t.hardlink("links/b", "links/a");
    t.hardlink("links/c", "./links/a");
    for p in ["links/a", "links/b", "links/c"] {
        put(&mut m, p, ent('f', 0o640, 5, 6, b"hard", T0 as i64));
    }
    t.dir("dev", &d);
    put(&mut m, "dev", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.chardev("dev/null", &attr(0o666, 0, 0, T0), (1, 3));
    put(&mut m, "dev/null", dev_ent('c', 0o666, (1, 3)));
    t.chardev("dev/big", &attr(0o600, 0, 0, T0), (300, 70000));
    put(&mut m, "dev/big", dev_ent('c', 0o600, (300, 70000)));
    t.blockdev("dev/sda", &attr(0o660, 0, 6, T0), (8, 0));
    let mut sda = dev_ent('b', 0o660, (8, 0));
    sda.gid = 6;
    put(&mut m, "dev/sda", sda);
    t.fifo("dev/fifo", &attr(0o600, 0, 0, T0));
    put(&mut m, "dev/fifo", dev_ent('p', 0o600, (0, 0)));
    t.dir("owner", &d);
    put(&mut m, "owner", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.file(
        "owner/big",
        &attr(0o644, 100_000, 4_000_000, T0),
        b"big ids",
    );
    put(
        &mut m,
        "owner/big",
        ent('f', 0o644, 100_000, 4_000_000, b"big ids", T0 as i64),
    );
    t.file("owner/u1000", &attr(0o644, 1000, 1000, T0), b"user");
    put(
        &mut m,
        "owner/u1000",
        ent('f', 0o644, 1000, 1000, b"user", T0 as i64),
    );
    let mut nano = attr(0o644, 0, 0, T0 + 1);
    nano.mtime.1 = 123_456_789;
    t.dir("times", &nano);
    let mut e = ent('d', 0o755, 0, 0, b"", 0);
    e.perm = 0o644;
    e.mtime = Some(((T0 + 1) as i64, 123_456_789));
    put(&mut m, "times", e);
    t.file("times/nano", &nano, b"nano");
    let mut e = ent('f', 0o644, 0, 0, b"nano", 0);
    e.mtime = Some(((T0 + 1) as i64, 123_456_789));
    put(&mut m, "times/nano", e);
    let mut xa = attr(0o644, 0, 0, T0);
    xa.xattrs = vec![
        ("user.foo".into(), b"bar".to_vec()),
        (
            "security.capability".into(),
            vec![
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        ("trusted.overlay.opaque".into(), b"y".to_vec()),
        ("unknown.prefix".into(), b"dropped".to_vec()),
    ];
    t.dir("xattr", &d);
    put(&mut m, "xattr", ent('d', 0o755, 0, 0, b"", T0 as i64));
    t.file("xattr/f", &xa, b"with xattrs");
    put(
        &mut m,
        "xattr/f",
        ent('f', 0o644, 0, 0, b"with xattrs", T0 as i64),
    );
    // Implicit parents take the member's mtime, 0755, root.
    t.file("implicit/a/b/file", &attr(0o644, 0, 0, T0 + 9), b"deep");
    for p in ["implicit", "implicit/a", "implicit/a/b"] {
        put(&mut m, p, ent('d', 0o755, 0, 0, b"", (T0 + 9) as i64));
    }
    put(
        &mut m,
        "implicit/a/b/file",
        ent('f', 0o644, 0, 0, b"deep", (T0 + 9) as i64),
    );
    // Last entry wins.
    t.file("dup", &attr(0o644, 0, 0, T0), b"one");
    t.file("dup", &attr(0o600, 0, 0, T0 + 2), b"two!");
    put(
        &mut m,
        "dup",
        ent('f', 0o600, 0, 0, b"two!", (T0 + 2) as i64),
    );
    t.dir("bigdir", &d);
    put(&mut m, "bigdir", ent('d', 0o755, 0, 0, b"", T0 as i64));
    for i in 0..400 {
        let p = format!("bigdir/{}", bigdir_name(i));
        let data = if i % 50 == 0 {
            pattern(i, 7)
        } else {
            Vec::new()
        };
        t.file(&p, &attr(0o644, 0, 0, T0), &data);
        put(&mut m, &p, ent('f', 0o644, 0, 0, &data, T0 as i64));
    }
    // Markers in the first layer hide nothing and are never stored.
    t.whiteout(".wh.ghost");
    t.dir("opq", &d);
    t.whiteout("opq/.wh..wh..opq");
    t.file("opq/kept", &attr(0o644, 0, 0, T0), b"kept");
    put(&mut m, "opq", ent('d', 0o755, 0, 0, b"", T0 as i64));
    put(
        &mut m,
        "opq/kept",
        ent('f', 0o644, 0, 0, b"kept", T0 as i64),
    );
    // A PAX 1.0 sparse member: written as real data blocks.
    let (mid, tail) = (vec![0xabu8; 4096], b"tail!".to_vec());
    let size = 3 << 20;
    t.sparse(
        "sparse",
        &attr(0o644, 0, 0, T0),
        size,
        &[(0, b"head"), (1 << 20, &mid), (size - 5, &tail)],
    );
    let mut want = vec![0u8; size as usize];
    want[..4].copy_from_slice(b"head");
    want[1 << 20..(1 << 20) + 4096].copy_from_slice(&mid);
    want[size as usize - 5..].copy_from_slice(&tail);
    put(&mut m, "sparse", ent('f', 0o644, 0, 0, &want, T0 as i64));
    (t.finish(), m)
}

/// Layer 2 over layer 1's model.
fn layer2(m: &mut Model) -> Vec<u8> {
    let mut t = TarB::new();
    let d = attr(0o755, 0, 0, T0 + 100);
    t.whiteout(".wh.sizes");
    remove_tree(m, "sizes");
    t.dir("etc", &d);
    put(m, "etc", ent('d', 0o755, 0, 0, b"", (T0 + 100) as i64));
    t.whiteout("etc/.wh.empty");
    m.remove("etc/empty");
    t.file(
        "etc/passwd",
        &attr(0o600, 0, 0, T0 + 100),
        b"root:x:0:0:new\n",
    );
    put(
        m,
        "etc/passwd",
        ent('f', 0o600, 0, 0, b"root:x:0:0:new\n", (T0 + 100) as i64),
    );
    t.file("bin/link", &attr(0o644, 0, 0, T0 + 100), b"now a file");
    put(
        m,
        "bin/link",
        ent('f', 0o644, 0, 0, b"now a file", (T0 + 100) as i64),
    );
    t.dir("opq", &d);
    t.whiteout("opq/.wh..wh..opq");
    t.file("opq/new", &attr(0o644, 0, 0, T0 + 100), b"new");
    remove_tree(m, "opq");
    put(m, "opq", ent('d', 0o755, 0, 0, b"", (T0 + 100) as i64));
    put(
        m,
        "opq/new",
        ent('f', 0o644, 0, 0, b"new", (T0 + 100) as i64),
    );
    t.whiteout("links/.wh.b");
    m.remove("links/b");
    t.hardlink("links/d", "links/a");
    put(m, "links/d", ent('f', 0o640, 5, 6, b"hard", T0 as i64));
    t.dir("dev", &attr(0o700, 0, 0, T0 + 100));
    put(m, "dev", ent('d', 0o700, 0, 0, b"", (T0 + 100) as i64));
    let mut xa = attr(0o644, 0, 0, T0 + 100);
    xa.xattrs = vec![("user.x".into(), b"1".to_vec())];
    t.file("xattr/f2", &xa, b"f2");
    put(
        m,
        "xattr/f2",
        ent('f', 0o644, 0, 0, b"f2", (T0 + 100) as i64),
    );
    t.file("newdir/file", &attr(0o644, 0, 0, T0 + 100), b"new dir");
    put(m, "newdir", ent('d', 0o755, 0, 0, b"", (T0 + 100) as i64));
    put(
        m,
        "newdir/file",
        ent('f', 0o644, 0, 0, b"new dir", (T0 + 100) as i64),
    );
    // A directory replaced by a file.
    t.file("bigdir", &attr(0o644, 0, 0, T0 + 100), b"was a dir");
    remove_tree(m, "bigdir");
    put(
        m,
        "bigdir",
        ent('f', 0o644, 0, 0, b"was a dir", (T0 + 100) as i64),
    );
    t.finish()
}

/// Layer 3 over layer 2's model.
fn layer3(m: &mut Model) -> Vec<u8> {
    let mut t = TarB::new();
    // A file replaced by a directory.
    t.dir("bigdir", &attr(0o711, 0, 0, T0 + 200));
    t.file("bigdir/one", &attr(0o644, 0, 0, T0 + 200), b"1");
    put(m, "bigdir", ent('d', 0o711, 0, 0, b"", (T0 + 200) as i64));
    put(
        m,
        "bigdir/one",
        ent('f', 0o644, 0, 0, b"1", (T0 + 200) as i64),
    );
    // A whiteout never removes what this layer unpacked.
    t.file("etc/passwd", &attr(0o644, 0, 0, T0 + 200), b"v3");
    t.whiteout("etc/.wh.passwd");
    put(
        m,
        "etc/passwd",
        ent('f', 0o644, 0, 0, b"v3", (T0 + 200) as i64),
    );
    // Replacing one name of a hard-linked file leaves the others on the old inode.
    t.file("links/a", &attr(0o644, 0, 0, T0 + 200), b"new a");
    put(
        m,
        "links/a",
        ent('f', 0o644, 0, 0, b"new a", (T0 + 200) as i64),
    );
    // Parents resolve through symlinks.
    t.symlink("dirlink", &attr(0o777, 0, 0, T0 + 200), "newdir");
    put(
        m,
        "dirlink",
        ent('l', 0o777, 0, 0, b"newdir", (T0 + 200) as i64),
    );
    t.file("dirlink/via", &attr(0o644, 0, 0, T0 + 200), b"via link");
    put(
        m,
        "newdir/via",
        ent('f', 0o644, 0, 0, b"via link", (T0 + 200) as i64),
    );
    // Whiteout of a whole lower directory, and of something that does not exist.
    t.whiteout(".wh.long");
    remove_tree(m, "long");
    t.whiteout("nothere/.wh.x");
    t.whiteout(".wh.nothing");
    t.finish()
}

/// fsck.erofs extraction, and the kernel's view through a loop mount where allowed, must
/// both equal the model.
fn check(what: &str, image: &std::path::Path, want: &Model) {
    let out = fsck_extract(image);
    let got = walk(&out.path().join("x"));
    assert_trees(
        &format!("{what} (fsck.erofs --extract)"),
        &fsck_view(want),
        &got,
    );
    with_mount(image, |mnt| {
        assert_trees(&format!("{what} (kernel mount)"), want, &walk(mnt));
        if want.contains_key("xattr/f") {
            let x = xattrs_of(&mnt.join("xattr/f"));
            assert_eq!(x["user.foo"], b"bar");
            assert_eq!(x["trusted.overlay.opaque"], b"y");
            assert_eq!(x["security.capability"].len(), 20);
            assert_eq!(x.len(), 3, "{x:?}");
        }
        if want.contains_key("xattr/f2") {
            assert_eq!(xattrs_of(&mnt.join("xattr/f2"))["user.x"], b"1");
        }
        assert!(xattrs_of(&mnt.join("etc")).is_empty());
    });
}

fn links_of(image: &std::path::Path, p: &str) -> u32 {
    let d = dump_path(image, p);
    let l = d
        .split("Links: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no link count in {d}"));
    l.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn first_layer_extracts_to_the_tar_tree() {
    if !have_erofs_utils() {
        return;
    }
    let (tar, want) = layer1();
    let built = build_layers(&[tar], |_, image| check("layer 1", image, &want));
    let (ls, st) = &built.stats[0];
    eprintln!("{ls:?}\n{st:?}");
    assert_eq!(ls.written_files, 1, "the sparse member is written");
    assert_eq!(ls.xattrs_dropped, 1);
    assert!(ls.whiteouts >= 2);
    assert_eq!(links_of(&built.image, "/links/a"), 3);
    assert_eq!(links_of(&built.image, "/bin"), 2);
    assert_eq!(links_of(&built.image, "/"), 2 + 12);
    // Xattrs, read back by our reader (fsck.erofs has already walked them).
    let img = FileSource::open(&built.image).unwrap();
    let (sb, list) = list_image(&img).unwrap();
    assert_eq!(sb.uuid, UUID);
    let suid = list.iter().find(|e| e.path == b"bin/suid").unwrap();
    assert_eq!(suid.perm, 0o4755);
    let f = list.iter().find(|e| e.path == b"xattr/f").unwrap();
    let names: Vec<&[u8]> = f.xattrs.keys().map(|k| k.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"security.capability"[..],
            b"trusted.overlay.opaque",
            b"user.foo"
        ]
    );
    assert_eq!(f.xattrs[&b"user.foo"[..]], b"bar");
    assert!(dump_path(&built.image, "/xattr/f").contains("Xattr size: "));
    assert!(!dump_path(&built.image, "/xattr/f").contains("Xattr size: 0"));
    // Whiteout markers are never stored.
    assert!(!list.iter().any(|e| e.path.windows(4).any(|w| w == b".wh.")));
    assert!(list
        .iter()
        .all(|e| e.kind != Kind::CharDevice || e.rdev != (0, 0)));
    // Every regular file but the empty and the sparse one is one mapping; data of
    // distinct files never overlap.
    let mut ranges: Vec<(u64, u64)> = built.mappings.iter().map(|m| (m.0, m.0 + m.1)).collect();
    ranges.sort();
    assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0));
    assert!(ranges.iter().all(|r| r.0 >= 4096));
}

#[test]
fn three_layers_incremental() {
    if !have_erofs_utils() {
        return;
    }
    let (t1, mut m) = layer1();
    let mut models = vec![m.clone()];
    let t2 = layer2(&mut m);
    models.push(m.clone());
    let t3 = layer3(&mut m);
    models.push(m.clone());
    let built = build_layers(&[t1, t2, t3], |i, image| {
        check(&format!("after layer {}", i + 1), image, &models[i]);
        match i {
            1 => {
                assert_eq!(links_of(image, "/links/a"), 3);
                assert_eq!(links_of(image, "/links/d"), 3);
            }
            2 => {
                assert_eq!(links_of(image, "/links/a"), 1);
                assert_eq!(links_of(image, "/links/c"), 2);
            }
            _ => {}
        }
    });
    // Each layer appends above the previous layer's blocks (and rewrites in place below).
    let mut lo = 1u64;
    for (ls, st) in &built.stats {
        eprintln!("{ls:?}\n{st:?}");
        assert!(u64::from(st.area_blkaddr) >= lo);
        lo = u64::from(st.total_blocks);
    }
    for w in built.mappings.windows(2) {
        assert!(w[0].3 <= w[1].3);
    }
    let img = FileSource::open(&built.image).unwrap();
    let (_, list) = list_image(&img).unwrap();
    let f2 = list.iter().find(|e| e.path == b"xattr/f2").unwrap();
    assert_eq!(f2.xattrs[&b"user.x"[..]], b"1");
    let f = list.iter().find(|e| e.path == b"xattr/f").unwrap();
    assert_eq!(f.xattrs.len(), 3, "lower xattrs survive the rebuild");
}

#[test]
fn builds_are_deterministic() {
    if !have_erofs_utils() {
        return;
    }
    let (t1, mut m) = layer1();
    let t2 = layer2(&mut m);
    let a = build_layers(&[t1.clone(), t2.clone()], |_, _| {});
    let b = build_layers(&[t1, t2], |_, _| {});
    assert_eq!(a.mappings, b.mappings);
    assert_eq!(a.stats, b.stats);
    let (ia, ib) = (
        FileSource::open(&a.image).unwrap(),
        FileSource::open(&b.image).unwrap(),
    );
    let end = u64::from(a.stats.last().unwrap().1.total_blocks) * 4096;
    let mut ba = vec![0u8; end as usize];
    let mut bb = vec![0u8; end as usize];
    use obd_format::io::ReadAt;
    ia.read_exact_at(&mut ba, 0).unwrap();
    ib.read_exact_at(&mut bb, 0).unwrap();
    assert!(ba == bb, "images differ");
}

#[test]
fn empty_layer_keeps_the_tree() {
    if !have_erofs_utils() {
        return;
    }
    let (t1, m) = layer1();
    let empty = TarB::new().finish();
    let built = build_layers(&[t1, empty.clone(), Vec::new()], |i, image| {
        check(&format!("after layer {}", i + 1), image, &m)
    });
    // Nothing changed: not even the superblock is written.
    assert!(built.written[1].is_empty(), "{:?}", built.written[1]);
    assert!(built.written[2].is_empty(), "{:?}", built.written[2]);
}

// ---- Incremental layers over a large tree: what a small layer writes. ----

fn pkg_file(p: usize, f: usize) -> String {
    format!("usr/lib/pkg{p:02}/file-{f:04}")
}

/// A large first layer: 30 package directories of 120 files, a deep path, a directory of
/// several blocks; every mtime T0 (so every inode is compact).
fn big_base() -> (Vec<u8>, Model) {
    let mut t = TarB::new();
    let mut m = Model::new();
    let a = attr(0o755, 0, 0, T0);
    let dir = |t: &mut TarB, m: &mut Model, p: &str| {
        t.dir(p, &a);
        put(m, p, ent('d', 0o755, 0, 0, b"", T0 as i64));
    };
    let file = |t: &mut TarB, m: &mut Model, p: &str, data: &[u8]| {
        t.file(p, &attr(0o644, 0, 0, T0), data);
        put(m, p, ent('f', 0o644, 0, 0, data, T0 as i64));
    };
    dir(&mut t, &mut m, "etc");
    file(&mut t, &mut m, "etc/hostname", b"box\n");
    dir(&mut t, &mut m, "usr");
    dir(&mut t, &mut m, "usr/lib");
    for p in 0..30 {
        dir(&mut t, &mut m, &format!("usr/lib/pkg{p:02}"));
        for f in 0..120 {
            let data = if f % 40 == 0 {
                pattern(100 + f, p as u8)
            } else {
                Vec::new()
            };
            file(&mut t, &mut m, &pkg_file(p, f), &data);
        }
    }
    let mut deep = String::new();
    for c in ["a", "b", "c", "d", "e", "f", "g"] {
        if !deep.is_empty() {
            deep.push('/');
        }
        deep.push_str(c);
        dir(&mut t, &mut m, &deep);
    }
    file(&mut t, &mut m, "a/b/c/d/e/f/g/deep", b"deep data");
    dir(&mut t, &mut m, "big");
    for i in 0..600 {
        file(&mut t, &mut m, &format!("big/{}", bigdir_name(i * 2)), b"");
    }
    (t.finish(), m)
}

/// Builds `big_base` and a second layer made by `layer` (which updates the model); checks
/// both images (fsck.erofs, extraction, kernel mount), that the second layer wrote at most
/// `max_blocks` blocks, and that every path not under or above one of `touched` kept its
/// inode: same nid, attributes and data blocks.
fn incremental(
    name: &str,
    touched: &[&str],
    max_blocks: usize,
    layer: impl FnOnce(&mut TarB, &mut Model),
) -> Built {
    let (t1, m1) = big_base();
    let mut m2 = m1.clone();
    let mut t = TarB::new();
    layer(&mut t, &mut m2);
    let models = [m1, m2];
    let mut before = Vec::new();
    let built = build_layers(&[t1, t.finish()], |i, image| {
        check(&format!("{name}: layer {}", i + 1), image, &models[i]);
        if i == 0 {
            before = list_image(&FileSource::open(image).unwrap()).unwrap().1;
        }
    });
    let (_, st) = &built.stats[1];
    let w = &built.written[1];
    eprintln!(
        "{name}: layer 2 wrote {} blocks ({} in place); layer 1 wrote {}; {st:?}",
        w.len(),
        st.rewritten_blocks,
        built.stats[0].1.meta_blocks
    );
    assert!(!st.full_rewrite, "{name}: incremental");
    assert_eq!(w.len() as u64, st.meta_blocks, "{name}: {w:?}");
    assert!(
        w.len() <= max_blocks,
        "{name}: layer 2 wrote {} blocks, at most {max_blocks} expected: {w:?}",
        w.len()
    );
    // Nothing below the layer's own area but metadata blocks of the old image.
    let lower_data: std::collections::BTreeSet<u64> = built
        .mappings
        .iter()
        .filter(|m| m.3 == 0)
        .flat_map(|m| m.0 / 4096..(m.0 + m.1).div_ceil(4096))
        .collect();
    assert!(
        w.is_disjoint(&lower_data),
        "{name}: lower file data written"
    );
    let exempt = |p: &str| {
        touched
            .iter()
            .any(|t| p == *t || p.starts_with(&format!("{t}/")) || t.starts_with(&format!("{p}/")))
            || p.is_empty()
    };
    let (_, after) = list_image(&FileSource::open(&built.image).unwrap()).unwrap();
    let after: BTreeMap<Vec<u8>, _> = after.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mut kept = 0;
    for e in &before {
        let p = String::from_utf8_lossy(&e.path).into_owned();
        if exempt(&p) {
            continue;
        }
        assert_eq!(after.get(&e.path), Some(e), "{name}: {p} changed");
        kept += 1;
    }
    assert!(kept > 3000, "{name}: {kept} paths compared");
    built
}

#[test]
fn incremental_add_one_file() {
    if !have_erofs_utils() {
        return;
    }
    // The file alone: its inode (appended), its parent's entries (the parent, a leaf
    // directory whose inline block grew, moves next to it) and the entry naming the
    // parent; plus the superblock.
    incremental("add one file", &["usr/lib/pkg07"], 4, |t, m| {
        t.file("usr/lib/pkg07/new", &attr(0o644, 0, 0, T0 + 500), b"new!");
        put(
            m,
            "usr/lib/pkg07/new",
            ent('f', 0o644, 0, 0, b"new!", (T0 + 500) as i64),
        );
    });
    // As image builders write it: with its parent directories, whose mtimes change (so
    // their inodes become extended).
    incremental(
        "add one file with parents",
        &["usr/lib/pkg07"],
        6,
        |t, m| {
            for d in ["usr", "usr/lib", "usr/lib/pkg07"] {
                t.dir(d, &attr(0o755, 0, 0, T0 + 500));
                put(m, d, ent('d', 0o755, 0, 0, b"", (T0 + 500) as i64));
            }
            t.file("usr/lib/pkg07/new", &attr(0o644, 0, 0, T0 + 500), b"new!");
            put(
                m,
                "usr/lib/pkg07/new",
                ent('f', 0o644, 0, 0, b"new!", (T0 + 500) as i64),
            );
        },
    );
    // Into the middle of a directory of several blocks: entries move on block by block,
    // the directory stays where it is.
    let name = format!("big/{}", bigdir_name(601));
    incremental("add into a big directory", &["big"], 9, |t, m| {
        t.file(&name, &attr(0o644, 0, 0, T0), b"");
        put(m, &name, ent('f', 0o644, 0, 0, b"", T0 as i64));
    });
}

#[test]
fn incremental_delete_one_file() {
    if !have_erofs_utils() {
        return;
    }
    let gone = pkg_file(3, 42);
    incremental("delete one file", &["usr/lib/pkg03"], 2, |t, m| {
        t.whiteout("usr/lib/pkg03/.wh.file-0042");
        m.remove(&gone);
    });
}

#[test]
fn incremental_deep_mode_change() {
    if !have_erofs_utils() {
        return;
    }
    // Same mtime: the new inode takes the old one's slot; only its block is written.
    let p = "a/b/c/d/e/f/g/deep";
    incremental("deep mode change", &[p], 2, |t, m| {
        t.file(p, &attr(0o600, 0, 0, T0), b"deep data");
        put(m, p, ent('f', 0o600, 0, 0, b"deep data", T0 as i64));
    });
    // A new mtime needs an extended inode, which does not fit there: appended, and the
    // parent's entry changes.
    incremental("deep mode and mtime change", &[p], 3, |t, m| {
        t.file(p, &attr(0o600, 0, 0, T0 + 7), b"deep data");
        put(m, p, ent('f', 0o600, 0, 0, b"deep data", (T0 + 7) as i64));
    });
}

#[test]
fn incremental_opaque_directory() {
    if !have_erofs_utils() {
        return;
    }
    incremental("opaque directory", &["usr/lib/pkg05"], 4, |t, m| {
        t.dir("usr/lib/pkg05", &attr(0o755, 0, 0, T0));
        t.whiteout("usr/lib/pkg05/.wh..wh..opq");
        t.file("usr/lib/pkg05/fresh", &attr(0o644, 0, 0, T0), b"fresh");
        remove_tree(m, "usr/lib/pkg05");
        put(m, "usr/lib/pkg05", ent('d', 0o755, 0, 0, b"", T0 as i64));
        put(
            m,
            "usr/lib/pkg05/fresh",
            ent('f', 0o644, 0, 0, b"fresh", T0 as i64),
        );
    });
}

#[test]
fn incremental_file_replaced_by_directory() {
    if !have_erofs_utils() {
        return;
    }
    let f = pkg_file(9, 1);
    incremental("file replaced by a directory", &[&f], 4, |t, m| {
        t.dir(&f, &attr(0o750, 0, 0, T0 + 3));
        t.file(&format!("{f}/inner"), &attr(0o644, 0, 0, T0 + 3), b"in");
        put(m, &f, ent('d', 0o750, 0, 0, b"", (T0 + 3) as i64));
        put(
            m,
            &format!("{f}/inner"),
            ent('f', 0o644, 0, 0, b"in", (T0 + 3) as i64),
        );
    });
}

/// Several incremental layers in a row stay byte-for-byte deterministic.
#[test]
fn incremental_builds_are_deterministic() {
    if !have_erofs_utils() {
        return;
    }
    let (t1, _) = big_base();
    let mut t2 = TarB::new();
    t2.dir("usr/lib", &attr(0o755, 0, 0, T0 + 1));
    t2.file("usr/lib/pkg01/x", &attr(0o644, 0, 0, T0 + 1), b"x");
    t2.whiteout("usr/lib/pkg02/.wh.file-0003");
    let t2 = t2.finish();
    let mut t3 = TarB::new();
    t3.file("big/zzz", &attr(0o644, 0, 0, T0 + 2), b"z");
    t3.whiteout("usr/lib/.wh.pkg04");
    let t3 = t3.finish();
    let layers = [t1, t2, t3];
    let a = build_layers(&layers, |_, image| fsck(image));
    let b = build_layers(&layers, |_, _| {});
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.written, b.written);
    let end = u64::from(a.stats.last().unwrap().1.total_blocks) * 4096;
    let (ia, ib) = (
        FileSource::open(&a.image).unwrap(),
        FileSource::open(&b.image).unwrap(),
    );
    let mut ba = vec![0u8; end as usize];
    let mut bb = vec![0u8; end as usize];
    use obd_format::io::ReadAt;
    ia.read_exact_at(&mut ba, 0).unwrap();
    ib.read_exact_at(&mut bb, 0).unwrap();
    assert!(ba == bb, "images differ");
}
