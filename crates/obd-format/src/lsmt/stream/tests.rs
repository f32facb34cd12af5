//! Round trips of the self-committing layer against a byte model of the device and against
//! the classic writable layer + commit.

use super::*;
use crate::detect;
use crate::lsmt::{RwLayer, Stack};
use crate::zfile::ZFileOptions;

const VSIZE: u64 = 64 << 20;

fn wrap() -> Wrapping {
    Wrapping {
        zfile: Some(ZFileOptions::default()),
        tar: true,
        overwrite_header: true,
    }
}

fn opts() -> CommitOptions {
    CommitOptions {
        virtual_size: VSIZE,
        uuid: Some(Uuid([7; 16])),
        parent_uuid: Uuid([3; 16]),
        user_tag: b"stream".to_vec(),
    }
}

/// A deterministic block of `n` sectors filled from `seed`.
fn block(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * 512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

enum Op {
    Meta(u64, Vec<u8>),
    Bulk(u64, Vec<u8>),
    Discard(u64, u64),
}

fn ops() -> Vec<Op> {
    vec![
        Op::Meta(0, block(1, 8)),
        Op::Bulk(1 << 20, block(2, 2048)),
        Op::Bulk(9 << 20, block(3, 24)),
        Op::Meta(4096, block(4, 8)),
        // Metadata rewritten: stored once, the last version.
        Op::Meta(0, block(5, 8)),
        // File data freed and its block reused for metadata.
        Op::Meta((1 << 20) + 8192, block(6, 8)),
        // Metadata freed and reused for file data.
        Op::Bulk(4096, block(7, 8)),
        // A bulk write longer than one LSMT write step (4 MiB).
        Op::Bulk(20 << 20, block(8, 9000)),
        Op::Discard(30 << 20, 1 << 20),
    ]
}

/// Applies the ops to the stream layer (bulk as bulk) and to a classic sparse writable layer.
fn build(dir: &Path, kind: RwKind) -> (std::path::PathBuf, Finished, Vec<u8>) {
    let out = dir.join("stream.commit");
    let meta = dir.join("meta");
    let mut s = StreamLayer::create(
        File::create(&out).unwrap(),
        wrap(),
        false,
        &meta,
        kind,
        opts(),
    )
    .unwrap();
    let mut model = vec![0u8; VSIZE as usize];
    for op in ops() {
        match op {
            Op::Meta(o, b) => {
                s.write_at(&b, o).unwrap();
                model[o as usize..o as usize + b.len()].copy_from_slice(&b);
            }
            Op::Bulk(o, b) => {
                s.write_bulk_at(&b, o).unwrap();
                model[o as usize..o as usize + b.len()].copy_from_slice(&b);
            }
            Op::Discard(o, l) => {
                s.discard(o, l).unwrap();
                model[o as usize..(o + l) as usize].fill(0);
            }
        }
    }
    // Reads during the layer: metadata as written, this layer's file data as zeros.
    let mut b = vec![0u8; 4096];
    s.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, block(5, 8));
    s.read_exact_at(&mut b, 1 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    let f = s.finish(&dir.join("view")).unwrap();
    assert!(!meta.exists(), "the side file is removed");
    (out, f, model)
}

#[test]
fn committed_output_reads_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (out, f, model) = build(dir.path(), RwKind::Sparse);
    let l = detect::open_layer(&out).unwrap();
    assert_eq!(l.virtual_size(), VSIZE);
    assert_eq!(l.header().uuid, Uuid([7; 16]));
    assert_eq!(l.header().parent_uuid, Uuid([3; 16]));
    let mut got = vec![0u8; VSIZE as usize];
    l.read_exact_at(&mut got, 0).unwrap();
    assert!(got == model, "the committed layer differs from the model");
    assert_eq!(f.stats.index_entries % 256, 0);
    // Stored data: every live sector once (4 metadata blocks + file data), no dead copies.
    let live = 3 * 4096 + (2048 - 8) * 512 + 24 * 512 + 4096 + 9000 * 512;
    assert_eq!(f.stats.data_bytes, live as u64);
    assert!(f.zfile.is_some());
}

