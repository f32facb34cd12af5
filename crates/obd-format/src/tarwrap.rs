//! The tar wrapper of `overlaybd-commit -t`: a one-member tar around a layer blob.
//!
//! Written layout: a PAX extended header (`overlaybd.pax`, one record `size=<n>`), its
//! 512-byte record block, a ustar header (`overlaybd.commit`, size field 0), the payload at
//! **1536**, zero padding to 512 and two zero blocks. The PAX size makes payloads over
//! 8 GiB work. Readers accept this shape and any plain single-member ustar/GNU tar (payload
//! at 512), which is how Go's `archive/tar` wraps the baselayer.

use std::io::{self, Seek, SeekFrom, Write};

use crate::error::{FormatError, Result};
use crate::io::ReadAt;

const BLOCK: usize = 512;
/// Where the payload starts in the files we write.
pub const PAYLOAD_OFFSET: u64 = 1536;

fn octal(field: &mut [u8], v: u64, width: usize, term: &[u8]) {
    let s = format!("{v:>width$o}");
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()..s.len() + term.len()].copy_from_slice(term);
}

fn checksum(h: &[u8]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum()
}

fn finish_header(h: &mut [u8; BLOCK]) {
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let c = checksum(h);
    let s = format!("{c:>6o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = b' ';
    h[155] = 0;
}

/// One PAX record `"<len> key=value\n"` whose length counts itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

/// The three header blocks for a payload of `size` bytes.
pub fn header_blocks(size: u64) -> [u8; 3 * BLOCK] {
    let mut out = [0u8; 3 * BLOCK];
    let rec = pax_record("size", &size.to_string());
    let mut pax = [0u8; BLOCK];
    pax[..13].copy_from_slice(b"overlaybd.pax");
    octal(&mut pax[124..136], rec.len() as u64, 11, b" ");
    pax[156] = b'x';
    finish_header(&mut pax);
    let mut ustar = [0u8; BLOCK];
    ustar[..16].copy_from_slice(b"overlaybd.commit");
    octal(&mut ustar[100..108], 0o100644, 6, b" \0");
    octal(&mut ustar[108..116], 0, 6, b" \0");
    octal(&mut ustar[116..124], 0, 6, b" \0");
    octal(&mut ustar[124..136], 0, 11, b" ");
    octal(&mut ustar[136..148], 0, 11, b" ");
    ustar[156] = b'0';
    ustar[265..269].copy_from_slice(b"root");
    ustar[297..301].copy_from_slice(b"root");
    finish_header(&mut ustar);
    out[..BLOCK].copy_from_slice(&pax);
    out[BLOCK..BLOCK + rec.len()].copy_from_slice(rec.as_bytes());
    out[2 * BLOCK..].copy_from_slice(&ustar);
    out
}

/// Writes a payload wrapped in tar. Seeking is relative to the payload start, so a ZFile
/// writer's header overwrite lands at offset 1536 of the file, as upstream.
pub struct TarWrapWriter<W: Write + Seek> {
    inner: W,
    len: u64,
    /// Current position relative to the payload start (tracked here: asking a buffered
    /// writer for its position would flush it on every write).
    pos: u64,
}

impl<W: Write + Seek> TarWrapWriter<W> {
    /// Writes a placeholder header; `inner` must be positioned at 0.
    pub fn new(mut inner: W) -> Result<Self> {
        inner
            .write_all(&[0u8; PAYLOAD_OFFSET as usize])
            .map_err(|e| FormatError::io("writing the tar header placeholder", e))?;
        Ok(TarWrapWriter {
            inner,
            len: 0,
            pos: 0,
        })
    }

    /// Writes the final headers and the end-of-archive blocks.
    pub fn finish(mut self) -> Result<W> {
        let e = |e| FormatError::io("finishing the tar wrapper", e);
        let end = PAYLOAD_OFFSET + self.len;
        self.inner.seek(SeekFrom::Start(end)).map_err(e)?;
        let pad = (BLOCK as u64 - end % BLOCK as u64) % BLOCK as u64;
        self.inner
            .write_all(&vec![0u8; pad as usize + 2 * BLOCK])
            .map_err(e)?;
        self.inner.seek(SeekFrom::Start(0)).map_err(e)?;
        self.inner.write_all(&header_blocks(self.len)).map_err(e)?;
        self.inner.seek(SeekFrom::End(0)).map_err(e)?;
        self.inner.flush().map_err(e)?;
        Ok(self.inner)
    }
}

impl<W: Write + Seek> Write for TarWrapWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write + Seek> Seek for TarWrapWriter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(x) => Some(x),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let t = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the payload")
        })?;
        self.inner.seek(SeekFrom::Start(PAYLOAD_OFFSET + t))?;
        self.pos = t;
        Ok(t)
    }
}

