//! The job queue: a table (`obdconv_jobs`) in the dedup database, no broker.
//!
//! - A job's [`JobKey`] is unique: enqueueing the same conversion again (a duplicate event,
//!   a retried webhook) finds the existing row ([`Enqueued::created`] is false).
//! - Workers [`Queue::claim`] the oldest runnable job in one short transaction and get a
//!   lease: an owner, a random token and an expiry computed by the database's clock. The
//!   conversion runs outside any transaction; [`Queue::heartbeat`] renews the lease and
//!   answers false once the token is gone (the lease was reaped and the job handed to
//!   someone else): the worker must then stop before writing any tag (fencing). Every state
//!   change after the claim names the token, so a fenced worker cannot overwrite the new
//!   owner's result.
//! - [`Queue::reap`] puts jobs whose lease expired back in the queue.
//! - Times are milliseconds since the Unix epoch, as the database's clock tells them.
//!
//! Back ends: [`sqlite::SqliteQueue`] (one machine; `BEGIN IMMEDIATE` claims) and
//! [`mysql::MySqlQueue`] (MySQL 8 / MariaDB 10.6+; `FOR UPDATE SKIP LOCKED` claims under READ
//! COMMITTED, retried on deadlock).

pub mod mysql;
pub mod sqlite;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Converted and tagged.
    Succeeded,
    /// An attempt failed with a transient error; runnable again after `not_before`.
    Failed,
    /// Will not be retried (a permanent error, or `max_attempts` used up).
    Dead,
    /// Nothing to do (already converted, our own output).
    Skipped,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unique key of a job: the sha256 (hex) of everything that decides its output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct JobKey(pub String);

impl JobKey {
    /// The key of converting `digest` of `host/repository` with `rule` and `profile` into
    /// `output` (the target repository and output tag after the rule's pattern).
    pub fn new(
        host: &str,
        repository: &str,
        digest: &str,
        rule: &str,
        profile: &str,
        output: &str,
    ) -> JobKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [host, repository, digest, rule, profile, output] {
            // Length-prefixed, so no two different tuples hash the same bytes.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        JobKey(hex::encode(h.finalize()))
    }
}

/// What a job converts and how: everything a worker needs, fixed when it is enqueued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewJob {
    pub key: JobKey,
    /// Source registry host (`127.0.0.1:5000`).
    pub host: String,
    pub repository: String,
    /// The source manifest or index digest.
    pub digest: String,
    /// The tag the event named, if any (for the report and the output pattern).
    pub tag: Option<String>,
    /// The rule's name.
    pub rule: String,
    /// The target `HOST/REPO`.
    pub target: String,
    pub output_tag: String,
    /// The conversion options, as JSON (the rule's engine and options).
    pub spec: String,
    pub max_attempts: u32,
    /// Seconds a run may take before it is abandoned.
    pub deadline_secs: u64,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub key: String,
    pub host: String,
    pub repository: String,
    pub digest: String,
    pub tag: Option<String>,
    pub rule: String,
    pub target: String,
    pub output_tag: String,
    pub spec: String,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub deadline_secs: u64,
    /// Not runnable before this time (a failed job's backoff).
    pub not_before_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub last_error: Option<String>,
    pub output_digest: Option<String>,
    /// The converted image, `HOST/REPO:TAG@sha256:…`.
    pub output_ref: Option<String>,
    /// Times a lease of this job expired while a worker held it.
    pub lease_losses: u32,
}

impl Job {
    /// The source, `HOST/REPO@sha256:…` (with its tag when the event named one:
    /// `HOST/REPO:TAG@sha256:…`).
    pub fn source(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}@{}", self.host, self.repository, self.digest),
            None => format!("{}/{}@{}", self.host, self.repository, self.digest),
        }
    }
}

/// The answer to [`Queue::enqueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when a job with this key already existed (it is left as it is).
    pub created: bool,
}

/// A job claimed by a worker, and the lease token that proves it.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job: Job,
    pub token: String,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded {
        output_digest: String,
        output_ref: String,
    },
    /// Transient: retried after `retry_in` unless `max_attempts` is used up (then dead).
    Failed {
        error: String,
        retry_in: Duration,
    },
    /// Permanent.
    Dead {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

/// Jobs by state, for `/metrics` and `jobs list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub by_state: Vec<(JobState, u64)>,
    /// Age of the oldest runnable queued (or failed) job, in seconds.
    pub oldest_queued_secs: f64,
    pub attempts: u64,
    pub lease_losses: u64,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database cannot be reached or refused the operation (answer 503, retry).
    #[error("job database unavailable: {0}")]
    Unavailable(String),
    /// A stored value makes no sense (a state we do not know).
    #[error("job database holds a bad row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// The operations of the job queue; every one is a single short transaction.
pub trait Queue: Send + Sync {
    /// Inserts the job unless one with its key exists.
    fn enqueue(&self, job: &NewJob) -> Result<Enqueued>;
    /// Claims the oldest runnable job (queued, or failed past its backoff) for `owner`, with
    /// a lease of `lease`; counts an attempt.
    fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claimed>>;
    /// Renews the lease; false when the token no longer holds the job (fenced).
    fn heartbeat(&self, id: i64, token: &str, lease: Duration) -> Result<bool>;
    /// Records how the run ended; false when the token no longer holds the job (nothing is
    /// written then).
    fn complete(&self, id: i64, token: &str, outcome: &Outcome) -> Result<bool>;
    /// Gives a running job back (shutdown): queued again, its attempt not counted.
    fn release(&self, id: i64, token: &str) -> Result<bool>;
    /// Re-queues running jobs whose lease expired; returns how many.
    fn reap(&self) -> Result<u64>;
    fn get(&self, id: i64) -> Result<Option<Job>>;
    /// Jobs, newest first, optionally of one state.
    fn list(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>>;
    /// Runs a finished (dead, failed, succeeded, skipped) job again: queued, attempts reset.
    /// False when it does not exist or is queued or running.
    fn retry(&self, id: i64) -> Result<bool>;
    fn counts(&self) -> Result<Counts>;
    /// A round trip to the database (for `/readyz`).
    fn ping(&self) -> Result<()>;
}

/// Fills `b` from the OS's random source; false when it cannot be read.
pub(crate) fn random_bytes(b: &mut [u8]) -> bool {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, b))
        .is_ok()
}

/// A random lease token (hex, from the OS's random source).
pub(crate) fn new_token() -> String {
    let mut b = [0u8; 16];
    if !random_bytes(&mut b) {
        // Unique enough to fence: time and process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(b)
}

/// Opens the queue in the database `convertor` uses for dedup: `db_type` `sqlite` (a file
/// path) or `mysql` (a Go mysql-driver DSN).
pub fn open(db_type: &str, db_str: &str) -> Result<Box<dyn Queue>> {
    match db_type {
        "sqlite" => Ok(Box::new(sqlite::SqliteQueue::open(db_str)?)),
        "mysql" => mysql::MySqlQueue::connect(db_str),
        other => Err(QueueError::Unavailable(format!(
            "unknown --db-type {other:?}: the job queue needs sqlite or mysql"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod conformance;
