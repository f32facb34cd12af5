//! Random layers, many in a row: after every layer the image read back from the device
//! must hold exactly the builder's merged tree (paths, types, attributes, xattrs, data
//! addresses, symlink targets, hard-link groups) and pass `fsck.erofs`. The layers mix
//! what makes incremental updates move things: directories growing past their blocks,
//! inodes turning extended (new mtimes, large ids), xattrs growing on directories and on
//! the root, files replaced by directories and back, whiteouts, opaque directories, hard
//! links, long symlinks and xattrs larger than a block.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::*;
use obd_erofs::reader::{load_tree, Image};
use obd_erofs::tree::{Body, NodeId, Tree, ROOT};
use obd_erofs::{list_image, ErofsBuilder, Kind};
use obd_format::io::RawImage;

const T0: u64 = 1_700_000_000;

/// xorshift64*: deterministic and good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Path → description of everything the image stores about it; hard links name the first
/// path (in sorted walk order) of their inode.
fn flatten(t: &Tree) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut leader: HashMap<NodeId, String> = HashMap::new();
    let mut stack = vec![(String::new(), ROOT)];
    while let Some((p, id)) = stack.pop() {
        let n = &t.nodes[id];
        let body = match &n.body {
            Body::Dir { entries, .. } => {
                for (name, &c) in entries.iter().rev() {
                    let name = String::from_utf8_lossy(name);
                    let cp = if p.is_empty() {
                        name.into_owned()
                    } else {
                        format!("{p}/{name}")
                    };
                    stack.push((cp, c));
                }
                "dir".to_string()
            }
            Body::File { size, blkaddr } => format!("file {size}@{blkaddr}"),
            Body::Symlink(target) => format!("symlink {}", String::from_utf8_lossy(target)),
            Body::Special(rdev) => format!("special {rdev}"),
        };
        let perm = if n.kind == obd_erofs::Kind::Symlink {
            0o777
        } else {
            n.perm
        };
        let first = leader.entry(id).or_insert_with(|| p.clone()).clone();
        out.insert(
            p,
            format!(
                "{:?} {perm:o} {}:{} {}.{} {:?} {body} inode-of:{first}",
                n.kind, n.uid, n.gid, n.mtime, n.mtime_nsec, n.xattrs
            ),
        );
    }
    out
}

