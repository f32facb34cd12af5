//! Helpers shared by the integration tests: running e2fsprogs tools on images.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// True when e2fsck, debugfs and dumpe2fs can run. Without them a test prints a skip
/// message and returns — unless `CI` is set, where it panics.
pub fn tools_available(test: &str) -> bool {
    let ok = ["e2fsck", "debugfs", "dumpe2fs"].iter().all(|t| {
        Command::new(t).arg("-V").output().is_ok()
            || Path::new(&format!("/usr/sbin/{t}")).exists()
            || Path::new(&format!("/sbin/{t}")).exists()
    });
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: e2fsprogs (e2fsck, debugfs, dumpe2fs) are required in CI");
        }
        eprintln!("{test}: skipped, e2fsprogs not installed");
    }
    ok
}

fn tool(name: &str) -> Command {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            let mut c = Command::new(p);
            c.env("TZ", "UTC");
            return c;
        }
    }
    let mut c = Command::new(name);
    c.env("TZ", "UTC");
    c
}

/// Runs `e2fsck -fn` and panics with its output unless it exits 0.
pub fn fsck_clean(img: &Path) {
    let out = tool("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("run e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn {} exited {:?}:\n{text}",
        img.display(),
        out.status.code()
    );
}

/// `dumpe2fs -h` output.
pub fn dumpe2fs(img: &Path) -> String {
    let out = tool("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .expect("run dumpe2fs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one `dumpe2fs -h` field.
pub fn field(dump: &str, name: &str) -> String {
    dump.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no field {name} in dumpe2fs output:\n{dump}"))
}

/// Runs one debugfs request and returns its stdout.
pub fn debugfs(img: &Path, request: &str) -> String {
    let out = tool("debugfs")
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one debugfs request and returns raw stdout bytes.
pub fn debugfs_bytes(img: &Path, request: &str) -> Vec<u8> {
    tool("debugfs")
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .expect("run debugfs")
        .stdout
}

/// Makes an image with the real mke2fs.
pub fn mke2fs(img: &Path, size: &str, extra: &[&str]) {
    let mut c = tool("mkfs.ext4");
    c.args(["-q", "-F", "-b", "4096", "-I", "256"])
        .args(extra)
        .arg(img)
        .arg(size);
    let out = c.output().expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
