//! The EROFS fs-meta of TurboOCI images (`--fstype erofs`), read without mounting: the
//! image on the stacked device of the converted layers (each layer's metadata in its warp
//! layer, file data mapped into the original layer tars) is walked with the `obd-erofs`
//! reader into the same [`Tree`] the ext4 walker produces.
//!
//! Times: extended inodes store mtime seconds and nanoseconds; compact inodes store none
//! and take the superblock's build time, seconds *and* nanoseconds (as the kernel does), so
//! both forms compare to the nanosecond. EROFS stores seconds as an unsigned number and the
//! converter clamps times before the epoch to 0 (keeping the nanoseconds): source times are
//! clamped into [`MTIME_RANGE`] before comparing.

use std::collections::{HashMap, HashSet};

use obd_erofs::format::{self, DiskInode};
use obd_erofs::reader::Image;
use obd_format::io::ReadAt;
use sha2::{Digest, Sha256};

use crate::error::{CheckError, Result};
use crate::tree::{self, Entry, Kind, Time, Tree};

/// The mtime seconds the EROFS fs-meta stores (see the module doc).
pub const MTIME_RANGE: (i64, i64) = (0, i64::MAX);

/// Bytes read at a time when hashing file contents.
const CHUNK: usize = 1 << 20;

fn err(context: String) -> impl FnOnce(obd_erofs::Error) -> CheckError {
    move |source| CheckError::Erofs { context, source }
}

impl From<obd_erofs::Kind> for Kind {
    fn from(k: obd_erofs::Kind) -> Self {
        use obd_erofs::Kind as K;
        match k {
            K::File => Kind::File,
            K::Dir => Kind::Dir,
            K::Symlink => Kind::Symlink,
            K::CharDevice => Kind::Char,
            K::BlockDevice => Kind::Block,
            K::Fifo => Kind::Fifo,
            K::Socket => Kind::Socket,
        }
    }
}

/// Walks the EROFS image on `dev` into a [`Tree`] (nids as objects). Each inode's content
/// is read and hashed once; a directory reachable twice is an error.
pub fn walk<R: ReadAt + ?Sized>(dev: &R) -> Result<Tree> {
    let img = Image::open(dev).map_err(err("opening the converted EROFS image".into()))?;
    let mut t = Tree::default();
    let mut hashes: HashMap<u64, [u8; 32]> = HashMap::new();
    let mut dirs: HashSet<u64> = HashSet::new();
    let mut buf = vec![0u8; CHUNK];
    let mut stack: Vec<(Vec<u8>, u64)> = vec![(b"/".to_vec(), u64::from(img.sb.root_nid))];
    while let Some((p, nid)) = stack.pop() {
        let shown = tree::display_path(&p);
        let ino = img
            .inode(nid)
            .map_err(err(format!("reading the inode of {shown} (nid {nid})")))?;
        let kind = obd_erofs::Kind::from_mode(ino.mode).ok_or_else(|| {
            CheckError::BadInput(format!(
                "{shown} (nid {nid}): mode {:o} has no file type",
                ino.mode
            ))
        })?;
        let mut e = Entry {
            kind: Kind::from(kind),
            mode: u32::from(ino.mode & 0o7777),
            uid: ino.uid,
            gid: ino.gid,
            size: 0,
            sha256: None,
            target: None,
            rdev: (0, 0),
            xattrs: Default::default(),
            mtime: Some(Time {
                secs: i64::try_from(ino.mtime).unwrap_or(i64::MAX),
                nanos: ino.mtime_nsec,
            }),
            object: nid,
        };
        match e.kind {
            Kind::Dir => {
                if !dirs.insert(nid) {
                    return Err(CheckError::BadInput(format!(
                        "{shown}: directory nid {nid} is linked twice"
                    )));
                }
                for d in img
                    .dirents(nid, &ino)
                    .map_err(err(format!("reading directory {shown}")))?
                {
                    if d.name == b"." || d.name == b".." {
                        continue;
                    }
                    if d.name.contains(&b'/') {
                        return Err(CheckError::BadInput(format!(
                            "directory {shown} has a name with '/'"
                        )));
                    }
                    stack.push((tree::join(&p, &d.name), d.nid));
                }
            }
            Kind::File => {
                e.size = ino.size;
                let h = match hashes.get(&nid) {
                    Some(h) => *h,
                    None => {
                        let h = hash_file(&img, nid, &ino, &mut buf)
                            .map_err(err(format!("reading {shown}")))?;
                        hashes.insert(nid, h);
                        h
                    }
                };
                e.sha256 = Some(h);
            }
            Kind::Symlink => {
                e.target = Some(
                    img.data(nid, &ino)
                        .map_err(err(format!("reading symlink {shown}")))?,
                );
            }
            Kind::Char | Kind::Block => e.rdev = format::decode_dev(ino.i_u),
            Kind::Fifo | Kind::Socket => {}
        }
        e.xattrs = img
            .xattrs(nid, &ino)
            .map_err(err(format!("reading xattrs of {shown}")))?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect();
        t.entries.insert(p, e);
    }
    Ok(t)
}

