//! Hostile images: names that try to leave the image (`..`, absolute paths, symlinks and
//! hard links pointing outside), a decompression bomb, digests and diff_ids that lie, an
//! index that points at itself, a 100 MB manifest. Each is either converted safely
//! (everything lands inside the image, nothing outside the work dir is touched) or refused
//! with a clear error and the right exit code; never a panic, a hang or a tag.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rel::*;
use common::*;
use serde_json::{json, Value};

/// One raw ustar entry; `name` and `link` are written as given (no path checks).
fn entry(out: &mut Vec<u8>, kind: u8, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    {
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_mtime(1);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_tar(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn put_blob(layout: &Path, b: &[u8]) -> String {
    let d = format!("sha256:{}", sha256_hex(b));
    std::fs::write(blob(layout, &d), b).unwrap();
    d
}

/// An OCI layout with one image `tag`: gzip layers of `tars` (already compressed if
/// `gz` is false), config diff_ids from the uncompressed tars.
fn layout(dir: &Path, tars: &[Vec<u8>], gz: &[Vec<u8>]) -> (PathBuf, Value, Value) {
    let l = dir.join("layout");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (t, g) in tars.iter().zip(gz) {
        diff_ids.push(format!("sha256:{}", sha256_hex(t)));
        let d = put_blob(&l, g);
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": g.len()}));
    }
    let cfg = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "", "size": 0},
        "layers": layers});
    (l, cfg, m)
}

/// Writes `cfg` and `m` (config descriptor filled in) and tags the manifest `img`.
fn commit(l: &Path, cfg: &Value, mut m: Value) -> String {
    let cb = serde_json::to_vec(cfg).unwrap();
    m["config"]["digest"] = Value::String(put_blob(l, &cb));
    m["config"]["size"] = Value::from(cb.len());
    let mb = serde_json::to_vec(&m).unwrap();
    let md = put_blob(l, &mb);
    tag_index(
        l,
        &md,
        "application/vnd.oci.image.manifest.v1+json",
        mb.len(),
    );
    md
}

fn tag_index(l: &Path, digest: &str, mt: &str, size: usize) {
    let idx = json!({"schemaVersion": 2, "manifests": [{"mediaType": mt, "digest": digest,
        "size": size, "annotations": {"org.opencontainers.image.ref.name": "img"}}]});
    std::fs::write(l.join("index.json"), idx.to_string()).unwrap();
}

/// Converts `img` of layout `l` into `out/` (work dir `work`), with a time limit.
fn convert(l: &Path, out: &Path, work: &Path, extra: &[&str]) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let o = layout_convertor(l, out, work)
        .args(["-i", "img", "-o", "obd"])
        .args(extra)
        .output()
        .unwrap();
    (o, t.elapsed())
}

fn refused(name: &str, o: &std::process::Output, code: i32, cause: &str, out: &Path) {
    assert_eq!(o.status.code(), Some(code), "{name}: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.to_lowercase().contains(&cause.to_lowercase()),
        "{name}: stderr does not name {cause:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{name}: {err}");
    let idx = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    assert!(!idx.contains("\"obd\""), "{name}: tagged: {idx}");
    let last = err.lines().rfind(|l| l.starts_with("error:")).unwrap_or("");
    eprintln!("{name}: refused, exit {code}: {last}");
}

/// Flattens the converted image of `out` and lists its root directory with debugfs.
fn image_root(out: &Path, dir: &Path) -> Option<String> {
    let m = layout_manifest(out, "obd");
    let lowers: Vec<Value> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| json!({"file": blob(out, l["digest"].as_str().unwrap())}))
        .collect();
    let cfgp = dir.join("stack.json");
    std::fs::write(&cfgp, json!({"lowers": lowers}).to_string()).unwrap();
    let raw = dir.join("raw");
    run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
    e2fsck_clean(&raw);
    if !have("debugfs") {
        return None;
    }
    let o = tool("debugfs")
        .arg("-R")
        .arg("ls -p /")
        .arg(&raw)
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn host_untouched(sentinel: &Path) {
    assert_eq!(
        std::fs::read_dir(sentinel).unwrap().count(),
        0,
        "something was written into {} on the host",
        sentinel.display()
    );
}

