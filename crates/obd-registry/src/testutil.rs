//! Test harness: real `docker-registry` (CNCF distribution 2.8) instances on 127.0.0.1.
//!
//! Enabled by the `testutil` feature. Other crates use it from their tests with
//! `obd-registry = { workspace = true, features = ["testutil"] }` in `[dev-dependencies]`:
//!
//! ```no_run
//! use obd_registry::testutil::{RegistryKind, TestRegistry};
//! let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else { return };
//! let client = reg.client();
//! client.ping().unwrap();
//! println!("push to {}/my/repo:tag", reg.host);
//! // the registry process is killed when `reg` is dropped
//! ```
//!
//! Tools: `docker-registry` (Debian package of the same name), `openssl`, and `htpasswd`
//! (`apache2-utils`). When one is missing, [`TestRegistry::start_or_skip`] panics if the `CI`
//! environment variable is set, otherwise prints a skip message and returns `None`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::{Client, ClientOptions, Credentials};

/// User name accepted by the auth-enabled registries.
pub const TEST_USER: &str = "testuser";
/// Password accepted by the auth-enabled registries (contains a colon on purpose).
pub const TEST_PASSWORD: &str = "test:pass";

/// The refresh token the token server of the token kinds accepts in an OAuth2
/// `grant_type=refresh_token` POST (for [`TEST_USER`]).
pub const TEST_REFRESH_TOKEN: &str = "obdconv-test-refresh-token";

/// Which registry configuration to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// Plain HTTP, no auth.
    Plain,
    /// HTTPS with a private CA, htpasswd Basic auth.
    TlsBasic,
    /// HTTPS with a private CA, client certificate required, no auth.
    MutualTls,
    /// Plain HTTP, Bearer token auth with a token server (GET with Basic or anonymous;
    /// answers `token`). Anonymous tokens get `pull` only.
    Token,
    /// Like `Token`, but the token server refuses GET (405) and only serves OAuth2
    /// `grant_type=password` POSTs (answering `access_token`).
    TokenOAuth,
}

impl RegistryKind {
    fn tls(self) -> bool {
        matches!(self, RegistryKind::TlsBasic | RegistryKind::MutualTls)
    }
    fn token(self) -> bool {
        matches!(self, RegistryKind::Token | RegistryKind::TokenOAuth)
    }
    /// Tools this kind needs on `PATH`.
    pub fn required_tools(self) -> Vec<&'static str> {
        let mut t = vec!["docker-registry"];
        if self.tls() || self.token() {
            t.push("openssl");
        }
        if self == RegistryKind::TlsBasic {
            t.push("htpasswd");
        }
        t
    }
}

/// Is `tool` runnable from `PATH`?
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(tool);
            f.is_file()
        })
    })
}

/// Skip (or, under `CI`, fail) when a tool is missing. Returns `true` if all are there.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing test tools {missing:?} (apt-get install -y --no-install-recommends docker-registry apache2-utils openssl)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    false
}

/// A running registry. Killed (with its token server) on drop.
pub struct TestRegistry {
    pub kind: RegistryKind,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The private CA (TLS kinds).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (`MutualTls`; also valid for the other TLS kind).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A docker-style cert dir with `ca.crt`, `client.cert`, `client.key` (TLS kinds).
    pub cert_dir: Option<PathBuf>,
    /// Credentials that work (`TlsBasic`, `Token`, `TokenOAuth`).
    pub credentials: Option<Credentials>,
    /// Scratch directory (config, data, certs, log).
    pub dir: PathBuf,
    child: Child,
    token_server: Option<TokenServer>,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    run(Command::new("openssl").current_dir(dir).args(args)).map(|_| ())
}

/// Make a CA, a server cert for localhost/127.0.0.1, and a client cert (EC P-256).
fn make_certs(dir: &Path) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=obdconv test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| e.to_string())?;
    for (name, cn) in [("server", "localhost"), ("client", "obdconv-client")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        )?;
    }
    Ok(())
}

/// Starts `docker-registry serve <dir>/config.yml`, appending to `<dir>/registry.log`.
fn spawn_registry(dir: &Path) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start docker-registry: {e}"))
}

