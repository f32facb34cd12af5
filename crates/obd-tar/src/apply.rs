//! Applying one OCI layer tar onto an ext4 filesystem (the layer's diff lands in whatever
//! block device the filesystem writes through).
//!
//! Semantics follow the OCI image spec and containerd's applier:
//! * whiteouts `.wh.NAME` remove `NAME` from lower layers, opaque markers `.wh..wh..opq` hide
//!   a directory's lower content; neither touches what this layer already unpacked; other
//!   `.wh..wh.*` entries are ignored; the markers are never materialised;
//! * a later entry replaces an earlier one at the same path (a directory over a directory
//!   merges, anything else removes what was there, recursively);
//! * missing parent directories are created (0755, root);
//! * names are cleaned lexically (`..` stops at the root), parents are resolved inside the
//!   image (symlinks followed but clamped to the image root);
//! * hard links resolve their target against the archive root, in this or a lower layer;
//! * GNU/PAX sparse members keep their holes; all-zero blocks become holes.
//! * atime = mtime = ctime = the member's mtime, with nanoseconds;
//! * a symlink is always `lrwxrwxrwx`, whatever mode its header carries;
//! * a member whose data is larger than the whole filesystem is refused at its header.

use std::collections::HashSet;
use std::io::{self, Read};

use obd_ext4::{Attrs, Ext4, FileKind, Timestamp, ROOT_INO};
use obd_format::io::BlockDevice;

use crate::decompress::{decompress, read_ahead, Compression};
use crate::path;
use crate::reader::{Entry, EntryKind, TarError, TarReader};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Why applying a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("layer stream: {0}")]
    Io(#[from] io::Error),
    #[error("entry {name:?} (tar byte {offset}): {source}")]
    Entry {
        name: String,
        offset: u64,
        #[source]
        source: obd_ext4::Error,
    },
    #[error("entry {name:?} (tar byte {offset}): {detail}")]
    Invalid {
        name: String,
        offset: u64,
        detail: String,
    },
}

impl ApplyError {
    /// The error of local or network I/O behind this failure, or `Err(self)` when the layer
    /// itself is at fault (malformed, truncated or corrupt, or holding what ext4 cannot).
    pub fn into_io(self) -> Result<io::Error, Self> {
        if self.is_bad_input() {
            return Err(self);
        }
        match self {
            ApplyError::Tar(TarError::Io(e))
            | ApplyError::Io(e)
            | ApplyError::Entry {
                source: obd_ext4::Error::Io(e),
                ..
            } => Ok(e),
            other => Err(other),
        }
    }

    /// True when the layer itself is at fault, not local or network I/O.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ApplyError::Tar(t) => t.is_bad_input(),
            ApplyError::Io(e) => crate::reader::is_bad_data(e),
            ApplyError::Entry {
                source: obd_ext4::Error::Io(e),
                ..
            } => crate::reader::is_bad_data(e),
            _ => true,
        }
    }
}

/// What a layer contained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub compression: Option<&'static str>,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub whiteouts: u64,
    pub file_bytes: u64,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
}

