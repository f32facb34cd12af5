//! A blocking OCI distribution-spec v1.1 registry client for obdconv.
//!
//! - [`Reference`] parses `host[:port]/repo[:tag][@digest]` with docker.io defaults.
//! - [`Client`] talks to one registry host: manifests (exact bytes), blobs (sha256 verified
//!   while streaming), uploads (monolithic or chunked), cross-repo mounts, tags, referrers
//!   (native API or the `sha256-<hex>` fallback tag), with Basic/Bearer auth, TLS/mTLS and
//!   retries.
//! - [`Error`] tells auth, not-found, digest, TLS and network failures apart
//!   ([`Error::exit_code`]).
//!
//! Design notes:
//! - Blocking API on `reqwest::blocking` (HTTP/1.1, rustls with the `ring` provider, system
//!   roots plus configured CAs); one [`Client`] per registry host, shareable across threads.
//! - Manifests are returned and pushed as exact bytes; digests are computed locally.
//! - Uploads: `HEAD` first, `POST` a session, then one streamed `PUT` or `PATCH` chunks
//!   ([`ClientOptions::chunk_size`]). Sources that can be reopened (files, bytes) are
//!   restarted from scratch on transient failures; one-shot streams never are.
//! - Timeouts: no data for [`ClientOptions::read_timeout`] (default 60 s) while waiting for
//!   a response head or the next bytes of a body fails the request as a transient network
//!   error (retried; blob downloads resume with a ranged `GET`). A blob upload request gets a
//!   total deadline instead, `2 × read_timeout + size / min_upload_rate` (128 KiB/s), which
//!   also catches a registry that stops reading the body; the upload is then restarted.
//! - Auth: Basic, or Bearer tokens fetched by GET (Basic or anonymous), falling back to an
//!   OAuth2 password POST (a refresh-token POST for identity tokens); cached per scope set;
//!   secrets are never logged. [`credentials::lookup`] finds credentials where the container
//!   tools keep them (auth files, `docker-credential-*` helpers); authentication errors name
//!   where the credentials came from, or where none were found.
//! - The `testutil` feature starts real `docker-registry` instances for tests
//!   (`testutil::TestRegistry`) — see that module.
//!
//! ```no_run
//! use obd_registry::{Client, ClientOptions, Credentials, Reference};
//! let r = Reference::parse("localhost:5000/app:v1")?;
//! let opts = ClientOptions {
//!     plain_http: true,
//!     credentials: Some(Credentials::parse("user:pa:ss")?),
//!     ..Default::default()
//! };
//! let c = Client::new(&r.registry, opts)?;
//! let m = c.get_manifest(&r.repository, r.object())?;
//! println!("{} {}", m.media_type, m.digest);
//! # Ok::<(), obd_registry::Error>(())
//! ```

mod auth;
mod client;
pub mod credentials;
mod error;
mod proxy;
mod reference;
mod tls;
mod types;

#[cfg(feature = "testutil")]
pub mod testutil;

pub use auth::{parse_www_authenticate, Challenge, Credentials};
pub use client::{
    certs_d_roots_from_env, referrers_fallback_tag, scope_pull, scope_push, BlobPush, BlobReader,
    Client, ClientOptions, Hints, CERTS_D_ROOTS_ENV, DEFAULT_CERTS_D_ROOTS,
    DEFAULT_MIN_UPLOAD_RATE, DEFAULT_PAGE_SIZE, DEFAULT_READ_TIMEOUT, SCOPE_CATALOG,
};
pub use error::{Error, Result};
pub use reference::{api_host, valid_tag, validate_digest, validate_repository, Reference};
pub use types::*;
