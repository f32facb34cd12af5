//! A writable layer that commits while it is written: `overlaybd-create`, the writes of
//! `overlaybd-apply` and `overlaybd-commit -z -t` in one pass, with no uncompressed copy of
//! the layer's file data on disk.
//!
//! * **Bulk writes** ([`WriteAt::write_bulk_at`]: regular-file contents, which a filesystem
//!   never reads back) are appended at once to the data area of the committed layer. That
//!   byte stream runs through the ZFile compressor and the tar wrapper on a thread of its
//!   own, straight into the output file.
//! * **Other writes** (filesystem metadata) go to a sparse side file at `4096 + LBA`, and
//!   are appended to the data area by [`StreamLayer::finish`] in LBA order, so a block the
//!   filesystem rewrites while the layer runs is stored once.
//! * **Reads** see this layer's metadata; sectors holding this layer's bulk data read as
//!   zeros (nothing reads them), everything else is left to the caller's lowers
//!   ([`StreamStack`]).
//!
//! The output is a committed layer as [`commit`](fn@super::commit) writes it (header 0x07,
//! data, the compressed index padded to a multiple of 256 entries, trailer 0x06), except that
//! data sits in write order rather than LBA order; readers follow `moffset`, so both are valid.
//! `finish` also copies the metadata, densely and ZFile-compressed, into a small view file and
//! removes the side file: with the layer's index it forms a read-only view of the layer's
//! metadata ([`Finished::meta_view`]), which is all a later layer needs to stack on.
//!
//! Discards follow the writable kind: unmapped for [`RwKind::Sparse`] (lowers show
//! through), zeroed entries for [`RwKind::Append`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::commit::{CommitOptions, CommitStats};
use super::header::{HeaderTrailer, FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SPACE};
use super::index::{self, Index0};
use super::ro::{clamp, read_through, LsmtRo};
use super::rw::RwKind;
use super::segment::Segment;
use super::stack::{MappedUpper, UpperStack};
use super::writable::{check_io, io_chunks, zeroed_runs};
use super::SECTOR;
use crate::error::{FormatError, Result};
use crate::io::{FileSource, ReadAt, WriteAt};
use crate::output::Wrapping;
use crate::uuid::Uuid;
use crate::zfile::{ZFileInfo, ZFileOptions};

/// Tag of index entries whose bytes are already in the output stream (at `moffset`).
const TAG_STREAMED: u8 = 0;
/// Tag of index entries whose bytes wait in the side file (at `moffset`, = 8 + offset).
const TAG_META: u8 = 1;
/// Bytes gathered before a batch goes to the writer thread.
const BATCH: usize = 1 << 20;
/// Batches queued for the writer thread before writers block.
const QUEUE: usize = 8;

type WriterResult = Result<Option<ZFileInfo>>;

/// The writable, self-committing layer.
pub struct StreamLayer {
    kind: RwKind,
    vsize: u64,
    index: Index0,
    meta: File,
    meta_path: PathBuf,
    /// Compression of the metadata view written by `finish`.
    view_zfile: ZFileOptions,
    /// Next stored sector of the committed layer's data area.
    cursor: u64,
    batch: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<WriterResult>>,
    opts: CommitOptions,
    bulk_bytes: u64,
}

/// What [`StreamLayer::finish`] leaves: the committed output, its figures, and the
/// metadata view later layers stack on.
pub struct Finished {
    pub stats: CommitStats,
    pub zfile: Option<ZFileInfo>,
    /// Bytes of file data streamed while the layer was written.
    pub bulk_bytes: u64,
    /// Bytes of metadata in the view (uncompressed).
    pub meta_bytes: u64,
    meta_index: Vec<Segment>,
    view_path: PathBuf,
    vsize: u64,
}

impl Finished {
    /// A read-only view of the layer's metadata (its file data reads as zeros).
    pub fn meta_view(&self) -> Result<LsmtRo> {
        let src = FileSource::open(&self.view_path)
            .map_err(|e| FormatError::io(format!("opening {}", self.view_path.display()), e))?;
        let payload = crate::detect::unwrap(Arc::new(src))?.payload;
        LsmtRo::from_index(payload, self.meta_index.clone(), self.vsize)
    }
}

/// The writer thread's failure as the error of a write into the layer: an OS error keeps
/// its kind and text (a full work directory stays "No space left on device").
fn stream_err(e: FormatError) -> io::Error {
    match e {
        FormatError::Io { context, source } => io::Error::new(
            source.kind(),
            format!("the layer output stream failed: {context}: {source}"),
        ),
        other => io::Error::other(format!("the layer output stream failed: {other}")),
    }
}