impl TestRegistry {
    /// Start a registry of `kind`, or skip (see module docs). Panics if the tools are present
    /// but the registry does not come up.
    pub fn start_or_skip(kind: RegistryKind) -> Option<TestRegistry> {
        if !require_tools(&kind.required_tools()) {
            return None;
        }
        match TestRegistry::start(kind) {
            Ok(r) => Some(r),
            Err(e) => panic!("starting {kind:?} registry failed: {e}"),
        }
    }

    /// Start a registry of `kind`.
    pub fn start(kind: RegistryKind) -> Result<TestRegistry, String> {
        let tmp = tempfile::Builder::new()
            .prefix("obd-registry-test")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        let port = free_port().map_err(|e| e.to_string())?;
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: {host}\n  secret: obdconv-test-secret\n",
            dir.join("data").display()
        );
        let mut ca_cert = None;
        let mut client_cert = None;
        let mut cert_dir = None;
        let mut credentials = None;
        let mut token_server = None;
        if kind.tls() {
            let certs = dir.join("certs");
            std::fs::create_dir_all(&certs).map_err(|e| e.to_string())?;
            make_certs(&certs)?;
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            ));
            if kind == RegistryKind::MutualTls {
                cfg.push_str(&format!(
                    "    clientcas:\n      - {}\n",
                    certs.join("ca.crt").display()
                ));
            }
            let cd = dir.join("certs.d");
            std::fs::create_dir_all(&cd).map_err(|e| e.to_string())?;
            for (from, to) in [
                ("ca.crt", "ca.crt"),
                ("client.crt", "client.cert"),
                ("client.key", "client.key"),
            ] {
                std::fs::copy(certs.join(from), cd.join(to)).map_err(|e| e.to_string())?;
            }
            ca_cert = Some(certs.join("ca.crt"));
            client_cert = Some((certs.join("client.crt"), certs.join("client.key")));
            cert_dir = Some(cd);
        }
        if kind == RegistryKind::TlsBasic {
            let out = run(Command::new("htpasswd").args(["-Bbn", TEST_USER, TEST_PASSWORD]))?;
            let pw = dir.join("htpasswd");
            std::fs::write(&pw, out).map_err(|e| e.to_string())?;
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: obdconv-test\n    path: {}\n",
                pw.display()
            ));
            credentials = Some(Credentials::new(TEST_USER, TEST_PASSWORD));
        }
        if kind.token() {
            let tdir = dir.join("token");
            std::fs::create_dir_all(&tdir).map_err(|e| e.to_string())?;
            openssl(
                &tdir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=token-signer",
                    "-keyout",
                    "token.key",
                    "-out",
                    "token.crt",
                ],
            )?;
            let ts = TokenServer::start(
                &tdir,
                kind == RegistryKind::TokenOAuth,
                HashMap::from([(TEST_USER.to_string(), TEST_PASSWORD.to_string())]),
            )?;
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: obdconv-test-registry\n    issuer: obdconv-test-issuer\n    rootcertbundle: {}\n",
                ts.port,
                tdir.join("token.crt").display()
            ));
            token_server = Some(ts);
            credentials = Some(Credentials::new(TEST_USER, TEST_PASSWORD));
        }
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
        let child = spawn_registry(&dir)?;
        let mut reg = TestRegistry {
            kind,
            host,
            ca_cert,
            client_cert,
            cert_dir,
            credentials,
            dir,
            child,
            token_server,
            _tmp: tmp,
        };
        reg.wait_listening()?;
        Ok(reg)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let reg = self;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = reg.child.try_wait() {
                return Err(format!("docker-registry exited ({st}): {}", reg.log()));
            }
            if TcpStream::connect(&reg.host).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("docker-registry did not listen: {}", reg.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the registry process (SIGKILL): it stops answering until [`TestRegistry::start_again`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry process again on the same port, configuration and storage (after
    /// [`TestRegistry::kill`]; a running one is killed first). Returns once it listens.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.kill();
        self.child = spawn_registry(&self.dir)?;
        self.wait_listening()
    }

    /// Appends top-level YAML (`catalog:\n  maxentries: 5\n`, say) to the registry's
    /// `config.yml` and restarts it on the same port and storage.
    pub fn append_config(&mut self, yaml: &str) -> Result<(), String> {
        use std::io::Write;
        let path = self.dir.join("config.yml");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(yaml.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        drop(f);
        self.start_again()
    }

    /// Drops the token failures not used yet.
    pub fn clear_token_faults(&self) {
        if let Some(t) = &self.token_server {
            t.faults.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Makes the next token requests fail, one per entry: an HTTP status, or 0 to close the
    /// connection without answering (token kinds only; a no-op otherwise).
    pub fn fail_token_requests(&self, codes: impl IntoIterator<Item = u16>) {
        if let Some(t) = &self.token_server {
            t.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(codes);
        }
    }

    /// Client options that work for this registry (CA, client cert, credentials, plain HTTP).
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            plain_http: !self.kind.tls(),
            root_cas: self.ca_cert.iter().cloned().collect(),
            client_cert: if self.kind == RegistryKind::MutualTls {
                self.client_cert.clone()
            } else {
                None
            },
            credentials: self.credentials.clone(),
            retries: 2,
            retry_base_delay: Duration::from_millis(50),
            ..Default::default()
        }
    }

    /// Options without credentials (and, for mTLS, without a client certificate).
    pub fn anonymous_options(&self) -> ClientOptions {
        ClientOptions {
            credentials: None,
            client_cert: None,
            ..self.options()
        }
    }

    /// A client built from [`TestRegistry::options`].
    /// Process ID of the registry (to read its CPU time, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.host, self.options()).expect("client for test registry")
    }

    /// `host/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.host, repo_and_tag)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Token requests seen so far (`"GET <scopes>"`, `"POST <scopes>"`), for token kinds.
    pub fn token_requests(&self) -> Vec<String> {
        self.token_server
            .as_ref()
            .map(|t| t.log.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Push a simple single-platform OCI image: `config` and `layers` (`(media type, bytes)`)
/// as blobs, then the manifest by digest and, if `tag` is given, by tag. Returns the pushed
/// manifest (exact bytes, digest). For seeding test registries from other crates' tests.
pub fn push_oci_image(
    client: &Client,
    repo: &str,
    tag: Option<&str>,
    config: &[u8],
    layers: &[(&str, Vec<u8>)],
) -> crate::Result<crate::Manifest> {
    let (cfg_digest, _) = client.push_blob_bytes(repo, config.to_vec())?;
    let mut descs = Vec::new();
    for (mt, data) in layers {
        let (d, _) = client.push_blob_bytes(repo, data.clone())?;
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": data.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_digest,
            "size": config.len(),
        },
        "layers": descs,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| crate::Error::Protocol(e.to_string()))?;
    let digest = crate::sha256_digest(&bytes);
    client.put_manifest(repo, &digest, crate::OCI_MANIFEST, &bytes)?;
    if let Some(t) = tag {
        client.put_manifest(repo, t, crate::OCI_MANIFEST, &bytes)?;
    }
    Ok(crate::Manifest {
        bytes,
        media_type: crate::OCI_MANIFEST.to_string(),
        digest,
    })
}

// ------------------------------------------------------------------------ token server

/// A tiny distribution token server (RS256 JWT with an `x5c` header, signed by the
/// `openssl` CLI). Authenticated users get every requested action; anonymous callers get
/// `pull` only.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
    faults: Arc<Mutex<std::collections::VecDeque<u16>>>,
}

struct TokenCtx {
    key: PathBuf,
    x5c: String,
    oauth_only: bool,
    users: HashMap<String, String>,
    log: Arc<Mutex<Vec<String>>>,
    /// Statuses for the next token requests instead of a token (0: close without answer).
    faults: Arc<Mutex<std::collections::VecDeque<u16>>>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    fn start(
        dir: &Path,
        oauth_only: bool,
        users: HashMap<String, String>,
    ) -> Result<TokenServer, String> {
        let der = run(Command::new("openssl").args([
            "x509",
            "-in",
            &dir.join("token.crt").display().to_string(),
            "-outform",
            "DER",
        ]))?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let ctx = Arc::new(TokenCtx {
            key: dir.join("token.key"),
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
            oauth_only,
            users,
            log: log.clone(),
            faults: faults.clone(),
        });
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = conn {
                    let ctx = ctx.clone();
                    std::thread::spawn(move || {
                        let _ = handle_token_conn(s, &ctx);
                    });
                }
            }
        });
        Ok(TokenServer {
            port,
            stop,
            handle: Some(handle),
            log,
            faults,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn handle_token_conn(stream: TcpStream, ctx: &TokenCtx) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut auth = None;
    let mut clen = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v),
                "content-length" => clen = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; clen.min(1 << 20)];
    r.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/token" {
        return respond(&mut w, "404 Not Found", "{}");
    }
    let fault = ctx
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop_front();
    match fault {
        Some(0) => return w.shutdown(std::net::Shutdown::Both),
        Some(code) => {
            return respond(
                &mut w,
                &format!("{code} Injected"),
                r#"{"error":"injected"}"#,
            )
        }
        None => {}
    }
    let params: Vec<(String, String)> = if method == "POST" {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    };
    let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let mut scopes: Vec<String> = Vec::new();
    for (k, v) in &params {
        if k == "scope" {
            scopes.extend(
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_string()),
            );
        }
    }
    ctx.log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {}", scopes.join(" ")));
    let subject: Option<String> = match method.as_str() {
        "GET" => {
            if ctx.oauth_only {
                return respond(&mut w, "405 Method Not Allowed", "{}");
            }
            match auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
                Some(b) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .unwrap_or_default();
                    let raw = String::from_utf8_lossy(&raw).into_owned();
                    let (u, p) = raw.split_once(':').unwrap_or((&raw, ""));
                    if ctx.users.get(u).map(|x| x.as_str()) != Some(p) {
                        return respond(
                            &mut w,
                            "401 Unauthorized",
                            r#"{"error":"bad credentials"}"#,
                        );
                    }
                    Some(u.to_string())
                }
                None => None,
            }
        }
        "POST" if get("grant_type").as_deref() == Some("refresh_token") => {
            // An identity token, as a credential helper hands out for `<token>`.
            if get("refresh_token").as_deref() != Some(TEST_REFRESH_TOKEN) {
                return respond(&mut w, "401 Unauthorized", r#"{"error":"invalid_grant"}"#);
            }
            Some(TEST_USER.to_string())
        }
        "POST" => {
            if get("grant_type").as_deref() != Some("password") {
                return respond(
                    &mut w,
                    "400 Bad Request",
                    r#"{"error":"unsupported_grant_type"}"#,
                );
            }
            let u = get("username").unwrap_or_default();
            let p = get("password").unwrap_or_default();
            if ctx.users.get(&u) != Some(&p) {
                return respond(&mut w, "401 Unauthorized", r#"{"error":"invalid_grant"}"#);
            }
            Some(u)
        }
        _ => return respond(&mut w, "405 Method Not Allowed", "{}"),
    };
    let service = get("service").unwrap_or_default();
    let token = match make_jwt(ctx, subject.as_deref(), &service, &scopes) {
        Ok(t) => t,
        Err(e) => {
            return respond(
                &mut w,
                "500 Internal Server Error",
                &serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let key = if method == "POST" {
        "access_token"
    } else {
        "token"
    };
    let body = serde_json::json!({ key: token, "expires_in": 300 }).to_string();
    respond(&mut w, "200 OK", &body)
}

fn make_jwt(
    ctx: &TokenCtx,
    subject: Option<&str>,
    service: &str,
    scopes: &[String],
) -> Result<String, String> {
    let mut access = Vec::new();
    for s in scopes {
        let Some((typ, rest)) = s.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let acts: Vec<&str> = actions
            .split(',')
            .filter(|a| subject.is_some() || *a == "pull")
            .collect();
        access.push(serde_json::json!({ "type": typ, "name": name, "actions": acts }));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [ctx.x5c] });
    let claims = serde_json::json!({
        "iss": "obdconv-test-issuer",
        "sub": subject.unwrap_or(""),
        "aud": service,
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&ctx.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(signing_input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(format!("{signing_input}.{}", b64url(&out.stdout)))
}

// ------------------------------------------------------------------------ flaky proxy

/// What a [`FlakyProxy`] does instead of forwarding one request.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this status (and optional `Retry-After` seconds), then close.
    Status(u16, Option<u64>),
    /// Read the request head and close the connection without answering.
    Close,
    /// Hold the request this long, then forward it (a slow registry).
    Delay(Duration),
    /// Forward the request, pass on the response head and half of its body, then close the
    /// connection: with `reset` by an RST (a connection reset mid-body), else by a clean
    /// FIN (a truncated body).
    CutResponse { reset: bool },
    /// Forward the request head and at most this many bytes of its body (all of it when
    /// shorter), then reset both connections (a reset mid-upload).
    CutRequest(u64),
    /// Forward the request, then hold the connection open without a word: a registry that
    /// accepted the request and stalls. With `partial`, the response head and half of its
    /// body are passed on first (a body that stops mid-way). Held until the proxy is dropped.
    StallResponse { partial: bool },
    /// Forward the request head and at most this many bytes of its body, then stop reading
    /// the body and hold both connections open without answering: a registry that stops
    /// reading an upload. Held until the proxy is dropped.
    StallRequest(u64),
    /// Forward the request and its response, each body at most this many bytes per second
    /// (a slow but steady link).
    Throttle(u64),
}

/// A fault injected into the next request whose method matches (any method if `None`) and
/// whose path contains `path` (any path if `None`).
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<&'static str>,
    pub action: FaultAction,
    pub path: Option<&'static str>,
}

impl Fault {
    fn new(action: FaultAction) -> Fault {
        Fault {
            method: None,
            action,
            path: None,
        }
    }
    /// Answer the next request with `code`.
    pub fn status(code: u16) -> Fault {
        Fault::new(FaultAction::Status(code, None))
    }
    /// Answer the next request with `code` and `Retry-After: secs`.
    pub fn retry_after(code: u16, secs: u64) -> Fault {
        Fault::new(FaultAction::Status(code, Some(secs)))
    }
    /// Drop the connection of the next request.
    pub fn close() -> Fault {
        Fault::new(FaultAction::Close)
    }
    /// Hold the next request for `d`, then forward it.
    pub fn delay(d: Duration) -> Fault {
        Fault::new(FaultAction::Delay(d))
    }
    /// Reset the connection half-way through the next response body.
    pub fn reset_mid_body() -> Fault {
        Fault::new(FaultAction::CutResponse { reset: true })
    }
    /// End the next response (cleanly) half-way through its body.
    pub fn truncate_body() -> Fault {
        Fault::new(FaultAction::CutResponse { reset: false })
    }
    /// Reset the connection after `bytes` bytes of the next request body.
    pub fn cut_request(bytes: u64) -> Fault {
        Fault::new(FaultAction::CutRequest(bytes))
    }
    /// Forward the next request and never answer it (the connection stays open).
    pub fn stall() -> Fault {
        Fault::new(FaultAction::StallResponse { partial: false })
    }
    /// Pass on the next response head and half of its body, then stall (connection open).
    pub fn stall_mid_body() -> Fault {
        Fault::new(FaultAction::StallResponse { partial: true })
    }
    /// Forward `bytes` bytes of the next request body, then stop reading it and stall
    /// (connections open, no answer).
    pub fn stall_request(bytes: u64) -> Fault {
        Fault::new(FaultAction::StallRequest(bytes))
    }
    /// Forward the next request and its response at `bytes_per_sec` each way.
    pub fn throttle(bytes_per_sec: u64) -> Fault {
        Fault::new(FaultAction::Throttle(bytes_per_sec))
    }
    /// Only apply to a request with this method (`PUT`, `PATCH`, ...).
    pub fn on(mut self, method: &'static str) -> Fault {
        self.method = Some(method);
        self
    }
    /// Only apply to a request whose path contains `part` (`/blobs/`, `/manifests/`, ...).
    pub fn path(mut self, part: &'static str) -> Fault {
        self.path = Some(part);
        self
    }
}

/// An HTTP/1.1 proxy in front of a real registry, one request per connection, that
/// replaces queued requests with injected faults (5xx/429, dropped connections, delays,
/// bodies cut or reset half-way, stalls) and forwards everything else untouched. For testing
/// retries and timeouts. Stopped on drop (which also ends the stalls).
pub struct FlakyProxy {
    /// `127.0.0.1:<port>` to connect to instead of the registry.
    pub host: String,
    faults: Arc<Mutex<std::collections::VecDeque<Fault>>>,
    served: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            break;
        }
        buf.push(b[0]);
    }
    Ok(buf)
}

/// Closes `s` with an RST instead of a FIN.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// Keeps `held` (open connections) untouched until the proxy stops.
fn hold<T>(stop: &AtomicBool, held: T) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
}

