//! Media types, overlaybd annotations, and the JSON of converted manifests, configs and
//! indexes.

use serde_json::{json, Map, Value};

use crate::error::{ConvertError, Result};
use crate::store::Desc;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const ARTIFACT_NATIVE: &str = "application/vnd.containerd.overlaybd.native.v1+json";

pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ARTIFACT_TURBO: &str = "application/vnd.containerd.overlaybd.turbo.v1+json";
pub const TURBO_VERSION: &str = "0.1.0-turbo.ociv1";
pub const ANN_TURBO_TARGET_DIGEST: &str =
    "containerd.io/snapshot/overlaybd/turbo-oci/target-digest";
pub const ANN_TURBO_TARGET_MEDIA_TYPE: &str =
    "containerd.io/snapshot/overlaybd/turbo-oci/target-media-type";
pub const ANN_FS_TYPE: &str = "containerd.io/snapshot/overlaybd/blob-fs-type";
pub const ANN_VERSION: &str = "containerd.io/snapshot/overlaybd/version";
pub const ANN_BLOB_DIGEST: &str = "containerd.io/snapshot/overlaybd/blob-digest";
pub const ANN_BLOB_SIZE: &str = "containerd.io/snapshot/overlaybd/blob-size";
pub const NATIVE_VERSION: &str = "0.1.0";

/// What a media type denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Index,
}

/// Classifies a manifest media type; schema1 and unknown types are refused clearly.
pub fn kind_of(media_type: &str, body: Option<&Value>) -> Result<Kind> {
    match media_type {
        DOCKER_MANIFEST | OCI_MANIFEST => Ok(Kind::Manifest),
        DOCKER_LIST | OCI_INDEX => Ok(Kind::Index),
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(ConvertError::Unsupported(
            "Docker schema 1 manifests are not supported; re-push the image with a current Docker or skopeo".into(),
        )),
        // OCI manifests may omit mediaType (umoci does): look at the body.
        "" | "application/json" => match body {
            Some(v) if v.get("manifests").is_some() => Ok(Kind::Index),
            Some(v) if v.get("layers").is_some() && v.get("config").is_some() => Ok(Kind::Manifest),
            _ => Err(ConvertError::Unsupported(format!("cannot tell what media type {media_type:?} is"))),
        },
        other => Err(ConvertError::Unsupported(format!("unsupported media type {other:?}"))),
    }
}

/// Docker or OCI flavour of the output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flavor {
    pub oci: bool,
}

impl Flavor {
    pub fn manifest(self) -> &'static str {
        if self.oci {
            OCI_MANIFEST
        } else {
            DOCKER_MANIFEST
        }
    }
    pub fn config(self) -> &'static str {
        if self.oci {
            OCI_CONFIG
        } else {
            DOCKER_CONFIG
        }
    }
    pub fn layer(self) -> &'static str {
        if self.oci {
            OCI_LAYER_TAR
        } else {
            DOCKER_LAYER_TAR
        }
    }
}

/// The descriptor of a native overlaybd layer, annotations in sorted key order.
pub fn native_layer(d: &str, size: u64, f: Flavor) -> Value {
    json!({
        "mediaType": f.layer(),
        "digest": d,
        "size": size,
        "annotations": {
            ANN_BLOB_DIGEST: d,
            ANN_BLOB_SIZE: size.to_string(),
            ANN_VERSION: NATIVE_VERSION,
        }
    })
}

/// A TurboOCIv1 layer descriptor: the `turboOCIv1.tar.gz` blob, pointing at the source
/// layer `target` (`target_gzip`: whether its bytes are gzip, sniffed) by annotation. The
/// target media type keeps the source's Docker/OCI family, as upstream.
pub fn turbo_layer(
    d: &str,
    size: u64,
    f: Flavor,
    target: &str,
    target_media_type: &str,
    target_gzip: bool,
    fstype: &str,
) -> Value {
    let docker = target_media_type.starts_with("application/vnd.docker.");
    let tmt = match (docker, target_gzip) {
        (true, true) => DOCKER_LAYER_GZIP,
        (true, false) => DOCKER_LAYER_TAR,
        (false, true) => OCI_LAYER_GZIP,
        (false, false) => OCI_LAYER_TAR,
    };
    let mut v = json!({
        "mediaType": if f.oci { OCI_LAYER_GZIP } else { DOCKER_LAYER_GZIP },
        "digest": d,
        "size": size,
        "annotations": {
            ANN_BLOB_DIGEST: d,
            ANN_BLOB_SIZE: size.to_string(),
            ANN_TURBO_TARGET_DIGEST: target,
            ANN_TURBO_TARGET_MEDIA_TYPE: tmt,
            ANN_VERSION: TURBO_VERSION,
        }
    });
    if fstype != "ext4" {
        v["annotations"][ANN_FS_TYPE] = json!(fstype);
    }
    v
}

