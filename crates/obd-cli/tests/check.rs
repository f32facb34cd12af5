//! `obd check` end to end: images converted by the real `convertor` into OCI layouts must
//! check identical (the whole corpus, `--mkfs=false`, every platform of the multi-arch
//! hello-world index), and each injected difference (a missing file, a changed byte, a
//! changed mode, a lost xattr, a broken hard link) must be caught with a difference naming
//! the path.
//!
//! Injections: a second source image that differs from a base image in one way is checked
//! against the conversion of the base image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::{json, Value};

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("OBD_CORPUS") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "OBD_CORPUS must be set under CI"
            );
            eprintln!("skipping: OBD_CORPUS not set");
            None
        }
    }
}

fn no_debian() -> bool {
    std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some()
}

/// `convertor -r oci:SRC --target-repository oci:OUT -i TAG -o OUT_TAG EXTRA...`
fn convert(src: &Path, tag: &str, out: &Path, out_tag: &str, extra: &[&str], work: &Path) {
    run_ok(
        convertor()
            .arg("-r")
            .arg(format!("oci:{}", src.display()))
            .arg("--target-repository")
            .arg(format!("oci:{}", out.display()))
            .args(["-i", tag, "-o", out_tag])
            .args(extra)
            .arg("-d")
            .arg(work),
    );
}

