//! Tests of the warp writable layer and its commit, against an in-memory model.

use std::sync::Arc;

use super::*;
use crate::lsmt::header::{FLAG_DATA, FLAG_SEALED};
use crate::lsmt::LsmtRo;
use crate::output::Wrapping;
use crate::zfile::{ZFileOptions, ZFileReader};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VSIZE: u64 = 48 << 20;
const TARGET: u64 = 12 << 20;

fn target() -> Vec<u8> {
    let mut r = Rng(0x1234_5678_9abc_def1);
    (0..TARGET / 8)
        .flat_map(|_| r.next().to_le_bytes())
        .collect()
}

/// Builds a layer with a mix of fs writes, remote mappings (some longer than 16383 sectors,
/// some overriding earlier data and vice versa) and discards; returns it with the model.
fn build(dir: &Path, tgt: &[u8]) -> (WarpLayer, Vec<u8>) {
    let mut l = WarpLayer::create(
        &dir.join("fsmeta"),
        &dir.join("index"),
        VSIZE,
        Uuid::NULL,
        Uuid::NULL,
    )
    .unwrap();
    let mut model = vec![0u8; VSIZE as usize];
    let mut r = Rng(42);
    // A long remote run first: split into 16383-sector entries.
    l.remote_data(1 << 20, 10 << 20, 512).unwrap();
    model[1 << 20..11 << 20].copy_from_slice(&tgt[512..512 + (10 << 20)]);
    for i in 0..400 {
        let off = r.below(VSIZE / 512 - 64) * 512;
        match r.below(10) {
            0..=4 => {
                let len = (1 + r.below(64)) as usize * 512;
                let fill = (i % 251) as u8;
                let data: Vec<u8> = (0..len).map(|k| fill ^ (k as u8)).collect();
                l.write_at(&data, off).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            5..=8 => {
                let max = ((VSIZE - off) / 512).min(20000);
                let secs = 1 + r.below(max);
                let len = secs * 512;
                let roff = r.below((TARGET - len) / 512 + 1) * 512;
                assert_eq!(l.remote_data(off, len, roff).unwrap(), len);
                model[off as usize..(off + len) as usize]
                    .copy_from_slice(&tgt[roff as usize..(roff + len) as usize]);
            }
            _ => {
                let len = (1 + r.below(200)) * 512;
                let len = len.min(VSIZE - off);
                l.discard(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
        }
    }
    // A long remote run last, so that some 16383-sector entries survive.
    l.remote_data(30 << 20, 10 << 20, 1 << 20).unwrap();
    model[30 << 20..40 << 20].copy_from_slice(&tgt[1 << 20..11 << 20]);
    l.flush().unwrap();
    (l, model)
}

fn check_reads(dev: &dyn ReadAt, model: &[u8]) {
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..model.len()).step_by(buf.len()) {
        dev.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(
            buf == model[off..off + buf.len()],
            "mismatch in [{off}, +1 MiB)"
        );
    }
    let mut r = Rng(7);
    for _ in 0..200 {
        let off = r.below(model.len() as u64 - 1);
        let len = 1 + r.below(300_000.min(model.len() as u64 - off)) as usize;
        let mut b = vec![0u8; len];
        dev.read_exact_at(&mut b, off).unwrap();
        assert!(
            b == model[off as usize..off as usize + len],
            "at {off}+{len}"
        );
    }
}

fn check_layout(bytes: &[u8]) -> Vec<Segment> {
    let h = HeaderTrailer::decode(&bytes[..4096]).unwrap();
    assert_eq!(
        h.flags,
        FLAG_HEADER | FLAG_DATA | FLAG_SEALED,
        "header flags 0x07"
    );
    let t = HeaderTrailer::decode(&bytes[bytes.len() - 4096..]).unwrap();
    assert_eq!(t.flags, FLAG_DATA | FLAG_SEALED, "trailer flags 0x06");
    // Not padded: the index fills exactly the space before the trailer.
    assert_eq!(
        t.index_offset + t.index_size * 16 + 4096,
        bytes.len() as u64
    );
    let idx = Segment::decode_all(
        &bytes[t.index_offset as usize..(t.index_offset + t.index_size * 16) as usize],
    );
    assert!(idx.iter().all(|s| !s.is_invalid() && s.tag <= 1));
    assert!(idx.iter().any(|s| s.tag == TAG_REMOTE && !s.zeroed));
    assert!(idx.iter().any(|s| s.tag == TAG_FSMETA && !s.zeroed));
    assert!(idx.iter().any(|s| s.zeroed));
    assert!(idx
        .iter()
        .any(|s| s.tag == TAG_REMOTE && s.length == MAX_LENGTH));
    idx
}

#[test]
fn warp_layer_commit_and_reopen_match_model() {
    let dir = tempfile::tempdir().unwrap();
    let tgt = target();
    let tgt_arc: Arc<dyn ReadAt> = Arc::new(tgt.clone());
    let (mut l, model) = build(dir.path(), &tgt);

    // Remote ranges cannot be read without the target.
    let mut one = [0u8; 512];
    let rs = l
        .index()
        .dump()
        .into_iter()
        .find(|s| s.tag == TAG_REMOTE)
        .unwrap();
    assert!(l.read_at(&mut one, rs.offset * 512).is_err());
    l.set_target(tgt_arc.clone());
    check_reads(&l, &model);

    // Remote entries keep tag 1 and point into the target in the writable index.
    let dump = l.index().dump();
    assert!(dump.iter().all(|s| s.length <= MAX_LENGTH && s.tag <= 1));

    let mut out = Vec::new();
    let stats = l.commit(&CommitOptions::default(), &mut out).unwrap();
    assert_eq!(stats.total_bytes, out.len() as u64);
    assert_eq!(stats.index_entries, stats.valid_entries);
    let idx = check_layout(&out);
    // Remote entries keep their mapping into the target (the commit only merges neighbours
    // that are contiguous in both spaces).
    for s in idx.iter().filter(|s| s.tag == TAG_REMOTE) {
        let mut cursor = s.offset;
        for p in crate::lsmt::index::lookup(&dump, s.offset, s.end()) {
            assert_eq!(p.offset, cursor, "{s:?}: gap in the writable index");
            assert_eq!(p.tag, TAG_REMOTE, "{s:?}");
            assert_eq!(p.moffset, s.moffset + (p.offset - s.offset), "{s:?}");
            cursor = p.end();
        }
        assert_eq!(cursor, s.end(), "{s:?}");
    }

    // Deterministic.
    let mut again = Vec::new();
    l.commit(&CommitOptions::default(), &mut again).unwrap();
    assert!(again == out);

    let ro = LsmtRo::open_warp(Arc::new(out.clone()), tgt_arc.clone()).unwrap();
    assert!(ro.is_warp());
    assert_eq!(ro.virtual_size(), VSIZE);
    check_reads(&ro, &model);

    // Reopen the writable layer: the replayed index is the same.
    drop(l);
    let mut l2 = WarpLayer::open(&dir.path().join("fsmeta"), &dir.path().join("index")).unwrap();
    assert_eq!(l2.index().dump(), dump);
    l2.set_target(tgt_arc.clone());
    check_reads(&l2, &model);
    // Writes after a reopen override remote data.
    let data = vec![0xAB; 4096];
    l2.write_at(&data, (1 << 20) + 4096).unwrap();
    let mut m2 = model.clone();
    m2[(1 << 20) + 4096..(1 << 20) + 8192].fill(0xAB);
    let mut out2 = Vec::new();
    l2.commit(&CommitOptions::default(), &mut out2).unwrap();
    let ro2 = LsmtRo::open_warp(Arc::new(out2), tgt_arc).unwrap();
    check_reads(&ro2, &m2);
}

#[test]
fn warp_commit_zfile_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let tgt = target();
    let tgt_arc: Arc<dyn ReadAt> = Arc::new(tgt.clone());
    let (l, model) = build(dir.path(), &tgt);
    let path = dir.path().join("ext4.fs.meta");
    let opts = CommitOptions {
        virtual_size: VSIZE,
        uuid: Some(Uuid::parse("C02FB491-B4D4-4904-8684-A014D032AF78").unwrap()),
        ..Default::default()
    };
    let wrap = Wrapping {
        zfile: Some(ZFileOptions::default()),
        tar: false,
        overwrite_header: true,
    };
    let (_, info) = l
        .commit_to(&opts, wrap, File::create(&path).unwrap())
        .unwrap();
    assert!(info.is_some());
    let z = ZFileReader::open(Arc::new(crate::io::FileSource::open(&path).unwrap())).unwrap();
    let mut plain = vec![0u8; z.size() as usize];
    z.read_exact_at(&mut plain, 0).unwrap();
    let idx = check_layout(&plain);
    assert!(!idx.is_empty());
    let h = HeaderTrailer::decode(&plain[..4096]).unwrap();
    assert_eq!(h.uuid, opts.uuid.unwrap());
    let ro = LsmtRo::open_warp(Arc::new(z), tgt_arc).unwrap();
    check_reads(&ro, &model);
    // `obd inspect` recognises the committed warp layer without its target.
    let v = crate::detect::inspect(&path).unwrap();
    assert_eq!(v["kind"], "lsmt-warp-ro", "{v}");
    assert!(v["index"]["remote"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn warp_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = WarpLayer::create(
        &dir.path().join("m"),
        &dir.path().join("i"),
        1 << 20,
        Uuid::NULL,
        Uuid::NULL,
    )
    .unwrap();
    assert!(l.remote_data(100, 512, 0).is_err());
    assert!(l.remote_data(0, 512, 100).is_err());
    assert!(l.remote_data(0, 2 << 20, 0).is_err());
    assert!(l.write_at(&[0u8; 100], 0).is_err());
    let mut b = [0u8; 512];
    l.remote_data(0, 512, 0).unwrap();
    assert!(l.read_at(&mut b, 0).is_err(), "no target set");
    // An existing file is not overwritten.
    assert!(WarpLayer::create(
        &dir.path().join("m"),
        &dir.path().join("i2"),
        1 << 20,
        Uuid::NULL,
        Uuid::NULL
    )
    .is_err());
}
