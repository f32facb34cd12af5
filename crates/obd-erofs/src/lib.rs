//! obd-erofs: the EROFS fs-meta of TurboOCIv1 layers (`--fstype erofs`).
//!
//! Each layer's build produces an **uncompressed EROFS image** (4 KiB blocks, superblock at
//! byte 1024) on a virtual block device: the metadata blocks are written to the device
//! (tag-0 data of the warp layer) and each regular file's data is a contiguous block range
//! that is *not* written but reported as a mapping `(device offset, length, tar offset)`
//! into the layer's uncompressed tar (RemoteData). Later layers re-read the image through
//! the stacked device, apply their tar with OCI semantics (whiteouts resolved, never
//! stored) and write only the metadata they change: changed inodes and directory blocks
//! are rewritten in place where they fit (the stacked device records just those blocks in
//! the new layer), new or relocated ones are appended at free addresses, and block 0 (the
//! superblock) is rewritten if it changed. Unchanged inodes keep their nids and blocks;
//! files of lower layers keep their data addresses, which lower layers already map.
//!
//! ```no_run
//! # fn main() -> obd_erofs::Result<()> {
//! use obd_format::io::RawImage;
//! use obd_erofs::ErofsBuilder;
//! let mut dev = RawImage::create("/tmp/fsmeta.raw", 64 << 30)?;
//! for (i, tar) in [&b""[..], &b""[..]].into_iter().enumerate() {
//!     let mut b = if i == 0 {
//!         ErofsBuilder::new_first_layer(&mut dev, [0; 16])?
//!     } else {
//!         ErofsBuilder::open(&mut dev)? // reads the image the lower layers left
//!     };
//!     let mut remote = |dev_off: u64, len: u64, tar_off: u64| -> std::io::Result<()> {
//!         // e.g. LSMT warp RemoteData {offset: dev_off, count: len, roffset: tar_off}
//!         Ok(())
//!     };
//!     let _layer = b.apply_tar(tar, &mut remote)?;
//!     let stats = b.finish()?; // metadata blocks + superblock written to `dev`
//!     println!("layer {i}: {} bytes of fs-meta", stats.meta_bytes());
//! }
//! # Ok(()) }
//! ```
//!
//! A layer's fs-meta is thus proportional to what it changes, not to the image: adding one
//! file to a large tree writes a few blocks. When an update would write more blocks than
//! laying the whole tree out afresh (or the root would need a nid past 65535), the layer
//! writes a fresh metadata area instead, as the first layer does. Output depends only on
//! the input: the same layers give the same bytes.
//!
//! * [`format`](mod@format): the on-disk structures (superblock, inodes, dirents, xattrs).
//! * [`tree`]: the in-memory merged tree and the OCI layer semantics applied to it.
//! * [`reader`]: loads an existing image into a tree (keeping how each inode is stored);
//!   lists an image for inspection.
//! * [`writer`]: lays a whole tree out as EROFS metadata (first layer, full rewrites).
//! * `update`: plans a later layer's changes against the stored image (in-place
//!   rewrites, relocations, appended inodes and blocks); `patch`: the changed blocks.
//! * [`builder`]: [`ErofsBuilder`], the per-layer API.

pub mod builder;
pub mod error;
pub mod format;
mod patch;
pub mod reader;
pub mod tree;
mod update;
pub mod writer;

pub use builder::{ErofsBuilder, LayerStats, Stats};
pub use error::{Error, Result};
pub use reader::{list_image, ImageEntry};
pub use tree::Kind;
