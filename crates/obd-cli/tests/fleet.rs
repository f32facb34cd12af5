//! Fleet scale: several `obdconv worker` processes sharing one real MariaDB (jobs, dedup
//! rows and layer claims in one database) and one real registry.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::reg::seed;
use common::svc::*;
use common::tree::corpus;
use common::*;
use obd_dedup::testutil::TestMariaDb;
use obd_registry::testutil::{Fault, FlakyProxy, RegistryKind, TestRegistry};
use obd_registry::Client;
use serde_json::{json, Value};

/// A gzip layer tar holding `/id.txt` with `text`; (blob, diff_id).
fn own_layer(dir: &Path, text: &str) -> (Vec<u8>, String) {
    let root = dir.join(format!("layer-{}", sha256_hex(text.as_bytes())));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("id.txt"), text).unwrap();
    let tar = root.with_extension("tar");
    run_ok(
        Command::new("tar")
            .args([
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
            ])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("id.txt"),
    );
    let raw = std::fs::read(&tar).unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&raw));
    run_ok(Command::new("gzip").args(["-n", "-f"]).arg(&tar));
    (
        std::fs::read(tar.with_extension("tar.gz")).unwrap(),
        diff_id,
    )
}

/// `repo:v1`: the base image's layers (mounted from `base_repo`) plus one own layer.
fn derived_image(
    c: &Client,
    dir: &Path,
    base_repo: &str,
    base: &Value,
    config: &Value,
    repo: &str,
) {
    for l in base["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        assert!(c.mount_blob(repo, base_repo, d).unwrap(), "mount {d}");
    }
    let (blob, diff_id) = own_layer(dir, repo);
    let size = blob.len();
    let (ld, _) = c.push_blob_bytes(repo, blob).unwrap();
    let mut cfg = config.clone();
    cfg["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(diff_id));
    if let Some(h) = cfg["history"].as_array_mut() {
        h.push(json!({"created_by": format!("own layer of {repo}")}));
    }
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let cfg_len = cfg.len();
    let (cd, _) = c.push_blob_bytes(repo, cfg).unwrap();
    let mut m = base.clone();
    m["config"]["digest"] = json!(cd);
    m["config"]["size"] = json!(cfg_len);
    let gz = if m["mediaType"]
        .as_str()
        .unwrap_or_default()
        .contains("docker")
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    m["layers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"mediaType": gz, "digest": ld, "size": size}));
    let mt = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    c.put_manifest(repo, "v1", &mt, &serde_json::to_vec(&m).unwrap())
        .unwrap();
}

/// `obdconv jobs list --json` on the MariaDB `dsn`: every job, newest first.
fn jobs_in(dsn: &str) -> Vec<Value> {
    let o = obdconv()
        .args(["jobs", "--db-type", "mysql", "--db-str", dsn])
        .args(["list", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn obdconv() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_obdconv"));
    c.env_remove("OBDCONV_DB_TYPE");
    c
}

/// Three worker processes × two workers, twenty repositories holding one 3-layer base plus
/// an own layer each: every image converts once, each base layer is converted once in the
/// whole fleet (the others wait for its row, then mount it), and no job ever had two
/// leases.
#[test]
fn three_workers_twenty_images_one_conversion_per_base_layer() {
    let Some(layout) = corpus() else { return };
    let Some(db) = TestMariaDb::shared_or_skip() else {
        return;
    };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dsn = db.dsn_for(&db.create_database("fleet"));
    let dir = tempfile::tempdir().unwrap();
    let c = reg.client();
    seed(&layout, "edge", &c, "base");
    let base: Value =
        serde_json::from_slice(&c.get_manifest("base", "edge").unwrap().bytes).unwrap();
    assert_eq!(
        base["layers"].as_array().unwrap().len(),
        3,
        "a 3-layer base"
    );
    let config: Value = serde_json::from_slice(
        &c.get_blob_bytes("base", base["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let repos: Vec<String> = (0..20).map(|i| format!("fleet/app{i:02}")).collect();
    for r in &repos {
        derived_image(&c, dir.path(), "base", &base, &config, r);
    }
    let refs = dir.path().join("refs.txt");
    std::fs::write(
        &refs,
        repos
            .iter()
            .map(|r| format!("{}/{r}:v1\n", reg.host))
            .collect::<String>(),
    )
    .unwrap();
    let db_args = ["--db-type", "mysql", "--db-str", &dsn];
    let o = obdconv()
        .arg("backfill")
        .args(db_args)
        .args(["--plain-registry", &reg.host, "--file"])
        .arg(&refs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    let workers: Vec<(std::process::Child, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let log = dir.path().join(format!("worker{i}.log"));
            let child = obdconv()
                .args(["--verbose", "--log-format", "json", "worker"])
                .args(db_args)
                .args([
                    "--plain-registry",
                    &reg.host,
                    "--workers",
                    "2",
                    "--exit-when-empty",
                ])
                .arg("--work-dir")
                .arg(dir.path().join("work"))
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    let mut logs = Vec::new();
    for (mut child, log) in workers {
        let st = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(st.success(), "worker exited {st}: {text}");
        logs.push(text);
    }
    let took = t.elapsed();
    // Every image once, succeeded, on its first attempt.
    let jobs = jobs_in(&dsn);
    assert_eq!(jobs.len(), 20);
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
        assert!(c
            .get_manifest(j["repository"].as_str().unwrap(), "v1_obd")
            .is_ok());
    }
    // Conversions per layer position, over the whole fleet, from the JSON logs.
    let mut applied: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<i64, std::collections::BTreeSet<String>> = HashMap::new();
    let mut processes_with_jobs = 0;
    for text in &logs {
        let mut had = false;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let msg = v["message"].as_str().unwrap_or_default();
            if let Some(at) = msg.find(" layer ") {
                if msg.contains(" applied: ") {
                    let pos = msg[at + 7..].split_whitespace().next().unwrap().to_string();
                    *applied.entry(pos).or_default() += 1;
                }
            }
            if msg == "claimed" || msg == "lease renewed" {
                let id = v["job"].as_i64().unwrap();
                tokens
                    .entry(id)
                    .or_default()
                    .insert(v["lease"].as_str().unwrap().to_string());
                had = true;
            }
            if msg.contains("succeeded in") {
                // Every line of a job carries its id.
                assert!(
                    v["span"]["id"].is_number() || v["spans"].is_array(),
                    "{line}"
                );
            }
        }
        processes_with_jobs += usize::from(had);
    }
    for base_layer in ["1/4", "2/4", "3/4"] {
        assert_eq!(
            applied.get(base_layer).copied().unwrap_or(0),
            1,
            "base layer {base_layer} converted more than once in the fleet: {applied:?}"
        );
    }
    assert_eq!(applied.get("4/4").copied(), Some(20), "{applied:?}");
    assert_eq!(tokens.len(), 20);
    assert!(
        tokens.values().all(|t| t.len() == 1),
        "a job had two leases: {tokens:?}"
    );
    assert!(processes_with_jobs >= 2, "the work was not shared");
    eprintln!(
        "20 images through 3 processes × 2 workers in {:.1} s; layers applied per position: {applied:?}",
        took.as_secs_f64()
    );
}

/// `kill -9` of a worker process in the middle of an upload: after its lease expires, the
/// job finishes on another process, with the digest of a clean run.
#[test]
fn a_worker_killed_mid_upload_is_finished_by_another() {
    let Some(layout) = corpus() else { return };
    let Some(db) = TestMariaDb::shared_or_skip() else {
        return;
    };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dsn = db.dsn_for(&db.create_database("killup"));
    let dir = tempfile::tempdir().unwrap();
    let c = reg.client();
    seed(&layout, "edge", &c, "up");
    // The first three blob uploads through the proxy (the three layers) crawl at 128 KiB/s:
    // the worker is killed in them.
    let proxy = FlakyProxy::start(
        &reg.host,
        (0..3)
            .map(|_| Fault::throttle(128 << 10).on("PUT").path("/blobs/uploads/"))
            .collect(),
    )
    .unwrap();
    let db_args = ["--db-type", "mysql", "--db-str", &dsn];
    let o = obdconv()
        .arg("backfill")
        .args(db_args)
        .args(["--plain-registry", &proxy.host, "--file"])
        .arg({
            let f = dir.path().join("refs.txt");
            std::fs::write(&f, format!("{}/up:edge\n", proxy.host)).unwrap();
            f
        })
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let worker = |name: &str| {
        obdconv()
            .arg("worker")
            .args(db_args)
            .args(["--plain-registry", &proxy.host, "--workers", "1"])
            .args(["--lease-secs", "3", "--heartbeat-secs", "1"])
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .stderr(std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap()
    };
    let mut a = worker("a");
    let t = Instant::now();
    // The throttled connection carries the first blob upload.
    wait_for(60, "the first upload to start", || {
        proxy.faults_served() >= 1
    });
    std::thread::sleep(Duration::from_millis(1000));
    let _ = a.kill();
    let _ = a.wait();
    let killed = t.elapsed();
    let mut b = worker("b");
    let jobs = || jobs_in(&dsn);
    wait_for(120, "the other worker to finish the job", || {
        jobs().first().is_some_and(|j| j["state"] == "succeeded")
    });
    let _ = b.kill();
    let _ = b.wait();
    let j = &jobs()[0];
    assert_eq!(j["attempts"], 2, "{j}");
    assert_eq!(j["lease_losses"], 1, "{j}");
    let got = c.get_manifest("up", "edge_obd").unwrap().digest;
    let o = convertor()
        .args([
            "--plain",
            "-r",
            &reg.reference("up"),
            "-i",
            "edge",
            "-o",
            "clean",
        ])
        .args(["--target-repository", &reg.reference("clean/up")])
        .arg("-d")
        .arg(dir.path().join("clean"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(got, String::from_utf8_lossy(&o.stdout).trim());
    eprintln!(
        "killed {:.1} s into the job, mid-upload; finished by the other process {:.1} s later",
        killed.as_secs_f64(),
        (t.elapsed() - killed).as_secs_f64()
    );
}

/// MariaDB stopped for 30 s under load: no job is lost, no worker whose lease expired in
/// the meantime writes a tag, and everything completes once the database is back.
#[test]
fn mariadb_down_for_30_s_under_load_loses_nothing() {
    let Some(layout) = corpus() else { return };
    let Some(db) = TestMariaDb::start_or_skip() else {
        return;
    };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dsn = db.dsn_for(&db.create_database("outage"));
    let dir = tempfile::tempdir().unwrap();
    let c = reg.client();
    seed(&layout, "edge", &c, "base");
    let base: Value =
        serde_json::from_slice(&c.get_manifest("base", "edge").unwrap().bytes).unwrap();
    let config: Value = serde_json::from_slice(
        &c.get_blob_bytes("base", base["config"]["digest"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let repos: Vec<String> = (0..10).map(|i| format!("out/app{i:02}")).collect();
    for r in &repos {
        derived_image(&c, dir.path(), "base", &base, &config, r);
    }
    // Uploads crawl (512 KiB/s) so that conversions are running when the database goes.
    let proxy = FlakyProxy::start(
        &reg.host,
        (0..40)
            .map(|_| Fault::throttle(512 << 10).on("PUT").path("/blobs/uploads/"))
            .collect(),
    )
    .unwrap();
    let refs = dir.path().join("refs.txt");
    std::fs::write(
        &refs,
        repos
            .iter()
            .map(|r| format!("{}/{r}:v1\n", proxy.host))
            .collect::<String>(),
    )
    .unwrap();
    let db_args = ["--db-type", "mysql", "--db-str", &dsn];
    let o = obdconv()
        .arg("backfill")
        .args(db_args)
        .args(["--plain-registry", &proxy.host, "--file"])
        .arg(&refs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let workers: Vec<(std::process::Child, std::path::PathBuf)> = (0..2)
        .map(|i| {
            let log = dir.path().join(format!("w{i}.log"));
            let child = obdconv()
                .args(["--verbose", "--log-format", "json", "worker"])
                .args(db_args)
                .args(["--plain-registry", &proxy.host, "--workers", "2"])
                .args([
                    "--lease-secs",
                    "3",
                    "--heartbeat-secs",
                    "1",
                    "--backoff-ms",
                    "200",
                ])
                .arg("--work-dir")
                .arg(dir.path().join("work"))
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    wait_for(60, "uploads under way", || proxy.faults_served() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    db.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    db.start_again();
    eprintln!("MariaDB was down {:.1} s", down.elapsed().as_secs_f64());
    let jobs = || jobs_in(&dsn);
    let t = Instant::now();
    wait_for(240, "every job after the outage", || {
        let j = jobs();
        j.len() == 10 && j.iter().all(|j| j["state"] == "succeeded")
    });
    eprintln!(
        "all 10 done {:.1} s after the restart",
        t.elapsed().as_secs_f64()
    );
    let mut logs = Vec::new();
    for (mut child, log) in workers {
        let _ = child.kill();
        let _ = child.wait();
        logs.push(std::fs::read_to_string(log).unwrap());
    }
    let all = jobs();
    for j in &all {
        let repo = j["repository"].as_str().unwrap();
        assert_eq!(
            c.get_manifest(repo, "v1_obd").unwrap().digest,
            j["output_digest"].as_str().unwrap()
        );
    }
    // Fencing: in each process, once a job's lease was found lost, that run wrote no tag.
    let mut fenced = 0;
    for text in &logs {
        let mut lost: std::collections::HashSet<(i64, i64)> = Default::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let msg = v["message"].as_str().unwrap_or_default();
            let span = &v["span"];
            let (Some(id), Some(attempt)) = (span["id"].as_i64(), span["attempt"].as_i64()) else {
                continue;
            };
            if msg.contains("stopping before any further write") {
                lost.insert((id, attempt));
                fenced += 1;
            }
            if msg.starts_with("tagged ") {
                assert!(
                    !lost.contains(&(id, attempt)),
                    "job {id} attempt {attempt} tagged after its lease was lost: {line}"
                );
            }
        }
    }
    let reruns = all
        .iter()
        .filter(|j| j["attempts"].as_u64().unwrap() > 1)
        .count();
    eprintln!("{fenced} run(s) fenced during the outage; {reruns} job(s) ran again");
    assert!(fenced + reruns > 0, "the outage hit no running job");
}
