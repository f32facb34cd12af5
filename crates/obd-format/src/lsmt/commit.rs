//! Compaction of a layer's mappings into a committed read-only layer (upstream `compact`).
//!
//! The output is written strictly sequentially (so it can stream into a ZFile writer):
//! header (flags 0x07) · data copied in 64-sector steps, one entry per step · the index,
//! compressed greedily and padded with invalid entries to a multiple of 256 · trailer
//! (flags 0x06). Zeroed entries carry the current data cursor as `moffset`.
//!
//! [`commit_warp`] is the TurboOCI variant: remote (tag 1) entries are kept as they are, tags
//! stay in the index, and the index is not padded.

use std::io::Write;

use super::header::{HeaderTrailer, FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SPACE};
use super::index;
use super::segment::Segment;
use super::SECTOR;
use crate::error::{FormatError, Result};
use crate::io::ReadAt;
use crate::uuid::Uuid;

/// Sectors per copy step (32 KiB), which decides the entry boundaries of the output.
const STEP_SECTORS: u64 = 64;
/// Sectors read from the source at a time.
const READ_SECTORS: u64 = 2048;

/// Header fields of the committed layer.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub virtual_size: u64,
    /// `None` writes the null UUID, as `overlaybd-commit` without `--uuid`.
    pub uuid: Option<Uuid>,
    pub parent_uuid: Uuid,
    /// Commit message (at most 256 bytes).
    pub user_tag: Vec<u8>,
}

/// What a commit wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub data_bytes: u64,
    pub index_entries: u64,
    pub valid_entries: u64,
    pub total_bytes: u64,
}

/// Writes the committed layer for `segments` (sorted, non-overlapping). Data of a segment
/// with tag `t` is read from `sources[t]` at `moffset * 512`.
pub fn commit<W: Write>(
    segments: &[Segment],
    sources: &[&dyn ReadAt],
    opts: &CommitOptions,
    out: W,
) -> Result<CommitStats> {
    commit_impl(segments, sources, opts, out, false)
}

/// Writes a committed TurboOCI **warp** layer (upstream `LSMTWarpFile::commit`): entries with
/// tag 1 ([`super::warp::TAG_REMOTE`]) point into the target file and are written as they are
/// (tag and `moffset` kept); zeroed entries get the data cursor as usual; the other entries
/// (tag 0, fs-meta) have their data copied from `fsmeta` at `moffset * 512`. The index is
/// compressed greedily, keeps the tags, and is **not** padded. Header flags 0x07, trailer 0x06.
pub fn commit_warp<W: Write>(
    segments: &[Segment],
    fsmeta: &dyn ReadAt,
    opts: &CommitOptions,
    out: W,
) -> Result<CommitStats> {
    commit_impl(segments, &[fsmeta], opts, out, true)
}

fn commit_impl<W: Write>(
    segments: &[Segment],
    sources: &[&dyn ReadAt],
    opts: &CommitOptions,
    mut out: W,
    warp: bool,
) -> Result<CommitStats> {
    let mut ht = HeaderTrailer::new(FLAG_HEADER | FLAG_DATA | FLAG_SEALED, opts.virtual_size);
    ht.uuid = opts.uuid.unwrap_or(Uuid::NULL);
    ht.parent_uuid = opts.parent_uuid;
    ht.user_tag = opts.user_tag.clone();
    let wr = |e| FormatError::io("writing the committed layer", e);
    out.write_all(&ht.encode()?).map_err(wr)?;

    let mut cur = HT_SPACE / SECTOR;
    let mut entries: Vec<Segment> = Vec::with_capacity(segments.len());
    let mut buf = vec![0u8; (READ_SECTORS * SECTOR) as usize];
    let mut prev_end = 0;
    for (i, m) in segments.iter().enumerate() {
        if m.length == 0 || (i > 0 && m.offset < prev_end) {
            return Err(FormatError::Invalid(format!(
                "commit input entry {i} {m:?} is empty or out of order"
            )));
        }
        prev_end = m.end();
        if warp && m.tag == super::warp::TAG_REMOTE {
            entries.push(*m);
            continue;
        }
        if m.zeroed {
            entries.push(Segment { moffset: cur, ..*m });
            continue;
        }
        let src = *sources.get(m.tag as usize).ok_or_else(|| {
            FormatError::Invalid(format!("commit input entry {m:?} names a missing source"))
        })?;
        let mut done = 0u64;
        while done < m.length as u64 {
            let n = (m.length as u64 - done).min(READ_SECTORS);
            let chunk = &mut buf[..(n * SECTOR) as usize];
            super::ro::read_padded(src, chunk, (m.moffset + done) * SECTOR)
                .map_err(|e| FormatError::io("reading layer data to commit", e))?;
            out.write_all(chunk).map_err(wr)?;
            let mut s = 0;
            while s < n {
                let l = (n - s).min(STEP_SECTORS);
                entries.push(Segment {
                    offset: m.offset + done + s,
                    length: l as u32,
                    moffset: cur,
                    zeroed: false,
                    tag: m.tag,
                });
                cur += l;
                s += l;
            }
            done += n;
        }
    }
    index::compress(&mut entries);
    let valid = entries.len() as u64;
    if !warp && !entries.len().is_multiple_of(256) {
        entries.resize(entries.len().div_ceil(256) * 256, Segment::INVALID);
    }
    let mut ib = Vec::with_capacity(entries.len() * 16);
    for e in &entries {
        ib.extend_from_slice(&e.encode());
    }
    out.write_all(&ib).map_err(wr)?;
    ht.flags = FLAG_DATA | FLAG_SEALED;
    ht.index_offset = cur * SECTOR;
    ht.index_size = entries.len() as u64;
    out.write_all(&ht.encode()?).map_err(wr)?;
    out.flush().map_err(wr)?;
    Ok(CommitStats {
        data_bytes: cur * SECTOR - HT_SPACE,
        index_entries: entries.len() as u64,
        valid_entries: valid,
        total_bytes: cur * SECTOR + ib.len() as u64 + HT_SPACE,
    })
}
