//! The MySQL / MariaDB queue (a fleet of workers): the `obdconv_jobs` table in the MySQL
//! dedup database, next to (and independent of) `overlaybd_layers` and `overlaybd_manifests`.
//!
//! - **Connecting.** The DSN is the dedup database's (a Go mysql-driver DSN, parsed by
//!   [`obd_dedup::MySqlDsn`], timeouts from [`obd_dedup::MySqlOptions::from_dsn`]). A probe
//!   connection with every timeout set to the connect timeout (default 3 s) makes a server
//!   that is down fail fast; then a small pool, and `CREATE TABLE IF NOT EXISTS` (InnoDB).
//! - **Sessions.** Every connection runs with `time_zone = '+00:00'` (so
//!   `UNIX_TIMESTAMP(NOW(6))` is never ambiguous around a daylight-saving change), READ
//!   COMMITTED (no gap locks between claimers, enqueuers and the reaper), and
//!   `STRICT_ALL_TABLES` added to the server's `sql_mode` (an over-long value is an error,
//!   never silently truncated).
//! - **Clock.** Times are the server's: `NOW`, milliseconds since the epoch.
//! - **Claims.** One short READ COMMITTED transaction: find the oldest runnable row with
//!   `FOR UPDATE SKIP LOCKED`, mark it running with a fresh lease, read it back, commit. The
//!   probe is done per state (`queued`, then `failed` only if it would come first), each
//!   in the order of the `(state, not_before_ms, id)` index, because a single
//!   `state IN ('queued', 'failed') … ORDER BY` needs a filesort, and InnoDB then locks
//!   *every* runnable row, so concurrent claimers would skip them all and find nothing.
//! - **Retries.** A deadlock (1213) or lock wait timeout (1205) rolls the statement or
//!   transaction back; the whole operation is retried a few times after a short pause.
//! - **Enqueue.** A plain `INSERT`; a duplicate key (1062) means the job exists, and its id
//!   is read back (the other insert has committed by then: InnoDB makes a duplicate insert
//!   wait for it). `INSERT IGNORE` is not used: it would turn every error into a warning.
//! - **Errors.** Driver and server failures are [`QueueError::Unavailable`] naming the
//!   redacted DSN (never the password); a value that does not decode is
//!   [`QueueError::Corrupt`].
//!
//! Needs MySQL 8 or MariaDB 10.6+ (`SKIP LOCKED`). With statement-based binary logging
//! (`binlog_format=STATEMENT`) writes under READ COMMITTED are refused: use ROW or MIXED.

use std::fmt;
use std::time::Duration;

use mysql::consts::CapabilityFlags;
use mysql::prelude::{FromValue, Queryable};
use mysql::{
    Conn, IsolationLevel, Pool, PoolConstraints, PoolOpts, PooledConn, Row, TxOpts, Value,
};
use obd_dedup::{MySqlDsn, MySqlOptions};

use super::{
    new_token, Claimed, Counts, Enqueued, Job, JobState, NewJob, Outcome, Queue, QueueError, Result,
};

/// The database's clock, in milliseconds since the epoch (truncated, like SQLite's).
const NOW: &str = "CAST(FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000) AS SIGNED)";

