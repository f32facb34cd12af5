//! Making a fresh filesystem with the parameters of overlaybd's `--mkfs` (4 KiB blocks, 256-byte
//! inodes, one inode per 16 KiB, no journal, sparse_super2 backups in group 1 and the last
//! group, zero UUID/seed/times). Only metadata blocks are written; inode tables stay as
//! never-written (zero) space, so the device must read as zeros where nothing was written.

use obd_format::io::BlockDevice;

use crate::bitmap::Bitmap;
use crate::bytes::put32;
use crate::dir;
use crate::error::{Error, Result};
use crate::extent::{self, Extent};
use crate::fs::Ext4;
use crate::group::GroupDesc;
use crate::hash::HASH_HALF_MD4;
use crate::inode::{Inode, FL_EXTENTS, LOST_FOUND_INO, RESIZE_INO, ROOT_INO, S_IFDIR, S_IFREG};
use crate::superblock::{
    self as sbm, feature, Geometry, Superblock, EXT4_MAGIC, FLAGS_SIGNED_HASH,
};

/// Parameters of [`Ext4::mkfs`]. The defaults are upstream's.
#[derive(Clone, Debug)]
pub struct MkfsOptions {
    /// Filesystem UUID (upstream: all zero).
    pub uuid: [u8; 16],
    /// Directory hash seed (upstream: all zero, meaning the default seed).
    pub hash_seed: [u8; 16],
    /// Bytes of device per inode.
    pub inode_ratio: u64,
    /// Percentage of blocks reserved for root.
    pub reserved_percent: u64,
    /// Blocks given to lost+found.
    pub lost_found_blocks: u64,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            uuid: [0; 16],
            hash_seed: [0; 16],
            inode_ratio: 16384,
            reserved_percent: 5,
            lost_found_blocks: 4,
        }
    }
}

const BS: u64 = 4096;
const INODE_SIZE: u32 = 256;

fn reserved_gdt_blocks(blocks: u64, bpg: u64, desc_blocks: u64) -> u64 {
    let max_blocks: u64 = if blocks < 0xFFFF_FFFF / 1024 {
        blocks * 1024
    } else {
        0xFFFF_FFFF
    };
    let groups = max_blocks.div_ceil(bpg);
    let per_block = BS / 64;
    groups
        .div_ceil(per_block)
        .saturating_sub(desc_blocks)
        .min(BS / 4)
}

struct Plan {
    geo: Geometry,
    reserved: u64,
}

fn plan(dev_size: u64, opts: &MkfsOptions) -> Result<Plan> {
    let bpg = BS * 8;
    let mut blocks = dev_size / BS;
    if opts.inode_ratio < BS || opts.reserved_percent > 50 || opts.lost_found_blocks == 0 {
        return Err(Error::Mkfs(
            "inode ratio, reserved percentage or lost+found size out of range".into(),
        ));
    }
    loop {
        if blocks < 256 {
            return Err(Error::Mkfs(format!(
                "device of {dev_size} bytes is too small"
            )));
        }
        let groups = blocks.div_ceil(bpg);
        let group_count =
            u32::try_from(groups).map_err(|_| Error::Mkfs("device too large".into()))?;
        let desc_blocks = groups.div_ceil(BS / 64);
        let rsv = reserved_gdt_blocks(blocks, bpg, desc_blocks);
        let inodes_wanted = (blocks * BS / opts.inode_ratio).min(u64::from(u32::MAX));
        let ipb = BS / u64::from(INODE_SIZE);
        let mut ipg = inodes_wanted.div_ceil(groups).max(16);
        ipg = ipg.div_ceil(ipb) * ipb;
        ipg = ipg.min(BS * 8);
        while ipg * groups > u64::from(u32::MAX) {
            ipg -= ipb;
        }
        let itb = ipg * u64::from(INODE_SIZE) / BS;
        let b1 = 1u32.min(group_count - 1);
        let mut backup = [b1, group_count - 1];
        if backup[1] == backup[0] {
            backup[1] = 0;
        }
        if backup[0] > backup[1] {
            backup.swap(0, 1);
        }
        let geo = Geometry {
            block_size: BS,
            blocks_count: blocks,
            first_data_block: 0,
            blocks_per_group: bpg,
            inodes_per_group: ipg as u32,
            inodes_count: (ipg * groups) as u32,
            inode_size: INODE_SIZE,
            group_count,
            desc_size: 64,
            desc_blocks,
            reserved_gdt: rsv,
            itable_blocks: itb,
            first_ino: 11,
            sparse_super: true,
            sparse_super2: true,
            backup_bgs: backup,
        };
        if 1 + desc_blocks + rsv + 2 + itb + 1 + opts.lost_found_blocks + 1 > bpg.min(blocks) {
            return Err(Error::Mkfs(format!(
                "device of {dev_size} bytes is too small"
            )));
        }
        let rem = blocks % bpg;
        let last = group_count - 1;
        let overhead = geo.super_overhead(last) + 2 + itb;
        if rem != 0 && group_count > 1 && rem < overhead + 50 {
            blocks -= rem;
            continue;
        }
        if group_count == 1 && rem != 0 && rem < overhead + 2 + opts.lost_found_blocks + 50 {
            return Err(Error::Mkfs(format!(
                "device of {dev_size} bytes is too small"
            )));
        }
        let reserved = blocks * opts.reserved_percent / 100;
        return Ok(Plan { geo, reserved });
    }
}

