//! The TurboOCI **warp** writable layer (upstream `LSMTWarpFile`) and its commit.
//!
//! Two files, as `overlaybd-create --turboOCI` makes them:
//! * the **fs-meta** file: a raw sparse image of `virtual_size` bytes with **no header**;
//!   filesystem writes land at their LBA and map with `moffset = LBA / 512`, tag 0;
//! * the **index** file: an RW index (header flags 0x01, `index_offset` 4096) followed by
//!   16-byte records in write order, tags included (0 = fs-meta, 1 = remote).
//!
//! [`WarpLayer::remote_data`] maps a virtual range onto a range of the **target** file (the
//! original uncompressed layer tar): records with tag 1 and `moffset = roffset / 512`, at
//! most 16383 sectors each. Later writes and mappings override the overlapped parts of
//! earlier ones (the writable index's merge rule), whichever kind they are.
//!
//! The commit ([`super::commit_warp`]) gives `header(0x07) · fs-meta data · index (tags kept,
//! not padded) · trailer(0x06)`, which [`super::LsmtRo::open_warp`] reads over the target.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::commit::{CommitOptions, CommitStats};
use super::header::{HeaderTrailer, FLAG_HEADER, HT_SPACE};
use super::index::Index0;
use super::segment::Segment;
use super::{MAX_IO_SECTORS, MAX_LENGTH, MAX_RW_INDEX_SIZE, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::{ReadAt, WriteAt};
use crate::uuid::Uuid;

/// Tag of entries whose data is in the layer itself (fs-meta).
pub const TAG_FSMETA: u8 = 0;
/// Tag of entries whose data is in the target file.
pub const TAG_REMOTE: u8 = 1;

/// A writable warp layer: fs-meta image + index file, and optionally the target file (needed
/// only to read remote ranges back).
pub struct WarpLayer {
    fsmeta: File,
    index: BufWriter<File>,
    index0: Index0,
    header: HeaderTrailer,
    target: Option<Arc<dyn ReadAt>>,
}

fn open_file(path: &Path, create: bool) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        FormatError::io(
            format!(
                "{} {}",
                if create { "creating" } else { "opening" },
                path.display()
            ),
            e,
        )
    })
}

impl WarpLayer {
    /// Creates the two files (neither may exist): the fs-meta image sized to `virtual_size`
    /// and the index file with its header (flags 0x01, `index_offset` 4096).
    pub fn create(
        fsmeta_path: &Path,
        index_path: &Path,
        virtual_size: u64,
        uuid: Uuid,
        parent_uuid: Uuid,
    ) -> Result<Self> {
        if !virtual_size.is_multiple_of(SECTOR) {
            return Err(FormatError::Invalid(format!(
                "virtual size {virtual_size} is not a multiple of 512"
            )));
        }
        let fsmeta = open_file(fsmeta_path, true)?;
        fsmeta
            .set_len(virtual_size)
            .map_err(|e| FormatError::io("sizing the fs-meta image", e))?;
        let index = open_file(index_path, true)?;
        let mut h = HeaderTrailer::new(FLAG_HEADER, virtual_size);
        h.index_offset = HT_SPACE;
        h.uuid = uuid;
        h.parent_uuid = parent_uuid;
        index
            .write_all_at(&h.encode()?, 0)
            .map_err(|e| FormatError::io("writing the warp index header", e))?;
        let mut w = BufWriter::with_capacity(1 << 16, index);
        w.seek(io::SeekFrom::Start(HT_SPACE))
            .map_err(|e| FormatError::io("warp index file", e))?;
        Ok(WarpLayer {
            fsmeta,
            index: w,
            index0: Index0::new(),
            header: h,
            target: None,
        })
    }

