//! The ext4 engine over the test corpus (`make-test-images.sh`): every image is converted
//! layer by layer with `obd create/apply/commit`; after **every** layer the flattened stack
//! must pass `e2fsck -fn` and, where the machine can loop-mount, its tree must equal the
//! reference unpack of the same image prefix (`umoci unpack`; GNU tar for the GNU sparse
//! image; the gzip twin for zstd).
//!
//! The corpus is found through `OBD_CORPUS` (an OCI layout dir); `.ci/run` builds it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tree::*;
use common::*;

fn layers(layout: &Path, tag: &str) -> Vec<PathBuf> {
    let m = layout_manifest(layout, tag);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(layout, l["digest"].as_str().unwrap()))
        .collect()
}

/// Converts all layers; returns, per layer, the committed layer file and the raw export.
fn convert(layout: &Path, tag: &str, w: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut lowers: Vec<serde_json::Value> = Vec::new();
    let mut out = Vec::new();
    for (i, l) in layers(layout, tag).iter().enumerate() {
        let (d, x) = (w.join(format!("data{i}")), w.join(format!("index{i}")));
        run_ok(obd().arg("create").arg(&d).arg(&x).arg("64"));
        let cfg = w.join(format!("cfg{i}.json"));
        std::fs::write(
            &cfg,
            serde_json::json!({"lowers": lowers, "upper": {"data": d, "index": x}}).to_string(),
        )
        .unwrap();
        let mut apply = obd();
        apply.arg("apply");
        if i == 0 {
            apply.arg("--mkfs");
        }
        run_ok(apply.arg(l).arg(&cfg));
        let layer = w.join(format!("layer{i}"));
        run_ok(
            obd()
                .args(["commit", "-z", "-t"])
                .arg(&d)
                .arg(&x)
                .arg(&layer),
        );
        std::fs::remove_file(&d).unwrap();
        lowers.push(serde_json::json!({"file": layer}));
        let ro = w.join(format!("ro{i}.json"));
        std::fs::write(&ro, serde_json::json!({"lowers": lowers}).to_string()).unwrap();
        let raw = w.join(format!("raw{i}"));
        run_ok(obd().arg("export-raw").arg(&ro).arg(&raw));
        e2fsck_clean(&raw);
        out.push((layer, raw));
    }
    out
}

fn check_image(tag: &str, reference: &str) {
    if !have("e2fsck") {
        return;
    }
    if tag.starts_with("debian") && std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        eprintln!("skipping {tag}: the corpus was built without the Debian images");
        return;
    }
    let Some(layout) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let out = convert(&layout, tag, w.path());
    if !can_mount() || !have("umoci") {
        return;
    }
    for (k, (_, raw)) in out.iter().enumerate() {
        let want = umoci_listing(&layout, reference, k + 1, w.path());
        assert_same(tag, k + 1, &want, &mounted_listing(raw));
    }
}

#[test]
fn tiny() {
    check_image("tiny", "tiny");
}

#[test]
fn edge() {
    check_image("edge", "edge");
}

#[test]
fn edge_dup() {
    check_image("edge-dup", "edge-dup");
}

#[test]
fn edge_raw() {
    check_image("edge-raw", "edge-raw");
}

#[test]
fn edge_zstd_equals_its_gzip_twin() {
    check_image("edge-zstd", "edge");
}

#[test]
fn debian() {
    check_image("debian", "debian");
}

#[test]
fn debian_zstd() {
    check_image("debian-zstd", "debian");
}

/// umoci rejects GNU sparse members, so the reference is GNU tar's own extraction.
#[test]
fn edge_gnu_equals_gnu_tar_extraction() {
    if !have("e2fsck") {
        return;
    }
    let Some(layout) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let out = convert(&layout, "edge-gnu", w.path());
    if !can_mount() {
        return;
    }
    let root = w.path().join("ref");
    std::fs::create_dir(&root).unwrap();
    let l = &layers(&layout, "edge-gnu")[0];
    run_ok(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
            .arg(l)
            .arg("-C")
            .arg(&root),
    );
    assert_same(
        "edge-gnu",
        1,
        &listing(&root, false),
        &mounted_listing(&out[0].1),
    );
}

/// The same image converted twice gives byte-identical layers.
#[test]
fn conversion_is_deterministic() {
    let Some(layout) = corpus() else { return };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let x = convert(&layout, "edge", a.path());
    let y = convert(&layout, "edge", b.path());
    for ((l1, _), (l2, _)) in x.iter().zip(&y) {
        assert!(
            std::fs::read(l1).unwrap() == std::fs::read(l2).unwrap(),
            "{} differs",
            l1.display()
        );
    }
}
