//! The SQLite back end (`--db-type sqlite --db-str PATH`): one file, WAL mode, a busy
//! timeout, the same logical schema and migrations as MySQL ([`crate::schema`]).
//!
//! One connection per [`SqliteDb`], behind a mutex (SQLite serialises writers anyway).
//! Several processes may open the same file: WAL lets readers run beside the one writer, and
//! the busy timeout makes a writer wait for another instead of failing with "database is
//! locked". Migrations run in a `BEGIN IMMEDIATE` transaction, so they are atomic and
//! serialised between processes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::schema::{self, sql, LATEST_VERSION, MIGRATIONS};
use crate::{DbType, DedupDb, Error, LayerEntry, LayerKey, ManifestEntry, ManifestKey, Result};

/// Options for [`SqliteDb::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a statement waits for another connection's write lock (default 10 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A dedup database in an SQLite file.
pub struct SqliteDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteDb {
    /// Opens (creating if missing) the database file at `path`, switches it to WAL mode and
    /// migrates it to [`LATEST_VERSION`].
    ///
    /// Errors: [`Error::Unavailable`] if the file cannot be opened or created (missing
    /// directory, not a database, permissions), [`Error::Migration`],
    /// [`Error::SchemaTooNew`].
    pub fn open(path: impl AsRef<Path>, opts: &SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(Error::Unavailable {
                target: format!("sqlite {}", path.display()),
                reason: "empty path".into(),
            });
        }
        // Some steps of opening a fresh file (the switch to WAL, WAL recovery, the schema
        // read) can report "database is locked" at once, without the busy handler, while
        // another process opens the same file: those steps are retried for the busy
        // timeout.
        let deadline = std::time::Instant::now() + opts.busy_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match Self::open_once(&path, opts) {
                Ok(db) => return Ok(db),
                Err(Opening::Busy(e)) if std::time::Instant::now() < deadline => {
                    tracing::debug!(path = %path.display(), error = %e, "database busy; retrying");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(Opening::Busy(e) | Opening::Fatal(e)) => return Err(e),
            }
        }
    }

    fn open_once(path: &Path, opts: &SqliteOptions) -> std::result::Result<Self, Opening> {
        let unavailable = |e: rusqlite::Error| {
            Opening::of(e, |reason| Error::Unavailable {
                target: format!("sqlite {}", path.display()),
                reason,
            })
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.busy_timeout(opts.busy_timeout).map_err(unavailable)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(unavailable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::debug!(path = %path.display(), mode, "SQLite did not switch to WAL mode");
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(unavailable)?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(SqliteDb {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection half-used: every
        // statement is a single autocommit statement.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An error while opening: `Busy` ones (SQLITE_BUSY, SQLITE_LOCKED) are retried by
/// [`SqliteDb::open`].
enum Opening {
    Busy(Error),
    Fatal(Error),
}

impl Opening {
    fn of(e: rusqlite::Error, wrap: impl FnOnce(String) -> Error) -> Self {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        let e = wrap(e.to_string());
        if busy {
            Opening::Busy(e)
        } else {
            Opening::Fatal(e)
        }
    }
}

impl From<Error> for Opening {
    fn from(e: Error) -> Self {
        Opening::Fatal(e)
    }
}

/// The database's clock in milliseconds.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Who converts which layer right now ([`DedupDb::claim_layer`]).
const CLAIMS_TABLE: &str = "CREATE TABLE IF NOT EXISTS obdconv_layer_claims (
  host TEXT NOT NULL, chain_id TEXT NOT NULL, profile TEXT NOT NULL,
  owner TEXT NOT NULL, expires_ms INTEGER NOT NULL,
  PRIMARY KEY (host, chain_id, profile))";

fn query_err(e: rusqlite::Error) -> Error {
    Error::Query(e.to_string())
}

fn migration_err(e: rusqlite::Error) -> Opening {
    Opening::of(e, Error::Migration)
}

fn size_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Query(format!("negative size {v} in the database")))
}

fn version(conn: &Connection) -> rusqlite::Result<u32> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
        [schema::VERSION_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM obdconv_schema_version",
        [],
        |r| r.get(0),
    )
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?) WHERE name = ?)",
        [table, column],
        |r| r.get(0),
    )
}

