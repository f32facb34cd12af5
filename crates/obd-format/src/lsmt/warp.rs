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
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::commit::{CommitOptions, CommitStats};
use super::header::{HeaderTrailer, FLAG_HEADER, HT_SPACE};
use super::index::Index0;
use super::segment::Segment;
use super::writable::{
    check_io, check_virtual_size, io_chunks, open_file, zeroed_runs, FileView, IndexFile,
    IndexNames,
};
use super::{MAX_LENGTH, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::{ReadAt, WriteAt};
use crate::uuid::Uuid;

/// Tag of entries whose data is in the layer itself (fs-meta).
pub const TAG_FSMETA: u8 = 0;
/// Tag of entries whose data is in the target file.
pub const TAG_REMOTE: u8 = 1;

/// Error wording of a warp layer's index file.
const INDEX_NAMES: IndexNames = IndexNames {
    file: "warp index file",
    what: "warp LSMT index file",
    header: "writing the warp index header",
    records: "reading warp index records",
};

/// A writable warp layer: fs-meta image + index file, and optionally the target file (needed
/// only to read remote ranges back).
pub struct WarpLayer {
    fsmeta: File,
    index: IndexFile,
    index0: Index0,
    header: HeaderTrailer,
    target: Option<Arc<dyn ReadAt>>,
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
        check_virtual_size(virtual_size)?;
        let fsmeta = open_file(fsmeta_path, true)?;
        fsmeta
            .set_len(virtual_size)
            .map_err(|e| FormatError::io("sizing the fs-meta image", e))?;
        let index = open_file(index_path, true)?;
        let mut h = HeaderTrailer::new(FLAG_HEADER, virtual_size);
        h.index_offset = HT_SPACE;
        h.uuid = uuid;
        h.parent_uuid = parent_uuid;
        let index = IndexFile::create(index, &h, &INDEX_NAMES)?;
        Ok(WarpLayer {
            fsmeta,
            index,
            index0: Index0::new(),
            header: h,
            target: None,
        })
    }

    /// Opens an existing warp layer, replaying its index records in order (tags kept).
    pub fn open(fsmeta_path: &Path, index_path: &Path) -> Result<Self> {
        let fsmeta = open_file(fsmeta_path, false)?;
        let index = open_file(index_path, false)?;
        let (index, header, index0) =
            IndexFile::open(index, index_path, &INDEX_NAMES, |header, n, s| {
                let vsectors = header.virtual_size / SECTOR;
                if s.length > MAX_LENGTH || s.tag > TAG_REMOTE || s.end() > vsectors {
                    return Err(FormatError::corrupt(
                        INDEX_NAMES.what,
                        format!("record {n} {s:?} is out of range"),
                    ));
                }
                Ok(s)
            })?;
        Ok(WarpLayer {
            fsmeta,
            index,
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
        FileView(&self.fsmeta, self.header.virtual_size)
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
        check_io(offset, count, self.virtual_size())
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

    /// Appends `s` (tag included) to the index file and maps it.
    fn append_record(&mut self, s: Segment) -> io::Result<()> {
        self.index.append(&s)?;
        self.index0.insert(s);
        Ok(())
    }
}

impl WriteAt for WarpLayer {
    /// A filesystem write: the data goes to the fs-meta image at its LBA.
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_io(off, buf.len() as u64, self.virtual_size())?;
        for (o, chunk) in io_chunks(buf, off) {
            self.fsmeta.write_all_at(chunk, o)?;
            let s = Segment::new(o / SECTOR, (chunk.len() as u64 / SECTOR) as u32, o / SECTOR);
            self.append_record(s)?;
        }
        Ok(())
    }

    /// Zeroed mappings (tag 0, `moffset` = the fs-meta file's end, as upstream's discard).
    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        check_io(off, len, self.virtual_size())?;
        let (s, e) = (off / SECTOR, (off + len) / SECTOR);
        for z in zeroed_runs(s, e, self.virtual_size() / SECTOR) {
            self.append_record(z)?;
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

#[cfg(test)]
mod tests;