/// Passes bytes through while hashing them (sha256): a layer's diff ID, a blob's digest.
pub struct HashReader<R> {
    inner: R,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        use sha2::Digest;
        HashReader {
            inner,
            hash: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` and the byte count of what was read.
    pub fn finish(self) -> (String, u64) {
        let (_, digest, bytes) = self.into_parts();
        (digest, bytes)
    }

    /// The inner reader, `sha256:<hex>` and the byte count of what was read.
    pub fn into_parts(self) -> (R, String, u64) {
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(self.hash.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use obd_meter::{charge, Stage};
        use sha2::Digest;
        let n = charge(Stage::Inflate, || self.inner.read(buf))?;
        charge(Stage::Hash, || self.hash.update(&buf[..n]));
        self.bytes += n as u64;
        Ok(n)
    }
}

fn ts(t: crate::reader::Timestamp) -> Timestamp {
    Timestamp {
        secs: t.sec.clamp(Timestamp::MIN_SECS, Timestamp::MAX_SECS),
        nanos: t.nsec.min(999_999_999),
    }
}

/// Applies a layer stream (plain, gzip or zstd: detected by magic). Decompression and the
/// diff ID's hash run on a thread of their own, a few chunks ahead of the tar applier.
pub fn apply_layer<D: BlockDevice>(
    fs: &mut Ext4<D>,
    stream: impl Read + Send,
) -> Result<ApplyStats, ApplyError> {
    let _cpu = obd_meter::enter(obd_meter::Stage::Apply);
    let (c, r) = decompress(stream)?;
    let mut h = HashReader::new(r);
    let (applied, hashed) = read_ahead(&mut h, |rd| {
        // Whatever follows the end-of-archive blocks is part of the diff ID too.
        let st = apply_tar(fs, &mut *rd)?;
        io::copy(rd, &mut io::sink())?;
        Ok::<_, ApplyError>(st)
    });
    let mut stats = applied?;
    if !hashed {
        return Err(ApplyError::Io(io::Error::other(
            "the decompression thread stopped early",
        )));
    }
    (stats.diff_id, stats.tar_bytes) = h.finish();
    stats.compression = Some(match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    });
    Ok(stats)
}

/// Reads the stored data of a member, expanding sparse maps into zeros.
struct DataReader<'a, R: Read> {
    tar: &'a mut TarReader<R>,
    /// Remaining segments `(offset, len)`; `None` for a plain file.
    map: Vec<(u64, u64)>,
    seg: usize,
    pos: u64,
    size: u64,
    sparse: bool,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let to_io = TarError::into_io;
        if !self.sparse {
            let n = self.tar.read_data(buf).map_err(to_io)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "member data ended early",
                ));
            }
            self.pos += n as u64;
            return Ok(n);
        }
        while self.seg < self.map.len() && self.map[self.seg].0 + self.map[self.seg].1 <= self.pos {
            self.seg += 1;
        }
        let (n, data) = match self.map.get(self.seg) {
            Some(&(o, _)) if o > self.pos => ((o - self.pos).min(buf.len() as u64) as usize, false),
            Some(&(o, l)) => ((o + l - self.pos).min(buf.len() as u64) as usize, true),
            None => ((self.size - self.pos).min(buf.len() as u64) as usize, false),
        };
        if data {
            let mut done = 0;
            while done < n {
                let k = self.tar.read_data(&mut buf[done..n]).map_err(to_io)?;
                if k == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse data ended early",
                    ));
                }
                done += k;
            }
        } else {
            buf[..n].fill(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Maps `len` bytes of the device at `dev_offset` onto the uncompressed tar at `tar_offset`
/// (both multiples of 512). Used by [`apply_tar_remote`].
pub type RemoteMap<'a, D> = dyn FnMut(&mut D, u64, u64, u64) -> io::Result<()> + 'a;

/// Applies an uncompressed tar stream.
pub fn apply_tar<D: BlockDevice>(fs: &mut Ext4<D>, r: impl Read) -> Result<ApplyStats, ApplyError> {
    apply_inner(fs, r, None)
}

/// Applies an uncompressed tar stream writing metadata only (TurboOCI): the blocks of each
/// regular file are allocated, not written, and `remote` maps them onto the file's data in
/// the tar, up to the file size rounded up to 512 bytes. Sparse members are materialised
/// as ordinary data (their holes have no place in the tar to map to).
pub fn apply_tar_remote<D: BlockDevice>(
    fs: &mut Ext4<D>,
    r: impl Read,
    remote: &mut RemoteMap<'_, D>,
) -> Result<ApplyStats, ApplyError> {
    apply_inner(fs, r, Some(remote))
}

fn apply_inner<D: BlockDevice>(
    fs: &mut Ext4<D>,
    r: impl Read,
    mut remote: Option<&mut RemoteMap<'_, D>>,
) -> Result<ApplyStats, ApplyError> {
    let mut tar = TarReader::new(r);
    let mut stats = ApplyStats::default();
    // Clean paths unpacked by this layer (whiteouts never remove them).
    let mut unpacked: HashSet<Vec<u8>> = HashSet::new();
    let fs_bytes = {
        let st = fs.stats();
        st.blocks_count * st.block_size
    };
    while let Some(e) = tar.next_entry()? {
        stats.entries += 1;
        let name = e.display_name();
        let offset = e.header_offset;
        let wrap = |source: obd_ext4::Error| match source {
            // The member's data ended early or was corrupt: the layer's fault, not I/O.
            obd_ext4::Error::Io(e) if crate::reader::is_bad_data(&e) => ApplyError::Invalid {
                name: name.clone(),
                offset,
                detail: e.to_string(),
            },
            source => ApplyError::Entry {
                name: name.clone(),
                offset,
                source,
            },
        };
        let comps = path::components(&e.name);
        let clean = path::clean(&e.name);
        let Some((base, parent_comps)) = comps.split_last() else {
            // The root itself ("./"): take its metadata when it is a directory.
            if e.kind == EntryKind::Directory {
                set_meta(fs, ROOT_INO, &e).map_err(wrap)?;
            }
            continue;
        };
        let parent_path = parent_comps.join(&b'/');
        if base.starts_with(WHITEOUT) {
            stats.whiteouts += 1;
            let Some(parent) = resolve_dir(fs, &parent_path).map_err(wrap)? else {
                continue;
            };
            if *base == OPAQUE {
                remove_lower_children(fs, parent, &parent_path, &unpacked).map_err(wrap)?;
            } else if !base.starts_with(b".wh..wh.") {
                let target = &base[WHITEOUT.len()..];
                let mut tp = parent_path.clone();
                if !tp.is_empty() {
                    tp.push(b'/');
                }
                tp.extend_from_slice(target);
                if !target.is_empty() && !unpacked.contains(&tp) {
                    fs.remove_all(parent, target).map_err(wrap)?;
                }
            }
            continue;
        }
        if e.kind == EntryKind::File && e.stored_size > fs_bytes {
            // Refused at its header: its data could never be written (and a member of zeros
            // would otherwise stream for minutes before becoming a file no runtime unpacks).
            return Err(ApplyError::Invalid {
                name,
                offset,
                detail: format!(
                    "member of {} bytes ({}) is larger than the whole filesystem (virtual size {} bytes, \
                     {}): convert with a larger --vsize (in GiB)",
                    e.stored_size,
                    human(e.stored_size),
                    fs_bytes,
                    human(fs_bytes)
                ),
            });
        }
        let attrs = Attrs::new(e.perm() as u16, e.uid as u32, e.gid as u32, ts(e.mtime));
        let parent = match resolve_dir(fs, &parent_path).map_err(wrap)? {
            Some(p) => p,
            None => {
                let pa = Attrs::new(0o755, 0, 0, ts(e.mtime));
                fs.mkdir_all(&parent_path, &pa).map_err(wrap)?
            }
        };
        let existing = fs.lookup(parent, base).map_err(wrap)?;
        if e.kind == EntryKind::HardLink {
            let tclean = path::clean(&e.link);
            if tclean == clean {
                continue;
            }
            let target = resolve_nofollow(fs, &tclean)
                .map_err(wrap)?
                .ok_or_else(|| ApplyError::Invalid {
                    name: name.clone(),
                    offset,
                    detail: format!(
                        "hard link target {:?} does not exist",
                        String::from_utf8_lossy(&e.link)
                    ),
                })?;
            if fs.metadata(target).map_err(wrap)?.kind == FileKind::Directory {
                return Err(ApplyError::Invalid {
                    name,
                    offset,
                    detail: "hard link to a directory".into(),
                });
            }
            if existing == Some(target) {
                unpacked.insert(clean);
                continue;
            }
            if existing.is_some() {
                fs.remove_all(parent, base).map_err(wrap)?;
            }
            fs.link(parent, base, target).map_err(wrap)?;
            stats.hardlinks += 1;
            unpacked.insert(clean);
            continue;
        }
        if let Some(old) = existing {
            let old_dir = fs.metadata(old).map_err(wrap)?.kind == FileKind::Directory;
            if !(old_dir && e.kind == EntryKind::Directory) {
                fs.remove_all(parent, base).map_err(wrap)?;
            }
        }
        let ino = match e.kind {
            EntryKind::Directory => {
                stats.dirs += 1;
                match fs.lookup(parent, base).map_err(wrap)? {
                    Some(d) => d,
                    None => fs.mkdir(parent, base, &attrs).map_err(wrap)?,
                }
            }
            EntryKind::File if e.sparse.is_none() && remote.is_some() => {
                stats.files += 1;
                stats.file_bytes += e.size;
                let (ino, runs) = fs
                    .create_file_unwritten(parent, base, &attrs, e.size)
                    .map_err(wrap)?;
                let map = remote.as_mut().expect("checked by the guard");
                let bs = u64::from(fs.block_size());
                let end = e.size.div_ceil(512) * 512;
                for (lblk, pblk, n) in runs {
                    let foff = lblk * bs;
                    if foff >= end {
                        break;
                    }
                    let len = (u64::from(n) * bs).min(end - foff);
                    map(fs.device_mut(), pblk * bs, len, e.data_offset + foff)
                        .map_err(|err| wrap(err.into()))?;
                }
                ino
            }
            EntryKind::File => {
                stats.files += 1;
                stats.file_bytes += e.size;
                let mut data = DataReader {
                    map: e.sparse.clone().unwrap_or_default(),
                    sparse: e.sparse.is_some(),
                    tar: &mut tar,
                    seg: 0,
                    pos: 0,
                    size: e.size,
                };
                fs.create_file(parent, base, &attrs, e.size, &mut data)
                    .map_err(wrap)?
            }
            EntryKind::Symlink => {
                stats.symlinks += 1;
                fs.symlink(parent, base, &e.link, &attrs).map_err(wrap)?
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                stats.devices += 1;
                let kind = match e.kind {
                    EntryKind::CharDevice => FileKind::CharDevice,
                    EntryKind::BlockDevice => FileKind::BlockDevice,
                    _ => FileKind::Fifo,
                };
                fs.mknod(parent, base, kind, (e.dev_major, e.dev_minor), &attrs)
                    .map_err(wrap)?
            }
            EntryKind::HardLink => unreachable!("handled above"),
        };
        set_meta(fs, ino, &e).map_err(wrap)?;
        unpacked.insert(clean);
    }
    stats.tar_bytes = tar.position();
    Ok(stats)
}

/// `12.5 GiB`-style size for messages.
fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Owner, permissions, times and xattrs of an entry.
fn set_meta<D: BlockDevice>(fs: &mut Ext4<D>, ino: u32, e: &Entry) -> obd_ext4::Result<()> {
    fs.set_owner(ino, e.uid as u32, e.gid as u32)?;
    if e.kind != EntryKind::Symlink {
        fs.set_perm(ino, e.perm() as u16)?;
    }
    for (k, v) in &e.xattrs {
        fs.set_xattr(ino, &String::from_utf8_lossy(k), v)?;
    }
    let t = ts(e.mtime);
    fs.set_times(ino, t, t, t)
}

/// Resolves a directory path (following symlinks inside the image); `None` if missing.
fn resolve_dir<D: BlockDevice>(fs: &mut Ext4<D>, p: &[u8]) -> obd_ext4::Result<Option<u32>> {
    match fs.resolve(p, true)? {
        Some(ino) if fs.metadata(ino)?.kind == FileKind::Directory => Ok(Some(ino)),
        Some(_) => Err(obd_ext4::Error::NotADirectory(
            String::from_utf8_lossy(p).into_owned(),
        )),
        None => Ok(None),
    }
}

/// Resolves a path without following a symlink in the last component.
fn resolve_nofollow<D: BlockDevice>(fs: &mut Ext4<D>, p: &[u8]) -> obd_ext4::Result<Option<u32>> {
    fs.resolve(p, false)
}

/// For an opaque directory: removes every child that this layer did not unpack, walking
/// into kept directories (their lower content is hidden too).
fn remove_lower_children<D: BlockDevice>(
    fs: &mut Ext4<D>,
    dir: u32,
    dir_path: &[u8],
    unpacked: &HashSet<Vec<u8>>,
) -> obd_ext4::Result<()> {
    for child in fs.read_dir(dir)? {
        let mut p = dir_path.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&child.name);
        if unpacked.contains(&p) {
            if child.kind == Some(FileKind::Directory) {
                remove_lower_children(fs, child.ino, &p, unpacked)?;
            }
        } else {
            fs.remove_all(dir, &child.name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{header, RawTar};
    use obd_ext4::MkfsOptions;
    use obd_format::io::MemDevice;

    fn fs(size: u64) -> Ext4<MemDevice> {
        Ext4::mkfs(MemDevice::new(size), &MkfsOptions::default()).unwrap()
    }

    fn meta(fs: &mut Ext4<MemDevice>, p: &str) -> Option<obd_ext4::Metadata> {
        fs.resolve(p.as_bytes(), false)
            .unwrap()
            .map(|i| fs.metadata(i).unwrap())
    }

    #[test]
    fn symlinks_are_lrwxrwxrwx_whatever_the_header_says() {
        let mut f = fs(64 << 20);
        let tar = RawTar::new()
            .file("target", b"hi\n")
            .symlink("l0", "target", 0)
            .symlink("l0644", "target", 0o644)
            .symlink("l4777", "target", 0o4777)
            .end();
        apply_tar(&mut f, &tar[..]).unwrap();
        for l in ["l0", "l0644", "l4777"] {
            let m = meta(&mut f, l).unwrap();
            assert_eq!((m.kind, m.perm), (FileKind::Symlink, 0o777), "{l}");
        }
        assert_eq!(meta(&mut f, "target").unwrap().perm, 0o644);
    }

    /// Four `x` headers before a symlink `bar`: the symlink is `bar`, and no directory
    /// named by an earlier header appears.
    #[test]
    fn several_extended_headers_make_one_entry() {
        let mut f = fs(64 << 20);
        let tar = RawTar::new()
            .pax(&[("path", b"PAX1/PAX1/foo")])
            .pax(&[("path", b"PAX2/PAX2/foo"), ("mtime", b"1000")])
            .pax(&[("linkpath", b"PAX3")])
            .pax(&[("comment", b"x")])
            .symlink("bar", "tgt", 0o777)
            .global(&[("path", b"global1"), ("mtime", b"12345")])
            .file("file1", b"one\n")
            .end();
        apply_tar(&mut f, &tar[..]).unwrap();
        let names: Vec<Vec<u8>> = f
            .read_dir(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n != b"lost+found")
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(meta(&mut f, "PAX1").is_none() && meta(&mut f, "PAX2").is_none());
        assert!(meta(&mut f, "global1").is_none());
        assert_eq!(meta(&mut f, "bar").unwrap().size, 3);
        let m = meta(&mut f, "file1").unwrap();
        assert_eq!(m.mtime.secs, crate::testutil::MTIME as i64);
    }

    /// A member whose data is larger than the whole filesystem is refused at its header
    /// (no data follows the header here: the refusal must come before any is read).
    #[test]
    fn member_larger_than_the_filesystem_is_refused_at_its_header() {
        let mut f = fs(64 << 20);
        let tar = RawTar::new()
            .block(header(b"zeros", b'0', 200 << 30, 0o644, b""))
            .into_bytes();
        let t = std::time::Instant::now();
        let e = apply_tar(&mut f, &tar[..]).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let msg = e.to_string();
        for needle in ["\"zeros\"", "214748364800 bytes", "200.0 GiB", "--vsize"] {
            assert!(msg.contains(needle), "{msg}");
        }
        assert!(e.is_bad_input());
        // A member that fits is applied as usual.
        let tar = RawTar::new().file("small", &[1u8; 5000]).end();
        apply_tar(&mut f, &tar[..]).unwrap();
    }

    #[test]
    fn a_256_byte_name_names_ext4s_limit() {
        let mut f = fs(64 << 20);
        let long = "n".repeat(256);
        let tar = RawTar::new()
            .pax(&[("path", long.as_bytes())])
            .file("x", b"d")
            .end();
        let e = apply_tar(&mut f, &tar[..]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("is 256 bytes"), "{msg}");
        assert!(msg.contains("exceeds ext4's 255-byte limit"), "{msg}");
        assert!(e.is_bad_input());
        // 255 bytes fit.
        let ok = "n".repeat(255);
        let tar = RawTar::new().file(&ok, b"d").end();
        let tar = RawTar::new()
            .pax(&[("path", ok.as_bytes())])
            .bytes(&tar)
            .into_bytes();
        apply_tar(&mut f, &tar[..]).unwrap();
        assert!(meta(&mut f, &ok).is_some());
    }

    /// Corrupt or truncated compressed data is bad input; a failing source stays I/O with
    /// its OS error.
    #[test]
    fn compressed_stream_errors_keep_their_cause() {
        use std::io::Write;
        let tar = RawTar::new().file("f", &vec![7u8; 300_000]).end();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let truncated = &gz[..gz.len() / 2];
        let mut corrupt = gz.clone();
        for b in &mut corrupt[20..60] {
            *b ^= 0x5a;
        }
        for (what, data) in [
            ("truncated gzip", truncated),
            ("corrupt gzip", &corrupt[..]),
        ] {
            let e = apply_layer(&mut fs(64 << 20), data).unwrap_err();
            assert!(e.is_bad_input(), "{what}: {e}");
            assert!(e.into_io().is_err(), "{what}");
        }
        struct Failing(Vec<u8>);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::from_raw_os_error(5));
                }
                let n = b.len().min(self.0.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let e = apply_layer(&mut fs(64 << 20), Failing(gz[..gz.len() / 2].to_vec())).unwrap_err();
        assert!(!e.is_bad_input(), "{e}");
        assert_eq!(e.into_io().unwrap().raw_os_error(), Some(5));
    }
}
