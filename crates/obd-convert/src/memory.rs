//! The memory budget of one conversion. Bytes that only wait in the pipeline (layers
//! downloaded ahead of their turn, finished outputs waiting for their upload) stay in memory
//! while the budget allows and go to files of the work directory beyond it: small images
//! convert without their blobs ever touching the disk, large ones cost at most the budget
//! in memory.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes one manifest's conversion keeps in memory: downloaded-ahead layers and finished
/// outputs together.
pub const MEMORY_BUDGET: u64 = 64 << 20;

/// A byte budget shared by the parts of a conversion (cloning shares it).
#[derive(Clone, Debug)]
pub struct Budget {
    used: Arc<AtomicU64>,
    limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// The budget's size; 0 means every byte goes to a file.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes taken and not yet given back.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `n` bytes if they fit.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes even beyond the limit (for bytes that are about to be read: the
    /// caller bounds them itself).
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::SeqCst);
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Growth step of an in-memory output's share of the budget.
const STEP: u64 = 4 << 20;

/// An output written in memory while the budget allows, moved into the file `path` (and
/// continued there) the first time it would not. Cloning gives another handle on the same
/// output: one writes (as an [`obd_format::output::Sink`]), the other takes the result
/// with [`SpillFile::finish`].
#[derive(Clone)]
pub struct SpillFile {
    inner: Arc<Mutex<Spill>>,
}

struct Spill {
    path: PathBuf,
    budget: Budget,
    pos: u64,
    len: u64,
    state: State,
}

enum State {
    /// In memory, holding `reserved` bytes of the budget.
    Memory {
        buf: Vec<u8>,
        reserved: u64,
    },
    File(File),
    Finished,
}

/// Where a finished output is.
pub enum Output {
    Memory(MemBlob),
    File(PathBuf),
}

/// A finished output in memory; its share of the budget is given back when it is dropped.
pub struct MemBlob {
    bytes: bytes::Bytes,
    budget: Budget,
    held: u64,
}

impl MemBlob {
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }
}

impl Drop for MemBlob {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

impl Output {
    /// The file, if the output is in one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Output::File(p) => Some(p),
            Output::Memory(_) => None,
        }
    }
}

impl SpillFile {
    /// A new, empty output; `path` must not exist yet (it is created on the first spill).
    pub fn new(path: PathBuf, budget: Budget) -> Self {
        // With a zero budget the first write spills.
        let state = State::Memory {
            buf: Vec::new(),
            reserved: 0,
        };
        SpillFile {
            inner: Arc::new(Mutex::new(Spill {
                path,
                budget,
                pos: 0,
                len: 0,
                state,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the output (once every writer is done) and tells where it is.
    pub fn finish(&self) -> io::Result<Output> {
        let mut s = self.lock();
        match std::mem::replace(&mut s.state, State::Finished) {
            State::Memory { mut buf, reserved } => {
                buf.truncate(s.len as usize);
                Ok(Output::Memory(MemBlob {
                    bytes: bytes::Bytes::from(buf),
                    budget: s.budget.clone(),
                    held: reserved,
                }))
            }
            State::File(_) => Ok(Output::File(s.path.clone())),
            State::Finished => Err(io::Error::other("the output was finished already")),
        }
    }
}

impl Spill {
    /// Moves the bytes into the file; the budget share goes back.
    fn spill(&mut self) -> io::Result<()> {
        if let State::Memory { buf, reserved } = &mut self.state {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&self.path)?;
            f.write_all_at(&buf[..self.len as usize], 0)?;
            let r = *reserved;
            self.state = State::File(f);
            self.budget.give(r);
        }
        Ok(())
    }
}

impl Write for SpillFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let end = s.pos + data.len() as u64;
        // In memory, the budget share grows in steps; when it cannot, the output spills.
        let mut spill = false;
        if let State::Memory { reserved, .. } = &mut s.state {
            if end > *reserved {
                let grow = (end - *reserved).div_ceil(STEP) * STEP;
                if s.budget.try_take(grow) {
                    *reserved += grow;
                } else {
                    spill = true;
                }
            }
        }
        if spill {
            s.spill()?;
        }
        let pos = s.pos;
        match &mut s.state {
            State::Memory { buf, .. } => {
                let (p, e) = (pos as usize, end as usize);
                if p == buf.len() {
                    buf.extend_from_slice(data);
                } else {
                    if buf.len() < e {
                        buf.resize(e, 0);
                    }
                    buf[p..e].copy_from_slice(data);
                }
            }
            State::File(f) => f.write_all_at(data, pos)?,
            State::Finished => return Err(io::Error::other("write after the output was finished")),
        }
        s.pos = end;
        s.len = s.len.max(end);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SpillFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let mut s = self.lock();
        let p = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => s.len.checked_add_signed(d),
            SeekFrom::Current(d) => s.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        s.pos = p;
        Ok(p)
    }
}

impl obd_format::output::Sink for SpillFile {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Writes `parts` in order, then rewrites the first 16 bytes (as the ZFile and tar
    /// headers are), and returns the output with what it must hold.
    fn write_all(f: &mut SpillFile, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut want = Vec::new();
        for p in parts {
            f.write_all(p).unwrap();
            want.extend_from_slice(p);
        }
        let end = f.stream_position().unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xAB; 16]).unwrap();
        want[..16].fill(0xAB);
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), end);
        want
    }

    /// Whether the output went to its file.
    fn spilled(f: &SpillFile) -> bool {
        matches!(f.lock().state, State::File(_))
    }

    fn contents(o: &Output) -> Vec<u8> {
        match o {
            Output::Memory(m) => m.bytes().to_vec(),
            Output::File(p) => std::fs::read(p).unwrap(),
        }
    }

    #[test]
    fn stays_in_memory_within_the_budget_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(16 << 20);
        let mut f = SpillFile::new(dir.path().join("out"), budget.clone());
        let want = write_all(&mut f, &[pattern(3 << 20, 1), pattern(5 << 20, 2)]);
        let out = f.finish().unwrap();
        assert!(matches!(out, Output::Memory(_)));
        assert!(!dir.path().join("out").exists());
        assert_eq!(contents(&out), want);
        assert_eq!(budget.used(), 8 << 20);
        drop(out);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn spills_to_the_file_beyond_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(8 << 20);
        // Someone else holds part of the budget already.
        assert!(budget.try_take(3 << 20));
        let mut f = SpillFile::new(dir.path().join("out"), budget.clone());
        let want = write_all(
            &mut f,
            &[pattern(1 << 20, 3), pattern(4 << 20, 4), pattern(777, 5)],
        );
        assert!(spilled(&f));
        assert_eq!(
            budget.used(),
            3 << 20,
            "the spilled output gave its share back"
        );
        let out = f.finish().unwrap();
        assert_eq!(out.path(), Some(dir.path().join("out").as_path()));
        assert_eq!(contents(&out), want);
        budget.give(3 << 20);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_zero_budget_writes_the_file_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(0);
        let mut f = SpillFile::new(dir.path().join("out"), budget.clone());
        let want = write_all(&mut f, &[pattern(100, 6), pattern(5000, 7)]);
        assert!(spilled(&f));
        let out = f.finish().unwrap();
        assert_eq!(contents(&out), want);
        assert!(f.finish().is_err(), "finished once only");
    }

    #[test]
    fn budget_never_exceeds_its_limit() {
        let b = Budget::new(10);
        assert!(b.try_take(6));
        assert!(!b.try_take(5));
        assert!(b.try_take(4));
        assert!(!b.try_take(1));
        b.give(10);
        assert!(b.try_take(10));
    }
}
