//! `obd export-raw` over layers written by upstream's C++ tools, checked with e2fsprogs.

mod common;

use std::io::Read;

use common::*;

#[test]
fn baselayer_exports_to_a_clean_64g_ext4() {
    if !have("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::open(testdata().join("upstream/ext4_64.tar.gz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f))
        .unpack(dir.path())
        .unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"lowers": [{"file": dir.path().join("ext4_64")}]}).to_string(),
    )
    .unwrap();
    let raw = dir.path().join("base.raw");
    run_ok(obd().arg("export-raw").arg(&cfg).arg(&raw));
    e2fsck_clean(&raw);
    let o = run_ok(tool("dumpe2fs").arg("-h").arg(&raw));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.lines()
            .any(|l| l.starts_with("Block count:") && l.ends_with(" 16777216")),
        "{s}"
    );
}

#[test]
fn converted_hello_world_has_the_source_hello() {
    if !have("debugfs") {
        return;
    }
    let conv = testdata().join("upstream/converted-hello-world-layout");
    let m = layout_manifest(&conv, "amd64-converted");
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert!(layer.starts_with("sha256:022231c3"), "{layer}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"lowers": [{"file": blob(&conv, layer)}]}).to_string(),
    )
    .unwrap();
    let raw = dir.path().join("hello.raw");
    run_ok(obd().arg("export-raw").arg(&cfg).arg(&raw));
    let out = dir.path().join("hello.out");
    run_ok(
        tool("debugfs")
            .arg("-R")
            .arg(format!("dump /hello {}", out.display()))
            .arg(&raw),
    );
    let ours = std::fs::read(&out).unwrap();
    assert!(!ours.is_empty());

    // The same file in the source image (tag amd64 of the original layout).
    let src = testdata().join("upstream/hello-world-layout");
    let m = layout_manifest(&src, "amd64");
    let l = m["layers"][0]["digest"].as_str().unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(blob(&src, l)).unwrap(),
    ));
    let mut want = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "hello" {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            want = Some(v);
        }
    }
    assert_eq!(
        sha256_hex(&ours),
        sha256_hex(&want.expect("hello in the source layer"))
    );
}

#[test]
fn inspect_describes_upstream_files() {
    let conv = testdata().join("upstream/converted-hello-world-layout");
    let p = blob(
        &conv,
        "sha256:022231c3f1af70e0cc42f0c3781eabf174cff608210585bf93fc83e16d33672d",
    );
    let o = run_ok(obd().arg("inspect").arg(&p));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "lsmt-ro");
    assert_eq!(v["tar"]["payload_offset"], 1536);
    assert_eq!(v["zfile"]["algorithm"], "lz4");
    assert_eq!(v["lsmt_trailer"]["virtual_size"], 64u64 << 30);
    let o = run_ok(obd().arg("zfile").arg("--verify").arg(&p));
    assert!(String::from_utf8_lossy(&o.stdout).contains("blocks verified"));
}
