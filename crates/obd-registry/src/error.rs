//! Typed errors of the registry client.
//!
//! Messages never contain passwords, tokens or `Authorization` headers; URLs are shown
//! without their query string (upload URLs carry opaque session state).

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference string could not be parsed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// Bad client configuration: unreadable CA or client-certificate files, bad credentials
    /// syntax, a malformed docker config file.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// 401/403 after authenticating (or when no credentials could satisfy the challenge), or a
    /// token endpoint that refused the credentials.
    #[error("authentication failed ({status}) for {url}: {detail}")]
    Auth {
        url: String,
        status: u16,
        detail: String,
    },

    /// A `docker-credential-<name>` helper named in an auth file is missing from `PATH` or
    /// failed (other than saying it has no credentials).
    #[error(
        "credential helper {helper} (named in {config}) failed: {detail}; install it on PATH, \
         remove it from {config}, or pass the credentials explicitly"
    )]
    CredentialHelper {
        helper: String,
        config: String,
        detail: String,
    },

    /// 404, or a distribution error code `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`.
    #[error("not found: {what}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    NotFound { what: String, code: Option<String> },

    /// Content did not hash to the digest it was addressed by (or the registry reported
    /// `DIGEST_INVALID` for an upload).
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// The body was shorter or longer than announced.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// TLS handshake or certificate verification failure.
    #[error("TLS error talking to {url}: {detail}")]
    Tls { url: String, detail: String },

    /// Connection refused/reset, DNS failure, timeouts, truncated transfers.
    #[error("network error talking to {url}: {detail}")]
    Network { url: String, detail: String },

    /// An unexpected HTTP status. `body` is truncated to a few hundred bytes.
    #[error("{method} {url} returned {code}: {body}")]
    Status {
        method: String,
        url: String,
        code: u16,
        body: String,
    },

    /// The registry answered something that violates the protocol (missing `Location`,
    /// undecodable JSON, ...).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A feature we deliberately do not support (Docker schema1 manifests, non-sha256
    /// digests, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// Local I/O (reading an upload source, ...).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// Suggested process exit code for the CLI: auth 3, not found 4, bad input 5, I/O and
    /// network 6, anything else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Auth { .. } | Error::CredentialHelper { .. } => 3,
            Error::NotFound { .. } => 4,
            Error::InvalidReference { .. } | Error::Config(_) | Error::Unsupported(_) => 5,
            Error::Io(_) | Error::Network { .. } | Error::Tls { .. } => 6,
            Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::Status { .. }
            | Error::Protocol(_) => 1,
        }
    }

    /// Is this error worth retrying (transient network condition)?
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            Error::Status { code, .. } => matches!(code, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Recover a registry error carried inside an `io::Error` (as returned by the `Read`
    /// implementation of [`crate::BlobReader`]).
    pub fn from_io_ref(e: &io::Error) -> Option<&Error> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    }

    /// Convert an `io::Error` coming out of a [`crate::BlobReader`] back into a typed error
    /// (digest/size mismatch, network), or wrap it as `Io`.
    pub fn from_io(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|i| i.is::<Error>()) {
            match e.into_inner().map(|b| b.downcast::<Error>()) {
                Some(Ok(b)) => *b,
                Some(Err(other)) => Error::Io(io::Error::other(other)),
                None => Error::Protocol("lost io error".into()),
            }
        } else {
            Error::Io(e)
        }
    }
}

/// Strip the query string and any userinfo from a URL for messages.
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// Truncate a response body for error messages.
pub(crate) fn truncate_body(body: &[u8]) -> String {
    const MAX: usize = 512;
    let s = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s = s.trim().replace(['\n', '\r'], " ");
    if body.len() > MAX {
        s.push_str("...");
    }
    s
}