    /// Opens an existing warp layer, replaying its index records in order (tags kept).
    pub fn open(fsmeta_path: &Path, index_path: &Path) -> Result<Self> {
        let fsmeta = open_file(fsmeta_path, false)?;
        let index = open_file(index_path, false)?;
        let isrc = crate::io::FileSource::new(
            index
                .try_clone()
                .map_err(|e| FormatError::io("warp index file", e))?,
        )
        .map_err(|e| FormatError::io("warp index file", e))?;
        let mut hb = vec![0u8; HT_SPACE as usize];
        isrc.read_exact_at(&mut hb, 0).map_err(|e| {
            FormatError::io(format!("reading the header of {}", index_path.display()), e)
        })?;
        let header = HeaderTrailer::decode(&hb)?;
        if !header.is_header()
            || header.is_data_file()
            || header.is_sealed()
            || header.index_offset != HT_SPACE
        {
            return Err(FormatError::corrupt(
                "warp LSMT index file",
                format!(
                    "header flags {:#x}, index_offset {}",
                    header.flags, header.index_offset
                ),
            ));
        }
        let n = (isrc.size() - HT_SPACE) / 16;
        if n > MAX_RW_INDEX_SIZE {
            return Err(FormatError::corrupt(
                "warp LSMT index file",
                format!("{n} records exceed the limit"),
            ));
        }
        let vsectors = header.virtual_size / SECTOR;
        let mut index0 = Index0::new();
        let mut chunk = vec![0u8; 16 * 4096];
        let mut done = 0u64;
        while done < n {
            let k = (n - done).min(4096);
            let bytes = &mut chunk[..(k * 16) as usize];
            isrc.read_exact_at(bytes, HT_SPACE + done * 16)
                .map_err(|e| FormatError::io("reading warp index records", e))?;
            for (i, s) in Segment::decode_all(bytes).into_iter().enumerate() {
                if s.is_invalid() || s.length == 0 {
                    continue;
                }
                if s.length > MAX_LENGTH || s.tag > TAG_REMOTE || s.end() > vsectors {
                    return Err(FormatError::corrupt(
                        "warp LSMT index file",
                        format!("record {} {s:?} is out of range", done + i as u64),
                    ));
                }
                index0.insert(s);
            }
            done += k;
        }
        let mut w = BufWriter::with_capacity(1 << 16, index);
        w.seek(io::SeekFrom::Start(HT_SPACE + n * 16))
            .map_err(|e| FormatError::io("warp index file", e))?;
        Ok(WarpLayer {
            fsmeta,
            index: w,
            index0,
            header,
            target: None,
        })
    }

    /// Sets the target file, so that reads of remote ranges work.
    pub fn set_target(&mut self, target: Arc<dyn ReadAt>) {
        self.target = Some(target);
    }

