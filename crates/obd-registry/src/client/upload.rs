//! Blob uploads: `push_blob*` (HEAD first, then a session with one `PUT` or `PATCH` chunks),
//! restarts and resumed chunked uploads, session handling and cross-repository mounts.

use std::io::{self, Read};
use std::path::Path;

use reqwest::blocking::Response;
use reqwest::Method;
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};
use url::Url;

use super::transport::{header_str, ReqBody};
use super::{scope_pull, scope_push, Client};
use crate::error::{Error, Result};
use crate::reference::{validate_digest, validate_repository};
use crate::types::*;

/// Outcome of [`Client::push_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had the blob (HEAD said so); nothing was sent.
    AlreadyExists,
    /// The blob was uploaded.
    Uploaded,
}

/// Where upload bytes come from: a one-shot stream, or something that can be reopened so
/// that a failed upload is restarted from scratch.
pub(super) type Opener = Box<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync>;

pub(super) enum UploadSource {
    Once(Option<Box<dyn Read + Send>>),
    Reopen(Opener),
    /// Bytes in memory: one `PUT` with the whole blob as a single buffer.
    Shared(bytes::Bytes),
}

impl UploadSource {
    pub(super) fn open(&mut self) -> Result<Box<dyn Read + Send>> {
        match self {
            UploadSource::Once(r) => r.take().ok_or_else(|| {
                Error::Protocol("upload stream already consumed; cannot retry".into())
            }),
            UploadSource::Reopen(f) => Ok(f()?),
            UploadSource::Shared(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
        }
    }
    pub(super) fn rewindable(&self) -> bool {
        matches!(self, UploadSource::Reopen(_) | UploadSource::Shared(_))
    }
}

/// Checks the digest a registry reports for a blob upload it committed.
pub(super) fn check_committed(resp: &Response, digest: &str, what: &str) -> Result<()> {
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
pub(super) fn session_refused(e: &Error) -> bool {
    matches!(
        e,
        Error::Status {
            code: 400 | 404 | 416,
            ..
        }
    ) || matches!(e, Error::DigestMismatch { .. })
}

/// A local upload source failed (ended early); not a network problem and not retried.
#[derive(Debug)]
pub(super) struct SourceError(pub(super) String);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// Reads exactly `remaining` bytes from `inner`; a short source is an error (so a truncated
/// local file never makes the server wait for bytes that will not come).
pub(super) struct ExactReader {
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

pub(super) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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

impl Client {
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

    /// Checks that `repo` takes pushes with these credentials: opens a blob upload session
    /// (`POST /v2/<repo>/blobs/uploads/` with push scope) and cancels it (`DELETE`; a failing
    /// cancel is ignored), so that a 401 or 403 surfaces before any expensive work.
    pub fn check_push(&self, repo: &str) -> Result<()> {
        validate_repository(repo)?;
        let scopes = [scope_push(repo)];
        let (_, loc) = self.start_upload(repo, "", &scopes)?;
        if let Some(loc) = loc {
            match self.send(Method::DELETE, &loc, &[], &mut ReqBody::Empty, &scopes) {
                Ok(r) => debug!(
                    status = r.status().as_u16(),
                    "cancelled the push-check upload session"
                ),
                Err(e) => debug!(error = %e, "cancelling the push-check upload session failed"),
            }
        }
        Ok(())
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
}
