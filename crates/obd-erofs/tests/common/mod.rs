//! Shared helpers of the obd-erofs integration tests: handmade layer tars, building an
//! image layer by layer on a sparse raw file (materialising the RemoteData mappings by
//! copying tar bytes), running erofs-utils, and walking extracted trees.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use obd_erofs::{ErofsBuilder, LayerStats, Stats};
use obd_format::io::{RawImage, ReadAt, WriteAt};

pub const DEV_SIZE: u64 = 64 << 30;
pub const UUID: [u8; 16] = *b"obd-erofs-test!!";

/// True if erofs-utils is installed; panics under CI when it is not.
pub fn have_erofs_utils() -> bool {
    let ok = Command::new("fsck.erofs")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "erofs-utils (fsck.erofs, dump.erofs) must be installed under CI"
        );
        eprintln!("skipping: erofs-utils is not installed (apt-get install erofs-utils)");
    }
    ok
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The type-specific part of a member.
enum Special<'a> {
    None,
    Link(&'a str),
    Dev((u32, u32)),
}

/// Builds a layer tar member by member.
pub struct TarB {
    b: tar::Builder<Vec<u8>>,
}

/// Member attributes beyond the name and type.
#[derive(Clone)]
pub struct Attr {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: (u64, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Default for Attr {
    fn default() -> Self {
        Attr {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (1_700_000_000, 0),
            xattrs: Vec::new(),
        }
    }
}

pub fn attr(mode: u32, uid: u64, gid: u64, mtime: u64) -> Attr {
    Attr {
        mode,
        uid,
        gid,
        mtime: (mtime, 0),
        xattrs: Vec::new(),
    }
}

impl Default for TarB {
    fn default() -> Self {
        Self::new()
    }
}

impl TarB {
    pub fn new() -> Self {
        TarB {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn pax(&mut self, recs: Vec<(String, Vec<u8>)>) {
        if recs.is_empty() {
            return;
        }
        let mut data = Vec::new();
        for (k, v) in &recs {
            data.extend(pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        self.b.append_data(&mut h, "PaxHeader", &data[..]).unwrap();
    }

    fn member(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        a: &Attr,
        data: &[u8],
        special: Special<'_>,
        extra_pax: Vec<(String, Vec<u8>)>,
    ) {
        let (link, dev) = match special {
            Special::None => (None, (0, 0)),
            Special::Link(l) => (Some(l), (0, 0)),
            Special::Dev(d) => (None, d),
        };
        let mut recs = extra_pax;
        if a.mtime.1 != 0 {
            recs.push((
                "mtime".into(),
                format!("{}.{:09}", a.mtime.0, a.mtime.1).into_bytes(),
            ));
        }
        if a.uid > 0o7777777 {
            recs.push(("uid".into(), a.uid.to_string().into_bytes()));
        }
        if a.gid > 0o7777777 {
            recs.push(("gid".into(), a.gid.to_string().into_bytes()));
        }
        for (k, v) in &a.xattrs {
            recs.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        self.pax(recs);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(a.mode);
        h.set_uid(a.uid.min(0o7777777));
        h.set_gid(a.gid.min(0o7777777));
        h.set_mtime(a.mtime.0);
        h.set_size(data.len() as u64);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
        }
        match link {
            Some(l) => self.b.append_link(&mut h, path, l).unwrap(),
            None => self.b.append_data(&mut h, path, data).unwrap(),
        }
    }

    pub fn file(&mut self, path: &str, a: &Attr, data: &[u8]) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Regular,
            a,
            data,
            Special::None,
            vec![],
        );
        self
    }
    pub fn dir(&mut self, path: &str, a: &Attr) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Directory,
            a,
            &[],
            Special::None,
            vec![],
        );
        self
    }
    pub fn symlink(&mut self, path: &str, a: &Attr, target: &str) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Symlink,
            a,
            &[],
            Special::Link(target),
            vec![],
        );
        self
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Link,
            &Attr::default(),
            &[],
            Special::Link(target),
            vec![],
        );
        self
    }
    pub fn chardev(&mut self, path: &str, a: &Attr, dev: (u32, u32)) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Char,
            a,
            &[],
            Special::Dev(dev),
            vec![],
        );
        self
    }
    pub fn blockdev(&mut self, path: &str, a: &Attr, dev: (u32, u32)) -> &mut Self {
        self.member(
            path,
            tar::EntryType::Block,
            a,
            &[],
            Special::Dev(dev),
            vec![],
        );
        self
    }
    pub fn fifo(&mut self, path: &str, a: &Attr) -> &mut Self {
        self.member(path, tar::EntryType::Fifo, a, &[], Special::None, vec![]);
        self
    }
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        self.file(path, &Attr::default(), &[])
    }
    /// A PAX 1.0 sparse member of logical size `size` with `segs` (offset, data).
    pub fn sparse(&mut self, path: &str, a: &Attr, size: u64, segs: &[(u64, &[u8])]) -> &mut Self {
        let mut map = format!("{}\n", segs.len());
        for (o, d) in segs {
            map.push_str(&format!("{o}\n{}\n", d.len()));
        }
        let mut data = map.into_bytes();
        data.resize(data.len().div_ceil(512) * 512, 0);
        for (_, d) in segs {
            data.extend_from_slice(d);
        }
        let recs = vec![
            ("GNU.sparse.major".to_string(), b"1".to_vec()),
            ("GNU.sparse.minor".to_string(), b"0".to_vec()),
            ("GNU.sparse.name".to_string(), path.as_bytes().to_vec()),
            (
                "GNU.sparse.realsize".to_string(),
                size.to_string().into_bytes(),
            ),
        ];
        let stored = format!("GNUSparseFile.0/{path}");
        self.member(
            &stored,
            tar::EntryType::Regular,
            a,
            &data,
            Special::None,
            recs,
        );
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// An image built layer by layer in a sparse raw file.
pub struct Built {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub stats: Vec<(LayerStats, Stats)>,
    /// Every mapping of every layer: (device offset, length, tar offset, layer).
    pub mappings: Vec<(u64, u64, u64, usize)>,
    /// Per layer, the 4 KiB blocks the builder wrote to the device (what the layer's
    /// diff on a stacked device would hold, mapped file data aside).
    pub written: Vec<BTreeSet<u64>>,
}

/// A device that records which 4 KiB blocks are written through it.
pub struct Counting<'a> {
    pub dev: &'a mut RawImage,
    pub blocks: BTreeSet<u64>,
}

