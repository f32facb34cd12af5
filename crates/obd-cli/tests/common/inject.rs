//! `obd check` helpers: converting and checking OCI layouts, and injections. An injection
//! writes a second source image that differs from a base image in one way (a missing file,
//! a changed byte, a changed mode, a lost xattr, a broken hard link, an mtime one
//! nanosecond off) and checks it against the conversion of the base image: the difference
//! must be caught, naming the path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use super::rel::text;
use super::{layout_convertor, obd, run_ok, sha256_hex};

/// `convertor -r oci:SRC --target-repository oci:OUT ARGS... -d WORK`, asserting success.
pub fn convert_layouts(src: &Path, out: &Path, args: &[&str], work: &Path) {
    run_ok(layout_convertor(src, out, work).args(args));
}

/// `obd check` of `oci:SRC` `tag` against `oci:OUT` `out_tag` (with `extra` flags).
pub fn check_layouts(src: &Path, tag: &str, out: &Path, out_tag: &str, extra: &[&str]) -> Output {
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
pub fn assert_identical_output(what: &str, o: &Output) -> usize {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let n = stdout.lines().filter(|l| l.contains("identical: ")).count();
    assert!(n >= 1, "{what}: {stdout}");
    eprintln!("{what}: {}", stdout.trim().replace('\n', "; "));
    n
}

/// One member of a hand-made layer; a file may carry a PAX mtime (`secs[.nanos]`).
enum M<'a> {
    Dir(&'a str, u32),
    File(
        &'a str,
        u32,
        &'a [u8],
        &'a [(&'a str, &'a [u8])],
        Option<&'a str>,
    ),
    Link(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Whiteout(&'a str),
}

/// A plain tar of `members`.
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
                if let Some(t) = mtime {
                    ext.push(("mtime".into(), t.as_bytes()));
                }
                if !ext.is_empty() {
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

/// Stores `bytes` as a blob of `layout`; returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Writes an image of tar `layers` (gzip-compressed when `gzip`) tagged `tag` into the OCI
/// layout `layout`, creating it or adding to its index.
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

/// The one change a variant of the base image makes (none: the base image itself).
#[derive(Default, Clone, Copy, Debug)]
pub struct Variant {
    /// `etc/extra` exists only in the variant.
    pub extra_file: bool,
    /// `etc/motd` has one byte changed.
    pub changed_byte: bool,
    /// `bin/tool` is 0700 instead of 0755.
    pub changed_mode: bool,
    /// `data/f` has an xattr `user.lost` the base image lacks.
    pub extra_xattr: bool,
    /// `s2` is a hard link to `s1` instead of a copy.
    pub linked: bool,
    /// `etc/motd`'s mtime is one nanosecond later (needs [`Shape::pax_mtimes`]).
    pub nanosecond: bool,
}

/// How the base image and its variants are built, beside the members they all have.
#[derive(Default, Clone, Copy, Debug)]
pub struct Shape {
    /// Every file carries a PAX mtime: most share one (compact EROFS inodes, the
    /// superblock's build time), `data/f` has its own with nanoseconds (an extended inode).
    pub pax_mtimes: bool,
    /// A `data/big` of a few 4 KiB blocks and a tail.
    pub big_file: bool,
    /// Layers are gzip-compressed (else plain tar).
    pub gzip: bool,
}

/// The two layers of the base image of `shape` with the change `v` applied.
fn image(v: Variant, shape: Shape) -> Vec<Vec<u8>> {
    assert!(
        shape.pax_mtimes || !v.nanosecond,
        "an mtime one nanosecond off needs PAX mtimes"
    );
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
    let (t, tn) = if shape.pax_mtimes {
        (Some("1700000000"), Some("1700000123.123456789"))
    } else {
        (None, None)
    };
    let motd_t = if v.nanosecond {
        Some("1700000000.000000001")
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
    ];
    if shape.big_file {
        l1.push(M::File("data/big", 0o644, &big, &[], t));
    }
    l1.extend([
        M::File("h1", 0o644, b"same", &[], t),
        M::Link("h2", "h1"),
        M::File("s1", 0o644, b"twin", &[], t),
    ]);
    if v.linked {
        l1.push(M::Link("s2", "s1"));
    } else {
        l1.push(M::File("s2", 0o644, b"twin", &[], t));
    }
    if v.extra_file {
        l1.push(M::File("etc/extra", 0o644, b"new", &[], t));
    }
    let l2 = vec![
        M::Whiteout("etc/.wh.gone"),
        M::File("etc/added", 0o644, b"2", &[], t),
    ];
    vec![layer(&l1), layer(&l2)]
}

/// An injection: its name, the source variant, the `(path, what)` differences expected.
pub type Case = (
    &'static str,
    Variant,
    &'static [(&'static str, &'static str)],
);

/// The injections every converted format must catch (a missing file, a changed byte, a
/// changed mode, a lost xattr, a broken hard link).
pub fn cases() -> Vec<Case> {
    vec![
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
    ]
}

/// `obd check` of `src:tag` against `out:out_tag` must exit 1 naming every path of `want`
/// in its human output, and exit 1 with exactly `want` as the `(path, what)` differences
/// of `--json`. Returns the JSON report and the human output.
pub fn assert_caught(
    name: &str,
    src: &Path,
    tag: &str,
    out: &Path,
    out_tag: &str,
    want: &[(&str, &str)],
) -> (Value, String) {
    let o = check_layouts(src, tag, out, out_tag, &[]);
    assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
    let human = String::from_utf8_lossy(&o.stdout).into_owned();
    for (p, _) in want.iter() {
        assert!(human.contains(&format!("  {p}: ")), "{name}: {human}");
    }
    let o = check_layouts(src, tag, out, out_tag, &["--json"]);
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
    (r, human)
}

/// The injection test: writes the base image of `shape` into a source layout as `base`,
/// converts it with `convert(src, "base", out, "base-converted", work)` and asserts
/// `obd check` says identical; then writes each case's variant as `variant{i}` and asserts
/// it is caught ([`assert_caught`]). `more(name, report)` adds a test's own checks of the
/// JSON report of a case.
pub fn assert_injections_caught(
    shape: Shape,
    convert: impl FnOnce(&Path, &str, &Path, &str, &Path),
    cases: &[Case],
    mut more: impl FnMut(&str, &Value),
) {
    let dir = tempfile::tempdir().unwrap();
    let src: PathBuf = dir.path().join("src");
    let out = dir.path().join("out");
    let out_tag = "base-converted";
    write_image(&src, "base", &image(Variant::default(), shape), shape.gzip);
    convert(&src, "base", &out, out_tag, &dir.path().join("w"));
    let o = check_layouts(&src, "base", &out, out_tag, &[]);
    assert_identical_output(&format!("base ({shape:?})"), &o);

    for (i, (name, v, want)) in cases.iter().enumerate() {
        let tag = format!("variant{i}");
        write_image(&src, &tag, &image(*v, shape), shape.gzip);
        let (r, human) = assert_caught(name, &src, &tag, &out, out_tag, want);
        more(name, &r);
        eprintln!("{name} ({shape:?}): caught:\n{human}");
    }
}
