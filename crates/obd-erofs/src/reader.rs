//! Reading an existing EROFS image (through any [`ReadAt`], e.g. the stacked lower layers):
//! into a [`Tree`] for an incremental build ([`load_for_update`] also keeps, per loaded
//! node, how it is stored: [`OnDisk`]), or into a flat listing for inspection.
//!
//! Accepted: uncompressed images with 4 KiB blocks, compact or extended inodes, flat plain
//! or flat inline data, inline and shared xattrs with short name prefixes. Compressed,
//! chunk-based and multi-device images are refused.

use std::collections::{BTreeMap, HashMap};

use obd_format::io::ReadAt;

use crate::error::{Error, Result};
use crate::format::{self, Dirent, DiskInode, SuperBlock, BLKSZ};
use crate::tree::{Body, Kind, Node, NodeId, Tree, ROOT};

/// An opened image: its superblock and the device.
pub struct Image<'a, R: ReadAt + ?Sized> {
    pub sb: SuperBlock,
    dev: &'a R,
}

fn read_vec<R: ReadAt + ?Sized>(dev: &R, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    dev.read_exact_at(&mut b, off)?;
    Ok(b)
}

impl<'a, R: ReadAt + ?Sized> Image<'a, R> {
    pub fn open(dev: &'a R) -> Result<Self> {
        let b = read_vec(dev, format::SUPER_OFFSET, 128)
            .map_err(|_| Error::NotErofs("the device is too small".into()))?;
        let sb = SuperBlock::decode(&b)?;
        if sb.blkszbits != format::BLKBITS {
            return Err(Error::Unsupported(format!(
                "block size 2^{} (only 4096 is supported)",
                sb.blkszbits
            )));
        }
        if sb.feature_incompat != 0 {
            return Err(Error::Unsupported(format!(
                "incompatible features {:#x}",
                sb.feature_incompat
            )));
        }
        if sb.extra_devices != 0 {
            return Err(Error::Unsupported("extra devices".into()));
        }
        Ok(Image { sb, dev })
    }

    /// Byte offset of the inode `nid` on the device.
    pub fn iloc(&self, nid: u64) -> u64 {
        u64::from(self.sb.meta_blkaddr) * BLKSZ + nid * format::ISLOT
    }

    /// The inode at `nid` and its location.
    pub fn inode(&self, nid: u64) -> Result<DiskInode> {
        let off = self.iloc(nid);
        let mut b = [0u8; format::EXTENDED_SIZE];
        let n = self.dev.read_at(&mut b, off)?;
        DiskInode::decode(&b[..n], self.sb.build_time, self.sb.build_time_nsec)
            .map_err(|e| Error::Corrupt(format!("inode {nid}: {e}")))
    }

    /// Reads an inode's whole data (directories, symlinks; small files).
    pub fn data(&self, nid: u64, ino: &DiskInode) -> Result<Vec<u8>> {
        let size = usize::try_from(ino.size)
            .map_err(|_| Error::Corrupt(format!("inode {nid}: size {}", ino.size)))?;
        if size > 1 << 30 {
            return Err(Error::Corrupt(format!(
                "inode {nid}: {size} bytes is too large to read into memory"
            )));
        }
        match ino.layout {
            format::LAYOUT_FLAT_PLAIN => read_vec(self.dev, u64::from(ino.i_u) * BLKSZ, size),
            format::LAYOUT_FLAT_INLINE => {
                let tail = size % BLKSZ as usize;
                let head = size - tail;
                let mut v = read_vec(self.dev, u64::from(ino.i_u) * BLKSZ, head)?;
                let toff = self.iloc(nid) + (ino.isize() + ino.xattr_size()) as u64;
                if toff % BLKSZ + tail as u64 > BLKSZ {
                    return Err(Error::Corrupt(format!(
                        "inode {nid}: inline data crosses a block boundary"
                    )));
                }
                v.extend(read_vec(self.dev, toff, tail)?);
                Ok(v)
            }
            l => Err(Error::Unsupported(format!(
                "inode {nid}: data layout {l} (compressed or chunk-based)"
            ))),
        }
    }

