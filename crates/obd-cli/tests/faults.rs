//! Registry faults end to end: `convertor` through a fault-injecting proxy (`FlakyProxy`)
//! in front of a real `docker-registry`, with an SQLite dedup database. Transient faults
//! are retried and give the same manifest as a clean conversion; persistent ones fail with
//! a clear error, leave the target tag where it was and no manifest row behind. Stalls are
//! cut by `--read-timeout` and the upload deadline, then handled like other transient faults.

mod common;

use std::time::{Duration, Instant};

use common::reg::seed;
use common::rel::*;
use obd_registry::testutil::{Fault, FlakyProxy, RegistryKind, TestRegistry};

struct Setup {
    reg: TestRegistry,
    corpus: std::path::PathBuf,
    repo: String,
    tag: &'static str,
    clean: String,
    /// More convertor flags for the faulty runs (`--read-timeout 2`).
    extra: Vec<String>,
}

/// A registry with corpus `tag` seeded and its clean conversion's digest.
fn setup(kind: RegistryKind, tag: &'static str) -> Option<Setup> {
    let corpus = corpus()?;
    let reg = TestRegistry::start_or_skip(kind)?;
    let c = reg.client();
    let repo = format!("faults/{tag}");
    seed(&corpus, tag, &c, &repo);
    let mut a = reg_args(&reg, &reg.host, &repo);
    a.extend(["-i", tag, "-o", "clean"].map(String::from));
    let o = run(&a);
    assert!(o.status.success(), "clean: {}", text(&o));
    let clean = String::from_utf8_lossy(&o.stdout).trim().to_string();
    Some(Setup {
        reg,
        corpus,
        repo,
        tag,
        clean,
        extra: Vec::new(),
    })
}

impl Setup {
    /// Converts through `host` (a proxy) into `target:out` with database `db`. Each
    /// scenario has its own target repository, so that every blob is uploaded again.
    fn convert(
        &self,
        host: &str,
        target: &str,
        out: &str,
        db: &Db,
    ) -> (std::process::Output, Duration) {
        let mut a = reg_args(&self.reg, host, &self.repo);
        a.extend(["-i", self.tag, "-o", out].map(String::from));
        a.push("--target-repository".into());
        a.push(format!("{host}/{target}"));
        a.extend(db.args());
        a.extend(self.extra.iter().cloned());
        let t = Instant::now();
        let o = run(&a);
        (o, t.elapsed())
    }

    /// A transient fault: the conversion must succeed with the clean digest.
    fn retried(&self, name: &str, faults: Vec<Fault>) -> Duration {
        let n = faults.len();
        let proxy = FlakyProxy::start(&self.reg.host, faults).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::sqlite(dir.path());
        let target = format!("out/{name}");
        let (o, took) = self.convert(&proxy.host, &target, "obd", &db);
        let c = self.reg.client();
        assert_same_as_clean(name, &o, &c, &target, "obd", &self.clean);
        assert_eq!(proxy.faults_served(), n, "{name}: every fault was hit");
        let (_, manifests) = db.rows();
        assert_eq!(manifests, vec![self.clean.clone()], "{name}: manifest row");
        eprintln!("{name}: retried, converted in {took:.1?}");
        took
    }

    /// A persistent fault: the conversion fails with exit `code` naming `cause`; the target
    /// tag (set beforehand to a different image) does not move. Returns how long it took.
    fn fails(&self, name: &str, faults: Vec<Fault>, codes: &[i32], cause: &str) -> Duration {
        let c = self.reg.client();
        let target = format!("out/{name}");
        // The target tag exists already, pointing at another image.
        seed(&self.corpus, self.tag, &c, &target);
        let m = c.get_manifest(&target, self.tag).unwrap();
        c.put_manifest(&target, "obd", &m.media_type, &m.bytes)
            .unwrap();
        let proxy = FlakyProxy::start(&self.reg.host, faults).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::sqlite(dir.path());
        let (o, took) = self.convert(&proxy.host, &target, "obd", &db);
        assert_failed(
            name,
            &o,
            codes,
            cause,
            &c,
            &target,
            "obd",
            Some(&m.digest),
            &db,
        );
        let last = String::from_utf8_lossy(&o.stderr)
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_string();
        eprintln!(
            "{name}: failed as expected in {took:.1?}, exit {:?}: {last}",
            o.status.code()
        );
        took
    }
}

fn many(f: Fault, n: usize) -> Vec<Fault> {
    vec![f; n]
}

