//! Writable LSMT layers.
//!
//! * **Append-only** (`overlaybd-create` default): the data file is a header (flags 0x03)
//!   followed by appended data; the index file is a header (flags 0x01, index_offset 4096)
//!   followed by 16-byte records, replayed in file order on open (later records win).
//! * **Sparse** (`-s`): the data file is a header (flags 0x13) followed by the raw image at
//!   file offset 4096 + LBA; the index file is empty and the mappings are rebuilt from the
//!   file's allocated extents (`SEEK_DATA`/`SEEK_HOLE`). Discards punch holes and so become
//!   *unmapped* (lower layers show through), as upstream.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{HeaderTrailer, FLAG_DATA, FLAG_HEADER, FLAG_SPARSE, HT_SPACE};
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

/// Error wording of an append-only layer's index file.
const INDEX_NAMES: IndexNames = IndexNames {
    file: "index file",
    what: "writable LSMT index file",
    header: "writing the index header",
    records: "reading index records",
};

/// Which writable layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwKind {
    Append,
    Sparse,
}

/// A writable layer: a data file plus (append-only kind) an index file.
pub struct RwLayer {
    kind: RwKind,
    data: File,
    index: Option<IndexFile>,
    index0: Index0,
    /// End of the data file in bytes (append position).
    data_end: u64,
    header: HeaderTrailer,
    /// Tag written into new index records (the number of lowers when stacked).
    record_tag: u8,
}

impl RwLayer {
    /// Creates a new layer; both files must not exist yet. `uuid` is written as given (null
    /// by default, so that output stays deterministic).
    pub fn create(
        data_path: &Path,
        index_path: &Path,
        virtual_size: u64,
        kind: RwKind,
        uuid: Uuid,
        parent_uuid: Uuid,
    ) -> Result<Self> {
        check_virtual_size(virtual_size)?;
        let data = open_file(data_path, true)?;
        let index = open_file(index_path, true)?;
        let mut h = HeaderTrailer::new(FLAG_HEADER | FLAG_DATA, virtual_size);
        h.uuid = uuid;
        h.parent_uuid = parent_uuid;
        if kind == RwKind::Sparse {
            h.flags |= FLAG_SPARSE;
        }
        data.write_all_at(&h.encode()?, 0)
            .map_err(|e| FormatError::io("writing the data header", e))?;
        let index = match kind {
            RwKind::Append => Some(IndexFile::create(index, &h, &INDEX_NAMES)?),
            RwKind::Sparse => {
                data.set_len(HT_SPACE + virtual_size)
                    .map_err(|e| FormatError::io("sizing the sparse data file", e))?;
                None
            }
        };
        Ok(RwLayer {
            kind,
            data,
            index,
            index0: Index0::new(),
            data_end: if kind == RwKind::Sparse {
                HT_SPACE + virtual_size
            } else {
                HT_SPACE
            },
            header: h,
            record_tag: 0,
        })
    }

    /// Opens an existing writable layer (append-only or sparse, told by the data header).
    pub fn open(data_path: &Path, index_path: &Path) -> Result<Self> {
        let data = open_file(data_path, false)?;
        let src = crate::io::FileSource::new(
            data.try_clone()
                .map_err(|e| FormatError::io("data file", e))?,
        )
        .map_err(|e| FormatError::io("data file", e))?;
        let mut hb = vec![0u8; HT_SPACE as usize];
        src.read_exact_at(&mut hb, 0).map_err(|e| {
            FormatError::io(format!("reading the header of {}", data_path.display()), e)
        })?;
        let header = HeaderTrailer::decode(&hb)?;
        if !header.is_header() || !header.is_data_file() || header.is_sealed() {
            return Err(FormatError::corrupt(
                "writable LSMT data file",
                format!("header flags {:#x}", header.flags),
            ));
        }
        let data_end = src.size();
        if header.is_sparse() {
            let l = RwLayer {
                kind: RwKind::Sparse,
                data,
                index: None,
                index0: Index0::new(),
                data_end,
                header,
                record_tag: 0,
            };
            let mut l = l;
            l.rebuild_sparse_index()?;
            return Ok(l);
        }
        let index = open_file(index_path, false)?;
        let (mb, me) = (HT_SPACE / SECTOR, data_end / SECTOR);
        let (index, _, index0) =
            IndexFile::open(index, index_path, &INDEX_NAMES, |_, n, mut s| {
                s.tag = 0;
                if s.length > MAX_LENGTH
                    || s.moffset < mb
                    || (!s.zeroed && s.moffset + s.length as u64 > me)
                    || (s.zeroed && s.moffset > me)
                {
                    return Err(FormatError::corrupt(
                        INDEX_NAMES.what,
                        format!("record {n} {s:?} is outside the data file ({data_end} bytes)"),
                    ));
                }
                Ok(s)
            })?;
        Ok(RwLayer {
            kind: RwKind::Append,
            data,
            index: Some(index),
            index0,
            data_end,
            header,
            record_tag: 0,
        })
    }

