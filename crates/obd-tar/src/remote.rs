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

use crate::apply::{apply_tar_remote, ApplyError, ApplyStats, HashReader, RemoteMap};
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

/// What reading a layer blob for TurboOCI told about it.
#[derive(Debug)]
pub struct TurboStream {
    /// `"gzip"` or `"none"`.
    pub compression: &'static str,
    /// Bytes of the uncompressed tar, trailing bytes included.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// The gzip index of a gzip layer (its `meta` is the `gzip.meta` file), else `None`.
    pub gz_index: Option<GzIndexBuild>,
}

/// Why [`read_turbo_layer`] failed: the layer stream itself, or the consumer's error.
#[derive(Debug)]
pub enum TurboStreamError<E> {
    Stream(RemoteApplyError),
    Consumer(E),
}

/// The uncompressed side of a layer blob: through the gzip indexer, or as it is.
enum Plain<R: Read> {
    Gzip(Box<GzIndexReader<BufReader<R>>>),
    Tar(BufReader<R>),
}

impl<R: Read> Read for Plain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Plain::Gzip(g) => g.read(buf),
            Plain::Tar(t) => t.read(buf),
        }
    }
}

/// Reads the layer blob `stream` (plain tar or gzip) once for TurboOCI: `consume` gets the
/// uncompressed tar (whatever it leaves unread is read too, so the diff ID covers trailing
/// bytes); a gzip layer's random-access index is built on the way with `gz_opts`. zstd
/// layers and gzip streams of several members are refused.
pub fn read_turbo_layer<T, E>(
    stream: impl Read,
    gz_opts: GzIndexOptions,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E>,
) -> Result<(T, TurboStream), TurboStreamError<E>> {
    let stream_err = |e: RemoteApplyError| TurboStreamError::Stream(e);
    let io_err = |e: io::Error| stream_err(RemoteApplyError::Apply(ApplyError::Io(e)));
    let mut br = BufReader::with_capacity(1 << 16, stream);
    let comp = Compression::detect(br.fill_buf().map_err(io_err)?);
    let plain = match comp {
        Compression::Zstd => {
            return Err(stream_err(RemoteApplyError::Unsupported(
                "the layer is zstd-compressed; TurboOCI needs gzip or uncompressed layers".into(),
            )))
        }
        Compression::Gzip => Plain::Gzip(Box::new(
            GzIndexReader::with_options(br, gz_opts)
                .map_err(|e| stream_err(RemoteApplyError::Index(e)))?,
        )),
        Compression::None => Plain::Tar(br),
    };
    let mut h = HashReader::new(plain);
    let out = consume(&mut h).map_err(TurboStreamError::Consumer)?;
    io::copy(&mut h, &mut io::sink()).map_err(io_err)?;
    let (plain, diff_id, tar_bytes) = h.into_parts();
    let gz_index = match plain {
        Plain::Gzip(g) => {
            let b = g
                .finish()
                .map_err(|e| stream_err(RemoteApplyError::Index(e)))?;
            if !b.covers_all() {
                return Err(stream_err(RemoteApplyError::Unsupported(format!(
                    "the layer has {} gzip members; TurboOCI indexes only the first",
                    b.members
                ))));
            }
            Some(b)
        }
        Plain::Tar(_) => None,
    };
    let info = TurboStream {
        compression: if gz_index.is_some() { "gzip" } else { "none" },
        tar_bytes,
        diff_id,
        gz_index,
    };
    Ok((out, info))
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
    let (mut stats, info) = read_turbo_layer(stream, gz_opts, |r| apply_tar_remote(fs, r, remote))
        .map_err(|e| match e {
            TurboStreamError::Stream(s) => s,
            TurboStreamError::Consumer(a) => RemoteApplyError::Apply(a),
        })?;
    stats.tar_bytes = info.tar_bytes;
    stats.diff_id = info.diff_id;
    stats.compression = Some(info.compression);
    Ok(RemoteApplyStats {
        stats,
        gz_index: info.gz_index,
    })
}
