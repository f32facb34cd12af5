//! `obd check` on TurboOCI images with EROFS fs-meta (`convertor --turboOCI T --fstype
//! erofs`): corpus images (every platform of the indexes, OCI layouts and a real
//! `docker-registry`) must check identical, and each injected difference (a changed byte,
//! a changed mode, a missing file, a lost xattr, a broken hard link, an mtime one
//! nanosecond off) must be caught with exit 1 and a difference naming the path.
//!
//! Injections: a second source image that differs from a base image in one way is checked
//! against the EROFS TurboOCI conversion of the base image (`common::inject`). The edge and
//! debian corpus images are also checked by `tests/turbo.rs` (beside its mount oracle).

mod common;

use std::path::Path;

use common::inject::{
    assert_identical_output, assert_injections_caught, cases, check_layouts as check,
    convert_layouts, Shape, Variant,
};
use common::reg::{conv, seed};
use common::rel::text;
use common::tree::corpus;
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

/// `convertor -r oci:SRC --target-repository oci:OUT -i TAG --turboOCI OUT_TAG --fstype erofs`.
fn convert(src: &Path, tag: &str, out: &Path, out_tag: &str, work: &Path) {
    let args = ["-i", tag, "--turboOCI", out_tag, "--fstype", "erofs"];
    convert_layouts(src, out, &args, work);
}

/// Converts `tag` to EROFS TurboOCI and asserts `obd check` says identical; returns the
/// number of platforms.
fn assert_identical(src: &Path, tag: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert(src, tag, &out, "turbo", &dir.path().join("w"));
    // Every layer of every manifest is an EROFS TurboOCI layer.
    let top = layout_manifest(&out, "turbo");
    let manifests: Vec<Value> = match top["manifests"].as_array() {
        Some(ms) => ms
            .iter()
            .map(|e| {
                let b = std::fs::read(blob(&out, e["digest"].as_str().unwrap())).unwrap();
                serde_json::from_slice(&b).unwrap()
            })
            .collect(),
        None => vec![top],
    };
    for m in &manifests {
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(
                l["annotations"]["containerd.io/snapshot/overlaybd/blob-fs-type"], "erofs",
                "{tag}: {l}"
            );
        }
    }
    let t = std::time::Instant::now();
    let o = check(src, tag, &out, "turbo", &[]);
    let n = assert_identical_output(&format!("{tag} (erofs)"), &o);
    eprintln!("{tag}: checked in {:.1}s", t.elapsed().as_secs_f64());
    n
}

#[test]
fn handmade_corpus_images_are_identical() {
    let Some(c) = corpus() else { return };
    for tag in ["tiny", "edge-raw", "edge-dup", "edge-gnu"] {
        assert_identical(&c, tag);
    }
    let n = assert_identical(&c, "multiarch");
    assert!(n >= 2, "every platform of the index is checked");
}

/// Every platform of the upstream multi-arch hello-world index.
#[test]
fn multi_arch_index_every_platform() {
    let dir = tempfile::tempdir().unwrap();
    let hello = hello_layout(dir.path());
    let n = assert_identical(&hello, "multi-arch");
    assert_eq!(n, 9, "one line per platform");
}

/// Converted into a real registry and checked from there (source and converted image in
/// the same repository, as upstream's runtime expects).
#[test]
fn registry_image_is_identical() {
    let Some(layout) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    for tag in ["edge", "multiarch"] {
        let repo = format!("check-erofs/{tag}");
        seed(&layout, tag, &c, &repo);
        let r = reg.reference(&repo);
        let o = conv(
            &reg,
            &[
                "-r",
                &r,
                "-i",
                tag,
                "--turboOCI",
                "turbo",
                "--fstype",
                "erofs",
            ],
        );
        assert!(o.status.success(), "{tag}: {}", text(&o));
        let w = tempfile::tempdir().unwrap();
        let o = obd()
            .args(["check", "--plain", "--source", &r, "--source-ref", tag])
            .args(["--converted-ref", "turbo"])
            .arg("--work-dir")
            .arg(w.path())
            .output()
            .unwrap();
        let n = assert_identical_output(&format!("registry {tag} (erofs)"), &o);
        if tag == "multiarch" {
            assert!(n >= 2, "every platform of the index is checked");
        }
        // The work directory is cleaned up.
        assert_eq!(std::fs::read_dir(w.path()).unwrap().count(), 0);
    }
}

// ---- injections ----

/// The common injections, and an mtime one nanosecond off (the base image's files carry
/// PAX mtimes and it has a file of several blocks).
fn injections(gzip: bool) {
    let mut cases = cases();
    cases.push((
        "mtime one nanosecond off",
        Variant {
            nanosecond: true,
            ..Default::default()
        },
        &[("/etc/motd", "mtime")],
    ));
    let shape = Shape {
        pax_mtimes: true,
        big_file: true,
        gzip,
    };
    assert_injections_caught(shape, convert, &cases, |_, _| {});
}

/// Injections against an image of uncompressed layers (file data read straight from the
/// source tar).
#[test]
fn injected_differences_are_caught_plain_layers() {
    injections(false);
}

/// The same with gzip layers (file data read through `gzip.meta`).
#[test]
fn injected_differences_are_caught_gzip_layers() {
    injections(true);
}