/// The table; the columns and their meaning are SQLite's (`sqlite.rs`).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS obdconv_jobs (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  job_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  host VARCHAR(255) NOT NULL,
  repository VARCHAR(255) NOT NULL,
  digest VARCHAR(255) NOT NULL,
  tag VARCHAR(128) NULL,
  rule VARCHAR(255) NOT NULL,
  target VARCHAR(512) NOT NULL,
  output_tag VARCHAR(128) NOT NULL,
  spec MEDIUMTEXT NOT NULL,
  state VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT UNSIGNED NOT NULL DEFAULT 0,
  max_attempts INT UNSIGNED NOT NULL,
  deadline_secs BIGINT UNSIGNED NOT NULL,
  not_before_ms BIGINT NOT NULL,
  lease_owner VARCHAR(255) NULL,
  lease_token VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
  lease_expires_ms BIGINT NULL,
  created_ms BIGINT NOT NULL,
  started_ms BIGINT NULL,
  finished_ms BIGINT NULL,
  last_error TEXT NULL,
  output_digest VARCHAR(255) NULL,
  output_ref VARCHAR(1024) NULL,
  lease_losses INT UNSIGNED NOT NULL DEFAULT 0,
  UNIQUE KEY obdconv_jobs_key (job_key),
  KEY obdconv_jobs_runnable (state, not_before_ms, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Run on every new connection (see the module documentation).
const SESSION_INIT: [&str; 3] = [
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', \
     CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))",
];

/// The columns [`job_of`] reads, in order (SQLite's list).
const COLUMNS: &str = super::sqlite::COLUMNS;

/// Server errors after which the operation is run again.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_DUP_ENTRY: u16 = 1062;

/// How many times a deadlocked operation is run again.
const RETRIES: u32 = 5;

/// The oldest runnable job of one state (`{state}` and `{extra}` filled in), in index order.
fn probe_sql(state: &str, extra: &str) -> String {
    format!(
        "SELECT id, not_before_ms FROM obdconv_jobs FORCE INDEX (obdconv_jobs_runnable) \
         WHERE state = '{state}' AND not_before_ms <= {NOW}{extra} \
         ORDER BY not_before_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
}

/// Takes column `i` of `row` as a `T`, or says which column did not decode.
fn col<T: FromValue>(row: &mut Row, i: usize, name: &str) -> Result<T> {
    match row.take_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(QueueError::Corrupt(format!(
            "obdconv_jobs.{name}: cannot decode {:?}",
            e.0
        ))),
        None => Err(QueueError::Corrupt(format!(
            "obdconv_jobs.{name}: column missing"
        ))),
    }
}

fn job_of(mut r: Row) -> Result<Job> {
    let state: String = col(&mut r, 10, "state")?;
    let id = col(&mut r, 0, "id")?;
    Ok(Job {
        id,
        key: col(&mut r, 1, "job_key")?,
        host: col(&mut r, 2, "host")?,
        repository: col(&mut r, 3, "repository")?,
        digest: col(&mut r, 4, "digest")?,
        tag: col(&mut r, 5, "tag")?,
        rule: col(&mut r, 6, "rule")?,
        target: col(&mut r, 7, "target")?,
        output_tag: col(&mut r, 8, "output_tag")?,
        spec: col(&mut r, 9, "spec")?,
        state: JobState::parse(&state).ok_or_else(|| {
            QueueError::Corrupt(format!("job {id} has an unknown state {state:?}"))
        })?,
        attempts: col(&mut r, 11, "attempts")?,
        max_attempts: col(&mut r, 12, "max_attempts")?,
        deadline_secs: col(&mut r, 13, "deadline_secs")?,
        not_before_ms: col(&mut r, 14, "not_before_ms")?,
        lease_owner: col(&mut r, 15, "lease_owner")?,
        lease_expires_ms: col(&mut r, 16, "lease_expires_ms")?,
        created_ms: col(&mut r, 17, "created_ms")?,
        started_ms: col(&mut r, 18, "started_ms")?,
        finished_ms: col(&mut r, 19, "finished_ms")?,
        last_error: col(&mut r, 20, "last_error")?,
        output_digest: col(&mut r, 21, "output_digest")?,
        output_ref: col(&mut r, 22, "output_ref")?,
        lease_losses: col(&mut r, 23, "lease_losses")?,
    })
}

/// The server's error code, if `e` is an error the server answered.
fn server_code(e: &mysql::Error) -> Option<u16> {
    match e {
        mysql::Error::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

/// A duration in whole milliseconds, as the database stores them.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A short pause before retry `attempt` (1-based): growing, with some jitter so two
/// deadlocked claimers do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        % 10_000_000;
    Duration::from_millis(10 << attempt.min(5)) + Duration::from_nanos(u64::from(jitter))
}

/// The queue in a MySQL or MariaDB database.
pub struct MySqlQueue {
    pool: Pool,
    errors: Errors,
    /// How long to wait for a pooled connection.
    wait: Duration,
}

impl fmt::Debug for MySqlQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlQueue")
            .field("target", &self.errors.target)
            .finish_non_exhaustive()
    }
}

/// Turns driver errors into ours.
struct Errors {
    /// The redacted DSN (`mysql user:***@tcp(host:port)/db`), for messages.
    target: String,
    /// The password, only to scrub it from driver messages.
    secret: Option<String>,
}

