//! The filesystem handle: opening and validating an existing ext4, the per-layer in-memory
//! state (descriptors, lazily loaded bitmaps, inodes and directories, dirty sets), the
//! next-fit block and inode allocators, and raw block I/O helpers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use obd_format::io::{BlockDevice, ReadAt, WriteAt};

use crate::bitmap::Bitmap;
use crate::dir::{self, DirEnt, HtreeLayout};
use crate::error::{Error, Result};
use crate::extent::{self, FileMap};
use crate::group::{self, GroupDesc, BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use crate::hash::DirHasher;
use crate::inode::{FileKind, Inode, FL_EXTENTS, FL_INDEX};
use crate::superblock::{
    feature, Geometry, Superblock, FLAGS_SIGNED_HASH, FLAGS_UNSIGNED_HASH, SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE, S_DEF_HASH_VERSION, S_FLAGS,
};
use crate::xattr::XattrKey;

/// Most blocks a directory may have before it is treated as corrupt (4 GiB).
const MAX_DIR_BLOCKS: usize = 1 << 20;

/// A directory held in memory while a layer runs.
#[derive(Clone, Debug)]
pub(crate) struct Dir {
    pub parent: u32,
    pub entries: BTreeMap<Vec<u8>, DirEnt>,
    pub layout: Option<HtreeLayout>,
}

/// Free-space summary of a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub block_size: u64,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub reserved_blocks: u64,
    pub inodes_count: u32,
    pub free_inodes: u32,
    pub group_count: u32,
}

/// An ext4 filesystem on a block device, modified in memory and written back by
/// [`Ext4::flush`].
pub struct Ext4<D: BlockDevice> {
    pub(crate) dev: D,
    pub(crate) sb: Superblock,
    pub(crate) geo: Geometry,
    pub(crate) groups: Vec<GroupDesc>,
    pub(crate) block_bitmaps: Vec<Option<Bitmap>>,
    pub(crate) bb_dirty: BTreeSet<u32>,
    pub(crate) inode_bitmaps: Vec<Option<Bitmap>>,
    pub(crate) ib_dirty: BTreeSet<u32>,
    /// Inode slots per group whose on-disk content is trustworthy (the rest reads as zero).
    pub(crate) itable_init: Vec<u32>,
    pub(crate) inodes: HashMap<u32, Inode>,
    pub(crate) inode_dirty: BTreeSet<u32>,
    pub(crate) dirs: HashMap<u32, Dir>,
    pub(crate) dir_dirty: BTreeSet<u32>,
    /// Attribute sets changed in this layer, written at flush.
    pub(crate) xattr_dirty: BTreeMap<u32, BTreeMap<XattrKey, Vec<u8>>>,
    pub(crate) block_cursor: u64,
    pub(crate) inode_cursor: u32,
    pub(crate) hasher: DirHasher,
    pub(crate) def_hash: u8,
    pub(crate) itable_cache: Option<(u64, Vec<u8>)>,
    meta_by_group: Option<Vec<Vec<(u64, u64)>>>,
}

/// Adapts `&mut dyn BlockDevice` (or any `&mut` device) to an owned [`BlockDevice`].
pub struct DevMut<'a, T: BlockDevice + ?Sized>(pub &'a mut T);

impl<T: BlockDevice + ?Sized> ReadAt for DevMut<'_, T> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        self.0.read_at(buf, off)
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
}

impl<T: BlockDevice + ?Sized> WriteAt for DevMut<'_, T> {
    fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_at(buf, off)
    }
    fn write_bulk_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_bulk_at(buf, off)
    }
    fn discard(&mut self, off: u64, len: u64) -> std::io::Result<()> {
        self.0.discard(off, len)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        WriteAt::flush(self.0)
    }
}