    /// Reads up to `buf.len()` bytes of an inode's data at byte `off` of the file (flat
    /// plain or flat inline layout), for files too large to read whole. Returns the bytes
    /// read: fewer only at the end of the file.
    pub fn read_data_at(
        &self,
        nid: u64,
        ino: &DiskInode,
        buf: &mut [u8],
        off: u64,
    ) -> Result<usize> {
        if off >= ino.size {
            return Ok(0);
        }
        let n = (ino.size - off).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        let base = u64::from(ino.i_u) * BLKSZ;
        match ino.layout {
            format::LAYOUT_FLAT_PLAIN => {
                self.dev.read_exact_at(buf, base + off)?;
            }
            format::LAYOUT_FLAT_INLINE => {
                // Whole blocks from `i_u`, the tail after the inode and its xattrs.
                let head = ino.size - ino.size % BLKSZ;
                let tail_at = self.iloc(nid) + (ino.isize() + ino.xattr_size()) as u64;
                if tail_at % BLKSZ + ino.size % BLKSZ > BLKSZ {
                    return Err(Error::Corrupt(format!(
                        "inode {nid}: inline data crosses a block boundary"
                    )));
                }
                let in_head = if off < head {
                    ((head - off) as usize).min(n)
                } else {
                    0
                };
                self.dev.read_exact_at(&mut buf[..in_head], base + off)?;
                if in_head < n {
                    let toff = off + in_head as u64 - head;
                    self.dev
                        .read_exact_at(&mut buf[in_head..], tail_at + toff)?;
                }
            }
            l => {
                return Err(Error::Unsupported(format!(
                    "inode {nid}: data layout {l} (compressed or chunk-based)"
                )))
            }
        }
        Ok(n)
    }

    /// The raw inline xattr body of an inode (empty when it has none).
    pub fn xattr_body(&self, nid: u64, ino: &DiskInode) -> Result<Vec<u8>> {
        read_vec(
            self.dev,
            self.iloc(nid) + ino.isize() as u64,
            ino.xattr_size(),
        )
    }

    /// The xattrs of an inode, as full names.
    pub fn xattrs(&self, nid: u64, ino: &DiskInode) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let body = self.xattr_body(nid, ino)?;
        self.decode_xattrs(nid, &body)
    }

    /// Decodes an inline xattr body read by [`xattr_body`](Self::xattr_body).
    fn decode_xattrs(&self, nid: u64, body: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out = BTreeMap::new();
        let size = body.len();
        if size == 0 {
            return Ok(out);
        }
        let bad = |d: &str| Error::Corrupt(format!("inode {nid}: xattrs: {d}"));
        if size < format::XATTR_HDR_SIZE {
            return Err(bad("body shorter than its header"));
        }
        let shared = usize::from(body[4]);
        let mut pos = format::XATTR_HDR_SIZE + 4 * shared;
        if pos > body.len() {
            return Err(bad("shared ids past the body"));
        }
        for i in 0..shared {
            let o = format::XATTR_HDR_SIZE + 4 * i;
            let id = u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
            let off = u64::from(self.sb.xattr_blkaddr) * BLKSZ + u64::from(id) * 4;
            let hdr = read_vec(self.dev, off, 4)?;
            let len = 4 + usize::from(hdr[0]) + usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
            let e = read_vec(self.dev, off, len)?;
            let (k, v, _) = parse_xattr(&e).ok_or_else(|| bad("bad shared entry"))?;
            out.insert(k, v);
        }
        while pos + 4 <= body.len() {
            let (k, v, used) = parse_xattr(&body[pos..]).ok_or_else(|| bad("bad entry"))?;
            out.insert(k, v);
            pos += used.div_ceil(4) * 4;
        }
        Ok(out)
    }

    /// The entries of a directory inode, `.` and `..` included.
    pub fn dirents(&self, nid: u64, ino: &DiskInode) -> Result<Vec<Dirent>> {
        Ok(self.dir_blocks(nid, ino)?.into_iter().flatten().collect())
    }

    /// The entries of a directory inode block by block, as stored.
    pub fn dir_blocks(&self, nid: u64, ino: &DiskInode) -> Result<Vec<Vec<Dirent>>> {
        let data = self.data(nid, ino)?;
        data.chunks(BLKSZ as usize)
            .map(|chunk| {
                format::decode_dir_block(chunk)
                    .map_err(|e| Error::Corrupt(format!("directory inode {nid}: {e}")))
            })
            .collect()
    }
}

/// How a node loaded by [`load_for_update`] is stored in the image, so that an
/// incremental build can tell what changed and rewrite it in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDisk {
    pub nid: u64,
    pub ino: DiskInode,
    /// The raw inline xattr body.
    pub xattrs: Vec<u8>,
    /// Directories: the entries of each data block, `.` and `..` included.
    pub dir_blocks: Vec<Vec<Dirent>>,
}

impl OnDisk {
    /// Bytes from the inode's offset that the inode, its xattrs and its inline tail use.
    pub fn footprint(&self) -> usize {
        let tail = if self.ino.layout == format::LAYOUT_FLAT_INLINE {
            (self.ino.size % BLKSZ) as usize
        } else {
            0
        };
        self.ino.isize() + self.ino.xattr_size() + tail
    }

