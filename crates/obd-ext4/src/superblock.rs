//! The superblock: raw 1024-byte image with typed accessors, feature flags, validation of a
//! superblock read from disk, and the derived group geometry.

use crate::bytes::{le16, le32, put16, put32};
use crate::error::{Error, Result};

/// Byte offset of the primary superblock on the device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// ext2/3/4 magic number.
pub const EXT4_MAGIC: u16 = 0xEF53;

/// Feature bit values.
pub mod feature {
    pub const COMPAT_DIR_PREALLOC: u32 = 0x1;
    pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
    pub const COMPAT_EXT_ATTR: u32 = 0x8;
    pub const COMPAT_RESIZE_INODE: u32 = 0x10;
    pub const COMPAT_DIR_INDEX: u32 = 0x20;
    pub const COMPAT_SPARSE_SUPER2: u32 = 0x200;

    pub const INCOMPAT_FILETYPE: u32 = 0x2;
    pub const INCOMPAT_RECOVER: u32 = 0x4;
    pub const INCOMPAT_META_BG: u32 = 0x10;
    pub const INCOMPAT_EXTENTS: u32 = 0x40;
    pub const INCOMPAT_64BIT: u32 = 0x80;
    pub const INCOMPAT_FLEX_BG: u32 = 0x200;
    pub const INCOMPAT_LARGEDIR: u32 = 0x4000;

    pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
    pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
    pub const RO_COMPAT_BTREE_DIR: u32 = 0x4;
    pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
    pub const RO_COMPAT_GDT_CSUM: u32 = 0x10;
    pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
    pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;

    /// Incompatible features the engine reads and writes.
    pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE
        | INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_FLEX_BG
        | INCOMPAT_LARGEDIR;
    /// Read-only-compatible features the engine keeps consistent.
    pub const RO_COMPAT_SUPPORTED: u32 = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_BTREE_DIR
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_GDT_CSUM
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE;

    pub(crate) const INCOMPAT_NAMES: &[(u32, &str)] = &[
        (0x1, "compression"),
        (0x4, "needs_recovery"),
        (0x8, "journal_dev"),
        (0x10, "meta_bg"),
        (0x100, "mmp"),
        (0x400, "ea_inode"),
        (0x1000, "dirdata"),
        (0x2000, "metadata_csum_seed"),
        (0x8000, "inline_data"),
        (0x10000, "encrypt"),
        (0x20000, "casefold"),
    ];
    pub(crate) const RO_COMPAT_NAMES: &[(u32, &str)] = &[
        (0x80, "snapshot"),
        (0x100, "quota"),
        (0x200, "bigalloc"),
        (0x400, "metadata_csum"),
        (0x800, "replica"),
        (0x1000, "read-only"),
        (0x2000, "project"),
        (0x4000, "shared_blocks"),
        (0x8000, "verity"),
        (0x10000, "orphan_present"),
    ];
}

/// `s_flags`: directory hashes use signed / unsigned chars.
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
pub const FLAGS_UNSIGNED_HASH: u32 = 0x2;

// Field offsets.
pub(crate) const S_INODES_COUNT: usize = 0x00;
pub(crate) const S_BLOCKS_COUNT_LO: usize = 0x04;
pub(crate) const S_R_BLOCKS_COUNT_LO: usize = 0x08;
pub(crate) const S_FREE_BLOCKS_LO: usize = 0x0C;
pub(crate) const S_FREE_INODES: usize = 0x10;
pub(crate) const S_FIRST_DATA_BLOCK: usize = 0x14;
pub(crate) const S_LOG_BLOCK_SIZE: usize = 0x18;
pub(crate) const S_LOG_CLUSTER_SIZE: usize = 0x1C;
pub(crate) const S_BLOCKS_PER_GROUP: usize = 0x20;
pub(crate) const S_CLUSTERS_PER_GROUP: usize = 0x24;
pub(crate) const S_INODES_PER_GROUP: usize = 0x28;
pub(crate) const S_MAX_MNT_COUNT: usize = 0x36;
pub(crate) const S_MAGIC: usize = 0x38;
pub(crate) const S_STATE: usize = 0x3A;
pub(crate) const S_ERRORS: usize = 0x3C;
pub(crate) const S_REV_LEVEL: usize = 0x4C;
pub(crate) const S_FIRST_INO: usize = 0x54;
pub(crate) const S_INODE_SIZE: usize = 0x58;
pub(crate) const S_BLOCK_GROUP_NR: usize = 0x5A;
pub(crate) const S_FEATURE_COMPAT: usize = 0x5C;
pub(crate) const S_FEATURE_INCOMPAT: usize = 0x60;
pub(crate) const S_FEATURE_RO_COMPAT: usize = 0x64;
pub(crate) const S_UUID: usize = 0x68;
pub(crate) const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
pub(crate) const S_HASH_SEED: usize = 0xEC;
pub(crate) const S_DEF_HASH_VERSION: usize = 0xFC;
pub(crate) const S_DESC_SIZE: usize = 0xFE;
pub(crate) const S_BLOCKS_COUNT_HI: usize = 0x150;
pub(crate) const S_R_BLOCKS_COUNT_HI: usize = 0x154;
pub(crate) const S_FREE_BLOCKS_HI: usize = 0x158;
pub(crate) const S_MIN_EXTRA_ISIZE: usize = 0x15C;
pub(crate) const S_WANT_EXTRA_ISIZE: usize = 0x15E;
pub(crate) const S_FLAGS: usize = 0x160;
pub(crate) const S_LOG_GROUPS_PER_FLEX: usize = 0x174;
pub(crate) const S_KBYTES_WRITTEN: usize = 0x178;
pub(crate) const S_BACKUP_BGS: usize = 0x24C;

