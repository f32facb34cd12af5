//! Lays a [`Tree`] out as an EROFS metadata area starting at a given block:
//!
//! * inodes in depth-first order (sorted names), root first (nid 0, so the 16-bit
//!   `root_nid` always fits), each followed by its inline xattrs and, when it fits in the
//!   same block, its inline tail (the last partial directory block, a fast symlink's
//!   target); an inode body never crosses a block boundary unless it is larger than a block;
//! * then the full directory blocks and the blocks of symlinks too long to inline.
//!
//! Inodes are compact (32 bytes) when the mtime equals the build time (the most common
//! mtime of the tree) and ids, link count and size fit, extended (64 bytes) otherwise.
//! The output depends only on the tree, the start block and the UUID.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::{self, Dirent, DiskInode, SuperBlock, BLKSZ, DIRENT_SIZE};
use crate::tree::{Body, Kind, NodeId, Tree};

/// A laid-out metadata area.
pub struct Layout {
    pub sb: SuperBlock,
    /// Bytes of the area, a whole number of blocks, to be written at `sb.meta_blkaddr`.
    pub meta: Vec<u8>,
    pub inodes: u64,
    pub compact_inodes: u64,
}

const BS: usize = BLKSZ as usize;

/// A directory entry before nids are known: (name, node, file type).
pub(crate) type PendingEntry = (Vec<u8>, NodeId, u8);

/// The parts of a node's inode that do not depend on where it is stored.
pub(crate) struct Parts {
    /// Layout flat plain, not extended; `size` is 0 for directories (known once their
    /// entries are packed); `i_u` is the block of a regular file, the `rdev` of a device,
    /// 0 for directories and symlinks (placed later).
    pub ino: DiskInode,
    /// The inline xattr body.
    pub xattrs: Vec<u8>,
    /// Directories: the entries sorted by name, `.` and `..` included.
    pub entries: Vec<PendingEntry>,
}

