//! EROFS on-disk structures, as far as this crate writes and reads them: the superblock,
//! compact (32-byte) and extended (64-byte) inodes, directory entries and inline xattr
//! bodies. Layouts follow the kernel's `fs/erofs/erofs_fs.h` (all little-endian).

use crate::error::{Error, Result};

/// Block size (log2 and bytes); the only one this crate writes.
pub const BLKBITS: u8 = 12;
pub const BLKSZ: u64 = 1 << BLKBITS;
/// Byte offset of the superblock.
pub const SUPER_OFFSET: u64 = 1024;
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// Inode slots are 32 bytes: `nid = (offset - meta_blkaddr * BLKSZ) / 32`.
pub const ISLOT: u64 = 32;
pub const COMPACT_SIZE: usize = 32;
pub const EXTENDED_SIZE: usize = 64;
pub const DIRENT_SIZE: usize = 12;
pub const XATTR_HDR_SIZE: usize = 12;

/// `i_format` data layouts.
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_FLAT_INLINE: u16 = 2;

/// File types of `i_mode` (`S_IF*`).
pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

/// Directory entry file types (`FT_*`).
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_LNK: u8 = 7;

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// The fields of the 128-byte superblock this crate uses (the rest are zero).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuperBlock {
    pub feature_compat: u32,
    pub blkszbits: u8,
    pub sb_extslots: u8,
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub build_time_nsec: u32,
    /// Total blocks: every block this image or its data uses lies below it.
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: u32,
    pub extra_devices: u16,
    pub xattr_prefix_count: u8,
}

impl SuperBlock {
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 8, self.feature_compat);
        b[12] = self.blkszbits;
        b[13] = self.sb_extslots;
        put16(&mut b, 14, self.root_nid);
        put64(&mut b, 16, self.inos);
        put64(&mut b, 24, self.build_time);
        put32(&mut b, 32, self.build_time_nsec);
        put32(&mut b, 36, self.blocks);
        put32(&mut b, 40, self.meta_blkaddr);
        put32(&mut b, 44, self.xattr_blkaddr);
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        put32(&mut b, 80, self.feature_incompat);
        put16(&mut b, 86, self.extra_devices);
        b[91] = self.xattr_prefix_count;
        b
    }

    pub fn decode(b: &[u8]) -> Result<SuperBlock> {
        if b.len() < 128 || le32(b, 0) != MAGIC {
            return Err(Error::NotErofs(format!(
                "no EROFS magic at byte {SUPER_OFFSET}"
            )));
        }
        Ok(SuperBlock {
            feature_compat: le32(b, 8),
            blkszbits: b[12],
            sb_extslots: b[13],
            root_nid: le16(b, 14),
            inos: le64(b, 16),
            build_time: le64(b, 24),
            build_time_nsec: le32(b, 32),
            blocks: le32(b, 36),
            meta_blkaddr: le32(b, 40),
            xattr_blkaddr: le32(b, 44),
            uuid: b[48..64].try_into().expect("16 bytes"),
            volume_name: b[64..80].try_into().expect("16 bytes"),
            feature_incompat: le32(b, 80),
            extra_devices: le16(b, 86),
            xattr_prefix_count: b[91],
        })
    }
}

/// An inode in either on-disk form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskInode {
    pub extended: bool,
    pub layout: u16,
    /// Number of 4-byte xattr slots (`i_xattr_icount`).
    pub xattr_icount: u16,
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// `raw_blkaddr` or `rdev`, depending on the type.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    /// Only stored in extended inodes; compact ones take the superblock's build time.
    pub mtime: u64,
    pub mtime_nsec: u32,
}

impl DiskInode {
    pub fn isize(&self) -> usize {
        if self.extended {
            EXTENDED_SIZE
        } else {
            COMPACT_SIZE
        }
    }