impl<D: BlockDevice> Ext4<D> {
    /// Opens the ext4 filesystem on `dev`, refusing features the engine cannot keep
    /// consistent.
    pub fn open(dev: D) -> Result<Self> {
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        if dev.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(Error::DeviceTooSmall {
                device: dev.size(),
                fs: SUPERBLOCK_OFFSET + 1024,
            });
        }
        dev.read_exact_at(&mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::from_bytes(&raw);
        let geo = sb.validate()?;
        let fs_bytes = geo.blocks_count * geo.block_size;
        if fs_bytes > dev.size() {
            return Err(Error::DeviceTooSmall {
                device: dev.size(),
                fs: fs_bytes,
            });
        }
        // Descriptors.
        let gdt_start = geo.first_data_block + 1;
        let mut gdt = vec![0u8; (geo.desc_blocks * geo.block_size) as usize];
        dev.read_exact_at(&mut gdt, gdt_start * geo.block_size)?;
        let uuid = sb.uuid();
        let csum = sb.has_gdt_csum();
        let mut groups = Vec::with_capacity(geo.group_count as usize);
        for g in 0..geo.group_count {
            let off = g as usize * geo.desc_size;
            let raw = &gdt[off..off + geo.desc_size];
            let d = GroupDesc::parse(raw);
            let bad = |reason: String| Error::BadGroupDesc { group: g, reason };
            if csum && d.stored_checksum() != group::checksum(raw, &uuid, g) {
                return Err(bad("descriptor checksum mismatch".into()));
            }
            let in_fs =
                |b: u64, n: u64| b >= 1 && b.checked_add(n).is_some_and(|e| e <= geo.blocks_count);
            if !in_fs(d.block_bitmap, 1)
                || !in_fs(d.inode_bitmap, 1)
                || !in_fs(d.inode_table, geo.itable_blocks)
            {
                return Err(bad("bitmap or inode table outside the filesystem".into()));
            }
            if u64::from(d.free_blocks) > geo.group_len(g) || d.free_inodes > geo.inodes_per_group {
                return Err(bad("free counts larger than the group".into()));
            }
            if d.itable_unused > geo.inodes_per_group {
                return Err(bad("itable_unused larger than the group".into()));
            }
            groups.push(d);
        }
        let itable_init = groups
            .iter()
            .map(|d| {
                if !csum {
                    geo.inodes_per_group
                } else if d.flags & BG_INODE_UNINIT != 0 {
                    0
                } else {
                    geo.inodes_per_group - d.itable_unused
                }
            })
            .collect();
        let flags = sb.u32(S_FLAGS);
        let unsigned = flags & FLAGS_UNSIGNED_HASH != 0 && flags & FLAGS_SIGNED_HASH == 0;
        let hasher = DirHasher::new(sb.hash_seed(), unsigned);
        let def_hash = sb.raw[S_DEF_HASH_VERSION];
        let n = geo.group_count as usize;
        Ok(Ext4 {
            dev,
            sb,
            geo,
            groups,
            block_bitmaps: vec![None; n],
            bb_dirty: BTreeSet::new(),
            inode_bitmaps: vec![None; n],
            ib_dirty: BTreeSet::new(),
            itable_init,
            inodes: HashMap::new(),
            inode_dirty: BTreeSet::new(),
            dirs: HashMap::new(),
            dir_dirty: BTreeSet::new(),
            xattr_dirty: BTreeMap::new(),
            block_cursor: 0,
            inode_cursor: 0,
            hasher,
            def_hash,
            itable_cache: None,
            meta_by_group: None,
        })
    }

    /// The device (for reading back results).
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, for writes that bypass the filesystem (TurboOCI maps file blocks onto
    /// remote data through it). Writing blocks the filesystem owns corrupts it.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back. Unflushed changes are lost: call [`Ext4::flush`] first.
    pub fn into_device(self) -> D {
        self.dev
    }

    /// Block and inode totals as they will be after the next flush.
    pub fn stats(&self) -> FsStats {
        FsStats {
            block_size: self.geo.block_size,
            blocks_count: self.geo.blocks_count,
            free_blocks: self.groups.iter().map(|d| u64::from(d.free_blocks)).sum(),
            reserved_blocks: self.sb.reserved_blocks_count(),
            inodes_count: self.geo.inodes_count,
            free_inodes: self.groups.iter().map(|d| d.free_inodes).sum(),
            group_count: self.geo.group_count,
        }
    }

    pub(crate) fn has_ro_compat(&self, f: u32) -> bool {
        self.sb.ro_compat() & f != 0
    }

    // ---- raw block I/O ----

    /// The filesystem block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.geo.block_size as u32
    }

    pub(crate) fn bs(&self) -> usize {
        self.geo.block_size as usize
    }