/// The superblock, kept as its raw bytes so unknown fields survive a rewrite.
#[derive(Clone)]
pub struct Superblock {
    pub(crate) raw: [u8; SUPERBLOCK_SIZE],
}

impl Superblock {
    pub(crate) fn zeroed() -> Self {
        Superblock {
            raw: [0; SUPERBLOCK_SIZE],
        }
    }
    pub(crate) fn from_bytes(b: &[u8; SUPERBLOCK_SIZE]) -> Self {
        Superblock { raw: *b }
    }
    pub(crate) fn u16(&self, off: usize) -> u16 {
        le16(&self.raw, off)
    }
    pub(crate) fn u32(&self, off: usize) -> u32 {
        le32(&self.raw, off)
    }
    pub(crate) fn set16(&mut self, off: usize, v: u16) {
        put16(&mut self.raw, off, v)
    }
    pub(crate) fn set32(&mut self, off: usize, v: u32) {
        put32(&mut self.raw, off, v)
    }
    fn hi_lo(&self, lo: usize, hi: usize) -> u64 {
        let hi = if self.is_64bit() {
            u64::from(self.u32(hi))
        } else {
            0
        };
        u64::from(self.u32(lo)) | (hi << 32)
    }
    fn set_hi_lo(&mut self, lo: usize, hi: usize, v: u64) {
        self.set32(lo, v as u32);
        if self.is_64bit() {
            self.set32(hi, (v >> 32) as u32);
        }
    }

    pub fn compat(&self) -> u32 {
        self.u32(S_FEATURE_COMPAT)
    }
    pub fn incompat(&self) -> u32 {
        self.u32(S_FEATURE_INCOMPAT)
    }
    pub fn ro_compat(&self) -> u32 {
        self.u32(S_FEATURE_RO_COMPAT)
    }
    pub fn is_64bit(&self) -> bool {
        self.incompat() & feature::INCOMPAT_64BIT != 0
    }
    pub fn has_gdt_csum(&self) -> bool {
        self.ro_compat() & feature::RO_COMPAT_GDT_CSUM != 0
    }
    pub fn blocks_count(&self) -> u64 {
        self.hi_lo(S_BLOCKS_COUNT_LO, S_BLOCKS_COUNT_HI)
    }
    pub fn reserved_blocks_count(&self) -> u64 {
        self.hi_lo(S_R_BLOCKS_COUNT_LO, S_R_BLOCKS_COUNT_HI)
    }
    pub fn free_blocks_count(&self) -> u64 {
        self.hi_lo(S_FREE_BLOCKS_LO, S_FREE_BLOCKS_HI)
    }
    pub(crate) fn set_blocks_count(&mut self, v: u64) {
        self.set_hi_lo(S_BLOCKS_COUNT_LO, S_BLOCKS_COUNT_HI, v)
    }
    pub(crate) fn set_reserved_blocks_count(&mut self, v: u64) {
        self.set_hi_lo(S_R_BLOCKS_COUNT_LO, S_R_BLOCKS_COUNT_HI, v)
    }
    pub(crate) fn set_free_blocks_count(&mut self, v: u64) {
        self.set_hi_lo(S_FREE_BLOCKS_LO, S_FREE_BLOCKS_HI, v)
    }
    pub fn inodes_count(&self) -> u32 {
        self.u32(S_INODES_COUNT)
    }
    pub fn free_inodes_count(&self) -> u32 {
        self.u32(S_FREE_INODES)
    }
    pub(crate) fn set_free_inodes_count(&mut self, v: u32) {
        self.set32(S_FREE_INODES, v)
    }
    pub fn uuid(&self) -> [u8; 16] {
        let mut u = [0; 16];
        u.copy_from_slice(&self.raw[S_UUID..S_UUID + 16]);
        u
    }
    pub(crate) fn hash_seed(&self) -> [u32; 4] {
        [0, 1, 2, 3].map(|i| self.u32(S_HASH_SEED + 4 * i))
    }
    pub(crate) fn backup_bgs(&self) -> [u32; 2] {
        [self.u32(S_BACKUP_BGS), self.u32(S_BACKUP_BGS + 4)]
    }

