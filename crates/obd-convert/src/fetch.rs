//! Background downloads of layer blobs into the work directory, at most N at once, in
//! layer order, each readable ([`TailReader`]) while it is still arriving. The store
//! verifies digests while streaming; a failed download fails its reader.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::error::ConvertError;
use crate::progress::{LayerId, ProgressSink, Stage};
use crate::report::StageReport;
use crate::store::Store;

/// Progress of one background download, shared with the reader that tails it.
#[derive(Default)]
pub struct DlState {
    /// Bytes written to the file so far.
    written: u64,
    /// `Some` once the download ended (successfully, or with the error kind and message).
    done: Option<std::result::Result<StageReport, (std::io::ErrorKind, String)>>,
}

/// A download in flight: its state and a condition variable signalled on every change.
pub type Download = Arc<(Mutex<DlState>, Condvar)>;

/// One blob to download.
pub struct Job {
    pub layer: LayerId,
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// Reads a file while it is being downloaded: blocks until more bytes arrive, ends when
/// the download has ended, and fails if the download failed (e.g. a digest mismatch).
/// What it has read is given back to the filesystem as it goes (holes are punched behind
/// the read position), so a blob never costs its whole size in the work directory once
/// its layer is being applied.
pub struct TailReader {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    /// Bytes before this are holes already.
    punched: u64,
    /// Whether to punch holes at all (not with `--reserve`).
    consume: bool,
    dl: Download,
}

/// Bytes read between two hole punches.
const PUNCH_STEP: u64 = 8 << 20;

/// Frees `[from, to)` of `f` without changing its size; best effort (a filesystem without
/// hole punching keeps the bytes).
fn punch_hole(f: &File, from: u64, to: u64) {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    let _ = fallocate(f.as_raw_fd(), flags, from as i64, (to - from) as i64);
}

impl TailReader {
    pub fn new(path: PathBuf, dl: Download) -> Self {
        TailReader {
            path,
            file: None,
            pos: 0,
            punched: 0,
            consume: false,
            dl,
        }
    }

    /// Gives what was read back to the filesystem (the file keeps its size, as holes).
    pub fn consuming(mut self, yes: bool) -> Self {
        self.consume = yes;
        self
    }
}

/// Waits for a download to end; returns its figures or its error.
pub fn wait(dl: &Download) -> std::io::Result<StageReport> {
    let (lock, cv) = &**dl;
    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match &st.done {
            Some(Ok(r)) => return Ok(r.clone()),
            Some(Err((k, m))) => return Err(std::io::Error::new(*k, m.clone())),
            None => st = cv.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, cv) = &*self.dl;
        let avail = {
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.written > self.pos {
                    break st.written - self.pos;
                }
                match &st.done {
                    Some(Ok(_)) => return Ok(0),
                    Some(Err((k, m))) => return Err(std::io::Error::new(*k, m.clone())),
                    None => st = cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)?;
            self.file = Some(f);
        }
        let n = (buf.len() as u64).min(avail) as usize;
        let f = self.file.as_ref().expect("opened above");
        let k = std::os::unix::fs::FileExt::read_at(f, &mut buf[..n], self.pos)?;
        self.pos += k as u64;
        if self.consume && self.pos - self.punched >= PUNCH_STEP {
            let to = self.pos & !4095;
            punch_hole(f, self.punched, to);
            self.punched = to;
        }
        Ok(k)
    }
}

fn io_kind(e: &ConvertError) -> std::io::ErrorKind {
    match e {
        ConvertError::NotFound(_) => std::io::ErrorKind::NotFound,
        ConvertError::Auth(_) => std::io::ErrorKind::PermissionDenied,
        ConvertError::BadInput(_) => std::io::ErrorKind::InvalidData,
        _ => std::io::ErrorKind::Other,
    }
}

/// Starts background downloads of `jobs` from `src`, at most `concurrency` at once, in
/// order. Returns one [`Download`] per job.
pub fn prefetch(
    src: Arc<dyn Store>,
    jobs: Vec<Job>,
    concurrency: usize,
    progress: ProgressSink,
) -> Vec<Download> {
    let dls: Vec<Download> = jobs.iter().map(|_| Download::default()).collect();
    let n = jobs.len();
    let queue = Arc::new(Mutex::new(
        jobs.into_iter()
            .zip(dls.iter().cloned())
            .collect::<std::collections::VecDeque<_>>(),
    ));
    for _ in 0..concurrency.max(1).min(n.max(1)) {
        let (src, queue, progress) = (src.clone(), queue.clone(), progress.clone());
        std::thread::spawn(move || loop {
            let Some((job, dl)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
            else {
                break;
            };
            let (lock, cv) = &*dl;
            let t = Instant::now();
            progress.start(&job.layer, Stage::Download, Some(job.size));
            let r = (|| -> std::io::Result<u64> {
                let mut rd = src
                    .fetch_blob(&job.digest)
                    .map_err(|e| std::io::Error::new(io_kind(&e), e.to_string()))?;
                let mut f = File::create(&job.path)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = rd.read(&mut buf)?;
                    if n == 0 {
                        return Ok(total);
                    }
                    std::io::Write::write_all(&mut f, &buf[..n])?;
                    total += n as u64;
                    lock.lock().unwrap_or_else(|p| p.into_inner()).written += n as u64;
                    cv.notify_all();
                    progress.advance(&job.layer, Stage::Download, n as u64);
                }
            })();
            let r = r.map(|bytes| StageReport {
                seconds: t.elapsed().as_secs_f64(),
                bytes,
            });
            match &r {
                Ok(s) => {
                    progress.finish(&job.layer, Stage::Download, s.bytes, s.seconds);
                    tracing::debug!("downloaded {} ({})", job.layer, job.digest);
                }
                Err(e) => tracing::warn!("download of {} ({}) failed: {e}", job.layer, job.digest),
            }
            lock.lock().unwrap_or_else(|p| p.into_inner()).done =
                Some(r.map_err(|e| (e.kind(), e.to_string())));
            cv.notify_all();
        });
    }
    dls
}

/// Downloads one blob into `path` now (digest verified by the store).
pub fn download_to(src: &dyn Store, digest: &str, path: &Path) -> crate::Result<u64> {
    let mut rd = src.fetch_blob(digest)?;
    let mut f = File::create(path)
        .map_err(|e| ConvertError::io(format!("creating {}", path.display()), e))?;
    std::io::copy(&mut rd, &mut f).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => ConvertError::BadInput(format!("{digest}: {e}")),
        _ => ConvertError::io(format!("downloading {digest}"), e),
    })
}
