//! The overlaybd image config (`config.v1.json`): lowers (bottom → top) and an optional
//! writable upper, with upstream's JSON names. Opening it yields an [`crate::lsmt::Stack`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::detect;
use crate::error::{FormatError, Result};
use crate::io::ReadAt;
use crate::lsmt::{HeaderTrailer, LsmtRo, RwLayer, Stack, WarpLayer, WarpStack};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub repo_blob_url: String,
    #[serde(default)]
    pub lowers: Vec<Lower>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<Upper>,
    #[serde(default)]
    pub result_file: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lower {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gzip_index: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Upper {
    #[serde(default)]
    pub index: String,
    #[serde(default)]
    pub data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gzip_index: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ImageConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let b = std::fs::read(path)
            .map_err(|e| FormatError::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&b)
            .map_err(|e| FormatError::corrupt("image config", format!("{}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let s = serde_json::to_vec_pretty(self).expect("config serialises");
        std::fs::write(path, s)
            .map_err(|e| FormatError::io(format!("writing {}", path.display()), e))
    }

    /// Opens the lowers read-only and the upper (if both its paths are set) read-write.
    pub fn open_stack(&self) -> Result<Stack> {
        let lowers = self
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| l.open().map_err(|e| annotate(e, i)))
            .collect::<Result<Vec<_>>>()?;
        let upper = match &self.upper {
            Some(u) if !u.data.is_empty() && !u.index.is_empty() => {
                if u.is_warp() {
                    return Err(FormatError::Invalid(
                        "the upper is a warp (TurboOCI) layer: it is written by `obd apply \
                         --gz-index-path` and committed by `obd commit --turbo-oci`"
                            .into(),
                    ));
                }
                Some(RwLayer::open(Path::new(&u.data), Path::new(&u.index))?)
            }
            _ => None,
        };
        Stack::new(lowers, upper)
    }
}

/// TurboOCI builds: the config's upper is a **warp** layer (`upper.data` the raw fs-meta
/// image, `upper.index` its index file, `upper.target` the layer blob whose uncompressed
/// tar the remote mappings point into, `upper.gzipIndex` that blob's `gzip.meta`).
impl ImageConfig {
    /// Opens the lowers read-only (warp lowers over their targets) under the upper as a
    /// writable [`WarpLayer`]. The upper need not name a target; when it does, the target
    /// is attached for reads of remote ranges if it can be read now: a plain or ZFile blob,
    /// or a gzip blob whose `gzipIndex` exists. (A gzip target whose index is still to be
    /// built is left out: building the filesystem metadata never reads file data.)
    pub fn open_warp_stack(&self) -> Result<WarpStack> {
        let u = match &self.upper {
            Some(u) if !u.data.is_empty() && !u.index.is_empty() => u,
            _ => {
                return Err(FormatError::Invalid(
                    "the config has no upper (upper.data and upper.index) to write into".into(),
                ))
            }
        };
        let lowers = self
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| l.open().map_err(|e| annotate(e, i)))
            .collect::<Result<Vec<_>>>()?;
        // An ordinary writable layer's data file starts with an LSMT header; a warp layer's
        // is a raw fs-meta image (their index files look alike). Writing fs-meta over the
        // former would corrupt it.
        let data = detect::open_file(Path::new(&u.data))?;
        let mut head = [0u8; 24];
        let n = data
            .read_at(&mut head, 0)
            .map_err(|e| FormatError::io(format!("reading {}", u.data), e))?;
        if HeaderTrailer::has_magic(&head[..n]) {
            return Err(FormatError::Invalid(format!(
                "upper.data {} is an ordinary writable layer, not a warp (TurboOCI) fs-meta \
                 image (`obd create --turbo-oci` makes one)",
                u.data
            )));
        }
        drop(data);
        let mut upper = WarpLayer::open(Path::new(&u.data), Path::new(&u.index))?;
        if !u.target.is_empty() {
            let t = Path::new(&u.target);
            let idx = Path::new(&u.gzip_index);
            let target = if !u.gzip_index.is_empty() && idx.exists() {
                Some(open_target(t, Some(idx))?)
            } else {
                let raw = detect::open_file(t)?;
                let mut head = [0u8; 2];
                let n = raw
                    .read_at(&mut head, 0)
                    .map_err(|e| FormatError::io(format!("reading {}", t.display()), e))?;
                if head[..n] == [0x1f, 0x8b] {
                    None
                } else {
                    Some(open_target(t, None)?)
                }
            };
            if let Some(t) = target {
                upper.set_target(t);
            }
        }
        Ok(WarpStack::new(Stack::new(lowers, None)?, upper))
    }
}

impl Upper {
    /// True if the config marks the upper as a warp (TurboOCI) layer.
    pub fn is_warp(&self) -> bool {
        !self.target.is_empty() || !self.gzip_index.is_empty()
    }
}

/// The target of a warp layer: the original layer blob as it is (never a tar wrapper: a
/// plain layer tar must not be mistaken for one; only a ZFile is unpacked), or a gzip blob
/// read through its random-access index (TurboOCI `gzip.meta`).
fn open_target(target: &Path, gzip_index: Option<&Path>) -> Result<Arc<dyn ReadAt>> {
    let t = detect::open_file(target)?;
    Ok(match gzip_index {
        None => {
            if crate::zfile::ZFileReader::detect(t.as_ref())? {
                Arc::new(crate::zfile::ZFileReader::open(t)?)
            } else {
                t
            }
        }
        Some(meta) => {
            let meta = detect::open_file(meta)?;
            Arc::new(crate::gzindex::GzIndexedFile::open(t, meta)?)
        }
    })
}

fn annotate(e: FormatError, i: usize) -> FormatError {
    match e {
        FormatError::Io { context, source } => FormatError::Io {
            context: format!("lowers[{i}]: {context}"),
            source,
        },
        o => o,
    }
}

impl Lower {
    /// The local file of this layer: `file`, else the first existing candidate in `dir`.
    pub fn local_path(&self) -> Option<PathBuf> {
        if !self.file.is_empty() {
            return Some(PathBuf::from(&self.file));
        }
        if !self.dir.is_empty() {
            for c in ["overlaybd.commit", ".commit", "overlaybd.sealed"] {
                let p = Path::new(&self.dir).join(c);
                if p.exists() {
                    return Some(p);
                }
            }
        }
        None
    }

    pub fn open(&self) -> Result<Arc<LsmtRo>> {
        let path = self.local_path().ok_or_else(|| {
            FormatError::Invalid(format!(
                "layer {} has no local file (remote blobs are not fetched by this tool)",
                if self.digest.is_empty() {
                    "<unnamed>"
                } else {
                    &self.digest
                }
            ))
        })?;
        if !self.target_file.is_empty() {
            let u = detect::unwrap(detect::open_file(&path)?)?;
            let idx = (!self.gzip_index.is_empty()).then(|| Path::new(&self.gzip_index));
            let t = open_target(Path::new(&self.target_file), idx)?;
            return Ok(Arc::new(LsmtRo::open_warp(u.payload, t)?));
        }
        Ok(Arc::new(detect::open_layer(&path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_examples() {
        let s = r#"{"repoBlobUrl":"","lowers":[{"file":"/w/0000/overlaybd.commit"}],
          "upper":{"index":"/w/1/writable_index","data":"/w/1/writable_data"},"resultFile":""}"#;
        let c: ImageConfig = serde_json::from_str(s).unwrap();
        assert_eq!(c.lowers[0].file, "/w/0000/overlaybd.commit");
        assert_eq!(c.upper.as_ref().unwrap().data, "/w/1/writable_data");
        let s = r#"{"repoBlobUrl":"https://r/v2/a/blobs","lowers":[{"digest":"sha256:c3","size":4737695,"dir":"/x"},
          {"file":"/y/ext4.fs.meta","targetDigest":"sha256:9f","gzipIndex":"/y/gzip.meta","dir":"/y"}],
          "upper":{"index":"i","data":"d","vsize":64},"resultFile":"/r"}"#;
        let c: ImageConfig = serde_json::from_str(s).unwrap();
        assert_eq!(c.lowers[1].gzip_index, "/y/gzip.meta");
        assert_eq!(c.lowers[0].size, 4737695);
    }
}