/// Status codes, Retry-After, dropped connections, slow answers: retried.
#[test]
fn transient_statuses_are_retried() {
    let Some(s) = setup(RegistryKind::Plain, "tiny") else {
        return;
    };
    s.retried(
        "manifest-get-500",
        vec![Fault::status(500).on("GET").path("/manifests/")],
    );
    s.retried(
        "blob-get-502-503",
        vec![
            Fault::status(502).on("GET").path("/blobs/"),
            Fault::status(503).on("GET").path("/blobs/"),
        ],
    );
    s.retried("upload-start-503", vec![Fault::status(503).on("POST")]);
    s.retried(
        "blob-put-500",
        vec![Fault::status(500).on("PUT").path("/blobs/")],
    );
    s.retried(
        "manifest-put-502",
        vec![Fault::status(502).on("PUT").path("/manifests/")],
    );
    let took = s.retried(
        "429-retry-after",
        vec![Fault::retry_after(429, 2).on("HEAD")],
    );
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );
    s.retried(
        "connection-dropped",
        vec![
            Fault::close().on("HEAD"),
            Fault::close().on("PUT").path("/manifests/"),
        ],
    );
    let took = s.retried(
        "slow",
        vec![
            Fault::delay(Duration::from_millis(1500))
                .on("GET")
                .path("/blobs/"),
            Fault::delay(Duration::from_millis(1500))
                .on("PUT")
                .path("/blobs/"),
        ],
    );
    assert!(took >= Duration::from_secs(3));
}

/// Blob bodies reset or truncated half-way (downloads), uploads reset half-way: the
/// download resumes with a ranged GET, the upload restarts.
#[test]
fn bodies_cut_mid_blob_are_resumed() {
    let Some(s) = setup(RegistryKind::Plain, "edge") else {
        return;
    };
    s.retried(
        "reset-mid-blob",
        vec![Fault::reset_mid_body().on("GET").path("/blobs/")],
    );
    s.retried(
        "truncated-blob",
        vec![Fault::truncate_body().on("GET").path("/blobs/")],
    );
    s.retried(
        "twice-cut",
        vec![
            Fault::reset_mid_body().on("GET").path("/blobs/"),
            Fault::truncate_body().on("GET").path("/blobs/"),
        ],
    );
    // 1 KiB: less than any layer blob, whichever is pushed first (a body shorter than the
    // cut would not be reset but held, a stall, which only the upload deadline ends).
    s.retried(
        "reset-mid-upload",
        vec![Fault::cut_request(1 << 10).on("PUT").path("/blobs/")],
    );
}

/// Faults that do not go away: a clear error, exit 6 (I/O), the tag unchanged.
#[test]
fn persistent_faults_fail_cleanly() {
    let Some(s) = setup(RegistryKind::Plain, "tiny") else {
        return;
    };
    s.fails(
        "blob-get-503-forever",
        many(Fault::status(503).on("GET").path("/blobs/"), 12),
        &[6],
        "503",
    );
    s.fails(
        "manifest-put-500-forever",
        many(Fault::status(500).on("PUT").path("/manifests/"), 12),
        &[6],
        "500",
    );
    s.fails(
        "upload-reset-forever",
        many(Fault::close().on("PUT").path("/blobs/"), 40),
        &[6],
        "upload",
    );
    s.fails(
        "blob-truncated-forever",
        many(Fault::truncate_body().on("GET").path("/blobs/"), 12),
        &[6],
        "blob",
    );
}

/// A registry that accepts a request and then stalls (sends nothing, stops half-way
/// through a body, stops reading an upload) is given up on after `--read-timeout` (uploads:
/// their size-based deadline) and retried; one that keeps stalling fails in bounded time
/// with an error naming the timeout, exit 6, the tag unchanged.
#[test]
fn stalls_time_out() {
    let Some(mut s) = setup(RegistryKind::Plain, "tiny") else {
        return;
    };
    s.extra = vec!["--read-timeout".into(), "2".into()];
    let bound = Duration::from_secs(20);
    for (name, fault) in [
        (
            "manifest-get-stall",
            Fault::stall().on("GET").path("/manifests/"),
        ),
        ("blob-get-stall", Fault::stall().on("GET").path("/blobs/")),
        (
            "blob-body-stall",
            Fault::stall_mid_body().on("GET").path("/blobs/"),
        ),
        (
            "blob-put-stall",
            Fault::stall_request(4 << 10).on("PUT").path("/blobs/"),
        ),
    ] {
        let took = s.retried(name, vec![fault]);
        assert!(took >= Duration::from_secs(2), "{name}: {took:?}");
        assert!(took < bound, "{name}: took {took:?}");
    }
    // 5 attempts of 2 s, 3.75 s of backoff: about 14 s
    let took = s.fails(
        "blob-get-stall-forever",
        many(Fault::stall().on("GET").path("/blobs/"), 12),
        &[6],
        "read timeout",
    );
    assert!(took < Duration::from_secs(45), "took {took:?}");
    let took = s.fails(
        "blob-body-stall-forever",
        many(Fault::stall_mid_body().on("GET").path("/blobs/"), 12),
        &[6],
        "read timeout",
    );
    assert!(took < Duration::from_secs(45), "took {took:?}");
    // 5 attempts of 2 x 2 s + size / 128 KiB/s, 3.75 s of backoff
    let took = s.fails(
        "blob-put-stall-forever",
        many(Fault::stall_request(4 << 10).on("PUT").path("/blobs/"), 40),
        &[6],
        "deadline",
    );
    assert!(took < Duration::from_secs(90), "took {took:?}");
}

