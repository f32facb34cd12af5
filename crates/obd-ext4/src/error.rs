//! The crate's error type: one variant per way an operation can fail, so callers (the tar
//! applier) can tell a hostile image from a missing path from a full filesystem.

use thiserror::Error;

/// Everything that can go wrong in the ext4 engine.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying device failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// No ext2/3/4 magic number at byte 1080.
    #[error("not an ext2/3/4 filesystem (superblock magic {0:#06x})")]
    BadMagic(u16),
    /// The superblock is self-inconsistent or out of the supported range.
    #[error("invalid superblock: {0}")]
    BadSuperblock(String),
    /// A feature (or geometry) this engine does not implement.
    #[error("unsupported filesystem feature: {0}")]
    UnsupportedFeature(String),
    /// The journal holds transactions that were never replayed.
    #[error("the filesystem journal needs recovery")]
    NeedsRecovery,
    /// The device is smaller than the filesystem claims.
    #[error("device of {device} bytes is smaller than the filesystem ({fs} bytes)")]
    DeviceTooSmall { device: u64, fs: u64 },
    /// mkfs parameters that cannot produce a filesystem.
    #[error("cannot make a filesystem: {0}")]
    Mkfs(String),
    /// A block group descriptor is inconsistent.
    #[error("corrupt group descriptor {group}: {reason}")]
    BadGroupDesc { group: u32, reason: String },
    /// An inode's fields are inconsistent.
    #[error("corrupt inode {ino}: {reason}")]
    BadInode { ino: u32, reason: String },
    /// An extent tree (or block map) is malformed.
    #[error("corrupt block map of inode {ino}: {reason}")]
    BadExtentTree { ino: u32, reason: String },
    /// A directory block is malformed.
    #[error("corrupt directory inode {ino}: {reason}")]
    BadDirectory { ino: u32, reason: String },
    /// Extended attributes are malformed.
    #[error("corrupt extended attributes of inode {ino}: {reason}")]
    BadXattr { ino: u32, reason: String },
    /// An inode number outside `1..=s_inodes_count`.
    #[error("inode number {0} out of range")]
    InodeOutOfRange(u64),
    /// A path or name does not exist.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// The name is already taken in the directory.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A directory was required.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// A non-directory was required.
    #[error("is a directory: {0}")]
    IsADirectory(String),
    /// rmdir of a directory with entries.
    #[error("directory not empty: {0}")]
    DirectoryNotEmpty(String),
    /// Empty, `.`/`..`, or containing `/` or NUL.
    #[error("invalid file name {0:?}")]
    InvalidName(String),
    /// A name component longer than ext4 can store in a directory entry (`name` holds its
    /// first 40 bytes).
    #[error(
        "file name {name:?}... is {len} bytes: it exceeds ext4's 255-byte limit for one name \
         component"
    )]
    NameTooLong { name: String, len: usize },
    /// Path resolution followed too many symbolic links.
    #[error("too many levels of symbolic links resolving {0}")]
    SymlinkLoop(String),
    /// `i_links_count` would pass the ext4 limit.
    #[error("too many links to inode {0}")]
    TooManyLinks(u32),
    /// No free block left.
    #[error("no space left on the filesystem")]
    NoSpace,
    /// No free inode left.
    #[error("no free inodes left on the filesystem")]
    NoInodes,
    /// A file larger than ext4 extents can map.
    #[error("file too large: {0} bytes")]
    FileTooLarge(u64),
    /// A symlink target that is empty or not shorter than a block.
    #[error("invalid symlink target of {0} bytes")]
    InvalidSymlink(usize),
    /// An xattr name outside the supported namespaces.
    #[error("unsupported extended attribute name {0:?}")]
    InvalidXattrName(String),
    /// The xattrs of one inode do not fit in the inode plus one block.
    #[error("extended attributes of inode {ino} do not fit ({bytes} bytes)")]
    XattrTooLarge { ino: u32, bytes: usize },
    /// A directory needs more than two htree index levels.
    #[error("directory inode {0} is too large for a two-level htree")]
    DirectoryTooLarge(u32),
    /// A data source ended before the announced size.
    #[error("data source ended after {got} of {expected} bytes")]
    ShortRead { expected: u64, got: u64 },
    /// A caller-supplied value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result with the crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
