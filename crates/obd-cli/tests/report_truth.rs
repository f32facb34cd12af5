//! The report, the summary and the progress bars tell the truth: a blob the registry already
//! had is "skipped", not uploaded in 0.00 s; images are written `repo:tag` and
//! `repo@sha256:…`; a manifest reused from the dedup database still lists its layers;
//! `--report -` writes to stdout; the last line names the full target, its digest, sizes
//! and time; and a bar's total is fixed while its position moves up to it.

mod common;

use std::process::Command;

use common::reg::{conv, seed};
use common::tree::corpus;
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

fn stdout_json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the report ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn layers(v: &Value) -> Vec<Value> {
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["layers"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn skipped_uploads_references_dedup_reuse_and_the_last_line() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let c = reg.client();
    seed(&layout, "amd64", &c, "truth");
    let repo = reg.reference("truth");

    // First conversion: every layer is really sent; stdout holds only the report.
    let o = conv(
        &reg,
        &["-r", &repo, "-i", "amd64", "-o", "one", "--report", "-"],
    );
    let v = stdout_json(&o);
    assert_eq!(v["source"], format!("{repo}:amd64"));
    assert_eq!(v["target"], format!("{repo}:one"));
    let first = layers(&v);
    assert!(!first.is_empty());
    for l in &first {
        assert_eq!(l["upload"]["bytes"], l["output_size"], "{l}");
    }
    assert!(v["totals"]["bytes_uploaded"].as_u64().unwrap() > 0);
    let digest = c.get_manifest("truth", "one").unwrap().digest;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains(&format!("{repo}:one@{digest}"))
            && last.contains(" in, ")
            && last.contains(" s)"),
        "last line: {last}"
    );

    // Again under another tag: the registry has every layer, nothing is sent, and the
    // report and the last line say so.
    let o = conv(
        &reg,
        &[
            "-r",
            &format!("{repo}@{}", v["source_digest"].as_str().unwrap()),
            "-o",
            "two",
            "--report",
            "-",
        ],
    );
    let v = stdout_json(&o);
    assert_eq!(
        v["source"],
        format!("{repo}@{}", v["source_digest"].as_str().unwrap())
    );
    for l in layers(&v) {
        assert_eq!(
            l["upload"],
            serde_json::json!({"skipped": "already present"}),
            "{l}"
        );
    }
    assert_eq!(v["totals"]["bytes_uploaded"], 0);
    assert_eq!(v["totals"]["uploads_skipped"], first.len());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("0 B uploaded") && last.contains("already there"),
        "last line: {last}"
    );

    // With a dedup database, a second conversion reuses the manifest and still lists its
    // layers, each reused, with the output digests the registry holds.
    let db = dir.path().join("dedup.sqlite");
    let db_args = |tag: &'static str| {
        vec![
            "-r".to_string(),
            repo.clone(),
            "-i".into(),
            "amd64".into(),
            "-o".into(),
            tag.into(),
            "--db-type".into(),
            "sqlite".into(),
            "--db-str".into(),
            db.display().to_string(),
            "--report".into(),
            "-".into(),
        ]
    };
    let a: Vec<String> = db_args("three");
    let _ = stdout_json(&conv(
        &reg,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let a: Vec<String> = db_args("four");
    let v = stdout_json(&conv(
        &reg,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let m = &v["manifests"][0];
    assert_eq!(m["dedup_hit"], true, "{v}");
    let got: Value =
        serde_json::from_slice(&c.get_manifest("truth", "four").unwrap().bytes).unwrap();
    let listed = m["layers"].as_array().unwrap();
    assert_eq!(listed.len(), got["layers"].as_array().unwrap().len(), "{v}");
    for (r, l) in listed.iter().zip(got["layers"].as_array().unwrap()) {
        assert_eq!(r["output_digest"], l["digest"]);
        assert_eq!(r["dedup_hit"], true);
        assert!(r["source_digest"].as_str().unwrap().starts_with("sha256:"));
    }
    assert_eq!(m["config_digest"], got["config"]["digest"]);
    assert_eq!(v["totals"]["layers_reused"], listed.len());
}

/// Under a terminal (a pty from `script`), each bar's total stays what the stage began
/// with (the compressed size for download and apply), and its position never passes it.
#[test]
fn progress_bar_totals_are_fixed_and_never_passed() {
    let Some(layout) = corpus() else { return };
    if !have("script") {
        eprintln!("skipping: script (util-linux) not installed");
        return;
    }
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    seed(&layout, "debian-2l", &c, "bars");
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} -r {} -i debian-2l -o obd --plain --db-type none -d {}",
        env!("CARGO_BIN_EXE_convertor"),
        reg.reference("bars"),
        dir.path().join("w").display()
    );
    let o = run_ok(
        Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("NO_COLOR"),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let m: Value =
        serde_json::from_slice(&c.get_manifest("bars", "debian-2l").unwrap().bytes).unwrap();
    let n = m["layers"].as_array().unwrap().len();
    // "<digest> layer i/n <stage> [bar] <pos>/<total> <rate> <elapsed>"
    let mut seen: std::collections::HashMap<(String, String), String> = Default::default();
    let mut frames = 0;
    for frame in out.split(['\r', '\n']) {
        let Some(at) = frame.find(" layer ") else {
            continue;
        };
        let words: Vec<&str> = frame[at..].split_whitespace().collect();
        let (layer, stage) = (words[1].to_string(), words[2].to_string());
        if !matches!(stage.as_str(), "download" | "apply") {
            continue;
        }
        // After the bar: "12.3 MiB/45.6 MiB  <rate> <elapsed>".
        let Some(close) = frame.find(']') else {
            continue;
        };
        let Some((pos, total)) = frame[close + 1..].split_once('/') else {
            continue;
        };
        let pos = pos.trim();
        let total = total
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        frames += 1;
        let t = seen
            .entry((layer.clone(), stage.clone()))
            .or_insert(total.clone());
        assert_eq!(
            *t, total,
            "layer {layer} {stage}: the total moved ({frame})"
        );
        assert!(
            bytes(pos) <= bytes(&total),
            "layer {layer} {stage}: {pos} is past {total} ({frame})"
        );
    }
    assert!(frames > 0, "no bars drawn: {out}");
    assert!(
        seen.keys().filter(|(_, s)| s == "apply").count() == n,
        "an apply bar for each of {n} layers: {seen:?}"
    );
}

/// indicatif's binary sizes ("1.50 MiB") in bytes.
fn bytes(s: &str) -> f64 {
    let mut w = s.split_whitespace();
    let n: f64 = w.next().unwrap().parse().unwrap();
    let unit = match w.next().unwrap_or("B") {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => panic!("unit {u}"),
    };
    n * unit
}