    /// The blocks outside the inode area holding its data: `(first block, count)`, for
    /// regular files, directories and symlinks (`None` when there are none).
    pub fn data_blocks(&self) -> Option<(u32, u64)> {
        let kind = Kind::from_mode(self.ino.mode)?;
        if !matches!(kind, Kind::File | Kind::Dir | Kind::Symlink) || self.ino.size == 0 {
            return None;
        }
        let count = if self.ino.layout == format::LAYOUT_FLAT_INLINE {
            self.ino.size / BLKSZ
        } else {
            self.ino.size.div_ceil(BLKSZ)
        };
        (count > 0).then_some((self.ino.i_u, count))
    }
}

/// An image loaded for an incremental build.
pub struct Loaded {
    pub tree: Tree,
    /// By node id: how each loaded node is stored (every node of `tree` at load time).
    pub on_disk: Vec<Option<OnDisk>>,
    /// The largest inode number (`i_ino`) in use.
    pub max_ino: u32,
}

/// (full name, value, bytes used before alignment).
fn parse_xattr(b: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    if b.len() < 4 {
        return None;
    }
    let nlen = usize::from(b[0]);
    let idx = b[1];
    let vlen = usize::from(u16::from_le_bytes([b[2], b[3]]));
    let end = 4 + nlen + vlen;
    if end > b.len() {
        return None;
    }
    let mut name = format::xattr_prefix(idx)?.to_vec();
    name.extend_from_slice(&b[4..4 + nlen]);
    Some((name, b[4 + nlen..end].to_vec(), end))
}

/// Loads the whole image into a tree (node [`ROOT`] is the root directory).
pub fn load_tree<R: ReadAt + ?Sized>(img: &Image<'_, R>) -> Result<Tree> {
    Ok(load_for_update(img)?.tree)
}

/// Loads the whole image into a tree and keeps how each node is stored.
pub fn load_for_update<R: ReadAt + ?Sized>(img: &Image<'_, R>) -> Result<Loaded> {
    let mut tree = Tree::new();
    let mut on_disk = Vec::new();
    let mut seen: HashMap<u64, NodeId> = HashMap::new();
    let root_nid = u64::from(img.sb.root_nid);
    let (root, od) = load_node(img, root_nid)?;
    if root.kind != Kind::Dir {
        return Err(Error::Corrupt(format!(
            "root inode {root_nid} is not a directory"
        )));
    }
    tree.nodes[ROOT] = root;
    let mut max_ino = od.ino.ino;
    on_disk.push(Some(od));
    seen.insert(root_nid, ROOT);
    let mut stack = vec![ROOT];
    while let Some(id) = stack.pop() {
        let od = on_disk[id].as_ref().expect("loaded nodes are stored");
        let nid = od.nid;
        let dirents: Vec<Dirent> = od.dir_blocks.iter().flatten().cloned().collect();
        for d in dirents {
            if d.name == b"." || d.name == b".." {
                continue;
            }
            if d.name.contains(&b'/') {
                return Err(Error::Corrupt(format!(
                    "directory inode {nid}: name with '/'"
                )));
            }
            if tree.lookup(id, &d.name).is_some() {
                return Err(Error::Corrupt(format!(
                    "directory inode {nid}: duplicate name {:?}",
                    String::from_utf8_lossy(&d.name)
                )));
            }
            let child = match seen.get(&d.nid) {
                Some(&c) if tree.is_dir(c) => {
                    return Err(Error::Corrupt(format!(
                        "directory inode {} is linked twice",
                        d.nid
                    )))
                }
                Some(&c) => c,
                None => {
                    let (n, cod) = load_node(img, d.nid)?;
                    let is_dir = n.kind == Kind::Dir;
                    let c = tree.add(n);
                    max_ino = max_ino.max(cod.ino.ino);
                    on_disk.push(Some(cod));
                    seen.insert(d.nid, c);
                    if is_dir {
                        stack.push(c);
                    }
                    c
                }
            };
            tree.link(id, &d.name, child);
        }
    }
    Ok(Loaded {
        tree,
        on_disk,
        max_ino,
    })
}

