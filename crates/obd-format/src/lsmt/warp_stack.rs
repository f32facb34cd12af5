//! The block device a TurboOCI layer is built on: committed lowers (a [`Stack`] without
//! upper) under a writable [`WarpLayer`]. Sectors the warp layer maps (fs-meta writes or
//! remote data) come from it; the rest from the lowers. Writes go to the warp layer.

use std::io;

use super::ro::clamp;
use super::stack::Stack;
use super::warp::WarpLayer;
use super::SECTOR;
use crate::io::{ReadAt, WriteAt};

/// Lowers plus a writable warp upper.
pub struct WarpStack {
    pub lowers: Stack,
    pub upper: WarpLayer,
}

impl WarpStack {
    /// `lowers` must not have an upper of its own.
    pub fn new(lowers: Stack, upper: WarpLayer) -> Self {
        WarpStack { lowers, upper }
    }

    pub fn into_upper(self) -> WarpLayer {
        self.upper
    }
}

impl ReadAt for WarpStack {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = clamp(buf.len(), off, self.size());
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        // Upper mappings first; the gaps between them read from the lowers.
        let mut pieces = Vec::new();
        let mut cursor = b;
        for s in self.upper.index().lookup(b, e) {
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
            let hi = (pe * SECTOR).min(off + n as u64);
            if lo >= hi {
                continue;
            }
            let dst = &mut buf[(lo - off) as usize..(hi - off) as usize];
            if upper {
                self.upper.read_exact_at(dst, lo)?;
            } else {
                // Lowers may be smaller (or absent: size 0); beyond them reads as zeros.
                let have = self.lowers.size().saturating_sub(lo).min(dst.len() as u64) as usize;
                self.lowers.read_exact_at(&mut dst[..have], lo)?;
                dst[have..].fill(0);
            }
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.upper.virtual_size()
    }
}

impl WriteAt for WarpStack {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.upper.write_at(buf, off)
    }
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.upper.discard(off, len)
    }
    fn flush(&mut self) -> io::Result<()> {
        WriteAt::flush(&mut self.upper)
    }
}
