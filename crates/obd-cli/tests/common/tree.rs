//! Tree comparison for end-to-end tests: the corpus location, loop mounts, listings made
//! by `tools/treelist.py`, and `umoci unpack` of an image prefix as the reference.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_ok, tool};

pub fn corpus() -> Option<PathBuf> {
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

pub fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

pub fn can_mount() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("probe");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let ok = tool("mkfs.ext4")
        .arg("-q")
        .arg(&img)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(&img)
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if ok {
        let _ = Command::new("umount").arg(dir.path()).status();
    } else {
        eprintln!("note: loop mounts are not permitted here; trees are not compared");
    }
    ok
}

pub fn listing(root: &Path, ignore_lost_found: bool) -> String {
    let mut c = Command::new("python3");
    c.arg(tools().join("treelist.py"))
        .arg(root)
        .arg("--no-root-mtime");
    if ignore_lost_found {
        c.args(["--ignore", "lost+found"]);
    }
    String::from_utf8(run_ok(&mut c).stdout).unwrap()
}

pub fn mounted_listing(raw: &Path) -> String {
    let mnt = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(raw)
            .arg(mnt.path()),
    );
    let l = listing(mnt.path(), true);
    run_ok(Command::new("umount").arg(mnt.path()));
    l
}

/// umoci's unpack of the first `k` layers of `tag`.
pub fn umoci_listing(layout: &Path, tag: &str, k: usize, w: &Path) -> String {
    let pfx = w.join(format!("pfx{k}"));
    run_ok(
        Command::new("python3")
            .arg(tools().join("oci_prefix.py"))
            .arg(layout)
            .arg(tag)
            .arg(k.to_string())
            .arg(&pfx),
    );
    let bundle = w.join(format!("bundle{k}"));
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:prefix", pfx.display()))
            .arg(&bundle),
    );
    let l = listing(&bundle.join("rootfs"), false);
    let _ = std::fs::remove_dir_all(&bundle);
    l
}

pub fn assert_same(tag: &str, k: usize, want: &str, got: &str) {
    if want != got {
        let w: Vec<&str> = want.lines().collect();
        let g: Vec<&str> = got.lines().collect();
        let missing: Vec<_> = w.iter().filter(|l| !g.contains(l)).take(10).collect();
        let extra: Vec<_> = g.iter().filter(|l| !w.contains(l)).take(10).collect();
        panic!("{tag}, first {k} layers: trees differ\nreference only: {missing:#?}\nours only: {extra:#?}");
    }
    eprintln!(
        "{tag}, first {k} layers: identical ({} entries)",
        want.lines().count()
    );
}