/// The state a layer is generated from: directories and non-directories by path.
#[derive(Default)]
struct State {
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

fn state_of(flat: &BTreeMap<String, String>) -> State {
    let mut s = State::default();
    for (p, d) in flat {
        if p.is_empty() {
            continue;
        }
        if d.starts_with("Dir ") {
            s.dirs.insert(p.clone());
        } else if d.starts_with("File ") {
            s.files.insert(p.clone());
        }
    }
    s
}

fn pick<'a>(rng: &mut Rng, set: &'a BTreeSet<String>) -> Option<&'a String> {
    if set.is_empty() {
        None
    } else {
        set.iter().nth(rng.below(set.len()))
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn rand_attr(rng: &mut Rng, mode: u32) -> Attr {
    let mut a = attr(mode, 0, 0, T0);
    if rng.chance(40) {
        a.mtime = (T0 + rng.below(5) as u64, 0);
    }
    if rng.chance(5) {
        a.mtime.1 = 1 + rng.below(999_999_998) as u32;
    }
    if rng.chance(5) {
        a.uid = 70_000 + rng.below(10) as u64;
    }
    if rng.chance(10) {
        // Now and then larger than a block: the inode then spans blocks.
        let len = if rng.chance(15) {
            4000 + rng.below(2000)
        } else {
            1 + rng.below(300)
        };
        a.xattrs = vec![(format!("user.k{}", rng.below(3)), vec![b'v'; len])];
    }
    a
}

/// One random layer over `prev` (the merged tree so far); `layer` is its index.
fn gen_layer(rng: &mut Rng, prev: &State, layer: usize) -> Vec<u8> {
    let mut t = TarB::new();
    // Parents usable in this layer: lower directories not removed or replaced yet, and
    // directories this layer made.
    let mut dirs: BTreeSet<String> = prev.dirs.clone();
    dirs.insert(String::new());
    let mut files: BTreeSet<String> = prev.files.clone();
    let drop_tree = |dirs: &mut BTreeSet<String>, files: &mut BTreeSet<String>, p: &str| {
        let pre = format!("{p}/");
        dirs.retain(|d| d != p && !d.starts_with(&pre));
        files.retain(|f| f != p && !f.starts_with(&pre));
    };
    let ops = if layer == 0 { 400 } else { 10 + rng.below(60) };
    for i in 0..ops {
        let dir = pick(rng, &dirs).cloned().unwrap_or_default();
        let name = format!("n{}", rng.below(if layer == 0 { 200 } else { 40 }));
        let p = join(&dir, &name);
        let taken = dirs.contains(&p) || files.contains(&p);
        match rng.below(100) {
            // A regular file (maybe replacing a file or a whole directory).
            0..=34 => {
                if dirs.contains(&p) {
                    drop_tree(&mut dirs, &mut files, &p);
                }
                let data = vec![b'd'; rng.below(3) * rng.below(6000)];
                let a = rand_attr(rng, 0o644);
                t.file(&p, &a, &data);
                files.insert(p);
            }
            // A directory (merging over a lower one, or replacing a file).
            35..=49 => {
                files.remove(&p);
                let a = rand_attr(rng, 0o755);
                t.dir(&p, &a);
                dirs.insert(p);
            }
            // Many files into one directory: blocks overflow.
            50..=53 => {
                let a = attr(0o644, 0, 0, T0 + (layer % 2) as u64);
                for k in 0..(50 + rng.below(150)) {
                    let f = join(
                        &dir,
                        &format!("bulk-entry-with-a-long-name-{layer}-{i}-{k:04}"),
                    );
                    if !dirs.contains(&f) {
                        t.file(&f, &a, b"");
                        files.insert(f);
                    }
                }
            }
            // A symlink, short or long.
            54..=61 => {
                if dirs.contains(&p) {
                    drop_tree(&mut dirs, &mut files, &p);
                }
                let len = if rng.chance(20) {
                    1000 + rng.below(3000)
                } else {
                    1 + rng.below(100)
                };
                t.symlink(
                    &p,
                    &attr(0o777, 0, 0, T0 + rng.below(2) as u64),
                    &"s".repeat(len),
                );
                files.remove(&p);
            }
            // A hard link to an existing file.
            62..=67 => {
                if taken {
                    continue;
                }
                let Some(target) = pick(rng, &files).cloned() else {
                    continue;
                };
                t.hardlink(&p, &target);
                files.insert(p);
            }
            // A whiteout.
            68..=84 => {
                if layer == 0 || !taken {
                    continue;
                }
                t.whiteout(&join(&dir, &format!(".wh.{name}")));
                drop_tree(&mut dirs, &mut files, &p);
            }
            // An opaque directory.
            85..=89 => {
                if layer == 0 || dir.is_empty() {
                    continue;
                }
                t.whiteout(&join(&dir, ".wh..wh..opq"));
                let pre = format!("{dir}/");
                dirs.retain(|d| !d.starts_with(&pre));
                files.retain(|f| !f.starts_with(&pre));
            }
            // The root itself.
            90..=94 => {
                let a = rand_attr(rng, 0o755);
                t.dir("./", &a);
            }
            // A device or a fifo.
            _ => {
                if dirs.contains(&p) {
                    drop_tree(&mut dirs, &mut files, &p);
                }
                if rng.chance(50) {
                    t.fifo(&p, &rand_attr(rng, 0o600));
                } else {
                    t.chardev(&p, &rand_attr(rng, 0o600), (rng.below(300) as u32, 7));
                }
                files.remove(&p);
            }
        }
    }
    t.finish()
}

/// Checks what the tree walk does not see: every directory's `.` and `..` name itself and
/// its parent, and link counts (directories: 2 + subdirectories; others: their names).
fn check_links(dev: &RawImage, what: &str) {
    let (_, list) = list_image(dev).unwrap();
    let img = Image::open(dev).unwrap();
    let nid_of: HashMap<&[u8], u64> = list.iter().map(|e| (e.path.as_slice(), e.nid)).collect();
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    for e in &list {
        *names.entry(e.nid).or_default() += 1;
        if e.kind == Kind::Dir && !e.path.is_empty() {
            let parent = parent_of(&e.path);
            *subdirs.entry(parent).or_default() += 1;
        }
    }
    for e in &list {
        let p = String::from_utf8_lossy(&e.path);
        if e.kind == Kind::Dir {
            let ino = img.inode(e.nid).unwrap();
            let ents = img.dirents(e.nid, &ino).unwrap();
            let dot = ents.iter().find(|d| d.name == b".").unwrap();
            let dotdot = ents.iter().find(|d| d.name == b"..").unwrap();
            let parent = if e.path.is_empty() {
                e.nid
            } else {
                nid_of[parent_of(&e.path)]
            };
            assert_eq!(dot.nid, e.nid, "{what}: {p:?}: `.`");
            assert_eq!(dotdot.nid, parent, "{what}: {p:?}: `..`");
            let sub = subdirs.get(e.path.as_slice()).copied().unwrap_or(0);
            assert_eq!(e.nlink, 2 + sub, "{what}: {p:?}: directory link count");
        } else {
            assert_eq!(e.nlink, names[&e.nid], "{what}: {p:?}: link count");
        }
    }
}

/// The parent path of a path (`a/b` → `a`, `a` → the root).
fn parent_of(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[..i],
        None => &[],
    }
}

