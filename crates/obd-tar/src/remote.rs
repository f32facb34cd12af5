//! Applying a whole layer blob **metadata only** (TurboOCI): the stream (plain tar or gzip)
//! is read once; a gzip stream is decompressed through [`GzIndexReader`], which records the
//! blob's random-access index (`gzip.meta`) on the way, and the tar is applied with
//! [`apply_tar_remote`], so file blocks are mapped onto their data in the uncompressed tar
//! instead of being written. The uncompressed stream is hashed for the layer's diff ID.
//!
//! zstd layers are refused (TurboOCI has no random-access index for them), and so are gzip
//! streams of several members (the index, as upstream's, covers only the first).

use std::io::{self, BufRead, BufReader, Read};

use obd_ext4::Ext4;
use obd_format::gzindex::{GzIndexBuild, GzIndexOptions, GzIndexReader};
use obd_format::io::BlockDevice;
use obd_format::FormatError;

use crate::apply::{apply_tar_remote, ApplyError, ApplyStats, RemoteMap};
use crate::decompress::Compression;

/// Why a metadata-only apply failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteApplyError {
    /// The layer cannot be a TurboOCI layer (zstd, several gzip members).
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Building the gzip index failed.
    #[error(transparent)]
    Index(#[from] FormatError),
}

/// What [`apply_layer_remote`] did.
#[derive(Debug)]
pub struct RemoteApplyStats {
    /// Entries, bytes, compression, `tar_bytes` and `diff_id` of the layer.
    pub stats: ApplyStats,
    /// The gzip index of a gzip layer (its `meta` is the `gzip.meta` file), else `None`.
    pub gz_index: Option<GzIndexBuild>,
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Applies the layer blob `stream` (plain tar or gzip) onto `fs` metadata only; `remote`
/// maps file blocks onto the uncompressed tar (see [`apply_tar_remote`]). A gzip layer's
/// index is built with `gz_opts` (upstream's tools use the defaults: 1 MiB span, zlib level
/// 6 windows). The whole stream is read, so `diff_id` covers trailing bytes too.
pub fn apply_layer_remote<D: BlockDevice>(
    fs: &mut Ext4<D>,
    stream: impl Read,
    gz_opts: GzIndexOptions,
    remote: &mut RemoteMap<'_, D>,
) -> Result<RemoteApplyStats, RemoteApplyError> {
    use sha2::Digest;
    let mut br = BufReader::with_capacity(1 << 16, stream);
    let comp = Compression::detect(br.fill_buf().map_err(ApplyError::Io)?);
    let (stats, tar_bytes, hash, gz_index) = match comp {
        Compression::Zstd => {
            return Err(RemoteApplyError::Unsupported(
                "the layer is zstd-compressed; TurboOCI needs gzip or uncompressed layers".into(),
            ))
        }
        Compression::Gzip => {
            let mut h = Hashing {
                inner: GzIndexReader::with_options(br, gz_opts)?,
                hash: sha2::Sha256::new(),
                bytes: 0,
            };
            let stats = apply_tar_remote(fs, &mut h, remote)?;
            io::copy(&mut h, &mut io::sink()).map_err(ApplyError::Io)?;
            let b = h.inner.finish()?;
            if !b.covers_all() {
                return Err(RemoteApplyError::Unsupported(format!(
                    "the layer has {} gzip members; TurboOCI indexes only the first",
                    b.members
                )));
            }
            (stats, h.bytes, h.hash, Some(b))
        }
        Compression::None => {
            let mut h = Hashing {
                inner: br,
                hash: sha2::Sha256::new(),
                bytes: 0,
            };
            let stats = apply_tar_remote(fs, &mut h, remote)?;
            io::copy(&mut h, &mut io::sink()).map_err(ApplyError::Io)?;
            (stats, h.bytes, h.hash, None)
        }
    };
    let mut stats = stats;
    stats.tar_bytes = tar_bytes;
    stats.diff_id = format!("sha256:{}", hex::encode(hash.finalize()));
    stats.compression = Some(match comp {
        Compression::Gzip => "gzip",
        _ => "none",
    });
    Ok(RemoteApplyStats { stats, gz_index })
}
