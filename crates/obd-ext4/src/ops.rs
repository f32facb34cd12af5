//! The operations API the tar applier uses: path resolution clamped to the image root, lookup
//! and readdir, creating files (streamed data), directories, symlinks, device nodes and hard
//! links, unlink and recursive removal, attributes, times and extended attributes.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;

use obd_format::io::BlockDevice;

use crate::bytes::is_zero;
use crate::dir::{DirEnt, NAME_MAX};
use crate::error::{lossy, Error, Result};
use crate::extent::{self, Extent};
use crate::fs::{Dir, Ext4};
use crate::inode::{
    decode_dev, encode_dev, FileKind, Inode, Timestamp, FL_EXTENTS, LINK_MAX, ROOT_INO, S_IFMT,
};
use crate::xattr;

/// Permissions, owner and times of a new inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Attrs {
    /// atime = mtime = ctime = `time`, as upstream sets them from the tar mtime.
    pub fn new(perm: u16, uid: u32, gid: u32, time: Timestamp) -> Self {
        Attrs {
            perm,
            uid,
            gid,
            atime: time,
            mtime: time,
            ctime: time,
        }
    }
}

/// What `stat` tells about an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub ino: u32,
    pub kind: FileKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// `(major, minor)` for device nodes.
    pub rdev: (u32, u32),
    /// `i_blocks` in 512-byte units.
    pub sectors: u64,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u32,
    pub kind: Option<FileKind>,
}

/// Most symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;
/// Bytes read from a data source at a time.
const CHUNK: usize = 1 << 20;

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong {
            name: lossy(&name[..40]),
            len: name.len(),
        });
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&c| c == b'/' || c == 0)
    {
        return Err(Error::InvalidName(lossy(name)));
    }
    Ok(())
}

fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// A run of file blocks: `(logical block, physical block, block count)`.
pub type BlockRun = (u64, u64, u32);

impl<D: BlockDevice> Ext4<D> {
    // ---- lookups ----

    /// Looks `name` up in directory `dir` (`.` and `..` included).
    pub fn lookup(&mut self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let d = self.dir(dir)?;
        Ok(match name {
            b"." => Some(dir),
            b".." => Some(d.parent),
            _ => d.entries.get(name).map(|e| e.ino),
        })
    }

    /// Entries of a directory (without `.` and `..`), sorted by name.
    pub fn read_dir(&mut self, dir: u32) -> Result<Vec<DirEntry>> {
        let d = self.dir(dir)?;
        Ok(d.entries
            .iter()
            .map(|(n, e)| DirEntry {
                name: n.clone(),
                ino: e.ino,
                kind: FileKind::from_dirent_type(e.ftype),
            })
            .collect())
    }