    /// Bytes of the inline xattr body that follows the inode.
    pub fn xattr_size(&self) -> usize {
        xattr_ibody_size(self.xattr_icount)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.isize(), 0);
        let b = &mut out[start..];
        put16(b, 0, u16::from(self.extended) | (self.layout << 1));
        put16(b, 2, self.xattr_icount);
        put16(b, 4, self.mode);
        if self.extended {
            put64(b, 8, self.size);
            put32(b, 16, self.i_u);
            put32(b, 20, self.ino);
            put32(b, 24, self.uid);
            put32(b, 28, self.gid);
            put64(b, 32, self.mtime);
            put32(b, 40, self.mtime_nsec);
            put32(b, 44, self.nlink);
        } else {
            put16(b, 6, self.nlink as u16);
            put32(b, 8, self.size as u32);
            put32(b, 16, self.i_u);
            put32(b, 20, self.ino);
            put16(b, 24, self.uid as u16);
            put16(b, 26, self.gid as u16);
        }
    }

    /// Decodes an inode from `b`, which must hold at least 64 bytes, or 32 for a compact
    /// one. Compact inodes get `build_time` as their mtime.
    pub fn decode(b: &[u8], build_time: u64, build_nsec: u32) -> Result<DiskInode> {
        if b.len() < COMPACT_SIZE {
            return Err(Error::Corrupt("inode past the end of the device".into()));
        }
        let format = le16(b, 0);
        let extended = format & 1 == 1;
        if format >> 4 != 0 {
            return Err(Error::Unsupported(format!("inode format bits {format:#x}")));
        }
        let layout = (format >> 1) & 7;
        if extended {
            if b.len() < EXTENDED_SIZE {
                return Err(Error::Corrupt("inode past the end of the device".into()));
            }
            Ok(DiskInode {
                extended,
                layout,
                xattr_icount: le16(b, 2),
                mode: le16(b, 4),
                size: le64(b, 8),
                i_u: le32(b, 16),
                ino: le32(b, 20),
                uid: le32(b, 24),
                gid: le32(b, 28),
                mtime: le64(b, 32),
                mtime_nsec: le32(b, 40),
                nlink: le32(b, 44),
            })
        } else {
            Ok(DiskInode {
                extended,
                layout,
                xattr_icount: le16(b, 2),
                mode: le16(b, 4),
                nlink: u32::from(le16(b, 6)),
                size: u64::from(le32(b, 8)),
                i_u: le32(b, 16),
                ino: le32(b, 20),
                uid: u32::from(le16(b, 24)),
                gid: u32::from(le16(b, 26)),
                mtime: build_time,
                mtime_nsec: build_nsec,
            })
        }
    }
}

/// Size of the inline xattr body for an `i_xattr_icount`.
pub fn xattr_ibody_size(icount: u16) -> usize {
    if icount == 0 {
        0
    } else {
        XATTR_HDR_SIZE + 4 * (usize::from(icount) - 1)
    }
}

/// Name prefixes with a short index; the empty-suffix ACL names come first so that the
/// longest prefix wins.
pub const XATTR_PREFIXES: &[(u8, &[u8])] = &[
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (1, b"user."),
    (4, b"trusted."),
    (5, b"lustre."),
    (6, b"security."),
];

/// Splits a full xattr name into (index, suffix); `None` if EROFS cannot store it.
pub fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    for &(idx, p) in XATTR_PREFIXES {
        if let Some(rest) = name.strip_prefix(p) {
            if (idx == 2 || idx == 3) && !rest.is_empty() {
                continue;
            }
            if (idx != 2 && idx != 3) && rest.is_empty() {
                return None;
            }
            if rest.len() > 255 {
                return None;
            }
            return Some((idx, rest));
        }
    }
    None
}

/// The prefix of a short name index.
pub fn xattr_prefix(idx: u8) -> Option<&'static [u8]> {
    XATTR_PREFIXES
        .iter()
        .find(|(i, _)| *i == idx)
        .map(|(_, p)| *p)
}

/// Encodes an inline xattr body (header + entries), or nothing if there are no xattrs.
/// Names must be storable ([`split_xattr_name`]) and values at most 65535 bytes.
pub fn encode_xattrs<'a>(xattrs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> (u16, Vec<u8>) {
    let mut body = Vec::new();
    for (name, value) in xattrs {
        let Some((idx, suffix)) = split_xattr_name(name) else {
            continue;
        };
        body.push(suffix.len() as u8);
        body.push(idx);
        body.extend_from_slice(&(value.len() as u16).to_le_bytes());
        body.extend_from_slice(suffix);
        body.extend_from_slice(value);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    if body.is_empty() {
        return (0, body);
    }
    let mut out = vec![0u8; XATTR_HDR_SIZE];
    out.extend_from_slice(&body);
    let icount = (out.len() - XATTR_HDR_SIZE) / 4 + 1;
    (icount as u16, out)
}

