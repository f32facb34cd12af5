//! Errors of the conversion engine, grouped so the CLI can choose an exit code.

use std::io;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The source image, tag or a blob does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Authentication or authorisation failed.
    #[error("access denied: {0}")]
    Auth(String),
    /// The input image is malformed (bad JSON, digest mismatch, corrupt layer, bad tar).
    #[error("bad input: {0}")]
    BadInput(String),
    /// Local or network I/O failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The request cannot be served (unsupported media type, option, feature).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The registry or store refused an operation.
    #[error("store: {0}")]
    Store(String),
    /// Stopped by a signal.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

impl ConvertError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ConvertError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<obd_format::FormatError> for ConvertError {
    fn from(e: obd_format::FormatError) -> Self {
        use obd_format::FormatError as F;
        match e {
            F::Io { context, source } => ConvertError::Io { context, source },
            F::Invalid(s) => ConvertError::Unsupported(s),
            other => ConvertError::BadInput(other.to_string()),
        }
    }
}

impl From<obd_ext4::Error> for ConvertError {
    fn from(e: obd_ext4::Error) -> Self {
        match e {
            obd_ext4::Error::Io(source) => ConvertError::Io {
                context: "filesystem device".into(),
                source,
            },
            other => ConvertError::BadInput(format!("filesystem: {other}")),
        }
    }
}

impl From<obd_tar::ApplyError> for ConvertError {
    fn from(e: obd_tar::ApplyError) -> Self {
        // Keep the OS error (a full work directory is "No space left on device", exit 6),
        // and call only a fault of the layer itself bad input.
        let ctx = match &e {
            obd_tar::ApplyError::Entry { name, offset, .. } => {
                format!("applying entry {name:?} (tar byte {offset})")
            }
            _ => "reading the layer".into(),
        };
        match e.into_io() {
            Ok(source) => ConvertError::Io {
                context: ctx,
                source,
            },
            Err(other) => ConvertError::BadInput(other.to_string()),
        }
    }
}
