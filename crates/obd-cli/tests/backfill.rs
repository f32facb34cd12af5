//! `obdconv backfill` end to end: a real `docker-registry` whose catalog pages are capped
//! (`catalog: maxentries: 7`) holding 500 tags in 50 repositories, backfilled through the
//! catalog with include/exclude globs into a SQLite queue; again (nothing new); and from a
//! file of references, with a dry run, a missing tag and the usage and I/O exit codes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::reg::{copy_manifest, layout_index_entry};
use common::*;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

fn obdconv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_obdconv"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The tags of every repository: seven to convert, two excluded by `*:skip*`, and one that
/// looks like our output (the loop guard ignores it).
const TAGS: [&str; 10] = [
    "v1", "v2", "v3", "v4", "v5", "v6", "v7", "skip1", "skip2", "v1_obd",
];

/// 25 `apps/svcNN` (included) and 25 `appsx/libNN` (not matched by `HOST/apps/*`), each the
/// hello-world amd64 image under the ten [`TAGS`]. Returns the registry and the digest.
fn registry_with_500_tags(layout: &Path) -> Option<(TestRegistry, String)> {
    let mut reg = TestRegistry::start_or_skip(RegistryKind::Plain)?;
    reg.append_config("catalog:\n  maxentries: 7\n").unwrap();
    let c = reg.client();
    let m = layout_index_entry(layout, "amd64");
    let (digest, mt) = (
        m["digest"].as_str().unwrap().to_string(),
        m["mediaType"].as_str().unwrap().to_string(),
    );
    let bytes = std::fs::read(blob(layout, &digest)).unwrap();
    for i in 0..25 {
        for repo in [format!("apps/svc{i:02}"), format!("appsx/lib{i:02}")] {
            copy_manifest(layout, &digest, &mt, &c, &repo, None);
            for t in TAGS {
                c.put_manifest(&repo, t, &mt, &bytes).unwrap();
            }
        }
    }
    Some((reg, digest))
}

