//! The MySQL / MariaDB back end (`--db-type mysql --db-str DSN`), on upstream's tables.
//!
//! Pure-Rust driver (`mysql` crate, no TLS, no native libraries) with a small connection
//! pool. Failure behaviour:
//! - [`MySqlDb::connect`] makes one probe connection with every timeout set to the connect
//!   timeout (default 3 s), so a server that is down, unroutable or not answering the
//!   handshake fails fast with [`Error::Unavailable`];
//! - pooled connections use the (longer) read/write timeouts, so a hung server cannot hang a
//!   conversion forever;
//! - migrations use their own connection with a long read timeout (an `ALTER TABLE` on a
//!   big table takes a while) and hold a named lock (`GET_LOCK`) so concurrent converters
//!   migrate once.
//!
//! Errors never contain the password: the driver's messages are scrubbed of it, and the
//! target is the redacted DSN.

use std::fmt;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn};

use crate::dsn::{MySqlAddress, MySqlDsn};
use crate::error::redact;
use crate::schema::{self, sql, LATEST_VERSION, MIGRATIONS};
use crate::{DbType, DedupDb, Error, LayerEntry, LayerKey, ManifestEntry, ManifestKey, Result};

/// Options for [`MySqlDb::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlOptions {
    /// TCP connect timeout, also the bound on the probe connection's handshake (default
    /// 3 s; DSN `timeout=`).
    pub connect_timeout: Duration,
    /// Socket read timeout of pooled connections (default 30 s; DSN `readTimeout=`).
    pub read_timeout: Duration,
    /// Socket write timeout of pooled connections (default 30 s; DSN `writeTimeout=`).
    pub write_timeout: Duration,
    /// Read timeout while migrating, and how long to wait for another process's migration
    /// (default 10 min).
    pub migration_timeout: Duration,
    /// Most pooled connections (default 8). Callers beyond that wait up to `read_timeout`.
    pub max_connections: usize,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        MySqlOptions {
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            migration_timeout: Duration::from_secs(600),
            max_connections: 8,
        }
    }
}

impl MySqlOptions {
    /// The driver options for `dsn` with these timeouts (connect, read and write): what
    /// another component keeping its own tables in the same database (the service's job
    /// queue) connects with. The builder holds the password; never log it.
    pub fn driver_opts(&self, dsn: &MySqlDsn) -> OptsBuilder {
        base_opts(dsn, self)
            .read_timeout(Some(self.read_timeout))
            .write_timeout(Some(self.write_timeout))
    }

    /// The defaults, overridden by the DSN's `timeout`, `readTimeout` and `writeTimeout`.
    pub fn from_dsn(dsn: &MySqlDsn) -> Self {
        let d = MySqlOptions::default();
        MySqlOptions {
            connect_timeout: dsn.connect_timeout.unwrap_or(d.connect_timeout),
            read_timeout: dsn.read_timeout.unwrap_or(d.read_timeout),
            write_timeout: dsn.write_timeout.unwrap_or(d.write_timeout),
            ..d
        }
    }
}

/// A dedup database on a MySQL or MariaDB server.
pub struct MySqlDb {
    pool: Pool,
    /// Redacted DSN, for messages.
    target: String,
    /// The password, only to scrub it from driver messages.
    secret: Option<String>,
    wait: Duration,
}

impl fmt::Debug for MySqlDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlDb")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Turns driver errors into ours, scrubbing the password.
struct ErrMap<'a> {
    target: &'a str,
    secret: Option<&'a str>,
}

impl ErrMap<'_> {
    fn reason(&self, e: &mysql::Error) -> String {
        redact(&e.to_string(), self.secret)
    }

    fn unavailable(&self, e: mysql::Error) -> Error {
        Error::Unavailable {
            target: self.target.to_string(),
            reason: self.reason(&e),
        }
    }

    /// Connection-level failures are `Unavailable`, the rest `Query`.
    fn query(&self, e: mysql::Error) -> Error {
        use mysql::DriverError as D;
        match e {
            mysql::Error::IoError(_)
            | mysql::Error::DriverError(D::ConnectTimeout | D::CouldNotConnect(_) | D::Timeout) => {
                self.unavailable(e)
            }
            _ => Error::Query(self.reason(&e)),
        }
    }

    fn migration(&self, e: mysql::Error) -> Error {
        Error::Migration(self.reason(&e))
    }
}

