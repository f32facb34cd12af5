//! Metadata-only application (TurboOCI): file blocks are mapped onto the tar, not written.
//! Copying the tar's bytes to the mapped places must give back every file.

use obd_ext4::{Ext4, MkfsOptions, ROOT_INO};
use obd_format::io::{RawImage, WriteAt};

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).unwrap();
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn remote_mapping_reproduces_files() {
    let mut b = tar::Builder::new(Vec::new());
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one", b"x".to_vec()),
        ("block", pattern(4096, 1)),
        ("odd", pattern(10_001, 2)),
        ("dir/big", pattern(5 << 20, 3)),
        ("zeros", vec![0u8; 9000]),
        ("dup", pattern(700, 4)),
        ("gone", pattern(20_000, 5)),
    ];
    for (p, d) in &files {
        file(&mut b, p, d);
    }
    // Last wins; a file replaced within the layer frees its blocks for the next one.
    file(&mut b, "dup", &pattern(3000, 6));
    file(&mut b, "gone", b"short");
    let tar_bytes = b.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dev = RawImage::create(dir.path().join("img"), 1 << 30).unwrap();
    let mut fs = Ext4::mkfs(dev, &MkfsOptions::default()).unwrap();
    let mut maps: Vec<(u64, u64, u64)> = Vec::new();
    obd_tar::apply_tar_remote(
        &mut fs,
        &tar_bytes[..],
        &mut |_dev: &mut RawImage, d, n, t| {
            assert_eq!(d % 512, 0);
            assert_eq!(n % 512, 0);
            assert_eq!(t % 512, 0);
            maps.push((d, n, t));
            Ok(())
        },
    )
    .unwrap();
    fs.flush().unwrap();
    let mut dev = fs.into_device();
    // Nothing but metadata was written: materialise the mappings in order.
    for &(d, n, t) in &maps {
        let end = (t + n).min(tar_bytes.len() as u64) as usize;
        dev.write_at(&tar_bytes[t as usize..end], d).unwrap();
    }
    let mut fs = Ext4::open(dev).unwrap();
    let mut want: Vec<(&str, Vec<u8>)> = files
        .into_iter()
        .filter(|(p, _)| *p != "dup" && *p != "gone")
        .collect();
    want.push(("dup", pattern(3000, 6)));
    want.push(("gone", b"short".to_vec()));
    for (p, d) in want {
        let ino = fs.resolve(p.as_bytes(), false).unwrap().expect(p);
        assert_eq!(fs.read_file(ino).unwrap(), d, "{p}");
    }
    assert!(fs.lookup(ROOT_INO, b"dir").unwrap().is_some());
}
