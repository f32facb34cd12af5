//! The `gzip.meta` file: its 333-byte header, the 29-byte entries and the window blobs, with
//! strict, checked parsing (every size and offset is validated before anything is allocated
//! or read, so hostile input ends in a typed [`FormatError`], never a panic).
//!
//! Layout: `header (333 bytes) · window blobs, back to back · entry array (zlib-compressed
//! unless dict_compress_algo is 0)`. All integers little-endian.
//!
//! | off | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `ddgzidx\0` |
//! | 8 | 1 | major_version = 1 |
//! | 9 | 1 | minor_version = 0 |
//! | 10 | 1 | dict_compress_algo (0 none, 1 zlib) |
//! | 11 | 1 | dict_compress_level (i8) |
//! | 12 | 1 | flag = 0 |
//! | 13 | 4 | span (i32) |
//! | 17 | 4 | window = 32768 (i32) |
//! | 21 | 4 | index_size = 29 (i32) |
//! | 25 | 8 | index_num (i64) |
//! | 33 | 8 | gzip_file_size (i64) |
//! | 41 | 8 | index_file_size (i64) |
//! | 49 | 8 | uncompress_file_size (i64) |
//! | 57 | 256 | reserved, zero |
//! | 313 | 8 | index_start (i64) |
//! | 321 | 8 | index_area_len (i64) |
//! | 329 | 4 | crc: raw CRC32C (seed 0) of bytes 0..329 |
//!
//! Entry: `de_pos i64 · en_pos i64 · win_pos i64 · bits u8 · win_len u32`.

use std::io::Read;

use crate::crc::crc32c_raw;
use crate::error::{FormatError, Result};
use crate::io::ReadAt;

/// `magic` field.
pub const MAGIC: [u8; 8] = *b"ddgzidx\0";
/// `sizeof(IndexFileHeader)`.
pub const HEADER_SIZE: u64 = 333;
/// `sizeof(IndexEntry)`.
pub const ENTRY_SIZE: usize = 29;
/// History kept per entry.
pub const WINDOW_SIZE: usize = 32768;
/// Span the upstream tools use (1 MiB).
pub const DEFAULT_SPAN: u32 = 1 << 20;
/// Smallest span upstream accepts (64 KiB, the largest uncompressed deflate block it assumes).
pub const MIN_SPAN: u32 = 65536;
/// Upstream's `dict_compress_level`.
pub const DEFAULT_LEVEL: i8 = 6;
/// Largest compressed window blob accepted (a zlib stream of 32 KiB of incompressible data
/// is a little over 32 KiB).
const MAX_WIN_LEN: u32 = 2 * WINDOW_SIZE as u32;

const WHAT: &str = "gzip index (gzip.meta)";

/// How windows and the entry array are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DictCompression {
    /// Stored as is (`dict_compress_algo` 0).
    None,
    /// A zlib stream at this level (`dict_compress_algo` 1).
    Zlib(i8),
}

impl DictCompression {
    fn algo(self) -> u8 {
        match self {
            DictCompression::None => 0,
            DictCompression::Zlib(_) => 1,
        }
    }
    fn level(self) -> i8 {
        match self {
            DictCompression::None => 0,
            DictCompression::Zlib(l) => l,
        }
    }
}

/// The decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GzIndexHeader {
    pub major_version: u8,
    pub minor_version: u8,
    pub dict: DictCompression,
    pub flag: u8,
    pub span: u32,
    pub window: u32,
    pub index_num: u64,
    pub gzip_file_size: u64,
    pub index_file_size: u64,
    pub uncompress_file_size: u64,
    pub index_start: u64,
    pub index_area_len: u64,
}

