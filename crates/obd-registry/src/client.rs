//! The blocking registry client.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use sha2::{Digest as _, Sha256, Sha512};
use tracing::{debug, warn};
use url::Url;

use crate::auth::{parse_www_authenticate, Challenge, Credentials};
use crate::error::{display_url, truncate_body, Error, Result};
use crate::reference::{api_host, validate_digest, validate_repository};
use crate::tls;
use crate::types::*;

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
    /// When `credentials` is `None`, look the host up in the docker config.
    pub use_docker_config: bool,
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

/// Outcome of [`Client::push_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had the blob (HEAD said so); nothing was sent.
    AlreadyExists,
    /// The blob was uploaded.
    Uploaded,
}

/// Token scope for pulling `repo`.
pub fn scope_pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// Token scope for pushing to `repo`.
pub fn scope_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

#[derive(Debug, Clone)]
enum AuthScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    token: String,
    expires: Instant,
}

#[derive(Default)]
struct AuthState {
    scheme: Option<AuthScheme>,
    tokens: HashMap<String, CachedToken>,
}

/// A request body, and whether it can be sent again.
enum ReqBody {
    Empty,
    /// Shared, so a retry re-sends it without a copy.
    Bytes(bytes::Bytes),
    /// Sent at most once.
    Stream(Option<(Box<dyn Read + Send>, u64)>),
}

impl ReqBody {
    fn rewindable(&self) -> bool {
        !matches!(self, ReqBody::Stream(_))
    }
    fn take(&mut self) -> Result<Option<Body>> {
        Ok(match self {
            ReqBody::Empty => None,
            ReqBody::Bytes(b) => Some(Body::from(b.clone())),
            ReqBody::Stream(s) => {
                let (r, len) = s.take().ok_or_else(|| {
                    Error::Protocol("streamed request body cannot be sent twice".into())
                })?;
                Some(Body::sized(r, len))
            }
        })
    }
}

/// Where upload bytes come from: a one-shot stream, or something that can be reopened so
/// that a failed upload is restarted from scratch.
type Opener = Box<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync>;

enum UploadSource {
    Once(Option<Box<dyn Read + Send>>),
    Reopen(Opener),
    /// Bytes in memory: one `PUT` with the whole blob as a single buffer.
    Shared(bytes::Bytes),
}

impl UploadSource {
    fn open(&mut self) -> Result<Box<dyn Read + Send>> {
        match self {
            UploadSource::Once(r) => r.take().ok_or_else(|| {
                Error::Protocol("upload stream already consumed; cannot retry".into())
            }),
            UploadSource::Reopen(f) => Ok(f()?),
            UploadSource::Shared(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
        }
    }
    fn rewindable(&self) -> bool {
        matches!(self, UploadSource::Reopen(_) | UploadSource::Shared(_))
    }
}

/// Checks the digest a registry reports for a blob upload it committed.
fn check_committed(resp: &Response, digest: &str, what: &str) -> Result<()> {
    match header_str(resp.headers(), "docker-content-digest") {
        Some(d) if d != digest => Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual: d.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A status by which a registry refuses an upload session (unknown or invalid session,
/// range not satisfiable, digest of the bytes received wrong): a client that still has
/// every byte can start a new session.
fn session_refused(e: &Error) -> bool {
    matches!(
        e,
        Error::Status {
            code: 400 | 404 | 416,
            ..
        }
    ) || matches!(e, Error::DigestMismatch { .. })
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

fn network_err(url: &Url, detail: impl Into<String>) -> Error {
    Error::Network {
        url: display_url(url),
        detail: detail.into(),
    }
}

/// The deadline a request ran under, named in the error when it expires.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// [`ClientOptions::read_timeout`].
    Read(Option<Duration>),
    /// The total deadline of a blob upload request carrying `bytes` bytes.
    Upload { total: Duration, bytes: u64 },
}

impl Deadline {
    fn describe(&self) -> String {
        match self {
            Deadline::Read(Some(rt)) => format!(
                "timed out: no data from the registry for {} (read timeout)",
                fmt_secs(*rt)
            ),
            Deadline::Read(None) => "timed out".into(),
            Deadline::Upload { total, bytes } => format!(
                "timed out: upload request of {bytes} bytes not done within its {} deadline \
                 (2 x read timeout + size at the minimum upload rate)",
                fmt_secs(*total)
            ),
        }
    }
}

/// `2 s`, `1.5 s`.
fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Did reading a response body fail because a timeout expired?
fn is_timeout_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<reqwest::Error>())
            .is_some_and(|r| r.is_timeout())
}

/// Describes an error reading a response body: its whole source chain, led by the expired
/// read timeout when that is the cause.
fn read_error_detail(e: &io::Error, read_timeout: Option<Duration>) -> String {
    let mut detail = e.to_string();
    let mut src = e.get_ref().and_then(|i| i.source());
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    if is_timeout_io(e) {
        format!("{}: {detail}", Deadline::Read(read_timeout).describe())
    } else {
        detail
    }
}

/// Classify a transport error: (error, transient?). `deadline` is named when it expired.
fn transport_error(e: reqwest::Error, url: &Url, deadline: Deadline) -> (Error, bool) {
    let mut transient = e.is_connect() || e.is_timeout();
    let mut tls_err = false;
    let timeout_note = match (e.is_timeout(), e.is_connect()) {
        (true, true) => Some("timed out connecting".to_string()),
        (true, false) => Some(deadline.describe()),
        _ => None,
    };
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        if s.is::<rustls::Error>() {
            tls_err = true;
        }
        if let Some(se) = s.downcast_ref::<SourceError>().or_else(|| {
            s.downcast_ref::<io::Error>()
                .and_then(|i| i.get_ref())
                .and_then(|i| i.downcast_ref::<SourceError>())
        }) {
            return (
                Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, se.0.clone())),
                false,
            );
        }
        if let Some(ioe) = s.downcast_ref::<io::Error>() {
            if ioe.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
                tls_err = true;
            }
            if matches!(
                ioe.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
            ) {
                transient = true;
            }
        }
        src = s.source();
    }
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
        tls_err = true;
    }
    if lower.contains("connection reset")
        || lower.contains("connection closed")
        || lower.contains("broken pipe")
    {
        transient = true;
    }
    if let Some(note) = timeout_note {
        detail = format!("{note}: {detail}");
    }
    if let Some(p) = crate::proxy::for_url(url) {
        // Name the proxy: it, not the registry, may be what failed (HTTPS_PROXY/HTTP_PROXY;
        // NO_PROXY sends a host direct).
        detail = format!("through the proxy {p} (from HTTPS_PROXY/HTTP_PROXY): {detail}");
    }
    if tls_err {
        (
            Error::Tls {
                url: display_url(url),
                detail,
            },
            false,
        )
    } else {
        (network_err(url, detail), transient)
    }
}

