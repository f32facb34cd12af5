//! Writing a layer back: directories re-serialised (linear or htree), xattr sets placed,
//! dirty inodes grouped by inode-table block, then the bitmaps, descriptor blocks and the
//! primary superblock — each block written only when its bytes changed.

use std::collections::BTreeMap;

use obd_format::io::{BlockDevice, WriteAt};

use crate::dir::{self, Hashed};
use crate::error::{Error, Result};
use crate::extent::{self, Extent};
use crate::fs::Ext4;
use crate::inode::{Inode, FL_EXTENTS, FL_INDEX, LINK_MAX};
use crate::superblock::SUPERBLOCK_OFFSET;
use crate::xattr;

impl<D: BlockDevice> Ext4<D> {
    /// Writes every change of this layer to the device and flushes it. The handle stays
    /// usable afterwards.
    pub fn flush(&mut self) -> Result<()> {
        let dirs: Vec<u32> = std::mem::take(&mut self.dir_dirty).into_iter().collect();
        for ino in dirs {
            self.flush_dir(ino)?;
        }
        let xattrs = std::mem::take(&mut self.xattr_dirty);
        for (ino, set) in xattrs {
            self.flush_xattrs(ino, &set)?;
        }
        self.flush_inodes()?;
        for g in std::mem::take(&mut self.bb_dirty) {
            let bs = self.bs();
            let bm = self.block_bitmap(g)?.to_block(bs);
            let b = self.groups[g as usize].block_bitmap;
            self.write_block_if_changed(b, &bm)?;
        }
        for g in std::mem::take(&mut self.ib_dirty) {
            let bs = self.bs();
            let bm = self.inode_bitmap(g)?.to_block(bs);
            let b = self.groups[g as usize].inode_bitmap;
            self.write_block_if_changed(b, &bm)?;
        }
        self.flush_descriptors()?;
        let stats = self.stats();
        self.sb.set_free_blocks_count(stats.free_blocks);
        self.sb.set_free_inodes_count(stats.free_inodes);
        let mut cur = [0u8; 1024];
        obd_format::io::ReadAt::read_exact_at(&self.dev, &mut cur, SUPERBLOCK_OFFSET)?;
        if cur != self.sb.raw {
            self.dev.write_at(&self.sb.raw, SUPERBLOCK_OFFSET)?;
        }
        WriteAt::flush(&mut self.dev)?;
        Ok(())
    }

    /// Directory link count for `subdirs` subdirectories (1 once past the ext4 limit).
    pub(crate) fn dir_links(subdirs: usize) -> u32 {
        let n = 2 + subdirs as u64;
        if n > u64::from(LINK_MAX) {
            1
        } else {
            n as u32
        }
    }