impl GzIndexHeader {
    /// Encodes into the 333-byte packed header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_SIZE as usize] {
        let mut b = [0u8; HEADER_SIZE as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8] = self.major_version;
        b[9] = self.minor_version;
        b[10] = self.dict.algo();
        b[11] = self.dict.level() as u8;
        b[12] = self.flag;
        b[13..17].copy_from_slice(&(self.span as i32).to_le_bytes());
        b[17..21].copy_from_slice(&(self.window as i32).to_le_bytes());
        b[21..25].copy_from_slice(&(ENTRY_SIZE as i32).to_le_bytes());
        b[25..33].copy_from_slice(&(self.index_num as i64).to_le_bytes());
        b[33..41].copy_from_slice(&(self.gzip_file_size as i64).to_le_bytes());
        b[41..49].copy_from_slice(&(self.index_file_size as i64).to_le_bytes());
        b[49..57].copy_from_slice(&(self.uncompress_file_size as i64).to_le_bytes());
        b[313..321].copy_from_slice(&(self.index_start as i64).to_le_bytes());
        b[321..329].copy_from_slice(&(self.index_area_len as i64).to_le_bytes());
        let crc = crc32c_raw(0, &b[..329]);
        b[329..333].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header against the size of the file it came from.
    pub fn decode(b: &[u8], file_size: u64) -> Result<Self> {
        if b.len() < HEADER_SIZE as usize {
            return Err(FormatError::magic(
                WHAT,
                format!("{} bytes is shorter than the 333-byte header", b.len()),
            ));
        }
        if b[0..7] != MAGIC[0..7] {
            return Err(FormatError::magic(WHAT, "magic is not \"ddgzidx\""));
        }
        let stored = u32::from_le_bytes(b[329..333].try_into().unwrap());
        let computed = crc32c_raw(0, &b[..329]);
        if stored != computed {
            return Err(FormatError::Checksum {
                what: "gzip index header".into(),
                stored,
                computed,
            });
        }
        let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let i64_at = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let bad = |d: String| FormatError::corrupt(WHAT, d);
        let nonneg = |name: &str, v: i64| -> Result<u64> {
            u64::try_from(v).map_err(|_| bad(format!("{name} is negative ({v})")))
        };
        if b[8] != 1 {
            return Err(bad(format!("major version {} (only 1 is supported)", b[8])));
        }
        let dict = match b[10] {
            0 => DictCompression::None,
            1 => DictCompression::Zlib(b[11] as i8),
            a => return Err(bad(format!("unknown dict_compress_algo {a}"))),
        };
        let index_size = i32_at(21);
        if index_size != ENTRY_SIZE as i32 {
            return Err(bad(format!(
                "index_size {index_size}, expected {ENTRY_SIZE}"
            )));
        }
        let window = i32_at(17);
        if window != WINDOW_SIZE as i32 {
            return Err(bad(format!("window {window}, expected {WINDOW_SIZE}")));
        }
        let span = i32_at(13);
        if span <= 0 {
            return Err(bad(format!("span {span}")));
        }
        let h = GzIndexHeader {
            major_version: b[8],
            minor_version: b[9],
            dict,
            flag: b[12],
            span: span as u32,
            window: window as u32,
            index_num: nonneg("index_num", i64_at(25))?,
            gzip_file_size: nonneg("gzip_file_size", i64_at(33))?,
            index_file_size: nonneg("index_file_size", i64_at(41))?,
            uncompress_file_size: nonneg("uncompress_file_size", i64_at(49))?,
            index_start: nonneg("index_start", i64_at(313))?,
            index_area_len: nonneg("index_area_len", i64_at(321))?,
        };
        if h.index_file_size != file_size {
            return Err(bad(format!(
                "index_file_size {} but the file has {file_size} bytes",
                h.index_file_size
            )));
        }
        if h.index_start < HEADER_SIZE
            || h.index_start.checked_add(h.index_area_len) != Some(file_size)
        {
            return Err(bad(format!(
                "entry area [{}, +{}) does not end the {file_size}-byte file",
                h.index_start, h.index_area_len
            )));
        }
        // Each entry owns a window blob of at least one byte between the header and the
        // entry area, which bounds the count before anything is allocated.
        if h.index_num == 0 || h.index_num > h.index_start - HEADER_SIZE {
            return Err(bad(format!(
                "index_num {} is impossible with {} bytes of windows",
                h.index_num,
                h.index_start - HEADER_SIZE
            )));
        }
        if h.dict == DictCompression::None
            && Some(h.index_area_len) != h.index_num.checked_mul(ENTRY_SIZE as u64)
        {
            return Err(bad(format!(
                "uncompressed entry area of {} bytes for {} entries",
                h.index_area_len, h.index_num
            )));
        }
        Ok(h)
    }
}