    /// The index file's header (uuid, parent, virtual size).
    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size
    }
    /// The in-memory index (tags 0 = fs-meta, 1 = remote).
    pub fn index(&self) -> &Index0 {
        &self.index0
    }
    /// The fs-meta image (addressed by `moffset * 512` of tag-0 entries).
    pub fn fsmeta_view(&self) -> impl ReadAt + '_ {
        FsMeta(&self.fsmeta, self.header.virtual_size)
    }

    /// Maps `[offset, offset+count)` of the virtual device onto `[roffset, roffset+count)` of
    /// the target file (upstream `ioctl(RemoteData)`), in entries of at most 16383 sectors.
    /// All three must be multiples of 512. Returns the bytes mapped (`count`).
    pub fn remote_data(&mut self, offset: u64, count: u64, roffset: u64) -> Result<u64> {
        if !roffset.is_multiple_of(SECTOR) {
            return Err(FormatError::Invalid(format!(
                "remote offset {roffset} is not a multiple of 512"
            )));
        }
        self.check_io(offset, count)
            .map_err(|e| FormatError::Invalid(e.to_string()))?;
        let (mut o, mut r, mut left) = (offset / SECTOR, roffset / SECTOR, count / SECTOR);
        while left > 0 {
            let l = left.min(MAX_LENGTH as u64);
            let mut s = Segment::new(o, l as u32, r);
            s.tag = TAG_REMOTE;
            self.append_record(s)
                .map_err(|e| FormatError::io("appending a warp index record", e))?;
            o += l;
            r += l;
            left -= l;
        }
        Ok(count)
    }

    /// Commits into `out` (header 0x07 · fs-meta data · unpadded index with tags · trailer).
    /// A `virtual_size` of 0 in `opts` means the layer's own (upstream always uses it).
    pub fn commit<W: Write>(&self, opts: &CommitOptions, out: W) -> Result<CommitStats> {
        let segs = self.index0.dump();
        let fsmeta = self.fsmeta_view();
        super::commit_warp(&segs, &fsmeta, &self.commit_options(opts), out)
    }

    fn commit_options(&self, opts: &CommitOptions) -> CommitOptions {
        let mut o = opts.clone();
        if o.virtual_size == 0 {
            o.virtual_size = self.virtual_size();
        }
        o
    }

    /// Commits into `out`, wrapped as asked (ZFile and/or tar, like `overlaybd-commit -z
    /// --fastoci`). A `virtual_size` of 0 in `opts` means the layer's own.
    pub fn commit_to(
        &self,
        opts: &CommitOptions,
        wrap: crate::output::Wrapping,
        out: File,
    ) -> Result<(CommitStats, Option<crate::zfile::ZFileInfo>)> {
        let segs = self.index0.dump();
        let fsmeta = self.fsmeta_view();
        let opts = self.commit_options(opts);
        crate::output::write_wrapped(out, wrap, |w| super::commit_warp(&segs, &fsmeta, &opts, w))
    }

    fn append_record(&mut self, s: Segment) -> io::Result<()> {
        self.index.write_all(&s.encode())?;
        self.index0.insert(s);
        Ok(())
    }

    fn check_io(&self, off: u64, len: u64) -> io::Result<()> {
        if !off.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned LSMT I/O: {len} bytes at {off}"),
            ));
        }
        if off.checked_add(len).is_none_or(|e| e > self.virtual_size()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "I/O of {len} bytes at {off} past the virtual size {}",
                    self.virtual_size()
                ),
            ));
        }
        Ok(())
    }
}

impl WriteAt for WarpLayer {
    /// A filesystem write: the data goes to the fs-meta image at its LBA.
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.check_io(off, buf.len() as u64)?;
        let step = (MAX_IO_SECTORS as u64 * SECTOR) as usize;
        for (i, chunk) in buf.chunks(step).enumerate() {
            let o = off + (i * step) as u64;
            self.fsmeta.write_all_at(chunk, o)?;
            let s = Segment::new(o / SECTOR, (chunk.len() as u64 / SECTOR) as u32, o / SECTOR);
            self.append_record(s)?;
        }
        Ok(())
    }

    /// Zeroed mappings (tag 0, `moffset` = the fs-meta file's end, as upstream's discard).
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.check_io(off, len)?;
        let (mut s, e) = (off / SECTOR, (off + len) / SECTOR);
        let m = self.virtual_size() / SECTOR;
        while s < e {
            let l = (e - s).min(MAX_LENGTH as u64);
            self.append_record(Segment::zeroed(s, l as u32, m))?;
            s += l;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.index.flush()
    }
}

impl ReadAt for WarpLayer {
    /// Reads through the index: fs-meta ranges from the image, remote ranges from the target
    /// (an error if none was set), zeroed and unmapped ranges as zeros.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = super::ro::clamp(buf.len(), off, self.virtual_size());
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        let meta = self.fsmeta_view();
        super::ro::read_through(buf, off, self.index0.lookup(b, e), |p, dst, at| {
            if p.tag == TAG_REMOTE {
                match &self.target {
                    Some(t) => super::ro::read_padded(t.as_ref(), dst, at),
                    None => Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "reading a remote range of a warp layer without its target file",
                    )),
                }
            } else {
                super::ro::read_padded(&meta, dst, at)
            }
        })?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.virtual_size()
    }
}

impl Drop for WarpLayer {
    fn drop(&mut self) {
        let _ = self.index.flush();
    }
}

/// The fs-meta image as a `ReadAt` of `virtual_size` bytes.
struct FsMeta<'a>(&'a File, u64);

impl ReadAt for FsMeta<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = super::ro::clamp(buf.len(), off, self.1);
        self.0.read_exact_at(&mut buf[..n], off)?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.1
    }
}

#[cfg(test)]
mod tests;