impl Errors {
    /// The driver's error as ours, without the password.
    fn map(&self, e: mysql::Error) -> QueueError {
        let mut text = e.to_string();
        if let Some(s) = self.secret.as_deref().filter(|s| !s.is_empty()) {
            text = text.replace(s, "***");
        }
        match e {
            mysql::Error::FromValueError(_) | mysql::Error::FromRowError(_) => {
                QueueError::Corrupt(text)
            }
            _ => QueueError::Unavailable(format!("{}: {text}", self.target)),
        }
    }
}

impl MySqlQueue {
    /// Connects with a Go mysql-driver DSN (`user:pass@tcp(host:3306)/db`), for
    /// [`super::open`].
    pub fn connect(dsn: &str) -> Result<Box<dyn Queue>> {
        Ok(Box::new(MySqlQueue::open(dsn)?))
    }

    /// Connects with a Go mysql-driver DSN and the timeouts it names (connect timeout 3 s
    /// unless `timeout=` says otherwise), and creates the table if it is missing.
    pub fn open(dsn: &str) -> Result<MySqlQueue> {
        // DSN errors never contain the password.
        let dsn = MySqlDsn::parse(dsn)
            .map_err(|e| QueueError::Unavailable(format!("invalid MySQL DSN: {e}")))?;
        MySqlQueue::open_with(&dsn, &MySqlOptions::from_dsn(&dsn))
    }

    /// Connects to `dsn` with `opts` (timeouts, pool size) and creates the table if missing.
    pub fn open_with(dsn: &MySqlDsn, opts: &MySqlOptions) -> Result<MySqlQueue> {
        let errors = Errors {
            target: format!("mysql {dsn}"),
            secret: dsn.password().map(str::to_string),
        };
        // Affected rows are the rows an UPDATE matched, not only those it changed (a
        // heartbeat within the same millisecond changes nothing but still holds).
        let base = opts
            .driver_opts(dsn)
            .init(SESSION_INIT.to_vec())
            .additional_capabilities(CapabilityFlags::CLIENT_FOUND_ROWS);
        // Fail fast when the server is down or does not answer the handshake.
        let probe = base
            .clone()
            .read_timeout(Some(opts.connect_timeout))
            .write_timeout(Some(opts.connect_timeout));
        drop(Conn::new(probe).map_err(|e| errors.map(e))?);
        let pool_opts = PoolOpts::default()
            .with_constraints(
                PoolConstraints::new(0, opts.max_connections.max(1)).expect("0 <= max"),
            )
            .with_reset_connection(false);
        let pool = Pool::new(base.pool_opts(pool_opts)).map_err(|e| errors.map(e))?;
        let q = MySqlQueue {
            pool,
            errors,
            wait: opts.read_timeout,
        };
        q.run(|c| c.query_drop(SCHEMA))?;
        Ok(q)
    }

    fn err(&self, e: mysql::Error) -> QueueError {
        self.errors.map(e)
    }

    /// Runs `op` on a pooled connection, again (on a fresh connection) after a deadlock or
    /// lock wait timeout, at most [`RETRIES`] more times. `op` must be one statement or
    /// one transaction, so a failed run left nothing behind.
    fn run<T>(&self, mut op: impl FnMut(&mut PooledConn) -> mysql::Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut c = self.pool.try_get_conn(self.wait).map_err(|e| self.err(e))?;
            match op(&mut c) {
                Ok(v) => return Ok(v),
                Err(e)
                    if attempt < RETRIES
                        && matches!(
                            server_code(&e),
                            Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT)
                        ) =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, error = %self.err(e), "job queue: retrying");
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Runs one `UPDATE` (with [`MySqlQueue::run`]) and answers how many rows it changed.
    fn update(&self, sql: &str, params: Vec<Value>) -> Result<u64> {
        self.run(|c| {
            c.exec_drop(sql, params.clone())?;
            Ok(c.affected_rows())
        })
    }
}

