//! Progress events of a conversion, per layer and stage, for progress bars and logs.
//!
//! The engine calls a [`Progress`] from several threads (downloads, apply, background
//! commits, uploads); implementations must be cheap and thread-safe. [`NoProgress`]
//! ignores everything. The CLI draws bars on a terminal and logs lines elsewhere.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The stages a layer goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Fetching the source blob (remote stores), or the converted blob of a dedup hit.
    Download,
    /// Decompressing and applying the layer tar onto the filesystem.
    Apply,
    /// Committing (compressing) the layer's changes into the output blob.
    Commit,
    /// Pushing the output blob.
    Upload,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Apply => "apply",
            Stage::Commit => "commit",
            Stage::Upload => "upload",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which layer an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerId {
    /// The platform (`linux/amd64`) or, without one, the short source manifest digest.
    pub manifest: String,
    /// Position in the source manifest.
    pub index: usize,
    /// Layers in the source manifest.
    pub count: usize,
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} layer {}/{}",
            self.manifest,
            self.index + 1,
            self.count
        )
    }
}

/// Receives progress events.
pub trait Progress: Send + Sync {
    /// A stage begins; `total` bytes when known.
    fn start(&self, layer: &LayerId, stage: Stage, total: Option<u64>);
    /// `bytes` more bytes were processed.
    fn advance(&self, layer: &LayerId, stage: Stage, bytes: u64);
    /// A stage ended (successfully) after `bytes` bytes in `seconds`.
    fn finish(&self, layer: &LayerId, stage: Stage, bytes: u64, seconds: f64);
    /// A stage was not needed (an upload of a blob the target already had).
    fn skipped(&self, layer: &LayerId, stage: Stage, why: &str) {
        let _ = (layer, stage, why);
    }
    /// The layer needs no work: the dedup database had it.
    fn reused(&self, layer: &LayerId, digest: &str) {
        let _ = (layer, digest);
    }
}

/// Ignores all events.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &LayerId, _: Stage, _: Option<u64>) {}
    fn advance(&self, _: &LayerId, _: Stage, _: u64) {}
    fn finish(&self, _: &LayerId, _: Stage, _: u64, _: f64) {}
}

/// A shareable [`Progress`], for option structs that must be `Clone + Debug`.
#[derive(Clone)]
pub struct ProgressSink(pub Arc<dyn Progress>);

impl Default for ProgressSink {
    fn default() -> Self {
        ProgressSink(Arc::new(NoProgress))
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl std::ops::Deref for ProgressSink {
    type Target = dyn Progress;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Counts the bytes read through it and reports them as progress of one stage.
pub struct CountingReader<R> {
    pub inner: R,
    pub bytes: u64,
    sink: ProgressSink,
    layer: LayerId,
    stage: Stage,
    /// Bytes not yet reported (events are batched to 256 KiB).
    unreported: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, sink: ProgressSink, layer: LayerId, stage: Stage) -> Self {
        CountingReader {
            inner,
            bytes: 0,
            sink,
            layer,
            stage,
            unreported: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.unreported += n as u64;
        if self.unreported >= 256 << 10 || (n == 0 && self.unreported > 0) {
            self.sink.advance(&self.layer, self.stage, self.unreported);
            self.unreported = 0;
        }
        Ok(n)
    }
}
