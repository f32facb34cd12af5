//! The convertor in the environment the container tools set up: credentials from credential
//! helpers and auth files (and where it looked when there are none), certs.d directories,
//! plain HTTP and TLS per side, and push access checked before any download. Real
//! `docker-registry` instances; every run gets its own HOME, DOCKER_CONFIG, XDG_RUNTIME_DIR
//! and certs.d roots, so nothing of the machine's own configuration leaks in.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use obd_registry::testutil::{RegistryKind, TestRegistry, TEST_PASSWORD, TEST_USER};

use common::hello_layout;
use common::reg::seed;

/// An isolated environment under a temp dir: empty HOME, DOCKER_CONFIG, XDG_RUNTIME_DIR,
/// certs.d roots, and a `bin` dir put first on PATH for credential helpers.
struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, OsString)>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        for d in ["home", "docker", "run", "bin", "certsd"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = |s: &str| dir.path().join(s).into_os_string();
        let mut path = p("bin");
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let vars = vec![
            ("HOME".into(), p("home")),
            ("DOCKER_CONFIG".into(), p("docker")),
            ("XDG_RUNTIME_DIR".into(), p("run")),
            ("OBDCONV_CERTS_D_ROOTS".into(), p("certsd")),
            ("PATH".into(), path),
        ];
        Env { dir, vars }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn set(&mut self, k: &str, v: impl Into<OsString>) {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.into(), v.into()));
    }

    /// `$DOCKER_CONFIG/config.json`.
    fn docker_config(&self, v: serde_json::Value) {
        std::fs::write(self.path("docker/config.json"), v.to_string()).unwrap();
    }

    /// `bin/docker-credential-obdtest`, answering `get` with the test credentials.
    fn helper(&self) {
        let p = self.path("bin/docker-credential-obdtest");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\n\
                 printf '{{\"ServerURL\":\"%s\",\"Username\":\"{TEST_USER}\",\"Secret\":\"{TEST_PASSWORD}\"}}\\n' \"$server\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the convertor with this environment (REGISTRY_AUTH_FILE only when set here).
    fn conv(&self, args: &[&str]) -> Output {
        let mut c = common::convertor();
        c.env_remove("REGISTRY_AUTH_FILE");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        let o = c.args(args).output().unwrap();
        eprintln!(
            "convertor {args:?}: {:?}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn auth_b64(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// A registry of `kind` holding the hello-world `amd64` image as `lib/hello:amd64`.
fn seeded(kind: RegistryKind, layout: &Path) -> Option<TestRegistry> {
    let reg = TestRegistry::start_or_skip(kind)?;
    seed(layout, "amd64", &reg.client(), "lib/hello");
    Some(reg)
}

fn work(env: &Env, name: &str) -> String {
    env.path(name).display().to_string()
}

#[test]
fn credentials_from_helpers_auth_files_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = hello_layout(tmp.path());
    let Some(reg) = seeded(RegistryKind::TlsBasic, &layout) else {
        return;
    };
    let repo = format!("{}/lib/hello", reg.host);
    let ca = reg.ca_cert.as_ref().unwrap().display().to_string();
    let base = |out: &str, wd: &str| -> Vec<String> {
        [
            "-r",
            &repo,
            "-i",
            "amd64",
            "-o",
            out,
            "--root-ca",
            &ca,
            "-d",
            wd,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |env: &Env, out: &str, extra: &[&str]| {
        let mut a = base(out, &work(env, "wd"));
        a.extend(extra.iter().map(|s| s.to_string()));
        env.conv(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    };
    let ok = |o: &Output| assert_eq!(o.status.code(), Some(0), "{}", stderr(o));

    // credHelpers names a helper for this registry.
    let env = Env::new();
    env.helper();
    env.docker_config(serde_json::json!({"credHelpers": {(reg.host.clone()): "obdtest"}}));
    ok(&run(&env, "v_helper", &[]));

    // credsStore: the default helper.
    let env = Env::new();
    env.helper();
    env.docker_config(serde_json::json!({"credsStore": "obdtest"}));
    ok(&run(&env, "v_store", &[]));

    // REGISTRY_AUTH_FILE, containers auth.json format.
    let mut env = Env::new();
    let f = env.path("auth.json");
    std::fs::write(
        &f,
        serde_json::json!({"auths": {(reg.host.clone()): {"auth": auth_b64(TEST_USER, TEST_PASSWORD)}}})
            .to_string(),
    )
    .unwrap();
    env.set("REGISTRY_AUTH_FILE", &f);
    ok(&run(&env, "v_authfile", &[]));

    // $XDG_RUNTIME_DIR/containers/auth.json, with a repository-path key.
    let env = Env::new();
    std::fs::create_dir_all(env.path("run/containers")).unwrap();
    std::fs::write(
        env.path("run/containers/auth.json"),
        serde_json::json!({"auths": {(format!("{}/lib", reg.host)): {"auth": auth_b64(TEST_USER, TEST_PASSWORD)}}})
            .to_string(),
    )
    .unwrap();
    ok(&run(&env, "v_xdg", &[]));

    // --src-creds is -u.
    let env = Env::new();
    ok(&run(
        &env,
        "v_srccreds",
        &["--src-creds", &format!("{TEST_USER}:{TEST_PASSWORD}")],
    ));
    let tags = reg.client().list_tags("lib/hello").unwrap();
    for t in ["v_helper", "v_store", "v_authfile", "v_xdg", "v_srccreds"] {
        assert!(tags.iter().any(|x| x == t), "{t} missing from {tags:?}");
    }

    // No credentials anywhere: exit 3, and the error lists where we looked and the fix.
    let mut env = Env::new();
    env.set("REGISTRY_AUTH_FILE", env.path("none/auth.json"));
    let o = run(&env, "v_none", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    for needle in [
        "no credentials for",
        "looked in:",
        "REGISTRY_AUTH_FILE=",
        "run/containers/auth.json (absent)",
        "home/.config/containers/auth.json (absent)",
        "docker/config.json (absent)",
        "-u/--src-creds user:password",
        "docker login",
        "skopeo login",
    ] {
        assert!(e.contains(needle), "{needle:?} missing:\n{e}");
    }

    // Found but refused: the source is named, the secret is not.
    let mut env = Env::new();
    let f = env.path("wrong.json");
    std::fs::write(
        &f,
        serde_json::json!({"auths": {(reg.host.clone()): {"auth": auth_b64(TEST_USER, "wrong-pw-123")}}})
            .to_string(),
    )
    .unwrap();
    env.set("REGISTRY_AUTH_FILE", &f);
    let o = run(&env, "v_wrong", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("the credentials from REGISTRY_AUTH_FILE=") && e.contains("were refused"),
        "{e}"
    );
    assert!(!e.contains("wrong-pw-123"), "{e}");

    // A helper that is not on PATH: an error naming it and the config file.
    let env = Env::new();
    env.docker_config(serde_json::json!({"credHelpers": {(reg.host.clone()): "nosuchhelper"}}));
    let o = run(&env, "v_missing", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("docker-credential-nosuchhelper")
            && e.contains("docker/config.json")
            && e.contains("not on PATH"),
        "{e}"
    );
}

#[test]
fn tls_certs_d_plain_http_and_per_side_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = hello_layout(tmp.path());
    let (Some(tls), Some(plain)) = (
        seeded(RegistryKind::TlsBasic, &layout),
        seeded(RegistryKind::Plain, &layout),
    ) else {
        return;
    };
    let creds = format!("{TEST_USER}:{TEST_PASSWORD}");
    let tls_repo = format!("{}/lib/hello", tls.host);
    let plain_repo = format!("{}/lib/hello", plain.host);

    // The CA in <certs.d root>/<host:port>/ca.crt: no --root-ca needed.
    let env = Env::new();
    let hd = env.path("certsd").join(&tls.host);
    std::fs::create_dir_all(&hd).unwrap();
    std::fs::copy(tls.ca_cert.as_ref().unwrap(), hd.join("ca.crt")).unwrap();
    let wd = work(&env, "wd");
    let o = env.conv(&[
        "-r", &tls_repo, "-i", "amd64", "-o", "v_certsd", "-u", &creds, "-d", &wd,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // HTTPS to a plain-HTTP registry.
    let env = Env::new();
    let wd = work(&env, "wd");
    let o = env.conv(&["-r", &plain_repo, "-i", "amd64", "-o", "x", "-d", &wd]);
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        e.contains("speaks plain HTTP") && e.contains("--plain") && e.contains("--src-plain"),
        "{e}"
    );
    assert!(
        !e.contains("InvalidContentType ") && !e.contains("retrying"),
        "{e}"
    );

    // An unknown CA: the fix is named.
    let o = env.conv(&[
        "-r", &tls_repo, "-i", "amd64", "-o", "x", "-u", &creds, "-d", &wd,
    ]);
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        e.contains("not trusted") && e.contains("--root-ca") && e.contains("--cert-dir"),
        "{e}"
    );

    // A cert dir or CA file that does not exist: usage error before any work.
    for flag in [
        "--cert-dir",
        "--src-cert-dir",
        "--dest-cert-dir",
        "--root-ca",
    ] {
        let o = env.conv(&[
            "-r",
            &plain_repo,
            "-i",
            "amd64",
            "-o",
            "x",
            "--plain",
            flag,
            "/nonexistent",
            "-d",
            &wd,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("/nonexistent"), "{}", stderr(&o));
    }
    assert!(!env.path("wd").exists());

    // Per side: plain-HTTP source, TLS target.
    let ca = tls.ca_cert.as_ref().unwrap().display().to_string();
    let o = env.conv(&[
        "-r",
        &plain_repo,
        "--src-plain",
        "-i",
        "amd64",
        "-o",
        "v_cross",
        "--target-repository",
        &format!("{}/cross/hello", tls.host),
        "--dest-creds",
        &creds,
        "--root-ca",
        &ca,
        "-d",
        &wd,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(tls
        .client()
        .head_manifest("cross/hello", "v_cross")
        .unwrap()
        .is_some());
    // And back: TLS source, plain-HTTP target.
    let o = env.conv(&[
        "-r",
        &tls_repo,
        "--src-creds",
        &creds,
        "--root-ca",
        &ca,
        "-i",
        "amd64",
        "-o",
        "v_back",
        "--target-repository",
        &format!("{}/back/hello", plain.host),
        "--dest-plain",
        "-d",
        &wd,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(plain
        .client()
        .head_manifest("back/hello", "v_back")
        .unwrap()
        .is_some());
}

#[test]
fn push_access_is_checked_before_any_download() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = hello_layout(tmp.path());
    let Some(reg) = seeded(RegistryKind::Token, &layout) else {
        return;
    };
    // Anonymous: the token server grants pull, not push.
    let env = Env::new();
    let wd = env.path("wd");
    let before = reg.log().len();
    let target = format!("{}/other/hello", reg.host);
    let o = env.conv(&[
        "-r",
        &format!("{}/lib/hello", reg.host),
        "--plain",
        "-i",
        "amd64",
        "-o",
        "v1",
        "--target-repository",
        &target,
        "-d",
        &wd.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("cannot push to the target repository {target}"))
            && e.contains("not allowed to push")
            && e.contains("no credentials for"),
        "{e}"
    );
    let log = reg.log()[before..].to_string();
    assert!(
        !log.contains("GET /v2/lib/hello/blobs/"),
        "a blob was downloaded:\n{log}"
    );
    assert!(!wd.exists(), "the work dir was created");

    // Wrong target credentials on a Basic-auth registry: refused up front, source named.
    let Some(tls) = seeded(RegistryKind::TlsBasic, &layout) else {
        return;
    };
    let ca = tls.ca_cert.as_ref().unwrap().display().to_string();
    let before = tls.log().len();
    let o = env.conv(&[
        "-r",
        &format!("{}/lib/hello", tls.host),
        "-u",
        &format!("{TEST_USER}:{TEST_PASSWORD}"),
        "--root-ca",
        &ca,
        "-i",
        "amd64",
        "-o",
        "v1",
        "--target-repository",
        &format!("{}/dest/hello", tls.host),
        "--dest-creds",
        "testuser:not-the-password",
        "-d",
        &wd.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("dest/hello") && e.contains("the command line (--target-username)"),
        "{e}"
    );
    assert!(!e.contains("not-the-password"), "{e}");
    assert!(!tls.log()[before..].contains("GET /v2/lib/hello/blobs/"));
    assert!(!wd.exists());
}
