//! `obd check` end to end: images converted by the real `convertor` into OCI layouts must
//! check identical (the whole corpus, `--mkfs=false`, every platform of the multi-arch
//! hello-world index), and each injected difference (a missing file, a changed byte, a
//! changed mode, a lost xattr, a broken hard link) must be caught with a difference naming
//! the path.
//!
//! Injections: a second source image that differs from a base image in one way is checked
//! against the conversion of the base image (`common::inject`).

mod common;

use std::path::Path;

use common::inject::{
    assert_identical_output, assert_injections_caught, cases, check_layouts as check,
    convert_layouts, Shape,
};
use common::reg::layout_index_entry;
use common::rel::text;
use common::tree::corpus;
use common::*;

fn no_debian() -> bool {
    std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some()
}

/// `convertor -r oci:SRC --target-repository oci:OUT -i TAG -o OUT_TAG EXTRA...`
fn convert(src: &Path, tag: &str, out: &Path, out_tag: &str, extra: &[&str], work: &Path) {
    let mut args = vec!["-i", tag, "-o", out_tag];
    args.extend_from_slice(extra);
    convert_layouts(src, out, &args, work);
}

/// Converts `tag` (with `extra` convertor flags) and asserts `obd check` says identical.
/// Returns the number of `identical:` lines (platforms).
fn assert_identical(src: &Path, tag: &str, extra: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert(src, tag, &out, "obd", extra, &dir.path().join("w"));
    let t = std::time::Instant::now();
    let o = check(src, tag, &out, "obd", &[]);
    let n = assert_identical_output(&format!("{tag} {extra:?}"), &o);
    eprintln!(
        "{tag} {extra:?}: checked in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    n
}

#[test]
fn handmade_corpus_images_are_identical() {
    let Some(c) = corpus() else { return };
    for tag in [
        "tiny",
        "tiny-arm64",
        "edge",
        "edge-zstd",
        "edge-raw",
        "edge-dup",
        "edge-gnu",
    ] {
        assert_identical(&c, tag, &[]);
    }
    let n = assert_identical(&c, "multiarch", &[]);
    assert!(n >= 2, "every platform of the index is checked");
}

#[test]
fn debian_corpus_images_are_identical() {
    let Some(c) = corpus() else { return };
    if no_debian() {
        eprintln!("skipping: the corpus was built without the Debian images");
        return;
    }
    for tag in ["debian-1l", "debian-2l", "debian", "debian-zstd"] {
        assert_identical(&c, tag, &[]);
    }
}

/// `--mkfs=false`: the upstream baselayer is the bottom layer of the converted image.
#[test]
fn mkfs_false_conversions_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let hello = hello_layout(dir.path());
    assert_identical(&hello, "amd64", &["--mkfs", "false"]);
    if let Some(c) = corpus() {
        assert_identical(&c, "edge", &["--mkfs", "false"]);
        if !no_debian() {
            assert_identical(&c, "debian-2l", &["--mkfs", "false"]);
        }
    }
}

/// Every platform of the hello-world index is paired and identical; a conversion of one
/// platform only is reported as missing the others unless `--platform` narrows the check.
#[test]
fn multi_arch_index_every_platform() {
    let dir = tempfile::tempdir().unwrap();
    let hello = hello_layout(dir.path());
    let n = assert_identical(&hello, "multi-arch", &["--oci"]);
    assert_eq!(n, 9, "one line per platform");
    assert_identical(&hello, "nested-index", &[]);

    let out = dir.path().join("one");
    convert(
        &hello,
        "multi-arch",
        &out,
        "amd64-only",
        &["--platform", "linux/amd64"],
        &dir.path().join("w"),
    );
    let o = check(&hello, "multi-arch", &out, "amd64-only", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("platform linux/arm64/v8: not in the converted image"),
        "{s}"
    );
    assert!(s.contains("linux/amd64: identical: "), "{s}");
    let o = check(
        &hello,
        "multi-arch",
        &out,
        "amd64-only",
        &["--platform", "linux/amd64"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A single-platform source checked against the converted index, by digest too.
    let conv_idx = layout_index_entry(&out, "amd64-only")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let o = check(&hello, "amd64", &out, &conv_idx, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Errors are not differences: a missing tag exits 4, a bad repository 2.
#[test]
fn errors_have_their_own_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let hello = hello_layout(dir.path());
    let o = check(&hello, "amd64", &hello, "no-such-tag", &[]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // A source image is not a converted image.
    let o = check(&hello, "amd64", &hello, "amd64", &[]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("overlaybd"));
}

// ---- injections ----

/// Every injection is caught; a lost xattr is named, with no value in the converted image.
#[test]
fn injected_differences_are_caught() {
    let convert = |src: &Path, tag: &str, out: &Path, out_tag: &str, work: &Path| {
        convert(src, tag, out, out_tag, &[], work)
    };
    assert_injections_caught(Shape::default(), convert, &cases(), |name, r| {
        if name == "lost xattr" {
            let d = &r["platforms"][0]["differences"][0];
            assert_eq!(d["name"], "user.lost", "{d}");
            assert!(d["converted"].is_null(), "{d}");
        }
    });
}
