//! [`ErofsBuilder`]: one layer's EROFS fs-meta build on a virtual block device.
//!
//! Device layout (4 KiB blocks): block 0 holds the superblock (byte 1024). Every build
//! allocates from the superblock's `blocks` field upwards (block 1 on the first layer):
//! first the data ranges of the layer's regular files, as the tar is read, then, in
//! [`ErofsBuilder::finish`], the metadata:
//!
//! * the first layer lays the whole tree out in a fresh metadata area ([`writer`]);
//! * later layers write only what they change (the `update` module): changed inodes and
//!   directory blocks are rewritten in place when they fit (on the stacked device this
//!   records just those blocks in the layer), new and relocated inodes and directory
//!   blocks are appended; unchanged inodes keep their nids and blocks and are not
//!   written. Should that write more blocks than a fresh area holding the whole tree
//!   (a layer that rewrites most of the image), or should the root need a nid past
//!   65535, the whole tree is laid out afresh instead, as on the first layer.
//!
//! Block 0 is rewritten last (only if it changed). File data blocks of lower layers are
//! never touched, so files keep their data addresses, which stay mapped by the lower
//! layers.
//!
//! Regular files get contiguous blocks (flat plain layout). A member whose data is one
//! contiguous 512-aligned run of the tar (every ordinary member) is *mapped*: the builder
//! calls `remote(device offset, length, tar offset)` with the length rounded up to 512
//! bytes; the rest of the last block is left unmapped (reads as zeros). GNU/PAX sparse
//! members cannot be mapped (their holes are not in the tar) and are written as real data
//! blocks instead (only their data segments; holes stay unwritten, reading as zeros).
//!
//! Layer semantics follow `obd_tar::apply` (OCI image spec, containerd's applier):
//! whiteouts `.wh.NAME` remove lower entries only, `.wh..wh..opq` hides a directory's
//! lower content, other `.wh..wh.*` are ignored, markers are never stored; a later entry
//! replaces an earlier one (a directory over a directory merges); missing parents are
//! created (0755, root, the member's mtime); hard links resolve against the archive root.

use std::collections::HashSet;
use std::io::{self, Read};

use obd_format::io::BlockDevice;
use obd_tar::path;
use obd_tar::reader::{Entry, EntryKind, TarReader};

use crate::error::{Error, Result};
use crate::format::{self, BLKSZ};
use crate::reader::{load_for_update, Image};
use crate::tree::{Body, Kind, Node, NodeId, PathError, Tree, ROOT};
use crate::update::{self, Base};
use crate::writer;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Largest inline xattr body we build for one inode.
const MAX_XATTR_BODY: usize = 60 * 1024;

/// The receiver of RemoteData mappings: `(device byte offset, length, tar byte offset)`,
/// all multiples of 512.
pub type RemoteFn<'a> = dyn FnMut(u64, u64, u64) -> io::Result<()> + 'a;

/// What one tar contained and how its files were stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub whiteouts: u64,
    /// Logical bytes of regular files.
    pub file_bytes: u64,
    /// Number of `remote` calls and the bytes they mapped.
    pub mappings: u64,
    pub mapped_bytes: u64,
    /// Sparse members written as real data, and the blocks they allocated.
    pub written_files: u64,
    pub written_blocks: u64,
    /// Xattrs EROFS cannot store (unknown name prefix, value over 64 KiB), dropped.
    pub xattrs_dropped: u64,
    /// Bytes of the uncompressed tar read.
    pub tar_bytes: u64,
}

