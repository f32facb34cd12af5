//! `obd check` on TurboOCI images with EROFS fs-meta (`convertor --turboOCI T --fstype
//! erofs`): corpus images (every platform of the indexes, OCI layouts and a real
//! `docker-registry`) must check identical, and each injected difference (a changed byte,
//! a changed mode, a missing file, a lost xattr, a broken hard link, an mtime one
//! nanosecond off) must be caught with exit 1 and a difference naming the path.
//!
//! Injections: a second source image that differs from a base image in one way is checked
//! against the EROFS TurboOCI conversion of the base image. The edge and debian corpus
//! images are also checked by `tests/turbo.rs` (beside its mount oracle).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::reg::{conv, seed};
use common::rel::text;
use common::tree::corpus;
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::{json, Value};

/// `convertor -r oci:SRC --target-repository oci:OUT -i TAG --turboOCI OUT_TAG --fstype erofs`.
fn convert(src: &Path, tag: &str, out: &Path, out_tag: &str, work: &Path) {
    run_ok(
        convertor()
            .arg("-r")
            .arg(format!("oci:{}", src.display()))
            .arg("--target-repository")
            .arg(format!("oci:{}", out.display()))
            .args(["-i", tag, "--turboOCI", out_tag, "--fstype", "erofs"])
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

/// Asserts exit 0 with one `identical:` line per platform; returns the number of lines.
fn assert_identical_output(what: &str, o: &Output) -> usize {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let n = stdout.lines().filter(|l| l.contains("identical: ")).count();
    assert!(n >= 1, "{what}: {stdout}");
    eprintln!("{what}: {}", stdout.trim().replace('\n', "; "));
    n
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

/// One member of a hand-made layer; files carry a PAX mtime (`secs[.nanos]`).
enum M<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8], &'a [(&'a str, &'a [u8])], &'a str),
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
            M::File(n, mode, d, xattrs, mtime) => {
                let mut ext: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                ext.push(("mtime".into(), mtime.as_bytes()));
                b.append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
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

/// Writes an image of `layers` (gzip-compressed when `gzip`) tagged `tag` into `layout`.
fn write_image(layout: &Path, tag: &str, layers: &[Vec<u8>], gzip: bool) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(l)));
        let (bytes, mt) = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, l).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = put_blob(layout, &bytes);
        descs.push(json!({"mediaType": mt, "digest": d, "size": bytes.len()}));
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
    nanosecond: bool,
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
    // Most members share one mtime (compact inodes, the superblock's build time); `data/f`
    // has its own with nanoseconds (an extended inode).
    let (t, tn) = ("1700000000", "1700000123.123456789");
    let motd_t = if v.nanosecond {
        "1700000000.000000001"
    } else {
        t
    };
    let big = vec![b'z'; 3 * 4096 + 100];
    let mut l1 = vec![
        M::Dir("etc/", 0o755),
        M::File("etc/motd", 0o644, motd, &[], motd_t),
        M::File("etc/gone", 0o644, b"x", &[], t),
        M::Dir("bin/", 0o755),
        M::File(
            "bin/tool",
            if v.changed_mode { 0o700 } else { 0o755 },
            b"#!/bin/sh\n",
            &[],
            t,
        ),
        M::Symlink("bin/sh", "tool"),
        M::Dir("data/", 0o750),
        M::File("data/f", 0o600, b"payload", xattrs, tn),
        M::File("data/big", 0o644, &big, &[], t),
        M::File("h1", 0o644, b"same", &[], t),
        M::Link("h2", "h1"),
        M::File("s1", 0o644, b"twin", &[], t),
    ];
    if v.linked {
        l1.push(M::Link("s2", "s1"));
    } else {
        l1.push(M::File("s2", 0o644, b"twin", &[], t));
    }
    if v.extra_file {
        l1.push(M::File("etc/extra", 0o644, b"new", &[], t));
    }
    let l1 = layer(&l1);
    let l2 = layer(&[
        M::Whiteout("etc/.wh.gone"),
        M::File("etc/added", 0o644, b"2", &[], t),
    ]);
    vec![l1, l2]
}

/// An injection: its name, the source variant, the `(path, what)` differences expected.
type Case = (
    &'static str,
    Variant,
    &'static [(&'static str, &'static str)],
);

fn injections(gzip: bool) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    write_image(&src, "base", &image(Variant::default()), gzip);
    convert(&src, "base", &out, "base-turbo", &dir.path().join("w"));
    let o = check(&src, "base", &out, "base-turbo", &[]);
    assert_identical_output("base (erofs)", &o);

    let cases: [Case; 6] = [
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
            "missing file",
            Variant {
                extra_file: true,
                ..Default::default()
            },
            &[("/etc/extra", "missing")],
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
        (
            "mtime one nanosecond off",
            Variant {
                nanosecond: true,
                ..Default::default()
            },
            &[("/etc/motd", "mtime")],
        ),
    ];
    for (i, (name, v, want)) in cases.iter().enumerate() {
        let tag = format!("variant{i}");
        write_image(&src, &tag, &image(*v), gzip);
        let o = check(&src, &tag, &out, "base-turbo", &[]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let human = String::from_utf8_lossy(&o.stdout).into_owned();
        for (p, _) in want.iter() {
            assert!(human.contains(&format!("  {p}: ")), "{name}: {human}");
        }
        let o = check(&src, &tag, &out, "base-turbo", &["--json"]);
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
        eprintln!("{name} (gzip {gzip}): caught:\n{human}");
    }
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
