//! The on-disk inode: raw bytes with typed accessors, file modes and kinds, timestamps with
//! nanoseconds and epoch bits, and device number encodings.

use crate::bytes::{le16, le32, put16, put32};
use crate::error::{Error, Result};

/// Inode number of the root directory.
pub const ROOT_INO: u32 = 2;
pub(crate) const RESIZE_INO: u32 = 7;
pub(crate) const LOST_FOUND_INO: u32 = 11;

pub(crate) const S_IFMT: u16 = 0xF000;
pub(crate) const S_IFIFO: u16 = 0x1000;
pub(crate) const S_IFCHR: u16 = 0x2000;
pub(crate) const S_IFDIR: u16 = 0x4000;
pub(crate) const S_IFBLK: u16 = 0x6000;
pub(crate) const S_IFREG: u16 = 0x8000;
pub(crate) const S_IFLNK: u16 = 0xA000;
pub(crate) const S_IFSOCK: u16 = 0xC000;

pub(crate) const FL_INDEX: u32 = 0x1000;
pub(crate) const FL_HUGE_FILE: u32 = 0x40000;
pub(crate) const FL_EXTENTS: u32 = 0x80000;

/// Size of the fixed inode fields after the 128-byte base that this engine writes.
pub(crate) const EXTRA_ISIZE: u16 = 32;
/// Largest `i_links_count` ext4 allows.
pub(crate) const LINK_MAX: u32 = 65000;

const I_MODE: usize = 0x00;
const I_UID: usize = 0x02;
const I_SIZE_LO: usize = 0x04;
const I_ATIME: usize = 0x08;
const I_CTIME: usize = 0x0C;
const I_MTIME: usize = 0x10;
const I_GID: usize = 0x18;
const I_LINKS: usize = 0x1A;
const I_BLOCKS_LO: usize = 0x1C;
const I_FLAGS: usize = 0x20;
pub(crate) const I_BLOCK: usize = 0x28;
pub(crate) const I_BLOCK_LEN: usize = 60;
const I_FILE_ACL_LO: usize = 0x68;
const I_SIZE_HIGH: usize = 0x6C;
const I_BLOCKS_HIGH: usize = 0x74;
const I_FILE_ACL_HIGH: usize = 0x76;
const I_UID_HIGH: usize = 0x78;
const I_GID_HIGH: usize = 0x7A;
pub(crate) const I_EXTRA_ISIZE: usize = 0x80;
const I_CTIME_EXTRA: usize = 0x84;
const I_MTIME_EXTRA: usize = 0x88;
const I_ATIME_EXTRA: usize = 0x8C;

/// The type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    pub(crate) fn from_mode(mode: u16) -> Option<Self> {
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::Regular,
            S_IFDIR => FileKind::Directory,
            S_IFLNK => FileKind::Symlink,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }
    pub(crate) fn mode_bits(self) -> u16 {
        match self {
            FileKind::Regular => S_IFREG,
            FileKind::Directory => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
            FileKind::CharDevice => S_IFCHR,
            FileKind::BlockDevice => S_IFBLK,
            FileKind::Fifo => S_IFIFO,
            FileKind::Socket => S_IFSOCK,
        }
    }
    /// The directory-entry file type byte.
    pub(crate) fn dirent_type(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::CharDevice => 3,
            FileKind::BlockDevice => 4,
            FileKind::Fifo => 5,
            FileKind::Socket => 6,
            FileKind::Symlink => 7,
        }
    }
    pub(crate) fn from_dirent_type(t: u8) -> Option<Self> {
        Some(match t {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::CharDevice,
            4 => FileKind::BlockDevice,
            5 => FileKind::Fifo,
            6 => FileKind::Socket,
            7 => FileKind::Symlink,
            _ => return None,
        })
    }
}

/// A point in time with nanoseconds. ext4 stores seconds from 1901-12-13 to 2446-05-10.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

impl Timestamp {
    pub const MIN_SECS: i64 = -(1 << 31);
    pub const MAX_SECS: i64 = (1 << 34) - (1 << 31) - 1;

    /// Whole seconds, no nanoseconds.
    pub fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    pub(crate) fn check(self) -> Result<()> {
        if self.nanos >= 1_000_000_000 || !(Self::MIN_SECS..=Self::MAX_SECS).contains(&self.secs) {
            return Err(Error::InvalidArgument(format!(
                "timestamp {self:?} out of range"
            )));
        }
        Ok(())
    }

