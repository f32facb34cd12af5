//! Random access into a gzip blob through its `gzip.meta` index ([`GzIndexedFile`]).
//!
//! A read at `off` starts a raw inflater at the entry with the largest `de_pos <= off`: it
//! primes the inflater with the top `bits` bits of the byte before `en_pos`, presets the
//! entry's 32 KiB window as the dictionary, inflates from `en_pos` and discards output up
//! to `off`. The decoder left after a read is cached, so a following read at or after its
//! position (with no closer entry) continues from there instead of re-inflating from the
//! entry: sequential reads cost one pass over the data.

use std::io;
use std::sync::{Arc, Mutex};

use super::meta::GzIndex;
use super::zstream::{Inflater, RAW_WBITS};
use crate::error::{FormatError, Result};
use crate::io::ReadAt;

/// Compressed bytes read at a time.
const IN_CHUNK: usize = 64 << 10;

/// The uncompressed view of the first member of a gzip blob, `uncompress_file_size` bytes.
pub struct GzIndexedFile {
    gzip: Arc<dyn ReadAt>,
    meta: Arc<dyn ReadAt>,
    index: GzIndex,
    cache: Mutex<Option<Box<Cursor>>>,
}

/// An inflater positioned in the stream.
struct Cursor {
    z: Inflater,
    /// Uncompressed offset of the next byte it produces.
    pos: u64,
    /// Compressed offset of the next byte to read from the blob.
    in_off: u64,
    inbuf: Vec<u8>,
    in_pos: usize,
    in_end: usize,
}

impl GzIndexedFile {
    /// Parses `meta` and checks it was built for `gzip` (by size, as upstream).
    pub fn open(gzip: Arc<dyn ReadAt>, meta: Arc<dyn ReadAt>) -> Result<Self> {
        let index = GzIndex::parse(meta.as_ref())?;
        Self::with_index(gzip, meta, index)
    }

    /// Uses an index already parsed from `meta`.
    pub fn with_index(
        gzip: Arc<dyn ReadAt>,
        meta: Arc<dyn ReadAt>,
        index: GzIndex,
    ) -> Result<Self> {
        index.check_gzip_size(gzip.size())?;
        Ok(GzIndexedFile {
            gzip,
            meta,
            index,
            cache: Mutex::new(None),
        })
    }

    pub fn index(&self) -> &GzIndex {
        &self.index
    }

    fn start(&self, i: usize) -> Result<Cursor> {
        let e = self.index.entries[i];
        let mut z = Inflater::new(RAW_WBITS).map_err(zerr)?;
        if e.bits > 0 {
            let mut b = [0u8; 1];
            self.gzip
                .read_exact_at(&mut b, e.en_pos - 1)
                .map_err(|err| FormatError::io("reading the gzip blob", err))?;
            z.prime(e.bits, b[0] >> (8 - e.bits)).map_err(zerr)?;
        }
        let window = self.index.window(self.meta.as_ref(), i)?;
        z.set_dictionary(&window).map_err(zerr)?;
        Ok(Cursor {
            z,
            pos: e.de_pos,
            in_off: e.en_pos,
            inbuf: vec![0; IN_CHUNK],
            in_pos: 0,
            in_end: 0,
        })
    }
}

impl Cursor {
    /// Fills `dst` entirely (the caller keeps reads inside the indexed size).
    fn produce(&mut self, gzip: &dyn ReadAt, dst: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < dst.len() {
            if self.in_pos == self.in_end {
                let n = gzip.read_at(&mut self.inbuf, self.in_off)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "gzip blob ends at {} before uncompressed offset {}",
                            self.in_off,
                            self.pos + (dst.len() - done) as u64
                        ),
                    ));
                }
                self.in_off += n as u64;
                self.in_pos = 0;
                self.in_end = n;
            }
            let step = self
                .z
                .inflate(
                    &self.inbuf[self.in_pos..self.in_end],
                    &mut dst[done..],
                    false,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.in_pos += step.consumed;
            done += step.produced;
            self.pos += step.produced as u64;
            if step.end && done < dst.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "gzip member ends at uncompressed offset {}, inside the indexed size",
                        self.pos
                    ),
                ));
            }
        }
        Ok(())
    }

    fn skip(&mut self, gzip: &dyn ReadAt, mut n: u64) -> io::Result<()> {
        let mut scratch = vec![0u8; (64 << 10).min(n as usize)];
        while n > 0 {
            let k = (n as usize).min(scratch.len());
            self.produce(gzip, &mut scratch[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

impl ReadAt for GzIndexedFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let size = self.size();
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min((size - off).min(usize::MAX as u64) as usize);
        let best = self.index.find(off);
        let best_pos = self.index.entries[best].de_pos;
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut cur = match cached {
            Some(c) if c.pos <= off && c.pos >= best_pos => c,
            _ => Box::new(self.start(best).map_err(io::Error::from)?),
        };
        cur.skip(self.gzip.as_ref(), off - cur.pos)?;
        cur.produce(self.gzip.as_ref(), &mut buf[..n])?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cur);
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.index.header.uncompress_file_size
    }
}

fn zerr(e: super::zstream::ZError) -> FormatError {
    FormatError::corrupt("gzip stream", e.to_string())
}
