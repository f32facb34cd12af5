//! Opening layer files whatever their wrapping, and describing them.
//!
//! A layer blob is, from the outside in: optionally a tar wrapper, optionally a ZFile,
//! then an LSMT file (committed, sealed, or a writable layer's data/index file).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{FormatError, Result};
use crate::io::{FileSource, ReadAt, Slice};
use crate::lsmt::header::{HeaderTrailer, HT_SPACE};
use crate::lsmt::LsmtRo;
use crate::tarwrap::{self, TarPayload};
use crate::zfile::ZFileReader;

/// A file with its wrappers peeled off.
pub struct Unwrapped {
    pub tar: Option<TarPayload>,
    pub zfile: Option<Arc<ZFileReader>>,
    /// The innermost bytes (LSMT, or anything else).
    pub payload: Arc<dyn ReadAt>,
}

/// Peels the tar wrapper and the ZFile off `src`, if present.
pub fn unwrap(src: Arc<dyn ReadAt>) -> Result<Unwrapped> {
    let tar = tarwrap::detect(src.as_ref())?;
    let mut payload: Arc<dyn ReadAt> = match tar {
        Some(t) => Arc::new(
            Slice::new(src, t.offset, t.size).map_err(|e| FormatError::io("tar payload", e))?,
        ),
        None => src,
    };
    let mut zfile = None;
    if ZFileReader::detect(payload.as_ref())? {
        let z = Arc::new(ZFileReader::open(payload)?);
        payload = z.clone();
        zfile = Some(z);
    }
    Ok(Unwrapped {
        tar,
        zfile,
        payload,
    })
}

/// Opens a file by path as a byte source.
pub fn open_file(path: &Path) -> Result<Arc<dyn ReadAt>> {
    let f = FileSource::open(path)
        .map_err(|e| FormatError::io(format!("opening {}", path.display()), e))?;
    Ok(Arc::new(f))
}

/// Opens a committed layer file (raw LSMT, ZFile, or tar-wrapped either).
pub fn open_layer(path: &Path) -> Result<LsmtRo> {
    let u = unwrap(open_file(path)?)?;
    LsmtRo::open(u.payload).map_err(|e| match e {
        FormatError::BadMagic { what, detail } => FormatError::BadMagic {
            what,
            detail: format!("{} ({detail})", path.display()),
        },
        o => o,
    })
}

fn ht_json(h: &HeaderTrailer) -> Value {
    json!({
        "flags": h.flags,
        "is_header": h.is_header(),
        "is_data_file": h.is_data_file(),
        "is_sealed": h.is_sealed(),
        "is_sparse": h.is_sparse(),
        "index_offset": h.index_offset,
        "index_size": h.index_size,
        "virtual_size": h.virtual_size,
        "uuid": h.uuid.to_string(),
        "parent_uuid": h.parent_uuid.to_string(),
        "version": format!("{}.{}", h.version, h.sub_version),
        "user_tag": String::from_utf8_lossy(&h.user_tag),
    })
}

