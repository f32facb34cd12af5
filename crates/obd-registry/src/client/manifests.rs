//! Manifests (exact bytes, digests checked), deletes and referrers (native API or the
//! `sha256-<hex>` fallback tag index).

use std::io::Read;

use reqwest::header::HeaderMap;
use reqwest::Method;
use tracing::{debug, warn};

use super::blobs::DigestHasher;
use super::transport::{
    content_length, header_str, network_err, read_error_detail, status_error, ReqBody,
};
use super::{scope_pull, scope_push, Client};
use crate::error::{Error, Result};
use crate::reference::{validate_digest, validate_repository};
use crate::types::*;

/// `sha256-<hex>`: the referrers fallback tag for a subject digest.
pub fn referrers_fallback_tag(subject_digest: &str) -> String {
    subject_digest.replacen(':', "-", 1)
}

fn media_type_of(h: &HeaderMap) -> Option<String> {
    header_str(h, "content-type").map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

fn is_digest(s: &str) -> bool {
    s.contains(':')
}

fn compute_digest_like(expected: &str, data: &[u8]) -> Result<String> {
    let mut h = DigestHasher::for_digest(expected)?;
    h.update(data);
    Ok(h.finish())
}

impl Client {
    /// Fetch a manifest or index by tag or digest, keeping its exact bytes.
    ///
    /// Docker schema1 manifests give [`Error::Unsupported`]; a manifest fetched by digest
    /// must hash to that digest.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        validate_repository(repo)?;
        if is_digest(reference) {
            validate_digest(reference)?;
        }
        let what = format!("manifest {repo}:{reference}");
        let mut attempt = 0u32;
        let (bytes, header_mt, header_digest) = loop {
            let resp = self.simple(
                Method::GET,
                &format!("v2/{repo}/manifests/{reference}"),
                &[("Accept", MANIFEST_ACCEPT)],
                ReqBody::Empty,
                &[scope_pull(repo)],
                &[200],
                &what,
            )?;
            let header_mt = media_type_of(resp.headers());
            let header_digest =
                header_str(resp.headers(), "docker-content-digest").map(|s| s.to_string());
            let url = resp.url().clone();
            let mut bytes = Vec::new();
            match resp.take(64 << 20).read_to_end(&mut bytes) {
                Ok(_) => break (bytes, header_mt, header_digest),
                Err(e) => {
                    // A body that broke off or stalled: ask again.
                    let err = network_err(
                        &url,
                        format!(
                            "reading manifest: {}",
                            read_error_detail(&e, self.opts.read_timeout)
                        ),
                    );
                    if attempt >= self.opts.retries {
                        return Err(err);
                    }
                    let d = self.backoff(attempt);
                    warn!(manifest = %what, error = %err, delay_ms = d.as_millis() as u64, "retrying");
                    std::thread::sleep(d);
                    attempt += 1;
                }
            }
        };
        let media_type = classify_manifest(header_mt.as_deref(), &bytes, &what)?;
        let digest = if is_digest(reference) {
            let actual = compute_digest_like(reference, &bytes)?;
            if actual != reference {
                return Err(Error::DigestMismatch {
                    what,
                    expected: reference.to_string(),
                    actual,
                });
            }
            // Keep the sha256 as the canonical digest when another algorithm was used.
            if reference.starts_with("sha256:") {
                actual
            } else {
                sha256_digest(&bytes)
            }
        } else {
            let d = sha256_digest(&bytes);
            if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
                if h != d {
                    warn!(manifest = %what, header = %h, computed = %d, "Docker-Content-Digest differs from the content digest");
                }
            }
            d
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// `HEAD` a manifest: `None` if it does not exist.
    pub fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        validate_repository(repo)?;
        let what = format!("manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self.send(
            Method::HEAD,
            &url,
            &[("Accept", MANIFEST_ACCEPT)],
            &mut ReqBody::Empty,
            &[scope_pull(repo)],
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.expect(Method::HEAD, &url, resp, &[200], &what)?;
        let h = resp.headers();
        Ok(Some(ManifestHead {
            digest: header_str(h, "docker-content-digest").map(|s| s.to_string()),
            media_type: media_type_of(h),
            size: content_length(h),
        }))
    }

    /// `PUT` a manifest by tag or digest; returns its sha256 digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        Ok(self
            .put_manifest_full(repo, reference, media_type, bytes)?
            .digest)
    }

    /// Like [`Client::put_manifest`], also returning the `OCI-Subject` header.
    pub fn put_manifest_full(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PushedManifest> {
        validate_repository(repo)?;
        let digest = sha256_digest(bytes);
        let what = format!("manifest {repo}:{reference}");
        if is_digest(reference) {
            validate_digest(reference)?;
            let actual = compute_digest_like(reference, bytes)?;
            if actual != reference {
                return Err(Error::DigestMismatch {
                    what,
                    expected: reference.to_string(),
                    actual,
                });
            }
        }
        let resp = self.simple(
            Method::PUT,
            &format!("v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            ReqBody::Bytes(bytes::Bytes::copy_from_slice(bytes)),
            &[scope_push(repo)],
            &[200, 201, 202, 204],
            &what,
        )?;
        if let Some(d) = header_str(resp.headers(), "docker-content-digest") {
            if d.starts_with("sha256:") && d != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: digest,
                    actual: d.to_string(),
                });
            }
        }
        Ok(PushedManifest {
            digest,
            oci_subject: header_str(resp.headers(), "oci-subject").map(|s| s.to_string()),
        })
    }

    /// Delete a manifest by digest (the registry must allow deletes).
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        self.simple(
            Method::DELETE,
            &format!("v2/{repo}/manifests/{digest}"),
            &[],
            ReqBody::Empty,
            &[format!("repository:{repo}:delete"), scope_push(repo)],
            &[200, 202, 204],
            &format!("manifest {repo}@{digest}"),
        )?;
        Ok(())
    }

    /// Referrers of `digest`, optionally filtered by artifact type. Uses the referrers API
    /// when the registry has it, else the `sha256-<hex>` fallback tag index (empty when that
    /// tag does not exist).
    pub fn referrers(
        &self,
        repo: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        let mut path = format!("v2/{repo}/referrers/{digest}");
        if let Some(at) = artifact_type {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("artifactType", at);
            path = format!("{path}?{}", q.finish());
        }
        let url = self.url(&path)?;
        let resp = self.send(
            Method::GET,
            &url,
            &[("Accept", OCI_INDEX)],
            &mut ReqBody::Empty,
            &[scope_pull(repo)],
        )?;
        let status = resp.status().as_u16();
        let mt = media_type_of(resp.headers()).unwrap_or_default();
        let (descs, filtered) = if status == 200 && (mt == OCI_INDEX || mt == "application/json") {
            let applied = header_str(resp.headers(), "oci-filters-applied")
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            let idx: serde_json::Value = serde_json::from_reader(resp)
                .map_err(|e| Error::Protocol(format!("bad referrers response: {e}")))?;
            (index_descriptors(&idx)?, applied)
        } else if matches!(status, 200 | 400 | 404 | 405 | 406) {
            debug!(
                repo,
                digest, status, "no referrers API; using the fallback tag"
            );
            drop(resp);
            match self.get_manifest(repo, &referrers_fallback_tag(digest)) {
                Ok(m) => (index_descriptors(&m.json()?)?, false),
                Err(Error::NotFound { .. }) => (Vec::new(), false),
                Err(e) => return Err(e),
            }
        } else {
            return Err(self.auth_context(status_error(
                &Method::GET,
                &url,
                resp,
                &format!("referrers of {digest}"),
            )));
        };
        Ok(match artifact_type {
            Some(at) if !filtered => descs
                .into_iter()
                .filter(|d| d.artifact_type.as_deref() == Some(at))
                .collect(),
            _ => descs,
        })
    }

    /// Add (or replace, by digest) `descriptor` in the referrers fallback index tagged
    /// `sha256-<hex of subject>`; returns the new index digest. Not atomic against concurrent
    /// writers of the same tag.
    pub fn add_referrer_fallback(
        &self,
        repo: &str,
        subject_digest: &str,
        descriptor: &Descriptor,
    ) -> Result<String> {
        validate_digest(subject_digest)?;
        let tag = referrers_fallback_tag(subject_digest);
        let mut index = match self.get_manifest(repo, &tag) {
            Ok(m) => m.json()?,
            Err(Error::NotFound { .. }) => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": []
            }),
            Err(e) => return Err(e),
        };
        let entry = serde_json::to_value(descriptor)
            .map_err(|e| Error::Protocol(format!("cannot encode descriptor: {e}")))?;
        let list = index
            .as_object_mut()
            .ok_or_else(|| Error::Protocol(format!("fallback index {tag} is not an object")))?
            .entry("manifests")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let arr = list
            .as_array_mut()
            .ok_or_else(|| Error::Protocol(format!("fallback index {tag} has bad manifests")))?;
        arr.retain(|d| {
            d.get("digest").and_then(|x| x.as_str()) != Some(descriptor.digest.as_str())
        });
        arr.push(entry);
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| Error::Protocol(format!("cannot encode index: {e}")))?;
        self.put_manifest(repo, &tag, OCI_INDEX, &bytes)
    }
}

fn index_descriptors(idx: &serde_json::Value) -> Result<Vec<Descriptor>> {
    match idx.get("manifests") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| Error::Protocol(format!("bad descriptors in index: {e}"))),
    }
}
