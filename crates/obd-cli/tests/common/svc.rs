//! Helpers for the `obdconv serve` end-to-end tests: a real `docker-registry` whose
//! notifications point at the service, the service as a real process (signals included),
//! a minimal HTTP client, skopeo pushes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

pub const TOKEN: &str = "obdconv-test-token-0123456789";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain registry that notifies `http://127.0.0.1:<service_port>/v1/events/distribution`.
pub fn notifying_registry(service_port: u16) -> Option<TestRegistry> {
    let mut reg = TestRegistry::start_or_skip(RegistryKind::Plain)?;
    let cfg = reg.dir.join("config.yml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "notifications:\n  endpoints:\n    - name: obdconv\n      url: http://127.0.0.1:{service_port}/v1/events/distribution\n      headers:\n        Authorization: [Bearer {TOKEN}]\n      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    reg.start_again().unwrap();
    Some(reg)
}

/// `obdconv serve` (or `worker`) as a child process, logging to a file.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    /// Extra environment of the process.
    pub env: Vec<(String, String)>,
}

impl Service {
    /// Starts `obdconv <mode>` on the SQLite file `db` with `extra` flags; `serve` waits
    /// for `/healthz`.
    pub fn start(mode: &str, port: u16, dir: &Path, db: &Path, extra: &[&str]) -> Service {
        Self::start_on(
            mode,
            port,
            dir,
            ("sqlite", &db.display().to_string()),
            extra,
        )
    }

    /// [`Service::start`] on a database `(type, string)`.
    pub fn start_on(
        mode: &str,
        port: u16,
        dir: &Path,
        db: (&str, &str),
        extra: &[&str],
    ) -> Service {
        let token = dir.join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let mut args: Vec<String> = vec![mode.into()];
        if mode == "serve" {
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--token-file".into(),
                token.display().to_string(),
            ]);
        }
        args.extend([
            "--db-type".into(),
            db.0.into(),
            "--db-str".into(),
            db.1.into(),
            "--work-dir".into(),
            dir.join("work").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Service {
            child: Command::new("true").spawn().unwrap(),
            port,
            dir: dir.to_path_buf(),
            log: dir.join(format!("{mode}-{port}.log")),
            args,
            env: Vec::new(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_obdconv"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("OBDCONV_DB_TYPE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        if self.args[0] == "serve" {
            let t = Instant::now();
            while get(self.port, "/healthz").0 != 200 {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "serve did not start: {}",
                    self.log_text()
                );
                if let Ok(Some(st)) = self.child.try_wait() {
                    panic!("serve exited ({st}): {}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts it again with `env` added to its environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart();
    }

    /// Starts it again with the same flags (after a kill).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig}");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        get(self.port, "/metrics").1
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; `(status, body)` (status 0 when the
/// connection failed).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    if s.read_to_end(&mut out).is_err() && out.is_empty() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

pub fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, None, "")
}

/// `GET /v1/jobs` with the token.
pub fn jobs(port: u16) -> Vec<Value> {
    let (code, body) = request(port, "GET", "/v1/jobs", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["jobs"].as_array().unwrap().clone()
}

/// Waits until `f` is true, at most `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `skopeo copy` of `oci:LAYOUT:TAG` (every platform) to `docker://HOST/REPO:TAG`.
pub fn push(layout: &Path, tag: &str, host: &str, repo: &str) {
    let o = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "-q",
            "--all",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{host}/{repo}:{tag}"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo push {tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Count of `state` in a job list.
pub fn count(jobs: &[Value], state: &str) -> usize {
    jobs.iter().filter(|j| j["state"] == state).count()
}