/// sha256 of a regular file's content, read through the device in [`CHUNK`]s.
fn hash_file<R: ReadAt + ?Sized>(
    img: &Image<'_, R>,
    nid: u64,
    ino: &DiskInode,
    buf: &mut [u8],
) -> obd_erofs::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < ino.size {
        let n = img.read_data_at(nid, ino, buf, off)?;
        if n == 0 {
            return Err(obd_erofs::Error::Corrupt(format!(
                "nid {nid}: data ends at {off} of {} bytes",
                ino.size
            )));
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceTree;
    use obd_erofs::ErofsBuilder;
    use obd_format::io::{RawImage, WriteAt};

    /// Members: `(name, kind, data-or-link, mode, mtime)`; kinds f, d, l, h, c, p, s
    /// (sparse: `data` at offset 8192 of a 20000-byte file), x (file with xattrs).
    fn tar(members: &[(&str, char, &str, u32, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, kind, arg, mode, mtime) in members {
            if kind == 'x' {
                b.append_pax_extensions([
                    ("SCHILY.xattr.user.k", &b"v"[..]),
                    ("SCHILY.xattr.security.capability", &[1u8, 0, 0, 2][..]),
                ])
                .unwrap();
            }
            if kind == 's' {
                // A PAX 1.0 sparse member: one data segment at 8192.
                b.append_pax_extensions([
                    ("GNU.sparse.major", &b"1"[..]),
                    ("GNU.sparse.minor", &b"0"[..]),
                    ("GNU.sparse.name", name.as_bytes()),
                    ("GNU.sparse.realsize", &b"20000"[..]),
                ])
                .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_uid(1000);
            h.set_gid(100);
            let sparse_body;
            let data: &[u8] = match kind {
                'f' | 'x' => arg.as_bytes(),
                's' => {
                    let mut m = b"1\n8192\n".to_vec();
                    m.extend_from_slice(format!("{}\n", arg.len()).as_bytes());
                    m.resize(512, 0);
                    m.extend_from_slice(arg.as_bytes());
                    sparse_body = m;
                    &sparse_body
                }
                _ => b"",
            };
            h.set_size(data.len() as u64);
            h.set_entry_type(match kind {
                'f' | 'x' | 's' => tar::EntryType::Regular,
                'd' => tar::EntryType::Directory,
                'l' => tar::EntryType::Symlink,
                'h' => tar::EntryType::Link,
                'c' => tar::EntryType::Char,
                'p' => tar::EntryType::Fifo,
                _ => unreachable!(),
            });
            if kind == 'l' || kind == 'h' {
                h.set_link_name(arg).unwrap();
            }
            if kind == 'c' {
                h.set_device_major(259).unwrap();
                h.set_device_minor(70000 & 0xfffff).unwrap();
            }
            let stored = if kind == 's' {
                "GNUSparseFile.0/s"
            } else {
                name
            };
            h.set_path(stored).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Builds the EROFS image of `layers` on a raw device, the way the converter does but
    /// with the mapped tar ranges copied in (the warp layer's job at run time).
    fn build(dir: &std::path::Path, layers: &[Vec<u8>]) -> RawImage {
        let mut dev = RawImage::create(dir.join("dev.raw"), 64 << 20).unwrap();
        for (i, l) in layers.iter().enumerate() {
            let mut maps = Vec::new();
            {
                let mut b = if i == 0 {
                    ErofsBuilder::new_first_layer(&mut dev, [7; 16]).unwrap()
                } else {
                    ErofsBuilder::open(&mut dev).unwrap()
                };
                b.apply_tar(&l[..], &mut |off, len, toff| {
                    maps.push((off, len, toff));
                    Ok(())
                })
                .unwrap();
                b.finish().unwrap();
            }
            for (off, len, toff) in maps {
                let end = ((toff + len) as usize).min(l.len());
                dev.write_at(&l[toff as usize..end], off).unwrap();
            }
        }
        dev
    }

    fn source(layers: &[Vec<u8>]) -> Tree {
        let mut s = SourceTree::new();
        for l in layers {
            s.apply_layer(&l[..]).unwrap();
        }
        let mut t = s.into_tree();
        t.clamp_mtimes(MTIME_RANGE);
        t
    }

    #[test]
    fn walks_what_the_builder_wrote() {
        let big = "0123456789abcdef".repeat(700); // several blocks
        let l1 = tar(&[
            ("etc/", 'd', "", 0o755, 1_700_000_000),
            ("etc/motd", 'f', "hello\n", 0o644, 1_700_000_000),
            ("etc/big", 'f', &big, 0o600, 1_700_000_001),
            ("etc/gone", 'f', "x", 0o644, 1_700_000_000),
            ("bin/tool", 'x', "#!/bin/sh\n", 0o4755, 1_700_000_000),
            ("bin/sh", 'l', "tool", 0o777, 1_700_000_000),
            ("dev/null", 'c', "", 0o666, 1_700_000_000),
            ("dev/fifo", 'p', "", 0o600, 1_700_000_000),
            ("h1", 'f', "same", 0o644, 1_700_000_000),
            ("h2", 'h', "h1", 0o644, 1_700_000_000),
            ("old", 'f', "", 0o644, 0),
            ("s", 's', "sparse data", 0o644, 1_700_000_000),
        ]);
        let l2 = tar(&[
            ("etc/.wh.gone", 'f', "", 0o644, 1_700_000_000),
            ("etc/added", 'f', "2", 0o640, 2_208_988_800),
        ]);
        let layers = [l1, l2];
        let dir = tempfile::tempdir().unwrap();
        let dev = build(dir.path(), &layers);
        let got = walk(&dev).unwrap();
        let want = source(&layers);
        assert_eq!(crate::compare::compare(&want, &got), vec![]);
        let tool = &got.entries[b"/bin/tool".as_slice()];
        assert_eq!((tool.mode, tool.uid, tool.gid), (0o4755, 1000, 100));
        assert_eq!(tool.xattrs["user.k"], b"v");
        assert_eq!(got.entries[b"/dev/null".as_slice()].rdev, (259, 70000));
        let s = &got.entries[b"/s".as_slice()];
        let mut want_s = vec![0u8; 20000];
        want_s[8192..8192 + 11].copy_from_slice(b"sparse data");
        assert_eq!(s.sha256, Some(Sha256::digest(&want_s).into()));
        assert_eq!(got.hardlink_leaders().len(), 2);
        assert!(!got.entries.contains_key(b"/etc/gone".as_slice()));
    }

    #[test]
    fn differences_and_corruption_are_reported() {
        let l1 = tar(&[("a", 'f', "abc", 0o644, 5), ("b", 'f', "xyz", 0o644, 5)]);
        let dir = tempfile::tempdir().unwrap();
        let dev = build(dir.path(), std::slice::from_ref(&l1));
        let l1b = tar(&[("a", 'f', "abd", 0o600, 5), ("b", 'f', "xyz", 0o644, 5)]);
        let d = crate::compare::compare(&source(&[l1b]), &walk(&dev).unwrap());
        let whats: Vec<_> = d
            .iter()
            .map(|d| (d.path.as_str(), d.what.clone()))
            .collect();
        assert_eq!(
            whats,
            [
                ("/a", crate::compare::What::Mode),
                ("/a", crate::compare::What::Content)
            ]
        );
        // Not an EROFS image at all.
        let zero = vec![0u8; 8192];
        assert!(matches!(walk(&zero), Err(CheckError::Erofs { .. })));
    }

    #[test]
    fn negative_times_clamp_to_the_epoch() {
        let mut t = Tree::default();
        let mut e = Entry::implicit_dir(0);
        e.mtime = Some(Time { secs: -5, nanos: 3 });
        t.entries.insert(b"/".to_vec(), e);
        t.clamp_mtimes(MTIME_RANGE);
        assert_eq!(
            t.entries[b"/".as_slice()].mtime,
            Some(Time { secs: 0, nanos: 3 })
        );
    }
}
