//! Workers: claim a job, convert it with `obd-convert` (in-process), record the outcome.
//!
//! Each run holds a lease renewed by a heartbeat thread. When a heartbeat finds the token
//! gone (the lease expired, was reaped and the job handed on), the run is *fenced*: the
//! target store refuses every further write, and the tag (the last write) is only written
//! after one more heartbeat, in the same call, proves the lease is still held. A run past
//! its deadline is fenced too and recorded as a transient failure.
//!
//! Errors are sorted as the CLI's exit codes are: bad input, not found, auth and usage
//! errors are permanent (`dead` at once); I/O and registry failures (5xx, 429, resets) are
//! retried with exponential backoff and jitter until `max_attempts`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use obd_convert::dedup::DedupHandle;
use obd_convert::dedup_db::DbDedup;
use obd_convert::image::Flavor;
use obd_convert::native::NativeOptions;
use obd_convert::registry_store::RegistryStore;
use obd_convert::store::{Desc, Pushed, Store};
use obd_convert::{ConvertError, ConvertOptions, Engine};
use serde_json::Value;

use crate::config::{Config, RegistryConfig};
use crate::metrics::Metrics;
use crate::queue::{Claimed, Job, Outcome, Queue};

/// What every worker of a process shares.
pub struct Shared {
    pub config: Config,
    pub queue: Arc<dyn Queue>,
    pub dedup: Option<Arc<dyn obd_dedup::DedupDb>>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: claim nothing more.
    pub stopping: Arc<AtomicBool>,
    /// This process's name in leases (`host:pid`).
    pub owner: String,
    /// The runs in progress, by job id (released at the end of a shutdown's grace).
    pub running: std::sync::Mutex<std::collections::HashMap<i64, Arc<Lease>>>,
}

impl Shared {
    /// This process's own work directory (`WORK/PID`).
    pub fn process_dir(&self) -> PathBuf {
        self.config.work_dir.join(std::process::id().to_string())
    }

    /// Shutdown, after the grace period: every run still going is fenced (it will write
    /// nothing more) and its job given back to the queue, its attempt not counted.
    pub fn release_running(&self) -> usize {
        let running: Vec<Arc<Lease>> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in &running {
            l.lost.store(true, Ordering::SeqCst);
            match self.queue.release(l.id, &l.token) {
                Ok(true) => tracing::info!("job {} released: it will run again", l.id),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("job {}: cannot release ({e}); its lease will expire", l.id)
                }
            }
        }
        running.len()
    }
}

/// Removes the work directories of processes of this machine that are gone (a crash's
/// leftovers); a live process's directory is left alone.
pub fn remove_leftovers(work_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(work_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing the work directory of gone process {pid}");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The name of this process in leases.
pub fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Runs one worker until `stopping`; `idle` is how long to wait when the queue is empty.
pub fn run(shared: Arc<Shared>, idle: Duration) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let t = Instant::now();
        match shared.queue.claim(&shared.owner, shared.config.lease()) {
            Ok(Some(c)) => {
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(job = c.job.id, claim_ms = ms, "claim took");
                run_job(&shared, c)
            }
            Ok(None) => sleep_unless_stopping(&shared.stopping, idle),
            Err(e) => {
                tracing::warn!("cannot claim a job: {e}");
                sleep_unless_stopping(&shared.stopping, Duration::from_secs(1));
            }
        }
    }
}

fn sleep_unless_stopping(stopping: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

/// The lease of a run: its token, and whether it is lost.
pub struct Lease {
    queue: Arc<dyn Queue>,
    id: i64,
    token: String,
    length: Duration,
    lost: AtomicBool,
    metrics: Arc<Metrics>,
    /// The run's dedup, whose layer claims are renewed with the lease. Weak: the dedup
    /// holds the fenced store, which holds this lease, and the claims must be released
    /// (on drop) when the run ends.
    dedup: std::sync::Mutex<std::sync::Weak<DbDedup>>,
}

impl Lease {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn lose(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!("job {}: {why}: stopping before any further write", self.id);
            self.metrics.lease_lost();
        }
    }

    /// Renews now; false (and fenced) when the token no longer holds the job.
    fn renew(&self) -> bool {
        match self.queue.heartbeat(self.id, &self.token, self.length) {
            Ok(true) => {
                tracing::debug!(job = self.id, lease = %self.token, "lease renewed");
                let d = self
                    .dedup
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .upgrade();
                if let Some(d) = d {
                    d.renew_claims();
                }
                !self.is_lost()
            }
            Ok(false) => {
                self.lose("the lease is gone (it expired and the job was handed on)");
                false
            }
            Err(e) => {
                tracing::warn!("job {}: heartbeat failed: {e}", self.id);
                false
            }
        }
    }
}

