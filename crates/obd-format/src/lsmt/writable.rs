//! Plumbing shared by the writable layers: [`super::rw`] and [`super::warp`], and, for how
//! its writes and discards are checked and split, [`super::stream`].
//!
//! * [`open_file`], [`check_virtual_size`]: opening (or creating) a layer's files
//!   read-write, and checking the size a new layer is created with.
//! * [`IndexFile`]: the index file of an append-only or warp layer: a header (flags 0x01,
//!   `index_offset` 4096) followed by 16-byte records in write order, replayed in file order
//!   on open (later records win) and appended to afterwards.
//! * [`check_io`], [`io_chunks`], [`zeroed_runs`]: how device writes and discards are checked
//!   and cut into index entries.
//! * [`FileView`]: a layer file read as a [`ReadAt`] of a fixed length.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{HeaderTrailer, FLAG_HEADER, HT_SPACE};
use super::index::Index0;
use super::segment::Segment;
use super::{MAX_IO_SECTORS, MAX_LENGTH, MAX_RW_INDEX_SIZE, SECTOR};
use crate::error::{FormatError, Result};
use crate::io::{FileSource, ReadAt};

/// Bytes of one index record.
const RECORD: u64 = 16;
/// Index records read at a time when an index file is replayed.
const RECORDS_PER_READ: u64 = 4096;
/// Write buffer of an open index file.
const WRITE_BUFFER: usize = 1 << 16;

