//! The error type of the checker: why a check could not be carried out (as opposed to the
//! differences it found, which are results, see [`crate::compare`]).

use std::io;

use obd_convert::ConvertError;

/// Why a check could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading an image from its store failed (not found, auth, bad JSON, I/O).
    #[error(transparent)]
    Store(#[from] ConvertError),
    /// A converted layer blob is not a readable overlaybd layer.
    #[error("{context}: {source}")]
    Format {
        context: String,
        #[source]
        source: obd_format::FormatError,
    },
    /// The converted filesystem could not be read.
    #[error("{context}: {source}")]
    Ext4 {
        context: String,
        #[source]
        source: obd_ext4::Error,
    },
    /// The converted EROFS fs-meta could not be read.
    #[error("{context}: {source}")]
    Erofs {
        context: String,
        #[source]
        source: obd_erofs::Error,
    },
    /// A source layer tar could not be read.
    #[error("{context}: {source}")]
    Tar {
        context: String,
        #[source]
        source: obd_tar::TarError,
    },
    /// Local I/O (the work directory) or a layer stream failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An image or layer is malformed in a way that prevents the check.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A platform, manifest or layer is missing.
    #[error("not found: {0}")]
    NotFound(String),
    /// The image uses something the checker cannot read, e.g. an unknown fs type.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub type Result<T, E = CheckError> = std::result::Result<T, E>;

impl CheckError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        CheckError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The engine's error classes, so command-line tools pick the same exit codes as for a
/// conversion.
impl From<CheckError> for ConvertError {
    fn from(e: CheckError) -> Self {
        let msg = e.to_string();
        match e {
            CheckError::Store(c) => c,
            CheckError::Format { source, .. } => match ConvertError::from(source) {
                ConvertError::Io { source, .. } => ConvertError::Io {
                    context: msg,
                    source,
                },
                ConvertError::Unsupported(_) => ConvertError::Unsupported(msg),
                _ => ConvertError::BadInput(msg),
            },
            CheckError::Ext4 { source, .. } => match source {
                obd_ext4::Error::Io(source) => ConvertError::Io {
                    context: msg,
                    source,
                },
                _ => ConvertError::BadInput(msg),
            },
            CheckError::Erofs { source, .. } => match source {
                obd_erofs::Error::Io(ioe) => io_class(msg, ioe),
                obd_erofs::Error::Unsupported(_) => ConvertError::Unsupported(msg),
                _ => ConvertError::BadInput(msg),
            },
            CheckError::Tar { source, .. } => match source {
                obd_tar::TarError::Io(ioe) => io_class(msg, ioe),
                _ => ConvertError::BadInput(msg),
            },
            CheckError::Io { source, .. } => io_class(msg, source),
            CheckError::BadInput(_) => ConvertError::BadInput(msg),
            CheckError::NotFound(_) => ConvertError::NotFound(msg),
            CheckError::Unsupported(_) => ConvertError::Unsupported(msg),
        }
    }
}

/// Corrupt streams and digest mismatches are bad input, the rest is I/O.
fn io_class(msg: String, e: io::Error) -> ConvertError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            ConvertError::BadInput(msg)
        }
        io::ErrorKind::NotFound => ConvertError::NotFound(msg),
        io::ErrorKind::PermissionDenied => ConvertError::Auth(msg),
        _ => ConvertError::Io {
            context: msg,
            source: e,
        },
    }
}
