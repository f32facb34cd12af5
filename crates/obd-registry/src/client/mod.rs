//! The blocking registry client: [`Client`] and [`ClientOptions`] (with the [`Hints`] named
//! in error messages), construction, URL helpers, token scopes and the context added to
//! authentication errors (where the credentials came from, or where none were found). The concerns live in submodules: [`transport`] (sending, retries,
//! deadlines, error mapping), [`auth_flow`] (challenges, tokens), [`blobs`] (downloads),
//! [`upload`] (blob pushes, sessions, mounts), [`manifests`] (manifests, referrers) and
//! [`listing`] (the catalog and tags, paginated).

mod auth_flow;
mod blobs;
mod listing;
mod manifests;
mod transport;
mod upload;

pub use blobs::BlobReader;
pub use listing::{DEFAULT_PAGE_SIZE, SCOPE_CATALOG};
pub use manifests::referrers_fallback_tag;
pub use upload::BlobPush;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use url::Url;

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::reference::api_host;
use crate::tls;

use auth_flow::AuthState;
use transport::ReqBody;

/// How to reach and authenticate to a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Use `http://` instead of `https://`.
    pub plain_http: bool,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// containerd/docker style cert dirs: `*.crt` CA files, `*.cert` + `*.key` client pairs;
    /// `<dir>/<host>` is scanned too.
    pub cert_dirs: Vec<PathBuf>,
    /// Extra PEM CA files (added to the system roots).
    pub root_cas: Vec<PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Credentials for Basic auth and token requests.
    pub credentials: Option<Credentials>,
    /// When `credentials` is `None`, look the host up in the container tools' auth files and
    /// credential helpers ([`crate::credentials::lookup`] on the process environment).
    pub use_docker_config: bool,
    /// Where `credentials` came from (`-u`, `/root/.docker/config.json credsStore=pass`):
    /// named when the registry refuses them. Never a secret.
    pub credentials_source: Option<String>,
    /// Where credentials were looked for without finding any: listed when the registry asks
    /// for credentials.
    pub credentials_searched: Vec<String>,
    /// certs.d roots: `<root>/<host[:port]>/` is read like a cert dir (`*.crt` CAs,
    /// `*.cert` + `*.key` client pairs), as docker and the containers tools do. `None`:
    /// [`DEFAULT_CERTS_D_ROOTS`].
    pub certs_d_roots: Option<Vec<PathBuf>>,
    /// How the user changes what error messages suggest changing (command-line flags).
    pub hints: Hints,
    /// Retries for transient failures (429, 408, 5xx, connection resets).
    pub retries: u32,
    /// First backoff delay; doubles per retry (capped at 10 s).
    pub retry_base_delay: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Upload blobs larger than this in `PATCH` chunks of this size; `None` = one
    /// monolithic `PUT`.
    pub chunk_size: Option<u64>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for data from the registry before giving up on a request: for the
    /// response head (counted from the start of the request) and then for each next piece of
    /// the response body (reset after every read that returns data). A request that times
    /// out is a transient network failure: retried with backoff, blob downloads resume with
    /// a ranged `GET`. `None` waits forever. Blob upload requests get a total deadline
    /// instead, see [`ClientOptions::min_upload_rate`].
    pub read_timeout: Option<Duration>,
    /// Slowest average upload rate (bytes per second) tolerated for blob uploads. A request
    /// carrying blob data (`PUT`/`PATCH`, and the final `PUT` of a chunked upload) must
    /// complete, response included, within `2 × read_timeout + bytes / min_upload_rate`
    /// (default 120 s + 8 s per MiB); when it does not, the upload is restarted from scratch
    /// like after other transient failures. A read timeout cannot detect a registry that
    /// stops reading our body, hence the size-based deadline. `0`, or `read_timeout: None`,
    /// means no deadline.
    pub min_upload_rate: u64,
}

/// The system certs.d roots of the containers tools and docker.
pub const DEFAULT_CERTS_D_ROOTS: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// The environment variable listing certs.d roots (`:`-separated) instead of
/// [`DEFAULT_CERTS_D_ROOTS`] (for tests).
pub const CERTS_D_ROOTS_ENV: &str = "OBDCONV_CERTS_D_ROOTS";

/// The certs.d roots [`CERTS_D_ROOTS_ENV`] names (empty entries ignored), for
/// [`ClientOptions::certs_d_roots`]; `None` when it is unset.
pub fn certs_d_roots_from_env() -> Option<Vec<PathBuf>> {
    std::env::var_os(CERTS_D_ROOTS_ENV).map(|v| {
        std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    })
}

/// The fixes error messages suggest, in the words of the program using the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hints {
    /// How to give credentials (`-u user:password`).
    pub credentials: String,
    /// How to switch to plain HTTP (`--plain`).
    pub plain_http: String,
    /// How to trust the registry's CA (`--root-ca FILE or --cert-dir DIR`).
    pub trust: String,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            credentials: "-u user:password".into(),
            plain_http: "--plain".into(),
            trust: "--root-ca FILE or --cert-dir DIR".into(),
        }
    }
}

/// Default [`ClientOptions::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ClientOptions::min_upload_rate`]: 128 KiB/s (1 Mbit/s).
pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 128 << 10;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            insecure_skip_verify: false,
            cert_dirs: Vec::new(),
            root_cas: Vec::new(),
            client_cert: None,
            credentials: None,
            use_docker_config: false,
            credentials_source: None,
            credentials_searched: Vec::new(),
            certs_d_roots: None,
            hints: Hints::default(),
            retries: 4,
            retry_base_delay: Duration::from_millis(250),
            user_agent: concat!("obdconv/", env!("CARGO_PKG_VERSION")).to_string(),
            chunk_size: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            min_upload_rate: DEFAULT_MIN_UPLOAD_RATE,
        }
    }
}

