//! ZFile: overlaybd's block-compressed container with random access.
//!
//! Layout: `header(512) · blocks (each compressed independently, + u32 CRC when verify) ·
//! index (u32 compressed length per block, CRC included) · trailer(512)`. The header and
//! trailer share a 96-byte struct; its `digest` is the raw CRC32C (seed 0) of all 512 bytes
//! with the digest field zeroed. Block CRCs use seed 100007.
//!
//! Writers produce a plain header (flags 0x13) and a trailer (0x16); when the output can be
//! rewritten in place, the header is overwritten at the end with the index fields (0x1B) so
//! readers need not look at the trailer, as `overlaybd-commit -z` does.

use std::io::{self, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use crate::crc::{crc32c_raw, ZFILE_BLOCK_SEED};
use crate::error::{FormatError, Result};
use crate::io::ReadAt;

pub const HEADER_SIZE: u64 = 512;
pub const MAGIC0: [u8; 8] = *b"ZFile\0\x01\0";
pub const MAGIC1: [u8; 16] = *b"tuji.yyf@Alibaba";
pub const STRUCT_SIZE: u32 = 96;

pub const FLAG_HEADER: u64 = 1;
pub const FLAG_TYPE: u64 = 2;
pub const FLAG_SEALED: u64 = 4;
pub const FLAG_HEADER_OVERWRITE: u64 = 8;
pub const FLAG_DIGEST: u64 = 0x10;

/// Largest block count a reader accepts (upstream's limit).
pub const MAX_BLOCKS: u64 = 1_000_000_000;

/// Compression algorithm of the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Lz4,
    Zstd,
}

impl Algorithm {
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Lz4 => 1,
            Algorithm::Zstd => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Algorithm::Lz4),
            2 => Some(Algorithm::Zstd),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lz4" => Ok(Algorithm::Lz4),
            "zstd" => Ok(Algorithm::Zstd),
            o => Err(format!("unknown algorithm {o:?} (lz4 or zstd)")),
        }
    }
}

/// Writer options. The defaults are upstream's: LZ4, 4 KiB blocks, per-block CRC.
#[derive(Clone, Copy, Debug)]
pub struct ZFileOptions {
    pub algorithm: Algorithm,
    pub block_size: u32,
    pub verify: bool,
    /// Compression threads; the output bytes do not depend on it.
    pub threads: usize,
}

impl Default for ZFileOptions {
    fn default() -> Self {
        ZFileOptions {
            algorithm: Algorithm::Lz4,
            block_size: 4096,
            verify: true,
            threads: 1,
        }
    }
}

impl ZFileOptions {
    /// Checks the block size the way the tools do: a power of two from 4 to 64 KiB.
    pub fn validate(&self) -> Result<()> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(4096..=65536).contains(&bs) {
            return Err(FormatError::Invalid(format!(
                "block size {bs} must be a power of two from 4 KiB to 64 KiB"
            )));
        }
        Ok(())
    }
}

/// The decoded header or trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZHeader {
    pub digest: u32,
    pub flags: u64,
    pub index_offset: u64,
    /// Number of blocks.
    pub index_size: u64,
    pub original_file_size: u64,
    pub index_crc: u32,
    pub block_size: u32,
    pub algo: u8,
    pub level: u8,
    pub use_dict: u8,
    pub dict_size: u32,
    pub verify: bool,
}

impl ZHeader {
    pub fn has(&self, f: u64) -> bool {
        self.flags & f != 0
    }

