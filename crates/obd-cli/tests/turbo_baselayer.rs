//! `convertor --turboOCI --mkfs=false`: TurboOCI metadata layers stacked on the upstream
//! baselayer, which the manifest lists first as the raw ZFile upstream pushes
//! (`sha256:c3a41755…`, 4737695 bytes). The flattened stack must pass `e2fsck -fn` and its
//! tree equal `umoci unpack`; EROFS with `--mkfs=false` is refused (upstream builds an image
//! no runtime can read).

mod common;

use common::tree::*;
use common::*;
use serde_json::{json, Value};

const ANN: &str = "containerd.io/snapshot/overlaybd/";
const BASE_DIGEST: &str = "sha256:c3a417552a6cf9ffa959b541850bab7d7f08f4255425bf8b48c85f7b36b378d9";

#[test]
fn edge_on_the_baselayer() {
    if !have("e2fsck") {
        return;
    }
    let Some(src) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let out = w.path().join("out");
    run_ok(
        convertor()
            .args(["-r", &format!("oci:{}", src.display()), "-i", "edge"])
            .args(["--turboOCI", "edge-turbo", "--mkfs=false", "--docker"])
            .args(["--target-repository", &format!("oci:{}", out.display())])
            .arg("-d")
            .arg(w.path().join("tmp")),
    );
    let m = layout_manifest(&out, "edge-turbo");
    let layers = m["layers"].as_array().unwrap();
    let cfg: Value = serde_json::from_slice(
        &std::fs::read(blob(&out, m["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    // The baselayer first, raw, as upstream's hard-coded descriptor.
    let b = &layers[0];
    assert_eq!(b["digest"], BASE_DIGEST);
    assert_eq!(b["size"], 4737695);
    assert_eq!(
        b["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(b["annotations"][format!("{ANN}version")], "0.1.0");
    assert_eq!(b["annotations"][format!("{ANN}blob-digest")], BASE_DIGEST);
    assert_eq!(diff_ids[0], BASE_DIGEST);
    let base = blob(&out, BASE_DIGEST);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&std::fs::read(&base).unwrap())),
        BASE_DIGEST
    );
    assert_eq!(layers.len(), 4, "baselayer + 3 turbo layers");
    let mut lowers = vec![json!({ "file": base })];
    let mount = can_mount() && have("umoci");
    for (k, l) in layers[1..].iter().enumerate() {
        let a = &l["annotations"];
        assert_eq!(a[format!("{ANN}version")], "0.1.0-turbo.ociv1");
        let target = blob(
            &out,
            a[format!("{ANN}turbo-oci/target-digest")].as_str().unwrap(),
        );
        let dir = w.path().join(format!("l{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = std::fs::read(blob(&out, l["digest"].as_str().unwrap())).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]))
            .unpack(&dir)
            .unwrap();
        let mut lower = json!({"file": dir.join("ext4.fs.meta"), "targetFile": target, "dir": dir});
        if dir.join("gzip.meta").exists() {
            lower["gzipIndex"] = json!(dir.join("gzip.meta"));
        }
        lowers.push(lower);
        let cfgp = w.path().join(format!("config{k}.json"));
        std::fs::write(
            &cfgp,
            serde_json::to_vec(&json!({ "lowers": lowers })).unwrap(),
        )
        .unwrap();
        let raw = w.path().join(format!("raw{k}.img"));
        run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
        e2fsck_clean(&raw);
        if mount {
            let want = umoci_listing(&src, "edge", k + 1, w.path());
            assert_same("edge", k + 1, &want, &mounted_listing(&raw));
        }
        let _ = std::fs::remove_file(&raw);
    }
    // `obd check` reads the mixed stack (native baselayer + TurboOCI layers) too.
    let o = obd()
        .args(["check", "--source", &format!("oci:{}", src.display())])
        .args(["--source-ref", "edge"])
        .args(["--converted", &format!("oci:{}", out.display())])
        .args(["--converted-ref", "edge-turbo"])
        .arg("--work-dir")
        .arg(w.path().join("check"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("identical"),
        "obd check: {stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn erofs_on_the_baselayer_is_refused() {
    let Some(src) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let o = convertor()
        .args(["-r", &format!("oci:{}", src.display()), "-i", "tiny"])
        .args(["--turboOCI", "t", "--mkfs=false", "--fstype", "erofs"])
        .args([
            "--target-repository",
            &format!("oci:{}", w.path().join("o").display()),
        ])
        .arg("-d")
        .arg(w.path().join("tmp"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--mkfs"));
}
