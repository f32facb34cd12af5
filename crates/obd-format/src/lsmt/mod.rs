//! LSMT: overlaybd's log-structured block layer format.
//!
//! * [`header`]: the 4096-byte header/trailer block and its flags.
//! * [`segment`]: the 16-byte index entry (`SegmentMapping`).
//! * [`index`]: lookups, gap-filling merges of layer indexes, the writable in-memory index
//!   with overwrite semantics, and the greedy index compression used by commits.
//! * [`ro`]: the committed read-only layer reader.
//! * [`rw`]: writable layers (append-only data+index files, or sparse data files).
//! * [`commit`](mod@commit): compaction of a layer's mappings into a committed read-only layer.
//! * [`stream`]: a writable layer that commits while it is written (file data streams
//!   straight into the compressed output; metadata is kept aside for later layers).
//! * [`stack`]: a virtual block device over lowers (bottom → top) and an optional upper.
//! * [`warp`]: the TurboOCI warp writable layer (fs-meta image + remote mappings into the
//!   original tar) and its commit.
//! * `writable` (private): what the writable layers share: opening their files, the
//!   append-only index file, and how device writes and discards become index entries.

pub mod commit;
pub mod header;
pub mod index;
pub mod ro;
pub mod rw;
pub mod segment;
pub mod stack;
pub mod stream;
pub mod warp;
pub mod warp_stack;
mod writable;

pub use commit::{commit, commit_warp, CommitOptions};
pub use header::{HeaderTrailer, HT_SPACE};
pub use ro::LsmtRo;
pub use rw::{RwKind, RwLayer};
pub use segment::Segment;
pub use stack::Stack;
pub use stream::{StreamLayer, StreamStack};
pub use warp::WarpLayer;
pub use warp_stack::WarpStack;

/// Bytes per sector: every LSMT offset and length is a multiple of this.
pub const SECTOR: u64 = 512;
/// Longest entry, in sectors.
pub const MAX_LENGTH: u32 = 16383;
/// Longest single write mapping, in sectors (writes over 4 MiB are split).
pub const MAX_IO_SECTORS: u32 = 8192;
/// Readers refuse committed layers with more index entries than this.
pub const MAX_RO_INDEX_SIZE: u64 = 1_000_000;
/// Readers refuse writable index files with more records than this.
pub const MAX_RW_INDEX_SIZE: u64 = 128_000_000;
/// Most layers a stack may hold.
pub const MAX_LAYERS: usize = 255;
