//! Corrupted superblocks, descriptors, inodes, directory and extent blocks must give typed
//! errors (or harmless results), never a panic.

use obd_ext4::{Attrs, Error, Ext4, FileKind, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::{ReadAt, WriteAt};

const BS: u64 = 4096;

type Mem = obd_format::io::MemDevice;

fn attrs() -> Attrs {
    Attrs::new(0o755, 0, 0, Timestamp::from_secs(1))
}

fn base() -> Mem {
    let mem = Mem::new(64 << 20);
    let mut fs = Ext4::mkfs(mem, &MkfsOptions::default()).unwrap();
    let d = fs.mkdir(ROOT_INO, b"dir", &attrs()).unwrap();
    for i in 0..300 {
        let body = vec![b'a' + (i % 26) as u8; (i * 131) % 9000];
        fs.create_file(
            d,
            format!("file-with-a-long-name-{i}").as_bytes(),
            &attrs(),
            body.len() as u64,
            &mut &body[..],
        )
        .unwrap();
    }
    let mut frag = vec![0u8; 40 * 4096];
    for b in (0..40).step_by(2) {
        frag[b * 4096] = 1;
    }
    fs.create_file(
        ROOT_INO,
        b"frag",
        &attrs(),
        frag.len() as u64,
        &mut &frag[..],
    )
    .unwrap();
    fs.symlink(d, b"slow", "x".repeat(100).as_bytes(), &attrs())
        .unwrap();
    fs.symlink(d, b"fast", b"../frag", &attrs()).unwrap();
    fs.mknod(d, b"dev", FileKind::CharDevice, (300, 3000), &attrs())
        .unwrap();
    fs.set_xattr(d, "user.big", &[7u8; 2000]).unwrap();
    fs.set_xattr(d, "user.small", b"s").unwrap();
    fs.flush().unwrap();
    fs.into_device()
}

/// Everything a tar applier might do; errors are fine, panics are not.
fn exercise(dev: Mem) -> Result<(), Error> {
    let mut fs = Ext4::open(dev)?;
    let mut stack = vec![(ROOT_INO, 0)];
    let mut seen = 0;
    while let Some((d, depth)) = stack.pop() {
        for e in fs.read_dir(d)? {
            seen += 1;
            if seen > 2000 {
                break;
            }
            let md = fs.metadata(e.ino)?;
            match md.kind {
                FileKind::Directory if depth < 8 => stack.push((e.ino, depth + 1)),
                FileKind::Regular if md.size < 1 << 24 => {
                    fs.read_file(e.ino)?;
                }
                FileKind::Symlink => {
                    fs.read_link(e.ino)?;
                }
                _ => {}
            }
            fs.xattrs(e.ino)?;
        }
    }
    fs.resolve(b"/dir/fast", true)?;
    fs.remove_all(ROOT_INO, b"frag")?;
    if let Some(d) = fs.lookup(ROOT_INO, b"dir")? {
        fs.remove_all(d, b"file-with-a-long-name-7")?;
        fs.set_xattr(d, "user.new", b"v")?;
    }
    fs.create_file(ROOT_INO, b"new", &attrs(), 5, &mut &b"hello"[..])?;
    fs.mkdir(ROOT_INO, b"newdir", &attrs())?;
    fs.remove_all(ROOT_INO, b"dir")?;
    fs.flush()?;
    Ok(())
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn corrupted_metadata_never_panics() {
    let base = base();
    assert!(exercise(base.clone()).is_ok());
    let metadata_blocks: Vec<u64> = base.blocks().iter().map(|(b, _)| *b).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    for trial in 0..1000 {
        let mut dev = base.clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            // Bias towards the superblock, descriptors and inode tables.
            let blk = match rng.next() % 4 {
                0 => 0,
                1 => 1,
                _ => metadata_blocks[(rng.next() % metadata_blocks.len() as u64) as usize],
            };
            let off = if blk == 0 {
                1024 + rng.next() % 1024
            } else {
                rng.next() % BS
            };
            let v = rng.next() as u8;
            dev.write_at(&[v], blk * BS + off).unwrap();
        }
        let r = std::panic::catch_unwind(move || exercise(dev).is_err());
        match r {
            Ok(e) => errors += usize::from(e),
            Err(_) => panic!("panic in trial {trial}"),
        }
    }
    assert!(errors > 0, "corruption was never detected");
}

#[test]
fn specific_superblock_corruptions() {
    let base = base();
    let cases: &[(u64, &[u8])] = &[
        (0x38, &[0, 0]),                   // magic
        (0x18, &[9, 0, 0, 0]),             // log block size
        (0x20, &[0, 1, 0, 0]),             // blocks per group
        (0x28, &[0, 0, 0, 0]),             // inodes per group
        (0x04, &[0xff, 0xff, 0xff, 0x7f]), // blocks count beyond the device
        (0x58, &[0x80, 0]),                // inode size 128
        (0x60, &[0, 0x80, 0, 0]),          // inline_data
        (0x64, &[0, 4, 0, 0]),             // metadata_csum
        (0xFE, &[3, 0]),                   // desc size
    ];
    for (off, bytes) in cases {
        let mut dev = base.clone();
        dev.write_at(bytes, 1024 + off).unwrap();
        let r = Ext4::open(dev);
        assert!(r.is_err(), "corruption at {off:#x} accepted");
    }
    // Root inode overwritten with garbage: typed errors on use.
    let fs = Ext4::open(base.clone()).unwrap();
    drop(fs);
    let mut dev = base.clone();
    // Inode 2 lives in the first inode-table block at offset 256; find the table via GDT.
    let mut gd = [0u8; 4];
    dev.read_exact_at(&mut gd, BS + 8).unwrap();
    let itable = u64::from(u32::from_le_bytes(gd));
    dev.write_at(&[0xAB; 256], itable * BS + 256).unwrap();
    let mut fs = Ext4::open(dev).unwrap();
    assert!(fs.read_dir(ROOT_INO).is_err());
    assert!(fs.resolve(b"/dir", true).is_err());
}
