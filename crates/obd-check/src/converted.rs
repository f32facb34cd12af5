//! The filesystem of a converted image, read without mounting: the layer blobs of one
//! manifest are downloaded into a work directory, each is opened as an overlaybd layer
//! (tar wrapper and ZFile peeled off, LSMT read-only), they are stacked bottom → top (for
//! `--mkfs=false` images the upstream baselayer is simply the bottom layer of the
//! manifest), and the filesystem on the stack is opened read-only and walked: ext4 here,
//! EROFS in [`crate::erofs`].
//!
//! Layers are classified by [`LayerKind`] before anything is downloaded. Native overlaybd
//! layers are read as they are (ext4); TurboOCI layers (descriptors with
//! [`ANN_TURBO_TARGET`]) are unpacked, their source layer fetched, and their fs-meta
//! (`ext4.fs.meta`, or `erofs.fs.meta` when [`ANN_FS_TYPE`] says `erofs`) opened as a warp
//! layer over it. All layers of a manifest must hold the same filesystem type.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub use obd_convert::image::ANN_FS_TYPE;
use obd_convert::image::{ANN_BLOB_DIGEST, ANN_VERSION};
use obd_convert::store::Store;
use obd_ext4::{Ext4, FileKind, ROOT_INO};
use obd_format::detect;
use obd_format::lsmt::{LsmtRo, Stack};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CheckError, Result};
use crate::tree::{self, Entry, Kind, Time, Tree};

/// The annotation that marks a TurboOCI layer (its value is the digest of the original
/// layer the fs metadata indexes into).
pub const ANN_TURBO_TARGET: &str = "containerd.io/snapshot/overlaybd/turbo-oci/target-digest";

/// The filesystem a converted layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Erofs,
}

impl FsType {
    /// The name used in [`ANN_FS_TYPE`] and in `<name>.fs.meta`.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Erofs => "erofs",
        }
    }

    /// The mtime seconds the converter stores for this filesystem (source times are
    /// clamped into this range before comparing, see [`Tree::clamp_mtimes`]).
    pub fn mtime_range(self) -> (i64, i64) {
        match self {
            FsType::Ext4 => (obd_ext4::Timestamp::MIN_SECS, obd_ext4::Timestamp::MAX_SECS),
            FsType::Erofs => crate::erofs::MTIME_RANGE,
        }
    }
}

/// What a converted layer descriptor denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A native overlaybd layer: a (tar-wrapped, possibly ZFile-compressed) LSMT blob
    /// holding ext4.
    Native { digest: String },
    /// A TurboOCI layer: `fs` metadata in an LSMT whose file data lives in the original
    /// layer `target_digest`.
    TurboOci {
        digest: String,
        target_digest: String,
        fs: FsType,
    },
}

impl LayerKind {
    /// The filesystem type of the layer.
    pub fn fs_type(&self) -> FsType {
        match self {
            LayerKind::Native { .. } => FsType::Ext4,
            LayerKind::TurboOci { fs, .. } => *fs,
        }
    }
}

/// Classifies one layer descriptor of a converted manifest.
pub fn classify(layer: &Value) -> Result<LayerKind> {
    let digest = layer["digest"].as_str().unwrap_or_default().to_string();
    if !obd_convert::digest::valid(&digest) {
        return Err(CheckError::BadInput(format!(
            "converted layer digest {digest:?} is invalid"
        )));
    }
    let ann = &layer["annotations"];
    if let Some(t) = ann[ANN_TURBO_TARGET].as_str() {
        let fs = match ann[ANN_FS_TYPE].as_str() {
            None | Some("ext4") => FsType::Ext4,
            Some("erofs") => FsType::Erofs,
            Some(other) => {
                return Err(CheckError::Unsupported(format!(
                    "layer {digest} has fs type {other:?} ({ANN_FS_TYPE}); ext4 and erofs are supported"
                )))
            }
        };
        return Ok(LayerKind::TurboOci {
            digest,
            target_digest: t.to_string(),
            fs,
        });
    }
    if ann[ANN_BLOB_DIGEST].is_string() || ann[ANN_VERSION].is_string() {
        return Ok(LayerKind::Native { digest });
    }
    Err(CheckError::BadInput(format!(
        "layer {digest} carries no overlaybd annotation ({ANN_BLOB_DIGEST}); is this a converted image?"
    )))
}

/// Downloads a blob into `path`.
fn download(store: &dyn Store, digest: &str, path: &Path) -> Result<()> {
    let mut r = store.fetch_blob(digest)?;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| CheckError::io(format!("creating {}", path.display()), e))?,
    );
    std::io::copy(&mut r, &mut f)
        .map_err(|e| CheckError::io(format!("downloading layer {digest}"), e))?;
    f.flush()
        .map_err(|e| CheckError::io(format!("writing {}", path.display()), e))
}

