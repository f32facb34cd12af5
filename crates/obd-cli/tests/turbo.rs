//! TurboOCIv1 end to end: `convertor --turboOCI` over corpus images; for every prefix of
//! layers, the fs-meta layers with their gzip indexes over the original blobs flatten
//! (`obd export-raw`) to an ext4 that passes `e2fsck -fn` and, where loop mounts work,
//! whose tree equals `umoci unpack` of the same image prefix; `obd check` (no mounts) says
//! the whole image is identical to its source, for ext4 and EROFS (`--fstype erofs`)
//! fs-meta alike.

mod common;

use std::io::Read;
use std::path::Path;

use common::tree::*;
use common::*;
use serde_json::{json, Value};

const ANN: &str = "containerd.io/snapshot/overlaybd/";

/// Converts `tag` of `layout` into the OCI layout `out` as `tag-turbo`; returns stderr.
fn convert(layout: &Path, tag: &str, out: &Path, w: &Path, extra: &[&str]) -> std::process::Output {
    convertor()
        .args(["-r", &format!("oci:{}", layout.display()), "-i", tag])
        .args(["--turboOCI", &format!("{tag}-turbo")])
        .args(["--target-repository", &format!("oci:{}", out.display())])
        .arg("-d")
        .arg(w.join("tmp"))
        .args(extra)
        .output()
        .unwrap()
}

fn json_blob(layout: &Path, d: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(layout, d)).unwrap()).unwrap()
}

/// Checks one turbo manifest; returns (metadata bytes, source bytes).
fn check_manifest(
    src: &Path,
    out: &Path,
    m: &Value,
    reference: Option<&str>,
    w: &Path,
    fstype: &str,
) -> (u64, u64) {
    let cfg = json_blob(out, m["config"]["digest"].as_str().unwrap());
    let layers = m["layers"].as_array().unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    let mut lowers = Vec::new();
    let (mut meta, mut source) = (0, 0);
    let mount = reference.is_some() && can_mount() && have("umoci");
    for (k, l) in layers.iter().enumerate() {
        let a = &l["annotations"];
        assert_eq!(a[format!("{ANN}version")], "0.1.0-turbo.ociv1");
        assert_eq!(a[format!("{ANN}blob-digest")], l["digest"]);
        let target = a[format!("{ANN}turbo-oci/target-digest")].as_str().unwrap();
        let tmt = a[format!("{ANN}turbo-oci/target-media-type")]
            .as_str()
            .unwrap();
        // The source blob is in the target repository too.
        let tpath = blob(out, target);
        assert!(tpath.exists(), "source blob {target} copied to the target");
        meta += l["size"].as_u64().unwrap();
        source += std::fs::metadata(&tpath).unwrap().len();
        // diff_id: sha256 of the uncompressed turboOCIv1 tar.
        let gz = std::fs::read(blob(out, l["digest"].as_str().unwrap())).unwrap();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(
            diff_ids[k].as_str().unwrap(),
            format!("sha256:{}", sha256_hex(&tar_bytes))
        );
        let dir = w.join(format!("l{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&tar_bytes[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            e.unpack_in(&dir).unwrap();
        }
        let gzip = tmt.ends_with("gzip");
        let meta_name = format!("{fstype}.fs.meta");
        let mut want = vec![meta_name.as_str(), ".turbo.ociv1"];
        if gzip {
            want.push("gzip.meta");
        }
        assert_eq!(names, want);
        if fstype == "erofs" {
            assert_eq!(a[format!("{ANN}blob-fs-type")], "erofs");
        }
        eprintln!(
            "{}: layer {k}: {meta_name} {} bytes, layer blob {} bytes",
            reference.unwrap_or("image"),
            std::fs::metadata(dir.join(&meta_name)).unwrap().len(),
            l["size"].as_u64().unwrap()
        );
        let mut lower = json!({"file": dir.join(&meta_name), "targetFile": tpath, "dir": dir});
        if gzip {
            lower["gzipIndex"] = json!(dir.join("gzip.meta"));
        }
        lowers.push(lower);
        let cfgp = w.join(format!("config{k}.json"));
        std::fs::write(
            &cfgp,
            serde_json::to_vec(&json!({"lowers": lowers})).unwrap(),
        )
        .unwrap();
        let raw = w.join(format!("raw{k}.img"));
        run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
        if fstype == "erofs" {
            run_ok(tool("fsck.erofs").arg(&raw));
        } else {
            e2fsck_clean(&raw);
        }
        if let (true, Some(r)) = (mount, reference) {
            let want = umoci_listing(src, r, k + 1, w);
            let got = if fstype == "erofs" {
                mounted_erofs_listing(&raw)
            } else {
                mounted_listing(&raw)
            };
            assert_same(r, k + 1, &want, &got);
        }
        let _ = std::fs::remove_file(&raw);
    }
    (meta, source)
}

/// Loop-mounts an EROFS image and lists it.
fn mounted_erofs_listing(raw: &Path) -> String {
    let mnt = tempfile::tempdir().unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(raw)
            .arg(mnt.path()),
    );
    let l = listing(mnt.path(), true);
    run_ok(std::process::Command::new("umount").arg(mnt.path()));
    l
}

