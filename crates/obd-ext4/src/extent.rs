//! File block maps: reading extent trees (and legacy indirect block maps) with validation, and
//! building compact extent trees (index levels when a file has more than four extents).

use obd_format::io::ReadAt;

use crate::bytes::{le16, le32, put16, put32};
use crate::error::{Error, Result};
use crate::inode::{Inode, FL_EXTENTS};

const EXT_MAGIC: u16 = 0xF30A;
/// Longest initialised extent.
pub(crate) const MAX_EXTENT_LEN: u32 = 32768;
const ROOT_ENTRIES: usize = 4;
/// Deepest tree the kernel accepts.
const MAX_DEPTH: u16 = 5;
/// Upper bound on tree nodes visited for one inode (defends against hostile trees).
const MAX_NODES: usize = 1 << 20;

/// A run of logical blocks mapped to consecutive physical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub lblk: u32,
    pub pblk: u64,
    pub len: u32,
    /// Allocated but reads as zeros.
    pub uninit: bool,
}

/// Everything an inode owns on disk besides its xattr block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FileMap {
    /// Data extents sorted by logical block.
    pub extents: Vec<Extent>,
    /// Extent tree nodes (or indirect blocks) outside the inode.
    pub meta: Vec<u64>,
}

impl FileMap {
    pub fn data_blocks(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum()
    }
    /// Physical block of every logical block `0..n`, failing on holes (directories).
    pub fn dense_blocks(&self, ino: u32) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in &self.extents {
            if e.lblk as usize != out.len() {
                return Err(Error::BadDirectory {
                    ino,
                    reason: format!("hole before block {}", e.lblk),
                });
            }
            out.extend((0..u64::from(e.len)).map(|i| e.pblk + i));
        }
        Ok(out)
    }
}

struct Reader<'a> {
    dev: &'a dyn ReadAt,
    blocks_count: u64,
    ino: u32,
    nodes: usize,
}

impl Reader<'_> {
    fn bad<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(Error::BadExtentTree {
            ino: self.ino,
            reason: reason.into(),
        })
    }
    fn check_range(&self, pblk: u64, len: u64) -> Result<()> {
        if pblk == 0 || pblk.checked_add(len).is_none_or(|e| e > self.blocks_count) {
            return self.bad(format!("block range {pblk}+{len} outside the filesystem"));
        }
        Ok(())
    }
    fn read_block(&mut self, pblk: u64) -> Result<Vec<u8>> {
        self.check_range(pblk, 1)?;
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return self.bad("too many tree nodes");
        }
        let mut b = vec![0u8; 4096];
        self.dev.read_exact_at(&mut b, pblk * 4096)?;
        Ok(b)
    }

    fn node(&mut self, buf: &[u8], depth_expect: Option<u16>, out: &mut FileMap) -> Result<()> {
        let magic = le16(buf, 0);
        let entries = le16(buf, 2) as usize;
        let max = le16(buf, 4) as usize;
        let depth = le16(buf, 6);
        if magic != EXT_MAGIC {
            return self.bad(format!("bad extent header magic {magic:#x}"));
        }
        let cap = (buf.len() - 12) / 12;
        if entries > max || max > cap {
            return self.bad(format!("extent header counts {entries}/{max}"));
        }
        if depth > MAX_DEPTH || depth_expect.is_some_and(|d| d != depth) {
            return self.bad(format!("extent node depth {depth}"));
        }
        for i in 0..entries {
            let e = &buf[12 + 12 * i..24 + 12 * i];
            if depth == 0 {
                let lblk = le32(e, 0);
                let raw_len = u32::from(le16(e, 4));
                let (len, uninit) = if raw_len > MAX_EXTENT_LEN {
                    (raw_len - MAX_EXTENT_LEN, true)
                } else {
                    (raw_len, false)
                };
                let pblk = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
                if len == 0 {
                    return self.bad("empty extent");
                }
                self.check_range(pblk, u64::from(len))?;
                if u64::from(lblk) + u64::from(len) > 1 << 32 {
                    return self.bad("extent past the largest logical block");
                }
                if let Some(prev) = out.extents.last() {
                    if u64::from(prev.lblk) + u64::from(prev.len) > u64::from(lblk) {
                        return self.bad(format!("extents overlap or are unsorted at {lblk}"));
                    }
                }
                out.extents.push(Extent {
                    lblk,
                    pblk,
                    len,
                    uninit,
                });
            } else {
                let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                let buf = self.read_block(child)?;
                out.meta.push(child);
                self.node(&buf, Some(depth - 1), out)?;
            }
        }
        Ok(())
    }

    fn indirect(&mut self, pblk: u64, level: u32, lblk: &mut u64, out: &mut FileMap) -> Result<()> {
        let per = 1024u64;
        let span = per.pow(level);
        if pblk == 0 {
            *lblk += span;
            return Ok(());
        }
        let buf = self.read_block(pblk)?;
        out.meta.push(pblk);
        for i in 0..per as usize {
            let p = u64::from(le32(&buf, 4 * i));
            if level == 1 {
                if p != 0 {
                    self.check_range(p, 1)?;
                    push_block(out, *lblk, p);
                }
                *lblk += 1;
            } else {
                self.indirect(p, level - 1, lblk, out)?;
            }
        }
        Ok(())
    }
}

