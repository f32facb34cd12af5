//! The test corpus (`OBD_CORPUS`, an OCI layout; `.ci/run` builds it): the layers of an
//! image are built incrementally into one EROFS image; after every layer `fsck.erofs`
//! must accept it, and after the last one its tree (through `fsck.erofs --extract` and,
//! where allowed, a kernel loop mount, xattrs included) must equal `umoci unpack` of the
//! image. Prints the metadata written per layer beside the compressed layer size.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("OBD_CORPUS") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "OBD_CORPUS must be set under CI"
            );
            eprintln!("skipping: OBD_CORPUS not set");
            None
        }
    }
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The layers of `tag` (a single-platform manifest): (blob path, compressed size).
fn layers(layout: &Path, tag: &str) -> Vec<(PathBuf, u64)> {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in the corpus"));
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(layout, desc["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    man["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                blob(layout, l["digest"].as_str().unwrap()),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn uncompressed(p: &Path) -> Vec<u8> {
    let (_, mut r) = obd_tar::decompress::decompress(std::fs::File::open(p).unwrap()).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

fn run(tag: &str) {
    let Some(layout) = corpus() else { return };
    if !have_erofs_utils() {
        return;
    }
    let ls = layers(&layout, tag);
    let tars: Vec<Vec<u8>> = ls.iter().map(|(p, _)| uncompressed(p)).collect();
    let built = build_layers(&tars, |_, image| fsck(image));
    eprintln!(
        "{tag}: layer | compressed | tar | entries | mappings | meta written \
         (blocks rewritten in place) | inodes (compact) | inodes written"
    );
    for (i, ((_, csize), (l, s))) in ls.iter().zip(&built.stats).enumerate() {
        eprintln!(
            "{tag}: {i} | {csize} | {} | {} | {} | {} B ({} blocks, {} in place{}) | {} ({}) | {}",
            l.tar_bytes,
            l.entries,
            l.mappings,
            s.meta_bytes(),
            s.meta_blocks,
            s.rewritten_blocks,
            if s.full_rewrite { ", full" } else { "" },
            s.inodes,
            s.compact_inodes,
            s.inodes_written
        );
    }

    let have_umoci = Command::new("umoci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_umoci {
        assert!(
            std::env::var_os("CI").is_none(),
            "umoci must be installed under CI"
        );
        eprintln!("note: umoci missing; trees are not compared");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let bundle = w.path().join("bundle");
    let o = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rootfs = bundle.join("rootfs");
    let want = walk(&rootfs);
    let out = fsck_extract(&built.image);
    assert_trees(
        &format!("{tag} (fsck.erofs --extract)"),
        &fsck_view(&want),
        &walk(&out.path().join("x")),
    );
    drop(out);
    let want_x = tree_xattrs(&rootfs);
    with_mount(&built.image, |mnt| {
        assert_trees(&format!("{tag} (kernel mount)"), &want, &walk(mnt));
        assert_eq!(tree_xattrs(mnt), want_x, "{tag}: xattrs differ");
    });
    eprintln!("{tag}: identical to umoci unpack ({} entries)", want.len());
}

#[test]
fn corpus_edge() {
    run("edge");
}

#[test]
fn corpus_debian() {
    if std::env::var_os("OBD_CORPUS_NO_DEBIAN").is_some() {
        eprintln!("skipping debian: OBD_CORPUS_NO_DEBIAN is set");
        return;
    }
    run("debian");
}
