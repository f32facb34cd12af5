//! The block device a TurboOCI layer is built on: committed lowers (a [`Stack`] without
//! upper) under a writable [`WarpLayer`]. Sectors the warp layer maps (fs-meta writes or
//! remote data) come from it; the rest from the lowers. Writes go to the warp layer.

use std::io;

use super::ro::clamp;
use super::stack::Stack;
use super::warp::WarpLayer;
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
