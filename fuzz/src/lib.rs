//! Helpers shared by the fuzz targets and the seed generator: an in-memory sparse block
//! device, a compact encoding of ext4 images as fuzz inputs, a bounded tree walk, and the
//! fixed gzip blob that `gzindex_parse` reads through.

use std::io::{self, Write};
use std::sync::OnceLock;

use obd_ext4::{Attrs, Ext4, FileKind, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::WriteAt;

/// Block size of the in-memory device.
pub const BS: u64 = 4096;

/// The in-memory device the targets write through.
pub type Mem = obd_format::io::MemDevice;

/// Size of the devices the ext4 targets use (16 MiB: block numbers fit in a `u16`).
pub const DEV_SIZE: u64 = 16 << 20;

/// A freshly made, empty filesystem (made once, cloned per run).
pub fn empty_fs() -> Mem {
    static BASE: OnceLock<Mem> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut fs = Ext4::mkfs(Mem::new(DEV_SIZE), &MkfsOptions::default()).expect("mkfs");
        fs.flush().expect("flush");
        fs.into_device()
    })
    .clone()
}

/// A small populated filesystem: nested and htree directories, inline-size and extent
/// files, a fragmented file, fast and slow symlinks, a device, hard links and xattrs.
pub fn populated_fs() -> Mem {
    let t = Attrs::new(0o755, 0, 0, Timestamp::from_secs(1_700_000_000));
    let mut fs = Ext4::mkfs(Mem::new(DEV_SIZE), &MkfsOptions::default()).expect("mkfs");
    let etc = fs.mkdir(ROOT_INO, b"etc", &t).unwrap();
    let body = b"hello\n";
    let f = fs
        .create_file(etc, b"motd", &t, body.len() as u64, &mut &body[..])
        .unwrap();
    fs.link(ROOT_INO, b"motd-link", f).unwrap();
    let big = fs.mkdir(ROOT_INO, b"many", &t).unwrap();
    for i in 0..90 {
        let name = format!("entry-with-a-long-name-{i:03}");
        fs.create_file(big, name.as_bytes(), &t, 0, &mut io::empty())
            .unwrap();
    }
    let mut frag = vec![0u8; 6 * BS as usize];
    for b in (0..6).step_by(2) {
        frag[b * BS as usize] = 1;
    }
    fs.create_file(ROOT_INO, b"frag", &t, frag.len() as u64, &mut &frag[..])
        .unwrap();
    fs.symlink(etc, b"fast", b"../frag", &t).unwrap();
    fs.symlink(etc, b"slow", "x".repeat(100).as_bytes(), &t)
        .unwrap();
    fs.mknod(etc, b"null", FileKind::CharDevice, (1, 3), &t)
        .unwrap();
    fs.set_xattr(etc, "user.small", b"s").unwrap();
    fs.set_xattr(f, "user.big", &[7u8; 300]).unwrap();
    fs.flush().unwrap();
    fs.into_device()
}

/// Encodes the written blocks of a device as an `ext4_open` input: records of
/// `[block: u16][offset: u16][len: u16][bytes]` (little-endian), with the zero runs of each
/// block left out.
pub fn encode_image(mem: &Mem) -> Vec<u8> {
    let mut out = Vec::new();
    for (blk, b) in mem.blocks() {
        let mut i = 0;
        while i < b.len() {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            // A run ends at 16 zero bytes in a row or at the end of the block.
            let start = i;
            let mut zeros = 0;
            let mut end = i;
            while i < b.len() && zeros < 16 {
                if b[i] == 0 {
                    zeros += 1;
                } else {
                    zeros = 0;
                    end = i + 1;
                }
                i += 1;
            }
            out.extend_from_slice(&(blk as u16).to_le_bytes());
            out.extend_from_slice(&(start as u16).to_le_bytes());
            out.extend_from_slice(&((end - start) as u16).to_le_bytes());
            out.extend_from_slice(&b[start..end]);
        }
    }
    out
}

/// Decodes an `ext4_open` input (see [`encode_image`]) into a [`DEV_SIZE`] device; runs are
/// clipped to their block, a truncated last record is written as far as it goes.
pub fn decode_image(mut data: &[u8]) -> Mem {
    let mut mem = Mem::new(DEV_SIZE);
    while data.len() >= 6 {
        let blk = u64::from(u16::from_le_bytes([data[0], data[1]])) % (DEV_SIZE / BS);
        let off = u64::from(u16::from_le_bytes([data[2], data[3]])) % BS;
        let len = usize::from(u16::from_le_bytes([data[4], data[5]]));
        data = &data[6..];
        let len = len.min(data.len()).min((BS - off) as usize);
        mem.write_at(&data[..len], blk * BS + off).unwrap();
        data = &data[len..];
    }
    mem
}

/// Walks the tree from the root with bounded effort, touching every reader: `read_dir`,
/// `lookup`, `metadata`, `read_file`, `read_link`, `xattrs`. Errors end the walk.
pub fn walk<D: obd_format::io::BlockDevice>(fs: &mut Ext4<D>) -> obd_ext4::Result<()> {
    let mut stack = vec![(ROOT_INO, 0u32)];
    let mut seen = 0;
    while let Some((d, depth)) = stack.pop() {
        let entries = fs.read_dir(d)?;
        for e in entries {
            seen += 1;
            if seen > 300 {
                return Ok(());
            }
            if e.name == b"." || e.name == b".." {
                continue;
            }
            fs.lookup(d, &e.name)?;
            let md = fs.metadata(e.ino)?;
            fs.xattrs(e.ino)?;
            match md.kind {
                FileKind::Directory if depth < 8 => stack.push((e.ino, depth + 1)),
                FileKind::Regular if md.size <= 1 << 20 => {
                    fs.read_file(e.ino)?;
                }
                FileKind::Symlink => {
                    fs.read_link(e.ino)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The fixed gzip blob of `gzindex_parse` (about 200 KiB uncompressed, so a 64 KiB span
/// gives several access points) and its uncompressed bytes.
pub fn gzip_fixture() -> &'static (Vec<u8>, Vec<u8>) {
    static GZ: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    GZ.get_or_init(|| {
        let mut plain = Vec::new();
        let mut x: u32 = 1;
        for i in 0..200_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            // Mostly text with some noise, so it compresses but not to nothing.
            plain.push(if i % 7 == 0 {
                (x >> 24) as u8
            } else {
                b"the quick brown fox "[(i % 20) as usize]
            });
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&plain).unwrap();
        (enc.finish().unwrap(), plain)
    })
}
