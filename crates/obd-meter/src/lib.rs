//! obd-meter: per-stage CPU accounting.
//!
//! A conversion runs its stages on several threads at once (downloads, inflating and
//! hashing a layer, applying it to ext4, compressing the output, uploading). To tell where
//! the CPU seconds go, each piece of work says which [`Stage`] it belongs to with
//! [`charge`] (or a [`Guard`] from [`enter`]); the thread's own CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`) is read at each change of stage, and the time since the
//! last change is added to the stage that was running. Stages nest: time is charged to the
//! innermost one only (a hash computed inside a read charged as inflate counts as hash),
//! so the totals add up to at most the process's CPU time. What no stage claims is the
//! caller's to call "other".
//!
//! The totals are process-wide ([`totals`]); [`Snapshot::since`] gives the difference over
//! a piece of work (a conversion, a benchmark run). A clock read costs about a system call,
//! so stages are charged per buffer or batch, never per 4 KiB block.
//!
//! ```
//! use obd_meter::{charge, totals, Stage};
//! let before = totals();
//! let x = charge(Stage::Hash, || (0..100_000u64).fold(0u64, |a, b| a ^ b.wrapping_mul(31)));
//! let spent = totals().since(&before);
//! assert!(spent.seconds(Stage::Hash) >= 0.0);
//! std::hint::black_box(x);
//! ```

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// A stage of a conversion that CPU time is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Receiving blobs from the source (network, writing downloaded-ahead bytes).
    Download,
    /// Decompressing layers (gzip, zstd).
    Inflate,
    /// SHA-256: diff IDs of layer tars, digests of compressed blobs and of outputs.
    Hash,
    /// Reading the tar and writing the ext4 filesystem into the LSMT layer.
    Apply,
    /// Compressing output blocks (LZ4/zstd, ZFile CRCs) and writing the output.
    Compress,
    /// Sending outputs to the target.
    Upload,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Download,
        Stage::Inflate,
        Stage::Hash,
        Stage::Apply,
        Stage::Compress,
        Stage::Upload,
    ];

    /// The stage's name in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Inflate => "inflate",
            Stage::Hash => "hash",
            Stage::Apply => "apply",
            Stage::Compress => "compress",
            Stage::Upload => "upload",
        }
    }

    fn slot(self) -> usize {
        self as usize + 1
    }
}

/// Nanoseconds per slot: 0 is time outside every stage (never reported), then one per
/// stage.
static NANOS: [AtomicU64; Stage::ALL.len() + 1] = [const { AtomicU64::new(0) }; 7];

thread_local! {
    /// The slot running on this thread and the thread CPU clock when it started.
    static CURRENT: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

/// This thread's CPU time in nanoseconds (0 where the clock cannot be read).
fn thread_nanos() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Charges the time since the last change to the running slot and makes `slot` the
/// running one; returns the slot that was running.
fn switch(slot: usize) -> usize {
    let now = thread_nanos();
    CURRENT.with(|c| {
        let (prev, since) = c.get();
        if prev != 0 {
            NANOS[prev].fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        }
        c.set((slot, now));
        prev
    })
}

/// While alive, this thread's CPU time goes to one stage; on drop the stage that ran
/// before is resumed.
#[must_use = "the stage ends when the guard is dropped"]
pub struct Guard {
    prev: usize,
    /// A guard belongs to the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Charges this thread's CPU time to `stage` until the guard is dropped.
pub fn enter(stage: Stage) -> Guard {
    Guard {
        prev: switch(stage.slot()),
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        switch(self.prev);
    }
}

/// Runs `f` with this thread's CPU time charged to `stage`.
pub fn charge<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let _g = enter(stage);
    f()
}

/// CPU seconds per stage at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    nanos: [u64; Stage::ALL.len()],
}

impl Snapshot {
    /// Seconds charged to `stage`.
    pub fn seconds(&self, stage: Stage) -> f64 {
        self.nanos[stage.slot() - 1] as f64 / 1e9
    }

    /// What was charged between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut nanos = [0; Stage::ALL.len()];
        for (i, n) in nanos.iter_mut().enumerate() {
            *n = self.nanos[i].saturating_sub(earlier.nanos[i]);
        }
        Snapshot { nanos }
    }

    /// `(stage, seconds)` for every stage, in pipeline order.
    pub fn iter(&self) -> impl Iterator<Item = (Stage, f64)> + '_ {
        Stage::ALL.iter().map(|&s| (s, self.seconds(s)))
    }

    /// The sum over all stages.
    pub fn total(&self) -> f64 {
        self.iter().map(|(_, s)| s).sum()
    }
}

/// The process-wide totals so far. Time of a stage still running on some thread is added
/// when that thread next changes stage.
pub fn totals() -> Snapshot {
    let mut nanos = [0; Stage::ALL.len()];
    for (i, n) in nanos.iter_mut().enumerate() {
        *n = NANOS[i + 1].load(Ordering::Relaxed);
    }
    Snapshot { nanos }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(ms: u64) {
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < ms as u128 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn nested_stages_are_charged_to_the_innermost_only() {
        // Other tests may run at the same time: read this thread's charges through a
        // dedicated thread and compare orders of magnitude only.
        let before = totals();
        std::thread::spawn(|| {
            charge(Stage::Upload, || {
                spin(60);
                charge(Stage::Download, || spin(120));
                spin(60);
            });
        })
        .join()
        .unwrap();
        let d = totals().since(&before);
        let (up, down) = (d.seconds(Stage::Upload), d.seconds(Stage::Download));
        assert!((0.09..0.5).contains(&up), "upload {up}");
        assert!((0.09..0.5).contains(&down), "download {down}");
        assert!(d.total() >= up + down);
    }

    #[test]
    fn time_outside_every_stage_is_not_charged() {
        let before = totals();
        std::thread::spawn(|| {
            spin(50);
            let _g = enter(Stage::Apply);
        })
        .join()
        .unwrap();
        let d = totals().since(&before);
        assert!(
            d.seconds(Stage::Apply) < 0.04,
            "{}",
            d.seconds(Stage::Apply)
        );
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = Stage::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Stage::ALL.len());
    }
}
