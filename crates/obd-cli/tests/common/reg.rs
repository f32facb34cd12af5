//! Registry helpers for end-to-end tests: seed a registry from an OCI layout, run
//! `convertor` with the flags a test registry needs.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use obd_registry::testutil::{RegistryKind, TestRegistry};
use obd_registry::Client;
use serde_json::Value;

use super::{blob, convertor};

/// Copies `tag` of an OCI layout (manifest or index, recursively) into `repo:tag`.
pub fn seed(layout: &Path, tag: &str, c: &Client, repo: &str) {
    let m = layout_index_entry(layout, tag);
    copy_manifest(
        layout,
        m["digest"].as_str().unwrap(),
        m["mediaType"].as_str().unwrap(),
        c,
        repo,
        Some(tag),
    );
}

pub fn layout_index_entry(layout: &Path, tag: &str) -> Value {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone()
}

pub fn copy_manifest(
    layout: &Path,
    digest: &str,
    mt: &str,
    c: &Client,
    repo: &str,
    tag: Option<&str>,
) {
    let bytes = std::fs::read(blob(layout, digest)).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    if let Some(children) = v["manifests"].as_array() {
        for ch in children {
            copy_manifest(
                layout,
                ch["digest"].as_str().unwrap(),
                ch["mediaType"].as_str().unwrap(),
                c,
                repo,
                None,
            );
        }
    } else {
        let mut blobs = vec![v["config"]["digest"].as_str().unwrap().to_string()];
        blobs.extend(
            v["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string()),
        );
        for b in blobs {
            c.push_blob_file(repo, &blob(layout, &b)).unwrap();
        }
    }
    c.put_manifest(repo, digest, mt, &bytes).unwrap();
    if let Some(t) = tag {
        c.put_manifest(repo, t, mt, &bytes).unwrap();
    }
}

pub fn conv(reg: &TestRegistry, args: &[&str]) -> Output {
    conv_env(reg, args, &[])
}

/// [`conv`] with extra environment variables.
pub fn conv_env(reg: &TestRegistry, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = convertor();
    c.envs(env.iter().copied());
    if reg.options().plain_http {
        c.arg("--plain");
    }
    if let Some(ca) = &reg.ca_cert {
        c.arg("--root-ca").arg(ca);
    }
    if reg.kind == RegistryKind::MutualTls {
        c.arg("--cert-dir").arg(reg.cert_dir.as_ref().unwrap());
    }
    if let Some(cr) = &reg.credentials {
        c.arg("-u").arg(format!("{}:{}", cr.username, cr.password));
    }
    let wd = tempfile::tempdir().unwrap();
    c.arg("-d")
        .arg(wd.path().join("tmp"))
        .args(args)
        .output()
        .unwrap()
}
