//! `obd apply` on hand-made layers: minimal diffs, and clear errors on hostile tars.

mod common;

use std::path::{Path, PathBuf};

use common::*;

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

/// A raw ustar header with a valid checksum.
fn header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn archive(blocks: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for b in blocks {
        v.extend_from_slice(b);
        v.resize(v.len().div_ceil(512) * 512, 0);
    }
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn fails_naming(tar: Vec<u8>, needles: &[&str]) {
    let mut img = Img::new();
    let o = img.layer(&tar).expect_err("a hostile layer must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} does not mention {n:?}");
    }
}

#[test]
fn hostile_layers_fail_with_the_entry_named() {
    // Truncated data.
    let mut t = archive(&[&header(b"trunc", b'0', 100_000, b""), &[7u8; 512]]);
    t.truncate(1024);
    fails_naming(t, &["truncated"]);
    // Bad checksum.
    let mut h = header(b"badsum", b'0', 0, b"");
    h[0] = b'B';
    fails_naming(archive(&[&h]), &["checksum", "Badsum"]);
    // Absurd size (8 GiB claimed, nothing there).
    fails_naming(
        archive(&[&header(b"absurd", b'0', 0o77777777777, b"")]),
        &["truncated"],
    );
    // Hard link to a missing target.
    fails_naming(
        archive(&[&header(b"link", b'1', 0, b"missing/target")]),
        &["link", "missing/target"],
    );
    // A symlink loop used as a parent directory.
    fails_naming(
        archive(&[
            &header(b"a", b'2', 0, b"b"),
            &header(b"b", b'2', 0, b"a"),
            &header(b"a/file", b'0', 0, b""),
        ]),
        &["a/file"],
    );
    // A name with a NUL inside a PAX path record.
    let rec = b"13 path=a\0bc\n";
    fails_naming(
        archive(&[
            &header(b"pax", b'x', rec.len() as u64, b""),
            rec,
            &header(b"x", b'0', 0, b""),
        ]),
        &["NUL"],
    );
}

#[test]
fn escaping_paths_stay_inside() {
    if !have("debugfs") {
        return;
    }
    let mut img = Img::new();
    let tar = archive(&[
        &header(b"../../escape", b'0', 3, b""),
        b"esc",
        &header(b"/abs", b'0', 3, b""),
        b"abs",
        &header(b"up", b'2', 0, b"../../.."),
        &header(b"up/through", b'0', 3, b""),
        b"thr",
    ]);
    img.layer(&tar).unwrap();
    let raw = img.export();
    e2fsck_clean(&raw);
    assert_eq!(cat(&raw, "/escape"), b"esc");
    assert_eq!(cat(&raw, "/abs"), b"abs");
    assert_eq!(cat(&raw, "/through"), b"thr");
}
