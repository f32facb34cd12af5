//! The crate's error type.

use std::io;

/// Why building or reading an EROFS image failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Tar(#[from] obd_tar::TarError),
    #[error("not an EROFS image: {0}")]
    NotErofs(String),
    #[error("unsupported EROFS image: {0}")]
    Unsupported(String),
    #[error("corrupt EROFS image: {0}")]
    Corrupt(String),
    #[error("entry {name:?} (tar byte {offset}): {detail}")]
    Entry {
        name: String,
        offset: u64,
        detail: String,
    },
    #[error("the device is full: {needed} blocks needed, {available} blocks in the device")]
    DeviceFull { needed: u64, available: u64 },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
