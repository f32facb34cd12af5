//! obd-ext4: a pure-Rust ext4 engine for building overlaybd layers.
//!
//! An [`Ext4`] handle works over any [`obd_format::io::BlockDevice`] (a virtual disk that
//! reads zeros where nothing was written). Each image layer is applied by opening the
//! filesystem over the stacked device, performing operations, and calling [`Ext4::flush`],
//! which writes each changed metadata block exactly once. File data is written as it streams
//! in, into extents chosen by a next-fit cursor; all-zero 4 KiB blocks stay holes.
//!
//! ```no_run
//! use obd_ext4::{Attrs, Ext4, MkfsOptions, Timestamp, ROOT_INO};
//! use obd_format::io::RawImage;
//! # fn main() -> obd_ext4::Result<()> {
//! let dev = RawImage::create("/tmp/img", 64 << 30)?;
//! let mut fs = Ext4::mkfs(dev, &MkfsOptions::default())?;
//! let attrs = Attrs::new(0o755, 0, 0, Timestamp::from_secs(1_700_000_000));
//! let etc = fs.mkdir(ROOT_INO, b"etc", &attrs)?;
//! let data = b"hello\n";
//! fs.create_file(etc, b"motd", &Attrs { perm: 0o644, ..attrs }, data.len() as u64, &mut &data[..])?;
//! fs.flush()?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`superblock`] (superblock, features, geometry), `group` (descriptors and
//! gdt_csum), `bitmap`, `inode` (inode fields, times, devices), `extent` (block maps),
//! `dir` (directory blocks and htree), `hash` (directory hashes), `xattr`, `mkfs`, `fs`
//! (state and allocators), `flush`, `ops` (the operations API).

#![forbid(unsafe_code)]

mod bitmap;
mod bytes;
mod crc16;
mod dir;
mod error;
mod extent;
mod flush;
mod fs;
mod group;
mod hash;
mod inode;
mod mkfs;
mod ops;
pub mod superblock;
mod xattr;

pub use dir::NAME_MAX;
pub use error::{Error, Result};
pub use fs::{DevMut, Ext4, FsStats};
pub use inode::{FileKind, Timestamp, ROOT_INO};
pub use mkfs::MkfsOptions;
pub use ops::{Attrs, BlockRun, DirEntry, Metadata};