/// Token scope for pulling `repo`.
pub fn scope_pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// Token scope for pushing to `repo`.
pub fn scope_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// A blocking client for one registry host. Cheap to share between threads (`&Client` is
/// `Sync`); tokens are cached per scope set.
pub struct Client {
    /// Every request but blob uploads: with the read timeout.
    http: reqwest::blocking::Client,
    /// Blob upload requests: no read timeout (it would also bound the time spent sending the
    /// body), a per-request total deadline instead ([`Client::upload_deadline`]).
    upload_http: reqwest::blocking::Client,
    base: Url,
    host: String,
    opts: ClientOptions,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("credentials", &self.creds)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `host` (`registry.example.com`, `localhost:5000`, `docker.io`).
    pub fn new(host: &str, mut opts: ClientOptions) -> Result<Client> {
        let api = api_host(host).to_string();
        if api.is_empty() || api.contains('/') || api.contains("://") {
            return Err(Error::Config(format!("bad registry host {host:?}")));
        }
        let scheme = if opts.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api}/"))
            .map_err(|e| Error::Config(format!("bad registry host {host:?}: {e}")))?;
        let certs_d_roots: Vec<PathBuf> = match &opts.certs_d_roots {
            Some(r) => r.clone(),
            None => DEFAULT_CERTS_D_ROOTS.iter().map(PathBuf::from).collect(),
        };
        let tls_cfg = tls::build_config(&tls::TlsInputs {
            host: &api,
            insecure_skip_verify: opts.insecure_skip_verify,
            cert_dirs: &opts.cert_dirs,
            certs_d_roots: &certs_d_roots,
            root_cas: &opts.root_cas,
            client_cert: opts.client_cert.as_ref(),
        })?;
        // reqwest's blocking client runs the async one on a runtime thread, but reads
        // response bodies on the caller's thread. The async builder's `read_timeout` (usable
        // through `blocking::ClientBuilder::from`) creates its timer while the body is read,
        // which panics there ("no reactor running", reqwest 0.13.5). The blocking builder's
        // own `timeout` does what we need instead: it bounds sending the request and
        // receiving the response head, then every single `read` of the body (a fresh
        // deadline per read, no total). Bounding the request phase would also bound the time
        // spent sending an upload body, so blob uploads use a second client without it and
        // a per-request total deadline sized to the upload.
        let build = |tls_cfg: rustls::ClientConfig, timeout: Option<Duration>| {
            reqwest::blocking::Client::builder()
                .tls_backend_preconfigured(tls_cfg)
                .user_agent(opts.user_agent.clone())
                .connect_timeout(opts.connect_timeout)
                .timeout(timeout)
                .pool_max_idle_per_host(32)
                .proxy(crate::proxy::reqwest_proxy())
                .http1_only()
                .redirect(reqwest::redirect::Policy::limited(10))
                .build()
                .map_err(|e| Error::Config(format!("HTTP client setup: {e}")))
        };
        let (http, upload_http) = match opts.read_timeout {
            Some(rt) => (build(tls_cfg.clone(), Some(rt))?, build(tls_cfg, None)?),
            None => {
                let h = build(tls_cfg, None)?;
                (h.clone(), h)
            }
        };
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None if opts.use_docker_config => {
                let l = crate::credentials::lookup(
                    host,
                    None,
                    &crate::credentials::LookupEnv::from_process(),
                )?;
                opts.credentials_source = l.source;
                opts.credentials_searched = l.tried;
                l.credentials
            }
            None => None,
        };
        Ok(Client {
            http,
            upload_http,
            base,
            host: api,
            opts,
            creds,
            auth: Mutex::new(AuthState::default()),
        })
    }

    /// A client for the registry of a parsed reference.
    pub fn for_reference(reference: &crate::Reference, opts: ClientOptions) -> Result<Client> {
        Client::new(&reference.registry, opts)
    }

    /// The API host this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The base URL (`https://host/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| Error::Protocol(format!("bad URL path {path:?}: {e}")))
    }

    /// Adds to an authentication error where the credentials came from, or, when there
    /// were none, where they were looked for and how to give some.
    pub(crate) fn auth_context(&self, e: Error) -> Error {
        let Error::Auth {
            url,
            status,
            detail,
        } = e
        else {
            return e;
        };
        let host = &self.host;
        let how = &self.opts.hints.credentials;
        let extra = match (&self.creds, &self.opts.credentials_source) {
            (Some(_), Some(src)) => format!(
                "the credentials from {src} were refused: check them, or pass others with {how}"
            ),
            (Some(_), None) => {
                format!("the credentials given were refused: check them, or pass others with {how}")
            }
            (None, _) => {
                let looked = if self.opts.credentials_searched.is_empty() {
                    "credentials were not looked up".to_string()
                } else {
                    format!("looked in: {}", self.opts.credentials_searched.join("; "))
                };
                format!(
                    "no credentials for {host} were found ({looked}); pass them with {how}, or \
                     log in with `docker login {host}` or `skopeo login {host}`"
                )
            }
        };
        Error::Auth {
            url,
            status,
            detail: format!("{detail}; {extra}"),
        }
    }

    // ---------------------------------------------------------------- API

    /// `GET /v2/`: checks reachability, TLS and credentials.
    pub fn ping(&self) -> Result<()> {
        self.simple(
            Method::GET,
            "v2/",
            &[],
            ReqBody::Empty,
            &[],
            &[200],
            "registry API /v2/",
        )?;
        Ok(())
    }
}
