//! Directories across layers: linear → htree → two-level htree → back to linear, each layer
//! checked by e2fsck, and lookups of every name through our reader.

mod common;

use std::io;

use obd_ext4::{Attrs, Ext4, MkfsOptions, Timestamp, ROOT_INO};
use obd_format::io::RawImage;

fn a() -> Attrs {
    Attrs::new(0o644, 0, 0, Timestamp::from_secs(0))
}

fn name(i: usize) -> String {
    format!("a-rather-long-file-name-to-fill-leaves-quickly-{i:07}")
}

fn layer(img: &std::path::Path, f: impl FnOnce(&mut Ext4<RawImage>, u32)) {
    let mut fs = Ext4::open(RawImage::open(img).unwrap()).unwrap();
    let d = fs.lookup(ROOT_INO, b"d").unwrap().unwrap();
    f(&mut fs, d);
    fs.flush().unwrap();
    drop(fs);
    if common::tools_available("directory_shapes_across_layers") {
        common::fsck_clean(img);
    }
}

fn check(img: &std::path::Path, live: &[usize]) {
    let mut fs = Ext4::open(RawImage::open(img).unwrap()).unwrap();
    let d = fs.lookup(ROOT_INO, b"d").unwrap().unwrap();
    assert_eq!(fs.read_dir(d).unwrap().len(), live.len());
    for &i in live.iter().step_by(97) {
        assert!(
            fs.lookup(d, name(i).as_bytes()).unwrap().is_some(),
            "{}",
            name(i)
        );
    }
}

#[test]
fn directory_shapes_across_layers() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut fs = Ext4::mkfs(
        RawImage::create(&img, 4 << 30).unwrap(),
        &MkfsOptions::default(),
    )
    .unwrap();
    let d = fs
        .mkdir(ROOT_INO, b"d", &Attrs { perm: 0o755, ..a() })
        .unwrap();
    for i in 0..10 {
        fs.create_file(d, name(i).as_bytes(), &a(), 0, &mut io::empty())
            .unwrap();
    }
    fs.flush().unwrap();
    drop(fs);
    let mut live: Vec<usize> = (0..10).collect();
    // Linear -> one-level htree.
    layer(&img, |fs, d| {
        for i in 10..3000 {
            fs.create_file(d, name(i).as_bytes(), &a(), 0, &mut io::empty())
                .unwrap();
        }
    });
    live.extend(10..3000);
    check(&img, &live);
    // -> two levels (more than 508 leaves), in an incremental layer.
    layer(&img, |fs, d| {
        for i in 3000..45_000 {
            fs.mknod(
                d,
                name(i).as_bytes(),
                obd_ext4::FileKind::Fifo,
                (0, 0),
                &a(),
            )
            .unwrap();
        }
    });
    live.extend(3000..45_000);
    check(&img, &live);
    let st = common::debugfs(&img, "htree_dump /d");
    if !st.is_empty() {
        assert!(
            st.contains("Indirect levels: 1"),
            "{}",
            &st[..st.len().min(2000)]
        );
    }
    // Incremental changes to a two-level tree: splits and removals.
    layer(&img, |fs, d| {
        for i in (0..45_000).step_by(7) {
            fs.unlink(d, name(i).as_bytes()).unwrap();
        }
        for i in 45_000..50_000 {
            fs.create_file(d, name(i).as_bytes(), &a(), 0, &mut io::empty())
                .unwrap();
        }
    });
    live.retain(|i| i % 7 != 0);
    live.extend(45_000..50_000);
    check(&img, &live);
    // Back to a single linear block.
    layer(&img, |fs, d| {
        for &i in &live[5..] {
            fs.unlink(d, name(i).as_bytes()).unwrap();
        }
    });
    live.truncate(5);
    check(&img, &live);
    if common::tools_available("directory_shapes_across_layers") {
        let st = common::debugfs(&img, "stat /d");
        assert!(st.contains("Size: 4096"), "{st}");
    }
}
