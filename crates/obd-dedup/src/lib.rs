//! The conversion dedup database of obdconv (`convertor --db-type/--db-str`).
//!
//! This crate owns the [`DedupDb`] trait, the [`open`] constructor that picks a back end
//! from the CLI's `--db-type` / `--db-str`, and the two back ends:
//!
//! | `--db-type` | `--db-str` | back end |
//! |---|---|---|
//! | `mysql` | Go mysql-driver DSN, e.g. `user:pass@tcp(host:3306)/db` ([`MySqlDsn`]) | [`MySqlDb`] (MySQL or MariaDB) |
//! | `sqlite` | a file path (created if missing) | [`SqliteDb`] |
//!
//! # Data model
//!
//! Two tables, the ones upstream (`accelerated-container-image` `convertor`) uses, so an
//! existing deployment can point obdconv at its database:
//!
//! - `overlaybd_layers`: ([`LayerKey`]) host, repo, source chain ID, **profile** →
//!   ([`LayerEntry`]) converted layer digest and size;
//! - `overlaybd_manifests`: ([`ManifestKey`]) host, repo, source manifest digest, output
//!   manifest media type, **profile** → ([`ManifestEntry`]) converted manifest digest and
//!   size.
//!
//! The **profile** ([`Profile`]) is the column obdconv adds: a string the caller derives from
//! every option that changes the converted bytes (format version, vsize, mkfs/baselayer,
//! fstype, compression algorithm and block size, OCI vs Docker media types, …), usually with
//! [`Profile::from_fields`]. A row is only ever reused by a conversion with the same
//! profile. Rows written by upstream have an empty profile and never match. The schema
//! changes and why they are safe for upstream readers and writers are described in
//! [`schema`].
//!
//! # Using it from the convertor
//!
//! ```no_run
//! use obd_dedup::{open, LayerEntry, LayerKey, Profile};
//! use std::sync::Arc;
//!
//! let profile = Profile::from_fields([
//!     ("format", "obdconv-1"),
//!     ("vsize_gb", "64"),
//!     ("mkfs", "true"),
//!     ("fstype", "ext4"),
//!     ("algorithm", "lz4"),
//!     ("block_size", "4096"),
//!     ("media_types", "docker"),
//! ])?;
//! // Any error from `open` (bad DSN, DB down, migration refused) means "convert without
//! // dedup": log it (its Display never contains the password) and go on.
//! let db: Arc<dyn obd_dedup::DedupDb> = match open("mysql", "u:p@tcp(127.0.0.1:3306)/dedup") {
//!     Ok(db) => Arc::from(db),
//!     Err(e) => { eprintln!("warning: {e}; converting without dedup"); return Ok(()) }
//! };
//! let key = LayerKey::new("registry.example.com", "ns/app", "sha256:1234…", profile.clone());
//! if let Some(hit) = db.layer_in_repo(&key)? {
//!     // probe the registry for hit.digest; if it is gone: db.delete_layer(&key, Some(&hit.digest))
//! } else {
//!     for other in db.layer_in_other_repos(&key, 16)? {
//!         // try a cross-repo mount from other.key.repo, then db.put_layer(&LayerEntry { key: key.clone(), ..other })
//!     }
//! }
//! // after converting and uploading:
//! db.put_layer(&LayerEntry::new(key, "sha256:abcd…", 123_456))?;
//! # Ok::<(), obd_dedup::Error>(())
//! ```
//!
//! # Concurrency
//!
//! Every back end is `Send + Sync`; share one handle (`Arc<dyn DedupDb>`) between the
//! threads that convert platforms. Many converter processes may share one database: writes
//! are single-statement upserts (`INSERT … ON DUPLICATE KEY UPDATE` /
//! `INSERT … ON CONFLICT DO UPDATE`), so concurrent conversions of the same content never
//! fail or lose rows (the last writer wins, and deterministic conversion means they write
//! the same values). Deletes can be made conditional on the stale digest so a delete never
//! removes a row another converter has just refreshed. Schema migrations are serialised
//! between processes (a MySQL named lock, an SQLite write transaction).
//!
//! # Adding a back end
//!
//! Implement [`DedupDb`] in a new module (see `sqlite_db.rs`, about 400 lines), add a
//! [`DbType`] variant and a match arm in [`open`]. The logical schema and the migration
//! list live in [`schema`]; the shared validation in [`LayerKey::validate`] and friends.
//!
//! # Testing
//!
//! The `testutil` feature adds `testutil::TestMariaDb`, a private `mariadbd` for tests, and
//! `tests/suite.rs` runs one behaviour suite against both back ends.

mod dsn;
mod error;
mod mysql_db;
pub mod schema;
mod sqlite_db;
#[cfg(feature = "testutil")]
pub mod testutil;
mod types;

use std::fmt;
use std::str::FromStr;

pub use dsn::{DsnError, MySqlAddress, MySqlDsn};
pub use error::{Error, Result};
pub use mysql_db::{MySqlDb, MySqlOptions};
pub use sqlite_db::{SqliteDb, SqliteOptions};
pub use types::{LayerEntry, LayerKey, ManifestEntry, ManifestKey, Profile, MAX_FIELD_LEN};

/// Which back end `--db-type` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbType {
    /// MySQL or MariaDB, `--db-str` is a Go mysql-driver DSN.
    MySql,
    /// SQLite, `--db-str` is a file path.
    Sqlite,
}

impl DbType {
    /// The `--db-type` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DbType::MySql => "mysql",
            DbType::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for DbType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbType {
    type Err = Error;
    /// `mysql` (also `mariadb`) or `sqlite` (also `sqlite3`), case-insensitive.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mysql" | "mariadb" => Ok(DbType::MySql),
            "sqlite" | "sqlite3" => Ok(DbType::Sqlite),
            _ => Err(Error::UnknownDbType(s.to_string())),
        }
    }
}