/// Fetches one layer into `work` and opens it as a read-only LSMT.
pub fn open_layer(
    store: &dyn Store,
    kind: &LayerKind,
    index: usize,
    work: &Path,
) -> Result<Arc<LsmtRo>> {
    match kind {
        LayerKind::Native { digest } => {
            let p = work.join(format!("{index:04}.layer"));
            download(store, digest, &p)?;
            let l = detect::open_layer(&p).map_err(|source| CheckError::Format {
                context: format!("converted layer {index} ({digest})"),
                source,
            })?;
            Ok(Arc::new(l))
        }
        LayerKind::TurboOci {
            digest,
            target_digest,
            fs,
        } => open_turbo(store, digest, target_digest, *fs, index, work),
    }
}

/// A TurboOCI layer: unpacks `turboOCIv1.tar.gz`, fetches the source layer it points at,
/// and opens the `<fs>.fs.meta` as a warp layer over it (through `gzip.meta` for gzip
/// sources). The fs-meta of the other filesystem type is an error (the annotation and the
/// blob disagree).
fn open_turbo(
    store: &dyn Store,
    digest: &str,
    target_digest: &str,
    fs: FsType,
    index: usize,
    work: &Path,
) -> Result<Arc<LsmtRo>> {
    let dir = work.join(format!("{index:04}.turbo"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CheckError::io(format!("creating {}", dir.display()), e))?;
    let blob = dir.join("turboOCIv1.tar.gz");
    download(store, digest, &blob)?;
    let f = std::fs::File::open(&blob)
        .map_err(|e| CheckError::io(format!("opening {}", blob.display()), e))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut names = Vec::new();
    let entries = ar
        .entries()
        .map_err(|e| CheckError::BadInput(format!("layer {index} ({digest}): {e}")))?;
    for e in entries {
        let mut e =
            e.map_err(|e| CheckError::BadInput(format!("layer {index} ({digest}): {e}")))?;
        let name = e
            .path()
            .map_err(|e| CheckError::BadInput(format!("layer {index} ({digest}): {e}")))?
            .to_string_lossy()
            .into_owned();
        if matches!(
            name.as_str(),
            "ext4.fs.meta" | "erofs.fs.meta" | "gzip.meta"
        ) {
            e.unpack(dir.join(&name))
                .map_err(|e| CheckError::io(format!("unpacking {name}"), e))?;
            names.push(name);
        }
    }
    let meta = format!("{}.fs.meta", fs.name());
    if !names.contains(&meta) {
        let other = names.iter().find(|n| n.ends_with(".fs.meta"));
        return Err(CheckError::BadInput(match other {
            Some(o) => format!(
                "layer {index} ({digest}) packs {o} but its {ANN_FS_TYPE} annotation says {}",
                fs.name()
            ),
            None => format!("layer {index} ({digest}) has no {meta}"),
        }));
    }
    let target = dir.join("target");
    download(store, target_digest, &target)?;
    let lower = obd_format::config::Lower {
        file: dir.join(&meta).display().to_string(),
        target_file: target.display().to_string(),
        gzip_index: if names.iter().any(|n| n == "gzip.meta") {
            dir.join("gzip.meta").display().to_string()
        } else {
            String::new()
        },
        ..Default::default()
    };
    lower.open().map_err(|source| CheckError::Format {
        context: format!("converted TurboOCI layer {index} ({digest})"),
        source,
    })
}

/// The opened filesystem of a converted manifest.
pub enum ConvertedFs {
    Ext4(Box<Ext4<Stack>>),
    /// The stacked device holding the EROFS image.
    Erofs(Box<Stack>),
}

impl ConvertedFs {
    pub fn fs_type(&self) -> FsType {
        match self {
            ConvertedFs::Ext4(_) => FsType::Ext4,
            ConvertedFs::Erofs(_) => FsType::Erofs,
        }
    }

    /// Walks the whole filesystem into a [`Tree`].
    pub fn walk(&mut self) -> Result<Tree> {
        match self {
            ConvertedFs::Ext4(fs) => walk(fs),
            ConvertedFs::Erofs(dev) => crate::erofs::walk(&**dev),
        }
    }
}

/// Opens the filesystem of the converted manifest `m` (its layers fetched into `work`).
pub fn open_fs(store: &dyn Store, m: &Value, work: &Path) -> Result<ConvertedFs> {
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| CheckError::BadInput("converted manifest has no layers".into()))?;
    if layers.is_empty() {
        return Err(CheckError::BadInput(
            "converted manifest has no layers".into(),
        ));
    }
    let kinds = layers.iter().map(classify).collect::<Result<Vec<_>>>()?;
    let fs = kinds[0].fs_type();
    if let Some((i, k)) = kinds.iter().enumerate().find(|(_, k)| k.fs_type() != fs) {
        return Err(CheckError::BadInput(format!(
            "converted layer {i} holds {} but layer 0 holds {}: one filesystem cannot span both",
            k.fs_type().name(),
            fs.name()
        )));
    }
    let mut lowers = Vec::with_capacity(kinds.len());
    for (i, k) in kinds.iter().enumerate() {
        lowers.push(open_layer(store, k, i, work)?);
    }
    let stack = Stack::new(lowers, None).map_err(|source| CheckError::Format {
        context: "stacking the converted layers".into(),
        source,
    })?;
    match fs {
        FsType::Ext4 => Ext4::open(stack)
            .map(|e| ConvertedFs::Ext4(Box::new(e)))
            .map_err(|source| CheckError::Ext4 {
                context: "opening the converted ext4 filesystem".into(),
                source,
            }),
        FsType::Erofs => Ok(ConvertedFs::Erofs(Box::new(stack))),
    }
}