impl MySqlDb {
    /// Connects, migrates the schema to [`LATEST_VERSION`] if needed, and sets up the pool.
    ///
    /// Errors: [`Error::Unavailable`] (cannot connect, access denied, unknown database),
    /// [`Error::Migration`], [`Error::SchemaTooNew`].
    pub fn connect(dsn: &MySqlDsn, opts: &MySqlOptions) -> Result<Self> {
        let target = format!("mysql {dsn}");
        let em = ErrMap {
            target: &target,
            secret: dsn.password(),
        };
        let base = base_opts(dsn, opts);
        let probe_opts = base
            .clone()
            .read_timeout(Some(opts.connect_timeout))
            .write_timeout(Some(opts.connect_timeout));
        let mut probe = Conn::new(probe_opts).map_err(|e| em.unavailable(e))?;
        let found = version(&mut probe).map_err(|e| em.query(e))?;
        drop(probe);
        if found > LATEST_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                known: LATEST_VERSION,
            });
        }
        if found < LATEST_VERSION {
            let mut conn = Conn::new(
                base.clone()
                    .read_timeout(Some(opts.migration_timeout))
                    .write_timeout(Some(opts.write_timeout)),
            )
            .map_err(|e| em.unavailable(e))?;
            migrate(&mut conn, opts.migration_timeout, &em)?;
        }
        let max = opts.max_connections.max(1);
        let pool_opts = PoolOpts::default()
            .with_constraints(PoolConstraints::new(0, max).expect("0 <= max"))
            .with_reset_connection(false);
        let pool = Pool::new(
            base.read_timeout(Some(opts.read_timeout))
                .write_timeout(Some(opts.write_timeout))
                .pool_opts(pool_opts),
        )
        .map_err(|e| em.unavailable(e))?;
        Ok(MySqlDb {
            pool,
            secret: dsn.password().map(str::to_string),
            target,
            wait: opts.read_timeout,
        })
    }

    fn em(&self) -> ErrMap<'_> {
        ErrMap {
            target: &self.target,
            secret: self.secret.as_deref(),
        }
    }

    fn conn(&self) -> Result<PooledConn> {
        self.pool
            .try_get_conn(self.wait)
            .map_err(|e| self.em().unavailable(e))
    }
}

fn base_opts(dsn: &MySqlDsn, opts: &MySqlOptions) -> OptsBuilder {
    let b = OptsBuilder::new()
        .user((!dsn.user.is_empty()).then(|| dsn.user.clone()))
        .pass(dsn.password().map(str::to_string))
        .db_name(Some(dsn.database.clone()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(opts.connect_timeout))
        .stmt_cache_size(32);
    match &dsn.address {
        MySqlAddress::Tcp { host, port } => b.ip_or_hostname(Some(host.clone())).tcp_port(*port),
        MySqlAddress::Unix(path) => b.socket(Some(path.to_string_lossy().into_owned())),
    }
}

fn version(conn: &mut impl Queryable) -> mysql::Result<u32> {
    let exists: Option<i64> = conn.exec_first(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        (schema::VERSION_TABLE,),
    )?;
    if exists.unwrap_or(0) == 0 {
        return Ok(0);
    }
    let v: Option<Option<u32>> =
        conn.query_first("SELECT MAX(version) FROM obdconv_schema_version")?;
    Ok(v.flatten().unwrap_or(0))
}

fn has_column(conn: &mut Conn, table: &str, column: &str) -> mysql::Result<bool> {
    let n: Option<i64> = conn.exec_first(
        "SELECT COUNT(*) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        (table, column),
    )?;
    Ok(n.unwrap_or(0) > 0)
}

/// The lock name: per database (names are server-wide), at most 64 characters.
const LOCK_NAME: &str = "LEFT(CONCAT(?, '.', DATABASE()), 64)";

/// The database's clock in milliseconds.
const NOW_MS: &str = "CAST(FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000) AS SIGNED)";

/// Who converts which layer right now ([`DedupDb::claim_layer`]).
const CLAIMS_TABLE: &str = "CREATE TABLE IF NOT EXISTS `obdconv_layer_claims` (
  `host` varchar(255) NOT NULL, `chain_id` varchar(255) NOT NULL,
  `profile` varchar(255) NOT NULL, `owner` varchar(255) NOT NULL,
  `expires_ms` bigint NOT NULL,
  PRIMARY KEY (`host`, `chain_id`, `profile`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8";

fn migrate(conn: &mut Conn, wait: Duration, em: &ErrMap<'_>) -> Result<()> {
    let got: Option<Option<i64>> = conn
        .exec_first(
            format!("SELECT GET_LOCK({LOCK_NAME}, ?)"),
            (schema::MIGRATION_LOCK, wait.as_secs().max(1)),
        )
        .map_err(|e| em.migration(e))?;
    if got.flatten() != Some(1) {
        return Err(Error::Migration(format!(
            "timed out after {wait:?} waiting for another converter's schema migration"
        )));
    }
    let result = migrate_locked(conn, em);
    if let Err(e) = conn.exec_drop(
        format!("SELECT RELEASE_LOCK({LOCK_NAME})"),
        (schema::MIGRATION_LOCK,),
    ) {
        tracing::debug!(error = %em.reason(&e), "releasing the migration lock failed");
    }
    result
}

fn migrate_locked(conn: &mut Conn, em: &ErrMap<'_>) -> Result<()> {
    let m = |e| em.migration(e);
    conn.query_drop(schema::mysql::CREATE_VERSION_TABLE)
        .map_err(m)?;
    let found = version(conn).map_err(m)?;
    if found > LATEST_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            known: LATEST_VERSION,
        });
    }
    for step in MIGRATIONS.iter().filter(|s| s.version > found) {
        match step.version {
            1 => {
                conn.query_drop(schema::mysql::UPSTREAM_LAYERS).map_err(m)?;
                conn.query_drop(schema::mysql::UPSTREAM_MANIFESTS)
                    .map_err(m)?;
            }
            2 => {
                // Each ALTER is atomic; checking first finishes an interrupted migration.
                if !has_column(conn, schema::LAYERS_TABLE, "profile").map_err(m)? {
                    conn.query_drop(schema::mysql::PROFILE_LAYERS).map_err(m)?;
                }
                if !has_column(conn, schema::MANIFESTS_TABLE, "profile").map_err(m)? {
                    conn.query_drop(schema::mysql::PROFILE_MANIFESTS)
                        .map_err(m)?;
                }
            }
            v => unreachable!("migration {v} has no MySQL step"),
        }
        conn.exec_drop(
            "INSERT IGNORE INTO obdconv_schema_version (version, description) VALUES (?, ?)",
            (step.version, step.description),
        )
        .map_err(m)?;
        tracing::info!(version = step.version, "dedup database (mysql) migrated");
    }
    Ok(())
}

