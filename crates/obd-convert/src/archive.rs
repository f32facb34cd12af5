//! Read-only stores over a single tar file, as skopeo names them: `oci-archive:FILE` (an OCI
//! image layout packed into a tar) and `docker-archive:FILE` (what `docker save` and
//! `skopeo copy … docker-archive:` write).
//!
//! Nothing is unpacked: opening an archive reads its members' headers once (an index of
//! name → byte range), and blobs are then streamed straight out of the file, verified
//! against their digests like any other store's. A `docker-archive` has no manifests of
//! its own: each image of its `manifest.json` gets an OCI manifest made from its config and
//! layer files (uncompressed layers are named by their config's `diff_ids`, which are their
//! sha256 digests; a compressed layer is hashed once at open).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::digest;
use crate::error::{ConvertError, Result};
use crate::image::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};

/// The OCI media type of a zstd-compressed layer.
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
use crate::store::{Desc, Pushed, Store, VerifyingReader};

/// Which tar layout an [`ArchiveStore`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `oci-archive:`: `oci-layout`, `index.json` and `blobs/<alg>/<hex>` in a tar.
    Oci,
    /// `docker-archive:`: `manifest.json` naming config and layer files.
    Docker,
}

impl ArchiveKind {
    /// The transport prefix skopeo gives it (`oci-archive`, `docker-archive`).
    pub fn transport(self) -> &'static str {
        match self {
            ArchiveKind::Oci => "oci-archive",
            ArchiveKind::Docker => "docker-archive",
        }
    }
}

/// One image (or index) an archive can be resolved to.
#[derive(Clone, Debug)]
struct Image {
    /// Names it answers to: OCI `ref.name` annotations, docker `RepoTags`.
    names: Vec<String>,
    desc: Desc,
}

/// A read-only [`Store`] over an `oci-archive` or `docker-archive` tar file.
pub struct ArchiveStore {
    path: PathBuf,
    kind: ArchiveKind,
    /// Blob digest → (data offset, size) in the tar.
    blobs: HashMap<String, (u64, u64)>,
    /// Manifests made for a docker archive (digest → bytes).
    made: HashMap<String, Vec<u8>>,
    images: Vec<Image>,
}

/// Member name → (data offset, size) of every regular file of the tar at `path`.
fn index_members(path: &Path, what: &str) -> Result<HashMap<String, (u64, u64)>> {
    let f = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ConvertError::NotFound(format!("{what}: no such file")),
        _ => ConvertError::io(format!("opening {what}"), e),
    })?;
    let mut r = obd_tar::TarReader::new(io::BufReader::with_capacity(1 << 16, f));
    let mut out = HashMap::new();
    loop {
        let e = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                return Err(if e.is_bad_input() {
                    ConvertError::BadInput(format!("{what} is not a readable tar: {e}"))
                } else {
                    ConvertError::io(format!("reading {what}"), e.into_io())
                })
            }
        };
        if e.kind != obd_tar::EntryKind::File || e.sparse.is_some() {
            continue;
        }
        let name = e.display_name();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        out.insert(name.to_string(), (e.data_offset, e.stored_size));
    }
    if out.is_empty() {
        return Err(ConvertError::BadInput(format!("{what} holds no files")));
    }
    Ok(out)
}

impl ArchiveStore {
    /// Opens the archive at `path`, reading its index (and, for a docker archive, its
    /// configs).
    pub fn open(kind: ArchiveKind, path: impl Into<PathBuf>) -> Result<ArchiveStore> {
        let path = path.into();
        let what = format!("{}:{}", kind.transport(), path.display());
        let members = index_members(&path, &what)?;
        let mut s = ArchiveStore {
            path,
            kind,
            blobs: HashMap::new(),
            made: HashMap::new(),
            images: Vec::new(),
        };
        match kind {
            ArchiveKind::Oci => s.load_oci(&members, &what)?,
            ArchiveKind::Docker => s.load_docker(&members, &what)?,
        }
        Ok(s)
    }

    fn read_member(&self, range: (u64, u64), limit: u64, what: &str) -> Result<Vec<u8>> {
        if range.1 > limit {
            return Err(ConvertError::BadInput(format!(
                "{what} is {} bytes; the limit is {limit}",
                range.1
            )));
        }
        let mut f = File::open(&self.path)
            .map_err(|e| ConvertError::io(format!("opening {}", self.path.display()), e))?;
        f.seek(SeekFrom::Start(range.0))
            .map_err(|e| ConvertError::io(format!("reading {}", self.path.display()), e))?;
        let mut b = Vec::with_capacity(range.1 as usize);
        f.take(range.1)
            .read_to_end(&mut b)
            .map_err(|e| ConvertError::io(format!("reading {}", self.path.display()), e))?;
        if (b.len() as u64) < range.1 {
            return Err(ConvertError::BadInput(format!("{what} is truncated")));
        }
        Ok(b)
    }

