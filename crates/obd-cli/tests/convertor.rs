//! `convertor` end to end against real `docker-registry` instances (plain, TLS + basic
//! auth, mTLS, token auth) and OCI layouts: pushed manifests, configs and layers have the
//! upstream shape, every layer pulled back flattens to an ext4 that passes `e2fsck -fn`,
//! and failures leave the target tag untouched.

mod common;

use std::path::{Path, PathBuf};

use common::reg::{conv, conv_env, seed};
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use obd_registry::Client;
use serde_json::Value;

/// Checks one converted manifest: media types, annotations, diff_ids; pulls its layers and
/// flattens them with `obd export-raw`; `e2fsck -fn` must pass. Returns the layer count.
fn check_manifest(c: &Client, repo: &str, m: &Value, oci: bool, dir: &Path) -> usize {
    let (mmt, cmt, lmt) = if oci {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    } else {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar",
        )
    };
    assert_eq!(m["mediaType"], mmt);
    assert_eq!(m["config"]["mediaType"], cmt);
    let cfg: Value = serde_json::from_slice(
        &c.get_blob_bytes(repo, m["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut lowers = Vec::new();
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        let d = l["digest"].as_str().unwrap();
        assert_eq!(l["mediaType"], lmt);
        assert_eq!(
            l["annotations"]["containerd.io/snapshot/overlaybd/blob-digest"],
            d
        );
        assert_eq!(
            l["annotations"]["containerd.io/snapshot/overlaybd/blob-size"],
            l["size"].as_u64().unwrap().to_string()
        );
        assert_eq!(
            l["annotations"]["containerd.io/snapshot/overlaybd/version"],
            "0.1.0"
        );
        assert_eq!(
            cfg["rootfs"]["diff_ids"][i], d,
            "diff_ids are the layer digests"
        );
        let p = dir.join(format!("layer{i}"));
        std::fs::write(&p, c.get_blob_bytes(repo, d).unwrap()).unwrap();
        lowers.push(serde_json::json!({"file": p}));
    }
    let cfgp = dir.join("stack.json");
    std::fs::write(&cfgp, serde_json::json!({"lowers": lowers}).to_string()).unwrap();
    let raw = dir.join("raw");
    run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
    e2fsck_clean(&raw);
    std::fs::remove_file(&raw).unwrap();
    lowers.len()
}

fn manifest_json(c: &Client, repo: &str, r: &str) -> (Value, String) {
    let m = c.get_manifest(repo, r).unwrap();
    (serde_json::from_slice(&m.bytes).unwrap(), m.digest)
}

fn convert_in(kind: RegistryKind) {
    if !have("e2fsck") {
        return;
    }
    let Some(reg) = TestRegistry::start_or_skip(kind) else {
        return;
    };
    let c = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    seed(&layout, "amd64", &c, "lib/hello");
    let repo = reg.reference("lib/hello");
    let o = conv(&reg, &["-r", &repo, "-i", "amd64", "-o", "amd64-obd"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (m, _) = manifest_json(&c, "lib/hello", "amd64-obd");
    assert_eq!(check_manifest(&c, "lib/hello", &m, false, dir.path()), 1);
    if kind == RegistryKind::Plain {
        // Outputs that waited in memory and outputs that waited in files are the same bytes.
        let o = conv(
            &reg,
            &[
                "-r",
                &repo,
                "-i",
                "amd64",
                "-o",
                "amd64-files",
                "--memory-budget",
                "0",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (f, _) = manifest_json(&c, "lib/hello", "amd64-files");
        assert_eq!(f, m, "the memory budget changes nothing in the image");
    }
}

#[test]
fn plain_registry() {
    convert_in(RegistryKind::Plain);
}

#[test]
fn tls_with_basic_auth() {
    convert_in(RegistryKind::TlsBasic);
}

#[test]
fn mutual_tls() {
    convert_in(RegistryKind::MutualTls);
}

#[test]
fn token_auth() {
    convert_in(RegistryKind::Token);
}

#[test]
fn multi_arch_oci_referrer_and_platform_filter() {
    if !have("e2fsck") {
        return;
    }
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    seed(&layout, "multi-arch", &c, "lib/hello");
    let repo = reg.reference("lib/hello");
    let o = conv(
        &reg,
        &[
            "-r",
            &repo,
            "-i",
            "multi-arch",
            "-o",
            "all-obd",
            "--referrer",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (idx, _) = manifest_json(&c, "lib/hello", "all-obd");
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        idx["artifactType"],
        "application/vnd.containerd.overlaybd.native.v1+json"
    );
    let src = c.get_manifest("lib/hello", "multi-arch").unwrap();
    assert_eq!(idx["subject"]["digest"], src.digest.as_str());
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 9);
    for e in entries {
        assert!(
            e["platform"]["architecture"].is_string(),
            "platform kept: {e}"
        );
        let (m, _) = manifest_json(&c, "lib/hello", e["digest"].as_str().unwrap());
        assert_eq!(
            m["subject"]["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        check_manifest(&c, "lib/hello", &m, true, dir.path());
    }
    // Distribution 2.8 has no referrers API: the fallback tag lists the converted index.
    let refs = c.referrers("lib/hello", &src.digest, None).unwrap();
    assert!(refs.iter().any(|r| r.digest == idx_digest(&c)), "{refs:?}");
    // --platform keeps only what was asked for.
    let o = conv(
        &reg,
        &[
            "-r",
            &repo,
            "-i",
            "multi-arch",
            "-o",
            "amd-only",
            "--platform",
            "linux/amd64,linux/arm64",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (idx, _) = manifest_json(&c, "lib/hello", "amd-only");
    let archs: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs.len(), 2, "{archs:?}");
    assert_eq!(
        idx["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
}

fn idx_digest(c: &Client) -> String {
    c.get_manifest("lib/hello", "all-obd").unwrap().digest
}

#[test]
fn failures_leave_the_tag_untouched() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::TlsBasic) else {
        return;
    };
    let c = reg.client();
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    seed(&layout, "amd64", &c, "lib/hello");
    let repo = reg.reference("lib/hello");
    // A first good conversion sets the tag.
    let o = conv(&reg, &["-r", &repo, "-i", "amd64", "-o", "stable"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = c.get_manifest("lib/hello", "stable").unwrap().digest;

    // Wrong password: exit 3, no secret in the output.
    let mut cmd = convertor();
    let o = cmd
        .args([
            "-r",
            &repo,
            "-i",
            "amd64",
            "-o",
            "stable",
            "--oci",
            "-u",
            "testuser:wrong-secret-pw",
            "--root-ca",
        ])
        .arg(reg.ca_cert.as_ref().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("wrong-secret-pw"));
    // Missing tag: exit 4.
    let o = conv(&reg, &["-r", &repo, "-i", "nope", "-o", "stable"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A config whose diff_ids disagree with the layer: exit 5.
    let src = c.get_manifest("lib/hello", "amd64").unwrap();
    let mut m: Value = serde_json::from_slice(&src.bytes).unwrap();
    let mut cfg: Value = serde_json::from_slice(
        &c.get_blob_bytes("lib/hello", m["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    cfg["rootfs"]["diff_ids"][0] = Value::String(format!("sha256:{}", "0".repeat(64)));
    let cb = serde_json::to_vec(&cfg).unwrap();
    let (cd, _) = c.push_blob_bytes("lib/hello", cb.clone()).unwrap();
    m["config"]["digest"] = Value::String(cd);
    m["config"]["size"] = Value::from(cb.len());
    let mb = serde_json::to_vec(&m).unwrap();
    c.put_manifest("lib/hello", "bad", &src.media_type, &mb)
        .unwrap();
    let o = conv(&reg, &["-r", &repo, "-i", "bad", "-o", "stable"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("diff_id"));
    // A layer blob whose bytes no longer match its digest (same length): exit 5.
    let ld = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let hex = ld.strip_prefix("sha256:").unwrap();
    let data = reg
        .dir
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut b = std::fs::read(&data).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    std::fs::write(&data, &b).unwrap();
    let o = conv(&reg, &["-r", &repo, "-i", "amd64", "-o", "stable"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Registry gone mid-way: exit 6.
    let o = convertor()
        .args([
            "-r",
            "127.0.0.1:1/lib/hello",
            "--plain",
            "-i",
            "amd64",
            "-o",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        c.get_manifest("lib/hello", "stable").unwrap().digest,
        before,
        "the tag did not move"
    );
}

#[test]
fn oci_layout_to_oci_layout_with_baselayer() {
    if !have("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let out = dir.path().join("out");
    let o = layout_convertor(&layout, &out, &dir.path().join("tmp"))
        .args(["-i", "amd64", "-o", "base-obd", "--mkfs", "false"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = layout_manifest(&out, "base-obd");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "baselayer + 1");
    assert_eq!(
        layers[0]["digest"],
        "sha256:a8b5fca80efae55088290f3da8110d7742de55c2a378d5ab53226a483f390e21"
    );
    let lowers: Vec<Value> = layers
        .iter()
        .map(|l| serde_json::json!({"file": blob(&out, l["digest"].as_str().unwrap())}))
        .collect();
    let cfgp = dir.path().join("stack.json");
    std::fs::write(&cfgp, serde_json::json!({"lowers": lowers}).to_string()).unwrap();
    let raw = dir.path().join("raw");
    run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
    e2fsck_clean(&raw);
    // The source layout was not touched, the work dir is gone.
    assert!(!dir.path().join("tmp").exists());
}

/// Corpus images through a plain registry: every converted manifest's layers, pulled back,
/// flatten to a clean ext4 whose tree (where loop mounts work) equals the reference unpack.
#[test]
fn corpus_through_the_registry() {
    if !have("e2fsck") {
        return;
    }
    let Some(corpus) = std::env::var_os("OBD_CORPUS").map(PathBuf::from) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "OBD_CORPUS must be set under CI"
        );
        return;
    };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let mut tags = vec!["edge", "edge-zstd", "multiarch"];
    if std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_none() {
        tags.extend(["debian", "debian-zstd"]);
    }
    for tag in tags {
        let dir = tempfile::tempdir().unwrap();
        let repo = format!("corpus/{tag}");
        seed(&corpus, tag, &c, &repo);
        for oci in [false, true] {
            let out = if oci { "obd-oci" } else { "obd" };
            let mut args = vec![
                "-r".to_string(),
                reg.reference(&repo),
                "-i".into(),
                tag.into(),
                "-o".into(),
                out.into(),
            ];
            if oci {
                args.push("--oci".into());
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = conv(&reg, &a);
            assert!(
                o.status.success(),
                "{tag}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let (m, _) = manifest_json(&c, &repo, out);
            let manifests: Vec<Value> = match m["manifests"].as_array() {
                Some(es) => es
                    .iter()
                    .map(|e| manifest_json(&c, &repo, e["digest"].as_str().unwrap()).0)
                    .collect(),
                None => vec![m],
            };
            for mm in &manifests {
                let n = check_manifest(&c, &repo, mm, oci, dir.path());
                assert!(n >= 1);
            }
            eprintln!(
                "{tag} ({}): {} manifest(s) converted and checked",
                if oci { "oci" } else { "docker" },
                manifests.len()
            );
        }
    }
}

/// SIGINT and SIGTERM during a conversion: exit 130 within a second, the work directory is
/// removed and the target tag is not written.
#[test]
fn interruption_cleans_up_and_leaves_no_tag() {
    let Some(corpus) = std::env::var_os("OBD_CORPUS").map(PathBuf::from) else {
        return;
    };
    let tag = if std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        "edge"
    } else {
        "debian"
    };
    for sig in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let (out, tmp) = (dir.path().join("out"), dir.path().join("tmp"));
        let mut child = convertor()
            .arg("-r")
            .arg(format!("oci:{}", corpus.display()))
            .arg("--target-repository")
            .arg(format!("oci:{}", out.display()))
            .args(["-i", tag, "-o", "interrupted", "-d"])
            .arg(&tmp)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the work directory exists, i.e. the conversion is under way.
        for _ in 0..200 {
            if tmp.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
        run_ok(
            std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string()),
        );
        let t = std::time::Instant::now();
        let st = child.wait().unwrap();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "took {:?} to stop",
            t.elapsed()
        );
        if st.success() {
            eprintln!("the conversion finished before SIG{sig}; nothing to check");
            continue;
        }
        assert_eq!(st.code(), Some(130), "SIG{sig}");
        assert!(
            !tmp.join(format!("obdconv-{}", child.id())).exists(),
            "work dir left behind"
        );
        let idx = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
        assert!(!idx.contains("interrupted"), "the tag was written: {idx}");
    }
}

/// `--no-upload` pushes nothing and tags nothing (upstream still pushes indexes);
/// `--dump-manifest --reserve` leaves the manifest and config JSON in the work dir.
#[test]
fn no_upload_pushes_nothing_and_dump_manifest_keeps_json() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let out = dir.path().join("out");
    let tmp = dir.path().join("tmp");
    let o = layout_convertor(&layout, &out, &tmp)
        .args([
            "-i",
            "multi-arch",
            "-o",
            "x",
            "--no-upload",
            "--dump-manifest",
            "--reserve",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let idx = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(!idx.contains("\"x\""), "tagged despite --no-upload: {idx}");
    assert_eq!(
        std::fs::read_dir(out.join("blobs/sha256")).unwrap().count(),
        0,
        "blobs pushed"
    );
    let dumped: Vec<_> = walk(&tmp)
        .into_iter()
        .filter(|p| p.ends_with("manifest.json"))
        .collect();
    assert_eq!(dumped.len(), 9, "one manifest.json per platform");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let q = e.path();
            if q.is_dir() {
                out.extend(walk(&q));
            } else {
                out.push(q);
            }
        }
    }
    out
}

/// Mistakes refused before any work (exit 2; the source layout, the work directory and the
/// report path untouched): an output tag equal to the source tag in the same repository,
/// an invalid tag, one tag for both engines, a report into a missing directory.
#[test]
fn mistakes_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let src = format!("oci:{}", layout.display());
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let work = dir.path().join("work");
    let other = format!("oci:{}", dir.path().join("other").display());
    let missing = dir.path().join("missing/report.json");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "output tag = source tag",
            vec!["-i", "amd64", "-o", "amd64"],
            "would replace the image it converts",
        ),
        (
            "same repository named as the target",
            vec!["-i", "amd64", "-o", "amd64", "--target-repository", &src],
            "would replace the image it converts",
        ),
        (
            "invalid tag",
            vec!["-i", "amd64", "-o", "bad:tag"],
            "not a valid tag",
        ),
        (
            "tag starting with '-'",
            vec!["-i", "amd64", "-o=-x"],
            "not a valid tag",
        ),
        (
            "one tag for both engines",
            vec!["-i", "amd64", "--overlaybd", "t", "--turboOCI", "t"],
            "give them different tags",
        ),
        (
            "report into a missing directory",
            vec![
                "-i",
                "amd64",
                "-o",
                "ok",
                "--report",
                missing.to_str().unwrap(),
            ],
            "does not exist",
        ),
    ];
    for (what, args, needle) in cases {
        let o = convertor()
            .arg("-r")
            .arg(&src)
            .args(&args)
            .arg("-d")
            .arg(&work)
            .args(["--db-type", "none"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(
            std::fs::read(layout.join("index.json")).unwrap(),
            index,
            "{what}"
        );
        assert!(!work.exists(), "{what}: work dir created");
        assert!(!missing.exists());
    }
    // The same tag into another repository is fine.
    let o = convertor()
        .arg("-r")
        .arg(&src)
        .args(["-i", "amd64", "-o", "amd64", "--target-repository", &other])
        .arg("-d")
        .arg(&work)
        .args(["--db-type", "none"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
}

/// Into an `oci:` layout the output has OCI media types unless `--docker` says otherwise,
/// so the layout tools open it (`skopeo inspect oci:DIR:TAG`, `umoci stat`).
#[test]
fn oci_layout_targets_get_oci_media_types() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let out = dir.path().join("out");
    let run = |tag: &str, extra: &[&str]| {
        let o = layout_convertor(&layout, &out, &dir.path().join("tmp"))
            .args(["-i", "amd64", "-o", tag, "--db-type", "none"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        layout_manifest(&out, tag)
    };
    let m = run("obd", &[]);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let idx: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert!(idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["mediaType"] == "application/vnd.oci.image.manifest.v1+json"));
    if have("skopeo") {
        let o = run_ok(
            std::process::Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:obd", out.display())),
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Architecture"], "amd64", "{v}");
    }
    if have("umoci") {
        run_ok(
            std::process::Command::new("umoci")
                .arg("stat")
                .arg("--image")
                .arg(format!("{}:obd", out.display())),
        );
    }
    // --docker keeps Docker's types, as asked.
    let m = run("obd-docker", &["--docker"]);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

/// `--platform all` (the default) converts every platform; a platform the index does not
/// have is an error listing the ones it has, and nothing is tagged.
#[test]
fn platform_all_and_a_platform_the_index_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let out = dir.path().join("out");
    let run = |tag: &str, platform: &str| {
        layout_convertor(&layout, &out, &dir.path().join("tmp"))
            .args(["-i", "multi-arch", "-o", tag, "--db-type", "none"])
            .args(["--platform", platform])
            .output()
            .unwrap()
    };
    let o = run("none", "linux/sparc");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("--platform linux/sparc matches no manifest"),
        "{err}"
    );
    for p in ["linux/amd64", "linux/arm64/v8", "linux/s390x"] {
        assert!(err.contains(p), "{p} not listed: {err}");
    }
    let idx = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    assert!(!idx.contains("\"none\""), "tagged: {idx}");
    let o = run("all", "all");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let src: Value = layout_manifest(&layout, "multi-arch");
    let conv: Value = layout_manifest(&out, "all");
    assert_eq!(
        conv["manifests"].as_array().unwrap().len(),
        src["manifests"].as_array().unwrap().len()
    );
}

/// Proxy variables pointing at a dead port: a registry on a loopback address is reached
/// directly (as Go's net/http does), over plain HTTP and TLS alike; a registry that is not
/// on loopback goes through the proxy, and the error names it.
#[test]
fn loopback_registries_are_never_proxied() {
    let dead = "http://127.0.0.1:9";
    let env = [
        ("HTTP_PROXY", dead),
        ("HTTPS_PROXY", dead),
        ("http_proxy", dead),
        ("https_proxy", dead),
        ("NO_PROXY", ""),
    ];
    for kind in [RegistryKind::Plain, RegistryKind::TlsBasic] {
        let Some(reg) = TestRegistry::start_or_skip(kind) else {
            return;
        };
        let c = reg.client();
        let dir = tempfile::tempdir().unwrap();
        let layout = hello_layout(dir.path());
        seed(&layout, "amd64", &c, "lib/hello");
        let repo = reg.reference("lib/hello");
        assert!(repo.starts_with("127.0.0.1:"), "{repo}");
        let o = conv_env(
            &reg,
            &[
                "-r",
                &repo,
                "-i",
                "amd64",
                "-o",
                "via-loopback",
                "--db-type",
                "none",
            ],
            &env,
        );
        assert!(
            o.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // `localhost` too.
        let local = repo.replacen("127.0.0.1", "localhost", 1);
        if kind == RegistryKind::Plain {
            let o = conv_env(
                &reg,
                &[
                    "-r",
                    &local,
                    "-i",
                    "amd64",
                    "-o",
                    "via-localhost",
                    "--db-type",
                    "none",
                ],
                &env,
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    // A host that is not loopback goes through the (dead) proxy: the error names it.
    let o = convertor()
        .envs(env)
        .args([
            "--plain",
            "-r",
            "registry.invalid:5000/lib/hello",
            "-i",
            "t",
            "-o",
            "u",
        ])
        .args(["--db-type", "none", "-d"])
        .arg(tempfile::tempdir().unwrap().path().join("w"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains("through the proxy http://127.0.0.1:9/"),
        "{err}"
    );
}

/// Logs for CI: `--log-format json` is one JSON object per line, `-q` prints nothing but
/// errors, and no colour codes reach a stderr that is not a terminal.
#[test]
fn log_formats_quiet_and_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let run = |tag: &str, extra: &[&str]| {
        let o = layout_convertor(&layout, &dir.path().join("out"), &dir.path().join("tmp"))
            .args(["-i", "amd64", "-o", tag, "--db-type", "none"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stderr).unwrap()
    };
    let text = run("text", &[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes off a terminal: {text:?}"
    );
    let json = run("json", &["--log-format", "json"]);
    let mut n = 0;
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(n > 2, "{json}");
    assert!(json.contains("overlaybd converted: "), "{json}");
    let quiet = run("quiet", &["-q"]);
    assert!(quiet.trim().is_empty(), "-q printed: {quiet}");
    // Errors still show with -q.
    let o = convertor()
        .args(["-q", "-r", "oci:/nonexistent-layout", "-i", "a", "-o", "b"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error:"));
}

/// A source that is already overlaybd or TurboOCI is refused before any work (exit 2, the
/// target untouched); with `--skip-converted` it is exit 0 saying so.
#[test]
fn already_converted_sources_are_refused_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let out = dir.path().join("out");
    let conv_layout = |src: &Path, input: &str, extra: &[&str]| {
        layout_convertor(src, &out, &dir.path().join("tmp"))
            .args(["-i", input, "--db-type", "none"])
            .args(extra)
            .output()
            .unwrap()
    };
    for (tag, flags) in [
        ("native", ["-o", "native"]),
        ("turbo", ["--turboOCI", "turbo"]),
    ] {
        let o = conv_layout(&layout, "multi-arch", &flags);
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for (tag, kind) in [("native", "overlaybd"), ("turbo", "TurboOCIv1")] {
        let index = std::fs::read(out.join("index.json")).unwrap();
        let o = conv_layout(&out, tag, &["-o", "again"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{tag}: {err}");
        assert!(
            err.contains(&format!("is already converted ({kind}")),
            "{err}"
        );
        assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index);
        let o = conv_layout(&out, tag, &["-o", "again", "--skip-converted"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{tag}: {err}");
        assert!(err.contains("nothing to do (--skip-converted)"), "{err}");
        assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index);
    }
}
