//! The incremental metadata of a later layer: only what the layer changed is written, over
//! the image the lower layers left on the stacked device.
//!
//! Nids count 32-byte slots from the superblock's `meta_blkaddr`, which never changes, so
//! an inode that is not rewritten keeps its nid and every directory entry naming it stays
//! valid. New inodes are appended after the layer's file data at any nid past the old
//! image (dirents hold 64-bit nids). What a node needs, compared with how it is stored
//! ([`OnDisk`]):
//!
//! * **Unchanged** (same inode fields, xattrs and directory entries, nids included):
//!   nothing is written.
//! * **Changed, same slot.** The inode is rewritten in place when its new form (inode,
//!   inline xattrs, inline tail) fits in its old slot: the bytes from its offset up to the
//!   next stored item or the end of its block. On the stacked device this writes only the
//!   blocks touched, in this layer; the nid, and so the parent's entry, stay the same. A
//!   directory whose last block no longer fits inline (it grew, or its inode became
//!   extended because its mtime is no longer the image's build time) turns flat plain:
//!   the inode stays in its slot and the blocks move.
//! * **Relocated.** A node whose inode no longer fits (e.g. compact to extended with no
//!   room left) gets a new slot, so the entries naming it change: its parents are
//!   rewritten, and for a directory the `..` entries of its subdirectories. A directory
//!   without subdirectories is also relocated (inode and inline tail together, packed with
//!   the other new inodes) when staying would cost a whole new block for its entries: the
//!   parent's block is then usually written anyway. The root is never relocated by choice
//!   (the superblock holds a 16-bit root nid).
//! * **New nodes** take new slots, except a node replacing an entry of the same file type
//!   whose old node is gone (a file replaced by a new version): it reuses that slot when it
//!   fits, so the parent's entry keeps its bytes.
//!
//! Directory blocks are looked up by binary search on each block's first name, so names
//! only need to be sorted across blocks, not packed. A changed directory keeps its block
//! partition (each entry goes to the stored block whose name range holds it), so adding
//! or removing a name rewrites that one block. Only when a block would overflow is the
//! directory repacked, with each block filled to 3/4 to leave room for later layers, and
//! its blocks written afresh (in place when they fit the old run, else appended). All the
//! changes are assembled in a [`Patch`], which writes a block only if its bytes changed,
//! and block 0 (the superblock: root nid, inode count, block count) last. The layout
//! depends only on the tree and the stored image, so output stays deterministic.

use std::collections::{HashMap, HashSet};

use obd_format::io::ReadAt;

use crate::error::{Error, Result};
use crate::format::{self, Dirent, DiskInode, SuperBlock, BLKSZ, DIRENT_SIZE, ISLOT};
use crate::patch::Patch;
use crate::reader::OnDisk;
use crate::tree::{Body, Kind, NodeId, Tree, ROOT};
use crate::writer::{self, PendingEntry};

const BS: usize = BLKSZ as usize;
/// How full a directory block is packed when a directory is laid out again.
const SLACK_FILL: usize = BS * 3 / 4;
/// `EROFS_FEATURE_COMPAT_SB_CHKSUM`: never set by this crate; cleared when rewriting.
const COMPAT_SB_CHKSUM: u32 = 1;

/// The image the lower layers left.
pub(crate) struct Base {
    pub sb: SuperBlock,
    /// By node id of the loaded tree.
    pub on_disk: Vec<Option<OnDisk>>,
    pub max_ino: u32,
}

/// The planned changes of one layer.
pub(crate) struct Update {
    pub sb: SuperBlock,
    pub patch: Patch,
    pub inodes: u64,
    pub compact_inodes: u64,
    /// Inodes written (new, relocated or changed in place).
    pub inodes_written: u64,
}

/// Where a stored inode lies and how much room it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// Byte offset on the device.
    off: u64,
    /// Bytes usable from `off` without touching anything else stored.
    cap: usize,
    /// Bytes the stored inode uses.
    used: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Old(Slot),
    New,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    None,
    /// At this block (the node's stored blocks, or new ones once allocated).
    At(u32),
    /// New blocks, not yet allocated.
    New,
}

