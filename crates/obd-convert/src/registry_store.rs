//! A repository in an OCI distribution registry as a [`Store`], over `obd-registry`.
//!
//! Manifests are pushed by digest; tags move with a second PUT at the very end. Manifests
//! with a `subject` are also listed in the `sha256-<hex>` fallback index when the registry
//! did not answer with `OCI-Subject` (no native referrers API).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use obd_registry::{BlobPush, Client, Descriptor, Error as RegError};
use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::store::{Desc, Pushed, Store};

fn pushed(how: BlobPush) -> Pushed {
    match how {
        BlobPush::AlreadyExists => Pushed::AlreadyPresent,
        BlobPush::Uploaded => Pushed::Uploaded,
    }
}

/// One repository of a registry.
pub struct RegistryStore {
    client: Client,
    repo: String,
    /// Manifests fetched by `resolve`, by digest, to avoid a second GET.
    cache: Mutex<HashMap<String, Vec<u8>>>,
}

impl RegistryStore {
    pub fn new(client: Client, repo: impl Into<String>) -> Self {
        RegistryStore {
            client,
            repo: repo.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// Maps registry errors onto the engine's error kinds.
pub fn map_err(e: RegError) -> ConvertError {
    match e {
        RegError::Auth { .. } | RegError::CredentialHelper { .. } => {
            ConvertError::Auth(e.to_string())
        }
        RegError::NotFound { .. } => ConvertError::NotFound(e.to_string()),
        RegError::DigestMismatch { .. } | RegError::SizeMismatch { .. } => {
            ConvertError::BadInput(e.to_string())
        }
        RegError::Unsupported(_) | RegError::InvalidReference { .. } | RegError::Config(_) => {
            ConvertError::Unsupported(e.to_string())
        }
        RegError::Network { .. } | RegError::Tls { .. } | RegError::Io(_) => {
            ConvertError::io("registry", std::io::Error::other(e.to_string()))
        }
        other => ConvertError::Store(other.to_string()),
    }
}

impl Store for RegistryStore {
    fn name(&self) -> String {
        format!("{}/{}", self.client.host(), self.repo)
    }

    fn resolve(&self, reference: &str) -> Result<Desc> {
        let m = self
            .client
            .get_manifest(&self.repo, reference)
            .map_err(map_err)?;
        let d = Desc {
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
            size: m.bytes.len() as u64,
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.digest.clone(), m.bytes);
        Ok(d)
    }

    fn fetch_manifest(&self, desc: &Desc) -> Result<Vec<u8>> {
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&desc.digest)
        {
            return Ok(b.clone());
        }
        let m = self
            .client
            .get_manifest(&self.repo, &desc.digest)
            .map_err(map_err)?;
        Ok(m.bytes)
    }

    fn fetch_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(
            self.client.get_blob(&self.repo, digest).map_err(map_err)?,
        ))
    }

    fn location(&self) -> (String, String) {
        (self.client.host().to_string(), self.repo.clone())
    }

    fn mount_blob(&self, digest: &str, from_repo: &str) -> Result<bool> {
        self.client
            .mount_blob(&self.repo, from_repo, digest)
            .map_err(map_err)
    }

    fn check_push(&self) -> Result<()> {
        self.client.check_push(&self.repo).map_err(map_err)
    }

    fn has_blob(&self, digest: &str) -> Result<Option<u64>> {
        self.client.head_blob(&self.repo, digest).map_err(map_err)
    }

    fn push_blob(&self, path: &Path, digest: &str, size: u64) -> Result<Pushed> {
        // The digest was computed when the file was finished; the registry verifies it.
        let how = self
            .client
            .push_blob_file_as(&self.repo, path, digest, size)
            .map_err(map_err)?;
        Ok(pushed(how))
    }

    fn push_blob_bytes(&self, bytes: &bytes::Bytes, digest: &str) -> Result<Pushed> {
        let how = self
            .client
            .push_blob_shared(&self.repo, digest, bytes.clone())
            .map_err(map_err)?;
        Ok(pushed(how))
    }

    fn push_manifest(&self, bytes: &[u8], media_type: &str) -> Result<String> {
        let d = crate::digest::sha256(bytes);
        let pushed = self
            .client
            .put_manifest_full(&self.repo, &d, media_type, bytes)
            .map_err(map_err)?;
        let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if let Some(subject) = v["subject"]["digest"].as_str() {
            if pushed.oci_subject.is_none() {
                let mut desc = Descriptor::new(media_type, &d, bytes.len() as u64);
                desc.artifact_type = v["artifactType"].as_str().map(str::to_string);
                self.client
                    .add_referrer_fallback(&self.repo, subject, &desc)
                    .map_err(map_err)?;
                tracing::info!("listed {d} in the referrers fallback tag of {subject}");
            }
        }
        Ok(pushed.digest)
    }

    fn tag(&self, tag: &str, bytes: &[u8], media_type: &str) -> Result<()> {
        self.client
            .put_manifest(&self.repo, tag, media_type, bytes)
            .map_err(map_err)?;
        Ok(())
    }
}