fn ext4_err(what: String) -> impl FnOnce(obd_ext4::Error) -> CheckError {
    move |source| CheckError::Ext4 {
        context: what,
        source,
    }
}

/// Walks a whole ext4 filesystem into a [`Tree`] (inode numbers as objects). Each inode's
/// content is read and hashed once.
pub fn walk<D: obd_format::io::BlockDevice>(fs: &mut Ext4<D>) -> Result<Tree> {
    let mut t = Tree::default();
    let mut hashes: HashMap<u32, [u8; 32]> = HashMap::new();
    let mut stack: Vec<(Vec<u8>, u32)> = vec![(b"/".to_vec(), ROOT_INO)];
    while let Some((p, ino)) = stack.pop() {
        let shown = tree::display_path(&p);
        let md = fs
            .metadata(ino)
            .map_err(ext4_err(format!("stat {shown} (inode {ino})")))?;
        let kind = Kind::from(md.kind);
        let mut e = Entry {
            kind,
            mode: u32::from(md.perm),
            uid: md.uid,
            gid: md.gid,
            size: 0,
            sha256: None,
            target: None,
            rdev: (0, 0),
            xattrs: Default::default(),
            mtime: Some(Time {
                secs: md.mtime.secs,
                nanos: md.mtime.nanos,
            }),
            object: u64::from(ino),
        };
        match md.kind {
            FileKind::Directory => {
                for d in fs
                    .read_dir(ino)
                    .map_err(ext4_err(format!("reading directory {shown}")))?
                {
                    stack.push((tree::join(&p, &d.name), d.ino));
                }
            }
            FileKind::Regular => {
                e.size = md.size;
                let h = match hashes.get(&ino) {
                    Some(h) => *h,
                    None => {
                        let data = fs
                            .read_file(ino)
                            .map_err(ext4_err(format!("reading {shown}")))?;
                        let h: [u8; 32] = Sha256::digest(&data).into();
                        hashes.insert(ino, h);
                        h
                    }
                };
                e.sha256 = Some(h);
            }
            FileKind::Symlink => {
                e.target = Some(
                    fs.read_link(ino)
                        .map_err(ext4_err(format!("reading symlink {shown}")))?,
                );
            }
            FileKind::CharDevice | FileKind::BlockDevice => e.rdev = md.rdev,
            FileKind::Fifo | FileKind::Socket => {}
        }
        e.xattrs = fs
            .xattrs(ino)
            .map_err(ext4_err(format!("reading xattrs of {shown}")))?
            .into_iter()
            .collect();
        t.entries.insert(p, e);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_layers() {
        let d = format!("sha256:{}", "a".repeat(64));
        let native = json!({"digest": d, "annotations": {ANN_BLOB_DIGEST: d}});
        assert_eq!(
            classify(&native).unwrap(),
            LayerKind::Native { digest: d.clone() }
        );
        let turbo = json!({"digest": d, "annotations": {ANN_TURBO_TARGET: "sha256:bb"}});
        let k = classify(&turbo).unwrap();
        assert!(matches!(k, LayerKind::TurboOci { .. }));
        assert_eq!(k.fs_type(), FsType::Ext4);
        let erofs = json!({"digest": d, "annotations": {ANN_TURBO_TARGET: "sha256:bb", ANN_FS_TYPE: "erofs"}});
        assert_eq!(classify(&erofs).unwrap().fs_type(), FsType::Erofs);
        let xfs = json!({"digest": d, "annotations": {ANN_TURBO_TARGET: "sha256:bb", ANN_FS_TYPE: "xfs"}});
        assert!(matches!(classify(&xfs), Err(CheckError::Unsupported(_))));
        let dir = tempfile::tempdir().unwrap();
        let store = obd_convert::store::OciLayout::open(dir.path().join("l"), true).unwrap();
        // A TurboOCI layer whose blob is missing is an error, not a panic.
        assert!(open_layer(&store, &k, 0, dir.path()).is_err());
        let plain = json!({"digest": d});
        assert!(classify(&plain).is_err());
    }
}
