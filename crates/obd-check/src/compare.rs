//! Comparing the source tree with the converted tree: the typed list of differences and
//! the rules for what does not count.
//!
//! Compared, per path: type; permission bits (not of symlinks: Linux ignores them and
//! runtimes create symlinks `0777`); owner; size and sha256 of regular files; symlink
//! targets; device numbers of character and block devices; every xattr (name and value);
//! mtime to the nanosecond (source times clamped beforehand to what the converted
//! filesystem stores: ext4's range, or from the epoch on for EROFS, see
//! [`crate::converted::FsType::mtime_range`]); hard link groups (the paths sharing one
//! source node must share one inode, and nothing else may).
//!
//! Ignored: `/lost+found` (and what is under it) when the source has no such path (mkfs
//! and the baselayer make it); the mtime of directories the source never defines (created
//! implicitly as parents, or the root without a `./` member); directory sizes; atime and
//! ctime; link counts and inode numbers themselves.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::tree::{display_path, Entry, Kind, Tree};

/// What differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "what", content = "name")]
pub enum What {
    /// The path exists in the source only.
    Missing,
    /// The path exists in the converted image only.
    Extra,
    Kind,
    Mode,
    Uid,
    Gid,
    Size,
    Content,
    LinkTarget,
    Rdev,
    /// One extended attribute (by name) is missing, extra or has another value.
    Xattr(String),
    Mtime,
    Hardlink,
    /// A platform of the source has no converted manifest (path = the platform).
    PlatformMissing,
    /// A converted manifest has no source platform (path = the platform).
    PlatformExtra,
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::Missing => f.write_str("missing"),
            What::Extra => f.write_str("extra"),
            What::Kind => f.write_str("type"),
            What::Mode => f.write_str("mode"),
            What::Uid => f.write_str("uid"),
            What::Gid => f.write_str("gid"),
            What::Size => f.write_str("size"),
            What::Content => f.write_str("content"),
            What::LinkTarget => f.write_str("symlink target"),
            What::Rdev => f.write_str("device number"),
            What::Xattr(n) => write!(f, "xattr {n}"),
            What::Mtime => f.write_str("mtime"),
            What::Hardlink => f.write_str("hard link group"),
            What::PlatformMissing => f.write_str("platform missing"),
            What::PlatformExtra => f.write_str("platform extra"),
        }
    }
}

/// One difference between source and converted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The path (as text, non-UTF-8 bytes escaped), or the platform for platform differences.
    pub path: String,
    #[serde(flatten)]
    pub what: What,
    /// The source's value, if it has one.
    pub source: Option<String>,
    /// The converted image's value, if it has one.
    pub converted: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            What::Missing => write!(f, "{}: missing from the converted image", self.path),
            What::Extra => write!(f, "{}: only in the converted image", self.path),
            What::PlatformMissing => {
                write!(f, "platform {}: not in the converted image", self.path)
            }
            What::PlatformExtra => write!(f, "platform {}: not in the source image", self.path),
            w => write!(
                f,
                "{}: {w} differs: source {}, converted {}",
                self.path,
                self.source.as_deref().unwrap_or("(none)"),
                self.converted.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

fn lost_found(p: &[u8]) -> bool {
    p == b"/lost+found" || p.starts_with(b"/lost+found/")
}

fn hex_or_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\0') && !s.contains('\0') => {
            format!("{s:?}")
        }
        _ => format!("0x{}", hex::encode(v)),
    }
}

/// Compares two trees. Returns the differences in path order.
pub fn compare(source: &Tree, converted: &Tree) -> Vec<Difference> {
    let mut out = Vec::new();
    let src_has_lf = source.entries.contains_key(b"/lost+found".as_slice());
    let sl = source.hardlink_leaders();
    let cl = converted.hardlink_leaders();
    let paths: BTreeSet<&Vec<u8>> = source
        .entries
        .keys()
        .chain(converted.entries.keys())
        .collect();
    for p in paths {
        let shown = display_path(p);
        let diff = |what: What, s: Option<String>, c: Option<String>| Difference {
            path: shown.clone(),
            what,
            source: s,
            converted: c,
        };
        match (source.entries.get(p), converted.entries.get(p)) {
            (Some(_), None) => out.push(diff(What::Missing, None, None)),
            (None, Some(_)) => {
                if !lost_found(p) || src_has_lf {
                    out.push(diff(What::Extra, None, None));
                }
            }
            (Some(s), Some(c)) => {
                entry(s, c, &mut |w, a, b| out.push(diff(w, a, b)));
                if s.kind == c.kind && s.kind != Kind::Dir {
                    let (a, b) = (sl.get(p), cl.get(p));
                    if a != b {
                        let show = |l: Option<&Vec<u8>>| {
                            Some(match l {
                                Some(l) => format!("linked with {}", display_path(l)),
                                None => "not linked".into(),
                            })
                        };
                        out.push(diff(What::Hardlink, show(a), show(b)));
                    }
                }
            }
            (None, None) => unreachable!("path from one of the trees"),
        }
    }
    out
}

