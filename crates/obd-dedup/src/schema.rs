//! The logical schema, its versioned migrations, and the DDL for each SQL dialect.
//!
//! # Tables
//!
//! Upstream's two tables (accelerated-container-image `docs/USERSPACE_CONVERTOR.md`), plus
//! one `profile` column each, plus a version table:
//!
//! ```text
//! overlaybd_layers    (host, repo, chain_id, data_digest, data_size, profile)
//!                     PRIMARY KEY (host, repo, chain_id, profile), KEY (host, chain_id)
//! overlaybd_manifests (host, repo, src_digest, out_digest, data_size, mediatype, profile)
//!                     PRIMARY KEY (host, repo, src_digest, mediatype, profile), KEY (host, src_digest)
//! obdconv_schema_version (version PRIMARY KEY, description, applied_at)
//! ```
//!
//! # Migrations
//!
//! The version of a database is `MAX(version)` of `obdconv_schema_version` (0 when the table
//! is missing or empty). [`MIGRATIONS`] lists them; opening a database applies every one
//! above its version, each recorded in the version table, while holding a lock so
//! concurrent openers do not race (MySQL: `GET_LOCK('obdconv_dedup_schema')`; SQLite: a
//! `BEGIN IMMEDIATE` transaction). Every step also checks the catalogue before acting, so a
//! migration interrupted halfway (MySQL DDL is not transactional) is finished, not
//! repeated, by the next open. A database whose version is above [`LATEST_VERSION`] is
//! refused ([`crate::Error::SchemaTooNew`]) rather than written with old assumptions.
//!
//! 1. **Upstream tables.** `CREATE TABLE IF NOT EXISTS` with upstream's exact DDL, so a
//!    fresh database looks like an upstream one; an existing upstream database is left as is.
//! 2. **Profiles.** In one `ALTER TABLE` per table (atomic per table in InnoDB):
//!    - add `profile varchar(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''`;
//!    - replace the primary key by upstream's plus `profile`;
//!    - manifests only: re-declare `mediatype` as `CHARACTER SET ascii` (same length,
//!      `NOT NULL`, comment; the case-insensitive `ascii_general_ci` collation matches the
//!      old `utf8_general_ci` comparisons for ASCII).
//!
//!    SQLite cannot alter a primary key, so there the table is rebuilt (create, copy, drop,
//!    rename, re-index) inside the migration transaction.
//!
//! # Why migration 2 looks like that
//!
//! - **Upstream rows never match ours.** Upstream's `INSERT`s name their columns, so their
//!   rows get the default profile `''`. [`crate::Profile`] cannot be empty, and every query
//!   of ours has `profile = ?`, so upstream rows are invisible to us (as ACI #250 asks: a
//!   row made with unknown options must not be reused). `''` rather than `NULL` because
//!   primary-key columns cannot be NULL in MySQL.
//! - **Upstream readers keep working.** Their `SELECT`s name columns and filter on
//!   `host, repo, chain_id` (`+ src_digest, mediatype`); nothing they read was renamed,
//!   retyped in a visible way or removed. They may now also see obdconv's rows for the same
//!   source (several rows where there was one: upstream takes the first); those are valid
//!   overlaybd blobs, and upstream ignores conversion options anyway, so that is no worse
//!   than upstream's behaviour today.
//! - **Upstream writers keep working.** Their plain `INSERT` still fails with a duplicate
//!   key only against their own row (profile `''`), which upstream already ignores; it
//!   never collides with obdconv's rows. Upstream's `DELETE … WHERE host, repo, chain_id`
//!   removes obdconv's rows of that key too; that only costs a re-conversion (the table is
//!   a cache).
//! - **Both can write the same source.** The key includes the profile, so an upstream row
//!   and rows of several obdconv profiles for the same (host, repo, chain_id) coexist.
//! - **Key length.** InnoDB limits an index to 3072 bytes. Upstream's tables are
//!   `DEFAULT CHARSET=utf8` (utf8mb3, 3 bytes a character), so its layer key is 3 × 765 =
//!   2295 bytes, and its manifest key 4 × 765 = 3060: no room for even 4 more characters.
//!   Hence `profile` is ASCII (1 byte a character, 128 bytes), and `mediatype` becomes ASCII
//!   (media types are ASCII by RFC 6838; 255 bytes): the manifest key becomes 2295 + 255 +
//!   128 = 2678 bytes, the layer key 2423. A deployment whose layer table was created with
//!   `utf8mb4` would exceed the limit; the migration then fails with MySQL's "key too long"
//!   message in [`crate::Error::Migration`] and the convertor runs without dedup.
//! - **Cross-repo lookups** filter on `host, chain_id, profile` (`host, src_digest,
//!   mediatype, profile`) and are served by upstream's secondary index.
//! - **Cost.** Each ALTER rebuilds its table once (the charset change makes it a copy);
//!   reads go on meanwhile, writers (ours and upstream's) wait. A dedup table holds one
//!   row per converted layer or manifest, so this takes seconds at most.