/// One reachable node being planned.
struct Item {
    id: NodeId,
    ino: DiskInode,
    xattrs: Vec<u8>,
    /// Directories: entries per data block.
    dir: Vec<Vec<PendingEntry>>,
    /// Bytes of the last data block, a candidate inline tail (0: none).
    tail: usize,
    /// Data blocks outside the inode when nothing is inline.
    nblocks: usize,
    place: Place,
    /// The slot is the node's own stored slot (not a reused one).
    own: bool,
    inline: bool,
    ext: Ext,
    nid: u64,
}

impl Item {
    fn body(&self) -> usize {
        self.ino.isize() + self.xattrs.len()
    }

    fn ext_count(&self) -> usize {
        self.nblocks - usize::from(self.inline)
    }
}

fn entry_bytes(b: &[PendingEntry]) -> usize {
    b.iter().map(|e| DIRENT_SIZE + e.0.len()).sum()
}

/// Packs sorted entries into blocks of at most `fill` used bytes (at least one entry each).
fn pack(ents: Vec<PendingEntry>, fill: usize) -> Vec<Vec<PendingEntry>> {
    let mut blocks: Vec<Vec<PendingEntry>> = vec![Vec::new()];
    let mut used = 0;
    for e in ents {
        let need = DIRENT_SIZE + e.0.len();
        if used > 0 && used + need > fill {
            blocks.push(Vec::new());
            used = 0;
        }
        used += need;
        blocks.last_mut().expect("one block").push(e);
    }
    blocks
}

/// Spreads sorted entries over a directory's stored blocks: each goes to the last block
/// whose first stored name is not greater (the first block takes the rest). A block that
/// overflows hands its last entries on to the next block; blocks left empty are dropped.
/// `Err` gives the entries back if the last block would overflow (the directory needs
/// more blocks).
fn keep_partition(
    ents: Vec<PendingEntry>,
    old: &[Vec<Dirent>],
) -> std::result::Result<Vec<Vec<PendingEntry>>, Vec<PendingEntry>> {
    let firsts: Vec<&[u8]> = old
        .iter()
        .skip(1)
        .filter_map(|b| b.first())
        .map(|e| e.name.as_slice())
        .collect();
    if firsts.len() + 1 != old.len() || !firsts.windows(2).all(|w| w[0] < w[1]) {
        return Err(ents);
    }
    let mut buckets: Vec<Vec<PendingEntry>> = vec![Vec::new(); old.len().max(1)];
    for e in ents {
        let i = firsts.partition_point(|f| *f <= e.0.as_slice());
        buckets[i].push(e);
    }
    for i in 0..buckets.len() - 1 {
        let mut used = entry_bytes(&buckets[i]);
        let mut moved = Vec::new();
        while used > BS {
            let e = buckets[i].pop().expect("an overflowing block has entries");
            used -= DIRENT_SIZE + e.0.len();
            moved.push(e);
        }
        if !moved.is_empty() {
            moved.reverse();
            moved.append(&mut buckets[i + 1]);
            buckets[i + 1] = moved;
        }
    }
    if buckets.last().is_some_and(|b| entry_bytes(b) > BS) {
        return Err(buckets.into_iter().flatten().collect());
    }
    Ok(buckets.into_iter().filter(|b| !b.is_empty()).collect())
}

/// The slot of every stored node: its offset, the bytes it uses, and the room up to the
/// next stored thing (inode or data block) or the end of the block where it ends.
fn slots(base: &Base) -> Vec<Option<Slot>> {
    let meta = u64::from(base.sb.meta_blkaddr) * BLKSZ;
    let mut starts: Vec<u64> = vec![0];
    for od in base.on_disk.iter().flatten() {
        starts.push(meta + od.nid * ISLOT);
        if let Some((b, _)) = od.data_blocks() {
            starts.push(u64::from(b) * BLKSZ);
        }
    }
    starts.sort_unstable();
    base.on_disk
        .iter()
        .map(|od| {
            od.as_ref().map(|od| {
                let off = meta + od.nid * ISLOT;
                let used = od.footprint();
                let mut end = starts
                    .get(starts.partition_point(|&s| s <= off))
                    .copied()
                    .unwrap_or(u64::MAX);
                // Within the inode's last block: its own block, or for an inode crossing
                // blocks (large xattrs) the block where it ends.
                end = end.min(round_up(off + used.max(1) as u64, BLKSZ));
                let cap = if end >= off + used as u64 {
                    (end - off) as usize
                } else {
                    used
                };
                Slot { off, cap, used }
            })
        })
        .collect()
}

