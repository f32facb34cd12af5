//! Conversion dedup end to end: `convertor` against a real `docker-registry` with a real
//! MariaDB and with SQLite, the same scenarios for both back ends.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::reg::{conv, seed};
use common::*;
use obd_dedup::testutil::TestMariaDb;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

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

/// Images sharing a prefix of layers: `(short, long)`, the long one has one more layer.
fn pair() -> (&'static str, &'static str) {
    if std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        ("edge", "edge-dup")
    } else {
        ("debian-2l", "debian")
    }
}

/// Runs the convertor with a report; returns the report.
fn convert(
    reg: &TestRegistry,
    db: &[String],
    repo: &str,
    tag: &str,
    out: &str,
    extra: &[&str],
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let r = reg.reference(repo);
    let mut args: Vec<&str> = vec!["-r", &r, "-i", tag, "-o", out, "--report"];
    let rs = report.to_str().unwrap().to_string();
    args.push(&rs);
    args.extend(db.iter().map(String::as_str));
    args.extend(extra);
    let t = Instant::now();
    let o = conv(reg, &args);
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{repo}:{tag} {extra:?}: {stderr}");
    assert!(
        !stderr.contains(obd_dedup::testutil::TestMariaDb::PASSWORD),
        "password in the log"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    eprintln!(
        "{repo}:{tag} {extra:?}: {secs:.2} s, {} converted, {} reused, {} bytes uploaded",
        v["totals"]["layers_converted"],
        v["totals"]["layers_reused"],
        v["totals"]["bytes_uploaded"]
    );
    v
}

fn totals(v: &Value, k: &str) -> u64 {
    v["totals"][k].as_u64().unwrap()
}

fn scenario(db: Vec<String>, name: &str) {
    let Some(corpus) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let (short, long) = pair();
    let repo = format!("dedup-{name}/app");
    seed(&corpus, short, &c, &repo);
    seed(&corpus, long, &c, &repo);
    let n_short = {
        let v = convert(&reg, &db, &repo, short, "s-obd", &[]);
        assert_eq!(totals(&v, "layers_reused"), 0);
        totals(&v, "layers_converted")
    };
    // The longer image converts only its new layer(s); the shared ones come from the rows.
    let first = convert(&reg, &db, &repo, long, "l-obd", &[]);
    assert_eq!(totals(&first, "layers_reused"), n_short, "{first:#}");
    assert!(totals(&first, "layers_converted") >= 1);
    // Converting it again converts nothing and uploads nothing; same manifest digest.
    let again = convert(&reg, &db, &repo, long, "l-obd-2", &[]);
    assert_eq!(again["output_digest"], first["output_digest"]);
    assert_eq!(totals(&again, "layers_converted"), 0);
    assert_eq!(totals(&again, "bytes_uploaded"), 0);
    assert!(again["manifests"][0]["dedup_hit"].as_bool().unwrap());
    let tagged = c.get_manifest(&repo, "l-obd-2").unwrap();
    assert_eq!(Value::String(tagged.digest), first["output_digest"]);
    // Other options: converted again, not served from rows made with other options.
    for extra in [
        &["--vsize", "32"][..],
        &["--oci"][..],
        &["--algorithm", "zstd"][..],
    ] {
        let v = convert(&reg, &db, &repo, long, "l-other", extra);
        assert_eq!(totals(&v, "layers_reused"), 0, "{extra:?}");
        assert_ne!(v["output_digest"], first["output_digest"]);
    }
    // Another repository of the same registry: layers are mounted, not converted.
    let other = format!("dedup-{name}/other");
    seed(&corpus, long, &c, &other);
    let v = convert(&reg, &db, &other, long, "l-obd", &[]);
    assert_eq!(totals(&v, "layers_converted"), 0, "{v:#}");
    assert_eq!(v["output_digest"], first["output_digest"]);
    // The converted image is complete in the other repository.
    let m = c.get_manifest(&other, "l-obd").unwrap();
    let mv: Value = serde_json::from_slice(&m.bytes).unwrap();
    for l in mv["layers"].as_array().unwrap() {
        assert!(c
            .head_blob(&other, l["digest"].as_str().unwrap())
            .unwrap()
            .is_some());
    }
}

#[test]
fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dedup.sqlite");
    scenario(
        vec![
            "--db-type".into(),
            "sqlite".into(),
            "--db-str".into(),
            db.display().to_string(),
        ],
        "sqlite",
    );
}

#[test]
fn mariadb_backend() {
    let Some(m) = TestMariaDb::shared_or_skip() else {
        return;
    };
    let database = m.create_database("convdedup");
    scenario(
        vec![
            "--db-type".into(),
            "mysql".into(),
            "--db-str".into(),
            m.dsn_for(&database),
        ],
        "mariadb",
    );
}

/// A row whose blob was deleted is detected, removed and replaced by a new conversion
/// (OCI layout target: the blob file is simply deleted).
#[test]
fn stale_rows_are_replaced() {
    let Some(corpus) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(&corpus)
            .arg(&layout),
    );
    let db = dir.path().join("d.sqlite");
    let run = |out: &str| -> Value {
        let rep = dir.path().join(format!("{out}.json"));
        run_ok(
            convertor()
                .args([
                    "-r",
                    &format!("oci:{}", layout.display()),
                    "-i",
                    "edge",
                    "-o",
                    out,
                ])
                .args(["--db-type", "sqlite", "--db-str", db.to_str().unwrap()])
                .arg("-d")
                .arg(dir.path().join("tmp"))
                .arg("--report")
                .arg(&rep),
        );
        serde_json::from_slice(&std::fs::read(rep).unwrap()).unwrap()
    };
    let a = run("e1");
    let b = run("e2");
    assert!(b["manifests"][0]["dedup_hit"].as_bool().unwrap());
    // Delete the converted manifest and a converted layer blob.
    let mdig = a["output_digest"].as_str().unwrap();
    let ldig = a["manifests"][0]["layers"][0]["output_digest"]
        .as_str()
        .unwrap();
    std::fs::remove_file(blob(&layout, mdig)).unwrap();
    std::fs::remove_file(blob(&layout, ldig)).unwrap();
    let c = run("e3");
    assert!(!c["manifests"][0]["dedup_hit"].as_bool().unwrap());
    assert_eq!(c["manifests"][0]["layers"][0]["dedup_hit"], false);
    assert_eq!(c["output_digest"], a["output_digest"]);
    assert!(
        blob(&layout, ldig).exists(),
        "the layer was converted and stored again"
    );
    let d = run("e4");
    assert!(d["manifests"][0]["dedup_hit"].as_bool().unwrap());
}

/// A database that is down gives a warning and a normal conversion.
#[test]
fn database_down_means_normal_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("hello");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(testdata().join("upstream/hello-world-layout"))
            .arg(&layout),
    );
    run_ok(
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&layout),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (ty, s) in [
        (
            "mysql",
            format!("obd:s3cretPassw0rd@tcp(127.0.0.1:{port})/dedup"),
        ),
        ("sqlite", "/proc/no/such/dir/x.sqlite".to_string()),
    ] {
        let o = run_ok(
            convertor()
                .args([
                    "-r",
                    &format!("oci:{}", layout.display()),
                    "-i",
                    "amd64",
                    "-o",
                    "obd",
                ])
                .args(["--db-type", ty, "--db-str", &s])
                .arg("-d")
                .arg(dir.path().join("tmp")),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("without dedup"), "{ty}: {err}");
        assert!(
            !err.contains("s3cretPassw0rd"),
            "{ty}: password leaked: {err}"
        );
    }
}