    fn rebuild_sparse_index(&mut self) -> Result<()> {
        use nix::unistd::{lseek, Whence};
        use std::os::fd::AsRawFd;
        let fd = self.data.as_raw_fd();
        let end = self.data_end;
        let mut pos = HT_SPACE as i64;
        self.index0 = Index0::new();
        while (pos as u64) < end {
            let b = match lseek(fd, pos, Whence::SeekData) {
                Ok(b) => b,
                Err(nix::errno::Errno::ENXIO) => break,
                Err(e) => return Err(FormatError::io("SEEK_DATA", e.into())),
            };
            let e = lseek(fd, b, Whence::SeekHole)
                .map_err(|e| FormatError::io("SEEK_HOLE", e.into()))?;
            let (b, e) = ((b as u64).max(HT_SPACE), (e as u64).min(end));
            let (mut s, e) = (b / SECTOR, e.div_ceil(SECTOR));
            while s < e {
                let len = (e - s).min(MAX_LENGTH as u64);
                self.index0
                    .insert(Segment::new(s - HT_SPACE / SECTOR, len as u32, s));
                s += len;
            }
            pos = e as i64 * SECTOR as i64;
        }
        Ok(())
    }

    pub fn kind(&self) -> RwKind {
        self.kind
    }
    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size
    }
    /// The in-memory index.
    pub fn index(&self) -> &Index0 {
        &self.index0
    }
    /// Sets the tag stored in new index records (upstream stores the number of lowers).
    pub fn set_record_tag(&mut self, tag: u8) {
        self.record_tag = tag;
    }
    /// The data file as a source of stored bytes (addressed by `moffset * 512`).
    pub fn data_view(&self) -> impl ReadAt + '_ {
        FileView(&self.data, self.data_end.max(HT_SPACE))
    }

    /// Compacts this layer into a committed layer written to `out`, wrapped as asked (the
    /// `overlaybd-commit` operation).
    pub fn commit_to(
        &self,
        opts: &super::CommitOptions,
        wrap: crate::output::Wrapping,
        out: File,
    ) -> Result<(super::commit::CommitStats, Option<crate::zfile::ZFileInfo>)> {
        let segs = self.index0.dump();
        let data = self.data_view();
        crate::output::write_wrapped(out, wrap, |w| super::commit(&segs, &[&data], opts, w))
    }

    /// Rewrites `virtual_size` in the headers (upstream does this when stacking an upper of
    /// vsize 0 onto lowers).
    pub fn update_vsize(&mut self, vsize: u64) -> Result<()> {
        self.header.virtual_size = vsize;
        self.data
            .write_all_at(&self.header.encode()?, 0)
            .map_err(|e| FormatError::io("data header", e))?;
        if let Some(ix) = &self.index {
            ix.write_header(&self.header, "index header")?;
        }
        Ok(())
    }

    /// Appends `s` to the index file with this layer's record tag, and maps it as given.
    fn append_record(&mut self, s: Segment) -> io::Result<()> {
        if let Some(ix) = &mut self.index {
            ix.append(&Segment {
                tag: self.record_tag,
                ..s
            })?;
        }
        self.index0.insert(s);
        Ok(())
    }
}

impl ReadAt for RwLayer {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = super::ro::clamp(buf.len(), off, self.virtual_size());
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        let src = self.data_view();
        super::ro::read_through(buf, off, self.index0.lookup(b, e), |_, dst, at| {
            super::ro::read_padded(&src, dst, at)
        })?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.virtual_size()
    }
}

impl WriteAt for RwLayer {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_io(off, buf.len() as u64, self.virtual_size())?;
        for (o, chunk) in io_chunks(buf, off) {
            match self.kind {
                RwKind::Append => {
                    let at = self.data_end;
                    self.data.write_all_at(chunk, at)?;
                    self.data_end += chunk.len() as u64;
                    self.append_record(Segment::new(
                        o / SECTOR,
                        (chunk.len() as u64 / SECTOR) as u32,
                        at / SECTOR,
                    ))?;
                }
                RwKind::Sparse => {
                    let at = HT_SPACE + o;
                    self.data.write_all_at(chunk, at)?;
                    self.index0.insert(Segment::new(
                        o / SECTOR,
                        (chunk.len() as u64 / SECTOR) as u32,
                        at / SECTOR,
                    ));
                }
            }
        }
        Ok(())
    }

    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        check_io(off, len, self.virtual_size())?;
        let (s, e) = (off / SECTOR, (off + len) / SECTOR);
        match self.kind {
            RwKind::Append => {
                for z in zeroed_runs(s, e, self.data_end / SECTOR) {
                    self.append_record(z)?;
                }
            }
            RwKind::Sparse => {
                use nix::fcntl::{fallocate, FallocateFlags};
                fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&self.data),
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    (HT_SPACE + off) as i64,
                    len as i64,
                )
                .map_err(io::Error::from)?;
                // After a reopen a punched range is unmapped; keep the same view now.
                self.index0.remove_range(s, e);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(ix) = &mut self.index {
            ix.flush()?;
        }
        Ok(())
    }
}
