//! The overlaybd image config (`config.v1.json`): lowers (bottom → top) and an optional
//! writable upper, with upstream's JSON names. Opening it yields an [`lsmt::Stack`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::detect;
use crate::error::{FormatError, Result};
use crate::lsmt::{LsmtRo, RwLayer, Stack};

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
                if !u.target.is_empty() || !u.gzip_index.is_empty() {
                    return Err(FormatError::Invalid(
                        "warp (TurboOCI) uppers are not supported yet".into(),
                    ));
                }
                Some(RwLayer::open(Path::new(&u.data), Path::new(&u.index))?)
            }
            _ => None,
        };
        Stack::new(lowers, upper)
    }
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
            let target = detect::open_file(Path::new(&self.target_file))?;
            // A gzip target is read through its random-access index (TurboOCI `gzip.meta`).
            // The target is the original layer blob as it is (never a tar wrapper: a plain
            // layer tar must not be mistaken for one); only a ZFile is unpacked.
            let t: Arc<dyn crate::io::ReadAt> = if self.gzip_index.is_empty() {
                if crate::zfile::ZFileReader::detect(target.as_ref())? {
                    Arc::new(crate::zfile::ZFileReader::open(target)?)
                } else {
                    target
                }
            } else {
                let meta = detect::open_file(Path::new(&self.gzip_index))?;
                Arc::new(crate::gzindex::GzIndexedFile::open(target, meta)?)
            };
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
