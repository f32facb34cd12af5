//! Load: 20 conversions at once against one registry and one MariaDB database. Every one
//! finishes with the manifest a lone conversion gives; peak RSS and open file descriptors
//! of each convertor stay bounded (sampled from /proc while it runs; peak RSS from
//! `/usr/bin/time -v` when available).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::reg::seed;
use common::rel::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};

const N: usize = 20;
/// Bounds per convertor process.
const MAX_RSS_KB: u64 = 768 << 10;
const MAX_FDS: usize = 256;

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The convertor's pid: `pid` itself, or its child when wrapped in `time`.
fn inner_pid(pid: u32, wrapped: bool) -> Option<u32> {
    if !wrapped {
        return Some(pid);
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn twenty_conversions_at_once() {
    let Some(corpus) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let Some(db) = Db::mariadb("load") else {
        return;
    };
    let c = reg.client();
    let images = ["tiny", "edge"];
    // A lone clean conversion of each (no database) gives the expected digests.
    let mut clean = Vec::new();
    for img in images {
        seed(&corpus, img, &c, &format!("load/{img}-0"));
        let mut a = reg_args(&reg, &reg.host, &format!("load/{img}-0"));
        a.extend(["-i", img, "-o", "clean"].map(String::from));
        let o = run(&a);
        assert!(o.status.success(), "{}", text(&o));
        clean.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    let jobs: Vec<(usize, String)> = (0..N)
        .map(|i| {
            (
                i % images.len(),
                format!("load/{}-{}", images[i % 2], 1 + i / 2),
            )
        })
        .collect();
    for (k, repo) in &jobs {
        seed(&corpus, images[*k], &c, repo);
    }
    let time_v = std::path::Path::new("/usr/bin/time").exists();
    let work = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut children = Vec::new();
    for (i, (k, repo)) in jobs.iter().enumerate() {
        let mut a = reg_args(&reg, &reg.host, repo);
        a.extend(["-i", images[*k], "-o", "obd"].map(String::from));
        a.extend(db.args());
        a.push("-d".into());
        a.push(work.path().join(format!("w{i}")).display().to_string());
        let mut cmd = if time_v {
            let mut t = Command::new("/usr/bin/time");
            t.arg("-v").arg(env!("CARGO_BIN_EXE_convertor"));
            t
        } else {
            Command::new(env!("CARGO_BIN_EXE_convertor"))
        };
        let out = std::fs::File::create(work.path().join(format!("o{i}"))).unwrap();
        let err = std::fs::File::create(work.path().join(format!("e{i}"))).unwrap();
        let child = cmd
            .args(&a)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        children.push(child);
    }
    // Sample RSS and fds of every running convertor until all have exited.
    let mut peak_rss = [0u64; N];
    let mut peak_fds = [0usize; N];
    let mut status = [None; N];
    while status.iter().any(Option::is_none) {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "load: not done in 10 minutes"
        );
        for (i, ch) in children.iter_mut().enumerate() {
            if status[i].is_some() {
                continue;
            }
            if let Some(pid) = inner_pid(ch.id(), time_v) {
                if let Some(k) = status_kb(pid, "VmHWM:") {
                    peak_rss[i] = peak_rss[i].max(k);
                }
                if let Some(n) = fds(pid) {
                    peak_fds[i] = peak_fds[i].max(n);
                }
            }
            if let Some(st) = ch.try_wait().unwrap() {
                status[i] = Some(st);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed();
    for (i, (k, repo)) in jobs.iter().enumerate() {
        let out = std::fs::read_to_string(work.path().join(format!("o{i}"))).unwrap();
        let err = std::fs::read_to_string(work.path().join(format!("e{i}"))).unwrap();
        assert!(status[i].unwrap().success(), "job {i} ({repo}): {err}");
        assert_eq!(out.trim(), clean[*k], "job {i} ({repo}): digest");
        assert_eq!(
            tag_digest(&c, repo, "obd").as_deref(),
            Some(clean[*k].as_str())
        );
        if time_v {
            let kb: u64 = err
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("Maximum resident set size (kbytes): ")
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            peak_rss[i] = peak_rss[i].max(kb);
        }
    }
    let (layers, manifests) = db.rows();
    assert!(manifests.len() >= N, "manifest rows: {}", manifests.len());
    for l in &layers {
        assert!(l.starts_with("sha256:"));
    }
    let max_rss = *peak_rss.iter().max().unwrap();
    let max_fds = *peak_fds.iter().max().unwrap();
    let mean_rss = peak_rss.iter().sum::<u64>() / N as u64;
    eprintln!(
        "load: {N} conversions ({}x tiny, {}x edge) in {wall:.1?}; peak RSS per process: max {} MiB, mean {} MiB; max open fds {max_fds}; {} layer rows, {} manifest rows",
        N / 2,
        N / 2,
        max_rss >> 10,
        mean_rss >> 10,
        layers.len(),
        manifests.len()
    );
    assert!(max_rss < MAX_RSS_KB, "peak RSS {max_rss} kB");
    assert!(max_fds < MAX_FDS, "{max_fds} fds open");
}
