//! Sending requests: auth headers and 401 rounds, retries with backoff, the read and upload
//! deadlines, and the mapping of transport failures and error statuses to typed errors.

use std::io::{self, Read};
use std::time::Duration;

use reqwest::blocking::{Body, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::Method;
use tracing::{debug, warn};
use url::Url;

use super::upload::SourceError;
use super::{Client, Hints};
use crate::auth::parse_www_authenticate;
use crate::error::{display_url, truncate_body, Error, Result};

/// A request body, and whether it can be sent again.
pub(super) enum ReqBody {
    Empty,
    /// Shared, so a retry re-sends it without a copy.
    Bytes(bytes::Bytes),
    /// Sent at most once.
    Stream(Option<(Box<dyn Read + Send>, u64)>),
}

impl ReqBody {
    pub(super) fn rewindable(&self) -> bool {
        !matches!(self, ReqBody::Stream(_))
    }
    pub(super) fn take(&mut self) -> Result<Option<Body>> {
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

pub(super) fn network_err(url: &Url, detail: impl Into<String>) -> Error {
    Error::Network {
        url: display_url(url),
        detail: detail.into(),
    }
}

/// The deadline a request ran under, named in the error when it expires.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    /// [`ClientOptions::read_timeout`].
    Read(Option<Duration>),
    /// The total deadline of a blob upload request carrying `bytes` bytes.
    Upload { total: Duration, bytes: u64 },
}

impl Deadline {
    pub(super) fn describe(&self) -> String {
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
pub(super) fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Did reading a response body fail because a timeout expired?
pub(super) fn is_timeout_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<reqwest::Error>())
            .is_some_and(|r| r.is_timeout())
}

/// Describes an error reading a response body: its whole source chain, led by the expired
/// read timeout when that is the cause.
pub(super) fn read_error_detail(e: &io::Error, read_timeout: Option<Duration>) -> String {
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
pub(super) fn transport_error(
    e: reqwest::Error,
    url: &Url,
    deadline: Deadline,
    hints: &Hints,
) -> (Error, bool) {
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
    if detail.contains("InvalidContentType") {
        // A TLS client hello answered by an HTTP/1.x response: the bytes `HTTP` are not a
        // TLS record.
        return (
            Error::Tls {
                url: display_url(url),
                detail: format!(
                    "the registry speaks plain HTTP, not HTTPS: use {} ({detail})",
                    hints.plain_http
                ),
            },
            false,
        );
    }
    if tls_err {
        if detail.contains("invalid peer certificate") {
            let host = url.host_str().unwrap_or_default();
            let host = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            detail = format!(
                "{detail}; the registry's certificate is not trusted: give its CA with {}, \
                 or put it in /etc/containers/certs.d/{host}/ca.crt",
                hints.trust
            );
        }
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
pub(super) struct DistErrors {
    #[serde(default)]
    errors: Vec<DistError>,
}

#[derive(serde::Deserialize)]
pub(super) struct DistError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Turn a non-success response into a typed error. `what` names the object for messages.
pub(super) fn status_error(method: &Method, url: &Url, resp: Response, what: &str) -> Error {
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

pub(super) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, "content-length").and_then(|v| v.trim().parse().ok())
}

pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_str(h, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
}
impl Client {
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
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

    // ---------------------------------------------------------------- transport

    /// The deadline of requests sent with [`Client::send`].
    pub(super) fn read_deadline(&self) -> Deadline {
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
    pub(super) fn send(
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
    pub(super) fn send_upload(
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

    pub(super) fn send_with(
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
            let authz = self
                .authorization(scopes)
                .map_err(|e| self.auth_context(e))?;
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
                    let (err, transient) = transport_error(e, url, deadline, &self.opts.hints);
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
                        if self
                            .handle_challenge(&chs, scopes, sent.as_deref())
                            .map_err(|e| self.auth_context(e))?
                        {
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

    pub(super) fn expect(
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
            Err(self.auth_context(status_error(&method, url, resp, what)))
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn simple(
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
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;

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