/// `..`, absolute names, a symlink to a host directory then a write through it, a
/// symlink climbing out then a write through it, a hard link to `../../..`: everything
/// stays inside the image.
#[test]
fn path_traversal_stays_inside_the_image() {
    if !have("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("host-sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    let s = sentinel.display().to_string();
    let mut t = Vec::new();
    entry(&mut t, b'5', "a/", "", b"");
    entry(&mut t, b'0', "../../../dotdot-evil", "", b"x");
    entry(&mut t, b'0', "a/../../../../a-dotdot-evil", "", b"x");
    entry(&mut t, b'0', &format!("{s}/abs-evil"), "", b"x");
    entry(&mut t, b'0', "/abs-root-evil", "", b"x");
    entry(&mut t, b'2', "esc", &s, b"");
    entry(&mut t, b'0', "esc/through-symlink", "", b"x");
    entry(&mut t, b'2', "up", "../../../../..", b"");
    entry(&mut t, b'0', "up/through-up", "", b"x");
    entry(&mut t, b'0', "target", "", b"t");
    entry(&mut t, b'1', "hl-out", "../../../../target", b"");
    let t = finish_tar(t);
    // A second layer writes through the symlinks the first one made.
    let mut t2 = Vec::new();
    entry(&mut t2, b'0', "esc/second-layer", "", b"y");
    entry(&mut t2, b'0', "up/../second-up", "", b"y");
    let t2 = finish_tar(t2);
    let (l, cfg, m) = layout(dir.path(), &[t.clone(), t2.clone()], &[gzip(&t), gzip(&t2)]);
    commit(&l, &cfg, m);
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    let (o, took) = convert(&l, &out, &work, &[]);
    host_untouched(&sentinel);
    assert!(!dir.path().join("dotdot-evil").exists());
    assert!(!Path::new("/abs-root-evil").exists());
    assert!(!work.exists(), "work dir left behind");
    assert!(o.status.success(), "{}", text(&o));
    if let Some(root) = image_root(&out, dir.path()) {
        for name in [
            "dotdot-evil",
            "a-dotdot-evil",
            "abs-root-evil",
            "through-up",
            "second-up",
            "hl-out",
        ] {
            assert!(
                root.contains(&format!("/{name}/")),
                "{name} not at / in {root}"
            );
        }
    }
    eprintln!("path traversal: converted in {took:.1?}, every name inside the image");
}

/// A tiny gzip that inflates to 1.5 GiB of file data, into a 1 GiB image: a clear error
/// once the image is full, not a full disk or a hang.
#[test]
fn decompression_bomb_is_bounded_by_vsize() {
    let dir = tempfile::tempdir().unwrap();
    const SIZE: u64 = 3 << 29; // 1.5 GiB
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").unwrap();
    h.set_size(SIZE);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    let chunk = vec![b'A'; 1 << 20];
    let mut tar_hash = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut tar_hash, h.as_bytes());
    for _ in 0..SIZE >> 20 {
        gz.write_all(&chunk).unwrap();
        sha2::Digest::update(&mut tar_hash, &chunk);
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    sha2::Digest::update(&mut tar_hash, [0u8; 1024]);
    let g = gz.finish().unwrap();
    eprintln!("bomb: {} bytes of gzip for {SIZE} bytes of file", g.len());
    let diff_id = format!("sha256:{}", hex::encode(sha2::Digest::finalize(tar_hash)));
    let (l, mut cfg, m) = layout(dir.path(), &[Vec::new()], &[g]);
    cfg["rootfs"]["diff_ids"][0] = Value::String(diff_id);
    commit(&l, &cfg, m);
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    let (o, took) = convert(&l, &out, &work, &["--vsize", "1"]);
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(!work.exists(), "work dir left behind");
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        matches!(o.status.code(), Some(5) | Some(6)),
        "bomb: {}",
        text(&o)
    );
    assert!(
        err.contains("space") || err.contains("full") || err.contains("virtual size"),
        "bomb: no clear error: {err}"
    );
    refused("bomb", &o, o.status.code().unwrap(), "", &out);
    eprintln!("bomb: stopped after {took:.1?}");
}

/// A layer whose bytes do not match its digest; a config whose diff_ids disagree with the
/// layers (wrong digest, wrong count).
#[test]
fn lying_digests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Vec::new();
    entry(&mut t, b'0', "f", "", b"hello");
    let t = finish_tar(t);
    let g = gzip(&t);
    let (l, cfg, m) = layout(
        dir.path(),
        std::slice::from_ref(&t),
        std::slice::from_ref(&g),
    );
    // Layer digest: same length, other bytes under the layer's name.
    let d = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let mut bad = g.clone();
    let k = bad.len() / 2;
    bad[k] ^= 0x55;
    std::fs::write(blob(&l, &d), &bad).unwrap();
    commit(&l, &cfg, m.clone());
    let out = dir.path().join("out");
    let (o, _) = convert(&l, &out, &dir.path().join("w"), &[]);
    refused("layer-digest-mismatch", &o, 5, &d[7..19], &out);
    std::fs::write(blob(&l, &d), &g).unwrap();
    // diff_ids: another digest.
    let mut c2 = cfg.clone();
    c2["rootfs"]["diff_ids"][0] = Value::String(format!("sha256:{}", "1".repeat(64)));
    commit(&l, &c2, m.clone());
    let (o, _) = convert(&l, &out, &dir.path().join("w"), &[]);
    refused("diff-id-mismatch", &o, 5, "diff_id", &out);
    // diff_ids: one too many.
    let mut c3 = cfg.clone();
    c3["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(format!("sha256:{}", "2".repeat(64))));
    commit(&l, &c3, m);
    let (o, _) = convert(&l, &out, &dir.path().join("w"), &[]);
    refused("diff-id-count", &o, 5, "diff_ids", &out);
}

