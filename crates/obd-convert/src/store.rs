//! Image stores: where source images are read and converted images are written.
//!
//! [`Store`] is the small interface the engine needs (resolve, fetch manifests and blobs
//! with digest verification, push blobs and manifests, tag). [`OciLayout`] implements it
//! over an OCI image layout directory (tags are `org.opencontainers.image.ref.name`
//! annotations in `index.json`); the registry client implements it in the CLI crate.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::digest::{self, HashReader};
use crate::error::{ConvertError, Result};

/// The three fields that identify content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    /// Reads the three fields of a JSON descriptor (missing ones become empty / 0).
    pub fn from_json(v: &Value) -> Desc {
        Desc {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: v["digest"].as_str().unwrap_or_default().to_string(),
            size: v["size"].as_u64().unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What a blob push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The bytes were sent (or, in a layout, stored).
    Uploaded,
    /// The store already had the blob: nothing was sent.
    AlreadyPresent,
}

/// What the conversion engine needs from a place that holds images.
pub trait Store: Send + Sync {
    /// A human-readable name (`oci:DIR`, `host/repo`).
    fn name(&self) -> String;
    /// Resolves a tag or a `sha256:` digest to the descriptor of a manifest or index.
    fn resolve(&self, reference: &str) -> Result<Desc>;
    /// Fetches a manifest or index; the bytes are checked against `desc.digest`.
    fn fetch_manifest(&self, desc: &Desc) -> Result<Vec<u8>>;
    /// Streams a blob; the reader fails at its end if the bytes do not match `digest`.
    fn fetch_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>>;
    /// Size of a blob if the store has it.
    fn has_blob(&self, digest: &str) -> Result<Option<u64>>;
    /// Stores the file at `path` as blob `digest` (of `size` bytes).
    fn push_blob(&self, path: &Path, digest: &str, size: u64) -> Result<Pushed>;
    /// Stores bytes held in memory as blob `digest`.
    fn push_blob_bytes(&self, bytes: &bytes::Bytes, digest: &str) -> Result<Pushed>;
    /// Stores a manifest or index by digest; returns the digest.
    fn push_manifest(&self, bytes: &[u8], media_type: &str) -> Result<String>;
    /// Points `tag` at a manifest already pushed.
    fn tag(&self, tag: &str, bytes: &[u8], media_type: &str) -> Result<()>;
    /// True when blobs are local files (no point in prefetching them).
    fn is_local(&self) -> bool {
        false
    }
    /// `(host, repository)` naming this store in the dedup database.
    fn location(&self) -> (String, String);
    /// Makes blob `digest` of repository `from_repo` (same host) available here without
    /// uploading it; `Ok(false)` when the registry would not mount it.
    fn mount_blob(&self, digest: &str, from_repo: &str) -> Result<bool> {
        let _ = (digest, from_repo);
        Ok(false)
    }
    /// Fails when this store would refuse pushes, checked before any expensive work (a
    /// registry: the credentials may not push to the repository). Layouts: nothing to check.
    fn check_push(&self) -> Result<()> {
        Ok(())
    }
}

/// A reader that checks the sha256 of everything it read when it reaches the end.
pub struct VerifyingReader<R> {
    inner: Option<HashReader<R>>,
    want: String,
    what: String,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, want: &str, what: impl Into<String>) -> Self {
        VerifyingReader {
            inner: Some(HashReader::new(inner)),
            want: want.to_string(),
            what: what.into(),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(h) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = h.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let (got, _) = self.inner.take().unwrap().finish();
            if got != self.want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} has digest {got}, expected {}", self.what, self.want),
                ));
            }
        }
        Ok(n)
    }
}

/// An OCI image layout directory.
pub struct OciLayout {
    dir: PathBuf,
    index_lock: Mutex<()>,
}

fn read_json(path: &Path) -> Result<Value> {
    let b = std::fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ConvertError::NotFound(path.display().to_string())
        } else {
            ConvertError::io(format!("reading {}", path.display()), e)
        }
    })?;
    serde_json::from_slice(&b)
        .map_err(|e| ConvertError::BadInput(format!("{}: {e}", path.display())))
}

/// A temporary name beside `path`, unique in this process and across processes: threads
/// storing the same blob at once (two platforms sharing a layer) must not share one.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes)
        .map_err(|e| ConvertError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| ConvertError::io(format!("renaming to {}", path.display()), e))
}