    /// True if `b` starts with the ZFile magic numbers.
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 24 && b[..8] == MAGIC0 && b[8..24] == MAGIC1
    }

    /// Encodes the 512-byte block; the digest is computed when `FLAG_DIGEST` is set.
    pub fn encode(&self) -> [u8; HEADER_SIZE as usize] {
        let mut b = [0u8; HEADER_SIZE as usize];
        b[0..8].copy_from_slice(&MAGIC0);
        b[8..24].copy_from_slice(&MAGIC1);
        b[24..28].copy_from_slice(&STRUCT_SIZE.to_le_bytes());
        b[32..40].copy_from_slice(&self.flags.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.index_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.original_file_size.to_le_bytes());
        b[64..68].copy_from_slice(&self.index_crc.to_le_bytes());
        b[72..76].copy_from_slice(&self.block_size.to_le_bytes());
        b[76] = self.algo;
        b[77] = self.level;
        b[78] = self.use_dict;
        b[84..88].copy_from_slice(&self.dict_size.to_le_bytes());
        b[88] = self.verify as u8;
        if self.has(FLAG_DIGEST) {
            let d = crc32c_raw(0, &b);
            b[28..32].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Decodes a 512-byte block, checking the magic numbers only.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_SIZE as usize || !Self::has_magic(b) {
            return Err(FormatError::magic("ZFile", "magic numbers do not match"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Ok(ZHeader {
            digest: u32_at(28),
            flags: u64_at(32),
            index_offset: u64_at(40),
            index_size: u64_at(48),
            original_file_size: u64_at(56),
            index_crc: u32_at(64),
            block_size: u32_at(72),
            algo: b[76],
            level: b[77],
            use_dict: b[78],
            dict_size: u32_at(84),
            verify: b[88] != 0,
        })
    }

    /// The digest of a raw 512-byte block (digest field taken as zero).
    pub fn compute_digest(b: &[u8]) -> u32 {
        let mut c = [0u8; HEADER_SIZE as usize];
        c.copy_from_slice(&b[..HEADER_SIZE as usize]);
        c[28..32].fill(0);
        crc32c_raw(0, &c)
    }
}

/// Worst-case stored size of one block (compressed bound plus CRC).
fn max_stored(bs: u32) -> u64 {
    bs as u64 + bs as u64 / 128 + 128 + 4
}

/// Compresses blocks one at a time, reusing its compression context.
pub struct BlockCompressor {
    algo: Algorithm,
    verify: bool,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// LZ4 output space, zeroed once (LZ4 writes into an initialised slice).
    lz4_out: Vec<u8>,
}

impl BlockCompressor {
    pub fn new(algo: Algorithm, verify: bool) -> Result<Self> {
        let zstd = match algo {
            Algorithm::Zstd => Some(
                zstd::bulk::Compressor::new(3).map_err(|e| FormatError::io("zstd context", e))?,
            ),
            Algorithm::Lz4 => None,
        };
        Ok(BlockCompressor {
            algo,
            verify,
            zstd,
            lz4_out: Vec::new(),
        })
    }

    /// Compresses `data` into `out` (appending the CRC when `verify`).
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        match (self.algo, &mut self.zstd) {
            (Algorithm::Zstd, Some(z)) => {
                out.reserve(zstd::zstd_safe::compress_bound(data.len()) + 4);
                z.compress_to_buffer(data, out)
                    .map_err(|e| FormatError::io("zstd compression", e))?;
            }
            _ => {
                let max = lz4_flex::block::get_maximum_output_size(data.len());
                if self.lz4_out.len() < max {
                    self.lz4_out.resize(max, 0);
                }
                let n = lz4_flex::block::compress_into(data, &mut self.lz4_out)
                    .map_err(|e| FormatError::Invalid(format!("lz4 compression failed: {e}")))?;
                out.extend_from_slice(&self.lz4_out[..n]);
            }
        }
        if self.verify {
            let c = crc32c_raw(ZFILE_BLOCK_SEED, out);
            out.extend_from_slice(&c.to_le_bytes());
        }
        Ok(())
    }
}

/// Summary of a finished ZFile.
#[derive(Clone, Debug, Default)]
pub struct ZFileInfo {
    pub header: ZHeader,
    /// Total bytes written (header to trailer).
    pub total_size: u64,
}

/// Blocks buffered before a (possibly parallel) compression round.
const BATCH_BLOCKS: usize = 256;

/// Streaming ZFile writer. Call [`ZFileWriter::finish`] (or
/// [`ZFileWriter::finish_overwrite_header`] when the sink can seek) at the end.
pub struct ZFileWriter<W: Write> {
    out: W,
    opts: ZFileOptions,
    pending: Vec<u8>,
    index: Vec<u32>,
    raw_size: u64,
    written: u64,
    scratch: Vec<Vec<u8>>,
    comp: Option<BlockCompressor>,
}

impl<W: Write> ZFileWriter<W> {
    pub fn new(mut out: W, opts: ZFileOptions) -> Result<Self> {
        opts.validate()?;
        let h = Self::base_header(&opts, FLAG_HEADER | FLAG_TYPE | FLAG_DIGEST);
        out.write_all(&h.encode())
            .map_err(|e| FormatError::io("writing the ZFile header", e))?;
        Ok(ZFileWriter {
            out,
            opts,
            pending: Vec::with_capacity(opts.block_size as usize * BATCH_BLOCKS),
            index: Vec::new(),
            raw_size: 0,
            written: HEADER_SIZE,
            scratch: Vec::new(),
            comp: None,
        })
    }

    fn base_header(opts: &ZFileOptions, flags: u64) -> ZHeader {
        ZHeader {
            flags,
            block_size: opts.block_size,
            algo: opts.algorithm.code(),
            verify: opts.verify,
            ..Default::default()
        }
    }

    /// Compresses and writes every complete block of `pending` (all of it when `all`).
    fn drain(&mut self, all: bool) -> Result<()> {
        let _cpu = obd_meter::enter(obd_meter::Stage::Compress);
        let bs = self.opts.block_size as usize;
        let nblocks = if all {
            self.pending.len().div_ceil(bs)
        } else {
            self.pending.len() / bs
        };
        if nblocks == 0 {
            return Ok(());
        }
        let used = (nblocks * bs).min(self.pending.len());
        let chunks: Vec<&[u8]> = self.pending[..used].chunks(bs).collect();
        self.scratch.resize_with(nblocks, Vec::new);
        let (algo, verify) = (self.opts.algorithm, self.opts.verify);
        let threads = self.opts.threads.clamp(1, 64).min(nblocks);
        if threads <= 1 {
            let comp = match &mut self.comp {
                Some(c) => c,
                None => self.comp.insert(BlockCompressor::new(algo, verify)?),
            };
            for (c, o) in chunks.iter().zip(self.scratch.iter_mut()) {
                comp.compress(c, o)?;
            }
        } else {
            let per = nblocks.div_ceil(threads);
            std::thread::scope(|sc| -> Result<()> {
                let hs: Vec<_> = chunks
                    .chunks(per)
                    .zip(self.scratch.chunks_mut(per))
                    .map(|(cs, os)| {
                        sc.spawn(move || -> Result<()> {
                            let _cpu = obd_meter::enter(obd_meter::Stage::Compress);
                            let mut comp = BlockCompressor::new(algo, verify)?;
                            for (c, o) in cs.iter().zip(os.iter_mut()) {
                                comp.compress(c, o)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().map_err(|_| {
                        FormatError::Invalid("compression thread panicked".into())
                    })??;
                }
                Ok(())
            })?;
        }
        for o in &self.scratch[..nblocks] {
            self.out
                .write_all(o)
                .map_err(|e| FormatError::io("writing ZFile blocks", e))?;
            self.index.push(o.len() as u32);
            self.written += o.len() as u64;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Writes the index and the trailer; returns the sink and what was written.
    pub fn finish(mut self) -> Result<(W, ZFileInfo)> {
        self.drain(true)?;
        let mut ib = Vec::with_capacity(self.index.len() * 4);
        for x in &self.index {
            ib.extend_from_slice(&x.to_le_bytes());
        }
        let mut t = Self::base_header(&self.opts, FLAG_TYPE | FLAG_SEALED | FLAG_DIGEST);
        t.index_offset = self.written;
        t.index_size = self.index.len() as u64;
        t.original_file_size = self.raw_size;
        t.index_crc = crc32c_raw(0, &ib);
        let wr = |e| FormatError::io("writing the ZFile index and trailer", e);
        self.out.write_all(&ib).map_err(wr)?;
        self.out.write_all(&t.encode()).map_err(wr)?;
        self.out.flush().map_err(wr)?;
        let total = self.written + ib.len() as u64 + HEADER_SIZE;
        Ok((
            self.out,
            ZFileInfo {
                header: t,
                total_size: total,
            },
        ))
    }
}

impl<W: Write + Seek> ZFileWriter<W> {
    /// Like [`ZFileWriter::finish`], then rewrites the header in place with the index
    /// fields and the overwrite flag (0x1B). The ZFile must start at position 0 of `W`.
    pub fn finish_overwrite_header(self) -> Result<(W, ZFileInfo)> {
        let (mut out, mut info) = self.finish()?;
        let mut h = info.header.clone();
        h.flags = FLAG_HEADER | FLAG_TYPE | FLAG_HEADER_OVERWRITE | FLAG_DIGEST;
        let e = |e| FormatError::io("rewriting the ZFile header", e);
        let end = out.stream_position().map_err(e)?;
        out.seek(SeekFrom::Start(0)).map_err(e)?;
        out.write_all(&h.encode()).map_err(e)?;
        out.seek(SeekFrom::Start(end)).map_err(e)?;
        out.flush().map_err(e)?;
        info.header = h;
        Ok((out, info))
    }
}

impl<W: Write> Write for ZFileWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.raw_size += buf.len() as u64;
        if self.pending.len()
            >= self.opts.block_size as usize * BATCH_BLOCKS * self.opts.threads.max(1)
        {
            self.drain(false)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static ZSTD_DCTX: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd decompression context"));
}

/// Random-access reader of a ZFile.
pub struct ZFileReader {
    src: Arc<dyn ReadAt>,
    header: ZHeader,
    /// The header or trailer the index fields were taken from.
    info: ZHeader,
    algo: Algorithm,
    /// Byte offset of block i is `offsets[i]`; `offsets[n]` is the end of the last block.
    offsets: Vec<u64>,
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl ZFileReader {
    /// Returns `Ok(true)` if `src` starts with a ZFile header whose digest (if any) is valid,
    /// `Ok(false)` if it is not a ZFile, and an error for a ZFile header with a bad digest.
    pub fn detect(src: &dyn ReadAt) -> Result<bool> {
        let mut b = [0u8; HEADER_SIZE as usize];
        if src.size() < HEADER_SIZE {
            return Ok(false);
        }
        src.read_exact_at(&mut b, 0)
            .map_err(|e| FormatError::io("reading a ZFile header", e))?;
        if !ZHeader::has_magic(&b) {
            return Ok(false);
        }
        let h = ZHeader::decode(&b)?;
        if !h.has(FLAG_HEADER) {
            return Ok(false);
        }
        check_digest(&h, &b, "ZFile header")?;
        Ok(true)
    }

    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self> {
        let size = src.size();
        let mut b = [0u8; HEADER_SIZE as usize];
        if size < 2 * HEADER_SIZE {
            return Err(FormatError::magic(
                "ZFile",
                format!("{size} bytes is too small"),
            ));
        }
        src.read_exact_at(&mut b, 0)
            .map_err(|e| FormatError::io("reading the ZFile header", e))?;
        let header = ZHeader::decode(&b)?;
        if !header.has(FLAG_HEADER) {
            return Err(FormatError::corrupt(
                "ZFile header",
                "header flag is not set",
            ));
        }
        check_digest(&header, &b, "ZFile header")?;
        let info = if header.has(FLAG_HEADER_OVERWRITE) {
            header.clone()
        } else {
            src.read_exact_at(&mut b, size - HEADER_SIZE)
                .map_err(|e| FormatError::io("reading the ZFile trailer", e))?;
            let t = ZHeader::decode(&b).map_err(|_| {
                FormatError::corrupt("ZFile", "no trailer in the last 512 bytes (truncated?)")
            })?;
            if t.has(FLAG_HEADER) || !t.has(FLAG_TYPE) || !t.has(FLAG_SEALED) {
                return Err(FormatError::corrupt(
                    "ZFile trailer",
                    format!("flags {:#x}", t.flags),
                ));
            }
            t
        };
        let bs = info.block_size;
        if !bs.is_power_of_two() || !(512..=(1 << 20)).contains(&bs) {
            return Err(FormatError::corrupt("ZFile", format!("block size {bs}")));
        }
        let algo = Algorithm::from_code(info.algo).ok_or_else(|| {
            FormatError::corrupt("ZFile", format!("unsupported algorithm code {}", info.algo))
        })?;
        let n = info.index_size;
        let data_start = HEADER_SIZE + info.dict_size as u64;
        if n > MAX_BLOCKS
            || info.index_offset < data_start
            || info.index_offset > size
            || n * 4 > size - info.index_offset
        {
            return Err(FormatError::corrupt(
                "ZFile",
                format!(
                    "index of {n} blocks at {} does not fit in {size} bytes",
                    info.index_offset
                ),
            ));
        }
        if n != info.original_file_size.div_ceil(bs as u64) {
            return Err(FormatError::corrupt(
                "ZFile",
                format!(
                    "{n} blocks of {bs} bytes cannot hold {} bytes",
                    info.original_file_size
                ),
            ));
        }
        let mut ib = vec![0u8; (n * 4) as usize];
        src.read_exact_at(&mut ib, info.index_offset)
            .map_err(|e| FormatError::io("reading the ZFile index", e))?;
        if info.has(FLAG_DIGEST) {
            let c = crc32c_raw(0, &ib);
            if c != info.index_crc {
                return Err(FormatError::Checksum {
                    what: "ZFile index".into(),
                    stored: info.index_crc,
                    computed: c,
                });
            }
        }
        let mut offsets = Vec::with_capacity(n as usize + 1);
        let mut pos = data_start;
        let min = if info.verify { 5 } else { 1 };
        for (i, c) in ib.chunks_exact(4).enumerate() {
            let l = u32::from_le_bytes(c.try_into().unwrap()) as u64;
            if l < min || l > max_stored(bs) {
                return Err(FormatError::corrupt(
                    "ZFile index",
                    format!("block {i} has an impossible length {l}"),
                ));
            }
            offsets.push(pos);
            pos += l;
        }
        offsets.push(pos);
        if pos > info.index_offset {
            return Err(FormatError::corrupt(
                "ZFile index",
                format!(
                    "blocks end at {pos}, past the index at {}",
                    info.index_offset
                ),
            ));
        }
        Ok(ZFileReader {
            src,
            header,
            info,
            algo,
            offsets,
            cache: Mutex::new(None),
        })
    }

    pub fn header(&self) -> &ZHeader {
        &self.header
    }
    /// The block carrying the index fields (the trailer, or the overwritten header).
    pub fn info(&self) -> &ZHeader {
        &self.info
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }
    pub fn block_count(&self) -> u64 {
        self.info.index_size
    }
    pub fn compressed_len(&self, i: u64) -> u64 {
        self.offsets[i as usize + 1] - self.offsets[i as usize]
    }

    fn block_len(&self, i: u64) -> usize {
        let bs = self.info.block_size as u64;
        (self.info.original_file_size - i * bs).min(bs) as usize
    }

    /// Decompresses block `i` into `out` (resized to the block's length), checking its CRC.
    pub fn read_block(&self, i: u64, out: &mut Vec<u8>) -> Result<()> {
        let (b, e) = (self.offsets[i as usize], self.offsets[i as usize + 1]);
        let mut c = vec![0u8; (e - b) as usize];
        self.src
            .read_exact_at(&mut c, b)
            .map_err(|e| FormatError::io(format!("reading ZFile block {i}"), e))?;
        self.decode_block(i, &c, out)
    }

    /// Decodes the stored bytes `c` of block `i`.
    pub fn decode_block(&self, i: u64, c: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut c = c;
        if self.info.verify {
            let (data, crc) = c.split_at(c.len() - 4);
            let stored = u32::from_le_bytes(crc.try_into().unwrap());
            let computed = crc32c_raw(ZFILE_BLOCK_SEED, data);
            if stored != computed {
                return Err(FormatError::Checksum {
                    what: format!("ZFile block {i}"),
                    stored,
                    computed,
                });
            }
            c = data;
        }
        let want = self.block_len(i);
        out.clear();
        out.resize(self.info.block_size as usize, 0);
        let got = match self.algo {
            Algorithm::Lz4 => lz4_flex::block::decompress_into(c, out)
                .map_err(|e| FormatError::corrupt("ZFile block", format!("block {i}: lz4: {e}")))?,
            Algorithm::Zstd => zstd::bulk::decompress_to_buffer(c, &mut out[..]).map_err(|e| {
                FormatError::corrupt("ZFile block", format!("block {i}: zstd: {e}"))
            })?,
        };
        if got != want {
            return Err(FormatError::corrupt(
                "ZFile block",
                format!("block {i} decompressed to {got} bytes, expected {want}"),
            ));
        }
        out.truncate(want);
        Ok(())
    }

    /// Checks every block's CRC and decompression; returns the block count.
    pub fn verify_all(&self) -> Result<u64> {
        let mut out = Vec::new();
        self.for_each_block(|_, _| Ok(()), &mut out)?;
        Ok(self.block_count())
    }

    /// Streams every block in order through `f(index, data)`, reading the compressed bytes
    /// in large chunks.
    pub fn for_each_block(
        &self,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let n = self.block_count();
        let mut i = 0;
        let mut buf = Vec::new();
        while i < n {
            let b = self.offsets[i as usize];
            let mut j = i + 1;
            while j < n && self.offsets[j as usize + 1] - b <= 4 << 20 {
                j += 1;
            }
            let e = self.offsets[j as usize];
            buf.resize((e - b) as usize, 0);
            self.src
                .read_exact_at(&mut buf, b)
                .map_err(|e| FormatError::io("reading ZFile blocks", e))?;
            for k in i..j {
                let s = (self.offsets[k as usize] - b) as usize;
                let t = (self.offsets[k as usize + 1] - b) as usize;
                self.decode_block(k, &buf[s..t], out)?;
                f(k, out)?;
            }
            i = j;
        }
        Ok(())
    }
}

fn check_digest(h: &ZHeader, raw: &[u8], what: &str) -> Result<()> {
    if h.has(FLAG_DIGEST) {
        let c = ZHeader::compute_digest(raw);
        if c != h.digest {
            return Err(FormatError::Checksum {
                what: what.into(),
                stored: h.digest,
                computed: c,
            });
        }
    }
    Ok(())
}

impl ReadAt for ZFileReader {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let size = self.info.original_file_size;
        let n = crate::lsmt::ro::clamp(buf.len(), off, size);
        let bs = self.info.block_size as u64;
        let mut done = 0usize;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        while done < n {
            let pos = off + done as u64;
            let i = pos / bs;
            let within = (pos - i * bs) as usize;
            let hit = matches!(&*cache, Some((ci, _)) if *ci == i);
            if !hit {
                let mut v = cache.take().map(|(_, v)| v).unwrap_or_default();
                self.read_block(i, &mut v)?;
                *cache = Some((i, v));
            }
            let data = &cache.as_ref().unwrap().1;
            let k = (data.len() - within).min(n - done);
            buf[done..done + k].copy_from_slice(&data[within..within + k]);
            done += k;
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.info.original_file_size
    }
}
