//! SIGINT/SIGTERM during each stage of a registry conversion (download, apply, commit,
//! upload): the convertor stops within a second with exit 130, removes its work directory
//! (keeps it with `--reserve`), leaves the target tag and the dedup rows consistent; a rerun
//! then succeeds. The stage is found from the convertor's per-stage log lines, or held open
//! by a slow proxy.

mod common;

use std::path::Path;
use std::time::Duration;

use common::reg::seed;
use common::rel::*;
use obd_registry::testutil::{Fault, FlakyProxy, RegistryKind, TestRegistry};

enum When {
    /// While the proxy holds a request (matched by `Fault`).
    Held(Fault),
    /// Right after a stderr line containing all of these.
    Line(Vec<&'static str>),
}

#[allow(clippy::too_many_arguments)]
fn interrupt(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    stage: &str,
    when: When,
    sig: &str,
    reserve: bool,
    db: &Db,
    before: &str,
) {
    let proxy = FlakyProxy::start(
        &reg.host,
        match &when {
            When::Held(f) => vec![f.clone()],
            When::Line(_) => vec![],
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut a = reg_args(reg, &proxy.host, repo);
    a.extend(["-i", tag, "-o", "target"].map(String::from));
    a.extend(db.args());
    let mut cmd = common::convertor();
    cmd.args(&a).arg("-d").arg(work.path());
    if reserve {
        cmd.arg("--reserve");
    }
    let mut w = Watched::spawn(cmd);
    let pid = w.child.id();
    let reached = match &when {
        When::Held(_) => {
            let t = std::time::Instant::now();
            while proxy.faults_served() == 0 && t.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The held request is on the wire now.
            std::thread::sleep(Duration::from_millis(50));
            proxy.faults_served() > 0
        }
        When::Line(words) => w.wait_line(Duration::from_secs(120), |l| {
            words.iter().all(|x| l.contains(x))
        }),
    };
    assert!(reached, "{stage}: the stage was never reached");
    w.signal(sig);
    let (st, took, log) = w.finish(Duration::from_secs(10));
    let name = format!(
        "SIG{sig} during {stage}{}",
        if reserve { " --reserve" } else { "" }
    );
    assert!(
        took < Duration::from_secs(1),
        "{name}: took {took:?} to stop\n{log}"
    );
    assert_eq!(st.code(), Some(130), "{name}: {st}\n{log}");
    let run_dir = work.path().join(format!("obdconv-{pid}"));
    if reserve {
        assert!(run_dir.exists(), "{name}: --reserve removed the work dir");
    } else {
        assert!(!run_dir.exists(), "{name}: work dir left behind");
    }
    let c = reg.client();
    assert_eq!(
        tag_digest(&c, repo, "target").as_deref(),
        Some(before),
        "{name}: the tag moved"
    );
    let (layers, manifests) = db.rows();
    assert!(manifests.is_empty(), "{name}: manifest row {manifests:?}");
    for l in &layers {
        assert!(
            c.head_blob(repo, l).unwrap().is_some(),
            "{name}: row for a missing blob"
        );
    }
    let finished: Vec<&str> = log.lines().filter(|l| l.contains(" bytes in ")).collect();
    eprintln!(
        "{name}: exit 130 in {took:.2?}; stages finished before: {}",
        finished.len()
    );
}

fn layer_path(corpus: &Path, tag: &str, i: usize) -> &'static str {
    let m = common::layout_manifest(corpus, tag);
    let d = m["layers"][i]["digest"].as_str().unwrap().to_string();
    Box::leak(d.into_boxed_str())
}

#[test]
fn interrupted_at_every_stage() {
    let Some(corpus) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let tag = if std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        "edge"
    } else {
        "debian"
    };
    let c = reg.client();
    let repo = "interrupt/app";
    seed(&corpus, tag, &c, repo);
    // The target tag points at something else before: it must stay there.
    let src = c.get_manifest(repo, tag).unwrap();
    c.put_manifest(repo, "target", &src.media_type, &src.bytes)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::sqlite(dir.path());
    let first = layer_path(&corpus, tag, 0);
    let n = common::layout_manifest(&corpus, tag)["layers"]
        .as_array()
        .unwrap()
        .len();
    let l1 = format!("layer 1/{n}");
    let l1: &'static str = Box::leak(l1.into_boxed_str());
    interrupt(
        &reg,
        repo,
        tag,
        "download",
        When::Held(Fault::delay(Duration::from_secs(30)).on("GET").path(first)),
        "INT",
        false,
        &db,
        &src.digest,
    );
    interrupt(
        &reg,
        repo,
        tag,
        "apply",
        When::Line(vec![l1, ": download "]),
        "TERM",
        false,
        &db,
        &src.digest,
    );
    interrupt(
        &reg,
        repo,
        tag,
        "commit",
        When::Line(vec![l1, ": apply "]),
        "INT",
        false,
        &db,
        &src.digest,
    );
    interrupt(
        &reg,
        repo,
        tag,
        "upload",
        When::Held(
            Fault::delay(Duration::from_secs(30))
                .on("PUT")
                .path("/blobs/"),
        ),
        "TERM",
        false,
        &db,
        &src.digest,
    );
    interrupt(
        &reg,
        repo,
        tag,
        "commit",
        When::Line(vec![l1, ": apply "]),
        "TERM",
        true,
        &db,
        &src.digest,
    );
    // A rerun (same database) converts and tags.
    let mut a = reg_args(&reg, &reg.host, repo);
    a.extend(["-i", tag, "-o", "target"].map(String::from));
    a.extend(db.args());
    let o = run(&a);
    assert!(o.status.success(), "rerun: {}", text(&o));
    let d = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(tag_digest(&c, repo, "target"), Some(d.clone()));
    assert_eq!(db.rows().1, vec![d]);
    eprintln!("rerun after the interruptions: converted and tagged");
}
