//! The merged root filesystem of a source image, computed from its layer tars alone.
//!
//! Each layer blob is streamed from the store, decompressed (gzip / zstd / plain, by magic)
//! and applied to an in-memory tree with the OCI semantics the converter implements (see
//! `obd_tar::apply`): `.wh.NAME` removes `NAME` from lower layers only, `.wh..wh..opq`
//! hides a directory's lower content, other `.wh..wh.*` names are ignored, a later member
//! replaces an earlier one (a directory over a directory merges, keeping and overwriting
//! xattrs), missing parents are created `0755 root:root`, parents are resolved inside the
//! image (symlinks followed, clamped to the root), hard links resolve against the archive
//! root in this or a lower layer. Regular file contents are hashed while streaming (sparse
//! members expanded with zeros) and never stored: memory is proportional to the number of
//! entries. Times are kept as the tar says (nanoseconds capped below one second); clamping
//! them to what the converted filesystem stores is left to the caller
//! ([`Tree::clamp_mtimes`]), which knows that filesystem.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use obd_tar::path;
use obd_tar::reader::{Entry as TarEntry, EntryKind, TarReader};
use sha2::{Digest, Sha256};

use crate::error::{CheckError, Result};
use crate::tree::{self, Entry, Kind, Time, Tree};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Most symlinks followed while resolving one path (as the ext4 engine).
const MAX_SYMLINKS: usize = 40;

type NodeId = usize;

struct Node {
    meta: Entry,
    /// Children of a directory.
    children: BTreeMap<Vec<u8>, NodeId>,
}

/// The tree being built, layer after layer. Removed nodes stay in the arena (unreachable).
pub struct SourceTree {
    nodes: Vec<Node>,
}

const ROOT: NodeId = 0;

/// Why applying a member failed (the converter would have refused the layer too).
fn invalid(e: &TarEntry, detail: impl Into<String>) -> CheckError {
    CheckError::BadInput(format!(
        "member {:?} (tar byte {}): {}",
        e.display_name(),
        e.header_offset,
        detail.into()
    ))
}