/// The inode parts of reachable node `id` (`refs` from [`Tree::walk`]), numbered `ino`.
pub(crate) fn parts(tree: &Tree, id: NodeId, refs: &[u32], ino: u32) -> Parts {
    let n = &tree.nodes[id];
    let mut entries = Vec::new();
    let (size, i_u, nlink) = match &n.body {
        Body::Dir {
            entries: kids,
            parent,
        } => {
            entries.reserve(kids.len() + 2);
            entries.push((b".".to_vec(), id, format::FT_DIR));
            entries.push((b"..".to_vec(), *parent, format::FT_DIR));
            let mut subdirs = 0u32;
            for (name, &c) in kids {
                let k = tree.nodes[c].kind;
                subdirs += u32::from(k == Kind::Dir);
                entries.push((name.clone(), c, k.file_type()));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            (0, 0, 2 + subdirs)
        }
        Body::File { size, blkaddr } => (*size, *blkaddr, refs[id]),
        Body::Symlink(t) => (t.len() as u64, 0, refs[id]),
        Body::Special(rdev) => (0, *rdev, refs[id]),
    };
    let (xattr_icount, xattrs) =
        format::encode_xattrs(n.xattrs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let mode = n.kind.mode_bits()
        | if n.kind == Kind::Symlink {
            0o777
        } else {
            n.perm & 0o7777
        };
    Parts {
        ino: DiskInode {
            extended: false,
            layout: format::LAYOUT_FLAT_PLAIN,
            xattr_icount,
            mode,
            nlink,
            size,
            i_u,
            ino,
            uid: n.uid,
            gid: n.gid,
            mtime: n.mtime.max(0) as u64,
            mtime_nsec: n.mtime_nsec,
        },
        xattrs,
        entries,
    }
}

/// Whether an inode needs the extended form: its mtime is not the image's build time
/// (compact inodes take that), or an id, the link count or the size does not fit.
pub(crate) fn needs_extended(ino: &DiskInode, build_time: (u64, u32)) -> bool {
    (ino.mtime, ino.mtime_nsec) != build_time
        || ino.uid > 0xffff
        || ino.gid > 0xffff
        || ino.nlink > 0xffff
        || ino.size > u64::from(u32::MAX)
}

struct Plan {
    ino: DiskInode,
    xattrs: Vec<u8>,
    /// Directory: entries per block (node ids resolved to nids later).
    dir_blocks: Vec<Vec<PendingEntry>>,
    /// Bytes of data stored inline after the inode (the tail), if inline.
    inline: usize,
    /// Blocks stored outside the inode area.
    ext_blocks: u32,
    nid: u64,
}

fn round_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// Packs sorted entries into directory blocks; returns the blocks and the i_size.
pub(crate) fn pack_dir(ents: Vec<PendingEntry>) -> (Vec<Vec<PendingEntry>>, u64) {
    let mut blocks: Vec<Vec<PendingEntry>> = vec![Vec::new()];
    let mut used = 0usize;
    for e in ents {
        let need = DIRENT_SIZE + e.0.len();
        if used + need > BS {
            blocks.push(Vec::new());
            used = 0;
        }
        used += need;
        blocks.last_mut().expect("one block").push(e);
    }
    let size = (blocks.len() as u64 - 1) * BLKSZ + used as u64;
    (blocks, size)
}

/// The most common (mtime, nsec) of the reachable nodes; ties go to the smallest.
pub(crate) fn build_time(tree: &Tree, order: &[NodeId]) -> (u64, u32) {
    let mut count: HashMap<(u64, u32), u64> = HashMap::new();
    for &id in order {
        let n = &tree.nodes[id];
        *count
            .entry((n.mtime.max(0) as u64, n.mtime_nsec))
            .or_default() += 1;
    }
    count
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(t, _)| t)
        .unwrap_or((0, 0))
}

/// Lays `tree` out with its metadata area at block `meta_start`.
pub fn layout(tree: &Tree, meta_start: u32, uuid: [u8; 16]) -> Result<Layout> {
    let (order, refs) = tree.walk();
    let (bt, bt_nsec) = build_time(tree, &order);
    let mut plans: HashMap<NodeId, Plan> = HashMap::with_capacity(order.len());
    let mut compact_inodes = 0;
    for (i, &id) in order.iter().enumerate() {
        let Parts {
            mut ino,
            xattrs,
            entries,
        } = parts(tree, id, &refs, (i + 1) as u32);
        let mut dir_blocks = Vec::new();
        if tree.is_dir(id) {
            let (blocks, size) = pack_dir(entries);
            dir_blocks = blocks;
            ino.size = size;
        }
        ino.extended = needs_extended(&ino, (bt, bt_nsec));
        compact_inodes += u64::from(!ino.extended);
        plans.insert(
            id,
            Plan {
                ino,
                xattrs,
                dir_blocks,
                inline: 0,
                ext_blocks: 0,
                nid: 0,
            },
        );
    }

    // Place inodes.
    let mut pos = 0usize;
    for &id in &order {
        let p = plans.get_mut(&id).expect("planned");
        let body = p.ino.isize() + p.xattrs.len();
        let size = p.ino.size as usize;
        let (tail, blocks_if_inline, blocks_if_plain) = match tree.nodes[id].kind {
            Kind::Dir => (size % BS, size / BS, size.div_ceil(BS)),
            Kind::Symlink => (size, 0, size.div_ceil(BS)),
            _ => (0, 0, 0),
        };
        if tail > 0 && body + tail <= BS {
            if pos % BS + body + tail > BS {
                pos = round_up(pos, BS);
            }
            p.inline = tail;
            p.ext_blocks = blocks_if_inline as u32;
            p.ino.layout = format::LAYOUT_FLAT_INLINE;
        } else {
            if body <= BS && pos % BS + body > BS {
                pos = round_up(pos, BS);
            }
            p.ext_blocks = blocks_if_plain as u32;
        }
        p.nid = (pos as u64) / format::ISLOT;
        pos = round_up(pos + body + p.inline, format::ISLOT as usize);
    }
    let inode_blocks = pos.div_ceil(BS);

    // Place the blocks outside the inode area.
    let mut next = u64::from(meta_start) + inode_blocks as u64;
    for &id in &order {
        let p = plans.get_mut(&id).expect("planned");
        if p.ext_blocks > 0 {
            p.ino.i_u = u32::try_from(next).map_err(|_| Error::DeviceFull {
                needed: next,
                available: u64::from(u32::MAX),
            })?;
            next += u64::from(p.ext_blocks);
        } else if matches!(tree.nodes[id].kind, Kind::Dir | Kind::Symlink) {
            p.ino.i_u = 0;
        }
    }
    let total_blocks = next - u64::from(meta_start);
    let end = u32::try_from(next).map_err(|_| Error::DeviceFull {
        needed: next,
        available: u64::from(u32::MAX),
    })?;
    let mut meta = vec![0u8; total_blocks as usize * BS];
    let nid_of: HashMap<NodeId, u64> = plans.iter().map(|(&id, p)| (id, p.nid)).collect();

    for &id in &order {
        let p = &plans[&id];
        // The data bytes: directory blocks (each but the last padded to a block) or the
        // symlink target.
        let data: Vec<u8> = match &tree.nodes[id].body {
            Body::Dir { .. } => {
                let mut d = Vec::with_capacity(p.ino.size as usize);
                let nb = p.dir_blocks.len();
                for (bi, blk) in p.dir_blocks.iter().enumerate() {
                    let ents: Vec<Dirent> = blk
                        .iter()
                        .map(|(name, c, ft)| Dirent {
                            nid: nid_of[c],
                            file_type: *ft,
                            name: name.clone(),
                        })
                        .collect();
                    format::encode_dir_block(&ents, &mut d);
                    if bi + 1 < nb {
                        d.resize(round_up(d.len(), BS), 0);
                    }
                }
                debug_assert_eq!(d.len() as u64, p.ino.size);
                d
            }
            Body::Symlink(t) => t.clone(),
            _ => Vec::new(),
        };
        let off = p.nid as usize * format::ISLOT as usize;
        let mut ib = Vec::with_capacity(format::EXTENDED_SIZE);
        p.ino.encode(&mut ib);
        meta[off..off + ib.len()].copy_from_slice(&ib);
        let xo = off + ib.len();
        meta[xo..xo + p.xattrs.len()].copy_from_slice(&p.xattrs);
        let head = data.len() - p.inline;
        if p.inline > 0 {
            let to = xo + p.xattrs.len();
            meta[to..to + p.inline].copy_from_slice(&data[head..]);
        }
        if p.ext_blocks > 0 {
            let bo = (p.ino.i_u - meta_start) as usize * BS;
            meta[bo..bo + head].copy_from_slice(&data[..head]);
        }
    }

    let root_nid = plans[&crate::tree::ROOT].nid;
    debug_assert_eq!(root_nid, 0);
    let sb = SuperBlock {
        blkszbits: format::BLKBITS,
        root_nid: root_nid as u16,
        inos: order.len() as u64,
        build_time: bt,
        build_time_nsec: bt_nsec,
        blocks: end,
        meta_blkaddr: meta_start,
        uuid,
        ..Default::default()
    };
    Ok(Layout {
        sb,
        meta,
        inodes: order.len() as u64,
        compact_inodes,
    })
}
