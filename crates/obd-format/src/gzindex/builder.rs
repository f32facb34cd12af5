//! Building `gzip.meta` while decompressing: [`GzIndexReader`] is a `Read` adapter over the
//! compressed stream that yields the decompressed bytes and records access points on the way,
//! so the stream is read once (the convertor reads the layer tar from the same stream).
//!
//! Recording rule (upstream `gzip_index_create.cpp`): the inflater stops at every deflate
//! block boundary (`Z_BLOCK`); each boundary that does not precede the final block's end is a
//! candidate. The boundary at uncompressed offset 0 (right after the gzip header) becomes an
//! entry; after that, when a boundary passes the next multiple of `span`, the last candidate
//! before it becomes an entry (a boundary exactly on the multiple becomes one itself), and the
//! target moves on by `span` until it is past the boundary. Each entry keeps the last 32 KiB
//! of output before it (zero-filled before offset 32 KiB), zlib-compressed.
//!
//! Multi-member gzip: only the **first** member is indexed, as upstream (its
//! `uncompress_file_size` is the first member's size, and upstream's reader cannot cross into
//! the next member). The adapter still decompresses every member, like the rest of the
//! pipeline (`MultiGzDecoder`), and [`GzIndexBuild`] says how many members there were and
//! how much data lies outside the index, so a caller can refuse such a layer for TurboOCI.

use std::io::{self, Read, Write};

use super::meta::{
    DictCompression, GzIndex, GzIndexEntry, GzIndexHeader, DEFAULT_LEVEL, DEFAULT_SPAN, ENTRY_SIZE,
    HEADER_SIZE, MIN_SPAN, WINDOW_SIZE,
};
use super::zstream::{Inflater, DT_BLOCK_BOUNDARY, DT_LAST_BLOCK, GZIP_WBITS};
use crate::error::{FormatError, Result};

/// Compressed bytes read from the source at a time.
const IN_CHUNK: usize = 128 << 10;
/// Decompressed bytes produced per refill, kept after the 32 KiB of history.
const OUT_CHUNK: usize = 256 << 10;

/// Options of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GzIndexOptions {
    /// Distance between access points in uncompressed bytes (at least 64 KiB).
    pub span: u32,
    /// How windows and the entry array are stored.
    pub dict: DictCompression,
}

impl Default for GzIndexOptions {
    fn default() -> Self {
        GzIndexOptions {
            span: DEFAULT_SPAN,
            dict: DictCompression::Zlib(DEFAULT_LEVEL),
        }
    }
}

/// The result of [`GzIndexReader::finish`].
#[derive(Clone, Debug)]
pub struct GzIndexBuild {
    /// The `gzip.meta` file.
    pub meta: Vec<u8>,
    /// Its parsed form.
    pub index: GzIndex,
    /// Gzip members in the stream (only the first is indexed).
    pub members: u64,
    /// Decompressed bytes of all members.
    pub total_uncompressed: u64,
    /// Compressed bytes read (the whole stream).
    pub compressed_size: u64,
}

impl GzIndexBuild {
    /// True if the index covers all the decompressed data (a single-member gzip).
    pub fn covers_all(&self) -> bool {
        self.index.header.uncompress_file_size == self.total_uncompressed
    }
}

struct Candidate {
    bits: u8,
    en_pos: u64,
    de_pos: u64,
    window: Vec<u8>,
}

/// Decompresses a gzip stream while recording a `gzip.meta` index of its first member.
pub struct GzIndexReader<R: Read> {
    src: R,
    opts: GzIndexOptions,
    z: Inflater,
    inbuf: Vec<u8>,
    in_pos: usize,
    in_end: usize,
    src_eof: bool,
    /// `[0, WINDOW_SIZE)` history, then produced output; `out_pos..out_end` is unread.
    out: Vec<u8>,
    out_pos: usize,
    out_end: usize,
    /// Totals over the whole stream.
    total_in: u64,
    total_out: u64,
    members: u64,
    in_member: bool,
    done: bool,
    // Recorder state (first member only).
    indexing: bool,
    expected: u64,
    last: Option<Candidate>,
    spare: Vec<u8>,
    /// Entries recorded so far; `win_pos`/`win_len` are filled in by `finish`.
    entries: Vec<GzIndexEntry>,
    windows: WindowSink,
    first_member_out: u64,
}

