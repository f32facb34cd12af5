//! Progress display for `convertor`: one bar per layer on a terminal (stage, bytes, rate),
//! plain log lines otherwise. Log records are printed above the bars, never through them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use obd_convert::progress::{LayerId, Progress, Stage};

/// Bars on a terminal.
///
/// A layer's bar shows one stage at a time, the latest begun: a layer applies while its
/// download is still arriving, and the download's events must not move the apply bar (its
/// total is the compressed layer size, its position the compressed bytes consumed). A
/// stage without a known total (commit) shows its bytes without a bar.
pub struct Bars {
    mp: MultiProgress,
    bars: Mutex<HashMap<LayerId, (ProgressBar, Stage)>>,
}

const WITH_TOTAL: &str = "{prefix:>24} {msg:9} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {elapsed:>4}";
const NO_TOTAL: &str =
    "{prefix:>24} {msg:9} {spinner:>31} {bytes:>10}            {binary_bytes_per_sec:>12} {elapsed:>4}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
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

    /// The layer's bar, made when first needed (set up before it is first drawn); with
    /// `stage`, that stage (of `total` bytes) becomes the one shown.
    fn bar(&self, l: &LayerId, stage: Option<(Stage, Option<u64>)>) -> (ProgressBar, Stage) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = bars.get_mut(l) {
            if let Some((s, total)) = stage {
                e.1 = s;
                e.0.set_style(style(if total.is_some() {
                    WITH_TOTAL
                } else {
                    NO_TOTAL
                }));
                e.0.set_message(s.name());
                e.0.set_length(total.unwrap_or(0));
                e.0.set_position(0);
                e.0.reset_eta();
                e.0.reset_elapsed();
            }
            return e.clone();
        }
        let (s, total) = stage.unwrap_or((Stage::Download, None));
        let b = ProgressBar::new(total.unwrap_or(0));
        b.set_style(style(if total.is_some() {
            WITH_TOTAL
        } else {
            NO_TOTAL
        }));
        b.set_prefix(l.to_string());
        b.set_message(s.name());
        let b = self.mp.add(b);
        bars.insert(l.clone(), (b.clone(), s));
        (b, s)
    }

    /// The bar, if `stage` is the one it shows.
    fn showing(&self, l: &LayerId, stage: Stage) -> Option<ProgressBar> {
        let (b, shown) = self.bar(l, None);
        (shown == stage).then_some(b)
    }
}

impl Progress for Bars {
    fn start(&self, l: &LayerId, stage: Stage, total: Option<u64>) {
        self.bar(l, Some((stage, total)));
    }
    fn advance(&self, l: &LayerId, stage: Stage, bytes: u64) {
        if let Some(b) = self.showing(l, stage) {
            b.inc(bytes);
        }
    }
    fn finish(&self, l: &LayerId, stage: Stage, bytes: u64, _: f64) {
        let Some(b) = self.showing(l, stage) else {
            return;
        };
        // The true figure: a compressed layer read to its end is its size.
        b.set_style(style(WITH_TOTAL));
        b.set_length(bytes);
        b.set_position(bytes);
        if stage == Stage::Upload {
            b.finish_with_message("done");
        }
    }
    fn reused(&self, l: &LayerId, _: &str) {
        self.bar(l, None).0.finish_with_message("reused");
    }
    fn skipped(&self, l: &LayerId, stage: Stage, _: &str) {
        let (b, _) = self.bar(l, Some((stage, None)));
        b.finish_with_message("present");
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
    fn skipped(&self, l: &LayerId, stage: Stage, why: &str) {
        tracing::info!("{l}: {stage} skipped: {why}");
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