impl ReadAt for Counting<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        self.dev.read_at(buf, off)
    }
    fn size(&self) -> u64 {
        self.dev.size()
    }
}

impl WriteAt for Counting<'_> {
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        if !buf.is_empty() {
            self.blocks
                .extend(off / 4096..=(off + buf.len() as u64 - 1) / 4096);
        }
        self.dev.write_at(buf, off)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.dev.flush()
    }
}

/// Builds `layers[..]` one after the other; after each layer, materialises its mappings
/// and calls `check(layer index, &Built-so-far)`.
pub fn build_layers(layers: &[Vec<u8>], mut check: impl FnMut(usize, &Path)) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let mut dev = RawImage::create(&image, DEV_SIZE).unwrap();
    let mut stats = Vec::new();
    let mut all = Vec::new();
    let mut written = Vec::new();
    for (i, tar) in layers.iter().enumerate() {
        let mut maps: Vec<(u64, u64, u64)> = Vec::new();
        let mut counting = Counting {
            dev: &mut dev,
            blocks: BTreeSet::new(),
        };
        let (ls, st) = {
            let mut b = if i == 0 {
                ErofsBuilder::new_first_layer(&mut counting, UUID).unwrap()
            } else {
                ErofsBuilder::open(&mut counting).unwrap()
            };
            let mut remote = |d: u64, l: u64, t: u64| {
                maps.push((d, l, t));
                Ok(())
            };
            let ls = b.apply_tar(&tar[..], &mut remote).unwrap();
            (ls, b.finish().unwrap())
        };
        written.push(counting.blocks);
        for &(d, l, t) in &maps {
            assert_eq!(d % 512, 0);
            assert_eq!(l % 512, 0);
            assert_eq!(t % 512, 0);
            dev.write_at(&tar[t as usize..(t + l) as usize], d).unwrap();
            all.push((d, l, t, i));
        }
        check(i, &image);
        stats.push((ls, st));
    }
    Built {
        dir,
        image,
        stats,
        mappings: all,
        written,
    }
}

/// `fsck.erofs [ARGS] IMAGE`; panics unless it succeeds.
fn run_fsck(args: &[String], image: &Path) {
    let o = Command::new("fsck.erofs")
        .args(args)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.erofs failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `fsck.erofs IMAGE`; panics unless it succeeds.
pub fn fsck(image: &Path) {
    run_fsck(&[], image);
}

/// `fsck.erofs --extract` into a fresh directory; panics unless it succeeds.
pub fn fsck_extract(image: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    run_fsck(&[format!("--extract={}", target.display())], image);
    out
}

/// `dump.erofs --path=P IMAGE` output.
pub fn dump_path(image: &Path, p: &str) -> String {
    let o = Command::new("dump.erofs")
        .arg(format!("--path={p}"))
        .arg(image)
        .output()
        .unwrap();
    assert!(o.status.success(), "dump.erofs --path={p} failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One node of a tree as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ent {
    /// f d l c b p
    pub kind: char,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// File contents or symlink target.
    pub data: Vec<u8>,
    /// (sec, nsec); `None` where it is not compared (devices, fifos: fsck.erofs does not
    /// restore their times).
    pub mtime: Option<(i64, u32)>,
    pub rdev: (u32, u32),
}

pub fn ent(kind: char, perm: u32, uid: u32, gid: u32, data: &[u8], mtime: i64) -> Ent {
    Ent {
        kind,
        perm: if kind == 'l' { 0o777 } else { perm },
        uid,
        gid,
        data: data.to_vec(),
        mtime: if matches!(kind, 'c' | 'b' | 'p') {
            None
        } else {
            Some((mtime, 0))
        },
        rdev: (0, 0),
    }
}

/// Walks an extracted tree (the root itself excluded).
pub fn walk(root: &Path) -> BTreeMap<String, Ent> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_fifo() {
                'p'
            } else {
                's'
            };
            let data = match kind {
                'f' => std::fs::read(&p).unwrap(),
                'l' => {
                    use std::os::unix::ffi::OsStrExt;
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }
                _ => Vec::new(),
            };
            let rdev = m.rdev();
            let rdev = if matches!(kind, 'c' | 'b') {
                (
                    (((rdev & 0xfff00) >> 8) | ((rdev & 0xffff_f000_0000_0000) >> 32)) as u32,
                    ((rdev & 0xff) | ((rdev & 0x0000_0fff_fff0_0000) >> 12)) as u32,
                )
            } else {
                (0, 0)
            };
            out.insert(
                rel,
                Ent {
                    kind,
                    perm: if kind == 'l' {
                        0o777
                    } else {
                        m.mode() & 0o7777
                    },
                    uid: m.uid(),
                    gid: m.gid(),
                    data,
                    mtime: if matches!(kind, 'c' | 'b' | 'p') {
                        None
                    } else {
                        Some((m.mtime(), m.mtime_nsec() as u32))
                    },
                    rdev,
                },
            );
            if kind == 'd' {
                stack.push(p);
            }
        }
    }
    out
}

