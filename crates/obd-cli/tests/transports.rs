//! Sources written the way skopeo writes them: `docker-archive:FILE` (a `docker save`
//! tarball), `oci-archive:FILE`, and `-r HOST/REPO:TAG` / `-r HOST/REPO@DIGEST` naming the
//! image in one reference.

mod common;

use std::path::Path;
use std::process::Command;

use common::reg::{conv, seed};
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

fn skopeo(args: &[&str]) {
    run_ok(Command::new("skopeo").arg("--insecure-policy").args(args));
}

fn layer_digests(layout: &Path, tag: &str) -> Vec<String> {
    layout_manifest(layout, tag)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A `docker save`-style archive and an OCI archive, both written by skopeo, convert to
/// the same layers as the layout they came from; skopeo reads the result.
#[test]
fn docker_and_oci_archives_are_sources() {
    if !have("skopeo") {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layout = hello_layout(d);
    // skopeo pulls the image from a registry (it does not resolve this layout's Docker-typed
    // index entries) and writes both archives.
    seed(&layout, "amd64", &reg.client(), "hello");
    let lay = format!("docker://{}:amd64", reg.reference("hello"));
    let darc = d.join("hello-docker.tar");
    let oarc = d.join("hello-oci.tar");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &lay,
        &format!("docker-archive:{}:hello:v1", darc.display()),
    ]);
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &lay,
        &format!("oci-archive:{}:v1", oarc.display()),
    ]);
    let out = d.join("out");
    let target = format!("oci:{}", out.display());
    let run = |r: String, extra: &[&str], tag: &str| {
        let o = convertor()
            .args(["-r", &r, "-o", tag, "--target-repository", &target, "-d"])
            .arg(d.join("work"))
            .args(extra)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        format!("oci:{}", layout.display()),
        &["-i", "amd64"],
        "direct",
    );
    // One image in the archive: no -i needed; or named as skopeo names it.
    run(format!("docker-archive:{}", darc.display()), &[], "darc");
    run(
        format!("docker-archive:{}:hello:v1", darc.display()),
        &[],
        "darc-named",
    );
    run(
        format!("docker-archive:{}", darc.display()),
        &["-i", "v1"],
        "darc-tag",
    );
    run(format!("oci-archive:{}:v1", oarc.display()), &[], "oarc");
    let want = layer_digests(&out, "direct");
    for tag in ["darc", "darc-named", "darc-tag", "oarc"] {
        assert_eq!(layer_digests(&out, tag), want, "{tag}");
        let o = run_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:{tag}", out.display())),
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), want.len(), "{tag}");
    }

    // Mistakes: an archive is read-only; a name it lacks lists what it holds; a file that
    // is not the archive kind named says which it is not.
    let fail = |r: String, extra: &[&str]| {
        let o = convertor()
            .args(["-r", &r, "-o", "x", "-d"])
            .arg(d.join("work"))
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = fail(format!("docker-archive:{}", darc.display()), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("read-only") && err.contains("--target-repository"),
        "{err}"
    );
    let (code, err) = fail(
        format!("docker-archive:{}:other:v2", darc.display()),
        &["--target-repository", &target],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("hello:v1"), "{err}");
    let (code, err) = fail(
        format!("oci-archive:{}", darc.display()),
        &["--target-repository", &target],
    );
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("index.json"), "{err}");
    let (code, err) = fail(
        format!("docker-archive:{}", d.join("missing.tar").display()),
        &["--target-repository", &target],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(!d.join("work").exists(), "the work dir is left behind");
}

/// `-r HOST/REPO:TAG` and `-r HOST/REPO@DIGEST` name the image without `-i`/`-g`; naming it
/// twice, differently, is refused.
#[test]
fn one_reference_names_repository_and_image() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let c = reg.client();
    seed(&layout, "amd64", &c, "app");
    let repo = reg.reference("app");
    let o = conv(&reg, &["-r", &format!("{repo}:amd64"), "-o", "by-tag"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let src = c.get_manifest("app", "amd64").unwrap().digest;
    let o = conv(&reg, &["-r", &format!("{repo}@{src}"), "-o", "by-digest"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = c.get_manifest("app", "by-tag").unwrap().digest;
    let b = c.get_manifest("app", "by-digest").unwrap().digest;
    assert_eq!(
        a, b,
        "the same image by tag and by digest converts the same"
    );
    // The same name twice is fine; two different ones are a usage error.
    let o = conv(
        &reg,
        &["-r", &format!("{repo}:amd64"), "-i", "amd64", "-o", "again"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = conv(
        &reg,
        &["-r", &format!("{repo}:amd64"), "-i", "other", "-o", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give it once"));
    // `-r REPO:TAG -o TAG` would replace the source: refused as with -i.
    let o = conv(&reg, &["-r", &format!("{repo}:amd64"), "-o", "amd64"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(c.head_manifest("app", "x").unwrap().is_none());
}
