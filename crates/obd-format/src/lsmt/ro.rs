//! Reader of committed (read-only) LSMT layers, opened through the trailer.
//!
//! Layout: `header(4096) · data · index (16-byte entries) · trailer(4096)`. The same reader
//! opens sealed writable data files (`overlaybd.sealed`) and, with [`LsmtRo::open_warp`],
//! TurboOCI warp layers whose entries with tag 1 point into a separate target file.

use std::io;
use std::sync::Arc;

use super::header::{HeaderTrailer, HT_SPACE};
use super::index;
use super::segment::Segment;
use super::{MAX_RO_INDEX_SIZE, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::ReadAt;

/// A committed LSMT layer over some byte source.
pub struct LsmtRo {
    source: Arc<dyn ReadAt>,
    header: HeaderTrailer,
    trailer: HeaderTrailer,
    index: Vec<Segment>,
    /// Index entries on disk, padding included.
    raw_entries: u64,
    /// For warp layers: the target (tag 1) file.
    target: Option<Arc<dyn ReadAt>>,
}

impl LsmtRo {
    /// Opens a committed layer; fails with a precise error on any structural problem.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_inner(source, None)
    }

    /// A read-only view of data not (yet) committed: `index` (sorted, non-overlapping, tags
    /// ignored) maps into `source` at `moffset * 512`. Used to stack a finished writable
    /// layer under the next one while it is being committed.
    pub fn from_index(
        source: Arc<dyn ReadAt>,
        mut index: Vec<Segment>,
        virtual_size: u64,
    ) -> Result<Self> {
        for s in &mut index {
            s.tag = 0;
        }
        index::validate(
            &index,
            0,
            source.size().div_ceil(SECTOR),
            virtual_size.div_ceil(SECTOR),
        )?;
        let header = HeaderTrailer::new(
            super::header::FLAG_HEADER | super::header::FLAG_DATA,
            virtual_size,
        );
        let trailer = HeaderTrailer {
            flags: super::header::FLAG_DATA | super::header::FLAG_SEALED,
            ..header.clone()
        };
        Ok(LsmtRo {
            source,
            header,
            raw_entries: index.len() as u64,
            trailer,
            index,
            target: None,
        })
    }

    /// Opens a TurboOCI warp layer: tags are kept (normalised so the smallest is 0) and
    /// entries with tag 1 read from `target` at `moffset * 512`.
    pub fn open_warp(source: Arc<dyn ReadAt>, target: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_inner(source, Some(target))
    }

    fn open_inner(source: Arc<dyn ReadAt>, target: Option<Arc<dyn ReadAt>>) -> Result<Self> {
        let size = source.size();
        if size < 2 * HT_SPACE {
            return Err(FormatError::magic(
                "LSMT layer",
                format!("{size} bytes is too small for a header and a trailer"),
            ));
        }
        let mut hb = vec![0u8; HT_SPACE as usize];
        source
            .read_exact_at(&mut hb, 0)
            .map_err(|e| FormatError::io("reading the LSMT header", e))?;
        let header = HeaderTrailer::decode(&hb)?;
        if !header.is_header() || !header.is_data_file() {
            return Err(FormatError::corrupt(
                "LSMT header",
                format!(
                    "flags {:#x} do not describe a data-file header",
                    header.flags
                ),
            ));
        }
        let toff = size - HT_SPACE;
        source
            .read_exact_at(&mut hb, toff)
            .map_err(|e| FormatError::io("reading the LSMT trailer", e))?;
        let trailer = HeaderTrailer::decode(&hb).map_err(|_| {
            FormatError::magic(
                "committed LSMT layer",
                "no trailer in the last 4096 bytes (a writable layer, or truncated?)",
            )
        })?;
        if trailer.is_header() || !trailer.is_data_file() || !trailer.is_sealed() {
            return Err(FormatError::corrupt(
                "LSMT trailer",
                format!(
                    "flags {:#x} do not describe a sealed data-file trailer",
                    trailer.flags
                ),
            ));
        }
        if trailer.index_size > MAX_RO_INDEX_SIZE {
            return Err(FormatError::corrupt(
                "LSMT trailer",
                format!(
                    "index of {} entries exceeds the limit of {MAX_RO_INDEX_SIZE}",
                    trailer.index_size
                ),
            ));
        }
        let ilen = trailer.index_size * 16;
        if trailer.index_offset < HT_SPACE
            || trailer.index_offset > toff
            || ilen > toff - trailer.index_offset
        {
            return Err(FormatError::corrupt(
                "LSMT trailer",
                format!(
                    "index [{}, +{ilen}) does not fit between the header and the trailer at {toff}",
                    trailer.index_offset
                ),
            ));
        }
        let mut ib = vec![0u8; ilen as usize];
        source
            .read_exact_at(&mut ib, trailer.index_offset)
            .map_err(|e| FormatError::io("reading the LSMT index", e))?;
        let mut idx: Vec<Segment> = Segment::decode_all(&ib)
            .into_iter()
            .filter(|s| !s.is_invalid())
            .collect();
        let vsize_sectors = trailer.virtual_size.div_ceil(SECTOR);
        match &target {
            None => {
                for s in &mut idx {
                    s.tag = 0;
                }
                index::validate(
                    &idx,
                    HT_SPACE / SECTOR,
                    trailer.index_offset / SECTOR,
                    vsize_sectors,
                )?;
            }
            Some(_) => {
                let min = idx.iter().map(|s| s.tag).min().unwrap_or(0);
                for s in &mut idx {
                    s.tag -= min;
                    if s.tag > 1 {
                        return Err(FormatError::corrupt(
                            "warp LSMT index",
                            format!("entry {s:?} has tag > 1"),
                        ));
                    }
                }
                index::validate(&idx, 0, u64::MAX, vsize_sectors)?;
            }
        }
        Ok(LsmtRo {
            source,
            header,
            raw_entries: trailer.index_size,
            trailer,
            index: idx,
            target,
        })
    }

    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }
    pub fn trailer(&self) -> &HeaderTrailer {
        &self.trailer
    }
    /// Valid entries, sorted by offset (padding removed).
    pub fn index(&self) -> &[Segment] {
        &self.index
    }
    /// Entries as stored, padding included.
    pub fn raw_index_entries(&self) -> u64 {
        self.raw_entries
    }
    pub fn virtual_size(&self) -> u64 {
        self.trailer.virtual_size
    }
    /// The file that data entries with `tag` read from.
    pub fn source_for(&self, tag: u8) -> &Arc<dyn ReadAt> {
        match (&self.target, tag) {
            (Some(t), 1) => t,
            _ => &self.source,
        }
    }
    pub fn is_warp(&self) -> bool {
        self.target.is_some()
    }
}

