//! Media types, fetched manifests and descriptors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The `Accept` header sent for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Is this an index-like media type (OCI index or Docker manifest list)?
pub fn is_index_media_type(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
}

/// Is this a manifest or index media type we understand?
pub fn is_manifest_media_type(mt: &str) -> bool {
    matches!(
        mt,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A manifest or index as fetched: the exact bytes (never re-serialised), its media type and
/// its digest (sha256 of `bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }

    /// Parse the bytes as JSON.
    pub fn json(&self) -> crate::Result<serde_json::Value> {
        serde_json::from_slice(&self.bytes).map_err(|e| {
            crate::Error::Protocol(format!("manifest {} is not JSON: {e}", self.digest))
        })
    }
}

/// What a `HEAD` on a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// An OCI content descriptor (the fields the referrers machinery needs; unknown fields are
/// preserved in `extra`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            artifact_type: None,
            annotations: None,
            extra: Default::default(),
        }
    }
}

/// The result of a manifest `PUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// sha256 of the pushed bytes (checked against `Docker-Content-Digest` when returned).
    pub digest: String,
    /// The `OCI-Subject` response header: present when the registry processed `subject`
    /// (native referrers API); absent on registries that need the tag-schema fallback.
    pub oci_subject: Option<String>,
}

/// Decide the media type of fetched manifest bytes: the `Content-Type` unless it is generic,
/// else the JSON `mediaType`, else guessed from the fields (OCI manifests may omit it).
/// Docker schema1 and unknown types are [`crate::Error::Unsupported`].
pub(crate) fn classify_manifest(
    content_type: Option<&str>,
    bytes: &[u8],
    what: &str,
) -> crate::Result<String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k));
    let body_mt = field("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let mut media_type = match content_type {
        Some(mt) if !mt.is_empty() && mt != "application/json" && mt != "text/plain" => {
            mt.to_string()
        }
        _ => body_mt.to_string(),
    };
    if media_type.is_empty() {
        if field("manifests").is_some() {
            media_type = OCI_INDEX.into();
        } else if field("layers").is_some() || field("config").is_some() {
            media_type = OCI_MANIFEST.into();
        }
    }
    let schema1 = media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
        || field("schemaVersion").and_then(|v| v.as_u64()) == Some(1);
    if schema1 {
        return Err(crate::Error::Unsupported(format!(
            "{what} is a Docker schema1 manifest; convert it to schema2 or OCI first"
        )));
    }
    if !is_manifest_media_type(&media_type) {
        return Err(crate::Error::Unsupported(format!(
            "{what} has unsupported media type {media_type:?}"
        )));
    }
    Ok(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_classification() {
        let oci = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            classify_manifest(Some(OCI_MANIFEST), oci, "m").unwrap(),
            OCI_MANIFEST
        );
        // umoci-style manifest without mediaType, served as generic JSON
        assert_eq!(
            classify_manifest(Some("application/json"), oci, "m").unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(
            classify_manifest(None, br#"{"schemaVersion":2,"manifests":[]}"#, "m").unwrap(),
            OCI_INDEX
        );
        assert_eq!(
            classify_manifest(
                None,
                format!(r#"{{"mediaType":"{DOCKER_MANIFEST_LIST}"}}"#).as_bytes(),
                "m"
            )
            .unwrap(),
            DOCKER_MANIFEST_LIST
        );
        for (ct, body) in [
            (Some(DOCKER_SCHEMA1_SIGNED), &b"{}"[..]),
            (Some(DOCKER_SCHEMA1), &b"{}"[..]),
            (
                Some("application/json"),
                &br#"{"schemaVersion":1,"fsLayers":[]}"#[..],
            ),
            (Some("text/html"), &b"<html>"[..]),
            (None, &b"not json"[..]),
        ] {
            let e = classify_manifest(ct, body, "m").unwrap_err();
            assert!(matches!(e, crate::Error::Unsupported(_)), "{e}");
            assert_eq!(e.exit_code(), 5);
        }
        let e = classify_manifest(Some(DOCKER_SCHEMA1_SIGNED), b"{}", "img:v1").unwrap_err();
        assert!(e.to_string().contains("schema1"), "{e}");
    }

    #[test]
    fn descriptor_round_trip_keeps_unknown_fields() {
        let j = r#"{"mediaType":"a","digest":"sha256:00","size":3,"artifactType":"t","platform":{"os":"linux"}}"#;
        let d: Descriptor = serde_json::from_str(j).unwrap();
        assert_eq!(d.artifact_type.as_deref(), Some("t"));
        assert!(d.extra.contains_key("platform"));
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(j).unwrap());
        assert_eq!(
            serde_json::to_string(&Descriptor::new("a", "sha256:00", 1)).unwrap(),
            r#"{"mediaType":"a","digest":"sha256:00","size":1}"#
        );
    }
}