    /// `(i_xtime, i_xtime_extra)`: the low 32 bits of the seconds, and the epoch bits plus
    /// nanoseconds.
    pub(crate) fn encode(self) -> (u32, u32) {
        let lo = self.secs as u32;
        let epoch = ((self.secs - i64::from(lo as i32)) >> 32) as u32 & 3;
        (lo, epoch | (self.nanos << 2))
    }

    pub(crate) fn decode(lo: u32, extra: u32) -> Self {
        Timestamp {
            secs: i64::from(lo as i32) + (i64::from(extra & 3) << 32),
            nanos: (extra >> 2).min(999_999_999),
        }
    }
}

/// Encodes a device number as ext4 does: `(old, new)` for `i_block[0]` and `i_block[1]`.
pub(crate) fn encode_dev(major: u32, minor: u32) -> (u32, u32) {
    if major < 256 && minor < 256 {
        ((major << 8) | minor, 0)
    } else {
        (
            0,
            (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12),
        )
    }
}

pub(crate) fn decode_dev(old: u32, new: u32) -> (u32, u32) {
    if old != 0 {
        ((old >> 8) & 0xff, old & 0xff)
    } else {
        ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
    }
}

/// One inode's raw bytes (`s_inode_size` long).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub raw: Vec<u8>,
}

impl Inode {
    pub fn zeroed(size: usize) -> Self {
        Inode { raw: vec![0; size] }
    }

    /// A fresh in-use inode: mode, one link, `i_extra_isize` set, everything else zero.
    pub fn new(size: usize, mode: u16) -> Self {
        let mut i = Inode::zeroed(size);
        i.set_mode(mode);
        i.set_links(1);
        put16(&mut i.raw, I_EXTRA_ISIZE, EXTRA_ISIZE);
        i
    }

