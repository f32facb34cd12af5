//! `obd apply` on hand-made layers: minimal diffs, and clear errors on hostile tars.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use obd_tar::testutil::{header, RawTar};

/// A tar built with the `tar` crate from `(path, content)` files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, p, *c).unwrap();
    }
    b.into_inner().unwrap()
}

struct Img {
    dir: tempfile::TempDir,
    lowers: Vec<serde_json::Value>,
}

impl Img {
    fn new() -> Self {
        Img {
            dir: tempfile::tempdir().unwrap(),
            lowers: Vec::new(),
        }
    }
    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    /// Applies `tar` as the next layer; returns the committed layer's size, or the failed
    /// command's output.
    fn layer(&mut self, tar: &[u8]) -> Result<u64, std::process::Output> {
        let i = self.lowers.len();
        let (d, x, t) = (
            self.p(&format!("d{i}")),
            self.p(&format!("x{i}")),
            self.p(&format!("t{i}.tar")),
        );
        std::fs::write(&t, tar).unwrap();
        run_ok(obd().arg("create").arg(&d).arg(&x).arg("64"));
        let cfg = self.p(&format!("c{i}.json"));
        std::fs::write(
            &cfg,
            serde_json::json!({"lowers": self.lowers, "upper": {"data": d, "index": x}})
                .to_string(),
        )
        .unwrap();
        let mut a = obd();
        a.arg("apply");
        if i == 0 {
            a.arg("--mkfs");
        }
        let o = a.arg(&t).arg(&cfg).output().unwrap();
        if !o.status.success() {
            return Err(o);
        }
        let l = self.p(&format!("l{i}"));
        run_ok(obd().args(["commit", "-z", "-t"]).arg(&d).arg(&x).arg(&l));
        self.lowers.push(serde_json::json!({"file": l}));
        Ok(std::fs::metadata(&l).unwrap().len())
    }
    fn export(&self) -> PathBuf {
        let c = self.p("ro.json");
        std::fs::write(&c, serde_json::json!({"lowers": self.lowers}).to_string()).unwrap();
        let raw = self.p("raw");
        run_ok(obd().arg("export-raw").arg(&c).arg(&raw));
        raw
    }
}

fn cat(raw: &Path, p: &str) -> Vec<u8> {
    let out = raw.with_extension("out");
    let _ = std::fs::remove_file(&out);
    run_ok(
        tool("debugfs")
            .arg("-R")
            .arg(format!("dump {p} {}", out.display()))
            .arg(raw),
    );
    std::fs::read(&out).unwrap_or_default()
}

#[test]
fn small_layers_commit_small() {
    if !have("e2fsck") {
        return;
    }
    let mut img = Img::new();
    let base = img
        .layer(&tar_of(&[
            ("etc/hostname", b"base\n"),
            ("etc/motd", b"welcome\n"),
        ]))
        .unwrap();
    let add = img
        .layer(&tar_of(&[("etc/new-file", &[b'x'; 1024])]))
        .unwrap();
    let del = img.layer(&tar_of(&[("etc/.wh.motd", b"")])).unwrap();
    eprintln!("64 GiB fs: mkfs+2 files layer {base} bytes; add 1 KiB file {add} bytes; delete 1 file {del} bytes");
    assert!(
        add <= 64 << 10,
        "adding one small file committed {add} bytes"
    );
    assert!(del <= 64 << 10, "deleting one file committed {del} bytes");
    let raw = img.export();
    e2fsck_clean(&raw);
    assert_eq!(cat(&raw, "/etc/new-file"), vec![b'x'; 1024]);
    assert_eq!(cat(&raw, "/etc/hostname"), b"base\n");
    assert!(cat(&raw, "/etc/motd").is_empty());
}