/// A member's time, nanoseconds capped as the converter caps them.
fn clamp_time(t: obd_tar::reader::Timestamp) -> Time {
    Time {
        secs: t.sec,
        nanos: t.nsec.min(999_999_999),
    }
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Default for SourceTree {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceTree {
    /// An empty root directory (`0755 root:root`, no mtime).
    pub fn new() -> Self {
        SourceTree {
            nodes: vec![Node {
                meta: Entry::implicit_dir(ROOT as u64),
                children: BTreeMap::new(),
            }],
        }
    }

    fn kind(&self, n: NodeId) -> Kind {
        self.nodes[n].meta.kind
    }

    fn add(&mut self, parent: NodeId, name: &[u8], mut meta: Entry) -> NodeId {
        let id = self.nodes.len();
        meta.object = id as u64;
        self.nodes.push(Node {
            meta,
            children: BTreeMap::new(),
        });
        self.nodes[parent].children.insert(name.to_vec(), id);
        id
    }

    /// Resolves a clean relative path from the root like the ext4 engine: `..` stops at the
    /// root, symlinks are followed (absolute targets restart at the root), the last
    /// component only when `follow_last`. `None` when a component does not exist.
    fn resolve(&self, p: &[u8], follow_last: bool) -> Result<Option<NodeId>> {
        let mut stack = vec![ROOT];
        let mut comps: std::collections::VecDeque<Vec<u8>> = p
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect();
        let mut links = 0;
        while let Some(c) = comps.pop_front() {
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = *stack.last().unwrap_or(&ROOT);
            if self.kind(cur) != Kind::Dir {
                return Err(CheckError::BadInput(format!(
                    "not a directory while resolving {:?}",
                    String::from_utf8_lossy(p)
                )));
            }
            let Some(&n) = self.nodes[cur].children.get(&c) else {
                return Ok(None);
            };
            if self.kind(n) == Kind::Symlink && (!comps.is_empty() || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(CheckError::BadInput(format!(
                        "too many symlinks resolving {:?}",
                        String::from_utf8_lossy(p)
                    )));
                }
                let target = self.nodes[n].meta.target.clone().unwrap_or_default();
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                for t in target
                    .split(|&c| c == b'/')
                    .filter(|c| !c.is_empty() && *c != b".")
                    .rev()
                {
                    comps.push_front(t.to_vec());
                }
                continue;
            }
            stack.push(n);
        }
        Ok(Some(*stack.last().unwrap_or(&ROOT)))
    }

    /// A directory by path (following symlinks); `None` if missing, an error if not a dir.
    fn resolve_dir(&self, p: &[u8]) -> Result<Option<NodeId>> {
        match self.resolve(p, true)? {
            Some(n) if self.kind(n) == Kind::Dir => Ok(Some(n)),
            Some(_) => Err(CheckError::BadInput(format!(
                "not a directory: {:?}",
                String::from_utf8_lossy(p)
            ))),
            None => Ok(None),
        }
    }

    /// `mkdir -p` with `0755 root:root` and no defined mtime.
    fn mkdir_all(&mut self, p: &[u8]) -> Result<NodeId> {
        let comps: Vec<&[u8]> = p
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let mut cur = ROOT;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            cur = match self.resolve(&prefix, true)? {
                Some(n) => n,
                None => {
                    let parent_path = comps[..i].join(&b'/');
                    let parent = self.resolve_dir(&parent_path)?.ok_or_else(|| {
                        CheckError::BadInput(format!(
                            "cannot create {:?}",
                            String::from_utf8_lossy(&prefix)
                        ))
                    })?;
                    self.add(parent, comps[i], Entry::implicit_dir(0))
                }
            };
            if self.kind(cur) != Kind::Dir {
                return Err(CheckError::BadInput(format!(
                    "not a directory: {:?}",
                    String::from_utf8_lossy(&prefix)
                )));
            }
        }
        Ok(cur)
    }

    /// Applies one layer stream (gzip, zstd or plain). Reads the stream to its end, so a
    /// store's digest check runs.
    pub fn apply_layer(&mut self, stream: impl Read + Send) -> Result<u64> {
        let (_, mut r) = obd_tar::decompress::decompress(stream)
            .map_err(|e| CheckError::io("reading the layer stream", e))?;
        let n = self.apply_tar(&mut r)?;
        io::copy(&mut r, &mut io::sink())
            .map_err(|e| CheckError::io("reading the layer stream", e))?;
        Ok(n)
    }

    /// Applies an uncompressed tar; returns the number of members.
    pub fn apply_tar(&mut self, r: impl Read) -> Result<u64> {
        let mut tar = TarReader::new(r);
        let mut unpacked: HashSet<Vec<u8>> = HashSet::new();
        let mut count = 0;
        let tar_err = |source| CheckError::Tar {
            context: "reading the layer tar".into(),
            source,
        };
        while let Some(e) = tar.next_entry().map_err(tar_err)? {
            count += 1;
            let comps = path::components(&e.name);
            let clean = path::clean(&e.name);
            let Some((base, parent_comps)) = comps.split_last() else {
                if e.kind == EntryKind::Directory {
                    self.set_meta(ROOT, &e);
                }
                continue;
            };
            let base = base.to_vec();
            let parent_path = parent_comps.join(&b'/');
            if base.starts_with(WHITEOUT) {
                let Some(parent) = self.resolve_dir(&parent_path)? else {
                    continue;
                };
                if base == OPAQUE {
                    self.remove_lower_children(parent, &parent_path, &unpacked);
                } else if !base.starts_with(b".wh..wh.") {
                    let target = &base[WHITEOUT.len()..];
                    let tp = join_rel(&parent_path, target);
                    if !target.is_empty() && !unpacked.contains(&tp) {
                        self.nodes[parent].children.remove(target);
                    }
                }
                continue;
            }
            let parent = match self.resolve_dir(&parent_path)? {
                Some(p) => p,
                None => self.mkdir_all(&parent_path)?,
            };
            let existing = self.nodes[parent].children.get(&base).copied();
            if e.kind == EntryKind::HardLink {
                let tclean = path::clean(&e.link);
                if tclean == clean {
                    continue;
                }
                let target = self.resolve(&tclean, false)?.ok_or_else(|| {
                    invalid(
                        &e,
                        format!(
                            "hard link target {:?} does not exist",
                            String::from_utf8_lossy(&e.link)
                        ),
                    )
                })?;
                if self.kind(target) == Kind::Dir {
                    return Err(invalid(&e, "hard link to a directory"));
                }
                if existing != Some(target) {
                    self.nodes[parent].children.insert(base, target);
                }
                unpacked.insert(clean);
                continue;
            }
            let keep_dir = existing.is_some_and(|o| self.kind(o) == Kind::Dir)
                && e.kind == EntryKind::Directory;
            if !keep_dir {
                self.nodes[parent].children.remove(&base);
            }
            let mtime = Some(clamp_time(e.mtime));
            let mut meta = Entry {
                kind: Kind::File,
                mode: e.perm() & 0o7777,
                uid: e.uid as u32,
                gid: e.gid as u32,
                size: 0,
                sha256: None,
                target: None,
                rdev: (0, 0),
                xattrs: BTreeMap::new(),
                mtime,
                object: 0,
            };
            let node = match e.kind {
                EntryKind::Directory => match existing.filter(|_| keep_dir) {
                    Some(d) => d,
                    None => {
                        meta.kind = Kind::Dir;
                        self.add(parent, &base, meta)
                    }
                },
                EntryKind::File => {
                    meta.size = e.size;
                    meta.sha256 = Some(hash_member(&mut tar, &e)?);
                    self.add(parent, &base, meta)
                }
                EntryKind::Symlink => {
                    meta.kind = Kind::Symlink;
                    meta.target = Some(e.link.clone());
                    self.add(parent, &base, meta)
                }
                EntryKind::CharDevice | EntryKind::BlockDevice => {
                    meta.kind = if e.kind == EntryKind::CharDevice {
                        Kind::Char
                    } else {
                        Kind::Block
                    };
                    meta.rdev = (e.dev_major, e.dev_minor);
                    self.add(parent, &base, meta)
                }
                EntryKind::Fifo => {
                    meta.kind = Kind::Fifo;
                    self.add(parent, &base, meta)
                }
                EntryKind::HardLink => unreachable!("handled above"),
            };
            self.set_meta(node, &e);
            unpacked.insert(clean);
        }
        Ok(count)
    }

    /// Owner, permissions (not of symlinks), xattrs (added or replaced) and mtime.
    fn set_meta(&mut self, n: NodeId, e: &TarEntry) {
        let m = &mut self.nodes[n].meta;
        m.uid = e.uid as u32;
        m.gid = e.gid as u32;
        if m.kind != Kind::Symlink {
            m.mode = e.perm() & 0o7777;
        }
        for (k, v) in &e.xattrs {
            m.xattrs
                .insert(String::from_utf8_lossy(k).into_owned(), v.clone());
        }
        m.mtime = Some(clamp_time(e.mtime));
    }

    /// For an opaque directory: drops every child this layer did not unpack, walking into
    /// the kept directories (their lower content is hidden too).
    fn remove_lower_children(&mut self, dir: NodeId, dir_path: &[u8], unpacked: &HashSet<Vec<u8>>) {
        let children: Vec<(Vec<u8>, NodeId)> = self.nodes[dir]
            .children
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (name, child) in children {
            let p = join_rel(dir_path, &name);
            if unpacked.contains(&p) {
                if self.kind(child) == Kind::Dir {
                    self.remove_lower_children(child, &p, unpacked);
                }
            } else {
                self.nodes[dir].children.remove(&name);
            }
        }
    }

    /// The normalised tree (absolute paths, node ids as objects).
    pub fn into_tree(self) -> Tree {
        let mut t = Tree::default();
        let mut stack: Vec<(Vec<u8>, NodeId)> = vec![(b"/".to_vec(), ROOT)];
        while let Some((p, n)) = stack.pop() {
            let node = &self.nodes[n];
            let mut meta = node.meta.clone();
            meta.object = n as u64;
            if meta.kind == Kind::Dir {
                for (name, &c) in &node.children {
                    stack.push((tree::join(&p, name), c));
                }
            }
            t.entries.insert(p, meta);
        }
        t
    }
}

