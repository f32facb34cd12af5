//! The TurboOCI forms of the toolbox, as upstream's TurboOCI build chains its tools:
//! `obd create --turbo-oci [--mkfs]` → `obd apply --gz-index-path` → `obd commit
//! --turbo-oci -z`, per layer. The committed fs-meta layers, stacked over the original blobs
//! and their gzip indexes, flatten (`obd export-raw`) to an ext4 that passes `e2fsck -fn`
//! and whose tree equals `umoci unpack` (where loop mounts work); the per-layer outputs are
//! byte for byte the `ext4.fs.meta` and `gzip.meta` of `convertor --turboOCI`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::tree::*;
use common::*;
use obd_format::detect;
use obd_format::lsmt::HeaderTrailer;
use obd_format::ReadAt;
use serde_json::{json, Value};

/// A committed warp layer's wrappers (ZFile, tar) and trailer. (`obd inspect` cannot be
/// used: nothing in a warp layer's bytes says its remote entries point into another file.)
fn warp_commit(p: &Path) -> (bool, bool, HeaderTrailer) {
    let u = detect::unwrap(detect::open_file(p).unwrap()).unwrap();
    let mut b = vec![0u8; 4096];
    let head = {
        u.payload.read_exact_at(&mut b, 0).unwrap();
        HeaderTrailer::decode(&b).unwrap()
    };
    assert_eq!(head.flags, 0x07, "warp commit header flags");
    u.payload
        .read_exact_at(&mut b, u.payload.size() - 4096)
        .unwrap();
    let t = HeaderTrailer::decode(&b).unwrap();
    assert_eq!(t.flags, 0x06, "warp commit trailer flags");
    (u.zfile.is_some(), u.tar.is_some(), t)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The files of one layer built with the toolbox.
struct Built {
    meta: PathBuf,
    gz: Option<PathBuf>,
}

/// How layer 0 gets its filesystem: at `create` or at `apply` (the convertor's order).
#[derive(Clone, Copy, PartialEq)]
enum Mkfs {
    AtCreate,
    AtApply,
}

/// Builds one layer with the toolbox over `lowers`; `k` picks which upstream spellings
/// of the flags are used, so every alias is exercised.
fn build_layer(
    dir: &Path,
    blob: &Path,
    diff_id: &str,
    lowers: &[Value],
    k: usize,
    mkfs: Option<Mkfs>,
) -> Built {
    std::fs::create_dir_all(dir).unwrap();
    let (data, index) = (dir.join("writable_data"), dir.join("writable_index"));
    let gz = dir.join("gzip.meta");
    let turbo = ["--turbo-oci", "--turboOCI", "--fastoci"][k % 3];
    let mut c = obd();
    c.args(["create", "-s", turbo]);
    if mkfs == Some(Mkfs::AtCreate) {
        c.arg("--mkfs");
    }
    run_ok(c.arg(&data).arg(&index).arg("64"));
    // The fs-meta image is a raw file of the virtual size; the index has a header.
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 64 << 30);
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({
            "repoBlobUrl": "",
            "lowers": lowers,
            "upper": {"data": data, "index": index, "target": blob},
            "resultFile": "",
        }))
        .unwrap(),
    )
    .unwrap();
    let mut a = obd();
    a.arg("apply")
        .arg(["--gz-index-path", "--gz_index_path"][k % 2])
        .arg(&gz)
        .args(["--checksum", diff_id]);
    if mkfs == Some(Mkfs::AtApply) {
        a.arg("--mkfs");
    }
    run_ok(a.arg(blob).arg(&cfg));
    let meta = dir.join("ext4.fs.meta");
    run_ok(
        obd()
            .args([
                "commit",
                "-z",
                ["--fastoci", "--turbo-oci", "--turboOCI"][k % 3],
            ])
            .arg(&data)
            .arg(&index)
            .arg(&meta),
    );
    run_ok(obd().args(["zfile", "--verify"]).arg(&meta));
    let (z, t, trailer) = warp_commit(&meta);
    assert!(z && !t);
    assert_eq!(trailer.virtual_size, 64 << 30);
    Built {
        gz: gz.exists().then_some(gz),
        meta,
    }
}