/// Copies `r` to `w` at about `rate` bytes per second, in 50 ms steps.
fn copy_throttled(r: &mut TcpStream, w: &mut TcpStream, rate: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; (rate / 20).max(1) as usize];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Content-Length` of a request or response head, if any.
fn content_length_of(head: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<u64>().ok())?
    })
}

/// Length announced by a response head (0 if none).
fn head_content_length(head: &[u8]) -> u64 {
    content_length_of(head).unwrap_or(0)
}

fn proxy_one(
    mut client: TcpStream,
    target: &str,
    faults: &Mutex<std::collections::VecDeque<Fault>>,
    served: &std::sync::atomic::AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let head = read_head(&mut client)?;
    if head.is_empty() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let fault = {
        let mut q = faults.lock().unwrap_or_else(|p| p.into_inner());
        match q.front() {
            Some(f)
                if f.method.is_none_or(|m| m == method)
                    && f.path.is_none_or(|p| path.contains(p)) =>
            {
                q.pop_front()
            }
            _ => None,
        }
    };
    let mut cut = None;
    if let Some(f) = fault {
        served.fetch_add(1, Ordering::SeqCst);
        match f.action {
            FaultAction::Status(code, retry_after) => {
                let ra = retry_after
                    .map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default();
                write!(
                    client,
                    "HTTP/1.1 {code} Injected\r\n{ra}Content-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            FaultAction::Close => {
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            FaultAction::Delay(d) => std::thread::sleep(d),
            other => cut = Some(other),
        }
    }
    let mut upstream = TcpStream::connect(target)?;
    // Ask for one request per connection so that every request passes through here.
    upstream.write_all(&head[..head.len() - 2])?;
    upstream.write_all(b"Connection: close\r\n\r\n")?;
    match cut {
        Some(FaultAction::CutRequest(n)) => {
            // Never wait for more body than announced: a shorter body is passed on whole,
            // then reset before the answer.
            let n = content_length_of(&head).map_or(n, |len| n.min(len));
            let _ = std::io::copy(&mut (&mut client).take(n), &mut upstream);
            reset(upstream);
            reset(client);
            return Ok(());
        }
        Some(FaultAction::CutResponse { reset: rst }) => {
            // Meant for bodiless requests (GET): no request body is forwarded, and no clone
            // of `client` may outlive it so that dropping it really closes the socket.
            let rhead = read_head(&mut upstream)?;
            let len = head_content_length(&rhead);
            client.write_all(&rhead)?;
            let _ = std::io::copy(&mut (&mut upstream).take(len / 2), &mut client);
            let _ = client.flush();
            if rst {
                reset(client);
            } else {
                let _ = client.shutdown(std::net::Shutdown::Both);
            }
            return Ok(());
        }
        Some(FaultAction::StallRequest(n)) => {
            let _ = std::io::copy(&mut (&mut client).take(n), &mut upstream);
            hold(stop, (client, upstream));
            return Ok(());
        }
        Some(FaultAction::StallResponse { partial }) => {
            let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
            });
            if partial {
                let rhead = read_head(&mut upstream)?;
                let len = head_content_length(&rhead);
                client.write_all(&rhead)?;
                let _ = std::io::copy(&mut (&mut upstream).take(len / 2), &mut client);
                let _ = client.flush();
            }
            hold(stop, (client, upstream));
            return Ok(());
        }
        Some(FaultAction::Throttle(rate)) => {
            let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
            std::thread::spawn(move || {
                let _ = copy_throttled(&mut c2, &mut u2, rate);
            });
            let _ = copy_throttled(&mut upstream, &mut client, rate);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    Ok(())
}

impl FlakyProxy {
    /// Proxy to `target` (`host:port`), injecting `faults` in order.
    pub fn start(target: &str, faults: Vec<Fault>) -> std::io::Result<FlakyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let host = listener.local_addr()?.to_string();
        let faults = Arc::new(Mutex::new(
            faults
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f2, s2, st2) = (faults.clone(), served.clone(), stop.clone());
        let target = target.to_string();
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (f3, s3, t3, st3) = (f2.clone(), s2.clone(), target.clone(), st2.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(client, &t3, &f3, &s3, &st3);
                });
            }
        });
        Ok(FlakyProxy {
            host,
            faults,
            served,
            stop,
            handle: Some(handle),
        })
    }

    /// How many faults were injected so far.
    pub fn faults_served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Queue more faults.
    pub fn add_faults(&self, more: impl IntoIterator<Item = Fault>) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(more);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