fn migrate(conn: &mut Connection) -> std::result::Result<(), Opening> {
    let found = version(conn).map_err(|e| {
        Opening::of(e, |reason| Error::Unavailable {
            target: format!("sqlite {}", conn.path().unwrap_or("?")),
            reason,
        })
    })?;
    if found > LATEST_VERSION {
        return Err(Opening::Fatal(Error::SchemaTooNew {
            found,
            known: LATEST_VERSION,
        }));
    }
    if found == LATEST_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(migration_err)?;
    tx.execute_batch(schema::sqlite::CREATE_VERSION_TABLE)
        .map_err(migration_err)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let found = version(&tx).map_err(migration_err)?;
    if found > LATEST_VERSION {
        return Err(Opening::Fatal(Error::SchemaTooNew {
            found,
            known: LATEST_VERSION,
        }));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        match m.version {
            1 => tx.execute_batch(schema::sqlite::UPSTREAM_TABLES),
            2 => (|| {
                if !has_column(&tx, schema::LAYERS_TABLE, "profile")? {
                    tx.execute_batch(schema::sqlite::PROFILE_LAYERS)?;
                }
                if !has_column(&tx, schema::MANIFESTS_TABLE, "profile")? {
                    tx.execute_batch(schema::sqlite::PROFILE_MANIFESTS)?;
                }
                Ok(())
            })(),
            v => unreachable!("migration {v} has no SQLite step"),
        }
        .map_err(migration_err)?;
        tx.execute(
            "INSERT OR IGNORE INTO obdconv_schema_version (version, description) VALUES (?, ?)",
            params![m.version, m.description],
        )
        .map_err(migration_err)?;
        tracing::info!(version = m.version, "dedup database (sqlite) migrated");
    }
    tx.commit().map_err(migration_err)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Sizes are validated to fit an `i64` before any statement runs.
fn size_col(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl DedupDb for SqliteDb {
    fn db_type(&self) -> DbType {
        DbType::Sqlite
    }

    fn schema_version(&self) -> Result<u32> {
        version(&self.lock()).map_err(query_err)
    }

    fn layer_in_repo(&self, key: &LayerKey) -> Result<Option<LayerEntry>> {
        key.validate()?;
        let row: Option<(String, i64)> = self
            .lock()
            .prepare_cached(sql::LAYER_IN_REPO)
            .and_then(|mut st| {
                st.query_row(
                    params![key.host, key.repo, key.chain_id, key.profile.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(query_err)?;
        row.map(|(digest, size)| Ok(LayerEntry::new(key.clone(), digest, size_of(size)?)))
            .transpose()
    }

    fn layer_in_other_repos(&self, key: &LayerKey, limit_: usize) -> Result<Vec<LayerEntry>> {
        key.validate()?;
        let rows: Vec<(String, String, i64)> = self
            .lock()
            .prepare_cached(sql::LAYER_OTHER_REPOS)
            .and_then(|mut st| {
                st.query_map(
                    params![
                        key.host,
                        key.chain_id,
                        key.profile.as_str(),
                        key.repo,
                        limit(limit_)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?
                .collect()
            })
            .map_err(query_err)?;
        rows.into_iter()
            .map(|(repo, digest, size)| {
                let k = LayerKey {
                    repo,
                    ..key.clone()
                };
                Ok(LayerEntry::new(k, digest, size_of(size)?))
            })
            .collect()
    }

    fn claim_layer(&self, key: &LayerKey, owner: &str, ttl: Duration) -> Result<bool> {
        key.validate()?;
        let c = self.lock();
        c.execute_batch(CLAIMS_TABLE).map_err(query_err)?;
        let n = c
            .execute(
                &format!(
                    "INSERT INTO obdconv_layer_claims (host, chain_id, profile, owner, expires_ms) \
                     VALUES (?1, ?2, ?3, ?4, {NOW_MS} + ?5) \
                     ON CONFLICT (host, chain_id, profile) DO UPDATE SET \
                     owner = excluded.owner, expires_ms = excluded.expires_ms \
                     WHERE obdconv_layer_claims.expires_ms < {NOW_MS} \
                     OR obdconv_layer_claims.owner = excluded.owner"
                ),
                params![
                    key.host,
                    key.chain_id,
                    key.profile.as_str(),
                    owner,
                    ttl.as_millis() as i64
                ],
            )
            .map_err(query_err)?;
        Ok(n == 1)
    }

    fn release_layer(&self, key: &LayerKey, owner: &str) -> Result<()> {
        let c = self.lock();
        c.execute_batch(CLAIMS_TABLE).map_err(query_err)?;
        c.execute(
            "DELETE FROM obdconv_layer_claims WHERE host = ?1 AND chain_id = ?2 \
             AND profile = ?3 AND owner = ?4",
            params![key.host, key.chain_id, key.profile.as_str(), owner],
        )
        .map_err(query_err)?;
        Ok(())
    }

    fn put_layer(&self, e: &LayerEntry) -> Result<()> {
        e.validate()?;
        let k = &e.key;
        let sql = format!(
            "{} ON CONFLICT (host, repo, chain_id, profile) DO UPDATE SET \
             data_digest = excluded.data_digest, data_size = excluded.data_size",
            sql::LAYER_INSERT
        );
        self.lock()
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.execute(params![
                    k.host,
                    k.repo,
                    k.chain_id,
                    k.profile.as_str(),
                    e.digest,
                    size_col(e.size)
                ])
            })
            .map_err(query_err)?;
        Ok(())
    }

    fn delete_layer(&self, key: &LayerKey, only_if_digest: Option<&str>) -> Result<bool> {
        key.validate()?;
        let conn = self.lock();
        let p = key.profile.as_str();
        let n = match only_if_digest {
            None => conn.execute(
                sql::LAYER_DELETE,
                params![key.host, key.repo, key.chain_id, p],
            ),
            Some(d) => conn.execute(
                &format!("{}{}", sql::LAYER_DELETE, sql::AND_LAYER_DIGEST),
                params![key.host, key.repo, key.chain_id, p, d],
            ),
        }
        .map_err(query_err)?;
        Ok(n > 0)
    }

    fn manifest_in_repo(&self, key: &ManifestKey) -> Result<Option<ManifestEntry>> {
        key.validate()?;
        let row: Option<(String, i64)> = self
            .lock()
            .prepare_cached(sql::MANIFEST_IN_REPO)
            .and_then(|mut st| {
                st.query_row(
                    params![
                        key.host,
                        key.repo,
                        key.src_digest,
                        key.media_type,
                        key.profile.as_str()
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(query_err)?;
        row.map(|(digest, size)| Ok(ManifestEntry::new(key.clone(), digest, size_of(size)?)))
            .transpose()
    }

    fn manifest_in_other_repos(
        &self,
        key: &ManifestKey,
        limit_: usize,
    ) -> Result<Vec<ManifestEntry>> {
        key.validate()?;
        let rows: Vec<(String, String, i64)> = self
            .lock()
            .prepare_cached(sql::MANIFEST_OTHER_REPOS)
            .and_then(|mut st| {
                st.query_map(
                    params![
                        key.host,
                        key.src_digest,
                        key.media_type,
                        key.profile.as_str(),
                        key.repo,
                        limit(limit_)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?
                .collect()
            })
            .map_err(query_err)?;
        rows.into_iter()
            .map(|(repo, digest, size)| {
                let k = ManifestKey {
                    repo,
                    ..key.clone()
                };
                Ok(ManifestEntry::new(k, digest, size_of(size)?))
            })
            .collect()
    }

    fn put_manifest(&self, e: &ManifestEntry) -> Result<()> {
        e.validate()?;
        let k = &e.key;
        let sql = format!(
            "{} ON CONFLICT (host, repo, src_digest, mediatype, profile) DO UPDATE SET \
             out_digest = excluded.out_digest, data_size = excluded.data_size",
            sql::MANIFEST_INSERT
        );
        self.lock()
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.execute(params![
                    k.host,
                    k.repo,
                    k.src_digest,
                    k.media_type,
                    k.profile.as_str(),
                    e.digest,
                    size_col(e.size)
                ])
            })
            .map_err(query_err)?;
        Ok(())
    }

    fn delete_manifest(&self, key: &ManifestKey, only_if_digest: Option<&str>) -> Result<bool> {
        key.validate()?;
        let conn = self.lock();
        let (h, r, s, m, p) = (
            &key.host,
            &key.repo,
            &key.src_digest,
            &key.media_type,
            key.profile.as_str(),
        );
        let n = match only_if_digest {
            None => conn.execute(sql::MANIFEST_DELETE, params![h, r, s, m, p]),
            Some(d) => conn.execute(
                &format!("{}{}", sql::MANIFEST_DELETE, sql::AND_MANIFEST_DIGEST),
                params![h, r, s, m, p, d],
            ),
        }
        .map_err(query_err)?;
        Ok(n > 0)
    }
}