#[derive(serde::Deserialize)]
struct DistErrors {
    #[serde(default)]
    errors: Vec<DistError>,
}

#[derive(serde::Deserialize)]
struct DistError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Turn a non-success response into a typed error. `what` names the object for messages.
fn status_error(method: &Method, url: &Url, resp: Response, what: &str) -> Error {
    let code = resp.status().as_u16();
    let mut body = Vec::new();
    let _ = resp.take(16 * 1024).read_to_end(&mut body);
    let errs: Vec<DistError> = serde_json::from_slice::<DistErrors>(&body)
        .map(|e| e.errors)
        .unwrap_or_default();
    let codes: Vec<&str> = errs.iter().map(|e| e.code.as_str()).collect();
    let summary = if errs.is_empty() {
        truncate_body(&body)
    } else {
        truncate_body(
            errs.iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ")
                .as_bytes(),
        )
    };
    let not_found_code = codes
        .iter()
        .find(|c| matches!(**c, "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN"));
    if code == 401
        || code == 403
        || codes
            .iter()
            .any(|c| matches!(*c, "DENIED" | "UNAUTHORIZED"))
    {
        return Error::Auth {
            url: display_url(url),
            status: code,
            detail: if summary.is_empty() {
                "access denied".into()
            } else {
                summary
            },
        };
    }
    if code == 404 || not_found_code.is_some() {
        return Error::NotFound {
            what: what.to_string(),
            code: not_found_code.map(|c| c.to_string()),
        };
    }
    if codes.contains(&"DIGEST_INVALID") {
        return Error::DigestMismatch {
            what: what.to_string(),
            expected: what.to_string(),
            actual: format!("content rejected by the registry ({summary})"),
        };
    }
    if codes.contains(&"MANIFEST_INVALID") && summary.contains("schema1") {
        return Error::Unsupported(summary);
    }
    Error::Status {
        method: method.to_string(),
        url: display_url(url),
        code,
        body: summary,
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, "content-length").and_then(|v| v.trim().parse().ok())
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_str(h, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
}

enum DigestHasher {
    S256(Sha256),
    S512(Sha512),
}

impl DigestHasher {
    fn for_digest(d: &str) -> Result<Self> {
        match d.split_once(':').map(|x| x.0) {
            Some("sha256") => Ok(DigestHasher::S256(Sha256::new())),
            Some("sha512") => Ok(DigestHasher::S512(Sha512::new())),
            _ => Err(Error::Unsupported(format!("digest algorithm of {d:?}"))),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            DigestHasher::S256(h) => h.update(b),
            DigestHasher::S512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            DigestHasher::S256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            DigestHasher::S512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A streamed blob body that verifies its digest (and `Content-Length`) as it is read.
///
/// The final `read` returning 0 happens only if everything matched; otherwise it returns an
/// `io::Error` of kind `InvalidData` (digest/size mismatch) or the network error, wrapping a
/// typed [`Error`] (recover it with [`Error::from_io`]).
pub struct BlobReader {
    inner: Response,
    hasher: Option<DigestHasher>,
    expected: String,
    size: Option<u64>,
    read: u64,
    url: Url,
    verified: bool,
    /// How to continue the body with a ranged GET after it broke off.
    resume: Option<Resume>,
    /// The client's read timeout, named in errors when it expired.
    read_timeout: Option<Duration>,
}

/// What a [`BlobReader`] needs to re-request the rest of a blob.
struct Resume {
    http: reqwest::blocking::Client,
    /// Sent only when the body comes from the registry host itself (not a redirect).
    auth: Option<HeaderValue>,
    retries: u32,
    base_delay: Duration,
    attempts: u32,
}

impl BlobReader {
    /// The size announced by the registry (`Content-Length`), if any.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
    /// The digest being verified.
    pub fn digest(&self) -> &str {
        &self.expected
    }

    /// After the body broke off at `self.read`, asks for the rest (`Range`), with backoff.
    /// True when `inner` now continues the blob.
    fn resume(&mut self, why: &str) -> bool {
        let Some(rs) = self.resume.as_mut() else {
            return false;
        };
        while rs.attempts < rs.retries {
            let d = rs
                .base_delay
                .saturating_mul(1u32 << rs.attempts.min(10))
                .min(Duration::from_secs(10));
            rs.attempts += 1;
            warn!(url = %display_url(&self.url), offset = self.read, error = why, delay_ms = d.as_millis() as u64, "blob body broke off; resuming");
            std::thread::sleep(d);
            let mut rb = rs
                .http
                .get(self.url.clone())
                .header("Range", format!("bytes={}-", self.read));
            if let Some(a) = &rs.auth {
                rb = rb.header(AUTHORIZATION, a.clone());
            }
            let mut resp = match rb.send() {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e.without_url(), "resuming the blob failed");
                    continue;
                }
            };
            match resp.status().as_u16() {
                206 => {
                    let start = header_str(resp.headers(), "content-range")
                        .and_then(|v| v.trim().strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if start != Some(self.read) {
                        debug!(?start, "resumed blob starts elsewhere; not using it");
                        continue;
                    }
                }
                200 => {
                    // Range ignored: skip what was read already (the digest still covers
                    // every byte that follows).
                    let skip = io::copy(&mut (&mut resp).take(self.read), &mut io::sink());
                    if skip.ok() != Some(self.read) {
                        continue;
                    }
                }
                st => {
                    debug!(status = st, "resuming the blob failed");
                    continue;
                }
            }
            self.inner = resp;
            return true;
        }
        false
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return if self.verified {
                Ok(())
            } else {
                Err(io::Error::other("blob stream already failed"))
            };
        };
        if let Some(sz) = self.size {
            if sz != self.read {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    Error::SizeMismatch {
                        what: self.expected.clone(),
                        expected: sz,
                        actual: self.read,
                    },
                ));
            }
        }
        let actual = h.finish();
        if actual != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::DigestMismatch {
                    what: format!("blob {}", self.expected),
                    expected: self.expected.clone(),
                    actual,
                },
            ));
        }
        self.verified = true;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.verified {
            return Ok(0);
        }
        if self.hasher.is_none() {
            return Err(io::Error::other("blob stream already failed"));
        }
        let r = loop {
            match self.inner.read(buf) {
                Ok(0) if self.size.is_some_and(|s| self.read < s) => {
                    if !self.resume("body ended early") {
                        break Ok(0);
                    }
                }
                Err(e)
                    if e.kind() != io::ErrorKind::Interrupted
                        && self.resume(&read_error_detail(&e, self.read_timeout)) => {}
                r => break r,
            }
        };
        match r {
            Ok(0) => {
                self.finish()?;
                Ok(0)
            }
            Ok(n) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                self.read += n as u64;
                if self.size.is_some_and(|s| self.read > s) {
                    self.hasher = None;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Error::SizeMismatch {
                            what: self.expected.clone(),
                            expected: self.size.unwrap_or(0),
                            actual: self.read,
                        },
                    ));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.hasher = None;
                let kind = e.kind();
                Err(io::Error::new(
                    kind,
                    network_err(
                        &self.url,
                        format!(
                            "reading blob body at byte {}: {}",
                            self.read,
                            read_error_detail(&e, self.read_timeout)
                        ),
                    ),
                ))
            }
        }
    }
}