    /// Checks the superblock against what the engine supports and derives the geometry.
    pub(crate) fn validate(&self) -> Result<Geometry> {
        let magic = self.u16(S_MAGIC);
        if magic != EXT4_MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let bad = |s: String| Err(Error::BadSuperblock(s));
        if self.u32(S_REV_LEVEL) != 1 {
            return Err(Error::UnsupportedFeature(format!(
                "revision level {}",
                self.u32(S_REV_LEVEL)
            )));
        }
        let incompat = self.incompat();
        if incompat & feature::INCOMPAT_RECOVER != 0 {
            return Err(Error::NeedsRecovery);
        }
        let unknown_incompat = incompat & !feature::INCOMPAT_SUPPORTED;
        if unknown_incompat != 0 {
            return Err(Error::UnsupportedFeature(name_bits(
                unknown_incompat,
                feature::INCOMPAT_NAMES,
                "incompat",
            )));
        }
        let unknown_ro = self.ro_compat() & !feature::RO_COMPAT_SUPPORTED;
        if unknown_ro != 0 {
            return Err(Error::UnsupportedFeature(name_bits(
                unknown_ro,
                feature::RO_COMPAT_NAMES,
                "ro_compat",
            )));
        }
        for (need, name) in [
            (feature::INCOMPAT_FILETYPE, "filetype"),
            (feature::INCOMPAT_EXTENTS, "extent"),
        ] {
            if incompat & need == 0 {
                return Err(Error::UnsupportedFeature(format!(
                    "a filesystem without {name}"
                )));
            }
        }
        let log_bs = self.u32(S_LOG_BLOCK_SIZE);
        if log_bs != 2 {
            return Err(Error::UnsupportedFeature(format!(
                "block size {} (only 4096)",
                1024u64.checked_shl(log_bs).unwrap_or(0)
            )));
        }
        if self.u32(S_LOG_CLUSTER_SIZE) != log_bs {
            return bad("cluster size differs from block size".into());
        }
        let block_size: u64 = 4096;
        let first_data_block = u64::from(self.u32(S_FIRST_DATA_BLOCK));
        if first_data_block != 0 {
            return bad(format!(
                "s_first_data_block {first_data_block} with 4 KiB blocks"
            ));
        }
        let bpg = u64::from(self.u32(S_BLOCKS_PER_GROUP));
        if bpg != block_size * 8 {
            return Err(Error::UnsupportedFeature(format!(
                "{bpg} blocks per group (only {})",
                block_size * 8
            )));
        }
        let blocks_count = self.blocks_count();
        if blocks_count <= first_data_block || blocks_count > (1 << 48) {
            return bad(format!("blocks count {blocks_count}"));
        }
        let group_count_u64 = (blocks_count - first_data_block).div_ceil(bpg);
        let group_count = u32::try_from(group_count_u64)
            .map_err(|_| Error::BadSuperblock(format!("{group_count_u64} block groups")))?;
        let ipg = self.u32(S_INODES_PER_GROUP);
        let inode_size = u32::from(self.u16(S_INODE_SIZE));
        if !(256..=block_size as u32).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(Error::UnsupportedFeature(format!(
                "inode size {inode_size}"
            )));
        }
        let inodes_per_block = block_size as u32 / inode_size;
        if ipg == 0 || ipg > block_size as u32 * 8 || ipg % inodes_per_block != 0 || ipg % 8 != 0 {
            return bad(format!("{ipg} inodes per group"));
        }
        if u64::from(self.inodes_count()) != u64::from(ipg) * group_count_u64 {
            return bad(format!(
                "{} inodes for {group_count} groups of {ipg}",
                self.inodes_count()
            ));
        }
        let first_ino = self.u32(S_FIRST_INO);
        if first_ino < 11 || first_ino >= self.inodes_count() {
            return bad(format!("first inode {first_ino}"));
        }
        let desc_size = if self.is_64bit() {
            let d = u32::from(self.u16(S_DESC_SIZE));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return bad(format!("descriptor size {d}"));
            }
            d as usize
        } else {
            32
        };
        let desc_per_block = block_size / desc_size as u64;
        let desc_blocks = group_count_u64.div_ceil(desc_per_block);
        let reserved_gdt = u64::from(self.u16(S_RESERVED_GDT_BLOCKS));
        if reserved_gdt > block_size / 4 {
            return bad(format!("{reserved_gdt} reserved GDT blocks"));
        }
        let itable_blocks = u64::from(ipg) * u64::from(inode_size) / block_size;
        if 1 + desc_blocks + reserved_gdt + itable_blocks + 2 > bpg {
            return bad("group metadata larger than a group".into());
        }
        let compat = self.compat();
        let ro = self.ro_compat();
        let backup_bgs = self.backup_bgs();
        let sparse_super2 = compat & feature::COMPAT_SPARSE_SUPER2 != 0;
        let hv = self.raw[S_DEF_HASH_VERSION];
        if compat & feature::COMPAT_DIR_INDEX != 0 && hv > 2 {
            return Err(Error::UnsupportedFeature(format!(
                "default hash version {hv}"
            )));
        }
        Ok(Geometry {
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group: bpg,
            inodes_per_group: ipg,
            inodes_count: self.inodes_count(),
            inode_size,
            group_count,
            desc_size,
            desc_blocks,
            reserved_gdt,
            itable_blocks,
            first_ino,
            sparse_super: ro & feature::RO_COMPAT_SPARSE_SUPER != 0,
            sparse_super2,
            backup_bgs,
        })
    }
}

