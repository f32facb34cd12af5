//! Background pushes of output blobs, in order, on one thread; the first error wins and
//! stops the rest. After each successful push a callback runs (the dedup database writes
//! its row there: never before the blob is in the registry).

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use crate::error::{ConvertError, Result};
use crate::progress::{LayerId, ProgressSink, Stage};
use crate::report::StageReport;
use crate::store::Store;

/// One blob to push.
pub struct Push {
    pub layer: Option<LayerId>,
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
    /// Runs after the blob is in the store.
    pub then: Option<Box<dyn FnOnce() + Send>>,
}

/// Figures of finished pushes, by digest.
pub type Uploaded = Arc<Mutex<Vec<(String, StageReport)>>>;

/// The upload thread.
pub struct Uploader {
    tx: Option<mpsc::Sender<Push>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
    pub done: Uploaded,
}

impl Uploader {
    /// Starts the thread; with `enabled` false, pushes are dropped (`--no-upload`).
    pub fn start(dst: Arc<dyn Store>, enabled: bool, progress: ProgressSink) -> Self {
        let (tx, rx) = mpsc::channel::<Push>();
        let done = Uploaded::default();
        let done2 = done.clone();
        let handle = std::thread::spawn(move || -> Result<()> {
            for p in rx {
                if !enabled {
                    continue;
                }
                let t = Instant::now();
                if let Some(l) = &p.layer {
                    progress.start(l, Stage::Upload, Some(p.size));
                }
                dst.push_blob(&p.path, &p.digest, p.size)?;
                let s = StageReport {
                    seconds: t.elapsed().as_secs_f64(),
                    bytes: p.size,
                };
                if let Some(l) = &p.layer {
                    progress.advance(l, Stage::Upload, p.size);
                    progress.finish(l, Stage::Upload, p.size, s.seconds);
                }
                tracing::debug!("uploaded {}", p.digest);
                done2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((p.digest.clone(), s));
                if let Some(f) = p.then {
                    f();
                }
            }
            Ok(())
        });
        Uploader {
            tx: Some(tx),
            handle: Some(handle),
            done,
        }
    }

    /// Queues a push.
    pub fn send(&self, p: Push) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
    }

    /// Waits for every queued push; returns the first error.
    pub fn finish(mut self) -> Result<()> {
        self.tx.take();
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ConvertError::Store("the upload thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
