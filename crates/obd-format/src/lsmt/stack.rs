//! A virtual block device over a stack of committed layers (bottom → top) and an optional
//! writable upper layer, with upstream lookup semantics: the newest layer that maps a
//! sector wins, zeroed entries mask everything below, unmapped sectors read as zeros.
//!
//! The lowers' indexes are merged once at open (each merged entry tagged with its level,
//! 0 = top); reads consult the upper's in-memory index first and fill its gaps from the
//! merged index. Writes and discards go to the upper.

use std::io;
use std::sync::Arc;

use super::index;
use super::ro::{clamp, read_padded, read_through, LsmtRo};
use super::rw::RwLayer;
use super::segment::Segment;
use super::{MAX_LAYERS, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::{ReadAt, WriteAt};

/// Lowers plus an optional writable upper.
pub struct Stack {
    /// Lowers, top first.
    lowers: Vec<Arc<LsmtRo>>,
    merged: Vec<Segment>,
    upper: Option<RwLayer>,
    vsize: u64,
}

impl Stack {
    /// `lowers` are given bottom → top, as in the image config.
    pub fn new(lowers: Vec<Arc<LsmtRo>>, upper: Option<RwLayer>) -> Result<Self> {
        if lowers.len() > MAX_LAYERS {
            return Err(FormatError::Invalid(format!(
                "{} layers; a stack holds at most {MAX_LAYERS}",
                lowers.len()
            )));
        }
        let mut lowers = lowers;
        lowers.reverse();
        // Virtual size: the first non-zero one from the top.
        let lower_vsize = lowers
            .iter()
            .map(|l| l.virtual_size())
            .find(|&v| v != 0)
            .unwrap_or(0);
        let mut upper = upper;
        let mut vsize = lower_vsize;
        if let Some(u) = &mut upper {
            u.set_record_tag(lowers.len() as u8);
            if u.virtual_size() == 0 && lower_vsize != 0 {
                u.update_vsize(lower_vsize)?;
            }
            if u.virtual_size() != 0 {
                vsize = u.virtual_size();
            }
        }
        let idx: Vec<&[Segment]> = lowers.iter().map(|l| l.index()).collect();
        let merged = index::merge(&idx, 0, u64::MAX >> 10);
        Ok(Stack {
            lowers,
            merged,
            upper,
            vsize,
        })
    }

    /// The merged lowers' index (tags are levels, 0 = top lower).
    pub fn merged_lowers(&self) -> &[Segment] {
        &self.merged
    }
    pub fn upper(&self) -> Option<&RwLayer> {
        self.upper.as_ref()
    }
    pub fn upper_mut(&mut self) -> Option<&mut RwLayer> {
        self.upper.as_mut()
    }
    pub fn into_upper(self) -> Option<RwLayer> {
        self.upper
    }
    pub fn lowers_top_first(&self) -> &[Arc<LsmtRo>] {
        &self.lowers
    }

    /// The mappings of the whole stack within sectors `[b, e)`, in order: the upper's
    /// (tagged with the number of lowers) win, the merged lowers' (tagged with their level,
    /// 0 = top) fill the gaps.
    fn pieces(&self, b: u64, e: u64) -> Vec<Segment> {
        let n = self.lowers.len() as u8;
        let mut out = Vec::new();
        let mut cursor = b;
        if let Some(u) = &self.upper {
            for mut s in u.index().lookup(b, e) {
                out.extend(index::lookup(&self.merged, cursor, s.offset));
                cursor = s.end();
                s.tag = n;
                out.push(s);
            }
        }
        out.extend(index::lookup(&self.merged, cursor, e));
        out
    }

    /// Every mapping of the whole stack, sorted, for flattening: entries of the upper
    /// have tag = number of lowers, entries of lowers their level (0 = top).
    pub fn flattened(&self) -> Vec<Segment> {
        self.pieces(0, u64::MAX >> 10)
    }

    /// Reads stored data of a flattened entry (see [`Stack::flattened`]).
    fn read_lower(&self, p: &Segment, dst: &mut [u8], at: u64) -> io::Result<()> {
        let l = &self.lowers[p.tag as usize];
        // A warp lower's own entries tag their source; merged entries keep level tags, so
        // warp layers are read through the layer itself.
        if l.is_warp() {
            return l.read_exact_at(dst, at - p.moffset * SECTOR + p.offset * SECTOR);
        }
        read_padded(l.source_for(0).as_ref(), dst, at)
    }
}

impl Stack {
    /// Reads `buf.len()` bytes at `off` of a device whose writable upper (not part of this
    /// stack) maps the sectors in `upper_index`: those come from `read_upper`, the gaps from
    /// these lowers, and anything beyond the lowers (which may be smaller, or empty) reads
    /// as zeros.
    fn read_under(
        &self,
        upper_index: &super::index::Index0,
        buf: &mut [u8],
        off: u64,
        mut read_upper: impl FnMut(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = off + buf.len() as u64;
        let (b, e) = (off / SECTOR, end.div_ceil(SECTOR));
        let mut pieces = Vec::new();
        let mut cursor = b;
        for s in upper_index.lookup(b, e) {
            if s.offset > cursor {
                pieces.push((cursor, s.offset, false));
            }
            pieces.push((s.offset, s.end(), true));
            cursor = s.end();
        }
        if cursor < e {
            pieces.push((cursor, e, false));
        }
        for (pb, pe, upper) in pieces {
            let lo = (pb * SECTOR).max(off);
            let hi = (pe * SECTOR).min(end);
            if lo >= hi {
                continue;
            }
            let dst = &mut buf[(lo - off) as usize..(hi - off) as usize];
            if upper {
                read_upper(dst, lo)?;
            } else {
                let have = self.size().saturating_sub(lo).min(dst.len() as u64) as usize;
                self.read_exact_at(&mut dst[..have], lo)?;
                dst[have..].fill(0);
            }
        }
        Ok(())
    }
}

/// A writable upper layer kept apart from a [`Stack`] of committed lowers: it says which
/// sectors it maps, and reads back what it holds of them.
pub trait MappedUpper: ReadAt + WriteAt {
    fn index(&self) -> &index::Index0;
    fn virtual_size(&self) -> u64;
}

/// Committed lowers (a [`Stack`] without upper) under a writable upper of another kind
/// ([`super::WarpStack`], [`super::StreamStack`]): sectors the upper maps come from it, the
/// rest from the lowers. Writes go to the upper.
pub struct UpperStack<U> {
    pub lowers: Stack,
    pub upper: U,
}

impl<U: MappedUpper> UpperStack<U> {
    /// `lowers` must not have an upper of its own.
    pub fn new(lowers: Stack, upper: U) -> Self {
        UpperStack { lowers, upper }
    }

    pub fn into_upper(self) -> U {
        self.upper
    }
}

impl<U: MappedUpper> ReadAt for UpperStack<U> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = clamp(buf.len(), off, self.size());
        self.lowers
            .read_under(self.upper.index(), &mut buf[..n], off, |dst, at| {
                self.upper.read_exact_at(dst, at)
            })?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.upper.virtual_size()
    }
}

impl<U: MappedUpper> WriteAt for UpperStack<U> {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.upper.write_at(buf, off)
    }
    fn write_bulk_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.upper.write_bulk_at(buf, off)
    }
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.upper.discard(off, len)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.upper.flush()
    }
}

impl ReadAt for Stack {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = clamp(buf.len(), off, self.vsize);
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        let upper_tag = self.lowers.len() as u8;
        let upper_data = self.upper.as_ref().map(|u| u.data_view());
        read_through(
            buf,
            off,
            self.pieces(b, e).into_iter(),
            |p, dst, at| match &upper_data {
                Some(d) if p.tag == upper_tag => read_padded(d, dst, at),
                _ => self.read_lower(p, dst, at),
            },
        )?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.vsize
    }
}

impl WriteAt for Stack {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        match &mut self.upper {
            Some(u) => u.write_at(buf, off),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the stack has no writable upper layer",
            )),
        }
    }
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        match &mut self.upper {
            Some(u) => u.discard(off, len),
            None => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the stack has no writable upper layer",
            )),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.upper {
            Some(u) => u.flush(),
            None => Ok(()),
        }
    }
}