impl OciLayout {
    /// Opens a layout; with `create`, makes an empty one if `dir` has none.
    pub fn open(dir: impl Into<PathBuf>, create: bool) -> Result<Self> {
        let dir = dir.into();
        if !dir.join("index.json").exists() {
            if !create {
                return Err(ConvertError::NotFound(format!(
                    "no OCI image layout at {}",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir.join("blobs/sha256"))
                .map_err(|e| ConvertError::io(format!("creating {}", dir.display()), e))?;
            write_atomic(
                &dir.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
            write_atomic(
                &dir.join("index.json"),
                br#"{"schemaVersion":2,"manifests":[]}"#,
            )?;
        }
        Ok(OciLayout {
            dir,
            index_lock: Mutex::new(()),
        })
    }

    fn blob_path(&self, d: &str) -> Result<PathBuf> {
        if !digest::valid(d) {
            return Err(ConvertError::BadInput(format!("invalid digest {d:?}")));
        }
        Ok(self.dir.join("blobs/sha256").join(digest::hex_of(d)))
    }

    fn index(&self) -> Result<Value> {
        read_json(&self.dir.join("index.json"))
    }
}

impl Store for OciLayout {
    fn name(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn is_local(&self) -> bool {
        true
    }

    fn location(&self) -> (String, String) {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        ("oci-layout".into(), dir.display().to_string())
    }

    fn resolve(&self, reference: &str) -> Result<Desc> {
        let idx = self.index()?;
        let entries = idx["manifests"].as_array().cloned().unwrap_or_default();
        let found = entries.iter().find(|m| {
            if reference.starts_with("sha256:") {
                m["digest"] == reference
            } else {
                m["annotations"]["org.opencontainers.image.ref.name"] == reference
            }
        });
        let desc = match found {
            Some(m) => Desc::from_json(m),
            None if reference.starts_with("sha256:") => {
                let p = self.blob_path(reference)?;
                let b = std::fs::read(&p).map_err(|_| {
                    ConvertError::NotFound(format!("{reference} in {}", self.name()))
                })?;
                let v: Value = serde_json::from_slice(&b)
                    .map_err(|e| ConvertError::BadInput(format!("{reference}: {e}")))?;
                Desc {
                    media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
                    digest: reference.into(),
                    size: b.len() as u64,
                }
            }
            None => {
                return Err(ConvertError::NotFound(format!(
                    "tag {reference:?} in {}",
                    self.name()
                )))
            }
        };
        Ok(desc)
    }

    fn fetch_manifest(&self, desc: &Desc) -> Result<Vec<u8>> {
        let p = self.blob_path(&desc.digest)?;
        let b = std::fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                ConvertError::NotFound(format!("manifest {} in {}", desc.digest, self.name()))
            }
            _ => ConvertError::io(format!("reading {}", p.display()), e),
        })?;
        if b.len() > 4 << 20 {
            return Err(ConvertError::BadInput(format!(
                "manifest {} is {} bytes; the limit is 4 MiB",
                desc.digest,
                b.len()
            )));
        }
        let got = digest::sha256(&b);
        if got != desc.digest {
            return Err(ConvertError::BadInput(format!(
                "manifest {} has digest {got}",
                desc.digest
            )));
        }
        Ok(b)
    }

    fn fetch_blob(&self, d: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.blob_path(d)?;
        let f = File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                ConvertError::NotFound(format!("blob {d} in {}", self.name()))
            }
            _ => ConvertError::io(format!("opening {}", p.display()), e),
        })?;
        Ok(Box::new(VerifyingReader::new(f, d, format!("blob {d}"))))
    }

    fn has_blob(&self, d: &str) -> Result<Option<u64>> {
        Ok(std::fs::metadata(self.blob_path(d)?).ok().map(|m| m.len()))
    }

    fn push_blob(&self, path: &Path, d: &str, size: u64) -> Result<Pushed> {
        let dst = self.blob_path(d)?;
        if std::fs::metadata(&dst).is_ok_and(|m| m.len() == size) {
            return Ok(Pushed::AlreadyPresent);
        }
        let tmp = temp_path(&dst);
        // A hard link when on the same filesystem, else a copy.
        if std::fs::hard_link(path, &tmp).is_err() {
            std::fs::copy(path, &tmp).map_err(|e| {
                ConvertError::io(format!("copying {} into the layout", path.display()), e)
            })?;
        }
        std::fs::rename(&tmp, &dst)
            .map_err(|e| ConvertError::io(format!("storing blob {d}"), e))?;
        Ok(Pushed::Uploaded)
    }

    fn push_blob_bytes(&self, bytes: &bytes::Bytes, d: &str) -> Result<Pushed> {
        let dst = self.blob_path(d)?;
        if std::fs::metadata(&dst).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(Pushed::AlreadyPresent);
        }
        write_atomic(&dst, bytes)?;
        Ok(Pushed::Uploaded)
    }

    fn push_manifest(&self, bytes: &[u8], _media_type: &str) -> Result<String> {
        let d = digest::sha256(bytes);
        let dst = self.blob_path(&d)?;
        if !dst.exists() {
            write_atomic(&dst, bytes)?;
        }
        Ok(d)
    }

    fn tag(&self, tag: &str, bytes: &[u8], media_type: &str) -> Result<()> {
        let d = self.push_manifest(bytes, media_type)?;
        let _g = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut idx = self.index()?;
        let mut entries: Vec<Value> = idx["manifests"].as_array().cloned().unwrap_or_default();
        entries.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        entries.push(json!({
            "mediaType": media_type,
            "digest": d,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        idx["manifests"] = Value::Array(entries);
        write_atomic(
            &self.dir.join("index.json"),
            serde_json::to_string_pretty(&idx).unwrap().as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two platforms sharing a layer store the same blob at once: every push succeeds and
    /// no temporary file is left.
    #[test]
    fn concurrent_pushes_of_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![42u8; 1 << 20];
        let d = digest::sha256(&data);
        let srcs: Vec<PathBuf> = (0..8)
            .map(|i| {
                let p = dir.path().join(format!("src{i}"));
                std::fs::write(&p, &data).unwrap();
                p
            })
            .collect();
        for round in 0..20 {
            let root = dir.path().join(format!("l{round}"));
            let layout = OciLayout::open(&root, true).unwrap();
            let start = std::sync::Barrier::new(srcs.len());
            std::thread::scope(|s| {
                for p in &srcs {
                    let (layout, d, start) = (&layout, &d, &start);
                    s.spawn(move || {
                        start.wait();
                        layout.push_blob(p, d, 1 << 20).unwrap()
                    });
                }
            });
            assert_eq!(layout.has_blob(&d).unwrap(), Some(1 << 20));
            let names: Vec<_> = std::fs::read_dir(root.join("blobs/sha256"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
    }
}