/// What [`ErofsBuilder::finish`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Metadata blocks written: appended blocks, blocks of the existing image rewritten in
    /// place, and block 0 (the superblock) when it changed.
    pub meta_blocks: u64,
    /// Of `meta_blocks`, blocks of the existing image rewritten in place (block 0
    /// included).
    pub rewritten_blocks: u64,
    /// The image's `meta_blkaddr` (nids count from there).
    pub meta_blkaddr: u32,
    /// First block of the metadata appended by this build (its new inodes and directory
    /// blocks); equals `total_blocks` when nothing was appended.
    pub area_blkaddr: u32,
    /// Blocks allocated to file data by this build (mapped or written).
    pub data_blocks: u64,
    /// The image's `blocks`: everything it uses lies below.
    pub total_blocks: u32,
    pub inodes: u64,
    pub compact_inodes: u64,
    /// Inodes this build wrote (all of them on a full rewrite).
    pub inodes_written: u64,
    /// The whole tree was laid out afresh (the first layer, or when an incremental
    /// update would have written more blocks; see the module doc).
    pub full_rewrite: bool,
}

impl Stats {
    /// Bytes of metadata written (tag-0 data of the layer).
    pub fn meta_bytes(&self) -> u64 {
        self.meta_blocks * BLKSZ
    }
}

/// Builds one layer's EROFS image on `dev`.
pub struct ErofsBuilder<'d, D: BlockDevice + ?Sized> {
    dev: &'d mut D,
    tree: Tree,
    uuid: [u8; 16],
    /// First free block.
    next_block: u64,
    start_block: u64,
    /// The image the lower layers left (`None` on the first layer).
    base: Option<Base>,
}

fn ts(t: obd_tar::Timestamp) -> (i64, u32) {
    (t.sec.max(0), t.nsec.min(999_999_999))
}

impl<'d, D: BlockDevice + ?Sized> ErofsBuilder<'d, D> {
    /// Starts a new image (the first layer) with an empty root directory.
    pub fn new_first_layer(dev: &'d mut D, uuid: [u8; 16]) -> Result<Self> {
        Ok(ErofsBuilder {
            dev,
            tree: Tree::new(),
            uuid,
            next_block: 1,
            start_block: 1,
            base: None,
        })
    }

    /// Opens the image already on `dev` (written by lower layers) for an incremental
    /// build. Its UUID is kept unless [`set_uuid`](Self::set_uuid) changes it.
    pub fn open(dev: &'d mut D) -> Result<Self> {
        let (loaded, sb) = {
            let img = Image::open(&*dev)?;
            (load_for_update(&img)?, img.sb)
        };
        let next = u64::from(sb.blocks).max(1);
        Ok(ErofsBuilder {
            dev,
            tree: loaded.tree,
            uuid: sb.uuid,
            next_block: next,
            start_block: next,
            base: Some(Base {
                sb,
                on_disk: loaded.on_disk,
                max_ino: loaded.max_ino,
            }),
        })
    }

    pub fn set_uuid(&mut self, uuid: [u8; 16]) {
        self.uuid = uuid;
    }