    /// Resolves `path` from the root. `..` never climbs above the root, and symlinks are
    /// followed (absolute targets restart at the image root), the last component only when
    /// `follow_last`. Returns `None` when a component does not exist.
    pub fn resolve(&mut self, path: &[u8], follow_last: bool) -> Result<Option<u32>> {
        let mut stack = vec![ROOT_INO];
        let mut comps = components(path);
        let mut links = 0;
        while let Some(c) = comps.pop_front() {
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = *stack.last().unwrap_or(&ROOT_INO);
            if self.kind_of(cur)? != FileKind::Directory {
                return Err(Error::NotADirectory(lossy(path)));
            }
            let Some(ino) = self.lookup(cur, &c)? else {
                return Ok(None);
            };
            if self.kind_of(ino)? == FileKind::Symlink && (!comps.is_empty() || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::SymlinkLoop(lossy(path)));
                }
                let target = self.read_link(ino)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                for t in components(&target).into_iter().rev() {
                    comps.push_front(t);
                }
                continue;
            }
            stack.push(ino);
        }
        Ok(Some(*stack.last().unwrap_or(&ROOT_INO)))
    }

    /// Resolves everything but the last component of `path` (which must be a directory) and
    /// returns it with the last name.
    pub fn resolve_parent(&mut self, path: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut comps = components(path);
        let name = comps
            .pop_back()
            .ok_or_else(|| Error::InvalidName(lossy(path)))?;
        check_name(&name)?;
        let parent_path = comps.into_iter().collect::<Vec<_>>().join(&b'/');
        let parent = self
            .resolve(&parent_path, true)?
            .ok_or_else(|| Error::NotFound(lossy(&parent_path)))?;
        if self.kind_of(parent)? != FileKind::Directory {
            return Err(Error::NotADirectory(lossy(&parent_path)));
        }
        Ok((parent, name))
    }

    /// Creates every missing directory of `path` with `attrs` (like `mkdir -p`) and returns the
    /// inode of the last one.
    pub fn mkdir_all(&mut self, path: &[u8], attrs: &Attrs) -> Result<u32> {
        let comps: Vec<Vec<u8>> = components(path).into_iter().collect();
        let mut cur = ROOT_INO;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            cur = match self.resolve(&prefix, true)? {
                Some(ino) => ino,
                None => {
                    let (parent, name) = self.resolve_parent(&prefix)?;
                    self.mkdir(parent, &name, attrs)?
                }
            };
            if self.kind_of(cur)? != FileKind::Directory {
                return Err(Error::NotADirectory(lossy(&prefix)));
            }
        }
        Ok(cur)
    }

    /// `stat` of an inode.
    pub fn metadata(&mut self, ino: u32) -> Result<Metadata> {
        let kind = self.kind_of(ino)?;
        let bs = self.geo.block_size;
        let i = self.inode(ino)?;
        let rdev = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            decode_dev(i.i_block_word(0), i.i_block_word(1))
        } else {
            (0, 0)
        };
        Ok(Metadata {
            ino,
            kind,
            perm: i.mode() & 0o7777,
            uid: i.uid(),
            gid: i.gid(),
            size: i.size(),
            links: i.links(),
            atime: i.atime(),
            mtime: i.mtime(),
            ctime: i.ctime(),
            rdev,
            sectors: i.sectors(bs),
        })
    }

    /// The whole content of a regular file (holes read as zeros); files over 1 GiB are refused
    /// with [`Error::FileTooLarge`].
    pub fn read_file(&mut self, ino: u32) -> Result<Vec<u8>> {
        let size = self.inode(ino)?.size();
        if size > 1 << 30 {
            return Err(Error::FileTooLarge(size));
        }
        let size = size as usize;
        let map = self.file_map(ino)?;
        let mut out = vec![0u8; size];
        let bs = self.geo.block_size;
        for e in map.extents.iter().filter(|e| !e.uninit) {
            let start = u64::from(e.lblk) * bs;
            if start >= size as u64 {
                break;
            }
            let end = (start + u64::from(e.len) * bs).min(size as u64);
            obd_format::io::ReadAt::read_exact_at(
                &self.dev,
                &mut out[start as usize..end as usize],
                e.pblk * bs,
            )?;
        }
        Ok(out)
    }

    /// The target of a symlink.
    pub fn read_link(&mut self, ino: u32) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?.clone();
        if inode.kind() != Some(FileKind::Symlink) {
            return Err(Error::InvalidArgument(format!(
                "inode {ino} is not a symlink"
            )));
        }
        let size = inode.size() as usize;
        if size >= self.bs() {
            return Err(Error::BadInode {
                ino,
                reason: format!("symlink of {size} bytes"),
            });
        }
        if !Self::has_block_map(&inode) {
            return Ok(inode.i_block()[..size.min(60)].to_vec());
        }
        let mut data = self.read_file(ino)?;
        data.truncate(size);
        Ok(data)
    }

    // ---- creation ----

    fn prepare_entry(&mut self, parent: u32, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let d = self.dir(parent)?;
        if d.entries.contains_key(name) {
            return Err(Error::AlreadyExists(lossy(name)));
        }
        Ok(())
    }

    fn add_entry(&mut self, parent: u32, name: &[u8], ino: u32, kind: FileKind) -> Result<()> {
        let d = self.dir(parent)?;
        d.entries.insert(
            name.to_vec(),
            DirEnt {
                ino,
                ftype: kind.dirent_type(),
            },
        );
        self.dir_dirty.insert(parent);
        Ok(())
    }

    fn new_inode(&mut self, kind: FileKind, attrs: &Attrs) -> Result<(u32, Inode)> {
        for t in [attrs.atime, attrs.mtime, attrs.ctime] {
            t.check()?;
        }
        let ino = self.alloc_inode(kind == FileKind::Directory)?;
        let mut inode = Inode::new(
            self.geo.inode_size as usize,
            kind.mode_bits() | (attrs.perm & 0o7777),
        );
        inode.set_owner(attrs.uid, attrs.gid);
        inode.set_times(attrs.atime, attrs.mtime, attrs.ctime);
        // A new inode may reuse a slot whose old attributes were never written back.
        self.xattr_dirty.remove(&ino);
        Ok((ino, inode))
    }

    /// Creates directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: u32, name: &[u8], attrs: &Attrs) -> Result<u32> {
        self.prepare_entry(parent, name)?;
        if !self.dir_nlink() {
            let subdirs = self
                .dir(parent)?
                .entries
                .values()
                .filter(|e| e.ftype == 2)
                .count();
            if subdirs + 2 >= LINK_MAX as usize {
                return Err(Error::TooManyLinks(parent));
            }
        }
        let (ino, mut inode) = self.new_inode(FileKind::Directory, attrs)?;
        inode.set_links(2);
        self.write_extent_tree(&mut inode, &[])?;
        self.put_inode(ino, inode);
        self.dirs.insert(
            ino,
            Dir {
                parent,
                entries: BTreeMap::new(),
                layout: None,
            },
        );
        self.dir_dirty.insert(ino);
        self.add_entry(parent, name, ino, FileKind::Directory)?;
        Ok(ino)
    }

    /// Creates regular file `name` in `parent` with `size` bytes read from `data`. All-zero
    /// 4 KiB blocks become holes.
    pub fn create_file(
        &mut self,
        parent: u32,
        name: &[u8],
        attrs: &Attrs,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<u32> {
        self.prepare_entry(parent, name)?;
        let bs = self.geo.block_size;
        if size.div_ceil(bs) > u64::from(u32::MAX) {
            return Err(Error::FileTooLarge(size));
        }
        let (ino, mut inode) = self.new_inode(FileKind::Regular, attrs)?;
        let mut extents = Vec::new();
        let res = self
            .write_data(size, data, &mut extents)
            .and_then(|()| self.write_extent_tree(&mut inode, &extents));
        match res {
            Ok(meta) => {
                let data_blocks: u64 = extents.iter().map(|e| u64::from(e.len)).sum();
                inode.set_size(size);
                inode.set_sectors((data_blocks + meta) * (bs / 512));
                self.put_inode(ino, inode);
                self.add_entry(parent, name, ino, FileKind::Regular)?;
                Ok(ino)
            }
            Err(e) => {
                for x in &extents {
                    self.free_blocks(x.pblk, u64::from(x.len))?;
                }
                self.free_inode_bit(ino, false)?;
                Err(e)
            }
        }
    }

    /// Creates regular file `name` of `size` bytes whose data blocks are allocated but not
    /// written: the caller maps them onto data kept elsewhere (TurboOCI maps them into the
    /// layer's tar). Returns the inode and the allocated runs in file order, as
    /// `(logical block, physical block, block count)`. A 0-byte file gets no block.
    pub fn create_file_unwritten(
        &mut self,
        parent: u32,
        name: &[u8],
        attrs: &Attrs,
        size: u64,
    ) -> Result<(u32, Vec<BlockRun>)> {
        self.prepare_entry(parent, name)?;
        let bs = self.geo.block_size;
        let nblk = size.div_ceil(bs);
        if nblk > u64::from(u32::MAX) {
            return Err(Error::FileTooLarge(size));
        }
        let (ino, mut inode) = self.new_inode(FileKind::Regular, attrs)?;
        let mut extents = Vec::new();
        let mut res = Ok(());
        let mut k = 0u64;
        while k < nblk {
            match self.alloc_blocks(nblk - k) {
                Ok((p, got)) => {
                    extent::push_run(&mut extents, k as u32, p, got as u32);
                    k += got;
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        match res.and_then(|()| self.write_extent_tree(&mut inode, &extents)) {
            Ok(meta) => {
                inode.set_size(size);
                inode.set_sectors((nblk + meta) * (bs / 512));
                self.put_inode(ino, inode);
                self.add_entry(parent, name, ino, FileKind::Regular)?;
                let runs = extents
                    .iter()
                    .map(|x| (u64::from(x.lblk), x.pblk, x.len))
                    .collect();
                Ok((ino, runs))
            }
            Err(e) => {
                for x in &extents {
                    self.free_blocks(x.pblk, u64::from(x.len))?;
                }
                self.free_inode_bit(ino, false)?;
                Err(e)
            }
        }
    }

    fn write_data(
        &mut self,
        size: u64,
        data: &mut dyn Read,
        extents: &mut Vec<Extent>,
    ) -> Result<()> {
        let bs = self.bs();
        let cap = (size.min(CHUNK as u64) as usize).div_ceil(bs) * bs;
        let mut buf = vec![0u8; cap];
        let mut done = 0u64;
        let mut lblk = 0u64;
        while done < size {
            let n = (size - done).min(CHUNK as u64) as usize;
            let mut got = 0;
            while got < n {
                match data.read(&mut buf[got..n]) {
                    Ok(0) => {
                        return Err(Error::ShortRead {
                            expected: size,
                            got: done + got as u64,
                        })
                    }
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let nblk = n.div_ceil(bs);
            buf[n..nblk * bs].fill(0);
            let mut i = 0;
            while i < nblk {
                if is_zero(&buf[i * bs..(i + 1) * bs]) {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < nblk && !is_zero(&buf[j * bs..(j + 1) * bs]) {
                    j += 1;
                }
                let mut k = i;
                while k < j {
                    let (p, got) = self.alloc_blocks((j - k) as u64)?;
                    let got = got as usize;
                    extent::push_run(extents, (lblk + k as u64) as u32, p, got as u32);
                    self.write_bulk_blocks(p, &buf[k * bs..(k + got) * bs])?;
                    k += got;
                }
                i = j;
            }
            lblk += nblk as u64;
            done += n as u64;
        }
        Ok(())
    }

    /// Creates symlink `name` → `target` (fast when shorter than 60 bytes).
    pub fn symlink(
        &mut self,
        parent: u32,
        name: &[u8],
        target: &[u8],
        attrs: &Attrs,
    ) -> Result<u32> {
        if target.is_empty() || target.len() >= self.bs() || target.contains(&0) {
            return Err(Error::InvalidSymlink(target.len()));
        }
        self.prepare_entry(parent, name)?;
        let (ino, mut inode) = self.new_inode(FileKind::Symlink, attrs)?;
        inode.set_size(target.len() as u64);
        if target.len() < 60 {
            inode.i_block_mut()[..target.len()].copy_from_slice(target);
        } else {
            let (b, _) = self.alloc_blocks(1)?;
            let mut blk = vec![0u8; self.bs()];
            blk[..target.len()].copy_from_slice(target);
            self.write_block(b, &blk)?;
            let meta = self.write_extent_tree(
                &mut inode,
                &[Extent {
                    lblk: 0,
                    pblk: b,
                    len: 1,
                    uninit: false,
                }],
            )?;
            inode.set_sectors((1 + meta) * (self.geo.block_size / 512));
        }
        self.put_inode(ino, inode);
        self.add_entry(parent, name, ino, FileKind::Symlink)?;
        Ok(ino)
    }

    /// Creates a device node, FIFO or socket. `rdev` is `(major, minor)` (ignored for FIFOs and
    /// sockets).
    pub fn mknod(
        &mut self,
        parent: u32,
        name: &[u8],
        kind: FileKind,
        rdev: (u32, u32),
        attrs: &Attrs,
    ) -> Result<u32> {
        if !matches!(
            kind,
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket
        ) {
            return Err(Error::InvalidArgument(format!("mknod of a {kind:?}")));
        }
        if rdev.0 > 0xfff || rdev.1 > 0xfffff {
            return Err(Error::InvalidArgument(format!(
                "device number {}:{}",
                rdev.0, rdev.1
            )));
        }
        self.prepare_entry(parent, name)?;
        let (ino, mut inode) = self.new_inode(kind, attrs)?;
        if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            let (old, new) = encode_dev(rdev.0, rdev.1);
            inode.set_i_block_word(0, old);
            inode.set_i_block_word(1, new);
        }
        self.put_inode(ino, inode);
        self.add_entry(parent, name, ino, kind)?;
        Ok(ino)
    }

    /// Adds hard link `name` in `parent` to the existing non-directory inode `target`.
    pub fn link(&mut self, parent: u32, name: &[u8], target: u32) -> Result<()> {
        let kind = self.kind_of(target)?;
        if kind == FileKind::Directory {
            return Err(Error::IsADirectory(format!("inode {target}")));
        }
        let mut inode = self.inode(target)?.clone();
        if inode.links() == 0 {
            return Err(Error::NotFound(format!("inode {target}")));
        }
        if inode.links() >= LINK_MAX {
            return Err(Error::TooManyLinks(target));
        }
        self.prepare_entry(parent, name)?;
        inode.set_links(inode.links() + 1);
        self.put_inode(target, inode);
        self.add_entry(parent, name, target, kind)
    }

    // ---- removal ----

    /// Removes the non-directory `name` from `parent`, freeing the inode at its last link.
    pub fn unlink(&mut self, parent: u32, name: &[u8]) -> Result<()> {
        let e = self
            .dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or_else(|| Error::NotFound(lossy(name)))?;
        if self.kind_of(e.ino)? == FileKind::Directory {
            return Err(Error::IsADirectory(lossy(name)));
        }
        self.dir(parent)?.entries.remove(name);
        self.dir_dirty.insert(parent);
        self.drop_link(e.ino)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: u32, name: &[u8]) -> Result<()> {
        let e = self
            .dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or_else(|| Error::NotFound(lossy(name)))?;
        if !self.dir(e.ino)?.entries.is_empty() {
            return Err(Error::DirectoryNotEmpty(lossy(name)));
        }
        self.remove_all(parent, name).map(|_| ())
    }

    /// Removes `name` from `parent`, recursively for a directory (one pass over each
    /// directory). Returns `false` when the name did not exist.
    pub fn remove_all(&mut self, parent: u32, name: &[u8]) -> Result<bool> {
        let Some(e) = self.dir(parent)?.entries.get(name).copied() else {
            return Ok(false);
        };
        let is_dir = self.kind_of(e.ino)? == FileKind::Directory;
        self.dir(parent)?.entries.remove(name);
        self.dir_dirty.insert(parent);
        if !is_dir {
            self.drop_link(e.ino)?;
            return Ok(true);
        }
        let mut stack = vec![e.ino];
        while let Some(d) = stack.pop() {
            if d == ROOT_INO {
                return Err(Error::BadDirectory {
                    ino: d,
                    reason: "directory loop back to the root".into(),
                });
            }
            self.dir(d)?;
            let dir = self.dirs.remove(&d).expect("loaded above");
            self.dir_dirty.remove(&d);
            for (_, child) in dir.entries {
                if self.kind_of(child.ino)? == FileKind::Directory {
                    stack.push(child.ino);
                } else {
                    self.drop_link(child.ino)?;
                }
            }
            self.free_inode(d)?;
        }
        Ok(true)
    }

    fn drop_link(&mut self, ino: u32) -> Result<()> {
        let mut inode = self.inode(ino)?.clone();
        let links = inode.links();
        if links <= 1 {
            return self.free_inode(ino);
        }
        inode.set_links(links - 1);
        self.put_inode(ino, inode);
        Ok(())
    }

    /// Frees an inode with everything it owns.
    fn free_inode(&mut self, ino: u32) -> Result<()> {
        if ino < self.geo.first_ino {
            return Err(Error::InvalidArgument(format!(
                "cannot free reserved inode {ino}"
            )));
        }
        let inode = self.inode(ino)?.clone();
        if inode.mode() == 0 && inode.links() == 0 {
            return Ok(());
        }
        let map = self.file_map(ino)?;
        for e in &map.extents {
            self.free_blocks(e.pblk, u64::from(e.len))?;
        }
        for &m in &map.meta {
            self.free_blocks(m, 1)?;
        }
        let acl = inode.file_acl();
        if acl != 0 {
            self.release_xattr_block(acl)?;
        }
        self.free_inode_bit(ino, inode.is_dir())?;
        self.put_inode(ino, Inode::zeroed(inode.raw.len()));
        self.dirs.remove(&ino);
        self.dir_dirty.remove(&ino);
        self.xattr_dirty.remove(&ino);
        Ok(())
    }

    // ---- attributes ----

    fn live_inode(&mut self, ino: u32) -> Result<Inode> {
        let i = self.inode(ino)?.clone();
        if i.links() == 0 || i.mode() & S_IFMT == 0 {
            return Err(Error::NotFound(format!("inode {ino}")));
        }
        Ok(i)
    }

    /// Sets the permission bits (`perm & 0o7777`), keeping the file type.
    pub fn set_perm(&mut self, ino: u32, perm: u16) -> Result<()> {
        let mut i = self.live_inode(ino)?;
        i.set_mode((i.mode() & S_IFMT) | (perm & 0o7777));
        self.put_inode(ino, i);
        Ok(())
    }

    /// Sets the full 32-bit owner and group.
    pub fn set_owner(&mut self, ino: u32, uid: u32, gid: u32) -> Result<()> {
        let mut i = self.live_inode(ino)?;
        i.set_owner(uid, gid);
        self.put_inode(ino, i);
        Ok(())
    }

    /// Sets access, modification and change times (with nanoseconds).
    pub fn set_times(
        &mut self,
        ino: u32,
        atime: Timestamp,
        mtime: Timestamp,
        ctime: Timestamp,
    ) -> Result<()> {
        for t in [atime, mtime, ctime] {
            t.check()?;
        }
        let mut i = self.live_inode(ino)?;
        i.set_times(atime, mtime, ctime);
        self.put_inode(ino, i);
        Ok(())
    }

    fn xattr_set(&mut self, ino: u32) -> Result<&mut BTreeMap<xattr::XattrKey, Vec<u8>>> {
        if !self.xattr_dirty.contains_key(&ino) {
            let inode = self.live_inode(ino)?;
            let mut set = BTreeMap::new();
            if let Some(start) = inode.xattr_area() {
                xattr::parse_in_inode(ino, &inode.raw[start..], &mut set)?;
            }
            let acl = inode.file_acl();
            if acl != 0 {
                if acl >= self.geo.blocks_count {
                    return Err(Error::BadXattr {
                        ino,
                        reason: format!("xattr block {acl} outside the fs"),
                    });
                }
                let b = self.read_block(acl)?;
                xattr::parse_block(ino, &b, &mut set)?;
            }
            self.xattr_dirty.insert(ino, set);
        }
        Ok(self.xattr_dirty.get_mut(&ino).expect("inserted above"))
    }

    /// All extended attributes of an inode, by full name (POSIX ACLs in the xattr-API format).
    pub fn xattrs(&mut self, ino: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let was_dirty = self.xattr_dirty.contains_key(&ino);
        let set = self.xattr_set(ino)?.clone();
        if !was_dirty {
            self.xattr_dirty.remove(&ino);
        }
        Ok(set
            .into_iter()
            .map(|(k, v)| {
                let v = if xattr::is_acl(k.0) {
                    xattr::acl_from_disk(&v)
                } else {
                    v
                };
                (xattr::full_name(&k), v)
            })
            .collect())
    }

    /// Sets (or replaces) one extended attribute. POSIX ACL values are taken in the
    /// xattr-API format and stored in ext4's format.
    pub fn set_xattr(&mut self, ino: u32, name: &str, value: &[u8]) -> Result<()> {
        let key = xattr::split_name(name)?;
        let value = if xattr::is_acl(key.0) {
            xattr::acl_to_disk(value)
        } else {
            value.to_vec()
        };
        if value.len() > self.bs() {
            return Err(Error::XattrTooLarge {
                ino,
                bytes: value.len(),
            });
        }
        self.xattr_set(ino)?.insert(key, value);
        Ok(())
    }

    /// Removes one extended attribute; `false` if it was not set.
    pub fn remove_xattr(&mut self, ino: u32, name: &str) -> Result<bool> {
        let key = xattr::split_name(name)?;
        Ok(self.xattr_set(ino)?.remove(&key).is_some())
    }

    #[doc(hidden)]
    pub fn extents_flag(&mut self, ino: u32) -> Result<bool> {
        Ok(self.inode(ino)?.flags() & FL_EXTENTS != 0)
    }

    /// Whether `is_zero` would keep a block as a hole (exposed for tests of the applier).
    #[doc(hidden)]
    pub fn is_hole_block(block: &[u8]) -> bool {
        is_zero(block)
    }
}