/// A token endpoint that fails now and then is retried; one that keeps failing is a clear
/// error.
#[test]
fn token_endpoint_failures() {
    let Some(s) = setup(RegistryKind::Token, "tiny") else {
        return;
    };
    let c = s.reg.client();
    s.reg.fail_token_requests([500, 0, 503]);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::sqlite(dir.path());
    let (o, _) = s.convert(&s.reg.host, "out/token-flaky", "obd", &db);
    assert_same_as_clean("token-flaky", &o, &c, "out/token-flaky", "obd", &s.clean);
    eprintln!("token-flaky: retried");

    let before = tag_digest(&c, &s.repo, "clean");
    s.reg.fail_token_requests([500; 40]);
    let sub = dir.path().join("x");
    std::fs::create_dir_all(&sub).unwrap();
    let db = Db::sqlite(&sub);
    let (o, took) = s.convert(&s.reg.host, &s.repo, "clean", &db);
    s.reg.clear_token_faults();
    assert_failed(
        "token-500-forever",
        &o,
        &[6],
        "token",
        &s.reg.client(),
        &s.repo,
        "clean",
        before.as_deref(),
        &db,
    );
    eprintln!(
        "token-500-forever: failed as expected in {took:.1?}, exit {:?}",
        o.status.code()
    );
}

/// The registry is killed while a blob upload is held, and comes back: the upload is
/// retried and the conversion completes; a registry that stays down fails cleanly.
#[test]
fn registry_restart_mid_push() {
    let Some(mut s) = setup(RegistryKind::Plain, "edge") else {
        return;
    };
    let proxy = FlakyProxy::start(
        &s.reg.host,
        vec![Fault::delay(Duration::from_millis(300))
            .on("PUT")
            .path("/blobs/")],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::sqlite(dir.path());
    let mut a = reg_args(&s.reg, &proxy.host, &s.repo);
    a.extend(["-i", s.tag, "-o", "obd", "--target-repository"].map(String::from));
    a.push(format!("{}/out/restart", proxy.host));
    a.extend(db.args());
    let wd = tempfile::tempdir().unwrap();
    let mut child = common::convertor()
        .args(&a)
        .arg("-d")
        .arg(wd.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first blob PUT is being held: kill the registry under it, bring it back later.
    let t = Instant::now();
    while proxy.faults_served() == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no upload seen");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    s.reg.kill();
    std::thread::sleep(Duration::from_millis(800));
    s.reg.start_again().unwrap();
    let o = child.wait_with_output().unwrap();
    let c = s.reg.client();
    assert_same_as_clean("restart-mid-push", &o, &c, "out/restart", "obd", &s.clean);
    eprintln!("restart-mid-push: retried");

    // Down for good: killed while the upload is held.
    let proxy = FlakyProxy::start(
        &s.reg.host,
        vec![Fault::delay(Duration::from_millis(300))
            .on("PUT")
            .path("/blobs/")],
    )
    .unwrap();
    let mut a = reg_args(&s.reg, &proxy.host, &s.repo);
    a.extend(["-i", s.tag, "-o", "obd", "--target-repository"].map(String::from));
    a.push(format!("{}/out/gone", proxy.host));
    let c = s.reg.client();
    seed(&s.corpus, s.tag, &c, "out/gone");
    let m = c.get_manifest("out/gone", s.tag).unwrap();
    c.put_manifest("out/gone", "obd", &m.media_type, &m.bytes)
        .unwrap();
    let db2 = Db::sqlite(wd.path());
    a.extend(db2.args());
    let child = common::convertor()
        .args(&a)
        .arg("-d")
        .arg(dir.path().join("w"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while proxy.faults_served() == 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no upload seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.reg.kill();
    let o = child.wait_with_output().unwrap();
    s.reg.start_again().unwrap();
    let c = s.reg.client();
    assert_failed(
        "registry-gone-mid-push",
        &o,
        &[6],
        "127.0.0.1",
        &c,
        "out/gone",
        "obd",
        Some(&m.digest),
        &db2,
    );
    eprintln!(
        "registry-gone-mid-push: failed as expected, exit {:?}",
        o.status.code()
    );
}