/// Field-by-field comparison of one path present on both sides.
fn entry(s: &Entry, c: &Entry, push: &mut dyn FnMut(What, Option<String>, Option<String>)) {
    if s.kind != c.kind {
        push(
            What::Kind,
            Some(s.kind.to_string()),
            Some(c.kind.to_string()),
        );
        return;
    }
    if s.kind != Kind::Symlink && s.mode != c.mode {
        push(
            What::Mode,
            Some(format!("{:04o}", s.mode)),
            Some(format!("{:04o}", c.mode)),
        );
    }
    if s.uid != c.uid {
        push(What::Uid, Some(s.uid.to_string()), Some(c.uid.to_string()));
    }
    if s.gid != c.gid {
        push(What::Gid, Some(s.gid.to_string()), Some(c.gid.to_string()));
    }
    match s.kind {
        Kind::File => {
            if s.size != c.size {
                push(
                    What::Size,
                    Some(s.size.to_string()),
                    Some(c.size.to_string()),
                );
            } else if s.sha256 != c.sha256 {
                let h = |x: &Option<[u8; 32]>| x.map(|x| format!("sha256:{}", hex::encode(x)));
                push(What::Content, h(&s.sha256), h(&c.sha256));
            }
        }
        Kind::Symlink if s.target != c.target => {
            let t = |x: &Option<Vec<u8>>| x.as_deref().map(|x| format!("{:?}", display_path(x)));
            push(What::LinkTarget, t(&s.target), t(&c.target));
        }
        Kind::Char | Kind::Block if s.rdev != c.rdev => {
            let r = |(a, b): (u32, u32)| Some(format!("{a},{b}"));
            push(What::Rdev, r(s.rdev), r(c.rdev));
        }
        _ => {}
    }
    let names: BTreeSet<&String> = s.xattrs.keys().chain(c.xattrs.keys()).collect();
    for n in names {
        let (a, b) = (s.xattrs.get(n), c.xattrs.get(n));
        if a != b {
            push(
                What::Xattr(n.clone()),
                a.map(|v| hex_or_text(v)),
                b.map(|v| hex_or_text(v)),
            );
        }
    }
    if let (Some(a), Some(b)) = (s.mtime, c.mtime) {
        if a != b {
            push(What::Mtime, Some(a.to_string()), Some(b.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Time;

    fn file(object: u64, byte: u8) -> Entry {
        let mut e = Entry::implicit_dir(object);
        e.kind = Kind::File;
        e.mode = 0o644;
        e.size = 1;
        e.sha256 = Some([byte; 32]);
        e.mtime = Some(Time { secs: 5, nanos: 7 });
        e
    }

    fn tree(entries: Vec<(&str, Entry)>) -> Tree {
        let mut t = Tree::default();
        for (p, e) in entries {
            t.entries.insert(p.as_bytes().to_vec(), e);
        }
        t
    }

    #[test]
    fn identical_and_lost_found_ignored() {
        let s = tree(vec![("/", Entry::implicit_dir(0)), ("/a", file(1, 1))]);
        let mut root = Entry::implicit_dir(2);
        root.mtime = Some(Time { secs: 1, nanos: 0 });
        let c = tree(vec![
            ("/", root),
            ("/a", file(12, 1)),
            ("/lost+found", Entry::implicit_dir(11)),
        ]);
        assert_eq!(compare(&s, &c), vec![]);
    }

    #[test]
    fn reports_each_field() {
        let mut b = file(2, 2);
        b.xattrs.insert("user.x".into(), b"1".to_vec());
        let s = tree(vec![
            ("/", Entry::implicit_dir(0)),
            ("/a", file(1, 1)),
            ("/b", b.clone()),
            ("/h1", file(3, 3)),
            ("/h2", file(3, 3)),
        ]);
        let mut cb = b.clone();
        cb.mode = 0o600;
        cb.xattrs.clear();
        cb.mtime = Some(Time { secs: 5, nanos: 8 });
        let c = tree(vec![
            ("/", Entry::implicit_dir(0)),
            ("/b", cb),
            ("/h1", file(3, 3)),
            ("/h2", file(4, 3)),
            ("/z", file(5, 9)),
        ]);
        let d = compare(&s, &c);
        let whats: Vec<(String, What)> =
            d.iter().map(|d| (d.path.clone(), d.what.clone())).collect();
        assert_eq!(
            whats,
            vec![
                ("/a".into(), What::Missing),
                ("/b".into(), What::Mode),
                ("/b".into(), What::Xattr("user.x".into())),
                ("/b".into(), What::Mtime),
                ("/h1".into(), What::Hardlink),
                ("/h2".into(), What::Hardlink),
                ("/z".into(), What::Extra),
            ]
        );
        assert_eq!(
            d[1].to_string(),
            "/b: mode differs: source 0644, converted 0600"
        );
        assert_eq!(
            d[4].to_string(),
            "/h1: hard link group differs: source linked with /h1, converted not linked"
        );
    }
}