    pub(crate) fn read_block(&self, b: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.bs()];
        self.dev.read_exact_at(&mut buf, b * self.geo.block_size)?;
        Ok(buf)
    }

    pub(crate) fn write_block(&mut self, b: u64, data: &[u8]) -> Result<()> {
        if let Some((cb, _)) = &self.itable_cache {
            if *cb == b {
                self.itable_cache = None;
            }
        }
        self.dev.write_at(data, b * self.geo.block_size)?;
        Ok(())
    }

    /// Writes regular-file contents at block `b`: data the filesystem never reads back, which
    /// the device may stream away ([`obd_format::io::WriteAt::write_bulk_at`]).
    pub(crate) fn write_bulk_blocks(&mut self, b: u64, data: &[u8]) -> Result<()> {
        if let Some((cb, _)) = &self.itable_cache {
            let n = (data.len() as u64).div_ceil(self.geo.block_size);
            if (b..b + n).contains(cb) {
                self.itable_cache = None;
            }
        }
        self.dev.write_bulk_at(data, b * self.geo.block_size)?;
        Ok(())
    }

    /// Writes `data` at block `b` unless the device already holds exactly that.
    pub(crate) fn write_block_if_changed(&mut self, b: u64, data: &[u8]) -> Result<bool> {
        if self.read_block(b)? == data {
            return Ok(false);
        }
        self.write_block(b, data)?;
        Ok(true)
    }

    // ---- bitmaps ----

    fn group_of_block(&self, b: u64) -> (u32, usize) {
        let rel = b - self.geo.first_data_block;
        (
            (rel / self.geo.blocks_per_group) as u32,
            (rel % self.geo.blocks_per_group) as usize,
        )
    }

    /// Metadata ranges (bitmaps, inode tables) of all groups, indexed by the group they lie in.
    fn meta_ranges(&mut self, g: u32) -> Vec<(u64, u64)> {
        if self.meta_by_group.is_none() {
            let mut v = vec![Vec::new(); self.geo.group_count as usize];
            for d in &self.groups {
                for (start, len) in [
                    (d.block_bitmap, 1),
                    (d.inode_bitmap, 1),
                    (d.inode_table, self.geo.itable_blocks),
                ] {
                    let mut b = start;
                    while b < start + len {
                        let (grp, _) = self.group_of_block(b);
                        let gend = self.geo.group_first_block(grp) + self.geo.blocks_per_group;
                        let n = (start + len).min(gend) - b;
                        v[grp as usize].push((b, n));
                        b += n;
                    }
                }
            }
            self.meta_by_group = Some(v);
        }
        self.meta_by_group
            .as_ref()
            .map(|v| v[g as usize].clone())
            .unwrap_or_default()
    }

    pub(crate) fn block_bitmap(&mut self, g: u32) -> Result<&mut Bitmap> {
        if self.block_bitmaps[g as usize].is_none() {
            let bpg = self.geo.blocks_per_group as usize;
            let d = &self.groups[g as usize];
            let mut bm = if self.sb.has_gdt_csum() && d.flags & BG_BLOCK_UNINIT != 0 {
                let mut bm = Bitmap::new(bpg);
                bm.set_range(0, self.geo.super_overhead(g) as usize);
                let first = self.geo.group_first_block(g);
                for (b, n) in self.meta_ranges(g) {
                    bm.set_range((b - first) as usize, n as usize);
                }
                bm
            } else {
                let blk = self.read_block(d.block_bitmap)?;
                Bitmap::from_bytes(&blk, bpg)
            };
            let len = self.geo.group_len(g) as usize;
            bm.set_range(len, bpg - len);
            self.block_bitmaps[g as usize] = Some(bm);
        }
        Ok(self.block_bitmaps[g as usize]
            .as_mut()
            .expect("loaded above"))
    }

    pub(crate) fn inode_bitmap(&mut self, g: u32) -> Result<&mut Bitmap> {
        if self.inode_bitmaps[g as usize].is_none() {
            let ipg = self.geo.inodes_per_group as usize;
            let d = &self.groups[g as usize];
            let bm = if self.sb.has_gdt_csum() && d.flags & BG_INODE_UNINIT != 0 {
                Bitmap::new(ipg)
            } else {
                let blk = self.read_block(d.inode_bitmap)?;
                Bitmap::from_bytes(&blk, ipg)
            };
            self.inode_bitmaps[g as usize] = Some(bm);
        }
        Ok(self.inode_bitmaps[g as usize]
            .as_mut()
            .expect("loaded above"))
    }

    // ---- allocation ----

    /// Allocates up to `want` consecutive blocks at or after the next-fit cursor; returns
    /// `(first, count)` with `count >= 1`.
    pub(crate) fn alloc_blocks(&mut self, want: u64) -> Result<(u64, u64)> {
        let want = want.clamp(1, self.geo.blocks_per_group);
        let cursor = self
            .block_cursor
            .clamp(self.geo.first_data_block, self.geo.blocks_count - 1);
        let (mut g, mut off) = self.group_of_block(cursor);
        for _ in 0..=self.geo.group_count {
            if self.groups[g as usize].free_blocks > 0 {
                let bm = self.block_bitmap(g)?;
                if let Some(i) = bm.find_zero(off) {
                    let n = bm.zero_run(i, want as usize);
                    bm.set_range(i, n);
                    let d = &mut self.groups[g as usize];
                    d.free_blocks = d.free_blocks.saturating_sub(n as u32);
                    d.flags &= !BG_BLOCK_UNINIT;
                    self.bb_dirty.insert(g);
                    let first = self.geo.group_first_block(g) + i as u64;
                    self.block_cursor = first + n as u64;
                    return Ok((first, n as u64));
                }
            }
            g = (g + 1) % self.geo.group_count;
            off = 0;
        }
        Err(Error::NoSpace)
    }

    /// Allocates exactly `n` blocks, possibly in several runs.
    pub(crate) fn alloc_many(&mut self, n: u64) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(n as usize);
        while (out.len() as u64) < n {
            let (b, got) = self.alloc_blocks(n - out.len() as u64)?;
            out.extend(b..b + got);
        }
        Ok(out)
    }

    /// Returns blocks `[b, b+n)` to the free pool.
    pub(crate) fn free_blocks(&mut self, b: u64, n: u64) -> Result<()> {
        let mut cur = b;
        let end = b + n;
        while cur < end {
            if cur < self.geo.first_data_block || cur >= self.geo.blocks_count {
                return Err(Error::BadExtentTree {
                    ino: 0,
                    reason: format!("freeing block {cur} outside the fs"),
                });
            }
            let (g, i) = self.group_of_block(cur);
            let take = (end - cur).min(self.geo.blocks_per_group - i as u64);
            let bm = self.block_bitmap(g)?;
            let mut freed = 0u32;
            for k in i..i + take as usize {
                if bm.get(k) {
                    bm.clear(k);
                    freed += 1;
                }
            }
            let d = &mut self.groups[g as usize];
            d.free_blocks += freed;
            d.flags &= !BG_BLOCK_UNINIT;
            self.bb_dirty.insert(g);
            cur += take;
        }
        Ok(())
    }

    /// Allocates an inode at or after the next-fit cursor.
    pub(crate) fn alloc_inode(&mut self, is_dir: bool) -> Result<u32> {
        let ipg = self.geo.inodes_per_group;
        let start = self
            .inode_cursor
            .max(self.geo.first_ino)
            .min(self.geo.inodes_count);
        let mut g = (start - 1) / ipg;
        let mut off = ((start - 1) % ipg) as usize;
        let csum = self.sb.has_gdt_csum();
        for _ in 0..=self.geo.group_count {
            if g == 0 {
                off = off.max(self.geo.first_ino as usize - 1);
            }
            if self.groups[g as usize].free_inodes > 0 {
                let bm = self.inode_bitmap(g)?;
                if let Some(i) = bm.find_zero(off) {
                    bm.set(i);
                    let d = &mut self.groups[g as usize];
                    d.free_inodes -= 1;
                    if is_dir {
                        d.used_dirs += 1;
                    }
                    if csum {
                        let unused_after = ipg - i as u32 - 1;
                        if d.flags & BG_INODE_UNINIT != 0 {
                            d.flags &= !BG_INODE_UNINIT;
                            d.itable_unused = unused_after;
                        } else {
                            d.itable_unused = d.itable_unused.min(unused_after);
                        }
                    }
                    self.ib_dirty.insert(g);
                    let ino = g * ipg + i as u32 + 1;
                    self.inode_cursor = ino;
                    return Ok(ino);
                }
            }
            g = (g + 1) % self.geo.group_count;
            off = 0;
        }
        Err(Error::NoInodes)
    }

    pub(crate) fn free_inode_bit(&mut self, ino: u32, was_dir: bool) -> Result<()> {
        let ipg = self.geo.inodes_per_group;
        let g = (ino - 1) / ipg;
        let i = ((ino - 1) % ipg) as usize;
        let bm = self.inode_bitmap(g)?;
        if bm.get(i) {
            bm.clear(i);
            let d = &mut self.groups[g as usize];
            d.free_inodes += 1;
            if was_dir {
                d.used_dirs = d.used_dirs.saturating_sub(1);
            }
            self.ib_dirty.insert(g);
        }
        Ok(())
    }

    // ---- inodes ----

    pub(crate) fn check_ino(&self, ino: u32) -> Result<()> {
        if ino == 0 || ino > self.geo.inodes_count {
            return Err(Error::InodeOutOfRange(u64::from(ino)));
        }
        Ok(())
    }

    /// Location of an inode: (group, slot, itable block, byte offset in block).
    pub(crate) fn inode_loc(&self, ino: u32) -> (u32, u32, u64, usize) {
        let ipg = self.geo.inodes_per_group;
        let g = (ino - 1) / ipg;
        let slot = (ino - 1) % ipg;
        let ipb = self.geo.inodes_per_block();
        let blk = self.groups[g as usize].inode_table + u64::from(slot / ipb);
        let off = (slot % ipb * self.geo.inode_size) as usize;
        (g, slot, blk, off)
    }

    pub(crate) fn inode(&mut self, ino: u32) -> Result<&Inode> {
        self.check_ino(ino)?;
        if !self.inodes.contains_key(&ino) {
            let (g, slot, blk, off) = self.inode_loc(ino);
            let isz = self.geo.inode_size as usize;
            let inode = if slot >= self.itable_init[g as usize] {
                Inode::zeroed(isz)
            } else {
                let cached = matches!(&self.itable_cache, Some((b, _)) if *b == blk);
                if !cached {
                    let data = self.read_block(blk)?;
                    self.itable_cache = Some((blk, data));
                }
                let data = &self.itable_cache.as_ref().expect("cached above").1;
                Inode {
                    raw: data[off..off + isz].to_vec(),
                }
            };
            self.inodes.insert(ino, inode);
        }
        Ok(self.inodes.get(&ino).expect("inserted above"))
    }

    pub(crate) fn put_inode(&mut self, ino: u32, inode: Inode) {
        self.inodes.insert(ino, inode);
        self.inode_dirty.insert(ino);
    }

    /// The inode's kind, failing on an unknown mode.
    pub(crate) fn kind_of(&mut self, ino: u32) -> Result<FileKind> {
        let inode = self.inode(ino)?;
        inode.kind().ok_or_else(|| Error::BadInode {
            ino,
            reason: format!("unknown mode {:#o}", inode.mode()),
        })
    }

    /// Whether the inode maps data blocks through `i_block` (not a fast symlink or device).
    pub(crate) fn has_block_map(inode: &Inode) -> bool {
        match inode.kind() {
            Some(FileKind::Regular) | Some(FileKind::Directory) => true,
            Some(FileKind::Symlink) => inode.flags() & FL_EXTENTS != 0 || inode.size() >= 60,
            _ => false,
        }
    }

    pub(crate) fn file_map(&mut self, ino: u32) -> Result<FileMap> {
        let inode = self.inode(ino)?.clone();
        if !Self::has_block_map(&inode) {
            return Ok(FileMap::default());
        }
        extent::read_map(&self.dev, self.geo.blocks_count, ino, &inode)
    }

    // ---- directories ----

    /// Loads a directory into memory (once per layer).
    pub(crate) fn dir(&mut self, ino: u32) -> Result<&mut Dir> {
        if !self.dirs.contains_key(&ino) {
            let inode = self.inode(ino)?.clone();
            if !inode.is_dir() {
                return Err(Error::NotADirectory(format!("inode {ino}")));
            }
            let map = self.file_map(ino)?;
            if map.data_blocks() > MAX_DIR_BLOCKS as u64 {
                return Err(Error::BadDirectory {
                    ino,
                    reason: "directory too large".into(),
                });
            }
            let phys = map.dense_blocks(ino)?;
            let mut blocks = Vec::with_capacity(phys.len());
            let mut uninit = vec![false; phys.len()];
            for e in &map.extents {
                if e.uninit {
                    for k in 0..e.len {
                        uninit[(e.lblk + k) as usize] = true;
                    }
                }
            }
            for (i, &p) in phys.iter().enumerate() {
                blocks.push(if uninit[i] {
                    vec![0u8; self.bs()]
                } else {
                    self.read_block(p)?
                });
            }
            let mut parent = ino;
            let mut entries = BTreeMap::new();
            for (i, b) in blocks.iter().enumerate() {
                if i > 0 && uninit[i] {
                    continue;
                }
                for (name, e) in dir::parse_block(b, ino, self.geo.inodes_count)? {
                    if name == b"." {
                        continue;
                    }
                    if name == b".." {
                        if i == 0 {
                            parent = e.ino;
                        }
                        continue;
                    }
                    entries.insert(name, e);
                }
            }
            let layout = if inode.flags() & FL_INDEX != 0 {
                dir::parse_layout(&blocks)
            } else {
                None
            };
            self.dirs.insert(
                ino,
                Dir {
                    parent,
                    entries,
                    layout,
                },
            );
        }
        Ok(self.dirs.get_mut(&ino).expect("inserted above"))
    }

    pub(crate) fn dir_nlink(&self) -> bool {
        self.has_ro_compat(feature::RO_COMPAT_DIR_NLINK)
    }
}
