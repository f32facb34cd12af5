//! The error type shared by every format reader and writer in this crate.

use std::io;

/// Errors from parsing or writing overlaybd formats.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An I/O error from the underlying file, with what we were doing.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The bytes do not have the expected magic number / structure.
    #[error("not a {what}: {detail}")]
    BadMagic { what: &'static str, detail: String },
    /// The structure is recognised but a field is inconsistent or out of range.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A checksum did not match.
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        what: String,
        stored: u32,
        computed: u32,
    },
    /// The caller asked for something invalid (unaligned I/O, bad option).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

impl FormatError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        FormatError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Corrupt {
            what,
            detail: detail.into(),
        }
    }
    pub(crate) fn magic(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::BadMagic {
            what,
            detail: detail.into(),
        }
    }
}

impl From<FormatError> for io::Error {
    fn from(e: FormatError) -> io::Error {
        match e {
            FormatError::Io { source, .. } => source,
            FormatError::Invalid(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
