//! Blob downloads: [`BlobReader`] (digest and size verified while streaming, resumed with a
//! ranged `GET` after a break), `HEAD`/`GET` of blobs and byte ranges.

use std::io::{self, Read};
use std::time::Duration;

use reqwest::blocking::Response;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Method;
use sha2::{Digest as _, Sha256, Sha512};
use tracing::{debug, warn};
use url::Url;

use super::transport::{content_length, header_str, network_err, read_error_detail, ReqBody};
use super::{scope_pull, Client};
use crate::error::{display_url, Error, Result};
use crate::reference::{validate_digest, validate_repository};

pub(super) enum DigestHasher {
    S256(Sha256),
    S512(Sha512),
}

impl DigestHasher {
    pub(super) fn for_digest(d: &str) -> Result<Self> {
        match d.split_once(':').map(|x| x.0) {
            Some("sha256") => Ok(DigestHasher::S256(Sha256::new())),
            Some("sha512") => Ok(DigestHasher::S512(Sha512::new())),
            _ => Err(Error::Unsupported(format!("digest algorithm of {d:?}"))),
        }
    }
    pub(super) fn update(&mut self, b: &[u8]) {
        let _cpu = obd_meter::enter(obd_meter::Stage::Hash);
        match self {
            DigestHasher::S256(h) => h.update(b),
            DigestHasher::S512(h) => h.update(b),
        }
    }
    pub(super) fn finish(self) -> String {
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

impl Client {
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
}