/// One access point: decompression can restart at compressed byte `en_pos` (preceded by the
/// top `bits` bits of byte `en_pos - 1`) with the window stored at `win_pos`, producing
/// uncompressed bytes from `de_pos` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GzIndexEntry {
    pub de_pos: u64,
    pub en_pos: u64,
    pub win_pos: u64,
    pub bits: u8,
    pub win_len: u32,
}

impl GzIndexEntry {
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..8].copy_from_slice(&(self.de_pos as i64).to_le_bytes());
        b[8..16].copy_from_slice(&(self.en_pos as i64).to_le_bytes());
        b[16..24].copy_from_slice(&(self.win_pos as i64).to_le_bytes());
        b[24] = self.bits;
        b[25..29].copy_from_slice(&self.win_len.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> (i64, i64, i64, u8, u32) {
        let i64_at = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        (
            i64_at(0),
            i64_at(8),
            i64_at(16),
            b[24],
            u32::from_le_bytes(b[25..29].try_into().unwrap()),
        )
    }
}

/// A parsed `gzip.meta`: header and entries (the windows stay in the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GzIndex {
    pub header: GzIndexHeader,
    pub entries: Vec<GzIndexEntry>,
}

impl GzIndex {
    /// Parses and validates a `gzip.meta` read through `meta`.
    ///
    /// Checks, besides the header's own checks: the entry area decompresses to exactly
    /// `index_num * 29` bytes; entries are sorted (strictly increasing `de_pos`, increasing
    /// `en_pos`), the first at `de_pos` 0; `de_pos` lies inside the uncompressed size and
    /// `en_pos` inside the gzip file; `bits <= 7` (and `en_pos >= 1` when bits are used);
    /// window blobs lie in order, without overlap, between the header and the entry area
    /// (exactly 32 KiB each when stored uncompressed).
    pub fn parse(meta: &dyn ReadAt) -> Result<Self> {
        let size = meta.size();
        let mut hb = [0u8; HEADER_SIZE as usize];
        if size < HEADER_SIZE {
            return Err(FormatError::magic(
                WHAT,
                format!("{size} bytes is shorter than the 333-byte header"),
            ));
        }
        meta.read_exact_at(&mut hb, 0)
            .map_err(|e| FormatError::io("reading the gzip index header", e))?;
        let header = GzIndexHeader::decode(&hb, size)?;
        let bad = |d: String| FormatError::corrupt(WHAT, d);
        // `decode` bounded index_num by the file size, so these cannot overflow.
        let want = header.index_num as usize * ENTRY_SIZE;
        let mut area = vec![0u8; header.index_area_len as usize];
        meta.read_exact_at(&mut area, header.index_start)
            .map_err(|e| FormatError::io("reading the gzip index entries", e))?;
        let raw = match header.dict {
            DictCompression::None => area,
            DictCompression::Zlib(_) => {
                let mut out = Vec::with_capacity(want);
                flate2::read::ZlibDecoder::new(area.as_slice())
                    .take(want as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| bad(format!("entry area does not decompress: {e}")))?;
                if out.len() != want {
                    return Err(bad(format!(
                        "entry area decompresses to {} bytes, expected {want}",
                        out.len()
                    )));
                }
                out
            }
        };
        let mut entries = Vec::with_capacity(header.index_num as usize);
        let mut win_end = HEADER_SIZE;
        for (i, c) in raw.chunks_exact(ENTRY_SIZE).enumerate() {
            let (de, en, wp, bits, wl) = GzIndexEntry::decode(c);
            let ebad = |d: &str| bad(format!("entry {i}: {d}"));
            let (Ok(de_pos), Ok(en_pos), Ok(win_pos)) =
                (u64::try_from(de), u64::try_from(en), u64::try_from(wp))
            else {
                return Err(ebad("negative position"));
            };
            if bits > 7 || (bits > 0 && en_pos == 0) {
                return Err(ebad(&format!(
                    "{bits} bits before compressed byte {en_pos}"
                )));
            }
            if en_pos > header.gzip_file_size {
                return Err(ebad(&format!(
                    "en_pos {en_pos} is past the gzip file ({} bytes)",
                    header.gzip_file_size
                )));
            }
            if de_pos > header.uncompress_file_size {
                return Err(ebad(&format!(
                    "de_pos {de_pos} is past the uncompressed size {}",
                    header.uncompress_file_size
                )));
            }
            if let Some(p) = entries.last() {
                let p: &GzIndexEntry = p;
                if de_pos <= p.de_pos || en_pos < p.en_pos {
                    return Err(ebad("entries are not sorted"));
                }
            } else if de_pos != 0 {
                return Err(ebad("the first entry does not start at offset 0"));
            }
            let wl_ok = match header.dict {
                DictCompression::None => wl as usize == WINDOW_SIZE,
                DictCompression::Zlib(_) => wl > 0 && wl <= MAX_WIN_LEN,
            };
            if !wl_ok
                || win_pos < win_end
                || win_pos
                    .checked_add(wl as u64)
                    .is_none_or(|e| e > header.index_start)
            {
                return Err(ebad(&format!(
                    "window [{win_pos}, +{wl}) is not in order between the header and the entries"
                )));
            }
            win_end = win_pos + wl as u64;
            entries.push(GzIndexEntry {
                de_pos,
                en_pos,
                win_pos,
                bits,
                win_len: wl,
            });
        }
        Ok(GzIndex { header, entries })
    }