fn name_bits(bits: u32, names: &[(u32, &str)], kind: &str) -> String {
    let mut out = Vec::new();
    for i in 0..32 {
        let bit = 1u32 << i;
        if bits & bit != 0 {
            match names.iter().find(|(b, _)| *b == bit) {
                Some((_, n)) => out.push((*n).to_string()),
                None => out.push(format!("{kind}:{bit:#x}")),
            }
        }
    }
    out.join(", ")
}

/// Sizes and locations derived from the superblock.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u32,
    pub inodes_count: u32,
    pub inode_size: u32,
    pub group_count: u32,
    pub desc_size: usize,
    pub desc_blocks: u64,
    pub reserved_gdt: u64,
    pub itable_blocks: u64,
    pub first_ino: u32,
    pub sparse_super: bool,
    pub sparse_super2: bool,
    pub backup_bgs: [u32; 2],
}

impl Geometry {
    pub fn group_first_block(&self, g: u32) -> u64 {
        self.first_data_block + u64::from(g) * self.blocks_per_group
    }
    /// Number of blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks_count - self.group_first_block(g)).min(self.blocks_per_group)
    }
    /// Whether group `g` holds a superblock and descriptor copy.
    pub fn has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2 {
            return self.backup_bgs.contains(&g);
        }
        if !self.sparse_super {
            return true;
        }
        if g == 1 {
            return true;
        }
        [3u32, 5, 7].iter().any(|&b| is_power_of(g, b))
    }
    /// Blocks at the start of group `g` taken by the superblock, descriptors and reserved
    /// descriptor blocks.
    pub fn super_overhead(&self, g: u32) -> u64 {
        if self.has_super(g) {
            1 + self.desc_blocks + self.reserved_gdt
        } else {
            0
        }
    }
    /// Groups other than 0 holding backups, in increasing order.
    pub fn backup_groups(&self) -> Vec<u32> {
        (1..self.group_count)
            .filter(|&g| self.has_super(g))
            .collect()
    }
    pub fn inodes_per_block(&self) -> u32 {
        self.block_size as u32 / self.inode_size
    }
}

fn is_power_of(mut n: u32, b: u32) -> bool {
    while n % b == 0 && n > 1 {
        n /= b;
    }
    n == 1
}