impl StreamLayer {
    /// Starts a layer of `opts.virtual_size` bytes whose committed form is written to `out`
    /// (wrapped as `wrap` says; `sync` makes the output durable at the end) and whose
    /// metadata goes to the new file `meta_path` until [`StreamLayer::finish`].
    pub fn create<S: crate::output::Sink + 'static>(
        out: S,
        wrap: Wrapping,
        sync: bool,
        meta_path: &Path,
        kind: RwKind,
        opts: CommitOptions,
    ) -> Result<Self> {
        if opts.virtual_size == 0 || !opts.virtual_size.is_multiple_of(SECTOR) {
            return Err(FormatError::Invalid(format!(
                "virtual size {} is not a positive multiple of 512",
                opts.virtual_size
            )));
        }
        let meta = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(meta_path)
            .map_err(|e| FormatError::io(format!("creating {}", meta_path.display()), e))?;
        meta.set_len(HT_SPACE)
            .map_err(|e| FormatError::io(format!("sizing {}", meta_path.display()), e))?;
        let mut ht = HeaderTrailer::new(FLAG_HEADER | FLAG_DATA | FLAG_SEALED, opts.virtual_size);
        ht.uuid = opts.uuid.unwrap_or(Uuid::NULL);
        ht.parent_uuid = opts.parent_uuid;
        ht.user_tag = opts.user_tag.clone();
        let header = ht.encode()?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("layer-writer".into())
            .spawn(move || -> WriterResult {
                let _cpu = obd_meter::enter(obd_meter::Stage::Compress);
                let ((), info) = crate::output::write_wrapped_with(out, wrap, sync, |w| {
                    for b in rx {
                        w.write_all(&b)
                            .map_err(|e| FormatError::io("writing the committed layer", e))?;
                    }
                    Ok(())
                })?;
                Ok(info)
            })
            .map_err(|e| FormatError::io("starting the layer writer thread", e))?;
        let mut batch = Vec::with_capacity(BATCH);
        batch.extend_from_slice(&header);
        Ok(StreamLayer {
            kind,
            vsize: opts.virtual_size,
            index: Index0::new(),
            meta,
            meta_path: meta_path.to_path_buf(),
            view_zfile: wrap.zfile.unwrap_or_default(),
            cursor: HT_SPACE / SECTOR,
            batch,
            tx: Some(tx),
            writer: Some(writer),
            opts,
            bulk_bytes: 0,
        })
    }

    pub fn virtual_size(&self) -> u64 {
        self.vsize
    }

    /// The layer's mappings so far (tags: 0 streamed, 1 metadata in the side file).
    pub fn index(&self) -> &Index0 {
        &self.index
    }

    /// Appends bytes to the data area (through the writer thread).
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.batch.extend_from_slice(buf);
        self.cursor += buf.len() as u64 / SECTOR;
        if self.batch.len() >= BATCH {
            self.ship()?;
        }
        Ok(())
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let sent = self.tx.as_ref().map(|tx| tx.send(b).is_ok());
        if sent != Some(true) {
            // The writer stopped: its error is the one to report.
            return Err(match self.writer.take().map(|h| h.join()) {
                Some(Ok(Err(e))) => stream_err(e),
                _ => io::Error::other("the layer output stream failed: the writer thread ended"),
            });
        }
        Ok(())
    }

    /// Writes the metadata into the data area, then the index and the trailer, and waits
    /// for the output to be complete. The metadata also goes, compressed, into the new file
    /// `view_path` (see [`Finished::meta_view`]); the side file is removed.
    pub fn finish(mut self, view_path: &Path) -> Result<Finished> {
        let view = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(view_path)
            .map_err(|e| FormatError::io(format!("creating {}", view_path.display()), e))?;
        let view_wrap = Wrapping {
            zfile: Some(self.view_zfile),
            tar: false,
            overwrite_header: false,
        };
        let ((entries, meta_index, meta_bytes), _) =
            crate::output::write_wrapped_with(view, view_wrap, false, |w| self.append_meta(w))?;
        let _ = std::fs::remove_file(&self.meta_path);
        self.seal(entries, meta_index, meta_bytes, view_path)
    }

    /// Appends the metadata to the data area (and densely to `view`); returns the output's
    /// index entries, the view's, and the metadata bytes.
    fn append_meta(&mut self, view: &mut dyn Write) -> Result<(Vec<Segment>, Vec<Segment>, u64)> {
        let wr = |e| FormatError::io("writing the committed layer", e);
        let segs = self.index.dump();
        let mut entries: Vec<Segment> = Vec::with_capacity(segs.len());
        let mut meta_index: Vec<Segment> = Vec::with_capacity(segs.len());
        let mut buf = Vec::new();
        let mut view_cursor = 0u64;
        for s in segs {
            if s.zeroed {
                entries.push(Segment {
                    moffset: self.cursor,
                    tag: 0,
                    ..s
                });
                meta_index.push(Segment {
                    moffset: 0,
                    tag: 0,
                    ..s
                });
                continue;
            }
            if s.tag == TAG_META {
                buf.resize(s.length as usize * SECTOR as usize, 0);
                self.meta
                    .read_exact_at(&mut buf, s.moffset * SECTOR)
                    .map_err(|e| FormatError::io("reading layer metadata", e))?;
                entries.push(Segment {
                    moffset: self.cursor,
                    tag: 0,
                    ..s
                });
                meta_index.push(Segment {
                    moffset: view_cursor,
                    tag: 0,
                    ..s
                });
                view_cursor += s.length as u64;
                self.append(&buf).map_err(wr)?;
                view.write_all(&buf)
                    .map_err(|e| FormatError::io("writing the metadata view", e))?;
            } else {
                entries.push(s);
                meta_index.push(Segment {
                    moffset: 0,
                    zeroed: true,
                    tag: 0,
                    ..s
                });
            }
        }
        Ok((entries, meta_index, view_cursor * SECTOR))
    }

    /// Writes the index and the trailer and waits for the output to be complete.
    fn seal(
        mut self,
        mut entries: Vec<Segment>,
        meta_index: Vec<Segment>,
        meta_bytes: u64,
        view_path: &Path,
    ) -> Result<Finished> {
        let wr = |e| FormatError::io("writing the committed layer", e);
        // The index is sorted by offset: the greedy compression merges entries contiguous in
        // both spaces, as a compacting commit's would be.
        index::compress(&mut entries);
        let valid = entries.len() as u64;
        if !entries.len().is_multiple_of(256) {
            entries.resize(entries.len().div_ceil(256) * 256, Segment::INVALID);
        }
        let data_end = self.cursor;
        let mut ib = Vec::with_capacity(entries.len() * 16);
        for e in &entries {
            ib.extend_from_slice(&e.encode());
        }
        let mut ht = HeaderTrailer::new(FLAG_DATA | FLAG_SEALED, self.vsize);
        ht.uuid = self.opts.uuid.unwrap_or(Uuid::NULL);
        ht.parent_uuid = self.opts.parent_uuid;
        ht.user_tag = self.opts.user_tag.clone();
        ht.index_offset = data_end * SECTOR;
        ht.index_size = entries.len() as u64;
        self.batch.extend_from_slice(&ib);
        self.batch.extend_from_slice(&ht.encode()?);
        self.ship().map_err(wr)?;
        self.tx.take();
        let zfile = match self.writer.take().map(|h| h.join()) {
            Some(Ok(r)) => r?,
            _ => {
                return Err(FormatError::Invalid(
                    "the layer writer thread panicked".into(),
                ))
            }
        };
        Ok(Finished {
            stats: CommitStats {
                data_bytes: data_end * SECTOR - HT_SPACE,
                index_entries: entries.len() as u64,
                valid_entries: valid,
                total_bytes: data_end * SECTOR + ib.len() as u64 + HT_SPACE,
            },
            zfile,
            bulk_bytes: self.bulk_bytes,
            meta_bytes,
            meta_index,
            view_path: view_path.to_path_buf(),
            vsize: self.vsize,
        })
    }
}

