//! Property tests: random writes and discards into writable layers, committed in every
//! wrapping and stacked, read back exactly like an in-memory model of the disk.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use obd_format::io::WriteAt;
use obd_format::lsmt::{self, CommitOptions, LsmtRo, RwKind, RwLayer, Stack};
use obd_format::output::{write_wrapped, Wrapping};
use obd_format::uuid::Uuid;
use obd_format::zfile::{Algorithm, ZFileOptions};
use obd_format::{detect, ReadAt};
use proptest::prelude::*;

const VSIZE: u64 = 4 << 20;
const SECTORS: u64 = VSIZE / 512;

#[derive(Clone, Debug)]
enum Op {
    /// Write `len` sectors at `at`, filled from `seed`.
    Write {
        at: u64,
        len: u64,
        seed: u8,
    },
    Discard {
        at: u64,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SECTORS, 1u64..2048, any::<u8>()).prop_map(|(at, len, seed)| Op::Write { at, len: len.min(SECTORS - at), seed }),
        1 => (0..SECTORS, 1u64..20000).prop_map(|(at, len)| Op::Discard { at, len: len.min(SECTORS - at) }),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Wrap {
    z: bool,
    t: bool,
    zstd: bool,
    bs_kb: u32,
}

fn wrap() -> impl Strategy<Value = Wrap> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![4u32, 16, 64]),
    )
        .prop_map(|(z, t, zstd, bs_kb)| Wrap {
            z,
            t: t && z,
            zstd,
            bs_kb,
        })
}

/// Per-layer model: sector states 0 = unmapped, 1 = zeroed, 2 = data.
struct LayerModel {
    state: Vec<u8>,
    data: Vec<u8>,
}

impl LayerModel {
    fn new() -> Self {
        LayerModel {
            state: vec![0; SECTORS as usize],
            data: vec![0; VSIZE as usize],
        }
    }
    fn apply(&mut self, op: &Op, sparse: bool) {
        match *op {
            Op::Write { at, len, seed } => {
                for s in at..at + len {
                    self.state[s as usize] = 2;
                    let b = &mut self.data[(s * 512) as usize..((s + 1) * 512) as usize];
                    fill(b, seed, s);
                }
            }
            Op::Discard { at, len } => {
                for s in at..at + len {
                    self.state[s as usize] = if sparse { 0 } else { 1 };
                }
            }
        }
    }
}

/// Sparse layers map at the host filesystem's block size (4 KiB) after a reopen, as upstream;
/// their users write whole 4 KiB blocks, so the ops for them are aligned.
fn aligned(ops: &[Op], sparse: bool) -> Vec<Op> {
    let a = |at: u64, len: u64| {
        let b = at / 8 * 8;
        let e = ((at + len).div_ceil(8) * 8).min(SECTORS);
        (b, e - b)
    };
    ops.iter()
        .map(|o| match *o {
            _ if !sparse => o.clone(),
            Op::Write { at, len, seed } => {
                let (at, len) = a(at, len);
                Op::Write { at, len, seed }
            }
            Op::Discard { at, len } => {
                let (at, len) = a(at, len);
                Op::Discard { at, len }
            }
        })
        .collect()
}

fn fill(b: &mut [u8], seed: u8, sector: u64) {
    for (i, x) in b.iter_mut().enumerate() {
        // Mix of compressible runs and noise.
        *x = if seed.is_multiple_of(3) {
            seed
        } else {
            (sector as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)
        };
    }
}

fn do_op(l: &mut RwLayer, op: &Op) {
    match *op {
        Op::Write { at, len, seed } => {
            let mut buf = vec![0u8; (len * 512) as usize];
            for k in 0..len {
                fill(
                    &mut buf[(k * 512) as usize..((k + 1) * 512) as usize],
                    seed,
                    at + k,
                );
            }
            l.write_at(&buf, at * 512).unwrap();
        }
        Op::Discard { at, len } => l.discard(at * 512, len * 512).unwrap(),
    }
}

fn commit_to(l: &RwLayer, out: &Path, w: Wrap) {
    let wrap = Wrapping {
        zfile: w.z.then_some(ZFileOptions {
            algorithm: if w.zstd {
                Algorithm::Zstd
            } else {
                Algorithm::Lz4
            },
            block_size: w.bs_kb * 1024,
            verify: true,
            threads: 2,
        }),
        tar: w.t,
        overwrite_header: true,
    };
    let opts = CommitOptions {
        virtual_size: l.virtual_size(),
        ..Default::default()
    };
    l.commit_to(&opts, wrap, File::create(out).unwrap())
        .unwrap();
}

fn expected(models: &[LayerModel]) -> Vec<u8> {
    let mut out = vec![0u8; VSIZE as usize];
    for s in 0..SECTORS as usize {
        for m in models.iter().rev() {
            match m.state[s] {
                0 => continue,
                1 => break,
                _ => {
                    out[s * 512..(s + 1) * 512].copy_from_slice(&m.data[s * 512..(s + 1) * 512]);
                    break;
                }
            }
        }
    }
    out
}

