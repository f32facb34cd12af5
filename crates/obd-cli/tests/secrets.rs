//! No password or token in the output, at any verbosity: the registry password (plain and
//! as the Basic header), Bearer tokens (JWTs), the MariaDB password of `--db-str`, in stderr
//! with `--verbose` and `RUST_LOG=trace`, in stdout, in the JSON report and in errors.

mod common;

use obd_dedup::testutil::TestMariaDb;
use obd_registry::testutil::{RegistryKind, TestRegistry, TEST_PASSWORD, TEST_USER};

use common::reg::seed;
use common::rel::*;

fn b64(s: &str) -> String {
    use std::fmt::Write;
    // Standard base64, enough for a needle.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for ch in b.chunks(3) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, x)| a | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= ch.len() {
                out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char)
                    .unwrap();
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs the convertor with `env` and `args`; returns stdout + stderr + the report.
fn captured(args: &[String], env: &[(&str, &str)], report: bool) -> (Option<i32>, String) {
    let wd = tempfile::tempdir().unwrap();
    let rep = wd.path().join("report.json");
    let mut c = common::convertor();
    c.args(args).arg("-d").arg(wd.path().join("tmp"));
    if report {
        c.arg("--report").arg(&rep);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let mut all = String::from_utf8_lossy(&o.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&o.stderr));
    if let Ok(r) = std::fs::read_to_string(&rep) {
        all.push_str(&r);
    }
    (o.status.code(), all)
}

fn no_secret(name: &str, out: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !out.contains(s.as_str()),
            "{name}: secret {s:?} in the output:\n{out}"
        );
    }
    // Bearer tokens are JWTs: base64url of `{"` starts `eyJ`.
    assert!(!out.contains("eyJ"), "{name}: a JWT in the output:\n{out}");
    eprintln!("{name}: {} bytes of output, no secret", out.len());
}

#[test]
fn no_secret_in_logs_reports_or_errors() {
    let Some(corpus) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Token) else {
        return;
    };
    let c = reg.client();
    seed(&corpus, "tiny", &c, "sec/app");
    let maria = TestMariaDb::shared_or_skip();
    let mut secrets = vec![
        TEST_PASSWORD.to_string(),
        b64(&format!("{TEST_USER}:{TEST_PASSWORD}")),
        TestMariaDb::PASSWORD.to_string(),
        "wrong-Secret-pw-77".to_string(),
        b64(&format!("{TEST_USER}:wrong-Secret-pw-77")),
    ];
    secrets.dedup();
    let base = |out: &str| -> Vec<String> {
        let mut a = reg_args(&reg, &reg.host, "sec/app");
        a.extend(["-i", "tiny", "-o", out].map(String::from));
        a
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::sqlite(dir.path());
    let mut dbs = vec![("sqlite", sqlite.args())];
    if let Some(m) = &maria {
        let name = m.create_database("secrets");
        dbs.push((
            "mariadb",
            vec![
                "--db-type".into(),
                "mysql".into(),
                "--db-str".into(),
                m.dsn_for(&name),
            ],
        ));
    }
    // A database that is down: its DSN (with the password) must not be echoed either.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    dbs.push((
        "mariadb-down",
        vec![
            "--db-type".into(),
            "mysql".into(),
            "--db-str".into(),
            format!("obdconv:{}@tcp(127.0.0.1:{port})/x", TestMariaDb::PASSWORD),
        ],
    ));
    for (dbname, dbargs) in &dbs {
        for (verb, env) in [
            ("--verbose", vec![]),
            ("RUST_LOG=trace", vec![("RUST_LOG", "trace")]),
        ] {
            let mut a = base("ok");
            a.extend(dbargs.iter().cloned());
            if verb == "--verbose" {
                a.push("--verbose".into());
            }
            let (code, out) = captured(&a, &env, true);
            assert_eq!(code, Some(0), "{dbname} {verb}: {out}");
            no_secret(&format!("success, {dbname}, {verb}"), &out, &secrets);
        }
    }
    // Errors: a wrong password, at trace level; a registry that is down.
    let mut a: Vec<String> = vec![
        "-r".into(),
        format!("{}/sec/app", reg.host),
        "--plain".into(),
    ];
    a.extend(
        [
            "-u",
            &format!("{TEST_USER}:wrong-Secret-pw-77"),
            "-i",
            "tiny",
            "-o",
            "bad",
            "--verbose",
        ]
        .map(String::from),
    );
    let (code, out) = captured(&a, &[("RUST_LOG", "trace")], true);
    assert_eq!(code, Some(3), "{out}");
    no_secret("wrong password, trace", &out, &secrets);
    let a: Vec<String> = [
        "-r",
        "127.0.0.1:1/sec/app",
        "--plain",
        "-u",
        &format!("{TEST_USER}:{TEST_PASSWORD}"),
        "-i",
        "tiny",
        "-o",
        "x",
        "--verbose",
    ]
    .map(String::from)
    .to_vec();
    let (code, out) = captured(&a, &[("RUST_LOG", "trace")], true);
    assert_eq!(code, Some(6), "{out}");
    no_secret("registry down, trace", &out, &secrets);
}