/// Where the payload of a tar-wrapped file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarPayload {
    pub offset: u64,
    pub size: u64,
    /// The member name of the header that carries the payload.
    pub pax: bool,
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        // base-256
        let mut v: u64 = (f[0] & 0x3f) as u64;
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f.iter().copied().take_while(|&b| b != 0).collect();
    let t = std::str::from_utf8(&s).ok()?.trim();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

fn valid_header(h: &[u8]) -> bool {
    let magic_ok =
        &h[257..263] == b"ustar\0" && &h[263..265] == b"00" || &h[257..265] == b"ustar  \0";
    magic_ok && parse_octal(&h[148..156]).is_some_and(|c| c == checksum(h))
}

/// Detects a tar wrapper. Returns `Ok(None)` if block 0 is not a valid ustar header.
pub fn detect(src: &dyn ReadAt) -> Result<Option<TarPayload>> {
    if src.size() < BLOCK as u64 {
        return Ok(None);
    }
    let mut h = [0u8; BLOCK];
    src.read_exact_at(&mut h, 0)
        .map_err(|e| FormatError::io("reading a tar header", e))?;
    if !valid_header(&h) {
        return Ok(None);
    }
    let bad = |d: String| FormatError::corrupt("tar-wrapped layer", d);
    let (offset, size, pax) = if h[156] == b'x' {
        let rlen = parse_octal(&h[124..136])
            .ok_or_else(|| bad("PAX header size is not a number".into()))?;
        if rlen > BLOCK as u64 {
            return Err(bad(format!(
                "PAX records of {rlen} bytes; one 512-byte block is supported"
            )));
        }
        let mut r = vec![0u8; rlen as usize];
        src.read_exact_at(&mut r, BLOCK as u64)
            .map_err(|e| FormatError::io("reading PAX records", e))?;
        let mut h2 = [0u8; BLOCK];
        src.read_exact_at(&mut h2, 2 * BLOCK as u64)
            .map_err(|e| FormatError::io("reading a tar header", e))?;
        if !valid_header(&h2) {
            return Err(bad("no valid ustar header after the PAX header".into()));
        }
        let text = String::from_utf8_lossy(&r);
        let mut size =
            parse_octal(&h2[124..136]).ok_or_else(|| bad("size field is not a number".into()))?;
        for line in text.split('\n') {
            if let Some((_, kv)) = line.split_once(' ') {
                if let Some(v) = kv.strip_prefix("size=") {
                    size = v.parse().map_err(|_| bad(format!("PAX size {v:?}")))?;
                }
            }
        }
        (PAYLOAD_OFFSET, size, true)
    } else {
        let size =
            parse_octal(&h[124..136]).ok_or_else(|| bad("size field is not a number".into()))?;
        (BLOCK as u64, size, false)
    };
    if offset.checked_add(size).is_none_or(|e| e > src.size()) {
        return Err(bad(format!(
            "payload of {size} bytes at {offset} runs past the end of the file ({} bytes)",
            src.size()
        )));
    }
    Ok(Some(TarPayload { offset, size, pax }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_counts_itself() {
        assert_eq!(pax_record("size", "5"), "9 size=5\n");
        assert_eq!(pax_record("size", "12345678901"), "20 size=12345678901\n");
        let r = pax_record("size", "1234567");
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
    }

    #[test]
    fn round_trip_and_gnu_tar_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.tar");
        let f = std::fs::File::create(&p).unwrap();
        let mut w = TarWrapWriter::new(f).unwrap();
        w.write_all(b"hello world").unwrap();
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(b"H").unwrap();
        w.finish().unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() % 512, 0);
        assert_eq!(&data[1536..1547], b"Hello world");
        let tp = detect(&data.as_slice()).unwrap().unwrap();
        assert_eq!(
            tp,
            TarPayload {
                offset: 1536,
                size: 11,
                pax: true
            }
        );
        if let Ok(o) = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&p)
            .output()
        {
            let s = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(s.contains("overlaybd.commit") && s.contains(" 11 "), "{s}");
        }
    }
}
