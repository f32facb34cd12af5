//! Background pushes of output blobs, queued in order and run by a few threads at once
//! (a registry ingests one stream at a fraction of its capacity); the first error wins and
//! stops the rest. After each successful push a callback runs (the dedup database writes
//! its row there: never before the blob is in the registry).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use crate::error::{ConvertError, Result};
use crate::memory::Output;
use crate::progress::{LayerId, ProgressSink, Stage};
use crate::report::{StageReport, UploadReport};
use crate::store::{Pushed, Store};

/// One blob to push.
pub struct Push {
    pub layer: Option<LayerId>,
    /// The blob: a file, or bytes in memory (freed once pushed).
    pub blob: Output,
    pub digest: String,
    pub size: u64,
    /// Runs after the blob is in the store.
    pub then: Option<Box<dyn FnOnce() + Send>>,
}

/// Figures of finished pushes, by digest.
type Uploaded = Arc<Mutex<Vec<(String, UploadReport)>>>;

/// Pushes running at once.
const WORKERS: usize = 3;

/// The upload threads.
pub struct Uploader {
    tx: Option<mpsc::Sender<Push>>,
    handles: Vec<std::thread::JoinHandle<Result<()>>>,
    done: Uploaded,
}

impl Uploader {
    /// Starts the threads; with `enabled` false, pushes are dropped (`--no-upload`).
    pub fn start(dst: Arc<dyn Store>, enabled: bool, progress: ProgressSink) -> Self {
        let (tx, rx) = mpsc::channel::<Push>();
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let done = Uploaded::default();
        let handles = (0..WORKERS)
            .map(|_| {
                let (rx, failed, done, dst, progress) = (
                    rx.clone(),
                    failed.clone(),
                    done.clone(),
                    dst.clone(),
                    progress.clone(),
                );
                std::thread::spawn(move || -> Result<()> {
                    let _cpu = obd_meter::enter(obd_meter::Stage::Upload);
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(p) = next else { return Ok(()) };
                        if !enabled || failed.load(Ordering::SeqCst) {
                            continue;
                        }
                        if let Err(e) = push_one(dst.as_ref(), &progress, &done, p) {
                            failed.store(true, Ordering::SeqCst);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        Uploader {
            tx: Some(tx),
            handles,
            done,
        }
    }

    /// A handle other threads can queue pushes with (`None` once finishing).
    pub fn sender(&self) -> Option<mpsc::Sender<Push>> {
        self.tx.clone()
    }

    /// Queues a push.
    pub fn send(&self, p: Push) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
    }

    /// Waits for every queued push; returns the figures of each push by digest, or the
    /// first error.
    pub fn finish(mut self) -> Result<std::collections::HashMap<String, UploadReport>> {
        self.tx.take();
        let mut first = Ok(());
        for h in self.handles.drain(..) {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(ConvertError::Store("an upload thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first?;
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(done.into_iter().collect())
    }
}

fn push_one(dst: &dyn Store, progress: &ProgressSink, done: &Uploaded, p: Push) -> Result<()> {
    let t = Instant::now();
    if let Some(l) = &p.layer {
        progress.start(l, Stage::Upload, Some(p.size));
    }
    let how = match &p.blob {
        Output::File(path) => dst.push_blob(path, &p.digest, p.size)?,
        Output::Memory(m) => dst.push_blob_bytes(m.bytes(), &p.digest)?,
    };
    let s = match how {
        Pushed::Uploaded => {
            let s = StageReport {
                seconds: t.elapsed().as_secs_f64(),
                bytes: p.size,
            };
            if let Some(l) = &p.layer {
                progress.advance(l, Stage::Upload, p.size);
                progress.finish(l, Stage::Upload, p.size, s.seconds);
            }
            tracing::debug!("uploaded {}", p.digest);
            UploadReport::Sent(s)
        }
        Pushed::AlreadyPresent => {
            if let Some(l) = &p.layer {
                progress.skipped(l, Stage::Upload, UploadReport::ALREADY_PRESENT);
            }
            tracing::debug!("{} is already in the target: not sent", p.digest);
            UploadReport::Skipped {
                skipped: UploadReport::ALREADY_PRESENT.into(),
            }
        }
    };
    done.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((p.digest.clone(), s));
    let Push { blob, then, .. } = p;
    drop(blob);
    if let Some(f) = then {
        f();
    }
    Ok(())
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.tx.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
