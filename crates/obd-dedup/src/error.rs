//! The crate's error type and the helper that keeps secrets out of error text.
//!
//! Driver errors are stored as already-redacted strings, never as the driver's error value,
//! so neither `Display` nor `Debug` of an [`Error`] can reach a password.

use crate::dsn::DsnError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with the dedup database.
///
/// For the convertor every variant means the same thing: warn and convert without dedup
/// (for [`crate::open`]) or treat the lookup as a miss (for a lookup). The variants exist so
/// the message can say why and tests can check the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--db-type` is not one this build knows.
    #[error("unknown dedup database type {0:?} (known: mysql, sqlite)")]
    UnknownDbType(String),
    /// `--db-str` is not a valid MySQL DSN.
    #[error("invalid MySQL DSN: {0}")]
    Dsn(#[from] DsnError),
    /// The database could not be reached, refused the credentials, or does not exist.
    /// `target` is the redacted DSN (or the SQLite path).
    #[error("dedup database {target} is unavailable: {reason}")]
    Unavailable {
        /// Where we tried to connect (no password).
        target: String,
        /// The driver's reason, with any occurrence of the password replaced.
        reason: String,
    },
    /// The schema could not be brought to [`crate::schema::LATEST_VERSION`].
    #[error("dedup database schema migration failed: {0}")]
    Migration(String),
    /// The database was migrated by a newer obdconv; we do not write to it.
    #[error("dedup database schema version {found} is newer than this obdconv knows ({known})")]
    SchemaTooNew {
        /// Version found in the database.
        found: u32,
        /// Newest version this build knows.
        known: u32,
    },
    /// A key or entry field is empty, too long or otherwise unusable.
    #[error("invalid dedup record: {0}")]
    InvalidRecord(String),
    /// A query failed after the database was opened.
    #[error("dedup database query failed: {0}")]
    Query(String),
}

impl Error {
    /// Is this "the database is not there" (as opposed to a bad argument or a bad schema)?
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Replaces every occurrence of `secret` in `text` with `***`. An empty secret changes
/// nothing.
pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_all() {
        assert_eq!(redact("a pw b pw", Some("pw")), "a *** b ***");
        assert_eq!(redact("a pw", Some("")), "a pw");
        assert_eq!(redact("a pw", None), "a pw");
    }
}