/// Applies a hostile layer with `obd apply`: it must fail with exit 5 (bad input), no
/// panic, and an error naming each of `needles`.
fn fails_naming(tar: Vec<u8>, needles: &[&str]) {
    let mut img = Img::new();
    let o = img.layer(&tar).expect_err("a hostile layer must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "not exit 5 (bad input): {err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
}

#[test]
fn hostile_layers_fail_with_the_entry_named() {
    // Truncated data.
    let t = RawTar::new()
        .block(header(b"trunc", b'0', 100_000, 0o644, b""))
        .bytes(&[7u8; 512])
        .into_bytes();
    fails_naming(t, &["truncated", "trunc"]);
    // Truncated inside a header.
    let t = RawTar::new()
        .file("a", b"1")
        .bytes(&[1u8; 100])
        .into_bytes();
    fails_naming(t, &["truncated"]);
    // Bad checksum.
    let mut h = header(b"badsum", b'0', 0, 0o644, b"");
    h[0] = b'B';
    fails_naming(RawTar::new().block(h).end(), &["checksum", "Badsum"]);
    // Absurd size (8 GiB claimed, nothing there).
    fails_naming(
        RawTar::new()
            .block(header(b"absurd", b'0', 0o77777777777, 0o644, b""))
            .end(),
        &["truncated"],
    );
    // Hard link to a missing target.
    fails_naming(
        RawTar::new()
            .member("link", b'1', 0o644, "missing/target", b"")
            .end(),
        &["link", "missing/target"],
    );
    // A symlink loop used as a parent directory.
    fails_naming(
        RawTar::new()
            .symlink("a", "b", 0o777)
            .symlink("b", "a", 0o777)
            .file("a/file", b"")
            .end(),
        &["a/file"],
    );
    // A name with a NUL inside a PAX path record.
    fails_naming(
        RawTar::new()
            .pax(&[("path", b"a\0bc")])
            .file("x", b"")
            .end(),
        &["NUL"],
    );
    // A PAX header over the 1 MiB limit.
    fails_naming(
        RawTar::new()
            .pax(&[("comment", &vec![b'y'; 1 << 20])])
            .file("x", b"")
            .end(),
        &["PAX header", "limit"],
    );
    // A 256-byte name component.
    fails_naming(
        RawTar::new()
            .pax(&[("path", "n".repeat(256).as_bytes())])
            .file("x", b"")
            .end(),
        &["255-byte limit"],
    );
    // A member larger than the 64 GiB filesystem: refused at its header, at once.
    let t = std::time::Instant::now();
    fails_naming(
        RawTar::new()
            .block(header(b"zeros", b'0', 200 << 30, 0o644, b""))
            .into_bytes(),
        &["\"zeros\"", "214748364800 bytes", "64.0 GiB", "--vsize"],
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

/// The rules where containerd's unpack (Go's archive/tar, `symlink(2)`) decides: symlink
/// modes, several extended headers before one entry, PAX global headers.
#[test]
fn layers_mean_what_containerd_unpacks() {
    let mut img = Img::new();
    let tar = RawTar::new()
        .file("target", b"hi\n")
        .symlink("l0", "target", 0)
        .symlink("l0644", "target", 0o644)
        .pax(&[("path", b"PAX1/PAX1/foo")])
        .pax(&[("path", b"PAX2/PAX2/foo"), ("mtime", b"1000")])
        .pax(&[("linkpath", b"PAX3")])
        .pax(&[("comment", b"x")])
        .symlink("bar", "tgt", 0o777)
        .gnu_long(b'L', "first/long/name")
        .gnu_long(b'L', "second")
        .gnu_long(b'K', "firstlink")
        .gnu_long(b'K', "lastlink")
        .symlink("short", "x", 0o777)
        .global(&[("path", b"global1"), ("mtime", b"12345")])
        .file("file1", b"one\n")
        .end();
    img.layer(&tar).unwrap();
    let raw = img.export();
    e2fsck_clean(&raw);
    if !have("debugfs") {
        eprintln!("skipping the listing: no debugfs");
        return;
    }
    let o = run_ok(tool("debugfs").arg("-R").arg("ls -l /").arg(&raw));
    let listing = String::from_utf8_lossy(&o.stdout);
    let mut got: Vec<(String, String)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // inode mode (links) uid gid size date time name
            (f.len() >= 9).then(|| (f[f.len() - 1].to_string(), f[1].to_string()))
        })
        .filter(|(n, _)| !matches!(n.as_str(), "." | ".." | "lost+found"))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("bar", "120777"),
        ("file1", "100644"),
        ("l0", "120777"),
        ("l0644", "120777"),
        ("second", "120777"),
        ("target", "100644"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{listing}");
    let o = run_ok(tool("debugfs").arg("-R").arg("stat /file1").arg(&raw));
    let stat = String::from_utf8_lossy(&o.stdout);
    assert!(
        stat.contains("0x6553f100"),
        "file1 re-dated by a global header: {stat}"
    );
    let o = run_ok(tool("debugfs").arg("-R").arg("stat /second").arg(&raw));
    let stat = String::from_utf8_lossy(&o.stdout);
    assert!(stat.contains("\"lastlink\""), "{stat}");
}

/// `obd inspect FILE | head -1`: a closed stdout is a quiet exit 0, not a panic.
#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let mut img = Img::new();
    img.layer(&tar_of(&[("f", b"x")])).unwrap();
    let layer = img.p("l0");
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let o = obd()
        .arg("inspect")
        .arg(&layer)
        .stdout(w)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn escaping_paths_stay_inside() {
    if !have("debugfs") {
        return;
    }
    let mut img = Img::new();
    let tar = RawTar::new()
        .file("../../escape", b"esc")
        .file("/abs", b"abs")
        .symlink("up", "../../..", 0o777)
        .file("up/through", b"thr")
        .end();
    img.layer(&tar).unwrap();
    let raw = img.export();
    e2fsck_clean(&raw);
    assert_eq!(cat(&raw, "/escape"), b"esc");
    assert_eq!(cat(&raw, "/abs"), b"abs");
    assert_eq!(cat(&raw, "/through"), b"thr");
}