/// `obdconv jobs list --json` on `db`: (repository, tag, digest) of every job.
fn jobs_in(db: &Path) -> BTreeSet<(String, String, String)> {
    let o = run_ok(
        obdconv()
            .args(["jobs", "list", "--json", "--limit", "1000", "--db-str"])
            .arg(db),
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let j: Value = serde_json::from_str(l).unwrap();
            assert_eq!(j["state"], "queued", "{j}");
            (
                j["repository"].as_str().unwrap().to_string(),
                j["tag"].as_str().unwrap_or("").to_string(),
                j["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn catalog_page_sizes(reg: &TestRegistry) -> Vec<String> {
    reg.log()
        .lines()
        .filter_map(|l| {
            let i = l.find("GET /v2/_catalog?")?;
            let q = l[i..].split_whitespace().nth(1)?;
            Some(q.split("n=").nth(1)?.split('&').next()?.to_string())
        })
        .collect()
}

#[test]
fn backfill_a_registry_catalog_then_again() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let Some((reg, digest)) = registry_with_500_tags(&layout) else {
        return;
    };
    let seeded = t0.elapsed();
    let host = reg.host.clone();
    let db = dir.path().join("jobs.sqlite");
    let include = format!("{host}/apps/*");
    let args = |extra: &[&str]| {
        let mut c = obdconv();
        c.args(["backfill", "--registry", &host, "--plain-registry", &host])
            .args(["--include", &include, "--exclude", "*:skip*", "--db-str"])
            .arg(&db)
            .args(extra);
        c
    };

    let t1 = Instant::now();
    let o = run_ok(&mut args(&["--page-size", "5"]));
    let first = t1.elapsed();
    let (out, err) = text(&o);
    assert_eq!(
        out.trim(),
        "backfill: 500 seen, 200 matched, 175 enqueued, 0 already queued, 25 ignored (our output 25), 0 errors",
        "stderr: {err}"
    );
    // 50 repositories in pages of 5.
    let sizes = catalog_page_sizes(&reg);
    assert_eq!(sizes.len(), 10, "{sizes:?}");
    assert!(sizes.iter().all(|s| s == "5"), "{sizes:?}");

    let want: BTreeSet<(String, String, String)> = (0..25)
        .flat_map(|i| {
            let digest = digest.clone();
            TAGS[..7]
                .iter()
                .map(move |t| (format!("apps/svc{i:02}"), t.to_string(), digest.clone()))
        })
        .collect();
    assert_eq!(want.len(), 175);
    assert_eq!(jobs_in(&db), want);

    // Again, with the default page size (100 is above maxentries: refused, then halved
    // until the registry takes it): nothing new.
    let before = catalog_page_sizes(&reg).len();
    let o = run_ok(&mut args(&[]));
    let (out, _) = text(&o);
    assert_eq!(
        out.trim(),
        "backfill: 500 seen, 200 matched, 0 enqueued, 175 already queued, 25 ignored (our output 25), 0 errors"
    );
    let sizes = catalog_page_sizes(&reg)[before..].to_vec();
    assert_eq!(&sizes[..4], ["100", "50", "25", "12"], "{sizes:?}");
    assert!(sizes[4..].iter().all(|s| s == "6"), "{sizes:?}");
    assert_eq!(jobs_in(&db).len(), 175);

    // A dry run lists what it would enqueue and writes nothing.
    let db2 = dir.path().join("dry.sqlite");
    let o = run_ok(
        obdconv()
            .args([
                "backfill",
                "--dry-run",
                "--registry",
                &host,
                "--plain-registry",
                &host,
            ])
            .args(["--include", &format!("{host}/apps/svc0[0]*")])
            .args(["--include", &format!("{host}/apps/svc01:v?"), "--db-str"])
            .arg(&db2),
    );
    let (out, _) = text(&o);
    let lines: Vec<&str> = out.lines().collect();
    // `[` is not special: only svc01's v1..v7 (and not v1_obd, ignored) are planned.
    assert_eq!(
        lines.last().unwrap(),
        &"backfill (dry run): 500 seen, 7 matched, 7 would be enqueued, 0 ignored, 0 errors"
    );
    assert_eq!(
        lines[0],
        format!("{host}/apps/svc01:v1@{digest} -> {host}/apps/svc01:v1_obd")
    );
    assert!(jobs_in(&db2).is_empty());
    eprintln!(
        "seeded 500 tags in {seeded:?}; first backfill {first:?}; total {:?}",
        t0.elapsed()
    );
}

#[test]
fn backfill_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let m = layout_index_entry(&layout, "amd64");
    let (digest, mt) = (
        m["digest"].as_str().unwrap(),
        m["mediaType"].as_str().unwrap(),
    );
    let bytes = std::fs::read(blob(&layout, digest)).unwrap();
    for repo in ["apps/web", "apps/db", "other/x"] {
        copy_manifest(&layout, digest, mt, &c, repo, None);
        for t in ["v1", "v2", "skip-me", "v1_obd"] {
            c.put_manifest(repo, t, mt, &bytes).unwrap();
        }
    }
    let host = &reg.host;
    let refs = dir.path().join("refs.txt");
    std::fs::write(
        &refs,
        format!(
            "# images pushed before obdconv serve\n\
             {host}/apps/web:v1\n\
             {host}/apps/web:v2   # trailing comment\n\
             \n\
             {host}/apps/db@{digest}\n\
             {host}/apps/db:skip-me\n\
             {host}/apps/db:v1_obd\n\
             {host}/other/x:v1\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("jobs.sqlite");
    let backfill = |file: &Path, extra: &[&str]| {
        obdconv()
            .args(["backfill", "--plain-registry", host, "--file"])
            .arg(file)
            .args(["--include", &format!("{host}/apps/*")])
            .args(["--exclude", "*:skip*", "--db-str"])
            .arg(&db)
            .args(extra)
            .output()
            .unwrap()
    };

    // Dry run first: the plan, nothing enqueued.
    let o = backfill(&refs, &["--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let want_plan = [
        format!("{host}/apps/web:v1@{digest} -> {host}/apps/web:v1_obd"),
        format!("{host}/apps/web:v2@{digest} -> {host}/apps/web:v2_obd"),
        format!(
            "{host}/apps/db@{digest} -> {host}/apps/db:sha256-{}_obd",
            &digest[7..19]
        ),
        "backfill (dry run): 6 seen, 4 matched, 3 would be enqueued, 1 ignored (our output 1), 0 errors"
            .to_string(),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want_plan);
    assert!(jobs_in(&db).is_empty());

    let o = backfill(&refs, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        out.trim(),
        "backfill: 6 seen, 4 matched, 3 enqueued, 0 already queued, 1 ignored (our output 1), 0 errors"
    );
    let d = digest.to_string();
    let want: BTreeSet<(String, String, String)> =
        [("apps/web", "v1"), ("apps/web", "v2"), ("apps/db", "")]
            .into_iter()
            .map(|(r, t)| (r.to_string(), t.to_string(), d.clone()))
            .collect();
    assert_eq!(jobs_in(&db), want);

    // A tag that does not exist and a bad line: reported, the rest enqueued, exit 4.
    let more = dir.path().join("more.txt");
    std::fs::write(
        &more,
        format!("{host}/apps/web:v1\n{host}/apps/web:gone\n{host}/apps/db\n{host}/apps/db:v2\n"),
    )
    .unwrap();
    let o = backfill(&more, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}{err}");
    assert_eq!(
        out.trim(),
        "backfill: 3 seen, 3 matched, 1 enqueued, 1 already queued, 0 ignored, 2 errors"
    );
    assert!(err.contains(&format!("{host}/apps/web:gone")), "{err}");
    assert!(
        err.contains("more.txt:3") && err.contains("neither :TAG nor @DIGEST"),
        "{err}"
    );
    assert!(err.contains("run again"), "{err}");
    assert_eq!(jobs_in(&db).len(), 4);

    // Usage (no source) is 2; a missing file is 4; an unreachable registry is 6.
    let o = obdconv()
        .args(["backfill", "--db-str"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("--registry HOST"), "{:?}", text(&o));
    let o = backfill(&dir.path().join("nope.txt"), &[]);
    assert_eq!(o.status.code(), Some(4), "{:?}", text(&o));
    assert!(text(&o).1.contains("cannot read --file"), "{:?}", text(&o));
    let dead = format!("127.0.0.1:{}", common::svc::free_port());
    let o = obdconv()
        .args([
            "backfill",
            "--registry",
            &dead,
            "--plain-registry",
            &dead,
            "--db-str",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains(&format!("listing the catalog of {dead}")),
        "{err}"
    );
}

#[test]
fn backfill_into_mariadb_is_idempotent_too() {
    let Some(m) = obd_dedup::testutil::TestMariaDb::shared_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let e = layout_index_entry(&layout, "amd64");
    let (digest, mt) = (
        e["digest"].as_str().unwrap(),
        e["mediaType"].as_str().unwrap(),
    );
    let bytes = std::fs::read(blob(&layout, digest)).unwrap();
    for repo in ["apps/a", "apps/b"] {
        copy_manifest(&layout, digest, mt, &c, repo, None);
        for t in ["v1", "v2", "v3"] {
            c.put_manifest(repo, t, mt, &bytes).unwrap();
        }
    }
    let dsn = m.dsn_for(&m.create_database("backfill"));
    let host = &reg.host;
    let backfill = || {
        let o = run_ok(
            obdconv()
                .args(["backfill", "--registry", host, "--plain-registry", host])
                .args(["--exclude", "*:v3", "--db-type", "mysql", "--db-str", &dsn]),
        );
        text(&o).0.trim().to_string()
    };
    assert_eq!(
        backfill(),
        "backfill: 6 seen, 4 matched, 4 enqueued, 0 already queued, 0 ignored, 0 errors"
    );
    assert_eq!(
        backfill(),
        "backfill: 6 seen, 4 matched, 0 enqueued, 4 already queued, 0 ignored, 0 errors"
    );
    let o = run_ok(obdconv().args([
        "jobs",
        "list",
        "--json",
        "--db-type",
        "mysql",
        "--db-str",
        &dsn,
    ]));
    let tags: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let j: Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                j["repository"].as_str().unwrap(),
                j["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        tags.into_iter().collect::<Vec<_>>(),
        ["apps/a:v1", "apps/a:v2", "apps/b:v1", "apps/b:v2"]
    );
}