/// A local upload source failed (ended early); not a network problem and not retried.
#[derive(Debug)]
struct SourceError(String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Reads exactly `remaining` bytes from `inner`; a short source is an error (so a truncated
/// local file never makes the server wait for bytes that will not come).
struct ExactReader {
    inner: Box<dyn Read + Send>,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                SourceError(format!(
                    "upload source ended {} bytes before the announced size",
                    self.remaining
                )),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `sha256-<hex>`: the referrers fallback tag for a subject digest.
pub fn referrers_fallback_tag(subject_digest: &str) -> String {
    subject_digest.replacen(':', "-", 1)
}

fn media_type_of(h: &HeaderMap) -> Option<String> {
    header_str(h, "content-type").map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

fn is_digest(s: &str) -> bool {
    s.contains(':')
}

fn compute_digest_like(expected: &str, data: &[u8]) -> Result<String> {
    let mut h = DigestHasher::for_digest(expected)?;
    h.update(data);
    Ok(h.finish())
}

impl Client {
    /// A client for `host` (`registry.example.com`, `localhost:5000`, `docker.io`).
    pub fn new(host: &str, opts: ClientOptions) -> Result<Client> {
        let api = api_host(host).to_string();
        if api.is_empty() || api.contains('/') || api.contains("://") {
            return Err(Error::Config(format!("bad registry host {host:?}")));
        }
        let scheme = if opts.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api}/"))
            .map_err(|e| Error::Config(format!("bad registry host {host:?}: {e}")))?;
        let tls_cfg = tls::build_config(&tls::TlsInputs {
            host: &api,
            insecure_skip_verify: opts.insecure_skip_verify,
            cert_dirs: &opts.cert_dirs,
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
            None if opts.use_docker_config => Credentials::from_docker_config(host)?,
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

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .opts
            .retry_base_delay
            .saturating_mul(1u32 << attempt.min(10));
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 50_000_000)
            .unwrap_or(0);
        base.min(Duration::from_secs(10)) + Duration::from_nanos(u64::from(jitter))
    }

    // ---------------------------------------------------------------- auth

    fn scope_key(scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s.join(" ")
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token if the
    /// registry uses Bearer auth and none is cached.
    fn authorization(&self, scopes: &[String]) -> Result<Option<HeaderValue>> {
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let value = match st.scheme.clone() {
            None => return Ok(None),
            Some(AuthScheme::Basic) => match &self.creds {
                Some(c) => c.basic_header(),
                None => return Ok(None),
            },
            Some(AuthScheme::Bearer { realm, service }) => {
                let key = Self::scope_key(scopes);
                let now = Instant::now();
                match st.tokens.get(&key) {
                    Some(t) if t.expires > now => format!("Bearer {}", t.token),
                    _ => {
                        let t = self.fetch_token(&realm, service.as_deref(), scopes)?;
                        let v = format!("Bearer {}", t.token);
                        st.tokens.insert(key, t);
                        v
                    }
                }
            }
        };
        let mut hv = HeaderValue::from_str(&value).map_err(|_| {
            Error::Config("credentials contain characters not allowed in HTTP headers".into())
        })?;
        hv.set_sensitive(true);
        Ok(Some(hv))
    }

    /// React to a 401. Returns whether the request should be retried.
    fn handle_challenge(
        &self,
        challenges: &[Challenge],
        scopes: &[String],
        sent: Option<&str>,
    ) -> Result<bool> {
        let sent_auth = sent.is_some();
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = b.param("realm").filter(|r| !r.is_empty()) else {
                return Err(Error::Protocol("Bearer challenge without realm".into()));
            };
            let realm = realm.to_string();
            let service = b.param("service").map(|s| s.to_string());
            let mut want: Vec<String> = scopes.to_vec();
            if let Some(sc) = b.param("scope") {
                for s in sc.split(' ').filter(|s| !s.is_empty()) {
                    if !want.iter().any(|w| w == s) {
                        want.push(s.to_string());
                    }
                }
            }
            st.scheme = Some(AuthScheme::Bearer {
                realm: realm.clone(),
                service: service.clone(),
            });
            // Another thread may have fetched a token for these scopes meanwhile.
            let challenge_adds_scope = want.len() > scopes.len();
            if !challenge_adds_scope {
                if let Some(t) = st.tokens.get(&Self::scope_key(scopes)) {
                    let fresh = t.expires > Instant::now();
                    if fresh && sent.is_none_or(|h| h != format!("Bearer {}", t.token)) {
                        return Ok(true);
                    }
                }
            }
            let token = self.fetch_token(&realm, service.as_deref(), &want)?;
            st.tokens.insert(Self::scope_key(scopes), token);
            return Ok(true);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let was_basic = matches!(st.scheme, Some(AuthScheme::Basic));
            st.scheme = Some(AuthScheme::Basic);
            // Credentials were already sent and refused: do not loop.
            return Ok(self.creds.is_some() && !(was_basic && sent_auth));
        }
        Ok(false)
    }

    /// [`Client::fetch_token_once`], retried like other requests when the token endpoint
    /// fails transiently (5xx, 429, dropped connections).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken> {
        let mut attempt = 0u32;
        loop {
            match self.fetch_token_once(realm, service, scopes) {
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    let d = self.backoff(attempt);
                    warn!(error = %e, delay_ms = d.as_millis() as u64, "token request failed; retrying");
                    std::thread::sleep(d);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn fetch_token_once(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken> {
        let mut url = Url::parse(realm)
            .map_err(|e| Error::Protocol(format!("bad token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        debug!(url = %display_url(&url), scopes = ?scopes, "requesting token (GET)");
        let mut rb = self.http.get(url.clone());
        if let Some(c) = &self.creds {
            let mut hv = HeaderValue::from_str(&c.basic_header())
                .map_err(|_| Error::Config("credentials contain invalid characters".into()))?;
            hv.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, hv);
        }
        let resp = rb
            .send()
            .map_err(|e| transport_error(e, &url, self.read_deadline()).0)?;
        let status = resp.status().as_u16();
        let resp = if status == 200 {
            resp
        } else if self.creds.is_some() && matches!(status, 400 | 401 | 403 | 404 | 405) {
            drop(resp);
            self.fetch_token_oauth(realm, service, scopes)?
        } else {
            return Err(match status_error(&Method::GET, &url, resp, "token") {
                Error::NotFound { .. } => Error::Auth {
                    url: display_url(&url),
                    status,
                    detail: "token endpoint not found".into(),
                },
                e => e,
            });
        };
        #[derive(serde::Deserialize)]
        struct TokenResp {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let mut body = Vec::new();
        resp.take(1 << 20).read_to_end(&mut body).map_err(|e| {
            network_err(
                &url,
                format!(
                    "reading token response: {}",
                    read_error_detail(&e, self.opts.read_timeout)
                ),
            )
        })?;
        let tr: TokenResp = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("token response is not JSON: {e}")))?;
        let token = tr
            .token
            .filter(|t| !t.is_empty())
            .or(tr.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                Error::Protocol("token response has neither token nor access_token".into())
            })?;
        let ttl = tr.expires_in.unwrap_or(60).max(10);
        Ok(CachedToken {
            token,
            expires: Instant::now() + Duration::from_secs(ttl.saturating_sub(5)),
        })
    }

    /// OAuth2 `grant_type=password` POST, used when the GET token request is refused.
    fn fetch_token_oauth(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Response> {
        let url = Url::parse(realm)
            .map_err(|e| Error::Protocol(format!("bad token realm {realm:?}: {e}")))?;
        let creds = self
            .creds
            .as_ref()
            .ok_or_else(|| Error::Protocol("OAuth2 token request without credentials".into()))?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "password");
        form.append_pair("client_id", "obdconv");
        form.append_pair("username", &creds.username);
        form.append_pair("password", &creds.password);
        if let Some(s) = service {
            form.append_pair("service", s);
        }
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        debug!(url = %display_url(&url), "requesting token (OAuth2 POST)");
        let resp = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .map_err(|e| transport_error(e, &url, self.read_deadline()).0)?;
        if resp.status().as_u16() == 200 {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        Err(match status_error(&Method::POST, &url, resp, "token") {
            Error::Status { body, .. } if matches!(status, 400 | 401 | 403 | 404 | 405) => {
                Error::Auth {
                    url: display_url(&url),
                    status,
                    detail: format!("token endpoint refused the credentials: {body}"),
                }
            }
            Error::NotFound { .. } => Error::Auth {
                url: display_url(&url),
                status,
                detail: "token endpoint refused the credentials".into(),
            },
            e => e,
        })
    }

    // ---------------------------------------------------------------- transport

    /// The deadline of requests sent with [`Client::send`].
    fn read_deadline(&self) -> Deadline {
        Deadline::Read(self.opts.read_timeout)
    }

    /// Total deadline of a blob upload request carrying `bytes` bytes (see
    /// [`ClientOptions::min_upload_rate`]); `None` when disabled.
    pub(crate) fn upload_deadline(&self, bytes: u64) -> Option<Duration> {
        let rt = self.opts.read_timeout?;
        let rate = self.opts.min_upload_rate;
        if rate == 0 {
            return None;
        }
        let transfer =
            Duration::try_from_secs_f64(bytes as f64 / rate as f64).unwrap_or(Duration::MAX);
        Some(rt.saturating_mul(2).saturating_add(transfer))
    }

    /// Send a request with auth and retries. Returns the response whatever its status,
    /// except for transport errors.
    fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: &mut ReqBody,
        scopes: &[String],
    ) -> Result<Response> {
        self.send_with(method, url, headers, body, scopes, None)
    }

    /// [`Client::send`] for a request that carries (or, for the final `PUT` of a chunked
    /// upload, commits) `bytes` bytes of a blob upload: sent under the upload deadline
    /// instead of the read timeout, and not re-sent after a transport failure, as the
    /// registry may have kept part of the body; the caller restarts the whole upload.
    fn send_upload(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: &mut ReqBody,
        scopes: &[String],
        bytes: u64,
    ) -> Result<Response> {
        self.send_with(method, url, headers, body, scopes, Some(bytes))
    }

    fn send_with(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: &mut ReqBody,
        scopes: &[String],
        upload: Option<u64>,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        let mut auth_rounds = 0u32;
        let (http, deadline) = match upload {
            None => (&self.http, self.read_deadline()),
            Some(bytes) => match self.upload_deadline(bytes) {
                Some(total) => (&self.upload_http, Deadline::Upload { total, bytes }),
                None => (&self.upload_http, Deadline::Read(None)),
            },
        };
        loop {
            let authz = self.authorization(scopes)?;
            let mut rb = http.request(method.clone(), url.clone());
            if let Deadline::Upload { total, .. } = deadline {
                rb = rb.timeout(total);
            }
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            let sent: Option<String> = authz
                .as_ref()
                .and_then(|a| a.to_str().ok().map(|s| s.to_string()));
            if let Some(a) = authz {
                rb = rb.header(AUTHORIZATION, a);
            }
            if let Some(b) = body.take()? {
                rb = rb.body(b);
            }
            let res = rb.send();
            match res {
                Err(e) => {
                    let (err, transient) = transport_error(e, url, deadline);
                    if transient
                        && upload.is_none()
                        && body.rewindable()
                        && attempt < self.opts.retries
                    {
                        let d = self.backoff(attempt);
                        warn!(%method, url = %display_url(url), error = %err, delay_ms = d.as_millis() as u64, "retrying");
                        std::thread::sleep(d);
                        attempt += 1;
                        continue;
                    }
                    return Err(err);
                }
                Ok(resp) => {
                    let st = resp.status().as_u16();
                    debug!(%method, url = %display_url(url), status = st, "response");
                    if st == 401 && auth_rounds < 2 && body.rewindable() {
                        let hdrs: Vec<String> = resp
                            .headers()
                            .get_all(WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(|s| s.to_string()))
                            .collect();
                        let chs = parse_www_authenticate(hdrs.iter().map(|s| s.as_str()));
                        if self.handle_challenge(&chs, scopes, sent.as_deref())? {
                            auth_rounds += 1;
                            continue;
                        }
                        return Ok(resp);
                    }
                    if matches!(st, 408 | 429 | 500 | 502 | 503 | 504)
                        && body.rewindable()
                        && attempt < self.opts.retries
                    {
                        let d =
                            retry_after(resp.headers()).unwrap_or_else(|| self.backoff(attempt));
                        warn!(%method, url = %display_url(url), status = st, delay_ms = d.as_millis() as u64, "retrying");
                        drop(resp);
                        std::thread::sleep(d);
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
            }
        }
    }

    fn expect(
        &self,
        method: Method,
        url: &Url,
        resp: Response,
        ok: &[u16],
        what: &str,
    ) -> Result<Response> {
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(status_error(&method, url, resp, what))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn simple(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        mut body: ReqBody,
        scopes: &[String],
        ok: &[u16],
        what: &str,
    ) -> Result<Response> {
        let url = self.url(path)?;
        let resp = self.send(method.clone(), &url, headers, &mut body, scopes)?;
        self.expect(method, &url, resp, ok, what)
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

    /// Fetch a manifest or index by tag or digest, keeping its exact bytes.
    ///
    /// Docker schema1 manifests give [`Error::Unsupported`]; a manifest fetched by digest
    /// must hash to that digest.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        validate_repository(repo)?;
        if is_digest(reference) {
            validate_digest(reference)?;
        }
        let what = format!("manifest {repo}:{reference}");
        let mut attempt = 0u32;
        let (bytes, header_mt, header_digest) = loop {
            let resp = self.simple(
                Method::GET,
                &format!("v2/{repo}/manifests/{reference}"),
                &[("Accept", MANIFEST_ACCEPT)],
                ReqBody::Empty,
                &[scope_pull(repo)],
                &[200],
                &what,
            )?;
            let header_mt = media_type_of(resp.headers());
            let header_digest =
                header_str(resp.headers(), "docker-content-digest").map(|s| s.to_string());
            let url = resp.url().clone();
            let mut bytes = Vec::new();
            match resp.take(64 << 20).read_to_end(&mut bytes) {
                Ok(_) => break (bytes, header_mt, header_digest),
                Err(e) => {
                    // A body that broke off or stalled: ask again.
                    let err = network_err(
                        &url,
                        format!(
                            "reading manifest: {}",
                            read_error_detail(&e, self.opts.read_timeout)
                        ),
                    );
                    if attempt >= self.opts.retries {
                        return Err(err);
                    }
                    let d = self.backoff(attempt);
                    warn!(manifest = %what, error = %err, delay_ms = d.as_millis() as u64, "retrying");
                    std::thread::sleep(d);
                    attempt += 1;
                }
            }
        };
        let media_type = classify_manifest(header_mt.as_deref(), &bytes, &what)?;
        let digest = if is_digest(reference) {
            let actual = compute_digest_like(reference, &bytes)?;
            if actual != reference {
                return Err(Error::DigestMismatch {
                    what,
                    expected: reference.to_string(),
                    actual,
                });
            }
            // Keep the sha256 as the canonical digest when another algorithm was used.
            if reference.starts_with("sha256:") {
                actual
            } else {
                sha256_digest(&bytes)
            }
        } else {
            let d = sha256_digest(&bytes);
            if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
                if h != d {
                    warn!(manifest = %what, header = %h, computed = %d, "Docker-Content-Digest differs from the content digest");
                }
            }
            d
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// `HEAD` a manifest: `None` if it does not exist.
    pub fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        validate_repository(repo)?;
        let what = format!("manifest {repo}:{reference}");
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self.send(
            Method::HEAD,
            &url,
            &[("Accept", MANIFEST_ACCEPT)],
            &mut ReqBody::Empty,
            &[scope_pull(repo)],
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.expect(Method::HEAD, &url, resp, &[200], &what)?;
        let h = resp.headers();
        Ok(Some(ManifestHead {
            digest: header_str(h, "docker-content-digest").map(|s| s.to_string()),
            media_type: media_type_of(h),
            size: content_length(h),
        }))
    }

    /// `HEAD` a blob: its size if present, `None` if not.
    pub fn head_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(
            Method::HEAD,
            &url,
            &[],
            &mut ReqBody::Empty,
            &[scope_pull(repo)],
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.expect(Method::HEAD, &url, resp, &[200], &format!("blob {digest}"))?;
        Ok(Some(content_length(resp.headers()).unwrap_or(0)))
    }

    /// Stream a blob, verifying its digest while reading (see [`BlobReader`]).
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<BlobReader> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        let hasher = DigestHasher::for_digest(digest)?;
        let resp = self.simple(
            Method::GET,
            &format!("v2/{repo}/blobs/{digest}"),
            &[],
            ReqBody::Empty,
            &[scope_pull(repo)],
            &[200],
            &format!("blob {repo}@{digest}"),
        )?;
        let size = content_length(resp.headers());
        let url = resp.url().clone();
        let same_host = url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default();
        let auth = if same_host {
            self.authorization(&[scope_pull(repo)]).ok().flatten()
        } else {
            None
        };
        Ok(BlobReader {
            url,
            inner: resp,
            hasher: Some(hasher),
            expected: digest.to_string(),
            size,
            read: 0,
            verified: false,
            resume: Some(Resume {
                http: self.http.clone(),
                auth,
                retries: self.opts.retries,
                base_delay: self.opts.retry_base_delay,
                attempts: 0,
            }),
            read_timeout: self.opts.read_timeout,
        })
    }

    /// Fetch `len` bytes of a blob starting at `offset` (HTTP `Range`; not verified, since
    /// a part cannot be checked against the digest). Shorter if the blob ends first.
    pub fn get_blob_range(
        &self,
        repo: &str,
        digest: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={}-{}", offset, offset.saturating_add(len - 1));
        let resp = self.simple(
            Method::GET,
            &format!("v2/{repo}/blobs/{digest}"),
            &[("Range", &range)],
            ReqBody::Empty,
            &[scope_pull(repo)],
            &[200, 206, 416],
            &format!("blob {repo}@{digest}"),
        )?;
        let url = resp.url().clone();
        let status = resp.status().as_u16();
        let mut out = Vec::new();
        let rt = self.opts.read_timeout;
        let rd = |e: io::Error| {
            network_err(
                &url,
                format!("reading blob range: {}", read_error_detail(&e, rt)),
            )
        };
        match status {
            416 => {}
            206 => {
                resp.take(len).read_to_end(&mut out).map_err(rd)?;
            }
            _ => {
                // The server ignored Range: skip to the offset.
                let mut r = resp;
                io::copy(&mut (&mut r).take(offset), &mut io::sink()).map_err(rd)?;
                r.take(len).read_to_end(&mut out).map_err(rd)?;
            }
        }
        Ok(out)
    }

    /// Fetch a whole blob into memory (verified). For configs and other small blobs.
    pub fn get_blob_bytes(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let mut r = self.get_blob(repo, digest)?;
        let mut out = Vec::with_capacity(r.size().unwrap_or(0).min(64 << 20) as usize);
        r.read_to_end(&mut out).map_err(Error::from_io)?;
        Ok(out)
    }

    /// Push a blob from a one-shot stream. `HEAD` first (skipped if present), then an upload
    /// session: one streamed `PUT`, or `PATCH` chunks when `chunk_size` is set and smaller than
    /// `size`. A stream cannot be re-read, so transient failures are not retried here; use
    /// [`Client::push_blob_file`] or [`Client::push_blob_bytes`] for retrying uploads.
    pub fn push_blob<R: Read + Send + 'static>(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        reader: R,
    ) -> Result<BlobPush> {
        self.push_blob_source(
            repo,
            digest,
            size,
            UploadSource::Once(Some(Box::new(reader))),
        )
    }

    /// Push in-memory bytes; returns the digest and what happened. Retried on transient errors.
    pub fn push_blob_bytes(&self, repo: &str, data: Vec<u8>) -> Result<(String, BlobPush)> {
        let digest = sha256_digest(&data);
        let size = data.len() as u64;
        let data = bytes::Bytes::from(data);
        let src = UploadSource::Reopen(Box::new(move || {
            Ok(Box::new(io::Cursor::new(data.clone())) as Box<dyn Read + Send>)
        }));
        let r = self.push_blob_source(repo, &digest, size, src)?;
        Ok((digest, r))
    }

    /// Push bytes the caller holds in memory, whose digest it knows (the registry checks
    /// it): `HEAD` first, then one `PUT` of the whole buffer, restarted after transient
    /// failures.
    pub fn push_blob_shared(
        &self,
        repo: &str,
        digest: &str,
        data: bytes::Bytes,
    ) -> Result<BlobPush> {
        let size = data.len() as u64;
        self.push_blob_source(repo, digest, size, UploadSource::Shared(data))
    }

    /// Push a file whose digest and size the caller already knows (the registry checks the
    /// digest when the upload completes). The file is reopened to restart the upload after a
    /// transient failure.
    pub fn push_blob_file_as(
        &self,
        repo: &str,
        path: &Path,
        digest: &str,
        size: u64,
    ) -> Result<BlobPush> {
        if let Some(chunk) = self.opts.chunk_size.filter(|c| *c > 0 && *c < size) {
            if self.already_present(repo, digest)? {
                return Ok(BlobPush::AlreadyExists);
            }
            return self.upload_file_chunked(repo, path, digest, size, chunk);
        }
        let p = path.to_path_buf();
        let src = UploadSource::Reopen(Box::new(move || {
            Ok(Box::new(std::fs::File::open(&p)?) as Box<dyn Read + Send>)
        }));
        self.push_blob_source(repo, digest, size, src)
    }

    /// Hash a file and push it; returns (digest, size, outcome). The file is reopened to
    /// restart the upload after a transient failure.
    pub fn push_blob_file(&self, repo: &str, path: &Path) -> Result<(String, u64, BlobPush)> {
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        let r = self.push_blob_file_as(repo, path, &digest, size)?;
        Ok((digest, size, r))
    }

    /// Pushes the file at `path` (`size` bytes, `digest`) in `PATCH` chunks of `chunk`
    /// bytes. After a transient failure the upload resumes in the same session from the
    /// offset the registry reports (a registry that kept the bytes is not sent them again);
    /// when the registry dropped the session (as distribution does after a chunk cut
    /// half-way), it starts over.
    fn upload_file_chunked(
        &self,
        repo: &str,
        path: &Path,
        digest: &str,
        size: u64,
        chunk: u64,
    ) -> Result<BlobPush> {
        let file = std::fs::File::open(path)?;
        let scopes = [scope_push(repo)];
        let what = format!("blob {digest}");
        let mut attempt = 0u32;
        'session: loop {
            let (_, loc) = self.start_upload(repo, "", &scopes)?;
            let mut loc =
                loc.ok_or_else(|| Error::Protocol("upload POST returned no Location".into()))?;
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset) as usize;
                let mut buf = vec![0u8; n];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, offset)?;
                let err = match self.patch_chunk(&loc, offset, buf.into(), &scopes, &what) {
                    Ok(next) => {
                        loc = next;
                        offset += n as u64;
                        continue;
                    }
                    Err(e) if e.is_transient() && attempt < self.opts.retries => e,
                    // The session went bad (unknown, offset or state refused), e.g. after an
                    // earlier chunk was cut half-way: the file is intact, start over.
                    Err(e) if session_refused(&e) && attempt < self.opts.retries => {
                        attempt += 1;
                        warn!(repo, digest, offset, error = %e, "upload session refused; starting over");
                        continue 'session;
                    }
                    Err(e) => return Err(e),
                };
                let d = self.backoff(attempt);
                attempt += 1;
                warn!(repo, digest, offset, error = %err, "blob chunk failed; resuming");
                std::thread::sleep(d);
                match self.upload_status(&loc, &scopes) {
                    Ok((l, at)) if at <= size => {
                        loc = l;
                        offset = at;
                    }
                    _ => continue 'session,
                }
            }
            loc.query_pairs_mut().append_pair("digest", digest);
            loop {
                let put = self
                    .send_upload(
                        Method::PUT,
                        &loc,
                        &[("Content-Length", "0")],
                        &mut ReqBody::Empty,
                        &scopes,
                        size,
                    )
                    .and_then(|r| self.expect(Method::PUT, &loc, r, &[200, 201, 202, 204], &what));
                match put {
                    Ok(resp) => {
                        check_committed(&resp, digest, &what)?;
                        return Ok(BlobPush::Uploaded);
                    }
                    // The commit may have happened with its answer lost.
                    Err(e) if e.is_transient() && attempt < self.opts.retries => {
                        let d = self.backoff(attempt);
                        attempt += 1;
                        warn!(repo, digest, error = %e, "blob commit failed; retrying");
                        std::thread::sleep(d);
                        if self.head_blob(repo, digest).ok().flatten().is_some() {
                            return Ok(BlobPush::Uploaded);
                        }
                    }
                    Err(e) if session_refused(&e) && attempt < self.opts.retries => {
                        attempt += 1;
                        warn!(repo, digest, error = %e, "upload commit refused; starting over");
                        continue 'session;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Sends one `PATCH` of `chunk` at `offset` of the upload at `loc`; returns the
    /// session's next location.
    fn patch_chunk(
        &self,
        loc: &Url,
        offset: u64,
        chunk: bytes::Bytes,
        scopes: &[String],
        what: &str,
    ) -> Result<Url> {
        let n = chunk.len() as u64;
        let range = format!("{}-{}", offset, offset + n - 1);
        let len = n.to_string();
        let resp = self.send_upload(
            Method::PATCH,
            loc,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
                ("Content-Length", &len),
            ],
            &mut ReqBody::Bytes(chunk),
            scopes,
            n,
        )?;
        let resp = self.expect(Method::PATCH, loc, resp, &[201, 202, 204], what)?;
        self.next_location(loc, &resp)
    }

    /// `GET` of an upload session: its (new) location and the bytes the registry holds.
    fn upload_status(&self, loc: &Url, scopes: &[String]) -> Result<(Url, u64)> {
        let resp = self.send(Method::GET, loc, &[], &mut ReqBody::Empty, scopes)?;
        let resp = self.expect(Method::GET, loc, resp, &[204], "upload status")?;
        let next = self.next_location(loc, &resp)?;
        // `Range: 0-<last byte>`; an empty upload says `0-0` too, read as 0 (a registry
        // holding one byte then refuses the next chunk's range, and the upload starts over).
        let held = match header_str(resp.headers(), "range").and_then(|r| r.split_once('-')) {
            Some((_, end)) => match end.trim().parse::<u64>() {
                Ok(0) => 0,
                Ok(e) => e + 1,
                Err(_) => return Err(Error::Protocol(format!("bad upload Range {end:?}"))),
            },
            None => 0,
        };
        Ok((next, held))
    }

    /// Checks the names, then whether the registry has the blob already (`HEAD`).
    fn already_present(&self, repo: &str, digest: &str) -> Result<bool> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        let present = self.head_blob(repo, digest)?.is_some();
        if present {
            debug!(repo, digest, "blob already present");
        }
        Ok(present)
    }

    fn push_blob_source(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        mut source: UploadSource,
    ) -> Result<BlobPush> {
        if self.already_present(repo, digest)? {
            return Ok(BlobPush::AlreadyExists);
        }
        let mut attempt = 0u32;
        loop {
            match self.upload_once(repo, digest, size, &mut source) {
                Ok(()) => return Ok(BlobPush::Uploaded),
                Err(e)
                    if e.is_transient() && source.rewindable() && attempt < self.opts.retries =>
                {
                    let d = self.backoff(attempt);
                    warn!(repo, digest, error = %e, "blob upload failed; restarting it");
                    std::thread::sleep(d);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_upload(
        &self,
        repo: &str,
        query: &str,
        scopes: &[String],
    ) -> Result<(u16, Option<Url>)> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/{query}"))?;
        let resp = self.send(
            Method::POST,
            &url,
            &[("Content-Length", "0")],
            &mut ReqBody::Empty,
            scopes,
        )?;
        let resp = self.expect(
            Method::POST,
            &url,
            resp,
            &[201, 202],
            &format!("upload to {repo}"),
        )?;
        let status = resp.status().as_u16();
        let loc = match header_str(resp.headers(), "location") {
            Some(l) => Some(
                url.join(l)
                    .map_err(|e| Error::Protocol(format!("bad upload Location: {e}")))?,
            ),
            None => None,
        };
        Ok((status, loc))
    }

    fn next_location(&self, current: &Url, resp: &Response) -> Result<Url> {
        match header_str(resp.headers(), "location") {
            Some(l) => current
                .join(l)
                .map_err(|e| Error::Protocol(format!("bad upload Location: {e}"))),
            None => Ok(current.clone()),
        }
    }

    fn upload_once(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        source: &mut UploadSource,
    ) -> Result<()> {
        let scopes = [scope_push(repo)];
        let (_, loc) = self.start_upload(repo, "", &scopes)?;
        let mut loc =
            loc.ok_or_else(|| Error::Protocol("upload POST returned no Location".into()))?;
        let what = format!("blob {digest}");
        let chunk = self.opts.chunk_size.filter(|c| *c > 0 && *c < size);
        let final_body = if let UploadSource::Shared(b) = source {
            ReqBody::Bytes(b.clone())
        } else if let Some(chunk) = chunk {
            let mut reader = ExactReader {
                inner: source.open()?,
                remaining: size,
            };
            let mut offset = 0u64;
            while offset < size {
                let mut buf = vec![0u8; chunk.min(size - offset) as usize];
                let n = read_full(&mut reader, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                loc = self.patch_chunk(&loc, offset, buf.into(), &scopes, &what)?;
                offset += n as u64;
            }
            ReqBody::Empty
        } else {
            let reader = ExactReader {
                inner: source.open()?,
                remaining: size,
            };
            ReqBody::Stream(Some((Box::new(reader), size)))
        };
        loc.query_pairs_mut().append_pair("digest", digest);
        let is_empty = matches!(final_body, ReqBody::Empty);
        let mut body = final_body;
        let headers: &[(&str, &str)] = if is_empty {
            &[("Content-Length", "0")]
        } else {
            &[("Content-Type", "application/octet-stream")]
        };
        // The final PUT carries the whole blob, or commits the chunks sent: either way the
        // registry may need time in proportion to the size.
        let resp = self.send_upload(Method::PUT, &loc, headers, &mut body, &scopes, size)?;
        let resp = self.expect(Method::PUT, &loc, resp, &[200, 201, 202, 204], &what)?;
        check_committed(&resp, digest, &what)
    }

    /// Cross-repository mount of `digest` from `from_repo` into `repo` (same registry).
    /// `true` if mounted (201); `false` if the registry opened a normal upload instead (202),
    /// which is cancelled.
    pub fn mount_blob(&self, repo: &str, from_repo: &str, digest: &str) -> Result<bool> {
        validate_repository(repo)?;
        validate_repository(from_repo)?;
        validate_digest(digest)?;
        let mut q = url::form_urlencoded::Serializer::new(String::from("?"));
        q.append_pair("mount", digest);
        q.append_pair("from", from_repo);
        let scopes = [scope_push(repo), scope_pull(from_repo)];
        let (status, loc) = self.start_upload(repo, &q.finish(), &scopes)?;
        if status == 201 {
            return Ok(true);
        }
        if let Some(loc) = loc {
            // Best effort: cancel the upload session the registry opened instead.
            if let Ok(r) = self.send(Method::DELETE, &loc, &[], &mut ReqBody::Empty, &scopes) {
                debug!(
                    status = r.status().as_u16(),
                    "cancelled unused upload session"
                );
            }
        }
        Ok(false)
    }

    /// `PUT` a manifest by tag or digest; returns its sha256 digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        Ok(self
            .put_manifest_full(repo, reference, media_type, bytes)?
            .digest)
    }

    /// Like [`Client::put_manifest`], also returning the `OCI-Subject` header.
    pub fn put_manifest_full(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PushedManifest> {
        validate_repository(repo)?;
        let digest = sha256_digest(bytes);
        let what = format!("manifest {repo}:{reference}");
        if is_digest(reference) {
            validate_digest(reference)?;
            let actual = compute_digest_like(reference, bytes)?;
            if actual != reference {
                return Err(Error::DigestMismatch {
                    what,
                    expected: reference.to_string(),
                    actual,
                });
            }
        }
        let resp = self.simple(
            Method::PUT,
            &format!("v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            ReqBody::Bytes(bytes::Bytes::copy_from_slice(bytes)),
            &[scope_push(repo)],
            &[200, 201, 202, 204],
            &what,
        )?;
        if let Some(d) = header_str(resp.headers(), "docker-content-digest") {
            if d.starts_with("sha256:") && d != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: digest,
                    actual: d.to_string(),
                });
            }
        }
        Ok(PushedManifest {
            digest,
            oci_subject: header_str(resp.headers(), "oci-subject").map(|s| s.to_string()),
        })
    }

    /// Delete a manifest by digest (the registry must allow deletes).
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        self.simple(
            Method::DELETE,
            &format!("v2/{repo}/manifests/{digest}"),
            &[],
            ReqBody::Empty,
            &[format!("repository:{repo}:delete"), scope_push(repo)],
            &[200, 202, 204],
            &format!("manifest {repo}@{digest}"),
        )?;
        Ok(())
    }

    /// All tags of a repository (follows `Link` pagination).
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        validate_repository(repo)?;
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut url = self.url(&format!("v2/{repo}/tags/list"))?;
        for _ in 0..1000 {
            let resp = self.send(
                Method::GET,
                &url,
                &[],
                &mut ReqBody::Empty,
                &[scope_pull(repo)],
            )?;
            let resp = self.expect(
                Method::GET,
                &url,
                resp,
                &[200],
                &format!("repository {repo}"),
            )?;
            let next = header_str(resp.headers(), "link").and_then(|l| {
                let start = l.find('<')? + 1;
                let end = l.find('>')?;
                (l.contains("rel=\"next\"") || l.contains("rel=next"))
                    .then(|| url.join(&l[start..end]).ok())
                    .flatten()
            });
            let t: Tags = serde_json::from_reader(resp)
                .map_err(|e| Error::Protocol(format!("bad tags/list response: {e}")))?;
            out.extend(t.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Err(Error::Protocol("tags/list pagination does not end".into()))
    }

    /// Referrers of `digest`, optionally filtered by artifact type. Uses the referrers API
    /// when the registry has it, else the `sha256-<hex>` fallback tag index (empty when that
    /// tag does not exist).
    pub fn referrers(
        &self,
        repo: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        validate_repository(repo)?;
        validate_digest(digest)?;
        let mut path = format!("v2/{repo}/referrers/{digest}");
        if let Some(at) = artifact_type {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("artifactType", at);
            path = format!("{path}?{}", q.finish());
        }
        let url = self.url(&path)?;
        let resp = self.send(
            Method::GET,
            &url,
            &[("Accept", OCI_INDEX)],
            &mut ReqBody::Empty,
            &[scope_pull(repo)],
        )?;
        let status = resp.status().as_u16();
        let mt = media_type_of(resp.headers()).unwrap_or_default();
        let (descs, filtered) = if status == 200 && (mt == OCI_INDEX || mt == "application/json") {
            let applied = header_str(resp.headers(), "oci-filters-applied")
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            let idx: serde_json::Value = serde_json::from_reader(resp)
                .map_err(|e| Error::Protocol(format!("bad referrers response: {e}")))?;
            (index_descriptors(&idx)?, applied)
        } else if matches!(status, 200 | 400 | 404 | 405 | 406) {
            debug!(
                repo,
                digest, status, "no referrers API; using the fallback tag"
            );
            drop(resp);
            match self.get_manifest(repo, &referrers_fallback_tag(digest)) {
                Ok(m) => (index_descriptors(&m.json()?)?, false),
                Err(Error::NotFound { .. }) => (Vec::new(), false),
                Err(e) => return Err(e),
            }
        } else {
            return Err(status_error(
                &Method::GET,
                &url,
                resp,
                &format!("referrers of {digest}"),
            ));
        };
        Ok(match artifact_type {
            Some(at) if !filtered => descs
                .into_iter()
                .filter(|d| d.artifact_type.as_deref() == Some(at))
                .collect(),
            _ => descs,
        })
    }

    /// Add (or replace, by digest) `descriptor` in the referrers fallback index tagged
    /// `sha256-<hex of subject>`; returns the new index digest. Not atomic against concurrent
    /// writers of the same tag.
    pub fn add_referrer_fallback(
        &self,
        repo: &str,
        subject_digest: &str,
        descriptor: &Descriptor,
    ) -> Result<String> {
        validate_digest(subject_digest)?;
        let tag = referrers_fallback_tag(subject_digest);
        let mut index = match self.get_manifest(repo, &tag) {
            Ok(m) => m.json()?,
            Err(Error::NotFound { .. }) => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": []
            }),
            Err(e) => return Err(e),
        };
        let entry = serde_json::to_value(descriptor)
            .map_err(|e| Error::Protocol(format!("cannot encode descriptor: {e}")))?;
        let list = index
            .as_object_mut()
            .ok_or_else(|| Error::Protocol(format!("fallback index {tag} is not an object")))?
            .entry("manifests")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let arr = list
            .as_array_mut()
            .ok_or_else(|| Error::Protocol(format!("fallback index {tag} has bad manifests")))?;
        arr.retain(|d| {
            d.get("digest").and_then(|x| x.as_str()) != Some(descriptor.digest.as_str())
        });
        arr.push(entry);
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| Error::Protocol(format!("cannot encode index: {e}")))?;
        self.put_manifest(repo, &tag, OCI_INDEX, &bytes)
    }
}

fn index_descriptors(idx: &serde_json::Value) -> Result<Vec<Descriptor>> {
    match idx.get("manifests") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| Error::Protocol(format!("bad descriptors in index: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(opts: ClientOptions) -> Client {
        Client::new(
            "127.0.0.1:1",
            ClientOptions {
                plain_http: true,
                ..opts
            },
        )
        .unwrap()
    }

    #[test]
    fn upload_deadline_grows_with_size() {
        let c = client(ClientOptions::default());
        assert_eq!(c.upload_deadline(0), Some(Duration::from_secs(120)));
        assert_eq!(c.upload_deadline(1 << 20), Some(Duration::from_secs(128)));
        assert_eq!(
            c.upload_deadline(1 << 30),
            Some(Duration::from_secs(120 + 8192))
        );
        assert!(c.upload_deadline(u64::MAX).is_some());
        let c = client(ClientOptions {
            read_timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        });
        assert_eq!(
            c.upload_deadline(64 << 10),
            Some(Duration::from_millis(4500))
        );
        let off = client(ClientOptions {
            read_timeout: None,
            ..Default::default()
        });
        assert_eq!(off.upload_deadline(1 << 20), None);
        let no_rate = client(ClientOptions {
            min_upload_rate: 0,
            ..Default::default()
        });
        assert_eq!(no_rate.upload_deadline(1 << 20), None);
    }

    #[test]
    fn timeouts_are_named() {
        assert_eq!(
            Deadline::Read(Some(Duration::from_secs(60))).describe(),
            "timed out: no data from the registry for 60 s (read timeout)"
        );
        let up = Deadline::Upload {
            total: Duration::from_millis(4500),
            bytes: 65536,
        }
        .describe();
        assert!(
            up.contains("65536 bytes") && up.contains("4.5 s deadline"),
            "{up}"
        );
        let e = io::Error::from(io::ErrorKind::TimedOut);
        assert!(
            read_error_detail(&e, Some(Duration::from_secs(2))).contains("for 2 s (read timeout)")
        );
    }
}