/// The converted config: the source JSON with only `rootfs.diff_ids` replaced (every other
/// field, known or not, is kept in its order).
pub fn convert_config(src: &[u8], diff_ids: &[String]) -> Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(src)
        .map_err(|e| ConvertError::BadInput(format!("image config: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ConvertError::BadInput("image config is not an object".into()))?;
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers"}));
    if !rootfs.is_object() {
        return Err(ConvertError::BadInput(
            "image config rootfs is not an object".into(),
        ));
    }
    rootfs["diff_ids"] = json!(diff_ids);
    Ok(serde_json::to_vec(&v).expect("serialises"))
}

/// The converted manifest, keys in the order of the OCI/Docker specs.
pub fn build_manifest(
    src: &Value,
    f: Flavor,
    config: &Desc,
    layers: Vec<Value>,
    referrer: Option<(&str, &Desc)>,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert(
        "schemaVersion".into(),
        src.get("schemaVersion").cloned().unwrap_or(json!(2)),
    );
    m.insert("mediaType".into(), json!(f.manifest()));
    match referrer {
        Some((at, _)) => {
            m.insert("artifactType".into(), json!(at));
        }
        None => {
            if let Some(a) = src.get("artifactType") {
                m.insert("artifactType".into(), a.clone());
            }
        }
    }
    m.insert(
        "config".into(),
        json!({"mediaType": f.config(), "digest": config.digest, "size": config.size}),
    );
    m.insert("layers".into(), Value::Array(layers));
    match referrer {
        Some((_, subject)) => {
            m.insert("subject".into(), subject.to_json());
        }
        None => {
            if let Some(s) = src.get("subject") {
                m.insert("subject".into(), s.clone());
            }
        }
    }
    if let Some(a) = src
        .get("annotations")
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
    {
        m.insert("annotations".into(), a.clone());
    }
    serde_json::to_vec(&Value::Object(m)).expect("serialises")
}

/// The `os/arch[/variant]` of an index entry's platform.
pub fn platform_string(entry: &Value) -> Option<String> {
    let p = entry.get("platform")?;
    let mut s = format!("{}/{}", p["os"].as_str()?, p["architecture"].as_str()?);
    if let Some(v) = p["variant"].as_str().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

/// BuildKit attestation manifests cannot be re-associated after conversion.
pub fn is_attestation(entry: &Value) -> bool {
    entry["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_unknown_fields_in_order() {
        let src = br#"{"created":"2023-01-01T00:00:00Z","zzz_unknown":{"b":1,"a":2},"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Test":["x"]}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x"}]}"#;
        let out = convert_config(src, &["sha256:bb".to_string()]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"created":"2023-01-01T00:00:00Z","zzz_unknown":{"b":1,"a":2},"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Test":["x"]}},"rootfs":{"type":"layers","diff_ids":["sha256:bb"]},"history":[{"created_by":"x"}]}"#
        );
    }

    #[test]
    fn manifest_shape() {
        let src = json!({"schemaVersion": 2, "annotations": {"a": "b"}});
        let c = Desc {
            media_type: String::new(),
            digest: "sha256:cc".into(),
            size: 3,
        };
        let l = native_layer("sha256:dd", 10, Flavor { oci: true });
        let s = Desc {
            media_type: DOCKER_MANIFEST.into(),
            digest: "sha256:ee".into(),
            size: 528,
        };
        let m = build_manifest(
            &src,
            Flavor { oci: true },
            &c,
            vec![l],
            Some((ARTIFACT_NATIVE, &s)),
        );
        let t = String::from_utf8(m).unwrap();
        assert!(t.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.containerd.overlaybd.native.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:cc","size":3},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:dd","size":10,"annotations":{"containerd.io/snapshot/overlaybd/blob-digest":"sha256:dd","containerd.io/snapshot/overlaybd/blob-size":"10","containerd.io/snapshot/overlaybd/version":"0.1.0"}}],"subject":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:ee","size":528},"annotations":{"a":"b"}}"#), "{t}");
    }
}