impl Queue for MySqlQueue {
    fn enqueue(&self, j: &NewJob) -> Result<Enqueued> {
        let insert = format!(
            "INSERT INTO obdconv_jobs (job_key, host, repository, digest, tag, rule, target, \
             output_tag, spec, state, max_attempts, deadline_secs, not_before_ms, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, {NOW}, {NOW})"
        );
        let params: Vec<Value> = vec![
            j.key.0.clone().into(),
            j.host.clone().into(),
            j.repository.clone().into(),
            j.digest.clone().into(),
            j.tag.clone().into(),
            j.rule.clone().into(),
            j.target.clone().into(),
            j.output_tag.clone().into(),
            j.spec.clone().into(),
            j.max_attempts.into(),
            j.deadline_secs.into(),
        ];
        // The existing row could (in theory) be deleted between our duplicate insert and
        // the read: then insert again.
        for _ in 0..3 {
            let done = self.run(|c| match c.exec_drop(&insert, params.clone()) {
                Ok(()) => Ok(Some(Enqueued {
                    id: i64::try_from(c.last_insert_id()).unwrap_or(i64::MAX),
                    created: true,
                })),
                Err(e) if server_code(&e) == Some(ER_DUP_ENTRY) => {
                    let id: Option<i64> =
                        c.exec_first("SELECT id FROM obdconv_jobs WHERE job_key = ?", (&j.key.0,))?;
                    Ok(id.map(|id| Enqueued { id, created: false }))
                }
                Err(e) => Err(e),
            })?;
            if let Some(done) = done {
                return Ok(done);
            }
        }
        Err(QueueError::Unavailable(format!(
            "{}: job {} keeps appearing and disappearing",
            self.errors.target, j.key.0
        )))
    }

    fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claimed>> {
        let token = new_token();
        let queued = probe_sql("queued", "");
        let failed_first = probe_sql(
            "failed",
            " AND (not_before_ms < ? OR (not_before_ms = ? AND id < ?))",
        );
        let failed = probe_sql("failed", "");
        let update = format!(
            "UPDATE obdconv_jobs SET state = 'running', attempts = attempts + 1, \
             lease_owner = ?, lease_token = ?, lease_expires_ms = {NOW} + ?, \
             started_ms = {NOW}, finished_ms = NULL \
             WHERE id = ? AND state IN ('queued', 'failed')"
        );
        let read = format!("SELECT {COLUMNS} FROM obdconv_jobs WHERE id = ?");
        let row: Option<Row> = self.run(|c| {
            let mut tx = c.start_transaction(
                TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted)),
            )?;
            // A failed job is only locked when it comes before the queued one.
            let q: Option<(i64, i64)> = tx.exec_first(&queued, ())?;
            let f: Option<(i64, i64)> = match q {
                Some((id, nb)) => tx.exec_first(&failed_first, (nb, nb, id))?,
                None => tx.exec_first(&failed, ())?,
            };
            let Some((id, _)) = f.or(q) else {
                tx.commit()?;
                return Ok(None);
            };
            tx.exec_drop(&update, (owner, &token, millis(lease), id))?;
            if tx.affected_rows() != 1 {
                // Cannot happen while we hold the row lock; claim nothing rather than guess.
                tx.rollback()?;
                return Ok(None);
            }
            let row: Option<Row> = tx.exec_first(&read, (id,))?;
            tx.commit()?;
            Ok(row)
        })?;
        match row {
            Some(r) => Ok(Some(Claimed {
                job: job_of(r)?,
                token,
            })),
            None => Ok(None),
        }
    }

    fn heartbeat(&self, id: i64, token: &str, lease: Duration) -> Result<bool> {
        let n = self.update(
            &format!(
                "UPDATE obdconv_jobs SET lease_expires_ms = {NOW} + ? \
                 WHERE id = ? AND lease_token = ? AND state = 'running'"
            ),
            vec![millis(lease).into(), id.into(), token.into()],
        )?;
        Ok(n == 1)
    }

    fn complete(&self, id: i64, token: &str, outcome: &Outcome) -> Result<bool> {
        let done = "lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL";
        let cond = "WHERE id = ? AND lease_token = ? AND state = 'running'";
        let (sql, mut params): (String, Vec<Value>) = match outcome {
            Outcome::Succeeded {
                output_digest,
                output_ref,
            } => (
                format!(
                    "UPDATE obdconv_jobs SET state = 'succeeded', {done}, finished_ms = {NOW}, \
                     output_digest = ?, output_ref = ?, last_error = NULL {cond}"
                ),
                vec![output_digest.as_str().into(), output_ref.as_str().into()],
            ),
            Outcome::Failed { error, retry_in } => (
                format!(
                    "UPDATE obdconv_jobs SET \
                     state = IF(attempts >= max_attempts, 'dead', 'failed'), \
                     {done}, finished_ms = {NOW}, not_before_ms = {NOW} + ?, last_error = ? \
                     {cond}"
                ),
                vec![millis(*retry_in).into(), error.as_str().into()],
            ),
            Outcome::Dead { error } => (
                format!(
                    "UPDATE obdconv_jobs SET state = 'dead', {done}, finished_ms = {NOW}, \
                     last_error = ? {cond}"
                ),
                vec![error.as_str().into()],
            ),
            Outcome::Skipped { reason } => (
                format!(
                    "UPDATE obdconv_jobs SET state = 'skipped', {done}, finished_ms = {NOW}, \
                     last_error = ? {cond}"
                ),
                vec![reason.as_str().into()],
            ),
        };
        params.extend([id.into(), token.into()]);
        Ok(self.update(&sql, params)? == 1)
    }

    fn release(&self, id: i64, token: &str) -> Result<bool> {
        let n = self.update(
            "UPDATE obdconv_jobs SET state = 'queued', \
             attempts = IF(attempts > 0, attempts - 1, 0), \
             lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL \
             WHERE id = ? AND lease_token = ? AND state = 'running'",
            vec![id.into(), token.into()],
        )?;
        Ok(n == 1)
    }

    fn reap(&self) -> Result<u64> {
        // A job whose every attempt ended in a lost lease (it crashes its worker) is dead.
        self.update(
            &format!(
                "UPDATE obdconv_jobs SET \
                 last_error = IF(attempts >= max_attempts, \
                   'the lease expired on every attempt (the worker died or hung)', last_error), \
                 state = IF(attempts >= max_attempts, 'dead', 'queued'), \
                 lease_owner = NULL, lease_token = NULL, lease_expires_ms = NULL, \
                 lease_losses = lease_losses + 1 \
                 WHERE state = 'running' AND lease_expires_ms < {NOW}"
            ),
            Vec::new(),
        )
    }

    fn get(&self, id: i64) -> Result<Option<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM obdconv_jobs WHERE id = ?");
        let row: Option<Row> = self.run(|c| c.exec_first(&sql, (id,)))?;
        row.map(job_of).transpose()
    }

    fn list(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>> {
        let rows: Vec<Row> = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM obdconv_jobs WHERE state = ? ORDER BY id DESC LIMIT ?"
                );
                self.run(|c| c.exec(&sql, (s.as_str(), limit)))?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM obdconv_jobs ORDER BY id DESC LIMIT ?");
                self.run(|c| c.exec(&sql, (limit,)))?
            }
        };
        rows.into_iter().map(job_of).collect()
    }

    fn retry(&self, id: i64) -> Result<bool> {
        let n = self.update(
            &format!(
                "UPDATE obdconv_jobs SET state = 'queued', attempts = 0, \
                 not_before_ms = {NOW}, finished_ms = NULL \
                 WHERE id = ? AND state IN ('dead', 'failed', 'succeeded', 'skipped')"
            ),
            vec![id.into()],
        )?;
        Ok(n == 1)
    }

    fn counts(&self) -> Result<Counts> {
        let rows: Vec<(String, i64)> =
            self.run(|c| c.query("SELECT state, COUNT(*) FROM obdconv_jobs GROUP BY state"))?;
        let mut by_state: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for (s, n) in rows {
            if let Some(e) = by_state.iter_mut().find(|(k, _)| k.as_str() == s) {
                e.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        let sql = format!(
            "SELECT (SELECT {NOW} - MIN(created_ms) FROM obdconv_jobs \
               WHERE state IN ('queued', 'failed')), \
             CAST(COALESCE(SUM(attempts), 0) AS SIGNED), \
             CAST(COALESCE(SUM(lease_losses), 0) AS SIGNED) FROM obdconv_jobs"
        );
        let row: Option<(Option<i64>, i64, i64)> = self.run(|c| c.query_first(&sql))?;
        let (oldest, attempts, losses) = row.unwrap_or((None, 0, 0));
        Ok(Counts {
            by_state,
            oldest_queued_secs: oldest.unwrap_or(0).max(0) as f64 / 1000.0,
            attempts: u64::try_from(attempts).unwrap_or(0),
            lease_losses: u64::try_from(losses).unwrap_or(0),
        })
    }

    fn ping(&self) -> Result<()> {
        let _: Option<i64> =
            self.run(|c| c.query_first("SELECT COUNT(*) FROM obdconv_jobs WHERE id = 0"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use obd_dedup::testutil::TestMariaDb;

    use super::super::conformance::{job, run_all};
    use super::*;

    /// A shared server and a fresh database in it, or `None` (skip) without MariaDB.
    fn fresh(hint: &str) -> Option<(Arc<TestMariaDb>, String)> {
        let db = TestMariaDb::shared_or_skip()?;
        let dsn = db.dsn_for(&db.create_database(hint));
        Some((db, dsn))
    }

    #[test]
    fn conformance() {
        let Some((_db, dsn)) = fresh("queue_conformance") else {
            return;
        };
        let t0 = Instant::now();
        // The dedup tables live in the same database; the queue leaves them alone.
        let dedup = obd_dedup::open("mysql", &dsn).unwrap();
        let layer = obd_dedup::LayerEntry::new(
            obd_dedup::LayerKey::new("h", "r", "sha256:c", obd_dedup::Profile::new("p1").unwrap()),
            "sha256:d",
            1,
        );
        dedup.put_layer(&layer).unwrap();
        let q = MySqlQueue::open(&dsn).unwrap();
        run_all(&q);
        // Through `queue::open`, on the same (now populated) table: it is still there.
        let q = super::super::open("mysql", &dsn).unwrap();
        assert_eq!(q.list(None, 10).unwrap().len(), 3);
        let dedup = obd_dedup::open("mysql", &dsn).unwrap();
        assert_eq!(dedup.layer_in_repo(&layer.key).unwrap(), Some(layer));
        eprintln!("mysql queue conformance ran in {:?}", t0.elapsed());
    }

    #[test]
    fn concurrent_claimers_never_share_a_job() {
        let Some((_db, dsn)) = fresh("queue_claimers") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        for i in 0..40 {
            q.enqueue(&job(&format!("sha256:{i}"))).unwrap();
        }
        let t0 = Instant::now();
        let per_worker: Vec<Vec<i64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|w| {
                    let dsn = dsn.clone();
                    s.spawn(move || {
                        // Its own queue and pool: as a separate process would have.
                        let q = MySqlQueue::open(&dsn).unwrap();
                        let mut got = Vec::new();
                        while let Some(c) =
                            q.claim(&format!("w{w}"), Duration::from_secs(60)).unwrap()
                        {
                            assert_eq!(c.job.lease_owner.as_deref(), Some(&*format!("w{w}")));
                            got.push(c.job.id);
                        }
                        got
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<i64> = per_worker.iter().flatten().copied().collect();
        assert_eq!(all.len(), 40, "claims: {per_worker:?}");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40, "a job was claimed twice: {per_worker:?}");
        let n = q.counts().unwrap();
        let running = n.by_state.iter().find(|(s, _)| *s == JobState::Running);
        assert_eq!(running.unwrap().1, 40);
        assert_eq!(n.attempts, 40);
        eprintln!(
            "4 claimers took 40 jobs in {:?}: {:?} each",
            t0.elapsed(),
            per_worker.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn workers_and_a_reaper_racing_never_fail_or_lose_a_job() {
        // Claims, heartbeats, completions (some failing, retried at once), releases and
        // reaps from six connections at once: every job ends succeeded exactly once and no
        // deadlock or lock wait surfaces as an error.
        let Some((_db, dsn)) = fresh("queue_race") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        let ids: Vec<i64> = (0..60)
            .map(|i| q.enqueue(&job(&format!("sha256:r{i}"))).unwrap().id)
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let t0 = Instant::now();
        let done: Vec<i64> = std::thread::scope(|s| {
            let stop = &stop;
            let reaper = {
                let dsn = dsn.clone();
                s.spawn(move || {
                    let q = MySqlQueue::open(&dsn).unwrap();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        q.reap().unwrap();
                        q.counts().unwrap();
                    }
                })
            };
            let workers: Vec<_> = (0..5)
                .map(|w| {
                    let dsn = dsn.clone();
                    s.spawn(move || {
                        let q = MySqlQueue::open(&dsn).unwrap();
                        let lease = Duration::from_secs(60);
                        let mut succeeded = Vec::new();
                        let mut idle = 0;
                        let mut n = 0u32;
                        while idle < 20 {
                            let Some(c) = q.claim(&format!("w{w}"), lease).unwrap() else {
                                idle += 1;
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            };
                            idle = 0;
                            n += 1;
                            assert!(q.heartbeat(c.job.id, &c.token, lease).unwrap());
                            let outcome = match n % 4 {
                                0 if c.job.attempts < c.job.max_attempts => Outcome::Failed {
                                    error: "flaky".into(),
                                    retry_in: Duration::ZERO,
                                },
                                1 if c.job.attempts == 1 => {
                                    assert!(q.release(c.job.id, &c.token).unwrap());
                                    continue;
                                }
                                _ => Outcome::Succeeded {
                                    output_digest: "sha256:o".into(),
                                    output_ref: format!("r@{}", c.job.id),
                                },
                            };
                            let ok = matches!(outcome, Outcome::Succeeded { .. });
                            assert!(q.complete(c.job.id, &c.token, &outcome).unwrap());
                            if ok {
                                succeeded.push(c.job.id);
                            }
                        }
                        succeeded
                    })
                })
                .collect();
            let done = workers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reaper.join().unwrap();
            done
        });
        let mut sorted = done.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "each job succeeds exactly once");
        let n = q.counts().unwrap();
        let of = |st| n.by_state.iter().find(|(k, _)| *k == st).unwrap().1;
        assert_eq!(of(JobState::Succeeded), 60);
        assert_eq!(n.lease_losses, 0);
        eprintln!(
            "6 racing connections finished 60 jobs in {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn a_deadlocked_operation_is_retried() {
        // A real InnoDB deadlock: another transaction (heavier: it changed ten rows) holds
        // job b; `reap` locks job a, then waits for b; the other one then asks for a.
        // InnoDB rolls back the lighter `reap` (1213), which runs again and succeeds.
        let Some((db, dsn)) = fresh("queue_deadlock") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        let ids: Vec<i64> = (0..12)
            .map(|i| q.enqueue(&job(&format!("sha256:k{i}"))).unwrap().id)
            .collect();
        let (a, b) = (ids[0], ids[1]);
        for want in [a, b] {
            let c = q.claim("w", Duration::from_millis(1)).unwrap().unwrap();
            assert_eq!(c.job.id, want);
        }
        std::thread::sleep(Duration::from_millis(30));
        let database = dsn.rsplit('/').next().unwrap();
        let mut other = db.user_conn(database);
        let mut tx = other
            .start_transaction(
                TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted)),
            )
            .unwrap();
        tx.exec_drop(
            "UPDATE obdconv_jobs SET spec = '{\"x\":1}' WHERE id NOT IN (?, ?)",
            (a, b),
        )
        .unwrap();
        assert_eq!(tx.affected_rows(), 10);
        let _: Option<i64> = tx
            .exec_first("SELECT id FROM obdconv_jobs WHERE id = ? FOR UPDATE", (b,))
            .unwrap();
        std::thread::scope(|s| {
            let reaper = s.spawn(|| q.reap());
            // Let `reap` lock a and start waiting for b.
            std::thread::sleep(Duration::from_millis(500));
            let got: Option<i64> = tx
                .exec_first("SELECT id FROM obdconv_jobs WHERE id = ? FOR UPDATE", (a,))
                .expect("InnoDB should roll back the lighter reap, not us");
            assert_eq!(got, Some(a));
            tx.commit().unwrap();
            assert_eq!(reaper.join().unwrap().unwrap(), 2, "reap ran again");
        });
        let j = q.get(a).unwrap().unwrap();
        assert_eq!((j.state, j.lease_losses), (JobState::Queued, 1));
    }

    #[test]
    fn claims_skip_a_row_another_claimer_holds() {
        // While one claim transaction holds the oldest job, another claimer gets the next
        // one at once (SKIP LOCKED; and only that row is locked, not every runnable one).
        let Some((db, dsn)) = fresh("queue_skip") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        let a = q.enqueue(&job("sha256:a")).unwrap();
        let b = q.enqueue(&job("sha256:b")).unwrap();
        let database = dsn.rsplit('/').next().unwrap();
        let mut other = db.user_conn(database);
        let mut tx = other
            .start_transaction(
                TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted)),
            )
            .unwrap();
        let held: Option<(i64, i64)> = tx.exec_first(probe_sql("queued", ""), ()).unwrap();
        assert_eq!(held.map(|h| h.0), Some(a.id));
        let t0 = Instant::now();
        let c = q.claim("w1", Duration::from_secs(60)).unwrap().unwrap();
        assert_eq!(c.job.id, b.id);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "claim waited for a lock"
        );
        assert!(q.claim("w1", Duration::from_secs(60)).unwrap().is_none());
        tx.rollback().unwrap();
        assert_eq!(
            q.claim("w1", Duration::from_secs(60))
                .unwrap()
                .unwrap()
                .job
                .id,
            a.id
        );
    }

    #[test]
    fn concurrent_enqueues_of_one_key_make_one_row() {
        let Some((_db, dsn)) = fresh("queue_enqueue") else {
            return;
        };
        let barrier = std::sync::Barrier::new(4);
        let answers: Vec<Enqueued> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (dsn, barrier) = (dsn.clone(), &barrier);
                    s.spawn(move || {
                        // Each opens its own queue (the table may not exist yet: the four
                        // CREATE TABLE IF NOT EXISTS race too), then all insert at once.
                        let q = MySqlQueue::open(&dsn).unwrap();
                        barrier.wait();
                        (0..5)
                            .map(|_| q.enqueue(&job("sha256:same")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(answers.len(), 20);
        assert_eq!(
            answers.iter().filter(|e| e.created).count(),
            1,
            "{answers:?}"
        );
        assert!(answers.iter().all(|e| e.id == answers[0].id), "{answers:?}");
        let q = MySqlQueue::open(&dsn).unwrap();
        let rows = q.list(None, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, answers[0].id);
    }

    #[test]
    fn clock_is_the_databases_in_milliseconds() {
        let Some((_db, dsn)) = fresh("queue_clock") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let e = q.enqueue(&job("sha256:t")).unwrap();
        let j = q.get(e.id).unwrap().unwrap();
        // The test server runs on this machine: its clock is ours.
        assert!(
            (j.created_ms - before).abs() < 5_000,
            "created_ms {} vs now {before}",
            j.created_ms
        );
        assert_eq!(j.not_before_ms, j.created_ms);
        let c = q.claim("w", Duration::from_millis(1500)).unwrap().unwrap();
        let started = c.job.started_ms.unwrap();
        assert_eq!(c.job.lease_expires_ms.unwrap() - started, 1500);
    }

    #[test]
    fn bad_rows_are_corrupt_and_long_values_are_refused() {
        let Some((db, dsn)) = fresh("queue_corrupt") else {
            return;
        };
        let q = MySqlQueue::open(&dsn).unwrap();
        let e = q.enqueue(&job("sha256:x")).unwrap();
        let database = dsn.rsplit('/').next().unwrap();
        db.user_conn(database)
            .exec_drop(
                "UPDATE obdconv_jobs SET state = 'exploded' WHERE id = ?",
                (e.id,),
            )
            .unwrap();
        assert!(matches!(q.get(e.id), Err(QueueError::Corrupt(m)) if m.contains("exploded")));
        assert!(matches!(q.list(None, 5), Err(QueueError::Corrupt(_))));
        // A tag longer than its column is an error, not a truncated tag.
        let mut long = job("sha256:long");
        long.tag = Some("t".repeat(200));
        assert!(matches!(q.enqueue(&long), Err(QueueError::Unavailable(_))));
    }

    #[test]
    fn database_down_is_unavailable_quickly_and_keeps_the_password() {
        // Nothing listens on a port we bound and closed again.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dsn = format!(
            "{}:{}@tcp(127.0.0.1:{port})/obdconv_down?timeout=2s",
            TestMariaDb::USER,
            TestMariaDb::PASSWORD
        );
        let t0 = Instant::now();
        let e = MySqlQueue::open(&dsn).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let text = format!("{e} {e:?}");
        eprintln!("server down: {e}");
        assert!(matches!(e, QueueError::Unavailable(_)), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains(TestMariaDb::PASSWORD), "{text}");
        assert!(!text.contains("Secret42"), "{text}");
        // A DSN that does not parse is refused without echoing the password either.
        let e = MySqlQueue::open("u:hunter2@tcp(h:0)/db").unwrap_err();
        assert!(matches!(&e, QueueError::Unavailable(m) if !m.contains("hunter2")));
    }

    #[test]
    fn wrong_password_is_unavailable_without_the_password() {
        let Some((db, _)) = fresh("queue_auth") else {
            return;
        };
        let dsn = format!(
            "{}:wrong-Secret99@tcp(127.0.0.1:{})/obdconv_queue_auth_x",
            TestMariaDb::USER,
            db.port
        );
        let e = MySqlQueue::open(&dsn).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(matches!(e, QueueError::Unavailable(_)), "{text}");
        assert!(!text.contains("wrong-Secret99"), "{text}");
    }
}
