//! Our readers against files written by the upstream C++ tools (testdata/upstream).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_format::detect;
use obd_format::lsmt::HeaderTrailer;
use obd_format::zfile::ZHeader;
use obd_format::ReadAt;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/upstream")
}

/// Extracts `ext4_64` from the baselayer tarball into `dir`.
fn baselayer(dir: &Path) -> PathBuf {
    let f = std::fs::File::open(testdata().join("ext4_64.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    let out = dir.join("ext4_64");
    let mut v = Vec::new();
    e.read_to_end(&mut v).unwrap();
    std::fs::write(&out, v).unwrap();
    out
}

#[test]
fn baselayer_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = baselayer(dir.path());
    let u = detect::unwrap(detect::open_file(&p).unwrap()).unwrap();
    assert!(u.tar.is_none());
    let z = u.zfile.clone().expect("baselayer is a raw ZFile");
    assert_eq!(z.block_count(), 132_309);
    assert_eq!(z.info().original_file_size, 541_937_664);
    assert_eq!(z.verify_all().unwrap(), 132_309);
    let ro = detect::open_layer(&p).unwrap();
    let t = ro.trailer();
    assert_eq!(t.virtual_size, 64 << 30);
    assert_eq!(t.uuid.to_string(), "C02FB491-B4D4-4904-8684-A014D032AF78");
    assert!(t.parent_uuid.is_null());
    assert_eq!(t.index_offset, 541_798_400);
    assert_eq!(ro.raw_index_entries(), 8448);
    assert_eq!(ro.index().len(), 8323);
    assert_eq!(ro.index().iter().filter(|s| s.zeroed).count(), 8209);
    // The ext4 superblock: magic 0xEF53, 16777216 blocks.
    let mut sb = [0u8; 1024];
    ro.read_exact_at(&mut sb, 1024).unwrap();
    assert_eq!(u16::from_le_bytes([sb[56], sb[57]]), 0xEF53);
    assert_eq!(u32::from_le_bytes(sb[4..8].try_into().unwrap()), 16_777_216);
}

fn converted_layer() -> PathBuf {
    testdata().join(
        "converted-hello-world-layout/blobs/sha256/022231c3f1af70e0cc42f0c3781eabf174cff608210585bf93fc83e16d33672d",
    )
}

#[test]
fn converted_layer_opens_and_our_encoders_match_its_bytes() {
    let p = converted_layer();
    let raw = std::fs::read(&p).unwrap();
    let u = detect::unwrap(detect::open_file(&p).unwrap()).unwrap();
    let t = u.tar.expect("tar-wrapped");
    assert_eq!(t.offset, 1536);
    assert!(t.pax);
    // Our tar wrapper header blocks are byte-identical to upstream's for the same size.
    let ours = obd_format::tarwrap::header_blocks(t.size);
    assert_eq!(&ours[..1024], &raw[..1024], "PAX blocks differ");
    // The ustar block differs only if the building host named uid 0 differently.
    assert_eq!(&ours[1024..1536], &raw[1024..1536], "ustar block differs");

    let z = u.zfile.expect("ZFile inside");
    z.verify_all().unwrap();
    let zh = &raw[1536..1536 + 512];
    let h = ZHeader::decode(zh).unwrap();
    assert_eq!(ZHeader::compute_digest(zh), h.digest, "header digest");
    assert_eq!(
        &h.encode()[..],
        zh,
        "ZFile header re-encodes byte-identically"
    );
    let zt_off = 1536 + t.size as usize - 512;
    let zt = &raw[zt_off..zt_off + 512];
    let tr = ZHeader::decode(zt).unwrap();
    assert_eq!(
        &tr.encode()[..],
        zt,
        "ZFile trailer re-encodes byte-identically"
    );

    let ro = obd_format::lsmt::LsmtRo::open(u.payload.clone()).unwrap();
    let mut hb = vec![0u8; 4096];
    u.payload.read_exact_at(&mut hb, 0).unwrap();
    let hdr = HeaderTrailer::decode(&hb).unwrap();
    assert_eq!(
        &hdr.encode().unwrap()[..],
        &hb[..],
        "LSMT header re-encodes byte-identically"
    );
    assert_eq!(ro.virtual_size(), 64 << 30);
    assert!(!ro.header().uuid.is_null());
    let _ = Arc::new(ro);
}