impl<D: BlockDevice> Ext4<D> {
    /// Makes a new filesystem covering the whole device and opens it. Only metadata is
    /// written (a few MiB); the device must read as zeros elsewhere (a fresh sparse file or
    /// LSMT layer stack). The same device size and options always give the same bytes.
    pub fn mkfs(mut dev: D, opts: &MkfsOptions) -> Result<Self> {
        let Plan { geo, reserved } = plan(dev.size(), opts)?;
        let bpg = geo.blocks_per_group;
        let ipg = geo.inodes_per_group;
        let resize = geo.reserved_gdt > 0;
        // Group layout: [super+GDT+reserved GDT] block bitmap, inode bitmap, inode table.
        let mut groups = Vec::new();
        for g in 0..geo.group_count {
            let mut d = GroupDesc::new(64);
            let bb = geo.group_first_block(g) + geo.super_overhead(g);
            d.block_bitmap = bb;
            d.inode_bitmap = bb + 1;
            d.inode_table = bb + 2;
            let used = geo.super_overhead(g) + 2 + geo.itable_blocks;
            d.free_blocks = (geo.group_len(g) - used) as u32;
            d.free_inodes = ipg;
            groups.push(d);
        }
        let root_blk = groups[0].inode_table + geo.itable_blocks;
        let lpf_blk = root_blk + 1;
        let nlpf = opts.lost_found_blocks;
        let dind_blk = lpf_blk + nlpf;
        let g0_extra = 1 + nlpf + u64::from(resize);
        groups[0].free_blocks -= g0_extra as u32;
        groups[0].free_inodes -= LOST_FOUND_INO;
        groups[0].used_dirs = 2;

        // Superblock.
        let mut sb = Superblock::zeroed();
        sb.set32(sbm::S_INODES_COUNT, geo.inodes_count);
        sb.set32(
            sbm::S_FEATURE_INCOMPAT,
            feature::INCOMPAT_FILETYPE
                | feature::INCOMPAT_EXTENTS
                | feature::INCOMPAT_64BIT
                | feature::INCOMPAT_FLEX_BG,
        );
        sb.set_blocks_count(geo.blocks_count);
        sb.set_reserved_blocks_count(reserved);
        let free_blocks: u64 = groups.iter().map(|d| u64::from(d.free_blocks)).sum();
        sb.set_free_blocks_count(free_blocks);
        sb.set32(sbm::S_FREE_INODES, geo.inodes_count - LOST_FOUND_INO);
        sb.set32(sbm::S_FIRST_DATA_BLOCK, 0);
        sb.set32(sbm::S_LOG_BLOCK_SIZE, 2);
        sb.set32(sbm::S_LOG_CLUSTER_SIZE, 2);
        sb.set32(sbm::S_BLOCKS_PER_GROUP, bpg as u32);
        sb.set32(sbm::S_CLUSTERS_PER_GROUP, bpg as u32);
        sb.set32(sbm::S_INODES_PER_GROUP, ipg);
        sb.set16(sbm::S_MAX_MNT_COUNT, 0xFFFF);
        sb.set16(sbm::S_MAGIC, EXT4_MAGIC);
        sb.set16(sbm::S_STATE, 1);
        sb.set16(sbm::S_ERRORS, 1);
        sb.set32(sbm::S_REV_LEVEL, 1);
        sb.set32(sbm::S_FIRST_INO, 11);
        sb.set16(sbm::S_INODE_SIZE, INODE_SIZE as u16);
        let mut compat =
            feature::COMPAT_EXT_ATTR | feature::COMPAT_DIR_INDEX | feature::COMPAT_SPARSE_SUPER2;
        if resize {
            compat |= feature::COMPAT_RESIZE_INODE;
        }
        sb.set32(sbm::S_FEATURE_COMPAT, compat);
        sb.set32(
            sbm::S_FEATURE_RO_COMPAT,
            feature::RO_COMPAT_SPARSE_SUPER
                | feature::RO_COMPAT_LARGE_FILE
                | feature::RO_COMPAT_HUGE_FILE
                | feature::RO_COMPAT_DIR_NLINK
                | feature::RO_COMPAT_EXTRA_ISIZE,
        );
        sb.raw[sbm::S_UUID..sbm::S_UUID + 16].copy_from_slice(&opts.uuid);
        sb.set16(sbm::S_RESERVED_GDT_BLOCKS, geo.reserved_gdt as u16);
        sb.raw[sbm::S_HASH_SEED..sbm::S_HASH_SEED + 16].copy_from_slice(&opts.hash_seed);
        sb.raw[sbm::S_DEF_HASH_VERSION] = HASH_HALF_MD4;
        sb.set16(sbm::S_DESC_SIZE, 64);
        sb.set16(sbm::S_MIN_EXTRA_ISIZE, 32);
        sb.set16(sbm::S_WANT_EXTRA_ISIZE, 32);
        sb.set32(sbm::S_FLAGS, FLAGS_SIGNED_HASH);
        sb.raw[sbm::S_LOG_GROUPS_PER_FLEX] = 0;
        crate::bytes::put64(&mut sb.raw, sbm::S_KBYTES_WRITTEN, 0);
        sb.set32(sbm::S_BACKUP_BGS, geo.backup_bgs[0]);
        sb.set32(sbm::S_BACKUP_BGS + 4, geo.backup_bgs[1]);
        debug_assert!(sb.validate().is_ok());

        let bs = BS as usize;
        let write = |dev: &mut D, blk: u64, data: &[u8]| -> Result<()> {
            dev.write_at(data, blk * BS)?;
            Ok(())
        };

        // Bitmaps.
        for g in 0..geo.group_count {
            let mut bm = Bitmap::new(bpg as usize);
            let mut used = geo.super_overhead(g) + 2 + geo.itable_blocks;
            if g == 0 {
                used += g0_extra;
            }
            bm.set_range(0, used as usize);
            let len = geo.group_len(g) as usize;
            bm.set_range(len, bpg as usize - len);
            write(&mut dev, groups[g as usize].block_bitmap, &bm.to_block(bs))?;
            let mut ib = Bitmap::new(ipg as usize);
            if g == 0 {
                ib.set_range(0, LOST_FOUND_INO as usize);
            }
            write(&mut dev, groups[g as usize].inode_bitmap, &ib.to_block(bs))?;
        }

        // Directories.
        let root_entries = [(
            b"lost+found".as_slice(),
            dir::DirEnt {
                ino: LOST_FOUND_INO,
                ftype: 2,
            },
        )];
        let root_block = dir::build_linear(ROOT_INO, ROOT_INO, root_entries.iter().copied(), bs)
            .ok_or_else(|| Error::Mkfs("root directory".into()))?;
        write(&mut dev, root_blk, &root_block)?;
        let lpf_block = dir::build_linear(LOST_FOUND_INO, ROOT_INO, std::iter::empty(), bs)
            .ok_or_else(|| Error::Mkfs("lost+found".into()))?;
        write(&mut dev, lpf_blk, &lpf_block)?;
        let mut empty = vec![0u8; bs];
        crate::bytes::put16(&mut empty, 4, bs as u16);
        for i in 1..nlpf {
            write(&mut dev, lpf_blk + i, &empty)?;
        }

        // Inodes 1..16 live in the first inode-table block.
        let mut itable = vec![0u8; bs];
        let isz = INODE_SIZE as usize;
        let mut put_inode = |ino: u32, i: &Inode| {
            let off = (ino as usize - 1) * isz;
            itable[off..off + isz].copy_from_slice(&i.raw);
        };
        let mk_dir = |perm: u16, links: u32, blk: u64, nblocks: u64| {
            let mut i = Inode::new(isz, S_IFDIR | perm);
            i.set_links(links);
            i.set_size(nblocks * BS);
            i.set_sectors(nblocks * 8);
            let (root, _) = extent::build_tree(
                &[Extent {
                    lblk: 0,
                    pblk: blk,
                    len: nblocks as u32,
                    uninit: false,
                }],
                &[],
                bs,
            );
            i.i_block_mut().copy_from_slice(&root);
            i.set_flags(FL_EXTENTS);
            i
        };
        put_inode(ROOT_INO, &mk_dir(0o755, 3, root_blk, 1));
        put_inode(LOST_FOUND_INO, &mk_dir(0o700, 2, lpf_blk, nlpf));

        let backups = geo.backup_groups();
        if resize {
            let apb = BS / 4;
            let mut ri = Inode::new(isz, S_IFREG | 0o600);
            ri.set_size((apb * apb + apb + 12) * BS);
            ri.set_sectors((1 + geo.reserved_gdt * (1 + backups.len() as u64)) * 8);
            ri.set_i_block_word(13, dind_blk as u32);
            put_inode(RESIZE_INO, &ri);
            let mut dind = vec![0u8; bs];
            for i in 0..geo.reserved_gdt {
                let gdt_blk = 1 + geo.desc_blocks + i;
                let slot = ((geo.desc_blocks + i) % apb) as usize;
                put32(&mut dind, slot * 4, gdt_blk as u32);
                let mut ind = vec![0u8; bs];
                for (k, &g) in backups.iter().enumerate() {
                    put32(&mut ind, k * 4, (gdt_blk + u64::from(g) * bpg) as u32);
                }
                write(&mut dev, gdt_blk, &ind)?;
            }
            write(&mut dev, dind_blk, &dind)?;
        }
        write(&mut dev, groups[0].inode_table, &itable)?;

        // Descriptors and superblocks: primary, then the backups.
        let mut gdt = vec![0u8; geo.desc_blocks as usize * bs];
        for (g, d) in groups.iter_mut().enumerate() {
            gdt[g * 64..(g + 1) * 64].copy_from_slice(d.serialize(None));
        }
        dev.write_at(&sb.raw, sbm::SUPERBLOCK_OFFSET)?;
        write(&mut dev, 1, &gdt)?;
        for &g in &backups {
            let mut copy = sb.clone();
            copy.set16(sbm::S_BLOCK_GROUP_NR, g as u16);
            let first = geo.group_first_block(g);
            write(&mut dev, first, &copy.raw)?;
            write(&mut dev, first + 1, &gdt)?;
        }
        obd_format::io::WriteAt::flush(&mut dev)?;
        Ext4::open(dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_geometry() {
        let p = plan(64 << 30, &MkfsOptions::default()).unwrap();
        assert_eq!(p.geo.blocks_count, 16_777_216);
        assert_eq!(p.geo.inodes_count, 4_194_304);
        assert_eq!(p.geo.reserved_gdt, 1024);
        assert_eq!(p.geo.itable_blocks, 512);
        assert_eq!(p.reserved, 838_860);
        assert_eq!(p.geo.backup_bgs, [1, 511]);
        let p = plan(1 << 30, &MkfsOptions::default()).unwrap();
        assert_eq!(p.geo.reserved_gdt, 127);
        assert_eq!(p.geo.group_count, 8);
        assert!(plan(100 << 10, &MkfsOptions::default()).is_err());
    }
}
