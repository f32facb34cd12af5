//! Running the service: `obdconv serve` (HTTP ingest, workers, reaper) and `obdconv worker`
//! (workers and reaper only), with the shutdown SIGTERM asks for: stop taking events and
//! claiming jobs, let running jobs finish for the grace period, give the rest back, exit 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::Api;
use crate::metrics::Metrics;
use crate::queue::{self, QueueError};
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
    });
    api.serve(Arc::new(server), 4);
    tracing::info!("shutting down: no more events or claims");
    drain(&shared, workers);
    Ok(())
}

/// `obdconv worker`: workers and the reaper, no HTTP.
pub fn work(shared: Arc<Shared>) {
    tracing::info!(
        "{} worker(s) on database {}",
        shared.config.workers,
        shared.config.db_type
    );
    let workers = start_workers(&shared, shared.config.workers);
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down: no more claims");
    drain(&shared, workers);
}
