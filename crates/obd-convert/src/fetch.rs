//! Background downloads of layer blobs, at most N at once, in layer order, each readable
//! ([`TailReader`]) while it is still arriving. Bytes wait in memory while the conversion's
//! [`Budget`] allows. When it is spent, a download ahead of its turn pauses (the socket
//! holds the rest) until the reader frees memory, for at most [`PAUSE_MAX`]; then, or with
//! a zero budget, its bytes go to a file of the work directory. The download being read
//! never waits for the budget: it keeps at most [`WINDOW`] unread bytes in memory. What the
//! reader has read is freed either way. The store verifies digests while streaming; a
//! failed download fails its reader.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::ConvertError;
use crate::memory::Budget;
use crate::progress::{LayerId, ProgressSink, Stage};
use crate::report::StageReport;
use crate::store::Store;

/// Progress of one background download, shared with the reader that tails it.
pub struct DlState {
    /// Bytes downloaded so far.
    written: u64,
    /// Downloaded bytes held in memory, in order; the first chunk starts at `mem_start`.
    mem: VecDeque<Vec<u8>>,
    mem_start: u64,
    /// From this offset on, bytes are in the file (at their own offsets); before it, in
    /// `mem`. `None` while nothing went to the file.
    spill_at: Option<u64>,
    /// The conversion's budget, given back as chunks are read.
    budget: Budget,
    /// Bytes in `mem`.
    held: u64,
    /// A reader has started reading this download.
    reading: bool,
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

/// Longest a download ahead of its turn waits for memory before it goes to its file (a
/// connection that stalls much longer may be cut by the registry or a proxy).
pub const PAUSE_MAX: Duration = Duration::from_secs(20);

/// Unread bytes the download being read may keep in memory beyond the budget.
pub const WINDOW: u64 = 16 << 20;

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

impl DlState {
    /// Copies bytes at `pos` out of the memory chunks, freeing the chunks read to their
    /// end; `None` if `pos` is not in memory.
    fn read_mem(&mut self, pos: u64, buf: &mut [u8]) -> Option<usize> {
        if self.spill_at.is_some_and(|s| pos >= s) {
            return None;
        }
        let front = self.mem.front()?;
        let off = usize::try_from(pos.checked_sub(self.mem_start)?).ok()?;
        let n = buf.len().min(front.len().checked_sub(off)?);
        buf[..n].copy_from_slice(&front[off..off + n]);
        if off + n == front.len() {
            let len = front.len() as u64;
            self.mem.pop_front();
            self.mem_start += len;
            self.held -= len;
            self.budget.give(len);
        }
        Some(n)
    }
}

impl Drop for DlState {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, cv) = &*self.dl;
        let avail = {
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            st.reading = true;
            loop {
                if st.written > self.pos {
                    let held = st.held;
                    if let Some(n) = st.read_mem(self.pos, buf) {
                        self.pos += n as u64;
                        if st.held < held {
                            // Memory freed: a download waiting for room may go on.
                            cv.notify_all();
                        }
                        return Ok(n);
                    }
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
        if self.consume && self.pos.saturating_sub(self.punched) >= PUNCH_STEP {
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
/// order. Returns one [`Download`] per job. Unread bytes wait in memory while `budget`
/// allows (a layer being applied is read about as fast as it arrives, so this mostly holds
/// the layers downloaded ahead of their turn); with a zero budget every byte goes to the
/// job's file, which then holds the whole blob (to push it again, or for `--reserve`).
pub fn prefetch(
    src: Arc<dyn Store>,
    jobs: Vec<Job>,
    concurrency: usize,
    progress: ProgressSink,
    budget: Budget,
) -> Vec<Download> {
    let dls: Vec<Download> = jobs
        .iter()
        .map(|_| {
            let st = DlState {
                written: 0,
                mem: VecDeque::new(),
                mem_start: 0,
                spill_at: None,
                budget: budget.clone(),
                held: 0,
                reading: false,
                done: None,
            };
            Arc::new((Mutex::new(st), Condvar::new()))
        })
        .collect();
    let n = jobs.len();
    let queue = Arc::new(Mutex::new(
        jobs.into_iter()
            .zip(dls.iter().cloned())
            .collect::<std::collections::VecDeque<_>>(),
    ));
    for _ in 0..concurrency.max(1).min(n.max(1)) {
        let (src, queue, progress, budget) =
            (src.clone(), queue.clone(), progress.clone(), budget.clone());
        std::thread::spawn(move || loop {
            let _cpu = obd_meter::enter(obd_meter::Stage::Download);
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
                // The file, once bytes go there (all of them from then on).
                let mut f = if budget.limit() == 0 {
                    Some(File::create(&job.path)?)
                } else {
                    None
                };
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                let mut paused = Duration::ZERO;
                loop {
                    let n = rd.read(&mut buf)?;
                    if n == 0 {
                        return Ok(total);
                    }
                    let to_mem = f.is_none() && {
                        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                        loop {
                            if budget.try_take(n as u64) {
                                paused = Duration::ZERO;
                                break true;
                            }
                            if st.reading && st.held < WINDOW {
                                budget.take(n as u64);
                                paused = Duration::ZERO;
                                break true;
                            }
                            if paused >= PAUSE_MAX {
                                break false;
                            }
                            // Room comes back as readers free memory (this download's reader
                            // wakes us; others' are polled).
                            let t = Instant::now();
                            st = cv
                                .wait_timeout(st, Duration::from_millis(50))
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                            paused += t.elapsed();
                        }
                    };
                    if !to_mem && f.is_none() {
                        tracing::debug!(
                            "{}: no memory left after waiting {paused:?}: the rest goes to {}",
                            job.layer,
                            job.path.display()
                        );
                        f = Some(File::create(&job.path)?);
                    }
                    if let Some(file) = &f {
                        std::os::unix::fs::FileExt::write_all_at(file, &buf[..n], total)?;
                    }
                    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if to_mem {
                        st.mem.push_back(buf[..n].to_vec());
                        st.held += n as u64;
                    } else {
                        st.spill_at.get_or_insert(total);
                    }
                    st.written += n as u64;
                    drop(st);
                    total += n as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MEMORY_BUDGET;
    use crate::store::OciLayout;

    fn layout_with(dir: &Path, blobs: &[Vec<u8>]) -> Vec<Job> {
        OciLayout::open(dir, true).unwrap();
        blobs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let d = crate::digest::sha256(b);
                std::fs::write(dir.join("blobs/sha256").join(crate::digest::hex_of(&d)), b)
                    .unwrap();
                Job {
                    layer: LayerId {
                        manifest: "t".into(),
                        index: i,
                        count: blobs.len(),
                    },
                    digest: d,
                    size: b.len() as u64,
                    path: dir.join(format!("{i}.blob")),
                }
            })
            .collect()
    }

    /// Blobs of 1 MiB, 1.5 MiB, nothing and 12345 bytes, each with its own byte pattern.
    fn blobs() -> Vec<Vec<u8>> {
        [1usize << 20, 3 << 19, 0, 12345]
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| ((i * 131 + k * 17) % 251) as u8).collect())
            .collect()
    }

    /// Blobs read back whole whatever part waited in memory and part in the file, with
    /// a budget smaller than one blob; the memory is all given back.
    #[test]
    fn memory_then_file() {
        for budget in [0, 300 << 10, MEMORY_BUDGET] {
            let t = tempfile::tempdir().unwrap();
            let b = blobs();
            let jobs = layout_with(t.path(), &b);
            let paths: Vec<PathBuf> = jobs.iter().map(|j| j.path.clone()).collect();
            let src: Arc<dyn Store> = Arc::new(OciLayout::open(t.path(), false).unwrap());
            let mem = Budget::new(budget);
            let dls = prefetch(src, jobs, 3, ProgressSink::default(), mem.clone());
            for ((dl, want), p) in dls.iter().zip(&b).zip(&paths) {
                let mut got = Vec::new();
                TailReader::new(p.clone(), dl.clone())
                    .consuming(budget > 0)
                    .read_to_end(&mut got)
                    .unwrap();
                assert!(got == *want, "budget {budget}: blob differs");
                assert_eq!(wait(dl).unwrap().bytes, want.len() as u64);
                if budget == 0 {
                    assert_eq!(std::fs::read(p).unwrap(), *want, "the file holds the blob");
                }
            }
            drop(dls);
            assert_eq!(mem.used(), 0, "budget {budget}");
        }
    }

    /// With the budget spent, downloads ahead of their turn wait instead of writing their
    /// files, and the one being read goes on beyond the budget: no blob touches the disk.
    #[test]
    fn downloads_ahead_wait_for_memory_instead_of_spilling() {
        let t = tempfile::tempdir().unwrap();
        let b = blobs();
        let jobs = layout_with(t.path(), &b);
        let paths: Vec<PathBuf> = jobs.iter().map(|j| j.path.clone()).collect();
        let src: Arc<dyn Store> = Arc::new(OciLayout::open(t.path(), false).unwrap());
        let mem = Budget::new(300 << 10);
        let dls = prefetch(src, jobs, 3, ProgressSink::default(), mem.clone());
        // Let the downloads run into the budget before anything is read.
        std::thread::sleep(Duration::from_millis(300));
        assert!(mem.used() <= 300 << 10, "{} used", mem.used());
        for ((dl, want), p) in dls.iter().zip(&b).zip(&paths) {
            let mut got = Vec::new();
            TailReader::new(p.clone(), dl.clone())
                .consuming(true)
                .read_to_end(&mut got)
                .unwrap();
            assert!(got == *want, "blob differs");
            assert!(!p.exists(), "{} was written", p.display());
        }
        drop(dls);
        assert_eq!(mem.used(), 0);
    }

    /// A digest mismatch fails the reader, whether the bytes were in memory or not.
    #[test]
    fn corrupt_blob_fails_the_reader() {
        let t = tempfile::tempdir().unwrap();
        let b = blobs();
        let jobs = layout_with(t.path(), &b[..1]);
        let bad = t
            .path()
            .join("blobs/sha256")
            .join(crate::digest::hex_of(&jobs[0].digest));
        let mut bytes = b[0].clone();
        bytes[1000] ^= 1;
        std::fs::write(bad, bytes).unwrap();
        let p = jobs[0].path.clone();
        let src: Arc<dyn Store> = Arc::new(OciLayout::open(t.path(), false).unwrap());
        let dl = prefetch(
            src,
            jobs,
            1,
            ProgressSink::default(),
            Budget::new(MEMORY_BUDGET),
        )
        .remove(0);
        let e = TailReader::new(p, dl.clone())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(wait(&dl).is_err());
    }
}