    pub fn mode(&self) -> u16 {
        le16(&self.raw, I_MODE)
    }
    pub fn set_mode(&mut self, m: u16) {
        put16(&mut self.raw, I_MODE, m)
    }
    pub fn kind(&self) -> Option<FileKind> {
        FileKind::from_mode(self.mode())
    }
    pub fn is_dir(&self) -> bool {
        self.mode() & S_IFMT == S_IFDIR
    }
    pub fn uid(&self) -> u32 {
        u32::from(le16(&self.raw, I_UID)) | (u32::from(le16(&self.raw, I_UID_HIGH)) << 16)
    }
    pub fn gid(&self) -> u32 {
        u32::from(le16(&self.raw, I_GID)) | (u32::from(le16(&self.raw, I_GID_HIGH)) << 16)
    }
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        put16(&mut self.raw, I_UID, uid as u16);
        put16(&mut self.raw, I_UID_HIGH, (uid >> 16) as u16);
        put16(&mut self.raw, I_GID, gid as u16);
        put16(&mut self.raw, I_GID_HIGH, (gid >> 16) as u16);
    }
    pub fn size(&self) -> u64 {
        u64::from(le32(&self.raw, I_SIZE_LO)) | (u64::from(le32(&self.raw, I_SIZE_HIGH)) << 32)
    }
    pub fn set_size(&mut self, s: u64) {
        put32(&mut self.raw, I_SIZE_LO, s as u32);
        put32(&mut self.raw, I_SIZE_HIGH, (s >> 32) as u32);
    }
    pub fn links(&self) -> u32 {
        u32::from(le16(&self.raw, I_LINKS))
    }
    pub fn set_links(&mut self, n: u32) {
        put16(&mut self.raw, I_LINKS, n.min(0xFFFF) as u16)
    }
    pub fn flags(&self) -> u32 {
        le32(&self.raw, I_FLAGS)
    }
    pub fn set_flags(&mut self, f: u32) {
        put32(&mut self.raw, I_FLAGS, f)
    }
    /// `i_blocks` in 512-byte sectors (honouring HUGE_FILE_FL).
    pub fn sectors(&self, block_size: u64) -> u64 {
        let raw = u64::from(le32(&self.raw, I_BLOCKS_LO))
            | (u64::from(le16(&self.raw, I_BLOCKS_HIGH)) << 32);
        if self.flags() & FL_HUGE_FILE != 0 {
            raw.saturating_mul(block_size / 512)
        } else {
            raw
        }
    }
    /// Sets `i_blocks` from a count of 512-byte sectors.
    pub fn set_sectors(&mut self, n: u64) {
        self.set_flags(self.flags() & !FL_HUGE_FILE);
        put32(&mut self.raw, I_BLOCKS_LO, n as u32);
        put16(&mut self.raw, I_BLOCKS_HIGH, (n >> 32) as u16);
    }
    pub fn file_acl(&self) -> u64 {
        u64::from(le32(&self.raw, I_FILE_ACL_LO))
            | (u64::from(le16(&self.raw, I_FILE_ACL_HIGH)) << 32)
    }
    pub fn set_file_acl(&mut self, b: u64) {
        put32(&mut self.raw, I_FILE_ACL_LO, b as u32);
        put16(&mut self.raw, I_FILE_ACL_HIGH, (b >> 32) as u16);
    }
    pub fn i_block(&self) -> &[u8] {
        &self.raw[I_BLOCK..I_BLOCK + I_BLOCK_LEN]
    }
    pub fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.raw[I_BLOCK..I_BLOCK + I_BLOCK_LEN]
    }
    pub fn extra_isize(&self) -> usize {
        if self.raw.len() > 128 {
            usize::from(le16(&self.raw, I_EXTRA_ISIZE))
        } else {
            0
        }
    }
    fn has_extra(&self, field_end: usize) -> bool {
        128 + self.extra_isize() >= field_end
    }
    pub fn atime(&self) -> Timestamp {
        self.time(I_ATIME, I_ATIME_EXTRA)
    }
    pub fn mtime(&self) -> Timestamp {
        self.time(I_MTIME, I_MTIME_EXTRA)
    }
    pub fn ctime(&self) -> Timestamp {
        self.time(I_CTIME, I_CTIME_EXTRA)
    }
    fn time(&self, off: usize, extra: usize) -> Timestamp {
        let lo = le32(&self.raw, off);
        if self.has_extra(extra + 4) {
            Timestamp::decode(lo, le32(&self.raw, extra))
        } else {
            Timestamp::from_secs(i64::from(lo as i32))
        }
    }
    pub fn set_times(&mut self, atime: Timestamp, mtime: Timestamp, ctime: Timestamp) {
        for (t, off, extra) in [
            (atime, I_ATIME, I_ATIME_EXTRA),
            (mtime, I_MTIME, I_MTIME_EXTRA),
            (ctime, I_CTIME, I_CTIME_EXTRA),
        ] {
            let (lo, ex) = t.encode();
            put32(&mut self.raw, off, lo);
            if self.has_extra(extra + 4) {
                put32(&mut self.raw, extra, ex);
            }
        }
    }
    pub fn i_block_word(&self, i: usize) -> u32 {
        le32(&self.raw, I_BLOCK + 4 * i)
    }
    pub fn set_i_block_word(&mut self, i: usize, v: u32) {
        put32(&mut self.raw, I_BLOCK + 4 * i, v)
    }
    /// Start of the in-inode xattr area, if the inode has room for one.
    pub fn xattr_area(&self) -> Option<usize> {
        let start = 128 + self.extra_isize();
        (self.raw.len() > 128 && start % 4 == 0 && start + 8 <= self.raw.len()).then_some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding() {
        for t in [
            Timestamp {
                secs: -1_000_000,
                nanos: 123_456_789,
            },
            Timestamp {
                secs: 2_208_988_800,
                nanos: 987_654_321,
            },
            Timestamp { secs: 0, nanos: 0 },
            Timestamp {
                secs: Timestamp::MIN_SECS,
                nanos: 1,
            },
            Timestamp {
                secs: Timestamp::MAX_SECS,
                nanos: 999_999_999,
            },
        ] {
            let (lo, ex) = t.encode();
            assert_eq!(Timestamp::decode(lo, ex), t);
        }
        // Kernel encoding: pre-1970 keeps epoch bits 0.
        assert_eq!(Timestamp::from_secs(-1).encode().1 & 3, 0);
        assert_eq!(Timestamp::from_secs(1 << 31).encode().1 & 3, 1);
    }

    #[test]
    fn devices() {
        assert_eq!(encode_dev(8, 1), (0x801, 0));
        for (ma, mi) in [(8, 1), (259, 3), (1, 300), (4095, 0xfffff)] {
            let (o, n) = encode_dev(ma, mi);
            assert_eq!(decode_dev(o, n), (ma, mi));
        }
    }

    #[test]
    fn owner_and_size() {
        let mut i = Inode::new(256, S_IFREG | 0o644);
        i.set_owner(u32::MAX, 0x1234_5678);
        i.set_size(5 << 30);
        assert_eq!(i.uid(), u32::MAX);
        assert_eq!(i.gid(), 0x1234_5678);
        assert_eq!(i.size(), 5 << 30);
        i.set_sectors(1 << 33);
        assert_eq!(i.sectors(4096), 1 << 33);
    }
}