/// For new nodes: the stored node whose slot they may reuse. A new node qualifies under
/// the first name (in walk order) that named, in the stored image, a node of the same
/// file type that is now unreachable.
fn reusable_slots(
    tree: &Tree,
    order: &[NodeId],
    refs: &[u32],
    base: &Base,
) -> HashMap<NodeId, NodeId> {
    let loaded = base.on_disk.len();
    let by_nid: HashMap<u64, NodeId> = base
        .on_disk
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|o| (o.nid, i)))
        .collect();
    let mut out = HashMap::new();
    let mut claimed = HashSet::new();
    for &d in order {
        let (Some(Some(od)), Some(ents)) = (base.on_disk.get(d), tree.entries(d)) else {
            continue;
        };
        if !ents.values().any(|&c| c >= loaded) {
            continue;
        }
        let old: HashMap<&[u8], &Dirent> = od
            .dir_blocks
            .iter()
            .flatten()
            .map(|e| (e.name.as_slice(), e))
            .collect();
        for (name, &c) in ents {
            if c < loaded || out.contains_key(&c) {
                continue;
            }
            let Some(e) = old.get(name.as_slice()) else {
                continue;
            };
            let Some(&m) = by_nid.get(&e.nid) else {
                continue;
            };
            if refs[m] > 0 || e.file_type != tree.nodes[c].kind.file_type() {
                continue;
            }
            if claimed.insert(m) {
                out.insert(c, m);
            }
        }
    }
    out
}

fn round_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn block_u32(b: u64) -> Result<u32> {
    u32::try_from(b).map_err(|_| Error::DeviceFull {
        needed: b,
        available: u64::from(u32::MAX),
    })
}

