//! The normalised entry model both sides are reduced to: a map from absolute path (`/`,
//! `/etc/passwd`) to what `lstat`, `readlink`, `listxattr` and a content hash tell about it,
//! plus the hard link group each non-directory belongs to.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

/// The type of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        })
    }
}

impl From<obd_ext4::FileKind> for Kind {
    fn from(k: obd_ext4::FileKind) -> Self {
        use obd_ext4::FileKind as F;
        match k {
            F::Regular => Kind::File,
            F::Directory => Kind::Dir,
            F::Symlink => Kind::Symlink,
            F::CharDevice => Kind::Char,
            F::BlockDevice => Kind::Block,
            F::Fifo => Kind::Fifo,
            F::Socket => Kind::Socket,
        }
    }
}

/// Seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// One path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of regular files (0 for everything else).
    pub size: u64,
    /// sha256 of a regular file's content (holes read as zeros).
    pub sha256: Option<[u8; 32]>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// `(major, minor)` of character and block devices.
    pub rdev: (u32, u32),
    /// Extended attributes by full name (POSIX ACLs in the xattr-API format).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time; `None` when the source does not define one (a directory created
    /// implicitly as the parent of a member, the root when no layer has a `./` member).
    pub mtime: Option<Time>,
    /// Identity of the underlying object (inode number, node id), used only to compute
    /// hard link groups; not compared.
    pub object: u64,
}

impl Entry {
    /// A directory `0755 root:root` without a defined mtime.
    pub fn implicit_dir(object: u64) -> Self {
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: None,
            target: None,
            rdev: (0, 0),
            xattrs: BTreeMap::new(),
            mtime: None,
            object,
        }
    }
}

/// A whole filesystem: absolute path → entry, in byte order of the paths.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

impl Tree {
    /// Clamps the seconds of every defined mtime into `[min, max]` (nanoseconds kept): what
    /// the converted filesystem can store, see [`crate::converted::FsType::mtime_range`].
    pub fn clamp_mtimes(&mut self, (min, max): (i64, i64)) {
        for t in self.entries.values_mut().filter_map(|e| e.mtime.as_mut()) {
            t.secs = t.secs.clamp(min, max);
        }
    }

    /// For every non-directory sharing its object with other paths: the first such path in
    /// byte order (the "leader" of its hard link group). Paths not linked are absent.
    pub fn hardlink_leaders(&self) -> HashMap<Vec<u8>, Vec<u8>> {
        let mut first: HashMap<u64, (&Vec<u8>, usize)> = HashMap::new();
        for (p, e) in &self.entries {
            if e.kind != Kind::Dir {
                first.entry(e.object).or_insert((p, 0)).1 += 1;
            }
        }
        self.entries
            .iter()
            .filter(|(_, e)| e.kind != Kind::Dir)
            .filter_map(|(p, e)| {
                let (leader, n) = first[&e.object];
                (n > 1).then(|| (p.clone(), leader.clone()))
            })
            .collect()
    }
}

/// Joins a parent path (`/` or `/a/b`) and a name.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A path for humans: UTF-8 where it is, `\xNN` escapes elsewhere.
pub fn display_path(p: &[u8]) -> String {
    let mut s = String::new();
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.extend(c.escape_default());
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaders_group_by_object() {
        let mut t = Tree::default();
        let mut f = Entry::implicit_dir(1);
        t.entries.insert(b"/".to_vec(), f.clone());
        f.kind = Kind::File;
        f.object = 7;
        t.entries.insert(b"/b".to_vec(), f.clone());
        t.entries.insert(b"/a".to_vec(), f.clone());
        f.object = 8;
        t.entries.insert(b"/c".to_vec(), f);
        let l = t.hardlink_leaders();
        assert_eq!(l.len(), 2);
        assert_eq!(l[&b"/b".to_vec()], b"/a");
        assert_eq!(l[&b"/a".to_vec()], b"/a");
    }

    #[test]
    fn paths() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/a", b"b"), b"/a/b");
        assert_eq!(display_path(b"/a\xff\n"), "/a\\xff\\n");
    }
}