fn push_block(out: &mut FileMap, lblk: u64, pblk: u64) {
    if let Some(last) = out.extents.last_mut() {
        if u64::from(last.lblk) + u64::from(last.len) == lblk
            && last.pblk + u64::from(last.len) == pblk
            && last.len < MAX_EXTENT_LEN
        {
            last.len += 1;
            return;
        }
    }
    out.extents.push(Extent {
        lblk: lblk as u32,
        pblk,
        len: 1,
        uninit: false,
    });
}

/// Reads the block map of an inode whose `i_block` holds an extent tree or a block map.
pub(crate) fn read_map(
    dev: &dyn ReadAt,
    blocks_count: u64,
    ino: u32,
    inode: &Inode,
) -> Result<FileMap> {
    let mut r = Reader {
        dev,
        blocks_count,
        ino,
        nodes: 0,
    };
    let mut out = FileMap::default();
    if inode.flags() & FL_EXTENTS != 0 {
        let root = inode.i_block().to_vec();
        r.node(&root, None, &mut out)?;
    } else {
        let mut lblk = 0u64;
        for i in 0..12 {
            let p = u64::from(inode.i_block_word(i));
            if p != 0 {
                r.check_range(p, 1)?;
                push_block(&mut out, lblk, p);
            }
            lblk += 1;
        }
        for (slot, level) in [(12, 1), (13, 2), (14, 3)] {
            let p = u64::from(inode.i_block_word(slot));
            r.indirect(p, level, &mut lblk, &mut out)?;
        }
    }
    Ok(out)
}

/// Appends a run, merging with the last extent when contiguous and splitting so that no
/// extent is longer than [`MAX_EXTENT_LEN`].
pub(crate) fn push_run(extents: &mut Vec<Extent>, mut lblk: u32, mut pblk: u64, mut len: u32) {
    while len > 0 {
        if let Some(last) = extents.last_mut() {
            let contiguous = u64::from(last.lblk) + u64::from(last.len) == u64::from(lblk)
                && last.pblk + u64::from(last.len) == pblk
                && !last.uninit;
            if contiguous && last.len < MAX_EXTENT_LEN {
                let take = (MAX_EXTENT_LEN - last.len).min(len);
                last.len += take;
                lblk += take;
                pblk += u64::from(take);
                len -= take;
                continue;
            }
        }
        let take = len.min(MAX_EXTENT_LEN);
        extents.push(Extent {
            lblk,
            pblk,
            len: take,
            uninit: false,
        });
        lblk = lblk.wrapping_add(take);
        pblk += u64::from(take);
        len -= take;
    }
}

