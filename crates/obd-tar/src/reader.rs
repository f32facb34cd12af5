//! A strict streaming tar reader for OCI layers.
//!
//! It understands ustar and GNU headers (long names `L`/`K`, base-256 numbers, old GNU
//! sparse members `S` with extension blocks), PAX extended headers (`path`, `linkpath`,
//! `size`, `uid`, `gid`, `mtime`/`atime` with fractions, `SCHILY.xattr.*`,
//! `LIBARCHIVE.xattr.*`, and the GNU sparse formats 0.0, 0.1 and 1.0) and global headers.
//! Every error names the member and its byte offset. Nothing is allocated by a size read
//! from the archive except bounded metadata (PAX records, long names, sparse maps).

use std::io::{self, Read};

const BLOCK: u64 = 512;
/// Largest PAX header or GNU long name/link we accept.
const MAX_META: u64 = 1 << 20;
/// Largest number of sparse map entries we accept.
const MAX_SPARSE: usize = 1 << 20;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading the layer stream: {0}")]
    Io(#[from] io::Error),
    #[error("layer tar is truncated {0}")]
    Truncated(String),
    #[error("bad tar header at byte {offset}{}: {detail}", name_suffix(.name))]
    BadHeader {
        offset: u64,
        name: Option<String>,
        detail: String,
    },
}

impl TarError {
    /// True when the archive is at fault (malformed, truncated, corrupt compressed data),
    /// false when reading it failed (disk, network).
    pub fn is_bad_input(&self) -> bool {
        match self {
            TarError::Io(e) => is_bad_data(e),
            _ => true,
        }
    }

    /// As an [`io::Error`] keeping the distinction: a fault of the archive becomes
    /// `InvalidData` (or `UnexpectedEof` when truncated) with this error's message.
    pub fn into_io(self) -> io::Error {
        match self {
            TarError::Io(e) => e,
            TarError::Truncated(_) => io::Error::new(io::ErrorKind::UnexpectedEof, self),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// True for an I/O error that reports bad data (a decoder's objection, a stream that ended
/// early), not a failure of the disk or network.
pub fn is_bad_data(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

fn name_suffix(n: &Option<String>) -> String {
    n.as_ref().map(|n| format!(" ({n:?})")).unwrap_or_default()
}

/// Seconds since the epoch (may be negative) and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// The type of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One member, with all extended attributes applied.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The name as stored (after PAX/GNU overrides), not normalised.
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Symlink target (verbatim) or hard link target (a member name).
    pub link: Vec<u8>,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Timestamp,
    pub atime: Option<Timestamp>,
    /// Logical size of a regular file (the real size of a sparse file).
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For sparse files: the data segments `(offset, length)` in file order; the stored
    /// bytes are these segments back to back. `None` for ordinary files.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// Bytes stored in the archive for this member (after any sparse map prefix).
    pub stored_size: u64,
    /// Offset in the uncompressed tar of the member's first header block.
    pub header_offset: u64,
    /// Offset in the uncompressed tar of the member's stored data.
    pub data_offset: u64,
}

impl Entry {
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The permission bits an unpack gives this member: a symlink is always 0777
    /// (`lrwxrwxrwx`, what `symlink(2)` gives containerd and umoci, whatever mode its header
    /// carries), anything else its header's `mode & 0o7777`.
    pub fn perm(&self) -> u32 {
        if self.kind == EntryKind::Symlink {
            0o777
        } else {
            self.mode
        }
    }
}

/// Streams members out of an uncompressed tar.
pub struct TarReader<R: Read> {
    r: R,
    pos: u64,
    /// Stored bytes of the current member not yet read, and its padding.
    remaining: u64,
    padding: u64,
    /// PAX global headers seen (and ignored).
    globals_skipped: u64,
    done: bool,
}

fn octal_or_256(f: &[u8]) -> Option<i64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        // Base-256, two's complement when the top bit pattern is 0xff.
        let neg = f[0] == 0xff;
        let mut v: i128 = if neg { -1 } else { (f[0] & 0x7f) as i128 };
        for &b in &f[1..] {
            v = v.checked_mul(256)? + b as i128;
            if v.abs() > i64::MAX as i128 {
                return None;
            }
        }
        return i64::try_from(v).ok();
    }
    let s: Vec<u8> = f.iter().copied().take_while(|&b| b != 0).collect();
    let t = std::str::from_utf8(&s).ok()?.trim_matches(|c| c == ' ');
    if t.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(t, 8).ok()
}

fn cstr(f: &[u8]) -> &[u8] {
    &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
}

fn parse_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    if i.is_empty() && f.is_empty()
        || !i.bytes().all(|b| b.is_ascii_digit())
        || !f.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let sec: i64 = if i.is_empty() { 0 } else { i.parse().ok()? };
    let mut frac = f
        .as_bytes()
        .iter()
        .take(9)
        .fold(0u32, |a, &b| a * 10 + (b - b'0') as u32);
    for _ in f.len().min(9)..9 {
        frac *= 10;
    }
    Some(if !neg {
        Timestamp { sec, nsec: frac }
    } else if frac == 0 {
        Timestamp { sec: -sec, nsec: 0 }
    } else {
        Timestamp {
            sec: -sec - 1,
            nsec: 1_000_000_000 - frac,
        }
    })
}

