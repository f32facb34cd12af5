//! Writable LSMT layers.
//!
//! * **Append-only** (`overlaybd-create` default): the data file is a header (flags 0x03)
//!   followed by appended data; the index file is a header (flags 0x01, index_offset 4096)
//!   followed by 16-byte records, replayed in file order on open (later records win).
//! * **Sparse** (`-s`): the data file is a header (flags 0x13) followed by the raw image at
//!   file offset 4096 + LBA; the index file is empty and the mappings are rebuilt from the
//!   file's allocated extents (`SEEK_DATA`/`SEEK_HOLE`). Discards punch holes and so become
//!   *unmapped* (lower layers show through), as upstream.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{HeaderTrailer, FLAG_DATA, FLAG_HEADER, FLAG_SPARSE, HT_SPACE};
use super::index::Index0;
use super::segment::Segment;
use super::{MAX_IO_SECTORS, MAX_LENGTH, MAX_RW_INDEX_SIZE, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::{ReadAt, WriteAt};
use crate::uuid::Uuid;

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
    index: Option<BufWriter<File>>,
    index0: Index0,
    /// End of the data file in bytes (append position).
    data_end: u64,
    header: HeaderTrailer,
    /// Tag written into new index records (the number of lowers when stacked).
    record_tag: u8,
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    let mut o = OpenOptions::new();
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
        if !virtual_size.is_multiple_of(SECTOR) {
            return Err(FormatError::Invalid(format!(
                "virtual size {virtual_size} is not a multiple of 512"
            )));
        }
        let data = open_rw(data_path, true)?;
        let index = open_rw(index_path, true)?;
        let mut h = HeaderTrailer::new(FLAG_HEADER | FLAG_DATA, virtual_size);
        h.uuid = uuid;
        h.parent_uuid = parent_uuid;
        if kind == RwKind::Sparse {
            h.flags |= FLAG_SPARSE;
        }
        data.write_all_at(&h.encode()?, 0)
            .map_err(|e| FormatError::io("writing the data header", e))?;
        let index = match kind {
            RwKind::Append => {
                let mut ih = h.clone();
                ih.flags = FLAG_HEADER;
                ih.index_offset = HT_SPACE;
                index
                    .write_all_at(&ih.encode()?, 0)
                    .map_err(|e| FormatError::io("writing the index header", e))?;
                Some(BufWriter::with_capacity(1 << 16, index))
            }
            RwKind::Sparse => {
                data.set_len(HT_SPACE + virtual_size)
                    .map_err(|e| FormatError::io("sizing the sparse data file", e))?;
                None
            }
        };
        let mut l = RwLayer {
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
        };
        if let Some(ix) = &mut l.index {
            use std::io::Seek;
            ix.seek(io::SeekFrom::Start(HT_SPACE))
                .map_err(|e| FormatError::io("index file", e))?;
        }
        Ok(l)
    }

    /// Opens an existing writable layer (append-only or sparse, told by the data header).
    pub fn open(data_path: &Path, index_path: &Path) -> Result<Self> {
        let data = open_rw(data_path, false)?;
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
        let mut index0 = Index0::new();
        if header.is_sparse() {
            let l = RwLayer {
                kind: RwKind::Sparse,
                data,
                index: None,
                index0,
                data_end,
                header,
                record_tag: 0,
            };
            let mut l = l;
            l.rebuild_sparse_index()?;
            return Ok(l);
        }
        let index = open_rw(index_path, false)?;
        let isrc = crate::io::FileSource::new(
            index
                .try_clone()
                .map_err(|e| FormatError::io("index file", e))?,
        )
        .map_err(|e| FormatError::io("index file", e))?;
        isrc.read_exact_at(&mut hb, 0).map_err(|e| {
            FormatError::io(format!("reading the header of {}", index_path.display()), e)
        })?;
        let ih = HeaderTrailer::decode(&hb)?;
        if !ih.is_header() || ih.is_data_file() || ih.is_sealed() || ih.index_offset != HT_SPACE {
            return Err(FormatError::corrupt(
                "writable LSMT index file",
                format!(
                    "header flags {:#x}, index_offset {}",
                    ih.flags, ih.index_offset
                ),
            ));
        }
        let n = (isrc.size() - HT_SPACE) / 16;
        if n > MAX_RW_INDEX_SIZE {
            return Err(FormatError::corrupt(
                "writable LSMT index file",
                format!("{n} records exceed the limit"),
            ));
        }
        let (mb, me) = (HT_SPACE / SECTOR, data_end / SECTOR);
        let mut chunk = vec![0u8; 16 * 4096];
        let mut done = 0u64;
        while done < n {
            let k = (n - done).min(4096);
            let bytes = &mut chunk[..(k * 16) as usize];
            isrc.read_exact_at(bytes, HT_SPACE + done * 16)
                .map_err(|e| FormatError::io("reading index records", e))?;
            for (i, mut s) in Segment::decode_all(bytes).into_iter().enumerate() {
                if s.is_invalid() || s.length == 0 {
                    continue;
                }
                s.tag = 0;
                if s.length > MAX_LENGTH
                    || s.moffset < mb
                    || (!s.zeroed && s.moffset + s.length as u64 > me)
                    || (s.zeroed && s.moffset > me)
                {
                    return Err(FormatError::corrupt(
                        "writable LSMT index file",
                        format!(
                            "record {} {s:?} is outside the data file ({} bytes)",
                            done + i as u64,
                            data_end
                        ),
                    ));
                }
                index0.insert(s);
            }
            done += k;
        }
        let mut w = BufWriter::with_capacity(1 << 16, index);
        {
            use std::io::Seek;
            w.seek(io::SeekFrom::Start(HT_SPACE + n * 16))
                .map_err(|e| FormatError::io("index file", e))?;
        }
        Ok(RwLayer {
            kind: RwKind::Append,
            data,
            index: Some(w),
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
        RwData(&self.data, self.data_end.max(HT_SPACE))
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
        if let Some(ix) = &mut self.index {
            let mut ih = self.header.clone();
            ih.flags = FLAG_HEADER;
            ih.index_offset = HT_SPACE;
            ix.get_ref()
                .write_all_at(&ih.encode()?, 0)
                .map_err(|e| FormatError::io("index header", e))?;
        }
        Ok(())
    }

    fn append_record(&mut self, s: Segment) -> io::Result<()> {
        let mut r = s;
        r.tag = self.record_tag;
        if let Some(ix) = &mut self.index {
            ix.write_all(&r.encode())?;
        }
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

/// The data file as a `ReadAt` of its current length.
struct RwData<'a>(&'a File, u64);

impl ReadAt for RwData<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = super::ro::clamp(buf.len(), off, self.1);
        self.0.read_exact_at(&mut buf[..n], off)?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.1
    }
}

impl WriteAt for RwLayer {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        self.check_io(off, buf.len() as u64)?;
        let step = (MAX_IO_SECTORS as u64 * SECTOR) as usize;
        for (i, chunk) in buf.chunks(step).enumerate() {
            let o = off + (i * step) as u64;
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
        self.check_io(off, len)?;
        let (mut s, e) = (off / SECTOR, (off + len) / SECTOR);
        match self.kind {
            RwKind::Append => {
                while s < e {
                    let l = (e - s).min(MAX_LENGTH as u64);
                    let m = self.data_end / SECTOR;
                    self.append_record(Segment::zeroed(s, l as u32, m))?;
                    s += l;
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

impl Drop for RwLayer {
    fn drop(&mut self) {
        if let Some(ix) = &mut self.index {
            let _ = ix.flush();
        }
    }
}
