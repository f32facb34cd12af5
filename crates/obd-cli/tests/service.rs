//! `obdconv serve` end to end: a real `docker-registry` whose notifications point at the
//! service, images pushed with skopeo, the service and its workers as real processes
//! receiving real signals, SQLite as the queue.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::reg::seed;
use common::svc::*;
use common::tree::corpus;
use common::*;
use obd_dedup::testutil::TestMariaDb;
use obd_registry::testutil::{Fault, FlakyProxy, RegistryKind, TestRegistry};
use serde_json::Value;

/// The tags of the corpus pushed in the first scenario: ten images, one of them a
/// multi-arch index.
const TEN: [&str; 10] = [
    "tiny",
    "tiny-arm64",
    "multiarch",
    "edge",
    "edge-zstd",
    "edge-raw",
    "edge-dup",
    "edge-gnu",
    "debian-1l",
    "debian-2l",
];

fn needs_skopeo() -> bool {
    if !have("skopeo") {
        eprintln!("skipping: skopeo not installed");
        return false;
    }
    true
}

fn obd_check(reg: &TestRegistry, repo: &str, tag: &str) {
    let o = obd()
        .args(["check", "--plain", "--source"])
        .arg(reg.reference(repo))
        .args([
            "--source-ref",
            tag,
            "--converted-ref",
            &format!("{tag}_obd"),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "obd check {repo}:{tag}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn manifest_digest(reg: &TestRegistry, repo: &str, tag: &str) -> Option<String> {
    reg.client().get_manifest(repo, tag).ok().map(|m| m.digest)
}

/// Ten pushed images (one multi-arch) get one job each and their converted tag, which
/// `obd check` passes; after the queue drains, our own pushes (and the registry's events
/// for them) create no job for 60 s.
#[test]
fn pushed_images_convert_once_each_and_our_pushes_never_loop() {
    let Some(layout) = corpus() else { return };
    if !needs_skopeo() {
        return;
    }
    let port = free_port();
    let Some(reg) = notifying_registry(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _svc = Service::start(
        "serve",
        port,
        dir.path(),
        &dir.path().join("q.sqlite"),
        &["--plain-registry", &reg.host, "--workers", "2"],
    );
    let t = Instant::now();
    for tag in TEN {
        push(&layout, tag, &reg.host, &format!("ten/{tag}"));
    }
    wait_for(300, "ten conversions", || {
        let j = jobs(port);
        j.len() >= TEN.len() && count(&j, "succeeded") == TEN.len()
    });
    let took = t.elapsed();
    let all = jobs(port);
    assert_eq!(all.len(), TEN.len(), "one job per image: {all:#?}");
    for tag in TEN {
        let repo = format!("ten/{tag}");
        let j: Vec<&Value> = all.iter().filter(|j| j["repository"] == repo).collect();
        assert_eq!(j.len(), 1, "{repo}");
        assert_eq!(j[0]["attempts"], 1);
        let digest = manifest_digest(&reg, &repo, &format!("{tag}_obd")).expect("converted tag");
        assert_eq!(j[0]["output_digest"], digest);
        obd_check(&reg, &repo, tag);
    }
    eprintln!("ten images converted in {:.1} s", took.as_secs_f64());
    // The loop guard: for 60 s after the drain, the events of our own pushes make no job.
    let quiet = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(jobs(port).len(), TEN.len(), "our own pushes became jobs");
    let m = _svc.metrics();
    assert!(
        m.contains("obdconv_webhook_requests_total{source=\"distribution\",outcome=\"ignored\"}"),
        "{m}"
    );
    eprintln!(
        "no new job for {:.0} s after the drain",
        quiet.elapsed().as_secs_f64()
    );
}

/// `kill -9` of the service while one job runs and others wait; after a restart every job
/// completes once, with the digest a clean `convertor` run gives, and a converted tag is
/// never visible before its image is whole.
#[test]
fn kill_9_mid_conversion_then_restart_completes_every_job_once() {
    let Some(layout) = corpus() else { return };
    if !needs_skopeo() {
        return;
    }
    let port = free_port();
    let Some(reg) = notifying_registry(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(
        "serve",
        port,
        dir.path(),
        &dir.path().join("q.sqlite"),
        &[
            "--plain-registry",
            &reg.host,
            "--workers",
            "1",
            "--lease-secs",
            "3",
            "--heartbeat-secs",
            "1",
        ],
    );
    let tags = ["debian", "debian-2l", "edge", "multiarch"];
    for tag in tags {
        push(&layout, tag, &reg.host, &format!("k9/{tag}"));
    }
    wait_for(60, "a running job", || count(&jobs(port), "running") == 1);
    svc.kill9();
    let c = reg.client();
    // Whatever tag exists now is whole: every blob it names is in the registry.
    for tag in tags {
        let repo = format!("k9/{tag}");
        if let Ok(m) = c.get_manifest(&repo, &format!("{tag}_obd")) {
            let v: Value = serde_json::from_slice(&m.bytes).unwrap();
            for l in v["layers"].as_array().into_iter().flatten() {
                assert!(c
                    .head_blob(&repo, l["digest"].as_str().unwrap())
                    .unwrap()
                    .is_some());
            }
        }
    }
    let t = Instant::now();
    svc.restart();
    wait_for(300, "every job after the restart", || {
        count(&jobs(port), "succeeded") == tags.len()
    });
    eprintln!(
        "all jobs done {:.1} s after the restart",
        t.elapsed().as_secs_f64()
    );
    let all = jobs(port);
    assert_eq!(all.len(), tags.len());
    for tag in tags {
        let repo = format!("k9/{tag}");
        let got = manifest_digest(&reg, &repo, &format!("{tag}_obd")).unwrap();
        // A clean run of the same conversion, elsewhere.
        let o = convertor()
            .args([
                "--plain",
                "-r",
                &reg.reference(&repo),
                "-i",
                tag,
                "-o",
                "clean",
            ])
            .args([
                "--target-repository",
                &reg.reference(&format!("clean/{tag}")),
            ])
            .arg("-d")
            .arg(dir.path().join("clean-work"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let clean = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            got, clean,
            "{repo}: the restarted job's output differs from a clean run"
        );
    }
    assert!(
        all.iter()
            .any(|j| j["lease_losses"].as_u64().unwrap() >= 1
                || j["attempts"].as_u64().unwrap() >= 2),
        "the killed run was not taken over: {all:#?}"
    );
    // Leftovers of the killed process's work directory are gone.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != svc.child.id().to_string().as_str())
        .collect();
    assert!(left.is_empty(), "leftover work dirs: {left:?}");
}

/// The service is down for 30 s while images are pushed: the registry keeps retrying its
/// events, and once the service is back they all convert.
#[test]
fn events_sent_while_the_service_is_down_convert_after() {
    let Some(layout) = corpus() else { return };
    if !needs_skopeo() {
        return;
    }
    let port = free_port();
    let Some(reg) = notifying_registry(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(
        "serve",
        port,
        dir.path(),
        &dir.path().join("q.sqlite"),
        &["--plain-registry", &reg.host],
    );
    svc.kill9();
    let down = Instant::now();
    for tag in ["tiny", "edge"] {
        push(&layout, tag, &reg.host, &format!("down/{tag}"));
    }
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    let t = Instant::now();
    svc.restart();
    wait_for(120, "conversions of the events sent while down", || {
        count(&jobs(port), "succeeded") == 2
    });
    eprintln!(
        "down {:.0} s; both converted {:.1} s after the restart",
        30.0,
        t.elapsed().as_secs_f64()
    );
    for tag in ["tiny", "edge"] {
        assert!(manifest_digest(&reg, &format!("down/{tag}"), &format!("{tag}_obd")).is_some());
    }
}

fn event_body(reg: &TestRegistry, repo: &str, tag: &str, digest: &str, mt: &str) -> String {
    serde_json::json!({"events": [{
        "id": "e1", "action": "push",
        "target": {"mediaType": mt, "digest": digest, "size": 1, "repository": repo, "tag": tag,
                   "url": format!("http://{}/v2/{repo}/manifests/{digest}", reg.host)},
        "request": {"host": reg.host, "method": "PUT"}
    }]})
    .to_string()
}

/// The same event three times at once is one job; no token is 401; a database that does
/// not answer is 503, never 2xx; a Harbor webhook and a manual job are taken too.
#[test]
fn duplicates_tokens_and_a_database_that_does_not_answer() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let c = reg.client();
    common::reg::seed(&layout, "amd64", &c, "dup");
    let m = c.get_manifest("dup", "amd64").unwrap();
    let port = free_port();
    let db = dir.path().join("q.sqlite");
    let svc = Service::start(
        "serve",
        port,
        dir.path(),
        &db,
        &["--plain-registry", &reg.host, "--workers", "1"],
    );
    let body = event_body(&reg, "dup", "amd64", &m.digest, &m.media_type);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| request(port, "POST", "/v1/events/distribution", Some(TOKEN), &body))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = Vec::new();
    let mut created = 0;
    for (code, b) in &answers {
        assert_eq!(*code, 200, "{b}");
        let v: Value = serde_json::from_str(b).unwrap();
        ids.push(v["jobs"][0]["id"].as_i64().unwrap());
        created += usize::from(v["jobs"][0]["created"] == true);
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{answers:?}");
    assert_eq!(created, 1);
    wait_for(60, "the job", || count(&jobs(port), "succeeded") == 1);
    assert_eq!(jobs(port).len(), 1);
    // Harbor's webhook, at acceld's path too: the same image under another tag.
    let harbor = serde_json::json!({"type": "PUSH_ARTIFACT", "occur_at": 1, "operator": "admin",
        "event_data": {"resources": [{"digest": m.digest, "tag": "harbor",
            "resource_url": format!("{}/dup:harbor", reg.host)}],
            "repository": {"name": "dup", "namespace": "", "repo_full_name": "dup"}}})
    .to_string();
    let (code, b) = request(port, "POST", "/api/v1/conversions", Some(TOKEN), &harbor);
    assert_eq!(code, 200, "{b}");
    // By hand, by digest.
    let (code, b) = request(
        port,
        "POST",
        "/v1/jobs",
        Some(TOKEN),
        &serde_json::json!({"source": format!("{}/dup@{}", reg.host, m.digest)}).to_string(),
    );
    assert_eq!(code, 202, "{b}");
    wait_for(60, "three jobs", || count(&jobs(port), "succeeded") == 3);
    // No token, a wrong token: 401, and nothing queued.
    for t in [None, Some("wrong-token-wrong-token-wrong")] {
        let (code, _) = request(port, "POST", "/v1/events/distribution", t, &body);
        assert_eq!(code, 401);
        let (code, _) = request(port, "GET", "/v1/jobs", t, "");
        assert_eq!(code, 401);
    }
    assert_eq!(get(port, "/readyz").0, 200);
    // The database does not answer (another process holds its write lock past the busy
    // timeout): 503 for events, never 2xx; /readyz still answers (reads go on in WAL).
    let locker = std::thread::spawn({
        let db = db.clone();
        move || {
            let conn = rusqlite_lock(&db);
            std::thread::sleep(Duration::from_secs(14));
            drop(conn);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let other = event_body(&reg, "dup", "locked", &m.digest, &m.media_type);
    let (code, b) = request(port, "POST", "/v1/events/distribution", Some(TOKEN), &other);
    assert_eq!(code, 503, "{b}");
    locker.join().unwrap();
    let (code, b) = request(port, "POST", "/v1/events/distribution", Some(TOKEN), &other);
    assert_eq!(code, 200, "{b}");
    assert!(svc.metrics().contains("outcome=\"unavailable\"} 1"));
}

/// Holds the write lock of the SQLite file at `db` (an exclusive transaction of another
/// process would do the same) until the returned child is killed.
fn rusqlite_lock(db: &Path) -> std::process::Child {
    // python3's sqlite3 stands for "another process" holding the lock.
    Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\ntime.sleep(13)\n",
        ])
        .arg(db)
        .spawn()
        .unwrap()
}

/// A worker stopped (SIGSTOP) past its lease loses the job to another process; continued
/// (SIGCONT), it notices and never tags, and its lease-loss metric counts it.
#[test]
fn a_stopped_worker_loses_its_lease_and_never_tags() {
    let Some(layout) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    common::reg::seed(&layout, "debian", &c, "stop");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.sqlite");
    let lease = [
        "--lease-secs",
        "3",
        "--heartbeat-secs",
        "1",
        "--plain-registry",
        &reg.host,
    ];
    let (pa, pb) = (free_port(), free_port());
    let a = Service::start(
        "serve",
        pa,
        dir.path(),
        &db,
        &[&lease[..], &["--workers", "1"]].concat(),
    );
    let (code, b) = request(
        pa,
        "POST",
        "/v1/jobs",
        Some(TOKEN),
        &serde_json::json!({"source": format!("{}/stop:debian", reg.host)}).to_string(),
    );
    assert_eq!(code, 202, "{b}");
    wait_for(30, "A to claim", || count(&jobs(pa), "running") == 1);
    a.signal("STOP");
    // B takes the job over once A's lease has expired.
    let b_svc = Service::start(
        "serve",
        pb,
        dir.path(),
        &db,
        &[&lease[..], &["--workers", "1"]].concat(),
    );
    wait_for(120, "B to convert", || count(&jobs(pb), "succeeded") == 1);
    let job = &jobs(pb)[0];
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(job["lease_owner"].is_null());
    assert_eq!(job["lease_losses"], 1);
    a.signal("CONT");
    wait_for(30, "A to notice", || {
        a.metrics().contains("obdconv_lease_losses_total 1")
    });
    std::thread::sleep(Duration::from_secs(2));
    // One tag write only (B's): the registry's access log has a single PUT of the tag.
    let puts = reg
        .log()
        .lines()
        .filter(|l| l.contains("PUT /v2/stop/manifests/debian_obd"))
        .count();
    assert_eq!(puts, 1, "the tag was written {puts} times");
    assert_eq!(count(&jobs(pb), "succeeded"), 1, "A overwrote the outcome");
    drop(b_svc);
}

/// A layer that is not gzip is bad input: dead after one attempt. A registry answering
/// 503 for a while then recovering: failed, then succeeded after backoff. `jobs retry` of
/// the dead job runs it again.
#[test]
fn dead_on_bad_input_backoff_on_503_and_retry() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let c = reg.client();
    common::reg::seed(&layout, "amd64", &c, "good");
    // A bad image: a "gzip" layer of garbage.
    let junk = b"this is not a gzip stream at all, just bytes".to_vec();
    let (ld, _) = c.push_blob_bytes("bad", junk.clone()).unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "0".repeat(64))]}})
    .to_string();
    let (cd, _) = c
        .push_blob_bytes("bad", config.clone().into_bytes())
        .unwrap();
    let man = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": junk.len()}]})
    .to_string();
    c.put_manifest(
        "bad",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        man.as_bytes(),
    )
    .unwrap();
    // The good image behind a proxy that answers 503 to the first seven GETs: more than
    // one attempt's retries (five tries), fewer than two.
    let proxy = FlakyProxy::start(
        &reg.host,
        (0..7).map(|_| Fault::status(503).on("GET")).collect(),
    )
    .unwrap();
    let port = free_port();
    let db = dir.path().join("q.sqlite");
    let _svc = Service::start(
        "serve",
        port,
        dir.path(),
        &db,
        &[
            "--plain-registry",
            &reg.host,
            "--plain-registry",
            &proxy.host,
            "--workers",
            "1",
            "--backoff-ms",
            "200",
        ],
    );
    let good_digest = c.get_manifest("good", "amd64").unwrap().digest;
    let post = |src: String| {
        let (code, b) = request(
            port,
            "POST",
            "/v1/jobs",
            Some(TOKEN),
            &serde_json::json!({"source": src}).to_string(),
        );
        assert_eq!(code, 202, "{b}");
        serde_json::from_str::<Value>(&b).unwrap()["jobs"][0]["id"]
            .as_i64()
            .unwrap()
    };
    let bad = post(format!("{}/bad:v1", reg.host));
    let flaky = post(format!("{}/good@{good_digest}", proxy.host));
    let job = |id: i64| -> Value {
        let (code, b) = request(port, "GET", &format!("/v1/jobs/{id}"), Some(TOKEN), "");
        assert_eq!(code, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    };
    let t = Instant::now();
    wait_for(60, "the bad image to be dead", || {
        job(bad)["state"] == "dead"
    });
    let jb = job(bad);
    assert_eq!(jb["attempts"], 1, "{jb}");
    assert!(
        jb["last_error"].as_str().unwrap().contains("bad input"),
        "{jb}"
    );
    eprintln!("bad input dead in {:.1} s", t.elapsed().as_secs_f64());
    wait_for(120, "the flaky one to succeed", || {
        job(flaky)["state"] == "succeeded"
    });
    let jf = job(flaky);
    assert_eq!(jf["attempts"], 2, "one failed attempt, then success: {jf}");
    eprintln!("503 then success in {:.1} s", t.elapsed().as_secs_f64());
    // `obdconv jobs retry` runs the dead job again (and it is dead again, after one more
    // attempt).
    let o = Command::new(env!("CARGO_BIN_EXE_obdconv"))
        .args(["jobs", "--db-str"])
        .arg(&db)
        .args(["retry", &bad.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    wait_for(60, "the retried job to run", || {
        let j = job(bad);
        j["state"] == "dead" && j["finished_ms"].as_i64() > jb["finished_ms"].as_i64()
    });
    assert_eq!(job(bad)["attempts"], 1);
    eprintln!(
        "jobs retry: dead again {:.1} s later",
        t.elapsed().as_secs_f64()
    );
    // The first run's layer claims were released when it ended (not left to expire).
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the retried run waited for a stale claim"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_obdconv"))
        .args(["jobs", "--db-str"])
        .arg(&db)
        .args(["list", "--state", "dead"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("bad:v1") && text.contains("error:"), "{text}");
    // Retrying a job that is not finished, or that does not exist, is refused.
    let o = Command::new(env!("CARGO_BIN_EXE_obdconv"))
        .args(["jobs", "--db-str"])
        .arg(&db)
        .args(["retry", "999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
}

/// SIGTERM: the service stops taking events, lets the running job finish within the grace
/// period and exits 0.
#[test]
fn sigterm_finishes_the_running_job_and_exits_0() {
    let Some(layout) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    common::reg::seed(&layout, "debian-2l", &c, "term");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut svc = Service::start(
        "serve",
        port,
        dir.path(),
        &dir.path().join("q.sqlite"),
        &["--plain-registry", &reg.host, "--grace-secs", "120"],
    );
    let (code, _) = request(
        port,
        "POST",
        "/v1/jobs",
        Some(TOKEN),
        &serde_json::json!({"source": format!("{}/term:debian-2l", reg.host)}).to_string(),
    );
    assert_eq!(code, 202);
    wait_for(30, "the job to run", || count(&jobs(port), "running") == 1);
    svc.signal("TERM");
    let st = svc.child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", svc.log_text());
    assert!(
        manifest_digest(&reg, "term", "debian-2l_obd").is_some(),
        "{}",
        svc.log_text()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_obdconv"))
        .args(["jobs", "--db-str"])
        .arg(dir.path().join("q.sqlite"))
        .args(["list", "--json"])
        .output()
        .unwrap();
    let j: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(j["state"], "succeeded");
}

/// The queue in a real MariaDB: a pushed image converts; with the server killed, events are
/// 503 and `/readyz` is 503, never 2xx; once it is back, the events the registry kept
/// retrying convert.
#[test]
fn on_mariadb_events_are_503_while_it_is_down_then_convert() {
    let Some(layout) = corpus() else { return };
    if !needs_skopeo() {
        return;
    }
    let Some(db) = TestMariaDb::start_or_skip() else {
        return;
    };
    let dsn = db.dsn_for(&db.create_database("svc"));
    let port = free_port();
    let Some(reg) = notifying_registry(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_on(
        "serve",
        port,
        dir.path(),
        ("mysql", &dsn),
        &["--plain-registry", &reg.host],
    );
    push(&layout, "tiny", &reg.host, "maria/tiny");
    wait_for(60, "tiny on MariaDB", || {
        count(&jobs(port), "succeeded") == 1
    });
    db.kill();
    let m = reg.client().get_manifest("maria/tiny", "tiny").unwrap();
    let body = event_body(&reg, "maria/tiny", "again", &m.digest, &m.media_type);
    let t = Instant::now();
    let (code, b) = request(port, "POST", "/v1/events/distribution", Some(TOKEN), &body);
    assert_eq!(code, 503, "{b}");
    eprintln!(
        "503 in {:.2} s with MariaDB down",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(get(port, "/readyz").0, 503);
    assert!(svc.metrics().contains("obdconv_up 0"));
    push(&layout, "edge", &reg.host, "maria/edge");
    std::thread::sleep(Duration::from_secs(5));
    db.start_again();
    assert_eq!(get(port, "/readyz").0, 200);
    wait_for(120, "edge, from the retried event", || {
        let j = jobs(port);
        j.iter()
            .any(|j| j["repository"] == "maria/edge" && j["state"] == "succeeded")
    });
    assert!(reg.client().get_manifest("maria/edge", "edge_obd").is_ok());
}

/// Per-registry TLS knobs and the credential lookup `convertor` uses: a TLS registry with
/// htpasswd auth, trusted with `--registry-root-ca HOST=FILE`, credentials from a docker
/// config; a CA file that does not exist is exit 2 before anything starts.
#[test]
fn serve_on_a_tls_registry_with_per_registry_ca_and_docker_config() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::TlsBasic) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let c = reg.client();
    common::reg::seed(&layout, "amd64", &c, "tls");
    let digest = c.get_manifest("tls", "amd64").unwrap().digest;
    let cr = reg.credentials.clone().unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", cr.username, cr.password))
    };
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {reg.host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let ca = format!("{}={}", reg.host, reg.ca_cert.as_ref().unwrap().display());
    // A CA file that does not exist: refused at start.
    let o = Command::new(env!("CARGO_BIN_EXE_obdconv"))
        .args([
            "worker",
            "--registry-root-ca",
            &format!("{}=/nonexistent.crt", reg.host),
        ])
        .arg("--db-str")
        .arg(dir.path().join("x.sqlite"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let port = free_port();
    let mut svc = Service::start(
        "serve",
        port,
        dir.path(),
        &dir.path().join("q.sqlite"),
        &["--registry-root-ca", &ca, "--workers", "1"],
    );
    svc.restart_with_env(&[("DOCKER_CONFIG", docker.to_str().unwrap())]);
    let (code, b) = request(
        port,
        "POST",
        "/v1/jobs",
        Some(TOKEN),
        &serde_json::json!({"source": format!("{}/tls@{digest}", reg.host)}).to_string(),
    );
    assert_eq!(code, 202, "{b}");
    wait_for(60, "the TLS job", || count(&jobs(port), "succeeded") == 1);
    drop(svc);
}

/// The operators' knobs do what `--help` says: `--deadline-secs` ends a run that takes too
/// long (recorded as a failure and retried), `--max-attempts 1` makes the first transient
/// failure final.
#[test]
fn deadline_and_max_attempts_knobs() {
    let Some(layout) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    seed(&layout, "edge", &c, "knobs");
    let digest = c.get_manifest("knobs", "edge").unwrap().digest;
    let dir = tempfile::tempdir().unwrap();
    // One service per knob; returns the job of `host/knobs@digest` once it is dead.
    let dead_job = |host: &str, knobs: &[&str]| -> Value {
        let port = free_port();
        let sub = dir.path().join(port.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        let _svc = Service::start(
            "serve",
            port,
            &sub,
            &sub.join("q.sqlite"),
            &[&["--plain-registry", host, "--backoff-ms", "100"], knobs].concat(),
        );
        let (code, b) = request(
            port,
            "POST",
            "/v1/jobs",
            Some(TOKEN),
            &serde_json::json!({"source": format!("{host}/knobs@{digest}")}).to_string(),
        );
        assert_eq!(code, 202, "{b}");
        let id = serde_json::from_str::<Value>(&b).unwrap()["jobs"][0]["id"]
            .as_i64()
            .unwrap();
        let job = || -> Value {
            let (_, b) = request(port, "GET", &format!("/v1/jobs/{id}"), Some(TOKEN), "");
            serde_json::from_str(&b).unwrap()
        };
        wait_for(60, "the job to be dead", || job()["state"] == "dead");
        job()
    };
    // Every blob GET crawls at 32 KiB/s: the 3.3 MB layer cannot arrive within 2 s; with
    // --max-attempts 2 the deadline failure is retried once, then dead.
    let slow = FlakyProxy::start(
        &reg.host,
        (0..50)
            .map(|_| Fault::throttle(32 << 10).on("GET").path("/blobs/"))
            .collect(),
    )
    .unwrap();
    let t = Instant::now();
    let js = dead_job(&slow.host, &["--deadline-secs", "2", "--max-attempts", "2"]);
    assert!(
        js["last_error"]
            .as_str()
            .unwrap()
            .contains("deadline of 2 s"),
        "{js}"
    );
    assert_eq!(js["attempts"], 2, "{js}");
    let took = js["finished_ms"].as_i64().unwrap() - js["started_ms"].as_i64().unwrap();
    assert!((2000..6000).contains(&took), "the last run took {took} ms");
    eprintln!(
        "deadline: dead after 2 runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Every GET fails with 503 for a while: with --max-attempts 1 the first failure is final.
    let failing = FlakyProxy::start(
        &reg.host,
        (0..50).map(|_| Fault::status(503).on("GET")).collect(),
    )
    .unwrap();
    let t = Instant::now();
    let jf = dead_job(&failing.host, &["--max-attempts", "1"]);
    assert_eq!(jf["attempts"], 1, "{jf}");
    assert!(jf["last_error"].as_str().unwrap().contains("503"), "{jf}");
    eprintln!(
        "max-attempts 1: dead after 1 run in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