/// Plans the metadata of `tree` over the stored image `base`, appending after block
/// `area_start` (the first free block). `None` if the root would need a nid past 65535
/// (or the stored `meta_blkaddr` lies past the free blocks): the tree must be laid out
/// afresh.
pub(crate) fn plan<R: ReadAt + ?Sized>(
    dev: &R,
    tree: &Tree,
    base: &Base,
    area_start: u64,
    uuid: [u8; 16],
) -> Result<Option<Update>> {
    if u64::from(base.sb.meta_blkaddr) > area_start {
        return Ok(None);
    }
    let (order, refs) = tree.walk();
    let bt = (base.sb.build_time, base.sb.build_time_nsec);
    let meta = u64::from(base.sb.meta_blkaddr) * BLKSZ;
    let stored = slots(base);
    let reuse = reusable_slots(tree, &order, &refs, base);
    let on_disk = |id: NodeId| base.on_disk.get(id).and_then(Option::as_ref);
    let mut next_ino = base.max_ino;
    let mut items: Vec<Item> = Vec::with_capacity(order.len());

    for &id in &order {
        let od = on_disk(id);
        let ino_num = match od {
            Some(o) => o.ino.ino,
            None => {
                next_ino = next_ino.wrapping_add(1).max(1);
                next_ino
            }
        };
        let writer::Parts {
            mut ino,
            xattrs,
            entries,
        } = writer::parts(tree, id, &refs, ino_num);
        let (dir, tail, nblocks) = match &tree.nodes[id].body {
            Body::Dir { .. } => {
                let blocks = match od {
                    Some(o) => keep_partition(entries, &o.dir_blocks)
                        .unwrap_or_else(|ents| pack(ents, SLACK_FILL)),
                    None => pack(entries, BS),
                };
                let last = entry_bytes(blocks.last().expect("one block"));
                ino.size = (blocks.len() as u64 - 1) * BLKSZ + last as u64;
                let n = blocks.len();
                (blocks, if last < BS { last } else { 0 }, n)
            }
            Body::Symlink(t) => (
                Vec::new(),
                if t.len() < BS { t.len() } else { 0 },
                t.len().div_ceil(BS),
            ),
            _ => (Vec::new(), 0, 0),
        };
        ino.extended = od.is_some_and(|o| o.ino.extended) || writer::needs_extended(&ino, bt);
        let mut it = Item {
            id,
            ino,
            xattrs,
            dir,
            tail,
            nblocks,
            place: Place::New,
            own: false,
            inline: false,
            ext: Ext::None,
            nid: 0,
        };
        let body = it.body();
        let inline_new = tail > 0 && body + tail <= BS;
        // What fits in a stored slot; an inode smaller than a block never crosses one.
        let inline_in = |s: &Slot| {
            tail > 0 && body + tail <= s.cap && (s.off % BLKSZ) as usize + body + tail <= BS
        };
        let plain_in =
            |s: &Slot| body <= s.cap && (body > BS || (s.off % BLKSZ) as usize + body <= BS);
        // The node's stored data blocks (directories and symlinks).
        let old_ext = od
            .filter(|_| nblocks > 0)
            .and_then(OnDisk::data_blocks)
            .map(|(b, n)| (b, n as usize));
        let new_ext = |inline: bool| {
            let need = nblocks - usize::from(inline);
            if need == 0 || old_ext.is_some_and(|(_, n)| need <= n) {
                0
            } else {
                need
            }
        };
        if let Some(s) = od.and_then(|_| stored[id]) {
            if inline_in(&s) {
                (it.place, it.own, it.inline) = (Place::Old(s), true, true);
            } else {
                let subdirs = if tree.is_dir(id) {
                    it.ino.nlink as usize - 2
                } else {
                    0
                };
                let stay =
                    plain_in(&s) && (id == ROOT || new_ext(false) <= new_ext(inline_new) + subdirs);
                if stay {
                    (it.place, it.own, it.inline) = (Place::Old(s), true, false);
                } else {
                    it.inline = inline_new;
                }
            }
        } else if let Some(s) = reuse.get(&id).and_then(|&m| stored[m]) {
            let fits = if inline_new {
                inline_in(&s)
            } else {
                plain_in(&s)
            };
            if fits {
                it.place = Place::Old(s);
            }
            it.inline = inline_new;
        } else {
            it.inline = inline_new;
        }
        let need = it.ext_count();
        it.ext = match old_ext {
            _ if need == 0 => Ext::None,
            Some((b, n)) if need <= n => Ext::At(b),
            _ => Ext::New,
        };
        items.push(it);
    }

    // Nids: stored slots keep theirs; new slots are packed after the layer's data, an
    // inode (with its inline tail) never crossing a block boundary unless it is larger
    // than a block.
    let mut pos = area_start * BLKSZ;
    for it in &mut items {
        match it.place {
            Place::Old(s) => it.nid = (s.off - meta) / ISLOT,
            Place::New => {
                let len = (it.body() + if it.inline { it.tail } else { 0 }) as u64;
                if len <= BLKSZ && pos % BLKSZ + len > BLKSZ {
                    pos = round_up(pos, BLKSZ);
                }
                it.nid = (pos - meta) / ISLOT;
                pos = round_up(pos + len, ISLOT);
            }
        }
    }
    if items[0].nid > u64::from(u16::MAX) {
        return Ok(None);
    }
    let mut next = pos.div_ceil(BLKSZ);
    for it in &mut items {
        if it.ext == Ext::New {
            it.ext = Ext::At(block_u32(next)?);
            next += it.ext_count() as u64;
        }
    }
    let end = block_u32(next)?;

    let mut nid_of = vec![u64::MAX; tree.nodes.len()];
    for it in &items {
        nid_of[it.id] = it.nid;
    }
    let mut patch = Patch::new(area_start);
    let mut inodes_written = 0;
    let mut compact_inodes = 0;
    for it in &mut items {
        compact_inodes += u64::from(!it.ino.extended);
        it.ino.layout = if it.inline {
            format::LAYOUT_FLAT_INLINE
        } else {
            format::LAYOUT_FLAT_PLAIN
        };
        let node = &tree.nodes[it.id];
        if matches!(node.kind, Kind::Dir | Kind::Symlink) {
            it.ino.i_u = match it.ext {
                Ext::At(b) => b,
                _ => 0,
            };
        }
        let dirents: Vec<Vec<Dirent>> = it
            .dir
            .iter()
            .map(|blk| {
                blk.iter()
                    .map(|(name, c, ft)| Dirent {
                        nid: nid_of[*c],
                        file_type: *ft,
                        name: name.clone(),
                    })
                    .collect()
            })
            .collect();
        let od = on_disk(it.id);
        if let (Some(od), true) = (od, it.own) {
            if it.ino == od.ino && it.xattrs == od.xattrs && dirents == od.dir_blocks {
                continue;
            }
        }
        let data_blocks: Vec<Vec<u8>> = match &node.body {
            Body::Dir { .. } => dirents
                .iter()
                .map(|d| {
                    let mut b = Vec::with_capacity(BS);
                    format::encode_dir_block(d, &mut b);
                    b
                })
                .collect(),
            Body::Symlink(t) => t.chunks(BS).map(<[u8]>::to_vec).collect(),
            _ => Vec::new(),
        };
        let off = match it.place {
            Place::Old(s) => s.off,
            Place::New => meta + it.nid * ISLOT,
        };
        let mut slot = Vec::with_capacity(it.body() + it.tail);
        it.ino.encode(&mut slot);
        slot.extend_from_slice(&it.xattrs);
        if it.inline {
            let last = data_blocks.last().expect("an inline tail");
            debug_assert_eq!(last.len(), it.tail);
            slot.extend_from_slice(last);
        }
        patch.put(dev, off, &slot)?;
        if let Place::Old(s) = it.place {
            if s.used > slot.len() {
                patch.zero(dev, off + slot.len() as u64, s.used - slot.len())?;
            }
        }
        if let Ext::At(b) = it.ext {
            // Blocks still holding the same entries at the same place are left alone.
            let kept = od
                .and_then(OnDisk::data_blocks)
                .filter(|&(at, _)| at == b)
                .map_or(0, |(_, n)| n as usize);
            for (k, blk) in data_blocks.iter().take(it.ext_count()).enumerate() {
                let same = node.kind == Kind::Dir
                    && k < kept
                    && od.is_some_and(|o| o.dir_blocks.get(k) == dirents.get(k));
                if same {
                    continue;
                }
                let mut full = blk.clone();
                full.resize(BS, 0);
                patch.put(dev, (u64::from(b) + k as u64) * BLKSZ, &full)?;
            }
        }
        inodes_written += 1;
    }

    let mut sb = base.sb.clone();
    sb.feature_compat &= !COMPAT_SB_CHKSUM;
    sb.root_nid = items[0].nid as u16;
    sb.inos = items.len() as u64;
    sb.blocks = end;
    sb.uuid = uuid;
    patch.put(dev, format::SUPER_OFFSET, &sb.encode())?;
    Ok(Some(Update {
        sb,
        patch,
        inodes: items.len() as u64,
        compact_inodes,
        inodes_written,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe(name: &str) -> PendingEntry {
        (name.as_bytes().to_vec(), 0, format::FT_REG)
    }

    fn de(name: &str) -> Dirent {
        Dirent {
            nid: 0,
            file_type: format::FT_REG,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn partitions_follow_the_stored_blocks() {
        let old = vec![vec![de("."), de(".."), de("a")], vec![de("m"), de("p")]];
        let got = keep_partition(vec![pe("."), pe(".."), pe("b"), pe("n"), pe("z")], &old).unwrap();
        let names: Vec<Vec<&[u8]>> = got
            .iter()
            .map(|b| b.iter().map(|e| e.0.as_slice()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec![&b"."[..], b"..", b"b"], vec![&b"n"[..], b"z"]]
        );
        // Emptied blocks are dropped.
        let got = keep_partition(vec![pe("."), pe(".."), pe("a")], &old).unwrap();
        assert_eq!(got.len(), 1);
        // An overflowing block hands entries on to the next one.
        let mut ents = vec![pe("."), pe("..")];
        ents.extend((0..300).map(|i| pe(&format!("b{i:04}"))));
        ents.extend([pe("m"), pe("p")]);
        let got = keep_partition(ents, &old).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|b| entry_bytes(b) <= BS));
        assert_eq!(got[1].last().unwrap().0, b"p");
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 304);
        // Overflow of the last block gives the entries back.
        let many: Vec<PendingEntry> = (0..400).map(|i| pe(&format!("n{i:04}"))).collect();
        assert_eq!(keep_partition(many, &old).unwrap_err().len(), 400);
    }

    #[test]
    fn packing_leaves_slack() {
        let many: Vec<PendingEntry> = (0..400).map(|i| pe(&format!("name{i:04}"))).collect();
        let tight = pack(many.clone(), BS);
        let loose = pack(many, SLACK_FILL);
        assert!(loose.len() > tight.len());
        assert!(loose.iter().all(|b| entry_bytes(b) <= SLACK_FILL));
        assert!(tight.iter().all(|b| entry_bytes(b) <= BS));
    }
}