fn check_image(tag: &str) {
    check_image_fs(tag, "ext4");
}

fn check_image_fs(tag: &str, fstype: &str) {
    if !have("e2fsck") || (fstype == "erofs" && !have("fsck.erofs")) {
        return;
    }
    if tag.starts_with("debian") && std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        eprintln!("skipping {tag}: the corpus was built without the Debian images");
        return;
    }
    let Some(src) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let out = w.path().join("out");
    let o = convert(&src, tag, &out, w.path(), &["--fstype", fstype]);
    assert!(
        o.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = layout_manifest(&out, &format!("{tag}-turbo"));
    let (meta, source) = check_manifest(&src, &out, &m, Some(tag), w.path(), fstype);
    // `obd check` reads the TurboOCI image without mounting (ext4 or EROFS fs-meta).
    {
        let o = obd()
            .args(["check", "--source", &format!("oci:{}", src.display())])
            .args(["--source-ref", tag])
            .args(["--converted", &format!("oci:{}", out.display())])
            .args(["--converted-ref", &format!("{tag}-turbo")])
            .arg("--work-dir")
            .arg(w.path().join("check"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && stdout.contains("identical"),
            "{tag}: obd check: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("{tag} ({fstype}): obd check: {}", stdout.trim());
    }
    eprintln!(
        "{tag} ({fstype}): TurboOCI metadata {meta} bytes for {source} bytes of source layers ({:.2}%)",
        100.0 * meta as f64 / source as f64
    );
}

#[test]
fn edge() {
    check_image("edge");
}

#[test]
fn edge_raw_uncompressed_layers() {
    check_image("edge-raw");
}

#[test]
fn edge_dup() {
    check_image("edge-dup");
}

#[test]
fn debian() {
    check_image("debian");
}

#[test]
fn edge_erofs() {
    check_image_fs("edge", "erofs");
}

#[test]
fn debian_erofs() {
    check_image_fs("debian", "erofs");
}

#[test]
fn zstd_layers_are_refused_clearly() {
    let Some(src) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let o = convert(&src, "edge-zstd", &w.path().join("out"), w.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("zstd"), "{err}");
}

/// The upstream multi-arch hello-world: every platform, both engines in one run.
#[test]
fn hello_world_multi_arch_both_engines() {
    if !have("e2fsck") {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(testdata().join("upstream/hello-world-layout"))
            .arg(&src),
    );
    run_ok(
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&src),
    );
    let out = w.path().join("out");
    let o = convert(
        &src,
        "multi-arch",
        &out,
        w.path(),
        &["--overlaybd", "multi-arch-obd", "--oci"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let idx = layout_manifest(&out, "multi-arch-turbo");
    let entries = idx["manifests"].as_array().unwrap();
    assert!(entries.len() >= 2);
    for (i, e) in entries.iter().enumerate() {
        let m = json_blob(&out, e["digest"].as_str().unwrap());
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let d = w.path().join(format!("p{i}"));
        std::fs::create_dir_all(&d).unwrap();
        check_manifest(&src, &out, &m, None, &d, "ext4");
    }
    // The native build ran too.
    let native = layout_manifest(&out, "multi-arch-obd");
    assert!(native["manifests"].as_array().unwrap().len() == entries.len());
}
