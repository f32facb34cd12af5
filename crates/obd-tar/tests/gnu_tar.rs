//! The reader against archives written by GNU tar in every format it has, including every
//! sparse flavour, and against hostile archives.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use obd_tar::{EntryKind, TarError, TarReader};

fn have_tar() -> bool {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "GNU tar is required under CI"
        );
        eprintln!("skipping: GNU tar missing");
    }
    ok
}

/// Builds a tree with a long name, a long symlink target, a hard link, a sparse file.
fn tree(dir: &Path) -> Vec<u8> {
    let root = dir.join("root");
    let long = "d".repeat(120);
    std::fs::create_dir_all(root.join(&long)).unwrap();
    std::fs::write(root.join(&long).join("f".repeat(150)), b"long").unwrap();
    std::os::unix::fs::symlink("t".repeat(200), root.join("sym")).unwrap();
    std::fs::write(root.join("a"), b"hello").unwrap();
    std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
    // Sparse: 1 MiB hole, 8 KiB data, 3 MiB hole, 100 bytes data, hole to 8 MiB.
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    let mut content = vec![0u8; 8 << 20];
    for (o, n) in [(1 << 20, 8192usize), (4 << 20, 100)] {
        for i in 0..n {
            content[o + i] = (i % 251) as u8 + 1;
        }
        std::os::unix::fs::FileExt::write_all_at(&f, &content[o..o + n], o as u64).unwrap();
    }
    f.set_len(8 << 20).unwrap();
    content
}

fn read_all(bytes: Vec<u8>) -> Result<Vec<(obd_tar::Entry, Vec<u8>)>, TarError> {
    let mut r = TarReader::new(Cursor::new(bytes));
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = r.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        // Expand sparse members.
        if let Some(map) = &e.sparse {
            let mut full = vec![0u8; e.size as usize];
            let mut pos = 0usize;
            for &(o, n) in map {
                full[o as usize..(o + n) as usize].copy_from_slice(&data[pos..pos + n as usize]);
                pos += n as usize;
            }
            data = full;
        }
        out.push((e, data));
    }
    Ok(out)
}

#[test]
fn every_gnu_tar_format_reads_back() {
    if !have_tar() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sparse_content = tree(dir.path());
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    for args in [
        vec!["--format=gnu"],
        vec!["--format=gnu", "--sparse"],
        vec!["--format=pax"],
        vec!["--format=pax", "--sparse", "--sparse-version=0.0"],
        vec!["--format=pax", "--sparse", "--sparse-version=0.1"],
        vec!["--format=pax", "--sparse", "--sparse-version=1.0"],
    ] {
        let out = dir.path().join("a.tar");
        let st = Command::new("tar")
            .args(&args)
            .args([
                "--numeric-owner",
                "--owner=4000000000",
                "--group=7",
                "--mtime=@-86401.25",
            ])
            .arg("-C")
            .arg(dir.path().join("root"))
            .arg("-cf")
            .arg(&out)
            .args(["a", "b", "sym", "sparse"])
            .arg(&long)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
        let entries =
            read_all(std::fs::read(&out).unwrap()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let find = |n: &str| {
            entries
                .iter()
                .find(|(e, _)| e.name == n.as_bytes())
                .unwrap_or_else(|| panic!("{args:?}: no {n}"))
        };
        assert_eq!(find("a").1, b"hello");
        assert_eq!(find("b").0.kind, EntryKind::HardLink, "{args:?}");
        assert_eq!(find("b").0.link, b"a");
        assert_eq!(find("sym").0.link, "t".repeat(200).as_bytes());
        assert_eq!(find(&long).1, b"long");
        let (se, sd) = find("sparse");
        assert_eq!(se.size, 8 << 20, "{args:?}");
        assert!(sd == &sparse_content, "{args:?}: sparse content differs");
        if args.contains(&"--sparse") {
            assert!(se.sparse.is_some(), "{args:?}");
        }
        if args.contains(&"--format=pax") {
            assert_eq!(find("a").0.uid, 4_000_000_000, "{args:?}");
            assert_eq!(
                find("a").0.mtime,
                obd_tar::Timestamp {
                    sec: -86402,
                    nsec: 750_000_000
                },
                "{args:?}"
            );
        } else {
            // GNU base-256 uid.
            assert_eq!(find("a").0.uid, 4_000_000_000, "{args:?}");
        }
        assert_eq!(find("a").0.gid, 7);
    }
}

fn header(name: &str, typ: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typ;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn hostile_archives_fail_with_a_named_error() {
    // Bad checksum.
    let mut h = header("evil", b'0', 0);
    h[0] = b'E';
    let e = read_all(h.to_vec()).unwrap_err().to_string();
    assert!(e.contains("checksum") && e.contains("Evil"), "{e}");
    // Truncated data.
    let mut v = header("big", b'0', 1 << 20).to_vec();
    v.extend_from_slice(&[1u8; 1000]);
    assert!(matches!(read_all(v), Err(TarError::Truncated(_))));
    // Absurd size: error at the truncation, not an allocation.
    let mut v = header("huge", b'0', 0).to_vec();
    v[124..136].copy_from_slice(&[
        0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    v[148..156].fill(b' ');
    let sum: u32 = v.iter().map(|&b| b as u32).sum();
    v[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert!(read_all(v).is_err());
    // A NUL in a PAX path.
    let body = "13 path=a\0bc\n".to_string();
    assert_eq!(body.len(), 13);
    let mut v = header("pax", b'x', body.len() as u64).to_vec();
    let mut d = body.into_bytes();
    d.resize(512, 0);
    v.extend_from_slice(&d);
    v.extend_from_slice(&header("x", b'0', 0));
    let e = read_all(v).unwrap_err().to_string();
    assert!(e.contains("NUL"), "{e}");
    // A huge PAX header is refused before allocating.
    let v = header("pax", b'x', 0o77777777777).to_vec();
    let e = read_all(v).unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
    // Unsupported type.
    let e = read_all(header("vol", b'M', 0).to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported member type"), "{e}");
    // Random garbage never panics.
    let mut seed = 12345u64;
    for _ in 0..300 {
        let mut v = header("f", b'0', 5).to_vec();
        v.extend_from_slice(&[b'x'; 512]);
        v.extend_from_slice(&[0u8; 1024]);
        for _ in 0..3 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % v.len();
            v[i] = (seed >> 20) as u8;
        }
        let _ = read_all(v);
    }
}