fn check(src: &Path, tag: &str, out: &Path, out_tag: &str, extra: &[&str]) -> Output {
    obd()
        .arg("check")
        .arg("--source")
        .arg(format!("oci:{}", src.display()))
        .args(["--source-ref", tag])
        .arg("--converted")
        .arg(format!("oci:{}", out.display()))
        .args(["--converted-ref", out_tag])
        .args(extra)
        .output()
        .expect("spawn obd check")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Converts `tag` (with `extra` convertor flags) and asserts `obd check` says identical.
/// Returns the number of `identical:` lines (platforms).
fn assert_identical(src: &Path, tag: &str, extra: &[&str]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert(src, tag, &out, "obd", extra, &dir.path().join("w"));
    let t = std::time::Instant::now();
    let o = check(src, tag, &out, "obd", &[]);
    assert_eq!(o.status.code(), Some(0), "{tag} {extra:?}: {}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let n = stdout.lines().filter(|l| l.contains("identical: ")).count();
    assert!(n >= 1, "{stdout}");
    eprintln!(
        "{tag} {extra:?}: {} ({:.1}s)",
        stdout.trim().replace('\n', "; "),
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

fn hello_layout(dir: &Path) -> PathBuf {
    let dst = dir.join("hello");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(testdata().join("upstream/hello-world-layout"))
            .arg(&dst),
    );
    run_ok(
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&dst),
    );
    dst
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
    let conv_idx = layout_index_digest(&out, "amd64-only");
    let o = check(&hello, "amd64", &out, &conv_idx, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn layout_index_digest(layout: &Path, tag: &str) -> String {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
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

/// One member of a hand-made layer.
enum M<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8], &'a [(&'a str, &'a [u8])]),
    Link(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Whiteout(&'a str),
}

fn layer(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        let mut data: &[u8] = b"";
        let name = match *m {
            M::Dir(n, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                n
            }
            M::File(n, mode, d, xattrs) => {
                if !xattrs.is_empty() {
                    let ext: Vec<(String, &[u8])> = xattrs
                        .iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                        .collect();
                    b.append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v)))
                        .unwrap();
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(d.len() as u64);
                data = d;
                n
            }
            M::Link(n, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_link_name(target).unwrap();
                n
            }
            M::Symlink(n, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(target).unwrap();
                n
            }
            M::Whiteout(n) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                n
            }
        };
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Writes an image of plain-tar `layers` tagged `tag` into the OCI layout `layout`.
fn write_image(layout: &Path, tag: &str, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = put_blob(layout, l);
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
        diff_ids.push(d);
    }
    let cfg = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = put_blob(layout, &cfg);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put_blob(layout, &m);
    let ip = layout.join("index.json");
    let mut idx: Value = std::fs::read(&ip)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
    idx["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": m.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&ip, serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// The base image, with one change applied by `variant`.
#[derive(Default, Clone, Copy)]
struct Variant {
    extra_file: bool,
    changed_byte: bool,
    changed_mode: bool,
    extra_xattr: bool,
    linked: bool,
}

fn image(v: Variant) -> Vec<Vec<u8>> {
    let motd: &[u8] = if v.changed_byte {
        b"hello, world?\n"
    } else {
        b"hello, world!\n"
    };
    let xattrs: &[(&str, &[u8])] = if v.extra_xattr {
        &[("user.k", b"v"), ("user.lost", b"1")]
    } else {
        &[("user.k", b"v")]
    };
    let mut l1 = vec![
        M::Dir("etc/", 0o755),
        M::File("etc/motd", 0o644, motd, &[]),
        M::File("etc/gone", 0o644, b"x", &[]),
        M::Dir("bin/", 0o755),
        M::File(
            "bin/tool",
            if v.changed_mode { 0o700 } else { 0o755 },
            b"#!/bin/sh\n",
            &[],
        ),
        M::Symlink("bin/sh", "tool"),
        M::Dir("data/", 0o750),
        M::File("data/f", 0o600, b"payload", xattrs),
        M::File("h1", 0o644, b"same", &[]),
        M::Link("h2", "h1"),
        M::File("s1", 0o644, b"twin", &[]),
    ];
    if v.linked {
        l1.push(M::Link("s2", "s1"));
    } else {
        l1.push(M::File("s2", 0o644, b"twin", &[]));
    }
    if v.extra_file {
        l1.push(M::File("etc/extra", 0o644, b"new", &[]));
    }
    let l2 = vec![
        M::Whiteout("etc/.wh.gone"),
        M::File("etc/added", 0o644, b"2", &[]),
    ];
    vec![layer(&l1), layer(&l2)]
}

/// An injection: its name, the source variant, the `(path, what)` differences expected.
type Case = (
    &'static str,
    Variant,
    &'static [(&'static str, &'static str)],
);

#[test]
fn injected_differences_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    write_image(&src, "base", &image(Variant::default()));
    convert(&src, "base", &out, "base-obd", &[], &dir.path().join("w"));
    let o = check(&src, "base", &out, "base-obd", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let cases: [Case; 5] = [
        (
            "missing file",
            Variant {
                extra_file: true,
                ..Default::default()
            },
            &[("/etc/extra", "missing")],
        ),
        (
            "changed byte",
            Variant {
                changed_byte: true,
                ..Default::default()
            },
            &[("/etc/motd", "content")],
        ),
        (
            "changed mode",
            Variant {
                changed_mode: true,
                ..Default::default()
            },
            &[("/bin/tool", "mode")],
        ),
        (
            "lost xattr",
            Variant {
                extra_xattr: true,
                ..Default::default()
            },
            &[("/data/f", "xattr")],
        ),
        (
            "broken hardlink",
            Variant {
                linked: true,
                ..Default::default()
            },
            &[("/s1", "hardlink"), ("/s2", "hardlink")],
        ),
    ];
    for (i, (name, v, want)) in cases.iter().enumerate() {
        let tag = format!("variant{i}");
        write_image(&src, &tag, &image(*v));
        let o = check(&src, &tag, &out, "base-obd", &[]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let human = String::from_utf8_lossy(&o.stdout).into_owned();
        for (p, _) in want.iter() {
            assert!(human.contains(&format!("  {p}: ")), "{name}: {human}");
        }
        let o = check(&src, &tag, &out, "base-obd", &["--json"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let got: Vec<(String, String)> = r["platforms"][0]["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap().to_string(),
                    d["what"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, w)| (p.to_string(), w.to_string()))
            .collect();
        assert_eq!(got, want, "{name}: {human}");
        if *name == "lost xattr" {
            let d = &r["platforms"][0]["differences"][0];
            assert_eq!(d["name"], "user.lost", "{d}");
            assert!(d["converted"].is_null(), "{d}");
        }
        eprintln!("{name}: caught:\n{human}");
    }
}
