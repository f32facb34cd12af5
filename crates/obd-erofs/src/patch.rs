//! [`Patch`]: the blocks an incremental build changes, assembled in memory before anything
//! is written.
//!
//! Byte ranges are written into whole 4 KiB blocks. A block below `fresh_from` belongs to
//! the existing image: its current content is read from the device the first time it is
//! touched, and it is written back only if its bytes end up different (so rewriting an
//! inode with the same bytes costs nothing). A block at or above `fresh_from` is new: it
//! starts as zeros and is always written.

use std::collections::BTreeMap;

use obd_format::io::ReadAt;

use crate::error::Result;
use crate::format::BLKSZ;

const BS: usize = BLKSZ as usize;

struct Block {
    new: Vec<u8>,
    /// The content before the build; `None` for a fresh block.
    old: Option<Vec<u8>>,
}

impl Block {
    fn changed(&self) -> bool {
        self.old.as_ref().is_none_or(|o| *o != self.new)
    }
}

/// Changed blocks by block number.
pub(crate) struct Patch {
    fresh_from: u64,
    blocks: BTreeMap<u64, Block>,
}

impl Patch {
    /// A patch whose blocks from `fresh_from` on are new (never written before).
    pub(crate) fn new(fresh_from: u64) -> Patch {
        Patch {
            fresh_from,
            blocks: BTreeMap::new(),
        }
    }

    /// Writes `bytes` at byte `off` of the device image (possibly across blocks).
    pub(crate) fn put<R: ReadAt + ?Sized>(
        &mut self,
        dev: &R,
        off: u64,
        bytes: &[u8],
    ) -> Result<()> {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = off + done as u64;
            let (b, o) = (at / BLKSZ, (at % BLKSZ) as usize);
            let n = (BS - o).min(bytes.len() - done);
            let blk = match self.blocks.entry(b) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let old = if b >= self.fresh_from {
                        None
                    } else {
                        let mut cur = vec![0u8; BS];
                        dev.read_exact_at(&mut cur, b * BLKSZ)?;
                        Some(cur)
                    };
                    let new = old.clone().unwrap_or_else(|| vec![0u8; BS]);
                    v.insert(Block { new, old })
                }
            };
            blk.new[o..o + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Zeroes `len` bytes at byte `off`.
    pub(crate) fn zero<R: ReadAt + ?Sized>(&mut self, dev: &R, off: u64, len: usize) -> Result<()> {
        self.put(dev, off, &vec![0u8; len])
    }

    /// The blocks to write, in block order: `(block number, 4 KiB)`.
    pub(crate) fn changed(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.blocks
            .iter()
            .filter(|(_, b)| b.changed())
            .map(|(&n, b)| (n, b.new.as_slice()))
    }

    /// How many blocks [`changed`](Self::changed) yields, and how many of them existed
    /// before (rewritten in place).
    pub(crate) fn counts(&self) -> (u64, u64) {
        let mut all = 0;
        let mut old = 0;
        for (&n, b) in &self.blocks {
            if b.changed() {
                all += 1;
                old += u64::from(n < self.fresh_from);
            }
        }
        (all, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_blocks_are_written() {
        let mut dev = vec![0u8; 4 * BS];
        dev[BS..2 * BS].fill(7);
        let mut p = Patch::new(3);
        // Same bytes: no change.
        p.put(&dev, BLKSZ + 10, &[7, 7, 7]).unwrap();
        // Across blocks 1 and 2.
        p.put(&dev, 2 * BLKSZ - 2, &[1, 2, 3, 4]).unwrap();
        // A fresh block of zeros is still written.
        p.zero(&dev, 3 * BLKSZ, 5).unwrap();
        let got: Vec<u64> = p.changed().map(|(n, _)| n).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(p.counts(), (3, 2));
        let b1 = p.changed().next().unwrap().1;
        assert_eq!(&b1[BS - 2..], &[1, 2]);
        assert_eq!(b1[0], 7);
        let mut q = Patch::new(3);
        q.put(&dev, BLKSZ, &[7; 100]).unwrap();
        assert_eq!(q.counts(), (0, 0));
    }
}