    fn flush_dir(&mut self, ino: u32) -> Result<()> {
        let Some(d) = self.dirs.get(&ino).cloned() else {
            return Ok(());
        };
        let bs = self.bs();
        let mut inode = self.inode(ino)?.clone();
        let old = self.file_map(ino)?;
        let old_blocks = old.dense_blocks(ino)?;
        let entries = d.entries.iter().map(|(n, e)| (n.as_slice(), *e));
        let (blocks, layout) = match dir::build_linear(ino, d.parent, entries, bs) {
            Some(b) => (vec![b], None),
            None => {
                let version = match &d.layout {
                    Some(l) if self.hasher.hash(l.hash_version, b"x").is_some() => l.hash_version,
                    _ => self.def_hash,
                };
                let prev = d.layout.as_ref().filter(|l| l.hash_version == version);
                let mut hashed: Vec<Hashed> = Vec::with_capacity(d.entries.len());
                for (n, e) in &d.entries {
                    let (hash, minor) = self.hasher.hash(version, n).ok_or_else(|| {
                        Error::UnsupportedFeature(format!("directory hash version {version}"))
                    })?;
                    hashed.push(Hashed {
                        hash,
                        minor,
                        name: n,
                        ent: *e,
                    });
                }
                hashed.sort_by(|a, b| (a.hash, a.minor, a.name).cmp(&(b.hash, b.minor, b.name)));
                let (b, l) = dir::build_htree(ino, d.parent, &hashed, prev, version, bs)?;
                (b, Some(l))
            }
        };
        let n = blocks.len();
        let keep = n.min(old_blocks.len());
        let mut phys: Vec<u64> = old_blocks[..keep].to_vec();
        if n > keep {
            phys.extend(self.alloc_many((n - keep) as u64)?);
        }
        for &b in &old_blocks[keep..] {
            self.free_blocks(b, 1)?;
        }
        let old_sectors = inode.sectors(self.geo.block_size);
        let old_owned = old.data_blocks() + old.meta.len() as u64;
        let mut meta_count = old.meta.len() as u64;
        if phys != old_blocks || inode.flags() & FL_EXTENTS == 0 {
            for &m in &old.meta {
                self.free_blocks(m, 1)?;
            }
            let mut extents: Vec<Extent> = Vec::new();
            for (i, &p) in phys.iter().enumerate() {
                extent::push_run(&mut extents, i as u32, p, 1);
            }
            meta_count = self.write_extent_tree(&mut inode, &extents)?;
        }
        for (i, (blk, data)) in phys.iter().zip(&blocks).enumerate() {
            if i < keep {
                self.write_block_if_changed(*blk, data)?;
            } else {
                self.write_block(*blk, data)?;
            }
        }
        let sectors = old_sectors.saturating_sub(old_owned * 8) + (n as u64 + meta_count) * 8;
        inode.set_sectors(sectors);
        inode.set_size((n * bs) as u64);
        let mut flags = inode.flags() | FL_EXTENTS;
        if layout.is_some() {
            flags |= FL_INDEX;
        } else {
            flags &= !FL_INDEX;
        }
        inode.set_flags(flags);
        let subdirs = d.entries.values().filter(|e| e.ftype == 2).count();
        inode.set_links(Self::dir_links(subdirs));
        self.put_inode(ino, inode);
        if let Some(dd) = self.dirs.get_mut(&ino) {
            dd.layout = layout;
        }
        Ok(())
    }

    /// Builds and writes an extent tree for `extents` into `inode.i_block`; returns the
    /// number of tree blocks used.
    pub(crate) fn write_extent_tree(
        &mut self,
        inode: &mut Inode,
        extents: &[Extent],
    ) -> Result<u64> {
        let need = extent::tree_blocks_needed(extents.len(), self.bs());
        let blocks = self.alloc_many(need as u64)?;
        let (root, nodes) = extent::build_tree(extents, &blocks, self.bs());
        for (b, data) in blocks.iter().zip(&nodes) {
            self.write_block(*b, data)?;
        }
        inode.i_block_mut().copy_from_slice(&root);
        inode.set_flags(inode.flags() | FL_EXTENTS);
        Ok(need as u64)
    }

    fn flush_xattrs(&mut self, ino: u32, set: &BTreeMap<xattr::XattrKey, Vec<u8>>) -> Result<()> {
        if self.inode(ino)?.links() == 0 {
            return Ok(());
        }
        let mut inode = self.inode(ino)?.clone();
        let area = inode.xattr_area();
        let area_len = area.map_or(0, |s| inode.raw.len() - s);
        let placed = xattr::place(ino, set, area_len, self.bs())?;
        if let Some(start) = area {
            let bytes = placed.in_inode.unwrap_or_else(|| vec![0u8; area_len]);
            inode.raw[start..].copy_from_slice(&bytes);
        }
        let old = inode.file_acl();
        let mut sectors = inode.sectors(self.geo.block_size);
        match placed.block {
            Some(data) => {
                let reuse = old != 0 && self.xattr_refcount(old)? == 1;
                if reuse {
                    self.write_block_if_changed(old, &data)?;
                } else {
                    if old != 0 {
                        self.release_xattr_block(old)?;
                    } else {
                        sectors += 8;
                    }
                    let (b, _) = self.alloc_blocks(1)?;
                    self.write_block(b, &data)?;
                    inode.set_file_acl(b);
                }
            }
            None => {
                if old != 0 {
                    self.release_xattr_block(old)?;
                    inode.set_file_acl(0);
                    sectors = sectors.saturating_sub(8);
                }
            }
        }
        inode.set_sectors(sectors);
        self.put_inode(ino, inode);
        Ok(())
    }

    pub(crate) fn xattr_refcount(&self, b: u64) -> Result<u32> {
        if b == 0 || b >= self.geo.blocks_count {
            return Err(Error::BadXattr {
                ino: 0,
                reason: format!("xattr block {b} outside the fs"),
            });
        }
        let data = self.read_block(b)?;
        Ok(crate::bytes::le32(&data, 4))
    }