/// What the kernel view is compared on: type, permissions, owner, mtime, size.
type Seen = (char, u32, u32, u32, Option<(i64, u32)>, usize);

/// The kernel's view of the image equals the listing: paths, types, permissions, owners,
/// mtimes, sizes and symlink targets.
fn check_mount(image: &std::path::Path, dev: &RawImage, what: &str) {
    let (_, list) = list_image(dev).unwrap();
    with_mount(image, |mnt| {
        let got = walk(mnt);
        let want: BTreeMap<String, Seen> = list
            .iter()
            .filter(|e| !e.path.is_empty())
            .map(|e| {
                let kind = match e.kind {
                    Kind::File => 'f',
                    Kind::Dir => 'd',
                    Kind::Symlink => 'l',
                    Kind::CharDevice => 'c',
                    Kind::BlockDevice => 'b',
                    Kind::Fifo => 'p',
                    Kind::Socket => 's',
                };
                let perm = if kind == 'l' {
                    0o777
                } else {
                    u32::from(e.perm)
                };
                let mtime =
                    (!matches!(kind, 'c' | 'b' | 'p')).then_some((e.mtime as i64, e.mtime_nsec));
                let len = match kind {
                    'f' => e.size as usize,
                    'l' => e.target.len(),
                    _ => 0,
                };
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    (kind, perm, e.uid, e.gid, mtime, len),
                )
            })
            .collect();
        let got: BTreeMap<String, Seen> = got
            .into_iter()
            .map(|(p, e)| (p, (e.kind, e.perm, e.uid, e.gid, e.mtime, e.data.len())))
            .collect();
        assert_eq!(got, want, "{what}: kernel mount differs");
    });
}

fn run(seed: u64, layers: usize) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    let mut dev = RawImage::create(&path, DEV_SIZE).unwrap();
    let mut state = State::default();
    let mut total = (0u64, 0u64);
    for i in 0..layers {
        let tar = gen_layer(&mut rng, &state, i);
        let (want, stats) = {
            let mut b = if i == 0 {
                ErofsBuilder::new_first_layer(&mut dev, UUID).unwrap()
            } else {
                ErofsBuilder::open(&mut dev).unwrap()
            };
            b.apply_tar(&tar[..], &mut |_, _, _| Ok(()))
                .unwrap_or_else(|e| panic!("seed {seed} layer {i}: {e}"));
            let want = flatten(b.tree());
            (want, b.finish().unwrap())
        };
        let img = Image::open(&dev).unwrap();
        let got = flatten(&load_tree(&img).unwrap());
        if got != want {
            let diff: Vec<String> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("unexpected {k}")),
                )
                .take(20)
                .collect();
            panic!("seed {seed} layer {i}: image differs:\n{}", diff.join("\n"));
        }
        fsck(&path);
        check_links(&dev, &format!("seed {seed} layer {i}"));
        if i + 1 == layers {
            check_mount(&path, &dev, &format!("seed {seed} layer {i}"));
        }
        if i > 0 {
            total.0 += stats.meta_blocks;
            total.1 += u64::from(stats.full_rewrite);
        }
        state = state_of(&want);
    }
    eprintln!(
        "seed {seed}: {layers} layers, {} metadata blocks after the first, {} full rewrites",
        total.0, total.1
    );
}

#[test]
fn random_layers_read_back_as_built() {
    if !have_erofs_utils() {
        return;
    }
    for seed in 1..=6u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 12);
    }
}