/// The target store of a run, refusing writes once the lease is lost; the tag is written
/// only after a heartbeat in the same call proves the lease.
struct FencedStore {
    inner: Arc<dyn Store>,
    lease: Arc<Lease>,
}

impl FencedStore {
    fn check(&self) -> obd_convert::Result<()> {
        if self.lease.is_lost() {
            return Err(ConvertError::Interrupted);
        }
        Ok(())
    }
}

impl Store for FencedStore {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn resolve(&self, reference: &str) -> obd_convert::Result<Desc> {
        self.inner.resolve(reference)
    }
    fn fetch_manifest(&self, desc: &Desc) -> obd_convert::Result<Vec<u8>> {
        self.inner.fetch_manifest(desc)
    }
    fn fetch_blob(&self, digest: &str) -> obd_convert::Result<Box<dyn std::io::Read + Send>> {
        self.check()?;
        self.inner.fetch_blob(digest)
    }
    fn has_blob(&self, digest: &str) -> obd_convert::Result<Option<u64>> {
        self.inner.has_blob(digest)
    }
    fn push_blob(&self, path: &Path, digest: &str, size: u64) -> obd_convert::Result<Pushed> {
        self.check()?;
        self.inner.push_blob(path, digest, size)
    }
    fn push_blob_bytes(&self, bytes: &bytes::Bytes, digest: &str) -> obd_convert::Result<Pushed> {
        self.check()?;
        self.inner.push_blob_bytes(bytes, digest)
    }
    fn push_manifest(&self, bytes: &[u8], media_type: &str) -> obd_convert::Result<String> {
        self.check()?;
        self.inner.push_manifest(bytes, media_type)
    }
    fn tag(&self, tag: &str, bytes: &[u8], media_type: &str) -> obd_convert::Result<()> {
        if !self.lease.renew() {
            self.lease
                .lose("the lease could not be confirmed before tagging");
            return Err(ConvertError::Interrupted);
        }
        self.inner.tag(tag, bytes, media_type)
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn location(&self) -> (String, String) {
        self.inner.location()
    }
    fn mount_blob(&self, digest: &str, from_repo: &str) -> obd_convert::Result<bool> {
        self.check()?;
        self.inner.mount_blob(digest, from_repo)
    }
    fn check_push(&self) -> obd_convert::Result<()> {
        self.check()?;
        self.inner.check_push()
    }
}

/// Client options for `HOST/REPO` from its `[[registry]]` settings; credentials come from
/// the same lookup as `convertor`'s (`REGISTRY_AUTH_FILE`, the containers auth.json files,
/// the docker config with its credential helpers), and so do certs.d directories.
pub fn client_options(
    r: &RegistryConfig,
    repository: &str,
) -> obd_convert::Result<obd_registry::ClientOptions> {
    registry_client_options(r, Some(repository))
}

/// [`client_options`] for the whole registry (`repository` `None`: the credentials of the
/// host, as for listing its catalog) or one repository of it.
pub fn registry_client_options(
    r: &RegistryConfig,
    repository: Option<&str>,
) -> obd_convert::Result<obd_registry::ClientOptions> {
    let client_cert = r.client_cert.as_deref().and_then(|cc| {
        cc.rsplit_once(':')
            .map(|(c, k)| (PathBuf::from(c), PathBuf::from(k)))
    });
    let env = obd_registry::credentials::LookupEnv::from_process();
    let found = obd_registry::credentials::lookup(&r.host, repository, &env)
        .map_err(obd_convert::registry_store::map_err)?;
    Ok(obd_registry::ClientOptions {
        plain_http: r.plain,
        insecure_skip_verify: r.insecure,
        cert_dirs: r.cert_dir.clone(),
        root_cas: r.root_ca.clone(),
        client_cert,
        credentials: found.credentials,
        credentials_source: found.source,
        credentials_searched: found.tried,
        certs_d_roots: obd_registry::certs_d_roots_from_env(),
        hints: obd_registry::Hints {
            credentials: format!(
                "a credential helper, auth.json or docker config entry for {}",
                r.host
            ),
            plain_http: format!("plain = true in the [[registry]] of {}", r.host),
            trust: format!("root_ca or cert_dir in the [[registry]] of {}", r.host),
        },
        chunk_size: Some(16 << 20),
        ..Default::default()
    })
}

/// The store of `HOST/REPO`.
pub fn open_repo(config: &Config, host_repo: &str) -> obd_convert::Result<Arc<dyn Store>> {
    let r = obd_registry::Reference::parse(host_repo)
        .map_err(|e| ConvertError::Unsupported(format!("repository {host_repo:?}: {e}")))?;
    let opts = client_options(&config.registry(&r.registry), &r.repository)?;
    let client = obd_registry::Client::new(&r.registry, opts)
        .map_err(obd_convert::registry_store::map_err)?;
    Ok(Arc::new(RegistryStore::new(client, r.repository)))
}

/// How a failed run is recorded: permanent errors are dead at once.
fn outcome_of(e: &ConvertError, job: &Job, config: &Config) -> Outcome {
    let error = e.to_string();
    match e {
        ConvertError::Io { .. } | ConvertError::Store(_) => Outcome::Failed {
            error,
            retry_in: backoff(config.backoff_ms, job.attempts),
        },
        _ => Outcome::Dead { error },
    }
}

/// `base × 2^(attempt-1)`, ±25 % jitter, at most 10 minutes.
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(600_000);
    let mut b = [0u8; 2];
    let jitter = if crate::queue::random_bytes(&mut b) {
        u16::from_le_bytes(b) as f64 / u16::MAX as f64
    } else {
        0.5
    };
    Duration::from_millis((capped as f64 * (0.75 + jitter * 0.5)) as u64)
}

