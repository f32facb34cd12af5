//! The in-memory merged tree of an image: nodes (one per inode, shared by hard links),
//! directories as sorted name maps, and the path operations the OCI layer semantics need
//! (lookup with symlinks clamped to the root, implicit parents, recursive removal).
//!
//! Removal only unlinks: unreachable nodes stay in the arena and are simply not written.

use std::collections::BTreeMap;

use crate::format;

/// Index of a node in the arena.
pub type NodeId = usize;
/// The root directory is always node 0.
pub const ROOT: NodeId = 0;

/// The type of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl Kind {
    pub fn mode_bits(self) -> u16 {
        match self {
            Kind::File => format::S_IFREG,
            Kind::Dir => format::S_IFDIR,
            Kind::Symlink => format::S_IFLNK,
            Kind::CharDevice => format::S_IFCHR,
            Kind::BlockDevice => format::S_IFBLK,
            Kind::Fifo => format::S_IFIFO,
            Kind::Socket => format::S_IFSOCK,
        }
    }

    pub fn file_type(self) -> u8 {
        match self {
            Kind::File => format::FT_REG,
            Kind::Dir => format::FT_DIR,
            Kind::Symlink => format::FT_LNK,
            Kind::CharDevice => format::FT_CHR,
            Kind::BlockDevice => format::FT_BLK,
            Kind::Fifo => format::FT_FIFO,
            Kind::Socket => format::FT_SOCK,
        }
    }

    pub fn from_mode(mode: u16) -> Option<Kind> {
        Some(match mode & format::S_IFMT {
            format::S_IFREG => Kind::File,
            format::S_IFDIR => Kind::Dir,
            format::S_IFLNK => Kind::Symlink,
            format::S_IFCHR => Kind::CharDevice,
            format::S_IFBLK => Kind::BlockDevice,
            format::S_IFIFO => Kind::Fifo,
            format::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }
}

/// What a node holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Children by name, and the parent directory (the root is its own parent).
    Dir {
        entries: BTreeMap<Vec<u8>, NodeId>,
        parent: NodeId,
    },
    /// A regular file: `size` bytes in contiguous blocks from `blkaddr` (0 when empty).
    File {
        size: u64,
        blkaddr: u32,
    },
    Symlink(Vec<u8>),
    /// Devices carry the encoded `rdev`; fifos and sockets carry 0.
    Special(u32),
}

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Full xattr names (`user.foo`) → values; only names EROFS can store.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub body: Body,
}

/// A node arena rooted at [`ROOT`].
#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Why a path operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotADirectory(Vec<u8>),
    TooManyLinks(Vec<u8>),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::NotADirectory(p) => {
                write!(f, "{:?} is not a directory", String::from_utf8_lossy(p))
            }
            PathError::TooManyLinks(p) => write!(
                f,
                "too many levels of symbolic links resolving {:?}",
                String::from_utf8_lossy(p)
            ),
        }
    }
}

const MAX_HOPS: usize = 40;

