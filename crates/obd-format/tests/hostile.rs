//! Truncated, corrupted and crafted files give clear errors, never panics, hangs or
//! unbounded allocations.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use obd_format::io::WriteAt;
use obd_format::lsmt::header::{HeaderTrailer, FLAG_DATA, FLAG_SEALED, HT_SPACE};
use obd_format::lsmt::{CommitOptions, LsmtRo, RwKind, RwLayer, Segment};
use obd_format::output::Wrapping;
use obd_format::uuid::Uuid;
use obd_format::zfile::{ZFileOptions, ZFileReader};
use obd_format::{detect, FormatError, ReadAt};

/// A small committed layer: some data, a discard.
fn make_layer(dir: &Path, wrap: Wrapping) -> Vec<u8> {
    let (d, x) = (dir.join("d"), dir.join("i"));
    let _ = std::fs::remove_file(&d);
    let _ = std::fs::remove_file(&x);
    let mut l = RwLayer::create(&d, &x, 1 << 20, RwKind::Append, Uuid::NULL, Uuid::NULL).unwrap();
    let data: Vec<u8> = (0..40960u32).map(|i| (i * 7 % 251) as u8).collect();
    l.write_at(&data, 8192).unwrap();
    l.discard(65536, 4096).unwrap();
    let c = dir.join("c");
    let opts = CommitOptions {
        virtual_size: 1 << 20,
        ..Default::default()
    };
    l.commit_to(&opts, wrap, File::create(&c).unwrap()).unwrap();
    std::fs::read(&c).unwrap()
}

fn zt() -> Wrapping {
    Wrapping {
        zfile: Some(ZFileOptions::default()),
        tar: true,
        overwrite_header: true,
    }
}

/// Opens bytes as a layer and reads the whole device; returns the error if any.
fn try_read(bytes: Vec<u8>) -> Result<(), FormatError> {
    let u = detect::unwrap(Arc::new(bytes))?;
    let ro = LsmtRo::open(u.payload)?;
    let mut buf = vec![0u8; ro.size().min(4 << 20) as usize];
    ro.read_exact_at(&mut buf, 0).map_err(|e| FormatError::Io {
        context: "read".into(),
        source: e,
    })?;
    Ok(())
}

#[test]
fn truncations_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for wrap in [Wrapping::default(), zt()] {
        let good = make_layer(dir.path(), wrap);
        try_read(good.clone()).unwrap();
        let mut cuts: Vec<usize> = (0..good.len()).step_by(97).collect();
        cuts.extend([
            good.len() - 1,
            good.len() - 512,
            good.len() - 1024,
            4096,
            1536,
            512,
        ]);
        for n in cuts {
            let _ = try_read(good[..n].to_vec());
        }
        assert!(try_read(good[..good.len() - 5000].to_vec()).is_err());
    }
}

#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x9E3779B97F4A7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for wrap in [Wrapping::default(), zt()] {
        let good = make_layer(dir.path(), wrap);
        let mut errors = 0;
        for _ in 0..400 {
            let mut b = good.clone();
            for _ in 0..(1 + next() % 4) {
                let i = (next() % b.len() as u64) as usize;
                b[i] ^= 1 << (next() % 8);
            }
            if try_read(b).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0);
    }
}

#[test]
fn zfile_block_corruption_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = make_layer(dir.path(), Wrapping { tar: false, ..zt() });
    b[600] ^= 0xFF; // inside the first compressed block
    let z = ZFileReader::open(Arc::new(b)).unwrap();
    match z.verify_all() {
        Err(FormatError::Checksum { what, .. }) => assert!(what.contains("block 0"), "{what}"),
        o => panic!("expected a checksum error, got {o:?}"),
    }
    // A changed header byte breaks the header digest (upstream's ht_check).
    let mut b = make_layer(dir.path(), Wrapping { tar: false, ..zt() });
    b[400] = 1;
    assert!(matches!(
        ZFileReader::detect(&b.as_slice()),
        Err(FormatError::Checksum { .. })
    ));
}

/// Rewrites the index and trailer of a plain committed layer.
fn craft(entries: &[Segment], index_size: Option<u64>, data_sectors: u64) -> Vec<u8> {
    let mut f = HeaderTrailer::new(1 | FLAG_DATA | FLAG_SEALED, 1 << 30);
    let mut out = f.encode().unwrap().to_vec();
    out.resize((HT_SPACE + data_sectors * 512) as usize, 0xAB);
    let ioff = out.len() as u64;
    for e in entries {
        out.extend_from_slice(&e.encode());
    }
    f.flags = FLAG_DATA | FLAG_SEALED;
    f.index_offset = ioff;
    f.index_size = index_size.unwrap_or(entries.len() as u64);
    out.extend_from_slice(&f.encode().unwrap());
    out
}

fn corrupt_detail(b: Vec<u8>) -> String {
    match LsmtRo::open(Arc::new(b)) {
        Err(FormatError::Corrupt { detail, .. }) => detail,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn crafted_indexes_are_refused() {
    assert!(LsmtRo::open(Arc::new(craft(&[Segment::new(0, 8, 8)], None, 8))).is_ok());
    // Data past the data area (towards or past EOF).
    let d = corrupt_detail(craft(&[Segment::new(0, 8, 8)], None, 4));
    assert!(d.contains("outside the layer's data area"), "{d}");
    let d = corrupt_detail(craft(&[Segment::new(0, 8, 1 << 40)], None, 8));
    assert!(d.contains("outside"), "{d}");
    // Overlapping and unsorted.
    let d = corrupt_detail(craft(
        &[Segment::new(0, 8, 8), Segment::new(4, 8, 8)],
        None,
        16,
    ));
    assert!(d.contains("overlaps"), "{d}");
    // Zero and huge lengths.
    assert!(corrupt_detail(craft(&[Segment::new(0, 0, 8)], None, 8)).contains("length"));
    // A virtual offset past the virtual size.
    assert!(
        corrupt_detail(craft(&[Segment::new(1 << 40, 8, 8)], None, 8)).contains("virtual size")
    );
    // index_size beyond the limit, or beyond what the file holds: no allocation attempted.
    assert!(corrupt_detail(craft(&[], Some(u64::MAX / 2), 8)).contains("limit"));
    assert!(corrupt_detail(craft(&[], Some(999_999), 8)).contains("does not fit"));
    // Not an LSMT file at all.
    assert!(matches!(
        LsmtRo::open(Arc::new(vec![0u8; 10000])),
        Err(FormatError::BadMagic { .. })
    ));
}

#[test]
fn a_huge_zfile_index_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let b = make_layer(
        dir.path(),
        Wrapping {
            tar: false,
            overwrite_header: true,
            ..zt()
        },
    );
    let mut h = obd_format::zfile::ZHeader::decode(&b[..512]).unwrap();
    h.index_size = u64::MAX / 8;
    let mut c = b.clone();
    c[..512].copy_from_slice(&h.encode());
    assert!(matches!(
        ZFileReader::open(Arc::new(c)),
        Err(FormatError::Corrupt { .. })
    ));
}
