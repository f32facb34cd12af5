//! obd-tar: reading OCI layer tars.
//!
//! * [`decompress`]: detects gzip / zstd / plain streams by their magic and decompresses.
//! * [`reader`]: a strict streaming tar reader (ustar, GNU long names and sparse members,
//!   PAX records incl. xattrs, times with fractions, 64-bit ids and sizes, PAX sparse).
//! * [`path`]: path normalisation that can never leave the image root.
//! * [`apply`]: applies a layer onto an ext4 filesystem with OCI semantics (whiteouts,
//!   opaque directories, hard links, last entry wins).
//! * [`remote`]: applies a whole layer blob metadata only (TurboOCI), building the gzip
//!   index of a gzip layer while it streams.
//! * `testutil` (feature `testutil`): raw tar bytes for tests, header by header.

pub mod apply;
pub mod decompress;
pub mod path;
pub mod reader;
pub mod remote;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use apply::{
    apply_layer, apply_tar, apply_tar_remote, ApplyError, ApplyStats, HashReader, RemoteMap,
};
pub use reader::{Entry, EntryKind, TarError, TarReader, Timestamp};
pub use remote::{
    apply_layer_remote, read_turbo_layer, RemoteApplyError, RemoteApplyStats, TurboStream,
    TurboStreamError,
};
