//! The upstream baselayer (`ext4_64`, a ZFile around an LSMT layer holding a mke2fs-made
//! 64 GiB ext4 with a journal, uninit_bg and flex_bg 16): opened through obd-format's layer
//! stack with an in-memory upper, modified, and checked with e2fsck.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_ext4::{Attrs, Ext4, Timestamp, ROOT_INO};
use obd_format::io::{RawImage, ReadAt, WriteAt};
use obd_format::lsmt::stack::Stack;

const BS: u64 = 4096;

/// Lower layers plus an in-memory upper of whole 4 KiB blocks: the diff of one layer.
struct Overlay {
    lower: Stack,
    upper: BTreeMap<u64, Vec<u8>>,
}

impl ReadAt for Overlay {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let size = self.lower.size();
        if off >= size {
            return Ok(0);
        }
        let n = buf.len().min((size - off) as usize);
        let mut done = 0;
        while done < n {
            let pos = off + done as u64;
            let blk = pos / BS;
            let in_blk = (pos % BS) as usize;
            let take = (BS as usize - in_blk).min(n - done);
            match self.upper.get(&blk) {
                Some(b) => buf[done..done + take].copy_from_slice(&b[in_blk..in_blk + take]),
                None => self.lower.read_exact_at(&mut buf[done..done + take], pos)?,
            }
            done += take;
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.lower.size()
    }
}

impl WriteAt for Overlay {
    fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let pos = off + done as u64;
            let blk = pos / BS;
            let in_blk = (pos % BS) as usize;
            let take = (BS as usize - in_blk).min(buf.len() - done);
            if !self.upper.contains_key(&blk) {
                let mut b = vec![0u8; BS as usize];
                self.lower.read_exact_at(&mut b, blk * BS)?;
                self.upper.insert(blk, b);
            }
            let b = self.upper.get_mut(&blk).expect("inserted");
            b[in_blk..in_blk + take].copy_from_slice(&buf[done..done + take]);
            done += take;
        }
        Ok(())
    }
}

fn extract_baselayer(dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/upstream/ext4_64.tar.gz");
    if !src.exists() {
        return None;
    }
    let out = dir.join("ext4_64");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | tar -xO > '{}'",
            src.display(),
            out.display()
        ))
        .status()
        .ok()?;
    status.success().then_some(out)
}

/// Writes the stacked device's mapped, non-zero data and the upper into a sparse raw image.
fn materialise(ov: &Overlay, img: &Path) {
    let mut raw = RawImage::create(img, ov.size()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for seg in ov.lower.flattened() {
        if seg.zeroed {
            continue;
        }
        let mut pos = seg.offset * 512;
        let end = seg.end() * 512;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            ov.lower.read_exact_at(&mut buf[..n], pos).unwrap();
            for (i, c) in buf[..n].chunks(BS as usize).enumerate() {
                if c.iter().any(|&b| b != 0) {
                    raw.write_at(c, pos + (i as u64) * BS).unwrap();
                }
            }
            pos += n as u64;
        }
    }
    for (blk, data) in &ov.upper {
        raw.write_at(data, blk * BS).unwrap();
    }
}

#[test]
fn upstream_baselayer_two_layers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(path) = extract_baselayer(dir.path()) else {
        eprintln!("upstream_baselayer_two_layers: skipped, testdata not found");
        return;
    };
    let layer = obd_format::detect::open_layer(&path).expect("open baselayer");
    let lower = Stack::new(vec![Arc::new(layer)], None).unwrap();
    let mut fs = Ext4::open(Overlay {
        lower,
        upper: BTreeMap::new(),
    })
    .expect("open ext4 on the baselayer");
    let before = fs.stats();
    assert_eq!(before.blocks_count, 16_777_216);
    assert_eq!(before.inodes_count, 4_194_304);
    assert_eq!(before.inodes_count - before.free_inodes, 11);
    assert!(fs.lookup(ROOT_INO, b"lost+found").unwrap().is_some());
    let a = Attrs::new(0o755, 0, 0, Timestamp::from_secs(1_614_599_149));
    let bin = fs.mkdir_all(b"/usr/bin", &a).unwrap();
    let body = b"#!/bin/sh\necho hello\n";
    fs.create_file(bin, b"hello", &a, body.len() as u64, &mut &body[..])
        .unwrap();
    for i in 0..2000 {
        fs.mknod(
            bin,
            format!("n{i}").as_bytes(),
            obd_ext4::FileKind::Fifo,
            (0, 0),
            &a,
        )
        .unwrap();
    }
    fs.flush().unwrap();
    let ov = fs.into_device();
    // A small layer: the new inodes (2000 / 16 per block), bitmaps, descriptors, dirs, data.
    assert!(
        ov.upper.len() < 200,
        "layer touched {} blocks",
        ov.upper.len()
    );
    if !common::tools_available("upstream_baselayer_two_layers") {
        return;
    }
    let img = dir.path().join("raw");
    materialise(&ov, &img);
    common::fsck_clean(&img);
    assert_eq!(common::debugfs_bytes(&img, "cat /usr/bin/hello"), body);

    // Second layer over the first: delete again.
    let mut fs = Ext4::open(ov).unwrap();
    assert!(fs.remove_all(ROOT_INO, b"usr").unwrap());
    fs.flush().unwrap();
    assert_eq!(fs.stats().free_blocks, before.free_blocks);
    assert_eq!(fs.stats().free_inodes, before.free_inodes);
    let ov = fs.into_device();
    materialise(&ov, &img);
    common::fsck_clean(&img);
}
