//! Running the service: `obdconv serve` (HTTP ingest, workers, reaper) and `obdconv worker`
//! (workers and reaper only), with the shutdown SIGTERM asks for: stop taking events and
//! claiming jobs, let running jobs finish for the grace period, give the rest back, exit 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::Api;
use crate::metrics::Metrics;
use crate::queue::{self, JobState, QueueError};
use crate::worker::{self, Shared};

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir {
        path: String,
        source: std::io::Error,
    },
}

/// Opens the queue and the dedup database of `config`, and cleans the work directory.
pub fn shared(config: Config, stopping: Arc<AtomicBool>) -> Result<Arc<Shared>, StartError> {
    let db_str = config.db_str();
    let queue: Arc<dyn queue::Queue> = Arc::from(queue::open(&config.db_type, &db_str)?);
    let dedup = match obd_dedup::open(&config.db_type, &db_str) {
        Ok(db) => Some(Arc::from(db)),
        Err(e) => {
            tracing::warn!("dedup database unavailable ({e}); converting without dedup");
            None
        }
    };
    std::fs::create_dir_all(&config.work_dir).map_err(|source| StartError::WorkDir {
        path: config.work_dir.display().to_string(),
        source,
    })?;
    worker::remove_leftovers(&config.work_dir);
    Ok(Arc::new(Shared {
        config,
        queue,
        dedup,
        metrics: Arc::new(Metrics::default()),
        stopping,
        owner: worker::owner_name(),
        running: Default::default(),
    }))
}

/// Starts `workers` worker threads and the reaper; returns their handles.
fn start_workers(shared: &Arc<Shared>, workers: usize) -> Vec<std::thread::JoinHandle<()>> {
    let mut hs: Vec<_> = (0..workers)
        .map(|_| {
            let s = shared.clone();
            std::thread::spawn(move || worker::run(s, Duration::from_millis(250)))
        })
        .collect();
    let s = shared.clone();
    hs.push(std::thread::spawn(move || {
        let period = s.config.heartbeat().min(Duration::from_secs(5));
        while !s.stopping.load(Ordering::SeqCst) {
            match s.queue.reap() {
                Ok(0) => {}
                Ok(n) => tracing::warn!("{n} expired lease(s) reaped: their jobs are queued again"),
                Err(e) => tracing::warn!("reaper: {e}"),
            }
            let end = Instant::now() + period;
            while Instant::now() < end && !s.stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }));
    hs
}

/// After `stopping` is set: waits up to the grace period for the workers, then releases
/// what still runs.
fn drain(shared: &Arc<Shared>, workers: Vec<std::thread::JoinHandle<()>>) {
    let grace = Duration::from_secs(shared.config.grace_secs);
    let end = Instant::now() + grace;
    while Instant::now() < end && workers.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = shared.release_running();
    if n > 0 {
        tracing::warn!(
            "grace period of {} s over: {n} running job(s) released",
            grace.as_secs()
        );
    }
    tracing::info!("stopped");
}

/// `obdconv serve`: blocks until `stopping` is set, then shuts down.
pub fn serve(shared: Arc<Shared>, token: String) -> Result<(), StartError> {
    let addr = shared.config.listen.clone();
    let server = tiny_http::Server::http(&addr).map_err(|e| StartError::Listen {
        addr: addr.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(
        "listening on http://{addr} with {} worker(s); database {}",
        shared.config.workers,
        shared.config.db_type
    );
    let workers = start_workers(&shared, shared.config.workers);
    let api = Arc::new(Api {
        shared: shared.clone(),
        token,
        metrics_only: false,
    });
    api.serve(Arc::new(server), 4);
    tracing::info!("shutting down: no more events or claims");
    drain(&shared, workers);
    Ok(())
}

/// True when no job is queued, waiting to retry, or running, anywhere.
fn queue_empty(shared: &Shared) -> bool {
    match shared.queue.counts() {
        Ok(c) => c.by_state.iter().all(|(s, n)| {
            *n == 0 || !matches!(s, JobState::Queued | JobState::Failed | JobState::Running)
        }),
        Err(_) => false,
    }
}

/// `obdconv worker`: workers and the reaper, no event ingest; `/metrics` and `/healthz` on
/// `metrics_listen` when given. With `exit_when_empty`, it stops (exit 0) once no job is
/// queued, waiting to retry or running.
pub fn work(
    shared: Arc<Shared>,
    metrics_listen: Option<&str>,
    exit_when_empty: bool,
) -> Result<(), StartError> {
    tracing::info!(
        "{} worker(s) on database {}",
        shared.config.workers,
        shared.config.db_type
    );
    let metrics = match metrics_listen {
        Some(addr) => {
            let server = tiny_http::Server::http(addr).map_err(|e| StartError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
            tracing::info!("metrics on http://{addr}/metrics");
            let api = Arc::new(Api {
                shared: shared.clone(),
                token: String::new(),
                metrics_only: true,
            });
            Some(std::thread::spawn(move || api.serve(Arc::new(server), 1)))
        }
        None => None,
    };
    let workers = start_workers(&shared, shared.config.workers);
    let mut empty_since: Option<Instant> = None;
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if !exit_when_empty {
            continue;
        }
        let idle = shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if idle && queue_empty(&shared) {
            // Empty for a whole second: a job between a claim and its row's update is not
            // missed.
            match empty_since {
                Some(t) if t.elapsed() >= Duration::from_secs(1) => {
                    tracing::info!("the queue is empty: exiting (--exit-when-empty)");
                    shared.stopping.store(true, Ordering::SeqCst);
                }
                Some(_) => {}
                None => empty_since = Some(Instant::now()),
            }
        } else {
            empty_since = None;
        }
    }
    tracing::info!("shutting down: no more claims");
    drain(&shared, workers);
    if let Some(m) = metrics {
        let _ = m.join();
    }
    Ok(())
}