/// Fills `buf` (virtual bytes at `off`) from `pieces` (sector mappings covering parts of
/// the range, in order); unmapped and zeroed parts become zeros. `read` copies stored bytes
/// for a data piece: `(piece, dst, byte offset into the stored data)`.
pub(crate) fn read_through(
    buf: &mut [u8],
    off: u64,
    pieces: impl Iterator<Item = Segment>,
    mut read: impl FnMut(&Segment, &mut [u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let end = off + buf.len() as u64;
    let mut cursor = off;
    for p in pieces {
        let pb = (p.offset * SECTOR).max(off);
        let pe = (p.end() * SECTOR).min(end);
        if pb >= pe {
            continue;
        }
        if pb > cursor {
            buf[(cursor - off) as usize..(pb - off) as usize].fill(0);
        }
        let dst = &mut buf[(pb - off) as usize..(pe - off) as usize];
        if p.zeroed {
            dst.fill(0);
        } else {
            read(&p, dst, p.moffset * SECTOR + (pb - p.offset * SECTOR))?;
        }
        cursor = pe;
    }
    if cursor < end {
        buf[(cursor - off) as usize..].fill(0);
    }
    Ok(())
}

/// Reads stored bytes, padding a short read at the end of the file with zeros (upstream
/// does the same).
pub(crate) fn read_padded(src: &dyn ReadAt, dst: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let n = src.read_at(&mut dst[done..], at + done as u64)?;
        if n == 0 {
            dst[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// Clamps a read of `len` bytes at `off` to a device of `size` bytes.
pub(crate) fn clamp(len: usize, off: u64, size: u64) -> usize {
    if off >= size {
        0
    } else {
        len.min((size - off).min(usize::MAX as u64) as usize)
    }
}

impl ReadAt for LsmtRo {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = clamp(buf.len(), off, self.virtual_size());
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        read_through(buf, off, index::lookup(&self.index, b, e), |p, dst, at| {
            read_padded(self.source_for(p.tag).as_ref(), dst, at)
        })?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.virtual_size()
    }
}