fn load_node<R: ReadAt + ?Sized>(img: &Image<'_, R>, nid: u64) -> Result<(Node, OnDisk)> {
    let ino = img.inode(nid)?;
    let kind = Kind::from_mode(ino.mode)
        .ok_or_else(|| Error::Corrupt(format!("inode {nid}: mode {:o}", ino.mode)))?;
    let mut dir_blocks = Vec::new();
    let body = match kind {
        Kind::Dir => {
            dir_blocks = img.dir_blocks(nid, &ino)?;
            Body::Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
            }
        }
        Kind::File => {
            if ino.size > 0 && ino.layout != format::LAYOUT_FLAT_PLAIN {
                return Err(Error::Unsupported(format!(
                    "inode {nid}: regular file with data layout {} (only flat plain files \
                     can keep their block address)",
                    ino.layout
                )));
            }
            Body::File {
                size: ino.size,
                blkaddr: if ino.size == 0 { 0 } else { ino.i_u },
            }
        }
        Kind::Symlink => Body::Symlink(img.data(nid, &ino)?),
        Kind::CharDevice | Kind::BlockDevice => Body::Special(ino.i_u),
        Kind::Fifo | Kind::Socket => Body::Special(0),
    };
    let xattr_body = img.xattr_body(nid, &ino)?;
    let node = Node {
        kind,
        perm: ino.mode & 0o7777,
        uid: ino.uid,
        gid: ino.gid,
        mtime: ino.mtime as i64,
        mtime_nsec: ino.mtime_nsec,
        xattrs: img.decode_xattrs(nid, &xattr_body)?,
        body,
    };
    Ok((
        node,
        OnDisk {
            nid,
            ino,
            xattrs: xattr_body,
            dir_blocks,
        },
    ))
}

/// One entry of [`list_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// Path from the root (`""` for the root itself, else `a/b`).
    pub path: Vec<u8>,
    pub nid: u64,
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    pub size: u64,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Devices: (major, minor).
    pub rdev: (u32, u32),
    /// Regular files: first data block (flat plain layout).
    pub blkaddr: u32,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Lists every path of an image (depth first, sorted), with its inode's attributes.
pub fn list_image<R: ReadAt + ?Sized>(dev: &R) -> Result<(SuperBlock, Vec<ImageEntry>)> {
    let img = Image::open(dev)?;
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), u64::from(img.sb.root_nid), 0usize)];
    while let Some((path, nid, depth)) = stack.pop() {
        if depth > 4096 {
            return Err(Error::Corrupt("directories nest too deeply".into()));
        }
        let ino = img.inode(nid)?;
        let kind = Kind::from_mode(ino.mode)
            .ok_or_else(|| Error::Corrupt(format!("inode {nid}: mode {:o}", ino.mode)))?;
        let mut e = ImageEntry {
            path: path.clone(),
            nid,
            kind,
            perm: ino.mode & 0o7777,
            uid: ino.uid,
            gid: ino.gid,
            mtime: ino.mtime,
            mtime_nsec: ino.mtime_nsec,
            nlink: ino.nlink,
            size: ino.size,
            target: Vec::new(),
            rdev: (0, 0),
            blkaddr: 0,
            xattrs: img.xattrs(nid, &ino)?,
        };
        match kind {
            Kind::Symlink => e.target = img.data(nid, &ino)?,
            Kind::CharDevice | Kind::BlockDevice => e.rdev = format::decode_dev(ino.i_u),
            Kind::File => e.blkaddr = ino.i_u,
            Kind::Dir => {
                let mut kids = img.dirents(nid, &ino)?;
                kids.retain(|d| d.name != b"." && d.name != b"..");
                for d in kids.into_iter().rev() {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&d.name);
                    stack.push((p, d.nid, depth + 1));
                }
            }
            _ => {}
        }
        out.push(e);
    }
    Ok((img.sb, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErofsBuilder;
    use obd_format::io::RawImage;

    /// `read_data_at` in odd-sized pieces equals `data` for inline (a directory of more
    /// than one block, a symlink) and plain (a sparse file, written) layouts.
    #[test]
    fn read_data_at_matches_data() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, link: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        for i in 0..300 {
            add(&format!("d/entry-{i:04}"), tar::EntryType::Regular, "", b"");
        }
        add("l", tar::EntryType::Symlink, &"t".repeat(90), b"");
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut dev = RawImage::create(dir.path().join("dev"), 16 << 20).unwrap();
        {
            let mut bld = ErofsBuilder::new_first_layer(&mut dev, [0; 16]).unwrap();
            bld.apply_tar(&tar[..], &mut |_, _, _| Ok(())).unwrap();
            bld.finish().unwrap();
        }
        let img = Image::open(&dev).unwrap();
        let (_, list) = list_image(&dev).unwrap();
        let mut inline = 0;
        for e in list
            .iter()
            .filter(|e| matches!(e.kind, Kind::Dir | Kind::Symlink))
        {
            let ino = img.inode(e.nid).unwrap();
            inline += usize::from(ino.layout == format::LAYOUT_FLAT_INLINE);
            let whole = img.data(e.nid, &ino).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = img
                    .read_data_at(e.nid, &ino, &mut buf, got.len() as u64)
                    .unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, whole, "{:?}", String::from_utf8_lossy(&e.path));
        }
        assert!(inline >= 2, "inline layouts exercised");
        let d = list.iter().find(|e| e.path == b"d").unwrap();
        assert!(d.size > BLKSZ, "the directory spans blocks");
    }
}