/// Describes a file as JSON: its wrappers, ZFile header/trailer, LSMT header/trailer and
/// index statistics.
pub fn inspect(path: &Path) -> Result<Value> {
    let src = open_file(path)?;
    let size = src.size();
    let u = unwrap(src)?;
    let mut v = json!({ "path": path.display().to_string(), "file_size": size });
    if let Some(t) = &u.tar {
        v["tar"] = json!({ "payload_offset": t.offset, "payload_size": t.size, "pax": t.pax });
    }
    if let Some(z) = &u.zfile {
        let i = z.info();
        let sizes: Vec<u64> = (0..z.block_count()).map(|k| z.compressed_len(k)).collect();
        v["zfile"] = json!({
            "header_flags": z.header().flags,
            "info_from": if z.header().has(crate::zfile::FLAG_HEADER_OVERWRITE) { "header" } else { "trailer" },
            "flags": i.flags,
            "algorithm": z.algorithm().name(),
            "block_size": i.block_size,
            "verify": i.verify,
            "blocks": i.index_size,
            "index_offset": i.index_offset,
            "original_file_size": i.original_file_size,
            "compressed_data_bytes": sizes.iter().sum::<u64>(),
            "max_block_bytes": sizes.iter().max().copied().unwrap_or(0),
        });
    }
    let p = u.payload;
    let mut hb = vec![0u8; HT_SPACE as usize];
    if p.size() < HT_SPACE || p.read_exact_at(&mut hb, 0).is_err() || !HeaderTrailer::has_magic(&hb)
    {
        v["kind"] = json!(if u.zfile.is_some() { "zfile" } else { "raw" });
        return Ok(v);
    }
    let h = HeaderTrailer::decode(&hb)?;
    v["lsmt_header"] = ht_json(&h);
    if !h.is_data_file() {
        v["kind"] = json!("lsmt-rw-index");
        v["records"] = json!((p.size() - HT_SPACE) / 16);
        return Ok(v);
    }
    match LsmtRo::open(p.clone()) {
        Ok(ro) => {
            let idx = ro.index();
            let zeroed = idx.iter().filter(|s| s.zeroed).count();
            let data_sectors: u64 = idx
                .iter()
                .filter(|s| !s.zeroed)
                .map(|s| s.length as u64)
                .sum();
            let zero_sectors: u64 = idx
                .iter()
                .filter(|s| s.zeroed)
                .map(|s| s.length as u64)
                .sum();
            v["kind"] = json!(if h.is_sealed() {
                "lsmt-ro"
            } else {
                "lsmt-sealed-rw"
            });
            v["lsmt_trailer"] = ht_json(ro.trailer());
            v["index"] = json!({
                "entries": ro.raw_index_entries(),
                "valid": idx.len(),
                "padding": ro.raw_index_entries() - idx.len() as u64,
                "zeroed": zeroed,
                "data_bytes": data_sectors * 512,
                "zeroed_bytes": zero_sectors * 512,
                "first_offset": idx.first().map(|s| s.offset * 512),
                "last_end": idx.last().map(|s| s.end() * 512),
            });
        }
        Err(e) if h.is_sealed() => {
            // A committed TurboOCI warp layer: nothing in its bytes marks it as one, but its
            // tag-1 entries point into a target file, so only a warp open accepts it.
            let ro = LsmtRo::open_warp(p.clone(), Arc::new(NoTarget)).map_err(|_| e)?;
            let idx = ro.index();
            let remote: Vec<_> = idx.iter().filter(|s| s.tag == 1).collect();
            let local_sectors: u64 = idx
                .iter()
                .filter(|s| s.tag == 0 && !s.zeroed)
                .map(|s| s.length as u64)
                .sum();
            v["kind"] = json!("lsmt-warp-ro");
            v["lsmt_trailer"] = ht_json(ro.trailer());
            v["index"] = json!({
                "entries": ro.raw_index_entries(),
                "valid": idx.len(),
                "remote": remote.len(),
                "remote_bytes": remote.iter().map(|s| s.length as u64 * 512).sum::<u64>(),
                "fs_meta_bytes": local_sectors * 512,
                "first_offset": idx.first().map(|s| s.offset * 512),
                "last_end": idx.last().map(|s| s.end() * 512),
            });
        }
        Err(_) => {
            v["kind"] = json!(if h.is_sparse() {
                "lsmt-rw-data-sparse"
            } else {
                "lsmt-rw-data"
            });
        }
    }
    Ok(v)
}

/// A stand-in target for inspecting warp layers: every offset exists and reads as zeros.
struct NoTarget;

impl ReadAt for NoTarget {
    fn read_at(&self, buf: &mut [u8], _off: u64) -> std::io::Result<usize> {
        buf.fill(0);
        Ok(buf.len())
    }
    fn size(&self) -> u64 {
        u64::MAX >> 12
    }
}