fn unhex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// LIBARCHIVE.xattr names are URL-encoded.
fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (unhex(s[i + 1]), unhex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s
        .iter()
        .copied()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * k);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Parses PAX records `"<len> key=value\n"`.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("PAX record length {len} is inconsistent"));
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        let key = String::from_utf8_lossy(&kv[..eq]).into_owned();
        out.push((key, kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn checksum_ok(h: &[u8; 512]) -> bool {
    let stored = match octal_or_256(&h[148..156]) {
        Some(v) => v,
        None => return false,
    };
    let mut u: i64 = 0;
    let mut s: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        u += b as i64;
        s += b as i8 as i64;
    }
    stored == u || stored == s
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            pos: 0,
            remaining: 0,
            padding: 0,
            globals_skipped: 0,
            done: false,
        }
    }

    /// Bytes of the uncompressed tar consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// PAX global (`g`) headers read so far. They are checked and then ignored, as
    /// containerd does: they never rename, re-own or re-date the members after them.
    pub fn global_headers_ignored(&self) -> u64 {
        self.globals_skipped
    }

    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..k])?;
            if got < k {
                return Err(TarError::Truncated(format!("in {what}")));
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads stored bytes of the current member; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let k = (buf.len() as u64).min(self.remaining) as usize;
        if k == 0 {
            return Ok(0);
        }
        let got = self.read_full(&mut buf[..k])?;
        if got < k {
            return Err(TarError::Truncated(format!(
                "{} bytes before the end of a member's data",
                self.remaining - got as u64
            )));
        }
        self.remaining -= got as u64;
        Ok(got)
    }

    /// Reads a metadata member's content (PAX records, long names), bounded.
    fn read_meta(&mut self, size: u64, offset: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(TarError::BadHeader {
                offset,
                name: None,
                detail: format!("{what} of {size} bytes is larger than the limit of {MAX_META}"),
            });
        }
        let mut v = vec![0u8; size as usize];
        if self.read_full(&mut v)? < v.len() {
            return Err(TarError::Truncated(format!(
                "in the {what} at byte {offset}"
            )));
        }
        self.skip((BLOCK - size % BLOCK) % BLOCK, what)?;
        Ok(v)
    }

    fn read_block(&mut self, b: &mut [u8; 512]) -> Result<bool, TarError> {
        let n = self.read_full(b)?;
        if n == 0 {
            return Ok(false);
        }
        if n < 512 {
            return Err(TarError::Truncated(format!(
                "inside a header block at byte {}",
                self.pos - n as u64
            )));
        }
        Ok(true)
    }

    /// The next member, or `None` at the end of the archive. Unread data of the previous
    /// member is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let (rem, pad) = (self.remaining, self.padding);
        self.remaining = 0;
        self.padding = 0;
        self.skip(rem + pad, "member data")?;

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut first_offset = None;
        loop {
            let offset = self.pos;
            let mut h = [0u8; 512];
            if !self.read_block(&mut h)? {
                if first_offset.is_some() {
                    return Err(TarError::Truncated("after an extended header".into()));
                }
                self.done = true;
                return Ok(None);
            }
            if h.iter().all(|&b| b == 0) {
                if first_offset.is_some() {
                    return Err(TarError::BadHeader {
                        offset,
                        name: None,
                        detail: "end of archive right after an extended header".into(),
                    });
                }
                // End of archive (the second zero block is optional in practice).
                self.done = true;
                return Ok(None);
            }
            first_offset.get_or_insert(offset);
            let bad = |d: String| TarError::BadHeader {
                offset,
                name: Some(String::from_utf8_lossy(cstr(&h[0..100])).into_owned()),
                detail: d,
            };
            if !checksum_ok(&h) {
                return Err(bad("header checksum mismatch".into()));
            }
            let typ = h[156];
            let size = octal_or_256(&h[124..136])
                .ok_or_else(|| bad("size field is not a number".into()))?;
            if size < 0 {
                return Err(bad("negative size".into()));
            }
            let size = size as u64;
            match typ {
                b'x' => {
                    // The last of several `x` headers wins whole, as in Go's reader.
                    let d = self.read_meta(size, offset, "PAX header")?;
                    pax = parse_pax(&d).map_err(bad)?;
                    continue;
                }
                b'g' => {
                    // As Go's reader: a global header is a member of its own (containerd and
                    // moby log and skip it), so its records never reach later members, and
                    // extended headers before it do not carry over it.
                    let d = self.read_meta(size, offset, "PAX global header")?;
                    parse_pax(&d).map_err(bad)?;
                    self.globals_skipped += 1;
                    pax.clear();
                    long_name = None;
                    long_link = None;
                    first_offset = None;
                    continue;
                }
                b'L' => {
                    // The last of several `L` (or `K`) headers wins.
                    let d = self.read_meta(size, offset, "GNU long name")?;
                    long_name = Some(cstr(&d).to_vec());
                    continue;
                }
                b'K' => {
                    let d = self.read_meta(size, offset, "GNU long link name")?;
                    long_link = Some(cstr(&d).to_vec());
                    continue;
                }
                _ => {}
            }
            return self.finish_entry(
                &h,
                first_offset.unwrap(),
                offset,
                size,
                pax,
                long_name,
                long_link,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_entry(
        &mut self,
        h: &[u8; 512],
        first_offset: u64,
        offset: u64,
        size: u64,
        pax: Vec<(String, Vec<u8>)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Option<Entry>, TarError> {
        let ustar = &h[257..263] == b"ustar\0";
        let gnu = &h[257..265] == b"ustar  \0";
        let mut name = cstr(&h[0..100]).to_vec();
        if ustar && h[345] != 0 {
            let mut p = cstr(&h[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(&name);
            name = p;
        }
        if let Some(n) = long_name {
            name = n;
        }
        let mut link = cstr(&h[157..257]).to_vec();
        if let Some(l) = long_link {
            link = l;
        }
        let bad = |name: &[u8], d: String| TarError::BadHeader {
            offset,
            name: Some(String::from_utf8_lossy(name).into_owned()),
            detail: d,
        };
        let num = |f: &[u8], what: &str, name: &[u8]| {
            octal_or_256(f).ok_or_else(|| bad(name, format!("{what} field is not a number")))
        };
        let mode = num(&h[100..108], "mode", &name)? as u64;
        let mut uid = num(&h[108..116], "uid", &name)?.max(0) as u64;
        let mut gid = num(&h[116..124], "gid", &name)?.max(0) as u64;
        let mut mtime = Timestamp {
            sec: num(&h[136..148], "mtime", &name)?,
            nsec: 0,
        };
        let mut atime = None;
        let dev_major = num(&h[329..337], "devmajor", &name)?.clamp(0, u32::MAX as i64) as u32;
        let dev_minor = num(&h[337..345], "devminor", &name)?.clamp(0, u32::MAX as i64) as u32;
        let typ = h[156];
        let mut stored = size;
        let mut xattrs = Vec::new();
        let mut sparse: Option<Vec<(u64, u64)>> = None;
        let mut real_size: Option<u64> = None;
        let mut sparse_major: Option<u64> = None;
        let mut sparse_pairs: Vec<u64> = Vec::new();
        let mut sparse_name: Option<Vec<u8>> = None;

        for (k, v) in pax {
            let vs = || String::from_utf8_lossy(&v).into_owned();
            let int = |v: &[u8]| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match k.as_str() {
                "path" => name = v.clone(),
                "linkpath" => link = v.clone(),
                "size" => {
                    stored = int(&v).ok_or_else(|| bad(&name, format!("PAX size {:?}", vs())))?
                }
                "uid" => uid = int(&v).ok_or_else(|| bad(&name, format!("PAX uid {:?}", vs())))?,
                "gid" => gid = int(&v).ok_or_else(|| bad(&name, format!("PAX gid {:?}", vs())))?,
                "mtime" => {
                    mtime =
                        parse_time(&v).ok_or_else(|| bad(&name, format!("PAX mtime {:?}", vs())))?
                }
                "atime" => atime = parse_time(&v),
                "GNU.sparse.major" => sparse_major = int(&v),
                "GNU.sparse.name" => sparse_name = Some(v.clone()),
                "GNU.sparse.realsize" | "GNU.sparse.size" => real_size = int(&v),
                "GNU.sparse.offset" | "GNU.sparse.numbytes" => sparse_pairs
                    .push(int(&v).ok_or_else(|| bad(&name, "bad GNU.sparse record".into()))?),
                "GNU.sparse.map" => {
                    for x in v.split(|&b| b == b',') {
                        sparse_pairs
                            .push(int(x).ok_or_else(|| bad(&name, "bad GNU.sparse.map".into()))?);
                    }
                }
                _ => {
                    if let Some(n) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((n.as_bytes().to_vec(), v.clone()));
                    } else if let Some(n) = k.strip_prefix("LIBARCHIVE.xattr.") {
                        let val = base64_decode(&v)
                            .ok_or_else(|| bad(&name, format!("xattr {n}: bad base64")))?;
                        xattrs.push((url_decode(n.as_bytes()), val));
                    }
                }
            }
        }
        if name.contains(&0) || link.contains(&0) {
            return Err(bad(&name, "name or link target contains a NUL byte".into()));
        }
        if sparse_pairs.len() > 2 * MAX_SPARSE {
            return Err(bad(&name, "sparse map too large".into()));
        }

        let kind = match typ {
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'D' => EntryKind::Directory,
            b'0' | b'7' | b'S' => EntryKind::File,
            0 if name.ends_with(b"/") => EntryKind::Directory,
            0 => EntryKind::File,
            _ if mode & 0o170000 == 0o100000 => EntryKind::File,
            t => {
                return Err(bad(
                    &name,
                    format!("unsupported member type {:?}", t as char),
                ))
            }
        };
        let mut file_size = if kind == EntryKind::File { stored } else { 0 };

        // Old GNU sparse ('S'): map in the header and extension blocks.
        if typ == b'S' && gnu {
            let mut map = Vec::new();
            let push = |map: &mut Vec<(u64, u64)>, f: &[u8]| -> Result<(), TarError> {
                for k in 0..f.len() / 24 {
                    let e = &f[k * 24..k * 24 + 24];
                    if e.iter().all(|&b| b == 0) {
                        continue;
                    }
                    let o = octal_or_256(&e[..12]).filter(|&x| x >= 0);
                    let n = octal_or_256(&e[12..]).filter(|&x| x >= 0);
                    match (o, n) {
                        (Some(o), Some(n)) => map.push((o as u64, n as u64)),
                        _ => return Err(bad(&name, "bad sparse map entry".into())),
                    }
                }
                Ok(())
            };
            push(&mut map, &h[386..482])?;
            let mut ext = h[482] != 0;
            let real = octal_or_256(&h[483..495])
                .filter(|&x| x >= 0)
                .ok_or_else(|| bad(&name, "bad sparse real size".into()))?;
            while ext {
                let mut b = [0u8; 512];
                if !self.read_block(&mut b)? {
                    return Err(TarError::Truncated(
                        "in a GNU sparse extension block".into(),
                    ));
                }
                push(&mut map, &b[..504])?;
                if map.len() > MAX_SPARSE {
                    return Err(bad(&name, "sparse map too large".into()));
                }
                ext = b[504] != 0;
            }
            real_size = Some(real as u64);
            sparse = Some(map);
        } else if sparse_major == Some(1) {
            // PAX sparse 1.0: the map is a prefix of the stored data.
            let (map, used) = self.read_sparse_prefix(&name, offset, stored)?;
            stored -= used;
            sparse = Some(map);
            if let Some(n) = sparse_name.take() {
                name = n;
            }
        } else if !sparse_pairs.is_empty() || real_size.is_some() && sparse_name.is_some() {
            if !sparse_pairs.len().is_multiple_of(2) {
                return Err(bad(&name, "odd GNU.sparse map".into()));
            }
            sparse = Some(sparse_pairs.chunks(2).map(|c| (c[0], c[1])).collect());
            if let Some(n) = sparse_name.take() {
                name = n;
            }
        }
        if let Some(map) = &sparse {
            let real =
                real_size.ok_or_else(|| bad(&name, "sparse member without a real size".into()))?;
            let mut end = 0u64;
            let mut total = 0u64;
            for &(o, n) in map {
                if o < end || o.checked_add(n).is_none_or(|e| e > real) {
                    return Err(bad(
                        &name,
                        format!(
                            "sparse map entry ({o}, {n}) is out of order or past the size {real}"
                        ),
                    ));
                }
                end = o + n;
                total += n;
            }
            if total != stored {
                return Err(bad(
                    &name,
                    format!("sparse map covers {total} bytes but {stored} are stored"),
                ));
            }
            file_size = real;
        }
        let data_offset = self.pos;
        self.remaining = stored;
        self.padding = (BLOCK - stored % BLOCK) % BLOCK;
        Ok(Some(Entry {
            name,
            kind,
            link,
            mode: (mode & 0o7777) as u32,
            uid: uid.min(u32::MAX as u64),
            gid: gid.min(u32::MAX as u64),
            mtime,
            atime,
            size: file_size,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
            stored_size: stored,
            header_offset: first_offset,
            data_offset,
        }))
    }

    /// Reads the decimal sparse map that prefixes the data of a PAX 1.0 sparse member.
    fn read_sparse_prefix(
        &mut self,
        name: &[u8],
        offset: u64,
        stored: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let bad = |d: &str| TarError::BadHeader {
            offset,
            name: Some(String::from_utf8_lossy(name).into_owned()),
            detail: d.into(),
        };
        let mut used = 0u64;
        let mut text: Vec<u8> = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        let mut want: Option<usize> = None;
        loop {
            if used + BLOCK > stored {
                return Err(bad("sparse map runs past the member data"));
            }
            let mut b = [0u8; 512];
            if !self.read_block(&mut b)? {
                return Err(TarError::Truncated("in a sparse map".into()));
            }
            used += BLOCK;
            text.extend_from_slice(&b);
            while let Some(nl) = text.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = text.drain(..=nl).collect();
                let v: u64 = std::str::from_utf8(&line[..line.len() - 1])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad number in the sparse map"))?;
                match want {
                    None => {
                        if v as usize > MAX_SPARSE {
                            return Err(bad("sparse map too large"));
                        }
                        want = Some(v as usize * 2);
                    }
                    Some(_) => numbers.push(v),
                }
                if want == Some(numbers.len()) {
                    let map = numbers.chunks(2).map(|c| (c[0], c[1])).collect();
                    return Ok((map, used));
                }
            }
            if text.len() > 4096 {
                return Err(bad("sparse map line too long"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::RawTar;

    fn entries(tar: &[u8]) -> Result<Vec<Entry>, TarError> {
        let mut r = TarReader::new(tar);
        let mut v = Vec::new();
        while let Some(e) = r.next_entry()? {
            v.push(e);
        }
        Ok(v)
    }

    /// Several `x` headers before one member: the last one wins whole (Go's archive/tar),
    /// its records are not merged with the earlier ones'.
    #[test]
    fn last_of_several_pax_headers_wins() {
        let tar = RawTar::new()
            .pax(&[("path", b"PAX1/PAX1/foo"), ("uid", b"7")])
            .pax(&[("path", b"PAX2/PAX2/foo"), ("mtime", b"1000")])
            .pax(&[("linkpath", b"PAX3")])
            .pax(&[("comment", b"only this one counts")])
            .symlink("bar", "tgt", 0o777)
            .end();
        let v = entries(&tar).unwrap();
        assert_eq!(v.len(), 1);
        let e = &v[0];
        assert_eq!(
            (e.name.as_slice(), e.link.as_slice()),
            (&b"bar"[..], &b"tgt"[..])
        );
        assert_eq!((e.uid, e.mtime.sec), (0, crate::testutil::MTIME as i64));
        // The last header's records do apply.
        let tar = RawTar::new()
            .pax(&[("path", b"first"), ("uid", b"7")])
            .pax(&[("path", b"second")])
            .file("short", b"x")
            .end();
        let e = &entries(&tar).unwrap()[0];
        assert_eq!((e.name.as_slice(), e.uid), (&b"second"[..], 0));
    }

    /// Several GNU `L` / `K` headers: the last of each kind wins.
    #[test]
    fn last_of_several_gnu_long_headers_wins() {
        let tar = RawTar::new()
            .gnu_long(b'L', "first/long/name")
            .gnu_long(b'K', "firstlink")
            .gnu_long(b'L', "second")
            .gnu_long(b'K', "lastlink")
            .symlink("short", "x", 0o777)
            .end();
        let e = &entries(&tar).unwrap()[0];
        assert_eq!(
            (e.name.as_slice(), e.link.as_slice()),
            (&b"second"[..], &b"lastlink"[..])
        );
    }

    /// A global header is checked and ignored: it renames and re-dates nothing, and the
    /// extended headers before it do not carry over it.
    #[test]
    fn pax_global_headers_are_ignored() {
        let tar = RawTar::new()
            .global(&[("path", b"global1"), ("mtime", b"12345"), ("uid", b"9")])
            .file("file1", b"one\n")
            .pax(&[("path", b"lost")])
            .global(&[("comment", b"between")])
            .file("file2", b"two\n")
            .end();
        let mut r = TarReader::new(&tar[..]);
        let mut names = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            assert_eq!((e.mtime.sec, e.uid), (crate::testutil::MTIME as i64, 0));
            names.push(e.display_name());
        }
        assert_eq!(names, ["file1", "file2"]);
        assert_eq!(r.global_headers_ignored(), 2);
        // A malformed global header is still an error.
        let tar = RawTar::new()
            .member("g", b'g', 0o644, "", b"99 x\n")
            .file("f", b"")
            .end();
        assert!(matches!(entries(&tar), Err(TarError::BadHeader { .. })));
    }

    /// The mode an unpack gives: 0777 for any symlink, the header's for the rest.
    #[test]
    fn symlink_perm_is_always_0777() {
        let tar = RawTar::new()
            .symlink("l0", "t", 0)
            .symlink("l644", "t", 0o644)
            .file("f", b"")
            .end();
        let v = entries(&tar).unwrap();
        assert_eq!((v[0].mode, v[0].perm()), (0, 0o777));
        assert_eq!((v[1].mode, v[1].perm()), (0o644, 0o777));
        assert_eq!(v[2].perm(), 0o644);
    }

    /// Malformed archives fail with errors that say the archive is at fault (bad input),
    /// never as failed I/O.
    #[test]
    fn malformed_archives_are_bad_input() {
        let read_all = |tar: &[u8]| -> Result<(), TarError> {
            let mut r = TarReader::new(tar);
            while let Some(_e) = r.next_entry()? {
                let mut b = [0u8; 4096];
                while r.read_data(&mut b)? > 0 {}
            }
            Ok(())
        };
        let cases = crate::testutil::malformed_archives();
        for (what, tar, needle) in cases {
            let e = read_all(&tar).expect_err(what);
            assert!(e.is_bad_input(), "{what}: {e}");
            assert!(e.to_string().contains(needle), "{what}: {e}");
            let io = e.into_io();
            assert!(is_bad_data(&io), "{what}: {io:?}");
        }
        // A failing reader is I/O, not bad input.
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
        }
        let e = TarReader::new(Failing).next_entry().unwrap_err();
        assert!(!e.is_bad_input());
        assert_eq!(e.into_io().raw_os_error(), Some(28));
    }
}
