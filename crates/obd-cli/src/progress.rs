//! Progress display for `convertor`: one bar per layer on a terminal (stage, bytes, rate),
//! plain log lines otherwise. Log records are printed above the bars, never through them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use obd_convert::progress::{LayerId, Progress, Stage};

/// Bars on a terminal.
pub struct Bars {
    mp: MultiProgress,
    bars: Mutex<HashMap<LayerId, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Arc<Bars> {
        Arc::new(Bars {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)),
            bars: Mutex::new(HashMap::new()),
        })
    }

    /// The bars' container, for routing log output above them.
    pub fn multi(&self) -> MultiProgress {
        self.mp.clone()
    }

    fn bar(&self, l: &LayerId) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(l.clone())
            .or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>24} {msg:9} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {elapsed:>4}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_prefix(l.to_string());
                b
            })
            .clone()
    }
}

impl Progress for Bars {
    fn start(&self, l: &LayerId, stage: Stage, total: Option<u64>) {
        let b = self.bar(l);
        b.set_message(stage.name());
        b.set_position(0);
        b.set_length(total.unwrap_or(0));
        b.reset_eta();
    }
    fn advance(&self, l: &LayerId, _: Stage, bytes: u64) {
        let b = self.bar(l);
        if b.length().is_some_and(|n| b.position() + bytes > n) {
            b.set_length(b.position() + bytes);
        }
        b.inc(bytes);
    }
    fn finish(&self, l: &LayerId, stage: Stage, bytes: u64, _: f64) {
        let b = self.bar(l);
        b.set_length(bytes.max(b.position()));
        b.set_position(bytes.max(b.position()));
        if stage == Stage::Upload {
            b.finish_with_message("done");
        }
    }
    fn reused(&self, l: &LayerId, _: &str) {
        self.bar(l).finish_with_message("reused");
    }
}

/// Log lines, one per finished stage.
pub struct Lines;

impl Progress for Lines {
    fn start(&self, _: &LayerId, _: Stage, _: Option<u64>) {}
    fn advance(&self, _: &LayerId, _: Stage, _: u64) {}
    fn finish(&self, l: &LayerId, stage: Stage, bytes: u64, seconds: f64) {
        let rate = if seconds > 0.0 {
            bytes as f64 / seconds / 1e6
        } else {
            0.0
        };
        tracing::info!("{l}: {stage} {bytes} bytes in {seconds:.2} s ({rate:.1} MB/s)");
    }
    fn reused(&self, l: &LayerId, digest: &str) {
        tracing::info!("{l}: reused {digest} (dedup)");
    }
}

/// A `tracing` writer that prints above the bars.
#[derive(Clone)]
pub struct AboveBars(pub MultiProgress);

impl Write for AboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AboveBars {
    type Writer = AboveBars;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