fn size_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Query(format!("negative size {v} in the database")))
}

fn limit(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Sizes are validated to fit an `i64` before any statement runs.
fn size_col(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl DedupDb for MySqlDb {
    fn db_type(&self) -> DbType {
        DbType::MySql
    }

    fn schema_version(&self) -> Result<u32> {
        let mut c = self.conn()?;
        version(&mut c).map_err(|e| self.em().query(e))
    }

    fn layer_in_repo(&self, key: &LayerKey) -> Result<Option<LayerEntry>> {
        key.validate()?;
        let row: Option<(String, i64)> = self
            .conn()?
            .exec_first(
                sql::LAYER_IN_REPO,
                (&key.host, &key.repo, &key.chain_id, key.profile.as_str()),
            )
            .map_err(|e| self.em().query(e))?;
        row.map(|(digest, size)| Ok(LayerEntry::new(key.clone(), digest, size_of(size)?)))
            .transpose()
    }

    fn layer_in_other_repos(&self, key: &LayerKey, limit_: usize) -> Result<Vec<LayerEntry>> {
        key.validate()?;
        let rows: Vec<(String, String, i64)> = self
            .conn()?
            .exec(
                sql::LAYER_OTHER_REPOS,
                (
                    &key.host,
                    &key.chain_id,
                    key.profile.as_str(),
                    &key.repo,
                    limit(limit_),
                ),
            )
            .map_err(|e| self.em().query(e))?;
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
        let mut c = self.conn()?;
        let q = |e| self.em().query(e);
        c.query_drop(CLAIMS_TABLE).map_err(q)?;
        // The row lock of the upsert orders racing claimers; the read after it tells who
        // holds the claim now.
        c.exec_drop(
            format!(
                "INSERT INTO obdconv_layer_claims (host, chain_id, profile, owner, expires_ms) \
                 VALUES (?, ?, ?, ?, {NOW_MS} + ?) ON DUPLICATE KEY UPDATE \
                 owner = IF(expires_ms < {NOW_MS} OR owner = VALUES(owner), VALUES(owner), owner), \
                 expires_ms = IF(owner = VALUES(owner), VALUES(expires_ms), expires_ms)"
            ),
            (
                &key.host,
                &key.chain_id,
                key.profile.as_str(),
                owner,
                ttl.as_millis() as i64,
            ),
        )
        .map_err(q)?;
        let holder: Option<String> = c
            .exec_first(
                "SELECT owner FROM obdconv_layer_claims WHERE host = ? AND chain_id = ? \
                 AND profile = ?",
                (&key.host, &key.chain_id, key.profile.as_str()),
            )
            .map_err(q)?;
        Ok(holder.as_deref() == Some(owner))
    }

    fn release_layer(&self, key: &LayerKey, owner: &str) -> Result<()> {
        let mut c = self.conn()?;
        let q = |e| self.em().query(e);
        c.query_drop(CLAIMS_TABLE).map_err(q)?;
        c.exec_drop(
            "DELETE FROM obdconv_layer_claims WHERE host = ? AND chain_id = ? AND profile = ? \
             AND owner = ?",
            (&key.host, &key.chain_id, key.profile.as_str(), owner),
        )
        .map_err(q)
    }

    fn put_layer(&self, e: &LayerEntry) -> Result<()> {
        e.validate()?;
        let k = &e.key;
        self.conn()?
            .exec_drop(
                format!(
                    "{} ON DUPLICATE KEY UPDATE \
                     data_digest = VALUES(data_digest), data_size = VALUES(data_size)",
                    sql::LAYER_INSERT
                ),
                (
                    &k.host,
                    &k.repo,
                    &k.chain_id,
                    k.profile.as_str(),
                    &e.digest,
                    size_col(e.size),
                ),
            )
            .map_err(|err| self.em().query(err))
    }

    fn delete_layer(&self, key: &LayerKey, only_if_digest: Option<&str>) -> Result<bool> {
        key.validate()?;
        let mut c = self.conn()?;
        let p = key.profile.as_str();
        match only_if_digest {
            None => c.exec_drop(sql::LAYER_DELETE, (&key.host, &key.repo, &key.chain_id, p)),
            Some(d) => c.exec_drop(
                format!("{}{}", sql::LAYER_DELETE, sql::AND_LAYER_DIGEST),
                (&key.host, &key.repo, &key.chain_id, p, d),
            ),
        }
        .map_err(|e| self.em().query(e))?;
        Ok(c.affected_rows() > 0)
    }

    fn manifest_in_repo(&self, key: &ManifestKey) -> Result<Option<ManifestEntry>> {
        key.validate()?;
        let row: Option<(String, i64)> = self
            .conn()?
            .exec_first(
                sql::MANIFEST_IN_REPO,
                (
                    &key.host,
                    &key.repo,
                    &key.src_digest,
                    &key.media_type,
                    key.profile.as_str(),
                ),
            )
            .map_err(|e| self.em().query(e))?;
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
            .conn()?
            .exec(
                sql::MANIFEST_OTHER_REPOS,
                (
                    &key.host,
                    &key.src_digest,
                    &key.media_type,
                    key.profile.as_str(),
                    &key.repo,
                    limit(limit_),
                ),
            )
            .map_err(|e| self.em().query(e))?;
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
        self.conn()?
            .exec_drop(
                format!(
                    "{} ON DUPLICATE KEY UPDATE \
                     out_digest = VALUES(out_digest), data_size = VALUES(data_size)",
                    sql::MANIFEST_INSERT
                ),
                (
                    &k.host,
                    &k.repo,
                    &k.src_digest,
                    &k.media_type,
                    k.profile.as_str(),
                    &e.digest,
                    size_col(e.size),
                ),
            )
            .map_err(|err| self.em().query(err))
    }

    fn delete_manifest(&self, key: &ManifestKey, only_if_digest: Option<&str>) -> Result<bool> {
        key.validate()?;
        let mut c = self.conn()?;
        let (h, r, s, m, p) = (
            &key.host,
            &key.repo,
            &key.src_digest,
            &key.media_type,
            key.profile.as_str(),
        );
        match only_if_digest {
            None => c.exec_drop(sql::MANIFEST_DELETE, (h, r, s, m, p)),
            Some(d) => c.exec_drop(
                format!("{}{}", sql::MANIFEST_DELETE, sql::AND_MANIFEST_DIGEST),
                (h, r, s, m, p, d),
            ),
        }
        .map_err(|e| self.em().query(e))?;
        Ok(c.affected_rows() > 0)
    }
}

/// Opts for a one-off connection (used by the test harness).
#[cfg(feature = "testutil")]
pub(crate) fn raw_opts(dsn: &MySqlDsn, timeout: Duration) -> mysql::Opts {
    let o = MySqlOptions {
        connect_timeout: timeout,
        ..MySqlOptions::default()
    };
    base_opts(dsn, &o).into()
}
