//! Reliability helpers (faults, hostile images, interruption, secrets, load): the corpus,
//! dedup databases whose rows can be counted, outcome checks, and a convertor run that
//! watches its stage lines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obd_dedup::testutil::TestMariaDb;
use obd_registry::testutil::TestRegistry;
use obd_registry::Client;

use super::convertor;

/// The corpus layout (`$OBD_CORPUS`); `None` (skip) outside CI when unset.
pub fn corpus() -> Option<PathBuf> {
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

/// A dedup database a test can pass to the convertor and count the rows of.
pub enum Db {
    Sqlite(PathBuf),
    Maria(Arc<TestMariaDb>, String),
}

impl Db {
    pub fn sqlite(dir: &Path) -> Db {
        Db::Sqlite(dir.join("dedup.sqlite"))
    }

    /// A fresh database in the shared MariaDB (skips like [`TestMariaDb::shared_or_skip`]).
    pub fn mariadb(hint: &str) -> Option<Db> {
        let m = TestMariaDb::shared_or_skip()?;
        let name = m.create_database(hint);
        Some(Db::Maria(m, name))
    }

    /// `--db-type T --db-str S`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Db::Sqlite(p) => vec![
                "--db-type".into(),
                "sqlite".into(),
                "--db-str".into(),
                p.display().to_string(),
            ],
            Db::Maria(m, db) => vec![
                "--db-type".into(),
                "mysql".into(),
                "--db-str".into(),
                m.dsn_for(db),
            ],
        }
    }

    /// `(layer rows' output digests, manifest rows' output digests)`.
    pub fn rows(&self) -> (Vec<String>, Vec<String>) {
        match self {
            Db::Sqlite(p) => {
                if !p.exists() {
                    return (Vec::new(), Vec::new());
                }
                let c = rusqlite::Connection::open(p).unwrap();
                let q = |sql: &str| -> Vec<String> {
                    match c.prepare(sql) {
                        Ok(mut st) => st
                            .query_map([], |r| r.get::<_, String>(0))
                            .unwrap()
                            .map(|r| r.unwrap())
                            .collect(),
                        // No table yet: no rows.
                        Err(_) => Vec::new(),
                    }
                };
                (
                    q("SELECT data_digest FROM overlaybd_layers"),
                    q("SELECT out_digest FROM overlaybd_manifests"),
                )
            }
            Db::Maria(m, db) => {
                use mysql::prelude::Queryable;
                let mut c = m.user_conn(db);
                let mut q = |sql: &str| -> Vec<String> { c.query(sql).unwrap_or_default() };
                (
                    q("SELECT data_digest FROM overlaybd_layers"),
                    q("SELECT out_digest FROM overlaybd_manifests"),
                )
            }
        }
    }
}

/// The digest `repo:tag` points at, `None` if the tag does not exist.
pub fn tag_digest(c: &Client, repo: &str, tag: &str) -> Option<String> {
    match c.get_manifest(repo, tag) {
        Ok(m) => Some(m.digest),
        Err(obd_registry::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading {repo}:{tag}: {e}"),
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A failed conversion: exit code one of `codes`, stderr names `cause` (case-insensitive),
/// the tag still points at `before`, no manifest row, and every layer row points at a blob
/// the registry has (rows are only written after their blob is in the registry).
#[allow(clippy::too_many_arguments)]
pub fn assert_failed(
    name: &str,
    o: &Output,
    codes: &[i32],
    cause: &str,
    c: &Client,
    repo: &str,
    tag: &str,
    before: Option<&str>,
    db: &Db,
) {
    let code = o.status.code();
    assert!(
        code.is_some_and(|c| codes.contains(&c)),
        "{name}: wanted exit {codes:?}: {}",
        text(o)
    );
    let err = String::from_utf8_lossy(&o.stderr).to_ascii_lowercase();
    assert!(
        err.contains(&cause.to_ascii_lowercase()),
        "{name}: stderr does not name {cause:?}: {}",
        text(o)
    );
    assert!(!err.contains("panicked"), "{name}: panic: {}", text(o));
    assert_eq!(
        tag_digest(c, repo, tag).as_deref(),
        before,
        "{name}: the tag moved"
    );
    let (layers, manifests) = db.rows();
    assert!(
        manifests.is_empty(),
        "{name}: manifest rows {manifests:?} after a failure"
    );
    for l in &layers {
        assert!(
            c.head_blob(repo, l).unwrap().is_some(),
            "{name}: layer row {l} points at a missing blob"
        );
    }
}

/// A conversion that succeeded with the same manifest as a clean run.
pub fn assert_same_as_clean(
    name: &str,
    o: &Output,
    c: &Client,
    repo: &str,
    tag: &str,
    clean: &str,
) {
    assert!(o.status.success(), "{name}: {}", text(o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        clean,
        "{name}: printed digest"
    );
    assert_eq!(
        tag_digest(c, repo, tag).as_deref(),
        Some(clean),
        "{name}: tagged digest differs from a clean conversion"
    );
}

/// `-r`, `-u`, `--plain` for a registry, with `host` (a proxy, say) in place of its own.
pub fn reg_args(reg: &TestRegistry, host: &str, repo: &str) -> Vec<String> {
    let mut a = vec!["-r".to_string(), format!("{host}/{repo}")];
    if reg.options().plain_http {
        a.push("--plain".into());
    }
    if let Some(ca) = &reg.ca_cert {
        a.push("--root-ca".into());
        a.push(ca.display().to_string());
    }
    if let Some(cr) = &reg.credentials {
        a.push("-u".into());
        a.push(format!("{}:{}", cr.username, cr.password));
    }
    a
}

/// Runs the convertor with `args` and a fresh work dir; returns its output.
pub fn run(args: &[String]) -> Output {
    let wd = tempfile::tempdir().unwrap();
    convertor()
        .args(args)
        .arg("-d")
        .arg(wd.path().join("tmp"))
        .output()
        .unwrap()
}

/// A convertor running in the background whose stderr lines are collected as they come.
pub struct Watched {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (l2, err) = (lines.clone(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                l2.lock().unwrap().push(l);
            }
        });
        Watched {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits (up to `timeout`) for a stderr line matching `pred`; false if the process
    /// ended or the time ran out first.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let t = Instant::now();
        loop {
            if self.lines.lock().unwrap().iter().any(|l| pred(l)) {
                return true;
            }
            if t.elapsed() > timeout || self.child.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the exit (at most `timeout`, else kills and panics); returns the exit
    /// status, how long it took, and every stderr line.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, Duration, String) {
        let t = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "convertor did not stop within {timeout:?}:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t.elapsed();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let all = self.lines.lock().unwrap().join("\n");
        (st, took, all)
    }

    /// Sends `sig` (`INT`, `TERM`) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}