/// Panics with a readable diff unless the trees are equal.
pub fn assert_trees(what: &str, want: &BTreeMap<String, Ent>, got: &BTreeMap<String, Ent>) {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => diffs.push(format!("missing: {k}")),
            Some(g) if g != w => {
                let short = |e: &Ent| {
                    let mut e = e.clone();
                    if e.data.len() > 64 {
                        e.data = format!("<{} bytes>", e.data.len()).into_bytes();
                    }
                    e
                };
                diffs.push(format!(
                    "differs: {k}\n  want {:?}\n  got  {:?}",
                    short(w),
                    short(g)
                ))
            }
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            diffs.push(format!("unexpected: {k}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs[..diffs.len().min(30)].join("\n")
    );
}

/// Whether the kernel can loop-mount EROFS here (tried once).
pub fn can_mount() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let ok = std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.contains("erofs"))
            && Command::new("mount")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
            && nix_is_root();
        if !ok {
            eprintln!("note: no EROFS loop mounts here; kernel checks are skipped");
        }
        ok
    })
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Loop-mounts `image` read-only, runs `f` on the mount point, unmounts. `None` if the
/// mount is refused for lack of permission (not a test failure); a mount that fails
/// otherwise panics.
pub fn with_mount<T>(image: &Path, f: impl FnOnce(&Path) -> T) -> Option<T> {
    if !can_mount() {
        return None;
    }
    let mnt = tempfile::tempdir().unwrap();
    let o = Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(image)
        .arg(mnt.path())
        .output()
        .unwrap();
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("permission denied") || err.contains("must be superuser") {
            eprintln!("note: loop mount refused: {err}");
            return None;
        }
        panic!("mount -t erofs failed: {err}");
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt.path())));
    let _ = Command::new("umount").arg(mnt.path()).status();
    match r {
        Ok(v) => Some(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The xattrs of a path (not following symlinks), through Python's `os.listxattr`.
pub fn xattrs_of(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys\np=sys.argv[1]\n\
             for k in sorted(os.listxattr(p, follow_symlinks=False)):\n \
             print(k, os.getxattr(p, k, follow_symlinks=False).hex())",
        )
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "python3 listxattr failed");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            let v = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
                .collect();
            (k.to_string(), v)
        })
        .collect()
}

/// What `fsck.erofs --extract` can reproduce of a model: it restores the mode before the
/// owner, and the kernel's chown then clears set-user-ID (and set-group-ID on
/// group-executable) non-directories.
pub fn fsck_view(m: &BTreeMap<String, Ent>) -> BTreeMap<String, Ent> {
    let mut m = m.clone();
    for e in m.values_mut() {
        if e.kind != 'd' {
            if e.perm & 0o4000 != 0 {
                e.perm &= !0o4000;
            }
            if e.perm & 0o2010 == 0o2010 {
                e.perm &= !0o2000;
            }
        }
    }
    m
}

/// Every xattr of every path under `root` (not following symlinks), through one Python
/// run: path → name → value.
pub fn tree_xattrs(root: &Path) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys\nr=sys.argv[1]\n\
             for d,ds,fs in os.walk(r):\n \
             for n in ds+fs:\n  \
             p=os.path.join(d,n)\n  \
             for k in sorted(os.listxattr(p, follow_symlinks=False)):\n   \
             print(os.path.relpath(p,r).encode('utf-8','surrogateescape').hex(), k, \
             os.getxattr(p, k, follow_symlinks=False).hex())",
        )
        .arg(root)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python3 xattr walk failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let hex = |v: &str| -> Vec<u8> {
        (0..v.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for l in String::from_utf8(o.stdout).unwrap().lines() {
        let mut it = l.split(' ');
        let (p, k, v) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap_or(""),
        );
        let p = String::from_utf8_lossy(&hex(p)).into_owned();
        out.entry(p).or_default().insert(k.to_string(), hex(v));
    }
    out
}