    fn load_oci(&mut self, members: &HashMap<String, (u64, u64)>, what: &str) -> Result<()> {
        for (name, &range) in members {
            let mut parts = name.split('/');
            if let (Some("blobs"), Some(alg), Some(hex), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                self.blobs.insert(format!("{alg}:{hex}"), range);
            }
        }
        let idx = members.get("index.json").ok_or_else(|| {
            ConvertError::BadInput(format!(
                "{what} has no index.json: it is not an OCI image layout archive"
            ))
        })?;
        let idx = self.read_member(*idx, 4 << 20, &format!("{what} index.json"))?;
        let idx: Value = serde_json::from_slice(&idx)
            .map_err(|e| ConvertError::BadInput(format!("{what} index.json: {e}")))?;
        for m in idx["manifests"].as_array().into_iter().flatten() {
            let names = m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(|s| vec![s.to_string()])
                .unwrap_or_default();
            self.images.push(Image {
                names,
                desc: Desc::from_json(m),
            });
        }
        Ok(())
    }

    fn load_docker(&mut self, members: &HashMap<String, (u64, u64)>, what: &str) -> Result<()> {
        let m = members.get("manifest.json").ok_or_else(|| {
            ConvertError::BadInput(format!(
                "{what} has no manifest.json: it is not a `docker save` archive (an OCI \
                 layout in a tar is oci-archive:)"
            ))
        })?;
        let m = self.read_member(*m, 4 << 20, &format!("{what} manifest.json"))?;
        let list: Vec<Value> = serde_json::from_slice(&m)
            .map_err(|e| ConvertError::BadInput(format!("{what} manifest.json: {e}")))?;
        let member = |name: &str| {
            let n = name.trim_start_matches("./");
            members.get(n).copied().ok_or_else(|| {
                ConvertError::BadInput(format!(
                    "{what}: manifest.json names {name:?}, which it lacks"
                ))
            })
        };
        for (i, entry) in list.iter().enumerate() {
            let config_name = entry["Config"].as_str().ok_or_else(|| {
                ConvertError::BadInput(format!("{what}: manifest.json entry {i} has no Config"))
            })?;
            let crange = member(config_name)?;
            let config = self.read_member(crange, 4 << 20, &format!("{what} {config_name}"))?;
            let cv: Value = serde_json::from_slice(&config)
                .map_err(|e| ConvertError::BadInput(format!("{what} {config_name}: {e}")))?;
            let config_digest = digest::sha256(&config);
            self.blobs.insert(config_digest.clone(), crange);
            let diff_ids: Vec<&str> = cv["rootfs"]["diff_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            let layers: Vec<&str> = entry["Layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str())
                .collect();
            if layers.len() != diff_ids.len() {
                return Err(ConvertError::BadInput(format!(
                    "{what}: image {i} lists {} layers but its config has {} diff_ids",
                    layers.len(),
                    diff_ids.len()
                )));
            }
            let mut descs = Vec::new();
            for (name, diff_id) in layers.iter().zip(&diff_ids) {
                let range = member(name)?;
                let (media_type, d) = self.layer_digest(name, range, diff_id)?;
                self.blobs.insert(d.clone(), range);
                descs.push(json!({"mediaType": media_type, "digest": d, "size": range.1}));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": crange.1},
                "layers": descs,
            });
            let bytes = serde_json::to_vec(&manifest).expect("JSON values serialise");
            let d = digest::sha256(&bytes);
            let desc = Desc {
                media_type: OCI_MANIFEST.into(),
                digest: d.clone(),
                size: bytes.len() as u64,
            };
            self.made.insert(d, bytes);
            let mut names: Vec<String> = entry["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            names.push(format!("@{i}"));
            self.images.push(Image { names, desc });
        }
        if self.images.is_empty() {
            return Err(ConvertError::BadInput(format!(
                "{what}: manifest.json lists no image"
            )));
        }
        Ok(())
    }