    /// The merged tree as it stands.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn alloc(&mut self, blocks: u64) -> Result<u32> {
        let available = (self.dev.size() / BLKSZ).min(u64::from(u32::MAX));
        let end = self.next_block + blocks;
        if end > available {
            return Err(Error::DeviceFull {
                needed: end,
                available,
            });
        }
        let at = self.next_block as u32;
        self.next_block = end;
        Ok(at)
    }

    /// Applies an uncompressed layer tar. Regular file data is reported to `remote`
    /// (see the module doc); metadata stays in memory until [`finish`](Self::finish).
    pub fn apply_tar(&mut self, tar: impl Read, remote: &mut RemoteFn<'_>) -> Result<LayerStats> {
        let mut tar = TarReader::new(tar);
        let mut stats = LayerStats::default();
        let mut unpacked: HashSet<Vec<u8>> = HashSet::new();
        while let Some(e) = tar.next_entry()? {
            stats.entries += 1;
            self.apply_entry(&mut tar, &e, &mut unpacked, &mut stats, remote)
                .map_err(|err| match err {
                    Error::Entry { .. } | Error::Tar(_) | Error::DeviceFull { .. } => err,
                    other => Error::Entry {
                        name: e.display_name(),
                        offset: e.header_offset,
                        detail: other.to_string(),
                    },
                })?;
        }
        stats.tar_bytes = tar.position();
        Ok(stats)
    }

    fn apply_entry<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        e: &Entry,
        unpacked: &mut HashSet<Vec<u8>>,
        stats: &mut LayerStats,
        remote: &mut RemoteFn<'_>,
    ) -> Result<()> {
        let perr = |p: PathError| Error::Entry {
            name: e.display_name(),
            offset: e.header_offset,
            detail: p.to_string(),
        };
        let comps = path::components(&e.name);
        let clean = path::clean(&e.name);
        let Some((base, parent_comps)) = comps.split_last() else {
            if e.kind == EntryKind::Directory {
                self.set_meta(ROOT, e, stats);
            }
            return Ok(());
        };
        let base: &[u8] = base;
        if base.starts_with(WHITEOUT) {
            stats.whiteouts += 1;
            let Some(parent) = self.tree.resolve_dir(parent_comps).map_err(perr)? else {
                return Ok(());
            };
            let parent_path = parent_comps.join(&b'/');
            if base == OPAQUE {
                self.remove_lower_children(parent, &parent_path, unpacked);
            } else if !base.starts_with(b".wh..wh.") {
                let target = &base[WHITEOUT.len()..];
                let mut tp = parent_path.clone();
                if !tp.is_empty() {
                    tp.push(b'/');
                }
                tp.extend_from_slice(target);
                if !target.is_empty() && !unpacked.contains(&tp) {
                    self.tree.unlink(parent, target);
                }
            }
            return Ok(());
        }
        let (mtime, mtime_nsec) = ts(e.mtime);
        let parent = match self.tree.resolve_dir(parent_comps).map_err(perr)? {
            Some(p) => p,
            None => {
                let tmpl = Node {
                    kind: Kind::Dir,
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime,
                    mtime_nsec,
                    xattrs: Default::default(),
                    body: Body::Symlink(Vec::new()),
                };
                self.tree.mkdir_all(parent_comps, &tmpl).map_err(perr)?
            }
        };
        let existing = self.tree.lookup(parent, base);
        if e.kind == EntryKind::HardLink {
            let tclean = path::clean(&e.link);
            if tclean == clean {
                return Ok(());
            }
            let tcomps = path::components(&e.link);
            let target = self
                .tree
                .resolve(&tcomps, false)
                .map_err(perr)?
                .ok_or_else(|| Error::Entry {
                    name: e.display_name(),
                    offset: e.header_offset,
                    detail: format!(
                        "hard link target {:?} does not exist",
                        String::from_utf8_lossy(&e.link)
                    ),
                })?;
            if self.tree.is_dir(target) {
                return Err(Error::Entry {
                    name: e.display_name(),
                    offset: e.header_offset,
                    detail: "hard link to a directory".into(),
                });
            }
            if existing == Some(target) {
                unpacked.insert(clean);
                return Ok(());
            }
            if existing.is_some() {
                self.tree.unlink(parent, base);
            }
            self.tree.link(parent, base, target);
            stats.hardlinks += 1;
            unpacked.insert(clean);
            return Ok(());
        }
        if let Some(old) = existing {
            if !(self.tree.is_dir(old) && e.kind == EntryKind::Directory) {
                self.tree.unlink(parent, base);
            }
        }
        let node = |kind: Kind, body: Body| Node {
            kind,
            perm: (e.perm() & 0o7777) as u16,
            uid: e.uid.min(u64::from(u32::MAX)) as u32,
            gid: e.gid.min(u64::from(u32::MAX)) as u32,
            mtime,
            mtime_nsec,
            xattrs: Default::default(),
            body,
        };
        let id = match e.kind {
            EntryKind::Directory => {
                stats.dirs += 1;
                match self.tree.lookup(parent, base) {
                    Some(d) => d,
                    None => {
                        let id = self.tree.add(node(
                            Kind::Dir,
                            Body::Dir {
                                entries: Default::default(),
                                parent,
                            },
                        ));
                        self.tree.link(parent, base, id);
                        id
                    }
                }
            }
            EntryKind::File => {
                stats.files += 1;
                stats.file_bytes += e.size;
                let blkaddr = self.store_file(tar, e, stats, remote)?;
                let id = self.tree.add(node(
                    Kind::File,
                    Body::File {
                        size: e.size,
                        blkaddr,
                    },
                ));
                self.tree.link(parent, base, id);
                id
            }
            EntryKind::Symlink => {
                stats.symlinks += 1;
                let id = self
                    .tree
                    .add(node(Kind::Symlink, Body::Symlink(e.link.clone())));
                self.tree.link(parent, base, id);
                id
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                stats.devices += 1;
                let (kind, rdev) = match e.kind {
                    EntryKind::CharDevice => (
                        Kind::CharDevice,
                        format::encode_dev(e.dev_major, e.dev_minor),
                    ),
                    EntryKind::BlockDevice => (
                        Kind::BlockDevice,
                        format::encode_dev(e.dev_major, e.dev_minor),
                    ),
                    _ => (Kind::Fifo, 0),
                };
                let id = self.tree.add(node(kind, Body::Special(rdev)));
                self.tree.link(parent, base, id);
                id
            }
            EntryKind::HardLink => unreachable!("handled above"),
        };
        self.set_meta(id, e, stats);
        unpacked.insert(clean);
        Ok(())
    }

    /// Allocates a regular file's blocks and maps (or, for sparse members, writes) its
    /// data; returns the first block (0 for an empty file).
    fn store_file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        e: &Entry,
        stats: &mut LayerStats,
        remote: &mut RemoteFn<'_>,
    ) -> Result<u32> {
        if e.size == 0 {
            return Ok(0);
        }
        let blocks = e.size.div_ceil(BLKSZ);
        let at = self.alloc(blocks)?;
        let base = u64::from(at) * BLKSZ;
        match &e.sparse {
            None if e.data_offset & 511 == 0 && e.stored_size == e.size => {
                let len = e.size.div_ceil(512) * 512;
                remote(base, len, e.data_offset)?;
                stats.mappings += 1;
                stats.mapped_bytes += len;
            }
            map => {
                let segs = map.clone().unwrap_or_else(|| vec![(0, e.size)]);
                let mut buf = vec![0u8; 1 << 20];
                for (off, len) in segs {
                    if off.checked_add(len).is_none_or(|end| end > e.size) {
                        return Err(Error::Entry {
                            name: e.display_name(),
                            offset: e.header_offset,
                            detail: "sparse segment past the file size".into(),
                        });
                    }
                    let mut done = 0;
                    while done < len {
                        let k = (len - done).min(buf.len() as u64) as usize;
                        let mut got = 0;
                        while got < k {
                            let n = tar.read_data(&mut buf[got..k])?;
                            if n == 0 {
                                return Err(Error::Entry {
                                    name: e.display_name(),
                                    offset: e.header_offset,
                                    detail: "member data ended early".into(),
                                });
                            }
                            got += n;
                        }
                        if buf[..k].iter().any(|&b| b != 0) {
                            self.dev.write_at(&buf[..k], base + off + done)?;
                        }
                        done += k as u64;
                    }
                }
                stats.written_files += 1;
                stats.written_blocks += blocks;
            }
        }
        Ok(at)
    }

    /// Owner, permissions, times and xattrs of an entry (xattrs are added to any the node
    /// already has, as a directory merged over a lower one keeps its lower xattrs).
    fn set_meta(&mut self, id: NodeId, e: &Entry, stats: &mut LayerStats) {
        let n = &mut self.tree.nodes[id];
        n.uid = e.uid.min(u64::from(u32::MAX)) as u32;
        n.gid = e.gid.min(u64::from(u32::MAX)) as u32;
        if n.kind != Kind::Symlink {
            n.perm = (e.mode & 0o7777) as u16;
        }
        (n.mtime, n.mtime_nsec) = ts(e.mtime);
        for (k, v) in &e.xattrs {
            if format::split_xattr_name(k).is_none() || v.len() > 0xffff {
                stats.xattrs_dropped += 1;
                continue;
            }
            let cur: usize = n
                .xattrs
                .iter()
                .map(|(k, v)| 4 + k.len() + v.len() + 3)
                .sum();
            if cur + 4 + k.len() + v.len() + 3 > MAX_XATTR_BODY {
                stats.xattrs_dropped += 1;
                continue;
            }
            n.xattrs.insert(k.clone(), v.clone());
        }
    }

    /// For an opaque directory: unlinks every child this layer did not unpack, walking
    /// into kept directories.
    fn remove_lower_children(&mut self, dir: NodeId, dir_path: &[u8], unpacked: &HashSet<Vec<u8>>) {
        let kids: Vec<(Vec<u8>, NodeId)> = self
            .tree
            .entries(dir)
            .map(|m| m.iter().map(|(k, &v)| (k.clone(), v)).collect())
            .unwrap_or_default();
        for (name, child) in kids {
            let mut p = dir_path.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
            if unpacked.contains(&p) {
                if self.tree.is_dir(child) {
                    self.remove_lower_children(child, &p, unpacked);
                }
            } else {
                self.tree.unlink(dir, &name);
            }
        }
    }

    /// Writes the metadata (see the module doc) and the superblock.
    pub fn finish(self) -> Result<Stats> {
        let meta_start = u32::try_from(self.next_block).map_err(|_| Error::DeviceFull {
            needed: self.next_block,
            available: u64::from(u32::MAX),
        })?;
        let available = (self.dev.size() / BLKSZ).min(u64::from(u32::MAX));
        let full = writer::layout(&self.tree, meta_start, self.uuid)?;
        let full_blocks = full.meta.len() as u64 / BLKSZ + 1;
        if let Some(base) = &self.base {
            let planned = update::plan(&*self.dev, &self.tree, base, self.next_block, self.uuid)?;
            if let Some(upd) = planned.filter(|u| u.patch.counts().0 <= full_blocks) {
                if u64::from(upd.sb.blocks) > available {
                    return Err(Error::DeviceFull {
                        needed: u64::from(upd.sb.blocks),
                        available,
                    });
                }
                for (b, bytes) in upd.patch.changed() {
                    self.dev.write_at(bytes, b * BLKSZ)?;
                }
                self.dev.flush()?;
                let (written, rewritten) = upd.patch.counts();
                return Ok(Stats {
                    meta_blocks: written,
                    rewritten_blocks: rewritten,
                    meta_blkaddr: upd.sb.meta_blkaddr,
                    area_blkaddr: meta_start,
                    data_blocks: self.next_block - self.start_block,
                    total_blocks: upd.sb.blocks,
                    inodes: upd.inodes,
                    compact_inodes: upd.compact_inodes,
                    inodes_written: upd.inodes_written,
                    full_rewrite: false,
                });
            }
        }
        let lay = full;
        if u64::from(lay.sb.blocks) > available {
            return Err(Error::DeviceFull {
                needed: u64::from(lay.sb.blocks),
                available,
            });
        }
        self.dev
            .write_at(&lay.meta, u64::from(meta_start) * BLKSZ)?;
        let mut block0 = vec![0u8; BLKSZ as usize];
        let so = format::SUPER_OFFSET as usize;
        block0[so..so + 128].copy_from_slice(&lay.sb.encode());
        self.dev.write_at(&block0, 0)?;
        self.dev.flush()?;
        Ok(Stats {
            meta_blocks: full_blocks,
            rewritten_blocks: u64::from(self.base.is_some()),
            meta_blkaddr: meta_start,
            area_blkaddr: meta_start,
            data_blocks: self.next_block - self.start_block,
            total_blocks: lay.sb.blocks,
            inodes: lay.inodes,
            compact_inodes: lay.compact_inodes,
            inodes_written: lay.inodes,
            full_rewrite: true,
        })
    }
}