#[test]
fn meta_view_holds_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, f, model) = build(dir.path(), RwKind::Sparse);
    let v = f.meta_view().unwrap();
    let mut b = vec![0u8; 4096];
    for o in [0u64, (1 << 20) + 8192] {
        v.read_exact_at(&mut b, o).unwrap();
        assert_eq!(b, model[o as usize..o as usize + 4096]);
    }
    // File data of the layer reads as zeros in the view (and masks the lowers).
    for o in [4096u64, 1 << 20, 9 << 20, 20 << 20] {
        v.read_exact_at(&mut b, o).unwrap();
        assert!(b.iter().all(|&x| x == 0), "at {o}");
    }
    // The view holds the two live metadata blocks once.
    assert_eq!(f.meta_bytes, 2 * 4096);
}

/// A layer with file data only has an empty metadata view, which still opens.
#[test]
fn empty_meta_view() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StreamLayer::create(
        File::create(dir.path().join("out")).unwrap(),
        wrap(),
        false,
        &dir.path().join("side"),
        RwKind::Sparse,
        opts(),
    )
    .unwrap();
    s.write_bulk_at(&block(4, 8), 8192).unwrap();
    let f = s.finish(&dir.path().join("view")).unwrap();
    assert_eq!(f.meta_bytes, 0);
    let v = f.meta_view().unwrap();
    let mut b = vec![1u8; 4096];
    v.read_exact_at(&mut b, 8192).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn same_device_as_writable_layer_plus_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, _) = build(dir.path(), RwKind::Append);
    let mut rw = RwLayer::create(
        &dir.path().join("wd"),
        &dir.path().join("wi"),
        VSIZE,
        RwKind::Append,
        Uuid::NULL,
        Uuid::NULL,
    )
    .unwrap();
    for op in ops() {
        match op {
            Op::Meta(o, b) | Op::Bulk(o, b) => rw.write_at(&b, o).unwrap(),
            Op::Discard(o, l) => rw.discard(o, l).unwrap(),
        }
    }
    let classic = dir.path().join("classic.commit");
    rw.commit_to(&opts(), wrap(), File::create(&classic).unwrap())
        .unwrap();
    let (a, b) = (
        detect::open_layer(&out).unwrap(),
        detect::open_layer(&classic).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; VSIZE as usize], vec![0u8; VSIZE as usize]);
    a.read_exact_at(&mut x, 0).unwrap();
    b.read_exact_at(&mut y, 0).unwrap();
    assert!(x == y);
    // Zeroed entries (Append discards) survive, so the discard masks lowers.
    assert!(a.index().iter().any(|s| s.zeroed));
}

#[test]
fn stack_reads_fall_through_to_lowers() {
    let dir = tempfile::tempdir().unwrap();
    let (out, f, model) = build(dir.path(), RwKind::Sparse);
    let lower = Arc::new(detect::open_layer(&out).unwrap());
    let _ = f;
    let meta2 = dir.path().join("meta2");
    let mut o = opts();
    o.uuid = None;
    let up = StreamLayer::create(
        File::create(dir.path().join("two")).unwrap(),
        wrap(),
        false,
        &meta2,
        RwKind::Sparse,
        o,
    )
    .unwrap();
    let mut st = StreamStack::new(Stack::new(vec![lower], None).unwrap(), up);
    st.write_at(&block(9, 8), 4096).unwrap();
    let mut b = vec![0u8; 3 * 4096];
    st.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b[..4096], model[..4096]);
    assert_eq!(b[4096..8192], block(9, 8)[..]);
    assert_eq!(b[8192..], model[8192..3 * 4096]);
}

#[test]
fn hostile_io_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("m");
    let mut s = StreamLayer::create(
        File::create(dir.path().join("o")).unwrap(),
        wrap(),
        false,
        &meta,
        RwKind::Sparse,
        opts(),
    )
    .unwrap();
    assert!(s.write_at(&[0u8; 100], 0).is_err());
    assert!(s.write_bulk_at(&[0u8; 512], VSIZE).is_err());
    assert!(s.discard(VSIZE - 512, 1024).is_err());
    let o = CommitOptions {
        virtual_size: 0,
        ..opts()
    };
    assert!(StreamLayer::create(
        File::create(dir.path().join("o2")).unwrap(),
        wrap(),
        false,
        &dir.path().join("m2"),
        RwKind::Sparse,
        o
    )
    .is_err());
}