/// Number of tree blocks a tree of `n` extents needs with blocks of `bs` bytes.
pub(crate) fn tree_blocks_needed(n: usize, bs: usize) -> usize {
    let per = (bs - 12) / 12;
    let mut count = n;
    let mut total = 0;
    while count > ROOT_ENTRIES {
        count = count.div_ceil(per);
        total += count;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(buf, 0, EXT_MAGIC);
    put16(buf, 2, entries as u16);
    put16(buf, 4, max as u16);
    put16(buf, 6, depth);
    put32(buf, 8, 0);
}

fn leaf_entry(buf: &mut [u8], off: usize, e: &Extent) {
    put32(buf, off, e.lblk);
    let len = if e.uninit {
        e.len + MAX_EXTENT_LEN
    } else {
        e.len
    };
    put16(buf, off + 4, len as u16);
    put16(buf, off + 6, (e.pblk >> 32) as u16);
    put32(buf, off + 8, e.pblk as u32);
}

fn index_entry(buf: &mut [u8], off: usize, lblk: u32, child: u64) {
    put32(buf, off, lblk);
    put32(buf, off + 4, child as u32);
    put16(buf, off + 8, (child >> 32) as u16);
    put16(buf, off + 10, 0);
}

/// Builds an extent tree. `blocks` must hold exactly [`tree_blocks_needed`] physical blocks;
/// returns the 60-byte `i_block` root and the contents of each tree block (same order).
pub(crate) fn build_tree(
    extents: &[Extent],
    blocks: &[u64],
    bs: usize,
) -> ([u8; 60], Vec<Vec<u8>>) {
    let per = (bs - 12) / 12;
    let mut root = [0u8; 60];
    if extents.len() <= ROOT_ENTRIES {
        header(&mut root, extents.len(), ROOT_ENTRIES, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut root, 12 + 12 * i, e);
        }
        return (root, Vec::new());
    }
    let mut out = Vec::new();
    let mut next = 0usize;
    // (first logical block, physical block) of the nodes of the level being built.
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(per) {
        let mut b = vec![0u8; bs];
        header(&mut b, chunk.len(), per, 0);
        for (i, e) in chunk.iter().enumerate() {
            leaf_entry(&mut b, 12 + 12 * i, e);
        }
        level.push((chunk[0].lblk, blocks[next]));
        next += 1;
        out.push(b);
    }
    let mut depth = 1u16;
    while level.len() > ROOT_ENTRIES {
        let mut up = Vec::new();
        for chunk in level.chunks(per) {
            let mut b = vec![0u8; bs];
            header(&mut b, chunk.len(), per, depth);
            for (i, (l, p)) in chunk.iter().enumerate() {
                index_entry(&mut b, 12 + 12 * i, *l, *p);
            }
            up.push((chunk[0].0, blocks[next]));
            next += 1;
            out.push(b);
        }
        level = up;
        depth += 1;
    }
    header(&mut root, level.len(), ROOT_ENTRIES, depth);
    for (i, (l, p)) in level.iter().enumerate() {
        index_entry(&mut root, 12 + 12 * i, *l, *p);
    }
    (root, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(n: u32) -> Vec<Extent> {
        (0..n)
            .map(|i| Extent {
                lblk: i * 2,
                pblk: 1000 + u64::from(i) * 3,
                len: 1,
                uninit: false,
            })
            .collect()
    }

    fn roundtrip(n: u32) {
        let ex = mk(n);
        let need = tree_blocks_needed(ex.len(), 4096);
        let blocks: Vec<u64> = (0..need as u64).map(|i| 10 + i).collect();
        let (root, nodes) = build_tree(&ex, &blocks, 4096);
        let mut dev = vec![0u8; 2000 * 4096];
        for (b, data) in blocks.iter().zip(&nodes) {
            dev[*b as usize * 4096..(*b as usize + 1) * 4096].copy_from_slice(data);
        }
        let mut inode = Inode::new(256, 0o100644);
        inode.set_flags(FL_EXTENTS);
        inode.i_block_mut().copy_from_slice(&root);
        let map = read_map(&dev, 200_000, 12, &inode).unwrap();
        assert_eq!(map.extents, ex);
        assert_eq!(map.meta.len(), need);
    }

    #[test]
    fn trees_of_many_sizes() {
        assert_eq!(tree_blocks_needed(4, 4096), 0);
        assert_eq!(tree_blocks_needed(5, 4096), 1);
        assert_eq!(tree_blocks_needed(340 * 4, 4096), 4);
        assert_eq!(tree_blocks_needed(340 * 4 + 1, 4096), 6);
        for n in [0, 1, 4, 5, 340, 341, 1360, 1361, 2000] {
            roundtrip(n);
        }
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut inode = Inode::new(256, 0o100644);
        inode.set_flags(FL_EXTENTS);
        let dev = vec![0u8; 4096 * 4];
        assert!(read_map(&dev, 4, 12, &inode).is_err()); // zero magic
        let mut root = [0u8; 60];
        header(&mut root, 1, 4, 1);
        index_entry(&mut root, 12, 0, 99);
        inode.i_block_mut().copy_from_slice(&root);
        assert!(matches!(
            read_map(&dev, 4, 12, &inode),
            Err(Error::BadExtentTree { .. })
        ));
        header(&mut root, 5, 4, 0);
        inode.i_block_mut().copy_from_slice(&root);
        assert!(read_map(&dev, 4, 12, &inode).is_err());
    }

    #[test]
    fn runs_split_at_max_len() {
        let mut v = Vec::new();
        push_run(&mut v, 0, 100, 40000);
        push_run(&mut v, 40000, 40100, 10);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].len, 32768);
        assert_eq!(v[1].len, 40010 - 32768);
    }
}