/// Where windows go: stored as they are, or zlib-compressed on a worker thread (so that the
/// compression, ~15% of the decompression time, overlaps with it). Blobs keep entry order.
enum WindowSink {
    Stored(Vec<Vec<u8>>),
    Zlib {
        level: u32,
        tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        worker: Option<std::thread::JoinHandle<std::result::Result<Vec<Vec<u8>>, String>>>,
    },
}

impl WindowSink {
    fn push(&mut self, window: Vec<u8>) -> io::Result<()> {
        match self {
            WindowSink::Stored(v) => {
                v.push(window);
                Ok(())
            }
            WindowSink::Zlib { level, tx, worker } => {
                if tx.is_none() {
                    let (t, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
                    let level = *level;
                    *worker = Some(std::thread::spawn(move || {
                        let mut out = Vec::new();
                        for w in rx {
                            out.push(zlib(level, &w)?);
                        }
                        Ok(out)
                    }));
                    *tx = Some(t);
                }
                let stopped = || io::Error::other("the window compression thread stopped");
                tx.as_ref()
                    .ok_or_else(stopped)?
                    .send(window)
                    .map_err(|_| stopped())
            }
        }
    }

    /// All blobs, in entry order.
    fn finish(&mut self) -> Result<Vec<Vec<u8>>> {
        match self {
            WindowSink::Stored(v) => Ok(std::mem::take(v)),
            WindowSink::Zlib { tx, worker, .. } => {
                drop(tx.take());
                match worker.take() {
                    None => Ok(Vec::new()),
                    Some(h) => h
                        .join()
                        .map_err(|_| {
                            FormatError::Invalid("the window compression thread panicked".into())
                        })?
                        .map_err(FormatError::Invalid),
                }
            }
        }
    }
}

/// A zlib stream of `data` at `level`.
fn zlib(level: u32, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), true);
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 64);
    loop {
        let before = c.total_in() as usize;
        let st = c
            .compress_vec(&data[before..], &mut out, flate2::FlushCompress::Finish)
            .map_err(|e| format!("zlib compression failed: {e}"))?;
        if st == flate2::Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

impl<R: Read> GzIndexReader<R> {
    /// With upstream's options (1 MiB span, zlib level 6).
    pub fn new(src: R) -> Result<Self> {
        Self::with_options(src, GzIndexOptions::default())
    }

    pub fn with_options(src: R, opts: GzIndexOptions) -> Result<Self> {
        if opts.span < MIN_SPAN || opts.span > i32::MAX as u32 {
            return Err(FormatError::Invalid(format!(
                "gzip index span {} is outside [{MIN_SPAN}, 2^31)",
                opts.span
            )));
        }
        let windows = match opts.dict {
            DictCompression::None => WindowSink::Stored(Vec::new()),
            DictCompression::Zlib(l) if (-1..=9).contains(&l) => WindowSink::Zlib {
                level: if l < 0 { 6 } else { l as u32 },
                tx: None,
                worker: None,
            },
            DictCompression::Zlib(l) => {
                return Err(FormatError::Invalid(format!(
                    "zlib level {l} is outside [-1, 9]"
                )))
            }
        };
        let z = Inflater::new(GZIP_WBITS).map_err(zerr)?;
        Ok(GzIndexReader {
            src,
            opts,
            z,
            inbuf: vec![0; IN_CHUNK],
            in_pos: 0,
            in_end: 0,
            src_eof: false,
            out: vec![0; WINDOW_SIZE + OUT_CHUNK],
            out_pos: WINDOW_SIZE,
            out_end: WINDOW_SIZE,
            total_in: 0,
            total_out: 0,
            members: 0,
            in_member: false,
            done: false,
            indexing: true,
            expected: 0,
            last: None,
            spare: Vec::new(),
            entries: Vec::new(),
            windows,
            first_member_out: 0,
        })
    }

    /// Reads the rest of the stream (discarding what the caller did not read) and returns
    /// the index.
    pub fn finish(mut self) -> Result<GzIndexBuild> {
        io::copy(&mut self, &mut io::sink())
            .map_err(|e| FormatError::io("decompressing the rest of the gzip stream", e))?;
        if self.members == 0 {
            return Err(FormatError::magic("gzip stream", "the stream is empty"));
        }
        let blobs = self.windows.finish()?;
        if blobs.len() != self.entries.len() {
            return Err(FormatError::Invalid(format!(
                "{} windows for {} entries",
                blobs.len(),
                self.entries.len()
            )));
        }
        let mut win_pos = HEADER_SIZE;
        for (e, b) in self.entries.iter_mut().zip(&blobs) {
            e.win_pos = win_pos;
            e.win_len = b.len() as u32;
            win_pos += b.len() as u64;
        }
        let mut entry_bytes = Vec::with_capacity(self.entries.len() * ENTRY_SIZE);
        for e in &self.entries {
            entry_bytes.extend_from_slice(&e.encode());
        }
        let area = match self.windows {
            WindowSink::Stored(_) => entry_bytes,
            WindowSink::Zlib { level, .. } => {
                zlib(level, &entry_bytes).map_err(FormatError::Invalid)?
            }
        };
        let index_start = win_pos;
        let header = GzIndexHeader {
            major_version: 1,
            minor_version: 0,
            dict: self.opts.dict,
            flag: 0,
            span: self.opts.span,
            window: WINDOW_SIZE as u32,
            index_num: self.entries.len() as u64,
            gzip_file_size: self.total_in,
            index_file_size: index_start + area.len() as u64,
            uncompress_file_size: self.first_member_out,
            index_start,
            index_area_len: area.len() as u64,
        };
        let mut meta = Vec::with_capacity(header.index_file_size as usize);
        meta.extend_from_slice(&header.encode());
        for b in &blobs {
            meta.extend_from_slice(b);
        }
        meta.extend_from_slice(&area);
        Ok(GzIndexBuild {
            meta,
            index: GzIndex {
                header,
                entries: std::mem::take(&mut self.entries),
            },
            members: self.members,
            total_uncompressed: self.total_out,
            compressed_size: self.total_in,
        })
    }

    /// Reads the rest of the stream and writes `gzip.meta` to `w`.
    pub fn finish_to(self, mut w: impl Write) -> Result<GzIndexBuild> {
        let b = self.finish()?;
        w.write_all(&b.meta)
            .and_then(|_| w.flush())
            .map_err(|e| FormatError::io("writing gzip.meta", e))?;
        Ok(b)
    }

    /// Bytes decompressed so far (all members).
    pub fn total_out(&self) -> u64 {
        self.total_out
    }
    /// Compressed bytes consumed so far.
    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    /// Called at a block boundary of the first member.
    fn record(&mut self, bits: u8, en_pos: u64, de_pos: u64) -> io::Result<()> {
        if de_pos < self.expected {
            self.keep_candidate(bits, en_pos, de_pos);
            return Ok(());
        }
        if de_pos > self.expected {
            if let Some(c) = self.last.take() {
                self.add_entry(c.bits, c.en_pos, c.de_pos, c.window)?;
            }
            self.keep_candidate(bits, en_pos, de_pos);
            while self.expected < de_pos {
                self.expected += self.opts.span as u64;
            }
        }
        if de_pos == self.expected {
            if let Some(c) = self.last.take() {
                self.spare = c.window;
            }
            let w = self.out[self.out_end - WINDOW_SIZE..self.out_end].to_vec();
            self.add_entry(bits, en_pos, de_pos, w)?;
            self.expected += self.opts.span as u64;
        }
        Ok(())
    }

    fn keep_candidate(&mut self, bits: u8, en_pos: u64, de_pos: u64) {
        let mut window = match self.last.take() {
            Some(c) => c.window,
            None => std::mem::take(&mut self.spare),
        };
        window.clear();
        window.extend_from_slice(&self.out[self.out_end - WINDOW_SIZE..self.out_end]);
        self.last = Some(Candidate {
            bits,
            en_pos,
            de_pos,
            window,
        });
    }

    fn add_entry(&mut self, bits: u8, en_pos: u64, de_pos: u64, window: Vec<u8>) -> io::Result<()> {
        self.windows.push(window)?;
        self.entries.push(GzIndexEntry {
            de_pos,
            en_pos,
            win_pos: 0,
            win_len: 0,
            bits,
        });
        Ok(())
    }

    fn refill_input(&mut self) -> io::Result<()> {
        if self.in_pos < self.in_end || self.src_eof {
            return Ok(());
        }
        loop {
            match self.src.read(&mut self.inbuf) {
                Ok(0) => {
                    self.src_eof = true;
                    break;
                }
                Ok(n) => {
                    self.in_pos = 0;
                    self.in_end = n;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Produces more output into `out[out_end..]`; sets `done` at the end of the stream.
    fn fill(&mut self) -> io::Result<()> {
        // Keep the last 32 KiB as history for windows; the rest was read.
        if self.out_end + 1 > self.out.len() {
            self.out
                .copy_within(self.out_end - WINDOW_SIZE..self.out_end, 0);
            self.out_pos = WINDOW_SIZE;
            self.out_end = WINDOW_SIZE;
        }
        loop {
            self.refill_input()?;
            if !self.in_member {
                if self.in_pos == self.in_end {
                    // End of input between members.
                    if self.members == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "empty gzip stream",
                        ));
                    }
                    self.done = true;
                    return Ok(());
                }
                if self.members > 0 {
                    self.z.reset(GZIP_WBITS).map_err(zio)?;
                }
                self.in_member = true;
            }
            if self.in_pos == self.in_end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "gzip stream ends inside member {} after {} compressed bytes",
                        self.members + 1,
                        self.total_in
                    ),
                ));
            }
            let step = self
                .z
                .inflate(
                    &self.inbuf[self.in_pos..self.in_end],
                    &mut self.out[self.out_end..],
                    self.indexing,
                )
                .map_err(zio)?;
            self.in_pos += step.consumed;
            self.total_in += step.consumed as u64;
            self.out_end += step.produced;
            self.total_out += step.produced as u64;
            if step.end {
                self.in_member = false;
                self.members += 1;
                if self.indexing {
                    self.indexing = false;
                    self.first_member_out = self.total_out;
                    self.last = None;
                }
            } else if self.indexing {
                let dt = self.z.data_type();
                if dt & DT_BLOCK_BOUNDARY != 0 && dt & DT_LAST_BLOCK == 0 {
                    if dt & 0x38 != 0 {
                        // Never seen: zlib returns whole unused bytes to the input before it
                        // stops, so at most 7 bits are pending.
                        return Err(io::Error::other(format!(
                            "inflater holds {} bits at a block boundary",
                            dt & 0x3f
                        )));
                    }
                    let bits = (dt & 7) as u8;
                    self.record(bits, self.total_in, self.total_out)?;
                }
            }
            if step.produced > 0 || self.out_end == self.out.len() {
                return Ok(());
            }
            if !self.in_member && self.in_pos == self.in_end && self.src_eof {
                self.done = true;
                return Ok(());
            }
        }
    }
}

impl<R: Read> Read for GzIndexReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.out_pos == self.out_end {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = buf.len().min(self.out_end - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

fn zerr(e: super::zstream::ZError) -> FormatError {
    FormatError::corrupt("gzip stream", e.to_string())
}

fn zio(e: super::zstream::ZError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