/// The conversion dedup database: what the convertor asks before converting a layer or a
/// manifest, and what it records afterwards.
///
/// All methods are blocking and may be called from many threads at once. Lookups return
/// `Ok(None)` / an empty `Vec` for "no row"; an `Err` means the database could not answer
/// (the convertor should treat it as a miss, warn, and carry on converting). Keys and
/// entries are validated first ([`Error::InvalidRecord`]), so an over-long field can never
/// be silently truncated into another key by the server.
///
/// Lookups only ever return rows whose profile equals the key's profile; rows written by
/// upstream (empty profile) are invisible through this trait.
pub trait DedupDb: Send + Sync + fmt::Debug {
    /// Which back end this is.
    fn db_type(&self) -> DbType;

    /// The schema version of the database (after [`open`]'s migration this is
    /// [`schema::LATEST_VERSION`]).
    fn schema_version(&self) -> Result<u32>;

    /// Claims the conversion of the layer `key` names (host, chain ID and profile, in any
    /// repository) for `owner` during `ttl`: true when the caller now holds the claim (there
    /// was none, it had expired, or it was `owner`'s own), false while another owner's claim
    /// is live. Workers that share a database convert a shared layer once: the others wait
    /// for its row. The claims live in the table `obdconv_layer_claims`.
    fn claim_layer(&self, key: &LayerKey, owner: &str, ttl: std::time::Duration) -> Result<bool> {
        let _ = (key, owner, ttl);
        Ok(true)
    }

    /// Ends `owner`'s claim of the layer `key` names (another owner's is left alone).
    fn release_layer(&self, key: &LayerKey, owner: &str) -> Result<()> {
        let _ = (key, owner);
        Ok(())
    }

    /// The converted layer for `key` in the same host and repository, if recorded.
    fn layer_in_repo(&self, key: &LayerKey) -> Result<Option<LayerEntry>>;

    /// Converted layers for the same host, chain ID and profile in *other* repositories
    /// (candidates for a cross-repo blob mount), ordered by repository name, at most `limit`.
    fn layer_in_other_repos(&self, key: &LayerKey, limit: usize) -> Result<Vec<LayerEntry>>;

    /// Records (inserts or overwrites) a converted layer. Idempotent, safe under concurrency.
    fn put_layer(&self, entry: &LayerEntry) -> Result<()>;

    /// Deletes the row for `key`, e.g. because its blob is gone from the registry. With
    /// `only_if_digest`, the row is only deleted while it still points at that digest (so a
    /// row another converter has just rewritten survives). Returns whether a row was deleted.
    fn delete_layer(&self, key: &LayerKey, only_if_digest: Option<&str>) -> Result<bool>;

    /// The converted manifest for `key` in the same host and repository, if recorded.
    fn manifest_in_repo(&self, key: &ManifestKey) -> Result<Option<ManifestEntry>>;

    /// Converted manifests for the same host, source digest, media type and profile in other
    /// repositories, ordered by repository name, at most `limit`.
    fn manifest_in_other_repos(
        &self,
        key: &ManifestKey,
        limit: usize,
    ) -> Result<Vec<ManifestEntry>>;

    /// Records (inserts or overwrites) a converted manifest.
    fn put_manifest(&self, entry: &ManifestEntry) -> Result<()>;

    /// Deletes the row for `key`; `only_if_digest` as in [`DedupDb::delete_layer`].
    fn delete_manifest(&self, key: &ManifestKey, only_if_digest: Option<&str>) -> Result<bool>;
}

/// Opens (and migrates to [`schema::LATEST_VERSION`]) the database named by the CLI's
/// `--db-type` and `--db-str`, with default options.
///
/// - `mysql`: `db_str` is a Go mysql-driver DSN ([`MySqlDsn::parse`]); connecting fails
///   within about 3 s (DSN `timeout=` changes that) when the server is down.
/// - `sqlite`: `db_str` is a file path; the file is created if missing.
///
/// Errors are typed ([`Error`]): [`Error::UnknownDbType`], [`Error::Dsn`],
/// [`Error::Unavailable`] (connection or authentication failed), [`Error::Migration`],
/// [`Error::SchemaTooNew`]. None of them, in `Display` or `Debug`, contains the password.
pub fn open(db_type: &str, db_str: &str) -> Result<Box<dyn DedupDb>> {
    match db_type.parse::<DbType>()? {
        DbType::MySql => {
            let dsn = MySqlDsn::parse(db_str)?;
            Ok(Box::new(MySqlDb::connect(
                &dsn,
                &MySqlOptions::from_dsn(&dsn),
            )?))
        }
        DbType::Sqlite => Ok(Box::new(SqliteDb::open(db_str, &SqliteOptions::default())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_type_parses() {
        assert_eq!("mysql".parse::<DbType>().unwrap(), DbType::MySql);
        assert_eq!("MariaDB".parse::<DbType>().unwrap(), DbType::MySql);
        assert_eq!("sqlite".parse::<DbType>().unwrap(), DbType::Sqlite);
        assert!(matches!(
            "postgres".parse::<DbType>(),
            Err(Error::UnknownDbType(s)) if s == "postgres"
        ));
        assert!(matches!(open("", "x"), Err(Error::UnknownDbType(_))));
    }

    #[test]
    fn trait_objects_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn DedupDb>();
        assert_send_sync::<MySqlDb>();
        assert_send_sync::<SqliteDb>();
    }
}