    /// Drops one reference to an xattr block, freeing it at zero.
    pub(crate) fn release_xattr_block(&mut self, b: u64) -> Result<()> {
        if b == 0 || b >= self.geo.blocks_count {
            return Err(Error::BadXattr {
                ino: 0,
                reason: format!("xattr block {b} outside the fs"),
            });
        }
        let mut data = self.read_block(b)?;
        let refs = crate::bytes::le32(&data, 4);
        if refs > 1 && crate::bytes::le32(&data, 0) == xattr::XATTR_MAGIC {
            crate::bytes::put32(&mut data, 4, refs - 1);
            self.write_block(b, &data)?;
        } else {
            self.free_blocks(b, 1)?;
        }
        Ok(())
    }

    fn flush_inodes(&mut self) -> Result<()> {
        let ipg = self.geo.inodes_per_group;
        let ipb = self.geo.inodes_per_block();
        let isz = self.geo.inode_size as usize;
        // Blocks to write: those with dirty inodes, plus (uninit_bg) the blocks of the inode
        // table that newly become part of the used range.
        let mut by_block: BTreeMap<u64, (u32, u32)> = BTreeMap::new(); // block -> (group, first slot)
        for &ino in &self.inode_dirty {
            let (g, slot, blk, _) = self.inode_loc(ino);
            by_block.insert(blk, (g, slot - slot % ipb));
        }
        let mut new_init: Vec<(u32, u32)> = Vec::new();
        if self.sb.has_gdt_csum() {
            for g in 0..self.geo.group_count {
                let used = ipg - self.groups[g as usize].itable_unused;
                let old = self.itable_init[g as usize];
                if used > old {
                    let it = self.groups[g as usize].inode_table;
                    let mut s = old - old % ipb;
                    while s < used {
                        by_block.insert(it + u64::from(s / ipb), (g, s));
                        s += ipb;
                    }
                    new_init.push((g, used));
                }
            }
        }
        let dirty = std::mem::take(&mut self.inode_dirty);
        for (blk, (g, first_slot)) in by_block {
            let init = self.itable_init[g as usize];
            let orig = self.read_block(blk)?;
            let mut data = orig.clone();
            for k in 0..ipb {
                let slot = first_slot + k;
                let ino = g * ipg + slot + 1;
                let range = (k as usize * isz)..((k as usize + 1) * isz);
                if dirty.contains(&ino) {
                    if let Some(i) = self.inodes.get(&ino) {
                        data[range].copy_from_slice(&i.raw);
                    }
                } else if slot >= init {
                    data[range].fill(0);
                }
            }
            if data != orig {
                self.write_block(blk, &data)?;
            }
        }
        for (g, used) in new_init {
            self.itable_init[g as usize] = used;
        }
        // Keep memory bounded: clean inodes can be re-read; keep those of loaded dirs.
        if self.inodes.len() > 1 << 16 {
            self.inodes.clear();
        }
        Ok(())
    }

    fn flush_descriptors(&mut self) -> Result<()> {
        let uuid = self.sb.uuid();
        let csum = self.sb.has_gdt_csum();
        let bs = self.bs();
        let per_block = bs / self.geo.desc_size;
        let gdt_start = self.geo.first_data_block + 1;
        let mut image = vec![0u8; self.geo.desc_blocks as usize * bs];
        for (g, d) in self.groups.iter_mut().enumerate() {
            let raw = d.serialize(csum.then_some((&uuid, g as u32)));
            let off = g * self.geo.desc_size;
            image[off..off + raw.len()].copy_from_slice(raw);
        }
        for (i, chunk) in image.chunks(bs).enumerate() {
            let b = gdt_start + i as u64;
            let cur = self.read_block(b)?;
            // Bytes past the last descriptor keep whatever the disk has.
            let used = ((self.geo.group_count as usize).saturating_sub(i * per_block))
                .min(per_block)
                * self.geo.desc_size;
            if cur[..used] != chunk[..used] {
                let mut out = cur.clone();
                out[..used].copy_from_slice(&chunk[..used]);
                self.write_block(b, &out)?;
            }
        }
        Ok(())
    }
}