/// Newest schema version this build knows and migrates to.
pub const LATEST_VERSION: u32 = 2;

/// The layer table (upstream's name).
pub const LAYERS_TABLE: &str = "overlaybd_layers";
/// The manifest table (upstream's name).
pub const MANIFESTS_TABLE: &str = "overlaybd_manifests";
/// The schema version table (ours).
pub const VERSION_TABLE: &str = "obdconv_schema_version";
/// Name of the MySQL advisory lock held while migrating.
pub const MIGRATION_LOCK: &str = "obdconv_dedup_schema";

/// A schema migration: its version and what it does (stored in the version table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version the database has after this migration.
    pub version: u32,
    /// One-line description.
    pub description: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "upstream overlaybd_layers and overlaybd_manifests tables",
    },
    Migration {
        version: 2,
        description: "profile column in both tables, added to their primary keys",
    },
];

/// MySQL / MariaDB DDL.
pub mod mysql {
    /// The version table.
    pub const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS `obdconv_schema_version` (
  `version` int NOT NULL,
  `description` varchar(255) NOT NULL,
  `applied_at` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`version`)
) DEFAULT CHARSET=utf8";

    /// Upstream's layer table, verbatim (docs/USERSPACE_CONVERTOR.md), `IF NOT EXISTS`.
    pub const UPSTREAM_LAYERS: &str = "CREATE TABLE IF NOT EXISTS `overlaybd_layers` (
  `host` varchar(255) NOT NULL,
  `repo` varchar(255) NOT NULL,
  `chain_id` varchar(255) NOT NULL COMMENT 'chain-id of the normal image layer',
  `data_digest` varchar(255) NOT NULL COMMENT 'digest of overlaybd layer',
  `data_size` bigint(20) NOT NULL COMMENT 'size of overlaybd layer',
  PRIMARY KEY (`host`,`repo`,`chain_id`),
  KEY `index_registry_chainId` (`host`,`chain_id`) USING BTREE
) DEFAULT CHARSET=utf8";

    /// Upstream's manifest table, verbatim, `IF NOT EXISTS`.
    pub const UPSTREAM_MANIFESTS: &str = "CREATE TABLE IF NOT EXISTS `overlaybd_manifests` (
  `host` varchar(255) NOT NULL,
  `repo` varchar(255) NOT NULL,
  `src_digest` varchar(255) NOT NULL COMMENT 'digest of the normal image manifest',
  `out_digest` varchar(255) NOT NULL COMMENT 'digest of overlaybd manifest',
  `data_size` bigint(20) NOT NULL COMMENT 'size of overlaybd manifest',
  `mediatype` varchar(255) NOT NULL COMMENT 'mediatype of the converted image manifest',
  PRIMARY KEY (`host`,`repo`,`src_digest`, `mediatype`),
  KEY `index_registry_src_digest` (`host`,`src_digest`) USING BTREE
) DEFAULT CHARSET=utf8";

    /// Migration 2 for the layer table.
    pub const PROFILE_LAYERS: &str = "ALTER TABLE `overlaybd_layers`
  ADD COLUMN `profile` varchar(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''
    COMMENT 'obdconv output profile, empty for rows written by upstream',
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (`host`,`repo`,`chain_id`,`profile`)";

    /// Migration 2 for the manifest table.
    pub const PROFILE_MANIFESTS: &str = "ALTER TABLE `overlaybd_manifests`
  MODIFY COLUMN `mediatype` varchar(255) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL
    COMMENT 'mediatype of the converted image manifest',
  ADD COLUMN `profile` varchar(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''
    COMMENT 'obdconv output profile, empty for rows written by upstream',
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (`host`,`repo`,`src_digest`,`mediatype`,`profile`)";
}

/// SQLite DDL (the same logical schema; `varchar(n)` is only a type name there).
pub mod sqlite {
    /// The version table.
    pub const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS obdconv_schema_version (
  version INTEGER NOT NULL PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)";

    /// Upstream's tables as SQLite would have them (migration 1).
    pub const UPSTREAM_TABLES: &str = "
CREATE TABLE IF NOT EXISTS overlaybd_layers (
  host varchar(255) NOT NULL,
  repo varchar(255) NOT NULL,
  chain_id varchar(255) NOT NULL,
  data_digest varchar(255) NOT NULL,
  data_size bigint NOT NULL,
  PRIMARY KEY (host, repo, chain_id)
);
CREATE INDEX IF NOT EXISTS index_registry_chainId ON overlaybd_layers (host, chain_id);
CREATE TABLE IF NOT EXISTS overlaybd_manifests (
  host varchar(255) NOT NULL,
  repo varchar(255) NOT NULL,
  src_digest varchar(255) NOT NULL,
  out_digest varchar(255) NOT NULL,
  data_size bigint NOT NULL,
  mediatype varchar(255) NOT NULL,
  PRIMARY KEY (host, repo, src_digest, mediatype)
);
CREATE INDEX IF NOT EXISTS index_registry_src_digest ON overlaybd_manifests (host, src_digest);
";

    /// Migration 2 for the layer table (rebuild; run inside a transaction).
    pub const PROFILE_LAYERS: &str = "
CREATE TABLE obdconv_new_layers (
  host varchar(255) NOT NULL,
  repo varchar(255) NOT NULL,
  chain_id varchar(255) NOT NULL,
  data_digest varchar(255) NOT NULL,
  data_size bigint NOT NULL,
  profile varchar(128) NOT NULL DEFAULT '',
  PRIMARY KEY (host, repo, chain_id, profile)
);
INSERT INTO obdconv_new_layers (host, repo, chain_id, data_digest, data_size)
  SELECT host, repo, chain_id, data_digest, data_size FROM overlaybd_layers;
DROP TABLE overlaybd_layers;
ALTER TABLE obdconv_new_layers RENAME TO overlaybd_layers;
CREATE INDEX index_registry_chainId ON overlaybd_layers (host, chain_id);
";

    /// Migration 2 for the manifest table (rebuild; run inside a transaction).
    pub const PROFILE_MANIFESTS: &str = "
CREATE TABLE obdconv_new_manifests (
  host varchar(255) NOT NULL,
  repo varchar(255) NOT NULL,
  src_digest varchar(255) NOT NULL,
  out_digest varchar(255) NOT NULL,
  data_size bigint NOT NULL,
  mediatype varchar(255) NOT NULL,
  profile varchar(128) NOT NULL DEFAULT '',
  PRIMARY KEY (host, repo, src_digest, mediatype, profile)
);
INSERT INTO obdconv_new_manifests (host, repo, src_digest, out_digest, data_size, mediatype)
  SELECT host, repo, src_digest, out_digest, data_size, mediatype FROM overlaybd_manifests;
DROP TABLE overlaybd_manifests;
ALTER TABLE obdconv_new_manifests RENAME TO overlaybd_manifests;
CREATE INDEX index_registry_src_digest ON overlaybd_manifests (host, src_digest);
";
}

/// The SQL our back ends run, shared by both dialects (`?` placeholders; the upsert tails
/// differ and are in each back end).
pub(crate) mod sql {
    pub const LAYER_IN_REPO: &str = "SELECT data_digest, data_size FROM overlaybd_layers \
         WHERE host = ? AND repo = ? AND chain_id = ? AND profile = ?";
    pub const LAYER_OTHER_REPOS: &str =
        "SELECT repo, data_digest, data_size FROM overlaybd_layers \
         WHERE host = ? AND chain_id = ? AND profile = ? AND repo <> ? ORDER BY repo LIMIT ?";
    pub const LAYER_INSERT: &str = "INSERT INTO overlaybd_layers \
         (host, repo, chain_id, profile, data_digest, data_size) VALUES (?, ?, ?, ?, ?, ?)";
    pub const LAYER_DELETE: &str = "DELETE FROM overlaybd_layers \
         WHERE host = ? AND repo = ? AND chain_id = ? AND profile = ?";
    pub const MANIFEST_IN_REPO: &str = "SELECT out_digest, data_size FROM overlaybd_manifests \
         WHERE host = ? AND repo = ? AND src_digest = ? AND mediatype = ? AND profile = ?";
    pub const MANIFEST_OTHER_REPOS: &str =
        "SELECT repo, out_digest, data_size FROM overlaybd_manifests \
         WHERE host = ? AND src_digest = ? AND mediatype = ? AND profile = ? AND repo <> ? \
         ORDER BY repo LIMIT ?";
    pub const MANIFEST_INSERT: &str = "INSERT INTO overlaybd_manifests \
         (host, repo, src_digest, mediatype, profile, out_digest, data_size) \
         VALUES (?, ?, ?, ?, ?, ?, ?)";
    pub const MANIFEST_DELETE: &str = "DELETE FROM overlaybd_manifests \
         WHERE host = ? AND repo = ? AND src_digest = ? AND mediatype = ? AND profile = ?";
    /// Appended to the deletes for `only_if_digest`.
    pub const AND_LAYER_DIGEST: &str = " AND data_digest = ?";
    /// Appended to the deletes for `only_if_digest`.
    pub const AND_MANIFEST_DIGEST: &str = " AND out_digest = ?";
}
