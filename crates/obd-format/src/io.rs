//! Positional read access, the one abstraction every layer reader is built on.
//!
//! A [`ReadAt`] is an immutable random-access byte source of known size: a file, a byte
//! slice in memory, a window into another source (the payload of a tar wrapper), a ZFile
//! (decompressed view) or an LSMT layer (virtual block device view).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Random-access reads from an immutable byte source.
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `off`. Returns fewer only at the end of the source.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Size of the source in bytes.
    fn size(&self) -> u64;

    /// Reads exactly `buf.len()` bytes at `off`, failing with `UnexpectedEof` if the source
    /// ends first.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], off + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {off} past end ({})",
                        buf.len(),
                        self.size()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }
}

/// A regular file with its size taken once at open.
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    pub fn new(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(FileSource { file, size })
    }
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::new(File::open(path)?)
    }
}

impl ReadAt for FileSource {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.size {
            return Ok(0);
        }
        let want = buf
            .len()
            .min((self.size - off).min(usize::MAX as u64) as usize);
        let mut done = 0;
        while done < want {
            match self.file.read_at(&mut buf[done..want], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, off)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for &[u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.len() as u64 {
            return Ok(0);
        }
        let src = &self[off as usize..];
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_at(buf, off)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        (**self).read_at(buf, off)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

/// A window `[base, base+len)` of another source.
pub struct Slice<R> {
    inner: R,
    base: u64,
    len: u64,
}

impl<R: ReadAt> Slice<R> {
    /// Fails if the window does not lie inside `inner`.
    pub fn new(inner: R, base: u64, len: u64) -> io::Result<Self> {
        match base.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Slice { inner, base, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "window [{base}, +{len}) is outside a source of {} bytes",
                    inner.size()
                ),
            )),
        }
    }
}

impl<R: ReadAt> ReadAt for Slice<R> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min((self.len - off).min(usize::MAX as u64) as usize);
        self.inner.read_at(&mut buf[..n], self.base + off)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

/// Positional writes into a virtual block device.
pub trait WriteAt {
    /// Writes all of `buf` at `off`.
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Writes file contents that the filesystem never reads back (regular-file data). A
    /// device may stream such bytes straight to its output and keep no copy
    /// ([`crate::lsmt::stream::StreamLayer`]); reading them back is then not possible. The
    /// default is [`WriteAt::write_at`].
    fn write_bulk_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_at(buf, off)
    }
    /// Declares `[off, off+len)` as zeros (a discard). The default writes zeros.
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 16];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], off + done)?;
            done += n as u64;
        }
        Ok(())
    }
    /// Makes previous writes durable enough for readers of the underlying files.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read-write block device: what filesystem engines write through.
pub trait BlockDevice: ReadAt + WriteAt {}
impl<T: ReadAt + WriteAt> BlockDevice for T {}

/// Refuses a write of `len` bytes at `off` that does not fit a device of `size` bytes.
fn check_write(len: usize, off: u64, size: u64) -> io::Result<()> {
    if off.checked_add(len as u64).is_none_or(|e| e > size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("write of {len} bytes at {off} past device end {size}"),
        ));
    }
    Ok(())
}

/// Block size of [`MemDevice`].
const MEM_BLOCK: u64 = 4096;

/// A sparse in-memory block device of `size` bytes, kept in whole 4 KiB blocks, that reads
/// zeros where nothing was written: for tests and fuzzing of what writes through a
/// [`BlockDevice`].
#[derive(Clone)]
pub struct MemDevice {
    size: u64,
    blocks: HashMap<u64, Vec<u8>>,
}

impl MemDevice {
    /// An all-zero device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemDevice {
            size,
            blocks: HashMap::new(),
        }
    }

    /// The written blocks, sorted by block number.
    pub fn blocks(&self) -> Vec<(u64, &[u8])> {
        let mut v: Vec<(u64, &[u8])> = self.blocks.iter().map(|(k, b)| (*k, &b[..])).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

impl ReadAt for MemDevice {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.size {
            return Ok(0);
        }
        let n = buf.len().min((self.size - off) as usize);
        let mut done = 0;
        while done < n {
            let p = off + done as u64;
            let i = (p % MEM_BLOCK) as usize;
            let take = (MEM_BLOCK as usize - i).min(n - done);
            match self.blocks.get(&(p / MEM_BLOCK)) {
                Some(b) => buf[done..done + take].copy_from_slice(&b[i..i + take]),
                None => buf[done..done + take].fill(0),
            }
            done += take;
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

impl WriteAt for MemDevice {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_write(buf.len(), off, self.size)?;
        let mut done = 0;
        while done < buf.len() {
            let p = off + done as u64;
            let i = (p % MEM_BLOCK) as usize;
            let take = (MEM_BLOCK as usize - i).min(buf.len() - done);
            let b = self
                .blocks
                .entry(p / MEM_BLOCK)
                .or_insert_with(|| vec![0; MEM_BLOCK as usize]);
            b[i..i + take].copy_from_slice(&buf[done..done + take]);
            done += take;
        }
        Ok(())
    }
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        // Whole blocks are dropped, partial ones zeroed: cheap for huge discards.
        let end = off.saturating_add(len).min(self.size);
        let mut p = off;
        while p < end {
            let i = p % MEM_BLOCK;
            let take = (MEM_BLOCK - i).min(end - p);
            if take == MEM_BLOCK {
                self.blocks.remove(&(p / MEM_BLOCK));
            } else if let Some(b) = self.blocks.get_mut(&(p / MEM_BLOCK)) {
                b[i as usize..(i + take) as usize].fill(0);
            }
            p += take;
        }
        Ok(())
    }
}

/// A raw image in a (sparse) regular file of a fixed size. Useful as a plain block device
/// for tests and for `--raw` style images.
pub struct RawImage {
    file: File,
    size: u64,
}

impl RawImage {
    /// Creates (or truncates) `path` as a sparse file of `size` bytes.
    pub fn create(path: impl AsRef<std::path::Path>, size: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(RawImage { file, size })
    }
    /// Opens an existing image read-write; its size is the file size.
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(RawImage { file, size })
    }
}

impl ReadAt for RawImage {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min((self.size - off).min(usize::MAX as u64) as usize);
        self.file.read_exact_at(&mut buf[..n], off)?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

impl WriteAt for RawImage {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_write(buf.len(), off, self.size)?;
        self.file.write_all_at(buf, off)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