/// The conversion options a job's spec asks for.
fn options(spec: &str, work: &Path) -> obd_convert::Result<ConvertOptions> {
    let v: Value =
        serde_json::from_str(spec).map_err(|e| ConvertError::BadInput(format!("job spec: {e}")))?;
    let algorithm = v["algorithm"]
        .as_str()
        .unwrap_or("lz4")
        .parse()
        .map_err(|_| ConvertError::Unsupported("job spec: bad algorithm".into()))?;
    let engine = match v["engine"].as_str() {
        Some("turbo") => Engine::Turbo {
            fstype: v["fstype"].as_str().unwrap_or("ext4").to_string(),
        },
        _ => Engine::Native,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(ConvertOptions {
        native: NativeOptions {
            mkfs: v["mkfs"].as_bool().unwrap_or(true),
            vsize_gb: v["vsize"].as_u64().unwrap_or(64),
            flavor: Flavor {
                oci: v["oci"].as_bool().unwrap_or(false)
                    || v["referrer"].as_bool().unwrap_or(false),
            },
            referrer: v["referrer"].as_bool().unwrap_or(false),
            zfile: obd_format::zfile::ZFileOptions {
                algorithm,
                threads,
                ..Default::default()
            },
            ..Default::default()
        },
        work_dir: work.to_path_buf(),
        concurrency: 2,
        platforms: v["platforms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect(),
        dedup: Default::default(),
        engine,
    })
}

/// Converts the job's image; the outcome to record.
fn convert(shared: &Shared, job: &Job, lease: &Arc<Lease>, work: &Path) -> Outcome {
    let result = (|| -> obd_convert::Result<Outcome> {
        let src = open_repo(&shared.config, &format!("{}/{}", job.host, job.repository))?;
        // The loop guard, at run time: an image that is already converted is not ours to
        // convert (our own outputs, or someone else's).
        if let Some(kind) = obd_convert::already_converted(src.as_ref(), &job.digest)? {
            return Ok(Outcome::Skipped {
                reason: format!("the source is already converted ({kind})"),
            });
        }
        let target = open_repo(&shared.config, &job.target)?;
        let dst: Arc<dyn Store> = Arc::new(FencedStore {
            inner: target,
            lease: lease.clone(),
        });
        // Push access first: a target the credentials cannot push to is a dead job before
        // anything is downloaded.
        dst.check_push()?;
        let mut opts = options(&job.spec, work)?;
        if let (Some(db), Engine::Native) = (&shared.dedup, &opts.engine) {
            let (lp, mp) = obd_convert::dedup_db::profiles(&opts.native, "native")
                .map_err(|e| ConvertError::Unsupported(format!("dedup profile: {e}")))?;
            // Layer claims live as long as the lease: a dead worker's claims expire with it.
            let d = Arc::new(
                DbDedup::new(
                    db.clone(),
                    dst.clone(),
                    lp,
                    mp,
                    opts.native.flavor.manifest(),
                )
                .with_claim_ttl(lease.length),
            );
            *lease.dedup.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&d);
            opts.dedup = DedupHandle(d);
        }
        let r = obd_convert::convert(src, dst, &job.digest, &job.output_tag, &opts)?;
        shared.metrics.conversion(
            r.totals.layers_reused as u64,
            r.totals.bytes_read,
            r.totals.bytes_uploaded,
        );
        Ok(Outcome::Succeeded {
            output_ref: format!("{}:{}@{}", job.target, job.output_tag, r.output_digest),
            output_digest: r.output_digest,
        })
    })();
    let _ = std::fs::remove_dir_all(work);
    match result {
        Ok(o) => o,
        Err(ConvertError::Interrupted) if lease.is_lost() => Outcome::Failed {
            error: "the lease was lost: stopped before tagging".into(),
            retry_in: Duration::ZERO,
        },
        Err(e) => outcome_of(&e, job, &shared.config),
    }
}

fn run_job(shared: &Arc<Shared>, c: Claimed) {
    let Claimed { job, token } = c;
    // Every log line of the job carries its id (a field of the `job` span in JSON logs).
    let span = tracing::info_span!("job", id = job.id, attempt = job.attempts);
    let _entered = span.clone().entered();
    let t0 = Instant::now();
    tracing::debug!(job = job.id, lease = %token, "claimed");
    tracing::info!(
        "job {} (attempt {}/{}): {} -> {}:{}",
        job.id,
        job.attempts,
        job.max_attempts,
        job.source(),
        job.target,
        job.output_tag
    );
    let lease = Arc::new(Lease {
        queue: shared.queue.clone(),
        id: job.id,
        token: token.clone(),
        length: shared.config.lease(),
        lost: AtomicBool::new(false),
        metrics: shared.metrics.clone(),
        dedup: Default::default(),
    });
    shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(job.id, lease.clone());
    let done = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (lease, done, period) = (lease.clone(), done.clone(), shared.config.heartbeat());
        let span = span.clone();
        std::thread::spawn(move || {
            let _entered = span.entered();
            let mut last_ok = Instant::now();
            loop {
                sleep_unless_stopping(&done, period);
                if done.load(Ordering::SeqCst) {
                    return;
                }
                if lease.renew() {
                    last_ok = Instant::now();
                } else if lease.is_lost() || last_ok.elapsed() >= lease.length {
                    lease.lose("no heartbeat got through for a whole lease");
                    return;
                }
            }
        })
    };
    let work = shared
        .process_dir()
        .join(format!("job-{}-{}", job.id, job.attempts));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (shared, job, lease, work) = (shared.clone(), job.clone(), lease.clone(), work.clone());
        let span = span.clone();
        std::thread::spawn(move || {
            let _entered = span.entered();
            let _ = tx.send(convert(&shared, &job, &lease, &work));
        });
    }
    let deadline = Duration::from_secs(job.deadline_secs.max(1));
    let outcome = match rx.recv_timeout(deadline) {
        Ok(o) => o,
        Err(_) => {
            // The run goes on in its thread until its next write, which the fence refuses.
            lease.lost.store(true, Ordering::SeqCst);
            Outcome::Failed {
                error: format!("the run passed its deadline of {} s", deadline.as_secs()),
                retry_in: backoff(shared.config.backoff_ms, job.attempts),
            }
        }
    };
    done.store(true, Ordering::SeqCst);
    let _ = heartbeat.join();
    let still_ours = shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job.id)
        .is_some();
    if !still_ours {
        // Released by a shutdown: the queue has it back already.
        return;
    }
    let secs = t0.elapsed().as_secs_f64();
    let result = match &outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::Dead { .. } => "dead",
        Outcome::Skipped { .. } => "skipped",
    };
    shared.metrics.job(result, secs);
    match shared.queue.complete(job.id, &token, &outcome) {
        Ok(true) => match &outcome {
            Outcome::Succeeded { output_ref, .. } => {
                tracing::info!("job {} succeeded in {secs:.1} s: {output_ref}", job.id)
            }
            Outcome::Failed { error, retry_in } => tracing::warn!(
                "job {} failed (attempt {}/{}), retry in {:.1} s: {error}",
                job.id,
                job.attempts,
                job.max_attempts,
                retry_in.as_secs_f64()
            ),
            Outcome::Dead { error } => tracing::error!("job {} is dead: {error}", job.id),
            Outcome::Skipped { reason } => tracing::info!("job {} skipped: {reason}", job.id),
        },
        Ok(false) => tracing::warn!(
            "job {}: the lease was gone when the run ended; its outcome ({result}) is not recorded",
            job.id
        ),
        Err(e) => tracing::error!("job {}: cannot record the outcome ({result}): {e}", job.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        for attempt in 1..6 {
            let d = backoff(1000, attempt).as_millis() as u64;
            let base = 1000 << (attempt - 1);
            assert!(d >= base * 3 / 4 && d <= base * 5 / 4, "{attempt}: {d}");
        }
        assert!(backoff(1000, 40) <= Duration::from_millis(750_000));
    }
}
