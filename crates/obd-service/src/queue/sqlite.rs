//! The SQLite queue: the `obdconv_jobs` table in the SQLite dedup file.
//!
//! A small pool of connections (an event never waits behind a worker's claim that waits
//! for the lock), WAL mode, `synchronous = FULL` (an enqueue is answered 2xx only after its
//! commit is on disk), a busy timeout of 5 s: several processes on one machine share the
//! file, and a locked database is reported while the sender still listens. A claim is one `BEGIN IMMEDIATE` transaction: the write lock is
//! taken first, so two claimers never pick the same row.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::{
    new_token, Claimed, Counts, Enqueued, Job, JobState, NewJob, Outcome, Queue, QueueError, Result,
};

/// The database's clock, in milliseconds since the epoch.
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS obdconv_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_key TEXT NOT NULL UNIQUE,
  host TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  tag TEXT,
  rule TEXT NOT NULL,
  target TEXT NOT NULL,
  output_tag TEXT NOT NULL,
  spec TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  deadline_secs INTEGER NOT NULL,
  not_before_ms INTEGER NOT NULL,
  lease_owner TEXT,
  lease_token TEXT,
  lease_expires_ms INTEGER,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER,
  finished_ms INTEGER,
  last_error TEXT,
  output_digest TEXT,
  output_ref TEXT,
  lease_losses INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS obdconv_jobs_runnable ON obdconv_jobs (state, not_before_ms, id);
";

/// The columns [`job_of`] reads, in order.
pub(crate) const COLUMNS: &str = "id, job_key, host, repository, digest, tag, rule, target, \
    output_tag, spec, state, attempts, max_attempts, deadline_secs, not_before_ms, lease_owner, \
    lease_expires_ms, created_ms, started_ms, finished_ms, last_error, output_digest, output_ref, \
    lease_losses";

fn job_of(r: &Row<'_>) -> rusqlite::Result<Job> {
    let state: String = r.get(10)?;
    Ok(Job {
        id: r.get(0)?,
        key: r.get(1)?,
        host: r.get(2)?,
        repository: r.get(3)?,
        digest: r.get(4)?,
        tag: r.get(5)?,
        rule: r.get(6)?,
        target: r.get(7)?,
        output_tag: r.get(8)?,
        spec: r.get(9)?,
        state: JobState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                10,
                rusqlite::types::Type::Text,
                format!("unknown job state {state:?}").into(),
            )
        })?,
        attempts: r.get(11)?,
        max_attempts: r.get(12)?,
        deadline_secs: r.get::<_, i64>(13)? as u64,
        not_before_ms: r.get(14)?,
        lease_owner: r.get(15)?,
        lease_expires_ms: r.get(16)?,
        created_ms: r.get(17)?,
        started_ms: r.get(18)?,
        finished_ms: r.get(19)?,
        last_error: r.get(20)?,
        output_digest: r.get(21)?,
        output_ref: r.get(22)?,
        lease_losses: r.get(23)?,
    })
}

fn unavailable(e: rusqlite::Error) -> QueueError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) => QueueError::Corrupt(e.to_string()),
        e => QueueError::Unavailable(e.to_string()),
    }
}

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue in an SQLite file.
pub struct SqliteQueue {
    path: PathBuf,
    /// Idle connections; one is opened when none is idle.
    idle: Mutex<Vec<Connection>>,
}

/// A connection taken from the pool, given back when dropped.
struct Pooled<'a> {
    conn: Option<Connection>,
    queue: &'a SqliteQueue,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("held until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut idle = self.queue.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 8 {
                idle.push(c);
            }
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let what =
        |e: rusqlite::Error| QueueError::Unavailable(format!("sqlite {}: {e}", path.display()));
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(what)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(what)?;
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(what)?;
    conn.execute_batch("PRAGMA synchronous = FULL")
        .map_err(what)?;
    Ok(conn)
}