/// An index whose entry is its own digest (only possible in unverified storage: the file
/// under that name holds other bytes), and an index of indexes nested 64 deep.
#[test]
fn self_referencing_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("layout");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let self_d = format!("sha256:{}", "ab".repeat(32));
    let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self_d,
        "size": 200, "platform": {"os": "linux", "architecture": "amd64"}}]});
    let b = serde_json::to_vec(&idx).unwrap();
    std::fs::write(blob(&l, &self_d), &b).unwrap();
    tag_index(
        &l,
        &self_d,
        "application/vnd.oci.image.index.v1+json",
        b.len(),
    );
    let out = dir.path().join("out");
    let (o, took) = convert(&l, &out, &dir.path().join("w"), &[]);
    assert!(took < Duration::from_secs(30));
    refused("index-points-at-itself", &o, 5, "sha256", &out);
}

/// A 100 MB manifest: refused with a clear error, quickly and without holding it all.
#[test]
fn huge_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (l, cfg, mut m) = layout(dir.path(), &[], &[]);
    m["annotations"] = json!({"pad": "x".repeat(100 << 20)});
    commit(&l, &cfg, m.clone());
    let out = dir.path().join("out");
    let (o, took) = convert(&l, &out, &dir.path().join("w"), &[]);
    assert!(took < Duration::from_secs(30));
    refused("manifest-100MB-layout", &o, 5, "limit", &out);

    // The same through a registry.
    let Some(reg) = obd_registry::testutil::TestRegistry::start_or_skip(
        obd_registry::testutil::RegistryKind::Plain,
    ) else {
        return;
    };
    let c = reg.client();
    let cb = serde_json::to_vec(&cfg).unwrap();
    let (cd, _) = c.push_blob_bytes("huge/m", cb.clone()).unwrap();
    m["config"]["digest"] = Value::String(cd);
    m["config"]["size"] = Value::from(cb.len());
    let mb = serde_json::to_vec(&m).unwrap();
    match c.put_manifest(
        "huge/m",
        "img",
        "application/vnd.oci.image.manifest.v1+json",
        &mb,
    ) {
        Ok(_) => {
            let mut a = reg_args(&reg, &reg.host, "huge/m");
            a.extend(["-i", "img", "-o", "obd"].map(String::from));
            let t = Instant::now();
            let o = run(&a);
            assert!(t.elapsed() < Duration::from_secs(30));
            assert_eq!(o.status.code(), Some(5), "{}", text(&o));
            assert!(tag_digest(&c, "huge/m", "obd").is_none());
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().rfind(|l| l.starts_with("error:")).unwrap_or("");
            eprintln!("manifest-100MB-registry: refused, exit 5: {last}");
        }
        Err(e) => eprintln!("manifest-100MB-registry: the registry refused to store it ({e})"),
    }
}

/// A malformed layer tar is bad input from `convertor` too (exit 5), whatever is wrong
/// with it; never 1 or 6.
#[test]
fn malformed_layer_tars_are_exit_5_from_convertor() {
    use obd_tar::testutil::{header, RawTar};
    let mut cases = obd_tar::testutil::malformed_archives();
    cases.push((
        "member larger than the filesystem",
        RawTar::new()
            .block(header(b"zeros", b'0', 200 << 30, 0o644, b""))
            .into_bytes(),
        "--vsize",
    ));
    for (name, tar, cause) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (l, cfg, m) = layout(dir.path(), std::slice::from_ref(&tar), &[gzip(&tar)]);
        commit(&l, &cfg, m);
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        let (o, took) = convert(&l, &out, &work, &["--db-type", "none"]);
        assert!(took < Duration::from_secs(30), "{name}: took {took:?}");
        refused(name, &o, 5, cause, &out);
    }
    // Corrupt gzip data is bad input as well.
    let dir = tempfile::tempdir().unwrap();
    let tar = finish_tar(Vec::new());
    let mut g = gzip(&vec![9u8; 100_000]);
    let n = g.len();
    for b in &mut g[20..n - 20] {
        *b ^= 0x33;
    }
    let (l, cfg, m) = layout(dir.path(), &[tar], &[g]);
    commit(&l, &cfg, m);
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    let (o, _) = convert(&l, &out, &work, &["--db-type", "none"]);
    refused("corrupt gzip", &o, 5, "gzip", &out);
}

/// A full work directory is I/O (exit 6) and says "No space left on device". Needs a
/// small tmpfs: skipped where mounting is not allowed.
#[test]
fn full_work_dir_is_exit_6_with_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=14m", "tmpfs"])
        .arg(&small)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !mounted {
        // As the loop-mount tree comparisons: where mounting is not permitted, say so.
        eprintln!("note: cannot mount a tmpfs here; the full-disk case is not run");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    // 24 MiB that do not compress: more than the tmpfs holds.
    let mut data = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for c in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    let mut t = Vec::new();
    entry(&mut t, b'0', "random.bin", "", &data);
    let tar = finish_tar(t);
    let (l, cfg, m) = layout(dir.path(), std::slice::from_ref(&tar), &[gzip(&tar)]);
    commit(&l, &cfg, m);
    let out = dir.path().join("out");
    let (o, _) = convert(
        &l,
        &out,
        &small.join("work"),
        &["--db-type", "none", "--memory-budget", "0"],
    );
    refused("full work dir", &o, 6, "No space left on device", &out);
}