impl Tree {
    /// A tree with an empty root directory (0755, root, mtime 0).
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                kind: Kind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
                xattrs: BTreeMap::new(),
                body: Body::Dir {
                    entries: BTreeMap::new(),
                    parent: ROOT,
                },
            }],
        }
    }

    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn is_dir(&self, id: NodeId) -> bool {
        self.nodes[id].kind == Kind::Dir
    }

    pub fn entries(&self, dir: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.nodes[dir].body {
            Body::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: NodeId) -> &mut BTreeMap<Vec<u8>, NodeId> {
        match &mut self.nodes[dir].body {
            Body::Dir { entries, .. } => entries,
            _ => panic!("node {dir} is not a directory"),
        }
    }

    pub fn parent(&self, dir: NodeId) -> NodeId {
        match &self.nodes[dir].body {
            Body::Dir { parent, .. } => *parent,
            _ => ROOT,
        }
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.entries(dir).and_then(|e| e.get(name).copied())
    }

    /// Links `id` as `name` in `dir` (replacing nothing: the name must be free). A
    /// directory node gets `dir` as its parent.
    pub fn link(&mut self, dir: NodeId, name: &[u8], id: NodeId) {
        if let Body::Dir { parent, .. } = &mut self.nodes[id].body {
            *parent = dir;
        }
        let old = self.entries_mut(dir).insert(name.to_vec(), id);
        debug_assert!(old.is_none());
    }

    /// Unlinks `name` from `dir` (with everything below it).
    pub fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.entries_mut(dir).remove(name)
    }

    /// Resolves clean path components from the root. Symlinks in the middle are followed
    /// (absolute targets restart at the root, `..` stops at the root); the last one only
    /// when `follow_last`. `Ok(None)` if a component is missing.
    pub fn resolve(&self, comps: &[&[u8]], follow_last: bool) -> Result<Option<NodeId>, PathError> {
        let full = comps.join(&b'/');
        // Pending components, last first.
        let mut todo: Vec<Vec<u8>> = comps.iter().rev().map(|c| c.to_vec()).collect();
        let mut cur = ROOT;
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if !self.is_dir(cur) {
                return Err(PathError::NotADirectory(full));
            }
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur = self.parent(cur);
                    continue;
                }
                _ => {}
            }
            let Some(next) = self.lookup(cur, &c) else {
                return Ok(None);
            };
            let last = todo.is_empty();
            if let Body::Symlink(target) = &self.nodes[next].body {
                if !last || follow_last {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(PathError::TooManyLinks(full));
                    }
                    if target.first() == Some(&b'/') {
                        cur = ROOT;
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        todo.push(t.to_vec());
                    }
                    continue;
                }
            }
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Resolves a directory path (following symlinks); `Ok(None)` if missing, an error if
    /// it exists and is not a directory.
    pub fn resolve_dir(&self, comps: &[&[u8]]) -> Result<Option<NodeId>, PathError> {
        match self.resolve(comps, true)? {
            Some(id) if self.is_dir(id) => Ok(Some(id)),
            Some(_) => Err(PathError::NotADirectory(comps.join(&b'/'))),
            None => Ok(None),
        }
    }

    /// Resolves a directory path, creating missing directories with `template`'s
    /// attributes.
    pub fn mkdir_all(&mut self, comps: &[&[u8]], template: &Node) -> Result<NodeId, PathError> {
        let mut cur = ROOT;
        for (i, c) in comps.iter().enumerate() {
            match self.lookup(cur, c) {
                Some(id) if self.is_dir(id) => cur = id,
                Some(id) if self.nodes[id].kind == Kind::Symlink => {
                    match self.resolve_dir(&comps[..=i])? {
                        Some(d) => cur = d,
                        None => return Err(PathError::NotADirectory(comps[..=i].join(&b'/'))),
                    }
                }
                Some(_) => return Err(PathError::NotADirectory(comps[..=i].join(&b'/'))),
                None => {
                    let mut n = template.clone();
                    n.body = Body::Dir {
                        entries: BTreeMap::new(),
                        parent: cur,
                    };
                    let id = self.add(n);
                    self.link(cur, c, id);
                    cur = id;
                }
            }
        }
        Ok(cur)
    }

    /// Reachable nodes in depth-first pre-order (sorted names), each once, and how many
    /// directory entries point at each (for non-directories: the hard link count).
    pub fn walk(&self) -> (Vec<NodeId>, Vec<u32>) {
        let mut refs = vec![0u32; self.nodes.len()];
        let mut order = Vec::new();
        let mut stack = vec![ROOT];
        refs[ROOT] = 1;
        while let Some(id) = stack.pop() {
            order.push(id);
            if let Some(ents) = self.entries(id) {
                for &child in ents.values().rev() {
                    refs[child] += 1;
                    if refs[child] == 1 {
                        stack.push(child);
                    }
                }
            }
        }
        // Pre-order with the stack above visits children in name order, but a hard link
        // seen first in a later sibling's subtree is pushed later; the order is still
        // deterministic, which is all the layout needs.
        (order, refs)
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}