/// One directory entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirent {
    pub nid: u64,
    pub file_type: u8,
    pub name: Vec<u8>,
}

/// Encodes one directory block (entries sorted by name) into `out` (not padded).
pub fn encode_dir_block(entries: &[Dirent], out: &mut Vec<u8>) {
    let start = out.len();
    let mut nameoff = entries.len() * DIRENT_SIZE;
    for e in entries {
        out.extend_from_slice(&e.nid.to_le_bytes());
        out.extend_from_slice(&(nameoff as u16).to_le_bytes());
        out.push(e.file_type);
        out.push(0);
        nameoff += e.name.len();
    }
    for e in entries {
        out.extend_from_slice(&e.name);
    }
    debug_assert!(out.len() - start <= BLKSZ as usize);
}

/// Decodes one directory block of `b.len()` used bytes.
pub fn decode_dir_block(b: &[u8]) -> Result<Vec<Dirent>> {
    let bad = |d: &str| Error::Corrupt(format!("directory block: {d}"));
    if b.len() < DIRENT_SIZE {
        return Err(bad("shorter than one entry"));
    }
    let first = usize::from(le16(b, 8));
    if first % DIRENT_SIZE != 0 || first == 0 || first > b.len() {
        return Err(bad("bad first name offset"));
    }
    let n = first / DIRENT_SIZE;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let o = i * DIRENT_SIZE;
        let nameoff = usize::from(le16(b, o + 8));
        let end = if i + 1 < n {
            usize::from(le16(b, o + DIRENT_SIZE + 8))
        } else {
            let tail = &b[nameoff.min(b.len())..];
            nameoff + tail.iter().position(|&c| c == 0).unwrap_or(tail.len())
        };
        if nameoff > end || end > b.len() || end - nameoff > 255 || end == nameoff {
            return Err(bad("bad name bounds"));
        }
        out.push(Dirent {
            nid: le64(b, o),
            file_type: b[o + 10],
            name: b[nameoff..end].to_vec(),
        });
    }
    Ok(out)
}

/// Linux `new_encode_dev`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Linux `new_decode_dev`: (major, minor).
pub fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips() {
        let sb = SuperBlock {
            blkszbits: BLKBITS,
            root_nid: 7,
            inos: 9,
            build_time: 123,
            blocks: 99,
            meta_blkaddr: 3,
            uuid: [5; 16],
            ..Default::default()
        };
        assert_eq!(SuperBlock::decode(&sb.encode()).unwrap(), sb);
        for extended in [false, true] {
            let i = DiskInode {
                extended,
                layout: LAYOUT_FLAT_INLINE,
                xattr_icount: 4,
                mode: S_IFREG | 0o644,
                nlink: 2,
                size: 5000,
                i_u: 77,
                ino: 3,
                uid: 1000,
                gid: 100,
                mtime: 42,
                mtime_nsec: if extended { 9 } else { 0 },
            };
            let mut b = Vec::new();
            i.encode(&mut b);
            b.resize(64, 0);
            assert_eq!(DiskInode::decode(&b, 42, 0).unwrap(), i);
        }
        let ents = vec![
            Dirent {
                nid: 1,
                file_type: FT_DIR,
                name: b".".to_vec(),
            },
            Dirent {
                nid: 2,
                file_type: FT_REG,
                name: b"abc".to_vec(),
            },
        ];
        let mut b = Vec::new();
        encode_dir_block(&ents, &mut b);
        assert_eq!(decode_dir_block(&b).unwrap(), ents);
        b.resize(4096, 0);
        assert_eq!(decode_dir_block(&b).unwrap(), ents);
        for (ma, mi) in [(1, 3), (259, 70000), (4095, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
        assert_eq!(split_xattr_name(b"user.x"), Some((1, &b"x"[..])));
        assert_eq!(
            split_xattr_name(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(split_xattr_name(b"system.other"), None);
        assert_eq!(split_xattr_name(b"user."), None);
    }
}