    /// The media type and digest of a docker-archive layer: an uncompressed layer is its
    /// diff_id (verified when it is read); a compressed one is hashed now.
    fn layer_digest(
        &self,
        name: &str,
        range: (u64, u64),
        diff_id: &str,
    ) -> Result<(&'static str, String)> {
        let mut f = File::open(&self.path)
            .map_err(|e| ConvertError::io(format!("opening {}", self.path.display()), e))?;
        f.seek(SeekFrom::Start(range.0))
            .map_err(|e| ConvertError::io(format!("reading {}", self.path.display()), e))?;
        let mut r = f.take(range.1);
        let mut magic = [0u8; 4];
        let mut n = 0;
        while n < 4 {
            match r.read(&mut magic[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(ConvertError::io(format!("reading {name}"), e)),
            }
        }
        let media_type = match &magic[..n] {
            [0x1f, 0x8b, ..] => OCI_LAYER_GZIP,
            [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
            _ => return Ok((OCI_LAYER_TAR, diff_id.to_string())),
        };
        let mut h = digest::HashReader::new(io::Cursor::new(magic[..n].to_vec()).chain(r));
        io::copy(&mut h, &mut io::sink())
            .map_err(|e| ConvertError::io(format!("reading {name}"), e))?;
        Ok((media_type, h.finish().0))
    }

    fn read_only(&self) -> ConvertError {
        ConvertError::Unsupported(format!(
            "{} is read-only: write the conversion elsewhere with --target-repository \
             (a registry repository or oci:DIR)",
            self.name()
        ))
    }
}

impl Store for ArchiveStore {
    fn name(&self) -> String {
        format!("{}:{}", self.kind.transport(), self.path.display())
    }

    fn is_local(&self) -> bool {
        true
    }

    fn location(&self) -> (String, String) {
        let p = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        (self.kind.transport().into(), p.display().to_string())
    }

    /// `reference` is a name the archive gives an image (an OCI `ref.name`, a docker
    /// `RepoTags` entry such as `busybox:latest`, or just its tag when one image has it),
    /// `@N` for the Nth image of a docker archive, a manifest digest, or empty when the
    /// archive holds exactly one image.
    fn resolve(&self, reference: &str) -> Result<Desc> {
        let listing = || {
            let names: Vec<String> = self
                .images
                .iter()
                .map(|i| match i.names.first() {
                    Some(n) => n.clone(),
                    None => i.desc.digest.clone(),
                })
                .collect();
            names.join(", ")
        };
        if reference.is_empty() {
            return match self.images.as_slice() {
                [one] => Ok(one.desc.clone()),
                _ => Err(ConvertError::Unsupported(format!(
                    "{} holds {} images ({}): name one with -i or {}:FILE:NAME",
                    self.name(),
                    self.images.len(),
                    listing(),
                    self.kind.transport()
                ))),
            };
        }
        if reference.starts_with("sha256:") {
            if let Some(i) = self.images.iter().find(|i| i.desc.digest == reference) {
                return Ok(i.desc.clone());
            }
            if let Some(b) = self.made.get(reference) {
                return Ok(Desc {
                    media_type: OCI_MANIFEST.into(),
                    digest: reference.into(),
                    size: b.len() as u64,
                });
            }
            if let Some(&r) = self.blobs.get(reference) {
                let b = self.read_member(r, 4 << 20, reference)?;
                let v: Value = serde_json::from_slice(&b)
                    .map_err(|e| ConvertError::BadInput(format!("{reference}: {e}")))?;
                return Ok(Desc {
                    media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
                    digest: reference.into(),
                    size: b.len() as u64,
                });
            }
        }
        let short = |n: &str| {
            n.strip_prefix("docker.io/library/")
                .or_else(|| n.strip_prefix("docker.io/"))
                .unwrap_or(n)
                .to_string()
        };
        let exact: Vec<&Image> = self
            .images
            .iter()
            .filter(|i| {
                i.names
                    .iter()
                    .any(|n| n == reference || short(n) == short(reference))
            })
            .collect();
        let found = if exact.is_empty() {
            // A bare tag: the one image with a `name:TAG`.
            self.images
                .iter()
                .filter(|i| {
                    i.names
                        .iter()
                        .any(|n| n.rsplit_once(':').is_some_and(|(_, t)| t == reference))
                })
                .collect()
        } else {
            exact
        };
        match found.as_slice() {
            [one] => Ok(one.desc.clone()),
            [] => Err(ConvertError::NotFound(format!(
                "{reference:?} in {} (it holds: {})",
                self.name(),
                listing()
            ))),
            _ => Err(ConvertError::Unsupported(format!(
                "{reference:?} names several images in {}: give the full name:tag",
                self.name()
            ))),
        }
    }

    fn fetch_manifest(&self, desc: &Desc) -> Result<Vec<u8>> {
        if let Some(b) = self.made.get(&desc.digest) {
            return Ok(b.clone());
        }
        let range = *self.blobs.get(&desc.digest).ok_or_else(|| {
            ConvertError::NotFound(format!("manifest {} in {}", desc.digest, self.name()))
        })?;
        let b = self.read_member(range, 4 << 20, &format!("manifest {}", desc.digest))?;
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
        let (off, size) = *self
            .blobs
            .get(d)
            .ok_or_else(|| ConvertError::NotFound(format!("blob {d} in {}", self.name())))?;
        let mut f = File::open(&self.path)
            .map_err(|e| ConvertError::io(format!("opening {}", self.path.display()), e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| ConvertError::io(format!("reading {}", self.path.display()), e))?;
        Ok(Box::new(VerifyingReader::new(
            io::BufReader::with_capacity(1 << 16, f.take(size)),
            d,
            format!("blob {d} of {}", self.name()),
        )))
    }

    fn has_blob(&self, d: &str) -> Result<Option<u64>> {
        Ok(self.blobs.get(d).map(|r| r.1))
    }

    fn push_blob(&self, _path: &Path, _digest: &str, _size: u64) -> Result<Pushed> {
        Err(self.read_only())
    }

    fn push_blob_bytes(&self, _bytes: &bytes::Bytes, _digest: &str) -> Result<Pushed> {
        Err(self.read_only())
    }

    fn push_manifest(&self, _bytes: &[u8], _media_type: &str) -> Result<String> {
        Err(self.read_only())
    }

    fn tag(&self, _tag: &str, _bytes: &[u8], _media_type: &str) -> Result<()> {
        Err(self.read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(name, bytes)` members.
    fn tar_of(path: &Path, files: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
    }

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"world"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn docker_archive_gets_an_oci_manifest_named_by_its_repo_tags() {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar();
        let diff_id = digest::sha256(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}
        }))
        .unwrap();
        let manifest =
            json!([{"Config": "c.json", "RepoTags": ["app:v1"], "Layers": ["l/layer.tar"]}]);
        let p = dir.path().join("a.tar");
        tar_of(
            &p,
            &[
                ("manifest.json", &serde_json::to_vec(&manifest).unwrap()),
                ("c.json", &config),
                ("l/layer.tar", &layer),
            ],
        );
        let s = ArchiveStore::open(ArchiveKind::Docker, &p).unwrap();
        for r in ["", "app:v1", "v1", "docker.io/library/app:v1", "@0"] {
            let d = s.resolve(r).unwrap();
            assert_eq!(d.media_type, OCI_MANIFEST, "{r}");
        }
        assert!(matches!(s.resolve("v2"), Err(ConvertError::NotFound(m)) if m.contains("app:v1")));
        let d = s.resolve("").unwrap();
        let m: Value = serde_json::from_slice(&s.fetch_manifest(&d).unwrap()).unwrap();
        assert_eq!(m["layers"][0]["digest"], diff_id);
        assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_TAR);
        let mut got = Vec::new();
        s.fetch_blob(&diff_id)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, layer);
        let mut c = Vec::new();
        s.fetch_blob(&digest::sha256(&config))
            .unwrap()
            .read_to_end(&mut c)
            .unwrap();
        assert_eq!(c, config);
        assert!(
            matches!(s.push_manifest(b"{}", OCI_MANIFEST), Err(ConvertError::Unsupported(m)) if m.contains("--target-repository"))
        );
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_fails_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let layer = layer_tar();
        let wrong = digest::sha256(b"something else");
        let config = serde_json::to_vec(&json!({"rootfs": {"diff_ids": [wrong]}})).unwrap();
        let manifest = json!([{"Config": "c.json", "Layers": ["layer.tar"]}]);
        let p = dir.path().join("a.tar");
        tar_of(
            &p,
            &[
                ("manifest.json", &serde_json::to_vec(&manifest).unwrap()),
                ("c.json", &config),
                ("layer.tar", &layer),
            ],
        );
        let s = ArchiveStore::open(ArchiveKind::Docker, &p).unwrap();
        let e = s
            .fetch_blob(&wrong)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn oci_archive_reads_blobs_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let m = br#"{"schemaVersion":2}"#;
        let d = digest::sha256(m);
        let idx = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
        let p = dir.path().join("o.tar");
        let blob = format!("blobs/sha256/{}", digest::hex_of(&d));
        tar_of(
            &p,
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                ("index.json", &serde_json::to_vec(&idx).unwrap()),
                (&blob, m),
            ],
        );
        let s = ArchiveStore::open(ArchiveKind::Oci, &p).unwrap();
        assert_eq!(s.resolve("v1").unwrap().digest, d);
        assert_eq!(s.resolve("").unwrap().digest, d);
        assert_eq!(s.fetch_manifest(&s.resolve("v1").unwrap()).unwrap(), m);
        assert!(matches!(
            ArchiveStore::open(ArchiveKind::Docker, &p),
            Err(ConvertError::BadInput(m)) if m.contains("oci-archive")
        ));
        assert!(matches!(
            ArchiveStore::open(ArchiveKind::Oci, dir.path().join("missing.tar")),
            Err(ConvertError::NotFound(_))
        ));
    }
}