fn lower_of(b: &Built, blob: &Path) -> Value {
    let mut l = json!({"file": b.meta, "targetFile": blob});
    if let Some(g) = &b.gz {
        l["gzipIndex"] = json!(g);
    }
    l
}

/// The files inside a `turboOCIv1.tar.gz`, by name.
fn turbo_files(tgz: &Path) -> Vec<(String, Vec<u8>)> {
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(tgz).unwrap())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (name, b)
        })
        .collect()
}

/// Builds every layer of `tag` with the toolbox, checks each prefix, and compares each
/// layer with what `convertor --turboOCI` makes of it.
fn check_image(tag: &str) {
    if !have("e2fsck") {
        return;
    }
    let Some(src) = corpus() else { return };
    let w = tempfile::tempdir().unwrap();
    let m = layout_manifest(&src, tag);
    let cfg = json_file(&blob(&src, m["config"]["digest"].as_str().unwrap()));
    let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let layers: Vec<PathBuf> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(&src, l["digest"].as_str().unwrap()))
        .collect();
    let mount = can_mount() && have("umoci");

    // The convertor's TurboOCI engine on the same image, for a byte comparison.
    let out = w.path().join("out");
    let o = convertor()
        .args(["-r", &format!("oci:{}", src.display()), "-i", tag])
        .args(["--turboOCI", &format!("{tag}-turbo")])
        .args(["--target-repository", &format!("oci:{}", out.display())])
        .arg("-d")
        .arg(w.path().join("tmp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tm = layout_manifest(&out, &format!("{tag}-turbo"));
    let turbo_layers = tm["layers"].as_array().unwrap();
    assert_eq!(turbo_layers.len(), layers.len());

    let mut lowers = Vec::new();
    for (k, b) in layers.iter().enumerate() {
        let dir = w.path().join(format!("l{k}"));
        let built = build_layer(
            &dir,
            b,
            &diff_ids[k],
            &lowers,
            k,
            (k == 0).then_some(Mkfs::AtCreate),
        );
        lowers.push(lower_of(&built, b));

        // Same bytes as the convertor's engine.
        let files = turbo_files(&blob(&out, turbo_layers[k]["digest"].as_str().unwrap()));
        let get = |n: &str| files.iter().find(|(f, _)| f == n).map(|(_, b)| b.clone());
        let conv_meta = get("ext4.fs.meta").expect("ext4.fs.meta in the turbo layer");
        assert!(
            std::fs::read(&built.meta).unwrap() == conv_meta,
            "{tag} layer {k}: ext4.fs.meta differs from the convertor's"
        );
        let what = match (&built.gz, get("gzip.meta")) {
            (Some(g), Some(c)) => {
                assert!(
                    std::fs::read(g).unwrap() == c,
                    "{tag} layer {k}: gzip.meta differs from the convertor's"
                );
                "ext4.fs.meta and gzip.meta equal"
            }
            (None, None) => "ext4.fs.meta equals (a plain tar: no gzip.meta)",
            (g, c) => panic!(
                "{tag} layer {k}: gzip index: toolbox {:?}, convertor {}",
                g,
                c.is_some()
            ),
        };
        eprintln!("{tag} layer {k}: {what} the convertor's");

        // The stack so far flattens to a clean ext4 with the reference tree.
        let cfgp = w.path().join(format!("ro{k}.json"));
        std::fs::write(
            &cfgp,
            serde_json::to_vec(&json!({ "lowers": lowers })).unwrap(),
        )
        .unwrap();
        let raw = w.path().join(format!("raw{k}.img"));
        run_ok(obd().arg("export-raw").arg(&cfgp).arg(&raw));
        e2fsck_clean(&raw);
        if mount {
            let want = umoci_listing(&src, tag, k + 1, w.path());
            let got = mounted_listing(&raw);
            assert_same(tag, k + 1, &want, &got);
        }
        let _ = std::fs::remove_file(&raw);
    }

    // Layer 0 with the filesystem made at `apply --mkfs` (the convertor's order: one
    // filesystem session for mkfs and the layer) gives the same bytes too.
    let dir = w.path().join("l0-mkfs-at-apply");
    let built = build_layer(&dir, &layers[0], &diff_ids[0], &[], 0, Some(Mkfs::AtApply));
    assert!(
        std::fs::read(&built.meta).unwrap()
            == std::fs::read(w.path().join("l0/ext4.fs.meta")).unwrap(),
        "{tag} layer 0: mkfs at create and at apply differ"
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

// ---- Without the corpus: hand-made layers, errors and exit codes. ----

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, p, *c).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn diff_id(tar: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(tar))
}

/// `debugfs -R "cat P"` of a raw ext4 image.
fn cat(raw: &Path, p: &str) -> Vec<u8> {
    let o = run_ok(tool("debugfs").arg("-R").arg(format!("cat {p}")).arg(raw));
    o.stdout
}

/// A gzip layer over a plain one, both built with the toolbox; file data is read back
/// through the original blobs (the second file spans several gzip index spans).
#[test]
fn hand_made_layers_read_back_through_their_blobs() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t0 = tar_of(&[("etc/hello", b"hello\n"), ("tail", &[7u8; 1000])]);
    let t1 = tar_of(&[("big", &big), ("etc/hello", b"bye\n")]);
    let b0 = w.path().join("layer0.tar");
    let b1 = w.path().join("layer1.tar.gz");
    std::fs::write(&b0, &t0).unwrap();
    std::fs::write(&b1, gzip(&t1)).unwrap();
    let l0 = build_layer(
        &w.path().join("l0"),
        &b0,
        &diff_id(&t0),
        &[],
        0,
        Some(Mkfs::AtCreate),
    );
    assert!(l0.gz.is_none(), "no index is written for a plain tar");
    let lowers = vec![lower_of(&l0, &b0)];
    let l1 = build_layer(&w.path().join("l1"), &b1, &diff_id(&t1), &lowers, 1, None);
    assert!(l1.gz.is_some());
    // The fs-meta holds metadata only: much smaller than the file data.
    assert!(std::fs::metadata(&l1.meta).unwrap().len() < 1 << 20);
    let lowers = vec![lower_of(&l0, &b0), lower_of(&l1, &b1)];
    let cfg = w.path().join("ro.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({ "lowers": lowers })).unwrap(),
    )
    .unwrap();
    let raw = w.path().join("raw");
    run_ok(obd().arg("export-raw").arg(&cfg).arg(&raw));
    e2fsck_clean(&raw);
    assert_eq!(cat(&raw, "/etc/hello"), b"bye\n");
    assert_eq!(cat(&raw, "/tail"), vec![7u8; 1000]);
    assert!(cat(&raw, "/big") == big, "/big differs");
}