/// Opens `path` read-write; with `create`, creates it and fails if it exists already.
pub(super) fn open_file(path: &Path, create: bool) -> Result<File> {
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

/// The words the errors of an [`IndexFile`] use, so that each layer kind keeps its own.
pub(super) struct IndexNames {
    /// Context of errors handling the file itself (cloning, seeking).
    pub file: &'static str,
    /// What a corrupt-file error names.
    pub what: &'static str,
    /// Context of a failed header write when the file is created.
    pub header: &'static str,
    /// Context of a failed record read when the file is replayed.
    pub records: &'static str,
}

/// The index file of an append-only or warp layer, open (buffered) for appending records.
/// It owns the header block at offset 0 and the record area behind it; the in-memory index
/// stays with the layer. Buffered records are flushed by [`IndexFile::flush`] and on drop.
pub(super) struct IndexFile(BufWriter<File>);

impl IndexFile {
    /// Writes the index header for `header` (see [`IndexFile::write_header`]) into the new
    /// `file`, and positions for appending after it.
    pub fn create(file: File, header: &HeaderTrailer, names: &IndexNames) -> Result<Self> {
        write_index_header(&file, header, names.header)?;
        Self::append_from(file, HT_SPACE, names)
    }

    /// Reads an existing index file: checks its header (flags 0x01, not sealed, `index_offset`
    /// 4096) and record count, then replays the records in file order into an [`Index0`],
    /// skipping padding and empty ones. `check` sees the header, the record's number and the
    /// record, and returns what to insert or an error. Returns the file positioned after its
    /// last record, its header and the replayed index.
    pub fn open(
        file: File,
        path: &Path,
        names: &IndexNames,
        mut check: impl FnMut(&HeaderTrailer, u64, Segment) -> Result<Segment>,
    ) -> Result<(Self, HeaderTrailer, Index0)> {
        let src = FileSource::new(
            file.try_clone()
                .map_err(|e| FormatError::io(names.file, e))?,
        )
        .map_err(|e| FormatError::io(names.file, e))?;
        let mut hb = vec![0u8; HT_SPACE as usize];
        src.read_exact_at(&mut hb, 0)
            .map_err(|e| FormatError::io(format!("reading the header of {}", path.display()), e))?;
        let header = HeaderTrailer::decode(&hb)?;
        if !header.is_header()
            || header.is_data_file()
            || header.is_sealed()
            || header.index_offset != HT_SPACE
        {
            return Err(FormatError::corrupt(
                names.what,
                format!(
                    "header flags {:#x}, index_offset {}",
                    header.flags, header.index_offset
                ),
            ));
        }
        let n = (src.size() - HT_SPACE) / RECORD;
        if n > MAX_RW_INDEX_SIZE {
            return Err(FormatError::corrupt(
                names.what,
                format!("{n} records exceed the limit"),
            ));
        }
        let mut index0 = Index0::new();
        let mut chunk = vec![0u8; (RECORD * RECORDS_PER_READ) as usize];
        let mut done = 0u64;
        while done < n {
            let k = (n - done).min(RECORDS_PER_READ);
            let bytes = &mut chunk[..(k * RECORD) as usize];
            src.read_exact_at(bytes, HT_SPACE + done * RECORD)
                .map_err(|e| FormatError::io(names.records, e))?;
            for (i, s) in Segment::decode_all(bytes).into_iter().enumerate() {
                if s.is_invalid() || s.length == 0 {
                    continue;
                }
                index0.insert(check(&header, done + i as u64, s)?);
            }
            done += k;
        }
        let ix = Self::append_from(file, HT_SPACE + n * RECORD, names)?;
        Ok((ix, header, index0))
    }

    fn append_from(file: File, pos: u64, names: &IndexNames) -> Result<Self> {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
        w.seek(io::SeekFrom::Start(pos))
            .map_err(|e| FormatError::io(names.file, e))?;
        Ok(IndexFile(w))
    }

    /// Rewrites the header block: `header` with flags 0x01 and `index_offset` 4096.
    pub fn write_header(&self, header: &HeaderTrailer, context: &str) -> Result<()> {
        write_index_header(self.0.get_ref(), header, context)
    }

    /// Appends one record (as given, tag included).
    pub fn append(&mut self, s: &Segment) -> io::Result<()> {
        self.0.write_all(&s.encode())
    }

    /// Writes the buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Drop for IndexFile {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

fn write_index_header(file: &File, header: &HeaderTrailer, context: &str) -> Result<()> {
    let mut ih = header.clone();
    ih.flags = FLAG_HEADER;
    ih.index_offset = HT_SPACE;
    file.write_all_at(&ih.encode()?, 0)
        .map_err(|e| FormatError::io(context, e))
}

/// Checks the virtual size of a new writable layer: a whole number of sectors.
pub(super) fn check_virtual_size(virtual_size: u64) -> Result<()> {
    if !virtual_size.is_multiple_of(SECTOR) {
        return Err(FormatError::Invalid(format!(
            "virtual size {virtual_size} is not a multiple of 512"
        )));
    }
    Ok(())
}

/// Checks a device I/O of `len` bytes at `off`: both sector-aligned, and inside `vsize`.
pub(super) fn check_io(off: u64, len: u64, vsize: u64) -> io::Result<()> {
    if !off.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unaligned LSMT I/O: {len} bytes at {off}"),
        ));
    }
    if off.checked_add(len).is_none_or(|e| e > vsize) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("I/O of {len} bytes at {off} past the virtual size {vsize}"),
        ));
    }
    Ok(())
}

/// The pieces a write of `buf` at device offset `off` is mapped in (one index entry each, at
/// most [`MAX_IO_SECTORS`] long), with their device offsets.
pub(super) fn io_chunks(buf: &[u8], off: u64) -> impl Iterator<Item = (u64, &[u8])> {
    let step = (MAX_IO_SECTORS as u64 * SECTOR) as usize;
    buf.chunks(step)
        .enumerate()
        .map(move |(i, chunk)| (off + (i * step) as u64, chunk))
}

/// The zeroed entries that map sectors `[begin, end)`: at most [`MAX_LENGTH`] sectors each,
/// all with `moffset`.
pub(super) fn zeroed_runs(begin: u64, end: u64, moffset: u64) -> impl Iterator<Item = Segment> {
    (begin..end)
        .step_by(MAX_LENGTH as usize)
        .map(move |s| Segment::zeroed(s, (end - s).min(MAX_LENGTH as u64) as u32, moffset))
}

/// A layer file read as a [`ReadAt`] of `.1` bytes (reads past that end are cut short).
pub(super) struct FileView<'a>(pub &'a File, pub u64);

impl ReadAt for FileView<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = super::ro::clamp(buf.len(), off, self.1);
        self.0.read_exact_at(&mut buf[..n], off)?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.1
    }
}