impl SqliteQueue {
    /// Opens (creating if missing) the file at `path` and its `obdconv_jobs` table.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteQueue> {
        let path = path.as_ref().to_path_buf();
        let what =
            |e: rusqlite::Error| QueueError::Unavailable(format!("sqlite {}: {e}", path.display()));
        let mut conn = connect(&path)?;
        // Two processes creating the table at once: the second waits for the first.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(what)?;
        tx.execute_batch(SCHEMA).map_err(what)?;
        tx.commit().map_err(what)?;
        Ok(SqliteQueue {
            path,
            idle: Mutex::new(vec![conn]),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<Pooled<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        Ok(Pooled {
            conn: Some(conn),
            queue: self,
        })
    }
}

impl Queue for SqliteQueue {
    fn enqueue(&self, j: &NewJob) -> Result<Enqueued> {
        let mut c = self.conn()?;
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM obdconv_jobs WHERE job_key = ?1",
                [&j.key.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if let Some(id) = existing {
            return Ok(Enqueued { id, created: false });
        }
        tx.execute(
            &format!(
                "INSERT INTO obdconv_jobs (job_key, host, repository, digest, tag, rule, target, \
                 output_tag, spec, state, max_attempts, deadline_secs, not_before_ms, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?10, ?11, {NOW}, {NOW})"
            ),
            params![
                j.key.0,
                j.host,
                j.repository,
                j.digest,
                j.tag,
                j.rule,
                j.target,
                j.output_tag,
                j.spec,
                j.max_attempts,
                j.deadline_secs as i64
            ],
        )
        .map_err(unavailable)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(unavailable)?;
        Ok(Enqueued { id, created: true })
    }

    fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claimed>> {
        let token = new_token();
        let mut c = self.conn()?;
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let job = tx
            .query_row(
                &format!(
                    "UPDATE obdconv_jobs SET state = 'running', attempts = attempts + 1, \
                     lease_owner = ?1, lease_token = ?2, lease_expires_ms = {NOW} + ?3, \
                     started_ms = {NOW}, finished_ms = NULL \
                     WHERE id = (SELECT id FROM obdconv_jobs \
                       WHERE state IN ('queued', 'failed') AND not_before_ms <= {NOW} \
                       ORDER BY not_before_ms, id LIMIT 1) \
                     RETURNING {COLUMNS}"
                ),
                params![owner, token, lease.as_millis() as i64],
                job_of,
            )
            .optional()
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(job.map(|job| Claimed { job, token }))
    }

    fn heartbeat(&self, id: i64, token: &str, lease: Duration) -> Result<bool> {
        let n = self
            .conn()?
            .execute(
                &format!(
                    "UPDATE obdconv_jobs SET lease_expires_ms = {NOW} + ?3 \
                     WHERE id = ?1 AND lease_token = ?2 AND state = 'running'"
                ),
                params![id, token, lease.as_millis() as i64],
            )
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    fn complete(&self, id: i64, token: &str, outcome: &Outcome) -> Result<bool> {
        let c = self.conn()?;
        let done = "lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL";
        let cond = "WHERE id = ?1 AND lease_token = ?2 AND state = 'running'";
        let n = match outcome {
            Outcome::Succeeded {
                output_digest,
                output_ref,
            } => c.execute(
                &format!(
                    "UPDATE obdconv_jobs SET state = 'succeeded', {done}, finished_ms = {NOW}, \
                     output_digest = ?3, output_ref = ?4, last_error = NULL {cond}"
                ),
                params![id, token, output_digest, output_ref],
            ),
            Outcome::Failed { error, retry_in } => c.execute(
                &format!(
                    "UPDATE obdconv_jobs SET \
                     state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'failed' END, \
                     {done}, finished_ms = {NOW}, not_before_ms = {NOW} + ?4, last_error = ?3 \
                     {cond}"
                ),
                params![id, token, error, retry_in.as_millis() as i64],
            ),
            Outcome::Dead { error } => c.execute(
                &format!(
                    "UPDATE obdconv_jobs SET state = 'dead', {done}, finished_ms = {NOW}, \
                     last_error = ?3 {cond}"
                ),
                params![id, token, error],
            ),
            Outcome::Skipped { reason } => c.execute(
                &format!(
                    "UPDATE obdconv_jobs SET state = 'skipped', {done}, finished_ms = {NOW}, \
                     last_error = ?3 {cond}"
                ),
                params![id, token, reason],
            ),
        }
        .map_err(unavailable)?;
        Ok(n == 1)
    }

    fn release(&self, id: i64, token: &str) -> Result<bool> {
        let n = self
            .conn()?
            .execute(
                "UPDATE obdconv_jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), \
                 lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL \
                 WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                params![id, token],
            )
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    fn reap(&self) -> Result<u64> {
        // A job whose every attempt ended in a lost lease (it crashes its worker) is dead.
        let n = self
            .conn()?
            .execute(
                &format!(
                    "UPDATE obdconv_jobs SET \
                     state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                     last_error = CASE WHEN attempts >= max_attempts \
                       THEN 'the lease expired on every attempt (the worker died or hung)' \
                       ELSE last_error END, \
                     lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL, \
                     lease_losses = lease_losses + 1 \
                     WHERE state = 'running' AND lease_expires_ms < {NOW}"
                ),
                [],
            )
            .map_err(unavailable)?;
        Ok(n as u64)
    }

    fn get(&self, id: i64) -> Result<Option<Job>> {
        self.conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM obdconv_jobs WHERE id = ?1"),
                [id],
                job_of,
            )
            .optional()
            .map_err(unavailable)
    }

    fn list(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>> {
        let c = self.conn()?;
        let mut st = c
            .prepare(&format!(
                "SELECT {COLUMNS} FROM obdconv_jobs WHERE (?1 IS NULL OR state = ?1) \
                 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(unavailable)?;
        let rows = st
            .query_map(params![state.map(JobState::as_str), limit], job_of)
            .map_err(unavailable)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)
    }

    fn retry(&self, id: i64) -> Result<bool> {
        let n = self
            .conn()?
            .execute(
                &format!(
                    "UPDATE obdconv_jobs SET state = 'queued', attempts = 0, \
                     not_before_ms = {NOW}, finished_ms = NULL \
                     WHERE id = ?1 AND state IN ('dead', 'failed', 'succeeded', 'skipped')"
                ),
                [id],
            )
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    fn counts(&self) -> Result<Counts> {
        let c = self.conn()?;
        let mut st = c
            .prepare("SELECT state, COUNT(*) FROM obdconv_jobs GROUP BY state")
            .map_err(unavailable)?;
        let mut by_state: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(unavailable)?;
        for row in rows {
            let (s, n) = row.map_err(unavailable)?;
            if let Some(e) = by_state.iter_mut().find(|(k, _)| k.as_str() == s) {
                e.1 = n as u64;
            }
        }
        let (oldest, attempts, losses): (Option<i64>, Option<i64>, Option<i64>) = c
            .query_row(
                &format!(
                    "SELECT (SELECT {NOW} - MIN(created_ms) FROM obdconv_jobs \
                       WHERE state IN ('queued', 'failed')), \
                     SUM(attempts), SUM(lease_losses) FROM obdconv_jobs"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(unavailable)?;
        Ok(Counts {
            by_state,
            oldest_queued_secs: oldest.unwrap_or(0).max(0) as f64 / 1000.0,
            attempts: attempts.unwrap_or(0) as u64,
            lease_losses: losses.unwrap_or(0) as u64,
        })
    }

    fn ping(&self) -> Result<()> {
        self.conn()?
            .query_row("SELECT COUNT(*) FROM obdconv_jobs WHERE id = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(dir.path().join("q.sqlite")).unwrap();
        super::super::conformance::run_all(&q);
    }

    #[test]
    fn two_processes_worth_of_claimers_never_share_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let q = SqliteQueue::open(&path).unwrap();
        for i in 0..40 {
            q.enqueue(&super::super::conformance::job(&format!("d{i}")))
                .unwrap();
        }
        // Separate connections, as separate processes would have.
        let claimed: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|w| {
                    let path = path.clone();
                    s.spawn(move || {
                        let q = SqliteQueue::open(&path).unwrap();
                        let mut got = Vec::new();
                        while let Some(c) =
                            q.claim(&format!("w{w}"), Duration::from_secs(60)).unwrap()
                        {
                            got.push(c.job.id);
                        }
                        got
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = claimed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40);
        assert_eq!(claimed.len(), 40);
    }
}