fn check_reads(dev: &dyn ReadAt, want: &[u8], probes: &[(u64, u64)]) {
    let mut got = vec![0u8; want.len()];
    dev.read_exact_at(&mut got, 0).unwrap();
    assert!(got == want, "full read differs");
    for &(off, len) in probes {
        let off = off % VSIZE;
        let len = len.min(VSIZE - off) as usize;
        let mut b = vec![0xAAu8; len];
        dev.read_exact_at(&mut b, off).unwrap();
        assert_eq!(
            &b[..],
            &want[off as usize..off as usize + len],
            "read of {len} at {off}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn stacked_layers_read_like_the_model(
        lowers in prop::collection::vec((prop::collection::vec(op(), 1..12), any::<bool>(), wrap()), 0..4),
        upper in prop::collection::vec(op(), 0..12),
        upper_sparse in any::<bool>(),
        reopen in any::<bool>(),
        probes in prop::collection::vec((0..VSIZE, 1u64..20000), 8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut models = Vec::new();
        let mut ro_layers = Vec::new();
        for (i, (ops, sparse, w)) in lowers.iter().enumerate() {
            let d = dir.path().join(format!("d{i}"));
            let x = dir.path().join(format!("i{i}"));
            let kind = if *sparse { RwKind::Sparse } else { RwKind::Append };
            let mut l = RwLayer::create(&d, &x, VSIZE, kind, Uuid::NULL, Uuid::NULL).unwrap();
            let mut m = LayerModel::new();
            for o in &aligned(ops, *sparse) {
                do_op(&mut l, o);
                m.apply(o, *sparse);
            }
            WriteAt::flush(&mut l).unwrap();
            drop(l);
            // Reopen from disk before committing: replays the index file / SEEK_DATA.
            let l = RwLayer::open(&d, &x).unwrap();
            check_reads(&l, &expected(std::slice::from_ref(&m)), &[]);
            let c = dir.path().join(format!("c{i}"));
            commit_to(&l, &c, *w);
            let ro = detect::open_layer(&c).unwrap();
            check_reads(&ro, &expected(std::slice::from_ref(&m)), &probes);
            ro_layers.push(Arc::new(ro));
            models.push(m);
        }
        let (d, x) = (dir.path().join("ud"), dir.path().join("ui"));
        let kind = if upper_sparse { RwKind::Sparse } else { RwKind::Append };
        RwLayer::create(&d, &x, VSIZE, kind, Uuid::NULL, Uuid::NULL).unwrap();
        let mut stack = Stack::new(ro_layers.clone(), Some(RwLayer::open(&d, &x).unwrap())).unwrap();
        let mut m = LayerModel::new();
        for o in &aligned(&upper, upper_sparse) {
            do_op(stack.upper_mut().unwrap(), o);
            m.apply(o, upper_sparse);
        }
        models.push(m);
        let want = expected(&models);
        check_reads(&stack, &want, &probes);
        if reopen {
            stack.flush().unwrap();
            drop(stack);
            stack = Stack::new(ro_layers.clone(), Some(RwLayer::open(&d, &x).unwrap())).unwrap();
            check_reads(&stack, &want, &probes);
        }
        // Commit the upper and stack it read-only on top: the same disk.
        let c = dir.path().join("cu");
        commit_to(stack.upper().unwrap(), &c, Wrap { z: true, t: true, zstd: false, bs_kb: 4 });
        let mut all = ro_layers;
        all.push(Arc::new(detect::open_layer(&c).unwrap()));
        let ro_stack = Stack::new(all, None).unwrap();
        check_reads(&ro_stack, &want, &probes);
        // Flattening the stack into one layer keeps the disk too.
        let flat = ro_stack.flattened();
        let lowers = ro_stack.lowers_top_first();
        let srcs: Vec<&dyn ReadAt> = lowers.iter().map(|l| l.source_for(0).as_ref()).collect();
        let f = dir.path().join("flat");
        let opts = CommitOptions { virtual_size: VSIZE, ..Default::default() };
        write_wrapped(File::create(&f).unwrap(), Wrapping::default(), |o| lsmt::commit(&flat, &srcs, &opts, o)).unwrap();
        let merged = LsmtRo::open(detect::open_file(&f).unwrap()).unwrap();
        check_reads(&merged, &want, &probes);
    }
}

#[test]
fn commit_is_deterministic_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (d, x) = (dir.path().join("d"), dir.path().join("i"));
    let mut l = RwLayer::create(&d, &x, VSIZE, RwKind::Append, Uuid::NULL, Uuid::NULL).unwrap();
    for (i, o) in [
        Op::Write {
            at: 7,
            len: 900,
            seed: 5,
        },
        Op::Discard { at: 100, len: 50 },
        Op::Write {
            at: 3000,
            len: 2048,
            seed: 3,
        },
        Op::Write {
            at: 50,
            len: 20,
            seed: 1,
        },
    ]
    .iter()
    .enumerate()
    {
        let _ = i;
        do_op(&mut l, o);
    }
    let mut outs = Vec::new();
    for threads in [1, 4, 1] {
        let p = dir.path().join(format!("c{threads}-{}", outs.len()));
        let wrap = Wrapping {
            zfile: Some(ZFileOptions {
                threads,
                ..Default::default()
            }),
            tar: true,
            overwrite_header: true,
        };
        let opts = CommitOptions {
            virtual_size: VSIZE,
            uuid: Uuid::from_chain_id(
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            ..Default::default()
        };
        l.commit_to(&opts, wrap, File::create(&p).unwrap()).unwrap();
        outs.push(std::fs::read(&p).unwrap());
    }
    assert!(outs[0] == outs[1] && outs[1] == outs[2]);
}