    /// Parses an in-memory `gzip.meta`.
    pub fn parse_bytes(meta: &[u8]) -> Result<Self> {
        Self::parse(&meta)
    }

    /// Fails unless the index was built for a gzip file of `size` bytes (upstream's check).
    pub fn check_gzip_size(&self, size: u64) -> Result<()> {
        if self.header.gzip_file_size != size {
            return Err(FormatError::corrupt(
                WHAT,
                format!(
                    "built for a gzip file of {} bytes, this one has {size}",
                    self.header.gzip_file_size
                ),
            ));
        }
        Ok(())
    }

    /// Size of the indexed uncompressed data.
    pub fn uncompressed_size(&self) -> u64 {
        self.header.uncompress_file_size
    }

    /// Index of the entry with the largest `de_pos <= off`.
    pub fn find(&self, off: u64) -> usize {
        self.entries
            .partition_point(|e| e.de_pos <= off)
            .saturating_sub(1)
    }

    /// The 32 KiB window of entry `i`, read from `meta` and decompressed.
    pub fn window(&self, meta: &dyn ReadAt, i: usize) -> Result<Vec<u8>> {
        let e = self.entries[i];
        let mut blob = vec![0u8; e.win_len as usize];
        meta.read_exact_at(&mut blob, e.win_pos)
            .map_err(|err| FormatError::io("reading a gzip index window", err))?;
        match self.header.dict {
            DictCompression::None => Ok(blob),
            DictCompression::Zlib(_) => {
                let mut out = Vec::with_capacity(WINDOW_SIZE);
                flate2::read::ZlibDecoder::new(blob.as_slice())
                    .take(WINDOW_SIZE as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|err| {
                        FormatError::corrupt(WHAT, format!("window {i} does not decompress: {err}"))
                    })?;
                if out.len() != WINDOW_SIZE {
                    return Err(FormatError::corrupt(
                        WHAT,
                        format!("window {i} holds {} bytes, not {WINDOW_SIZE}", out.len()),
                    ));
                }
                Ok(out)
            }
        }
    }
}