/// Sets up a warp upper over no lowers; returns (config path, data, index).
fn warp_upper(w: &Path, target: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (d, x) = (w.join("d"), w.join("x"));
    run_ok(
        obd()
            .args(["create", "--turbo-oci", "--mkfs"])
            .arg(&d)
            .arg(&x)
            .arg("1"),
    );
    let cfg = w.join("c.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(&json!({"upper": {"data": d, "index": x, "target": target}})).unwrap(),
    )
    .unwrap();
    (cfg, d, x)
}

fn code(c: &mut std::process::Command) -> (Option<i32>, String) {
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn refusals_and_exit_codes() {
    let w = tempfile::tempdir().unwrap();
    let t = tar_of(&[("a", b"a\n")]);
    let gz = w.path().join("l.tar.gz");
    std::fs::write(&gz, gzip(&t)).unwrap();
    let (cfg, d, x) = warp_upper(w.path(), &gz);
    let index_len = std::fs::metadata(&x).unwrap().len();

    // A gzip layer without a place for its index: refused before the upper is touched.
    let (c, e) = code(obd().arg("apply").arg(&gz).arg(&cfg));
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("--gz-index-path"), "{e}");
    assert_eq!(std::fs::metadata(&x).unwrap().len(), index_len);

    // zstd layers cannot be TurboOCI layers (as the convertor: exit 2).
    let z = w.path().join("l.tar.zst");
    std::fs::write(&z, [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]).unwrap();
    let (c, e) = code(
        obd()
            .args(["apply", "--gz-index-path"])
            .arg(w.path().join("g"))
            .arg(&z)
            .arg(&cfg),
    );
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("zstd"), "{e}");

    // Several gzip members: the index would cover only the first.
    let two = w.path().join("two.tar.gz");
    let mut b = gzip(&t[..512]);
    b.extend(gzip(&t[512..]));
    std::fs::write(&two, b).unwrap();
    let (c, e) = code(
        obd()
            .args(["apply", "--gz-index-path"])
            .arg(w.path().join("g"))
            .arg(&two)
            .arg(&cfg),
    );
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("gzip members"), "{e}");

    // A wrong checksum: bad input, and no index is written.
    let g = w.path().join("gzip.meta");
    let (c, e) = code(
        obd()
            .args(["apply", "--checksum", &format!("sha256:{}", "0".repeat(64))])
            .arg("--gz-index-path")
            .arg(&g)
            .arg(&gz)
            .arg(&cfg),
    );
    assert_eq!(c, Some(5), "{e}");
    assert!(!g.exists());

    // EROFS is not built by `obd apply`.
    let (c, e) = code(
        obd()
            .args(["apply", "--fstype", "erofs", "--gz-index-path"])
            .arg(&g)
            .arg(&gz)
            .arg(&cfg),
    );
    assert_eq!(c, Some(2), "{e}");

    // Without --gz-index-path, the config's upper.gzipIndex names the index.
    let cfg2 = w.path().join("c2.json");
    std::fs::write(
        &cfg2,
        serde_json::to_vec(
            &json!({"upper": {"data": d, "index": x, "target": gz, "gzipIndex": g}}),
        )
        .unwrap(),
    )
    .unwrap();
    run_ok(obd().arg("apply").arg(&gz).arg(&cfg2));
    assert!(g.exists());

    // A warp upper is not a device `export-raw` opens, nor an ordinary apply target.
    let (c, e) = code(obd().arg("export-raw").arg(&cfg2).arg(w.path().join("raw")));
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("--turbo-oci"), "{e}");

    // `--gz-index-path` onto an ordinary writable upper is refused; it is left as it was.
    let (od, ox) = (w.path().join("od"), w.path().join("ox"));
    run_ok(obd().args(["create", "--mkfs"]).arg(&od).arg(&ox).arg("1"));
    let before = (std::fs::read(&od).unwrap(), std::fs::read(&ox).unwrap());
    let cfg3 = w.path().join("c3.json");
    std::fs::write(
        &cfg3,
        serde_json::to_vec(&json!({"upper": {"data": od, "index": ox}})).unwrap(),
    )
    .unwrap();
    let (c, e) = code(
        obd()
            .args(["apply", "--gz-index-path"])
            .arg(w.path().join("g3"))
            .arg(&gz)
            .arg(&cfg3),
    );
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("--turbo-oci"), "{e}");
    assert!(before == (std::fs::read(&od).unwrap(), std::fs::read(&ox).unwrap()));

    // A warp layer is not an ordinary writable layer, and the reverse.
    let (c, _) = code(obd().arg("commit").arg(&d).arg(&x).arg(w.path().join("o1")));
    assert_ne!(c, Some(0));
    let (rd, rx) = (w.path().join("rd"), w.path().join("rx"));
    run_ok(obd().arg("create").arg(&rd).arg(&rx).arg("1"));
    let (c, _) = code(
        obd()
            .args(["commit", "--turbo-oci"])
            .arg(&rd)
            .arg(&rx)
            .arg(w.path().join("o2")),
    );
    assert_ne!(c, Some(0));

    // commit --turbo-oci in every wrapping, with a UUID and a message.
    for (i, flags) in [vec![], vec!["-z"], vec!["-z", "-t"]].iter().enumerate() {
        let out = w.path().join(format!("c{i}"));
        run_ok(
            obd()
                .args(["commit", "--turbo-oci", "-m", "turbo", "--uuid"])
                .arg("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE")
                .args(flags)
                .arg(&d)
                .arg(&x)
                .arg(&out),
        );
        let (z, t, trailer) = warp_commit(&out);
        assert_eq!(z, flags.contains(&"-z"));
        assert_eq!(t, flags.contains(&"-t"));
        assert_eq!(trailer.user_tag, b"turbo");
        assert_eq!(
            trailer.uuid.to_string().to_uppercase(),
            "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
        );
    }
}