/// Hashes a regular member's content, expanding a sparse map with zeros.
fn hash_member<R: Read>(tar: &mut TarReader<R>, e: &TarEntry) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (e.size.min(1 << 20) as usize).max(1)];
    let zeros = vec![0u8; buf.len()];
    let trunc = || invalid(e, "member data ended early");
    let tar_err = |source| CheckError::Tar {
        context: format!("reading member {:?}", e.display_name()),
        source,
    };
    let mut read_data = |tar: &mut TarReader<R>, h: &mut Sha256, mut n: u64| -> Result<()> {
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let k = tar.read_data(&mut buf[..want]).map_err(tar_err)?;
            if k == 0 {
                return Err(trunc());
            }
            h.update(&buf[..k]);
            n -= k as u64;
        }
        Ok(())
    };
    let fill_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    match &e.sparse {
        None => read_data(tar, &mut h, e.size)?,
        Some(map) => {
            let mut pos = 0u64;
            for &(off, len) in map {
                if off < pos {
                    return Err(invalid(e, "sparse map out of order"));
                }
                let end = off.saturating_add(len).min(e.size);
                fill_zeros(&mut h, off.min(e.size) - pos.min(e.size));
                if end > off {
                    read_data(tar, &mut h, end - off)?;
                }
                pos = off + len;
            }
            if pos < e.size {
                fill_zeros(&mut h, e.size - pos);
            }
        }
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tar from `(name, kind, data-or-link, mode)`; mtime = 1000 + index.
    fn tar(members: &[(&str, char, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (i, &(name, kind, arg, mode)) in members.iter().enumerate() {
            let mut h = tar::Header::new_ustar();
            h.set_mode(mode);
            h.set_mtime(1000 + i as u64);
            h.set_uid(0);
            h.set_gid(0);
            let data: &[u8] = if kind == 'f' { arg.as_bytes() } else { b"" };
            h.set_size(data.len() as u64);
            h.set_entry_type(match kind {
                'f' => tar::EntryType::Regular,
                'd' => tar::EntryType::Directory,
                'l' => tar::EntryType::Symlink,
                'h' => tar::EntryType::Link,
                'c' => tar::EntryType::Char,
                _ => unreachable!(),
            });
            if kind == 'l' || kind == 'h' {
                h.set_link_name(arg).unwrap();
            }
            if kind == 'c' {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn build(layers: &[Vec<u8>]) -> Tree {
        let mut t = SourceTree::new();
        for l in layers {
            t.apply_layer(&l[..]).unwrap();
        }
        t.into_tree()
    }

    fn paths(t: &Tree) -> Vec<String> {
        t.entries
            .keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    fn sha(b: &[u8]) -> Option<[u8; 32]> {
        Some(Sha256::digest(b).into())
    }

    #[test]
    fn whiteout_removes_lower_only() {
        let l1 = tar(&[
            ("a/", 'd', "", 0o755),
            ("a/x", 'f', "1", 0o644),
            ("b", 'f', "2", 0o644),
        ]);
        // The whiteout comes after this layer's own `b`: it must not remove it.
        let l2 = tar(&[
            ("a/.wh.x", 'f', "", 0),
            ("b", 'f', "new", 0o600),
            (".wh.b", 'f', "", 0),
        ]);
        let t = build(&[l1, l2]);
        assert_eq!(paths(&t), ["/", "/a", "/b"]);
        let b = &t.entries[b"/b".as_slice()];
        assert_eq!((b.mode, b.size, b.sha256), (0o600, 3, sha(b"new")));
    }

    #[test]
    fn opaque_hides_lower_keeps_this_layer() {
        let l1 = tar(&[
            ("d/", 'd', "", 0o755),
            ("d/old", 'f', "o", 0o644),
            ("d/sub/", 'd', "", 0o755),
            ("d/sub/deep", 'f', "x", 0o644),
        ]);
        let l2 = tar(&[
            ("d/new", 'f', "n", 0o644),
            ("d/sub/", 'd', "", 0o700),
            ("d/.wh..wh..opq", 'f', "", 0),
        ]);
        let t = build(&[l1, l2]);
        assert_eq!(paths(&t), ["/", "/d", "/d/new", "/d/sub"]);
        assert_eq!(t.entries[b"/d/sub".as_slice()].mode, 0o700);
    }

    #[test]
    fn hardlinks_share_and_break_on_overwrite() {
        let l1 = tar(&[
            ("f", 'f', "data", 0o644),
            ("g", 'h', "f", 0),
            ("./h", 'h', "/f", 0),
        ]);
        let t = build(std::slice::from_ref(&l1));
        let lead = t.hardlink_leaders();
        assert_eq!(lead[b"/g".as_slice()], b"/f");
        assert_eq!(lead[b"/h".as_slice()], b"/f");
        assert_eq!(t.entries[b"/h".as_slice()].sha256, sha(b"data"));
        // Overwriting one path gives it a new object; the others stay linked.
        let l2 = tar(&[("g", 'f', "other", 0o644)]);
        let t = build(&[l1.clone(), l2]);
        let lead = t.hardlink_leaders();
        assert_eq!(lead.get(b"/g".as_slice()), None);
        assert_eq!(lead[b"/h".as_slice()], b"/f");
        // A link across layers.
        let l3 = tar(&[("k", 'h', "f", 0)]);
        let t = build(&[l1, l3]);
        assert_eq!(t.hardlink_leaders()[b"/k".as_slice()], b"/f");
    }

    #[test]
    fn last_entry_wins_and_types_replace() {
        let l1 = tar(&[
            ("x", 'f', "one", 0o644),
            ("x", 'f', "two", 0o640),
            ("y/", 'd', "", 0o755),
            ("y/z", 'f', "", 0o644),
            ("y", 'l', "x", 0o777),
            ("dev", 'c', "", 0o600),
        ]);
        let t = build(&[l1]);
        assert_eq!(paths(&t), ["/", "/dev", "/x", "/y"]);
        let x = &t.entries[b"/x".as_slice()];
        assert_eq!(
            (x.mode, x.sha256, x.mtime.unwrap().secs),
            (0o640, sha(b"two"), 1001)
        );
        let y = &t.entries[b"/y".as_slice()];
        assert_eq!(
            (y.kind, y.target.as_deref()),
            (Kind::Symlink, Some(&b"x"[..]))
        );
        assert_eq!(t.entries[b"/dev".as_slice()].rdev, (1, 3));
    }

    #[test]
    fn implicit_parents_and_symlinked_parents() {
        let l1 = tar(&[
            ("real/", 'd', "", 0o700),
            ("link", 'l', "/real", 0o777),
            ("a/b/c", 'f', "c", 0o644),
        ]);
        let l2 = tar(&[
            ("link/inside", 'f', "i", 0o644),
            ("link/.wh.gone", 'f', "", 0),
        ]);
        let t = build(&[l1, l2]);
        assert_eq!(
            paths(&t),
            [
                "/",
                "/a",
                "/a/b",
                "/a/b/c",
                "/link",
                "/real",
                "/real/inside"
            ]
        );
        let a = &t.entries[b"/a".as_slice()];
        assert_eq!((a.mode, a.uid, a.mtime), (0o755, 0, None));
        assert_eq!(t.entries[b"/".as_slice()].mtime, None);
    }

    #[test]
    fn root_member_sets_root_and_dir_over_dir_merges() {
        let l1 = tar(&[
            ("./", 'd', "", 0o700),
            ("d/", 'd', "", 0o755),
            ("d/f", 'f', "", 0o644),
        ]);
        let l2 = tar(&[("d/", 'd', "", 0o711)]);
        let t = build(&[l1, l2]);
        let root = &t.entries[b"/".as_slice()];
        assert_eq!((root.mode, root.mtime.map(|m| m.secs)), (0o700, Some(1000)));
        assert_eq!(t.entries[b"/d".as_slice()].mode, 0o711);
        assert!(t.entries.contains_key(b"/d/f".as_slice()));
    }

    #[test]
    fn compressed_layers() {
        let l = tar(&[("f", 'f', "hello", 0o644)]);
        let z = gzip(&l);
        let t = build(&[z]);
        assert_eq!(t.entries[b"/f".as_slice()].sha256, sha(b"hello"));
    }

    /// A gzip stream of `b` (the decompressor picks it by magic).
    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, b).unwrap();
        e.finish().unwrap()
    }
}
