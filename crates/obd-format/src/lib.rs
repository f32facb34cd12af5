//! obd-format: the on-disk formats of overlaybd block layers.
//!
//! * [`lsmt`]: the LSMT layer format (read-only committed layers, writable data+index
//!   layers, compaction into a committed layer, and stacks of layers).
//! * [`zfile`]: the ZFile block-compressed container (LZ4 / zstd, per-block CRC32C).
//! * [`tarwrap`]: the single-member tar wrapper that `overlaybd-commit -t` puts around a blob.
//! * [`detect`]: opens any layer file whatever its wrapping, and describes it.
//! * [`config`]: the overlaybd image config JSON (`lowers[]`, `upper`).
//! * [`gzindex`]: the TurboOCIv1 gzip random-access index (`gzip.meta`): built while
//!   decompressing, and read through as a random-access view of the gzip blob.
//!
//! All integers on disk are little-endian; "sector" means 512 bytes.

pub mod config;
pub mod crc;
pub mod detect;
pub mod error;
pub mod gzindex;
pub mod io;
pub mod lsmt;
pub mod output;
pub mod tarwrap;
pub mod uuid;
pub mod zfile;

pub use error::{FormatError, Result};
pub use io::ReadAt;