impl Drop for StreamLayer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl ReadAt for StreamLayer {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = clamp(buf.len(), off, self.vsize);
        let buf = &mut buf[..n];
        let (b, e) = (off / SECTOR, (off + n as u64).div_ceil(SECTOR));
        read_through(buf, off, self.index.lookup(b, e), |p, dst, at| {
            if p.tag == TAG_META {
                self.meta.read_exact_at(dst, at)
            } else {
                dst.fill(0);
                Ok(())
            }
        })?;
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.vsize
    }
}

impl WriteAt for StreamLayer {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_io(off, buf.len() as u64, self.vsize)?;
        for (o, chunk) in io_chunks(buf, off) {
            self.meta.write_all_at(chunk, HT_SPACE + o)?;
            self.index.insert(Segment {
                offset: o / SECTOR,
                length: (chunk.len() as u64 / SECTOR) as u32,
                moffset: (HT_SPACE + o) / SECTOR,
                zeroed: false,
                tag: TAG_META,
            });
        }
        Ok(())
    }

    fn write_bulk_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        check_io(off, buf.len() as u64, self.vsize)?;
        for (o, chunk) in io_chunks(buf, off) {
            let at = self.cursor;
            self.append(chunk)?;
            self.index.insert(Segment {
                offset: o / SECTOR,
                length: (chunk.len() as u64 / SECTOR) as u32,
                moffset: at,
                zeroed: false,
                tag: TAG_STREAMED,
            });
        }
        self.bulk_bytes += buf.len() as u64;
        Ok(())
    }

    fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        check_io(off, len, self.vsize)?;
        let (s, e) = (off / SECTOR, (off + len) / SECTOR);
        match self.kind {
            RwKind::Sparse => self.index.remove_range(s, e),
            RwKind::Append => {
                for z in zeroed_runs(s, e, HT_SPACE / SECTOR) {
                    self.index.insert(z);
                }
            }
        }
        Ok(())
    }
}

/// The device a streamed layer is built on: committed lowers (a [`Stack`](super::Stack)
/// without upper) under a [`StreamLayer`].
pub type StreamStack = UpperStack<StreamLayer>;

impl MappedUpper for StreamLayer {
    fn index(&self) -> &Index0 {
        StreamLayer::index(self)
    }
    fn virtual_size(&self) -> u64 {
        StreamLayer::virtual_size(self)
    }
}

#[cfg(test)]
mod tests;
