//! Tests of the gzip index: building over streams from several compressors, random reads
//! against the full decompression, multi-member and empty streams, and hostile index bytes.

use std::io::{Read, Write};
use std::sync::Arc;

use super::meta::{HEADER_SIZE, WINDOW_SIZE};
use super::*;
use crate::error::FormatError;
use crate::io::ReadAt;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Deterministic data of mixed compressibility: random runs, text, zeros, short repeats.
fn corpus(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "overlaybd",
        "layer",
        "block",
        "sector",
        "the",
        "gzip",
        "index",
        "window",
        "tar",
        "usr/lib/",
        "x86_64-linux-gnu",
        "\n",
        "  ",
        "libc.so.6",
        "0000644",
        "ustar",
    ];
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(len + 70_000);
    while v.len() < len {
        let n = 1 + r.below(60_000) as usize;
        match r.below(5) {
            0 => v.extend((0..n / 8 + 1).flat_map(|_| r.next().to_le_bytes())),
            1 | 2 => {
                let end = v.len() + n;
                while v.len() < end {
                    v.extend_from_slice(WORDS[r.below(WORDS.len() as u64) as usize].as_bytes());
                }
            }
            3 => v.resize(v.len() + n, 0),
            _ => {
                let pat: Vec<u8> = (0..1 + r.below(40)).map(|_| r.next() as u8).collect();
                let end = v.len() + n;
                while v.len() < end {
                    v.extend_from_slice(&pat);
                }
            }
        }
    }
    v.truncate(len);
    v
}

fn gz_flate2(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The `gzip` binary, if installed.
fn gz_binary(data: &[u8]) -> Option<Vec<u8>> {
    let mut child = std::process::Command::new("gzip")
        .args(["-c", "-n", "-6"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().unwrap();
    let d = data.to_vec();
    let t = std::thread::spawn(move || stdin.write_all(&d));
    let out = child.wait_with_output().ok()?;
    t.join().unwrap().ok()?;
    out.status.success().then_some(out.stdout)
}

/// Decompresses `gz` through the index builder in uneven reads.
fn build(gz: &[u8], span: u32) -> (Vec<u8>, GzIndexBuild) {
    let opts = GzIndexOptions {
        span,
        ..Default::default()
    };
    let mut r = GzIndexReader::with_options(gz, opts).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 7777];
    let mut k = 0;
    loop {
        let want = [1, 7777, 513, 4096][k % 4];
        k += 1;
        let n = r.read(&mut buf[..want]).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let b = r.finish().unwrap();
    (out, b)
}

fn check_random_reads(f: &GzIndexedFile, data: &[u8], seed: u64, n: usize) {
    assert_eq!(f.size(), data.len() as u64);
    let mut r = Rng(seed);
    for _ in 0..n {
        let off = r.below(data.len() as u64 + 10);
        let len = r.below(300_000) as usize;
        let mut b = vec![0u8; len];
        let got = f.read_at(&mut b, off).unwrap();
        let want = data.len().saturating_sub(off as usize).min(len);
        assert_eq!(got, want, "length at {off}+{len}");
        assert!(
            b[..got] == data[off as usize..off as usize + got],
            "data at {off}+{len}"
        );
    }
}

fn check_sequential(f: &GzIndexedFile, data: &[u8]) {
    let mut out = vec![0u8; data.len()];
    for (i, c) in out.chunks_mut(100_000).enumerate() {
        f.read_exact_at(c, i as u64 * 100_000).unwrap();
    }
    assert!(out == data);
}

fn check_all(gz: &[u8], data: &[u8], span: u32, seed: u64) -> GzIndexBuild {
    let (out, b) = build(gz, span);
    assert!(out == data, "decompressed stream differs");
    assert_eq!(b.members, 1);
    assert!(b.covers_all());
    assert_eq!(b.compressed_size, gz.len() as u64);
    let h = &b.index.header;
    assert_eq!(h.gzip_file_size, gz.len() as u64);
    assert_eq!(h.uncompress_file_size, data.len() as u64);
    assert_eq!(h.index_file_size, b.meta.len() as u64);
    assert_eq!(h.span, span);
    let e = &b.index.entries;
    assert_eq!(e[0].de_pos, 0);
    assert_eq!(e[0].bits, 0);
    assert_eq!(e[0].win_pos, HEADER_SIZE);
    // At most one entry per span, and no span boundary is left far behind.
    assert!(e.len() as u64 <= data.len() as u64 / span as u64 + 1);
    assert_eq!(GzIndex::parse_bytes(&b.meta).unwrap(), b.index);
    let f = GzIndexedFile::open(Arc::new(gz.to_vec()), Arc::new(b.meta.clone())).unwrap();
    check_random_reads(&f, data, seed, 200);
    check_sequential(&f, data);
    // Every entry is a working access point.
    for en in e {
        let mut one = [0u8; 1];
        if en.de_pos < data.len() as u64 {
            f.read_exact_at(&mut one, en.de_pos).unwrap();
            assert_eq!(one[0], data[en.de_pos as usize]);
        }
    }
    b
}

#[test]
fn flate2_stream_default_span() {
    let data = corpus(12 << 20, 1);
    let gz = gz_flate2(&data, 6);
    let b = check_all(&gz, &data, meta::DEFAULT_SPAN, 11);
    assert!(
        b.index.entries.len() >= 6,
        "{} entries",
        b.index.entries.len()
    );
    // Deterministic output.
    let (_, b2) = build(&gz, meta::DEFAULT_SPAN);
    assert!(b2.meta == b.meta);
}

#[test]
fn flate2_stream_small_span_many_entries() {
    let data = corpus(6 << 20, 2);
    // flate2's level 1 (zlib-rs "quick" strategy) writes one huge fixed-Huffman block, so its
    // index has the single entry at 0: correct, just slow to seek. Check it reads right.
    let gz = gz_flate2(&data, 1);
    let b = check_all(&gz, &data, 64 << 10, 21);
    assert!(!b.index.entries.is_empty());
    for level in [6, 9] {
        let gz = gz_flate2(&data, level);
        let b = check_all(&gz, &data, 64 << 10, 20 + level as u64);
        assert!(
            b.index.entries.len() > 30,
            "{} entries",
            b.index.entries.len()
        );
        assert!(
            b.index.entries.iter().any(|e| e.bits != 0),
            "no entry needs priming"
        );
    }
}

#[test]
fn stored_blocks() {
    let data = corpus(3 << 20, 3);
    let gz = gz_flate2(&data, 0);
    check_all(&gz, &data, 64 << 10, 30);
}

#[test]
fn gzip_binary_stream() {
    let data = corpus(10 << 20, 4);
    let Some(gz) = gz_binary(&data) else {
        eprintln!("gzip binary not found: skipped");
        return;
    };
    check_all(&gz, &data, meta::DEFAULT_SPAN, 40);
    check_all(&gz, &data, 64 << 10, 41);
}

#[test]
fn uncompressed_windows() {
    let data = corpus(2 << 20, 5);
    let gz = gz_flate2(&data, 6);
    let opts = GzIndexOptions {
        span: 64 << 10,
        dict: DictCompression::None,
    };
    let mut r = GzIndexReader::with_options(gz.as_slice(), opts).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    let b = r.finish().unwrap();
    assert!(b
        .index
        .entries
        .iter()
        .all(|e| e.win_len as usize == WINDOW_SIZE));
    let f = GzIndexedFile::open(Arc::new(gz), Arc::new(b.meta)).unwrap();
    check_random_reads(&f, &data, 50, 50);
}

#[test]
fn finish_drains_unread_stream() {
    let data = corpus(3 << 20, 6);
    let gz = gz_flate2(&data, 6);
    let mut r = GzIndexReader::new(gz.as_slice()).unwrap();
    let mut head = vec![0u8; 1000];
    r.read_exact(&mut head).unwrap();
    let b = r.finish().unwrap();
    assert_eq!(b.index.header.uncompress_file_size, data.len() as u64);
    assert_eq!(b.index.header.gzip_file_size, gz.len() as u64);
}

#[test]
fn multi_member_indexes_first_member_only() {
    let a = corpus(3 << 20, 7);
    let c = corpus(1 << 20, 8);
    let mut gz = gz_flate2(&a, 6);
    gz.extend(gz_flate2(&c, 6));
    let (out, b) = build(&gz, 64 << 10);
    let mut all = a.clone();
    all.extend_from_slice(&c);
    assert!(out == all, "every member is decompressed");
    assert_eq!(b.members, 2);
    assert!(!b.covers_all());
    assert_eq!(b.total_uncompressed, all.len() as u64);
    assert_eq!(b.index.header.uncompress_file_size, a.len() as u64);
    assert_eq!(b.index.header.gzip_file_size, gz.len() as u64);
    assert!(b.index.entries.iter().all(|e| e.de_pos < a.len() as u64));
    let f = GzIndexedFile::open(Arc::new(gz), Arc::new(b.meta)).unwrap();
    check_random_reads(&f, &a, 70, 50);
}

#[test]
fn empty_streams() {
    // gzip of nothing.
    let gz = gz_flate2(b"", 6);
    let (out, b) = build(&gz, meta::DEFAULT_SPAN);
    assert!(out.is_empty());
    assert_eq!(b.index.header.uncompress_file_size, 0);
    assert_eq!(b.index.entries.len(), 1);
    let f = GzIndexedFile::open(Arc::new(gz), Arc::new(b.meta)).unwrap();
    assert_eq!(f.size(), 0);
    assert_eq!(f.read_at(&mut [0u8; 10], 0).unwrap(), 0);

    // An empty tar (just the two zero blocks).
    let tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
    let gz = gz_flate2(&tar, 6);
    check_all(&gz, &tar, meta::DEFAULT_SPAN, 80);

    // No bytes at all, or not gzip.
    let r = GzIndexReader::new(&b""[..]).unwrap();
    assert!(r.finish().is_err());
    let mut r = GzIndexReader::new(&b"this is not gzip at all"[..]).unwrap();
    assert!(r.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn truncated_gzip_stream_is_an_error() {
    let data = corpus(1 << 20, 9);
    let gz = gz_flate2(&data, 6);
    for cut in [10, gz.len() / 2, gz.len() - 4] {
        let mut r = GzIndexReader::new(&gz[..cut]).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "cut at {cut}");
    }
    // Trailing garbage after the member is refused, as MultiGzDecoder does.
    let mut g = gz.clone();
    g.extend_from_slice(b"garbage!");
    let mut r = GzIndexReader::new(g.as_slice()).unwrap();
    assert!(r.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn bad_options_are_refused() {
    for span in [0, 1000, 65535] {
        let o = GzIndexOptions {
            span,
            ..Default::default()
        };
        assert!(matches!(
            GzIndexReader::with_options(&b""[..], o),
            Err(FormatError::Invalid(_))
        ));
    }
}

/// A valid index with many entries, for the hostile-input tests.
fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let data = corpus(1 << 20, 10);
    let gz = gz_flate2(&data, 6);
    let (_, b) = build(&gz, 64 << 10);
    assert!(b.index.entries.len() > 4);
    (data, gz, b.meta)
}

fn open(gz: &[u8], meta: Vec<u8>) -> crate::Result<GzIndexedFile> {
    GzIndexedFile::open(Arc::new(gz.to_vec()), Arc::new(meta))
}

/// Re-encodes a header after changing it, with a valid CRC.
fn patch(meta: &[u8], f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut m = meta.to_vec();
    f(&mut m[..HEADER_SIZE as usize]);
    let crc = crate::crc::crc32c_raw(0, &m[..329]);
    m[329..333].copy_from_slice(&crc.to_le_bytes());
    m
}

#[test]
fn hostile_truncations_are_typed_errors() {
    let (_, gz, meta) = sample();
    for cut in 0..meta.len() {
        match open(&gz, meta[..cut].to_vec()) {
            Err(FormatError::BadMagic { .. }) | Err(FormatError::Corrupt { .. }) => {}
            Err(e) => panic!("cut {cut}: unexpected error {e}"),
            Ok(_) => panic!("cut {cut}: accepted"),
        }
    }
    // The gzip blob must be the one indexed.
    assert!(open(&gz[..gz.len() - 1], meta.clone()).is_err());
}

#[test]
fn hostile_bit_flips_never_panic_or_misread() {
    let (data, gz, meta) = sample();
    let mut rejected = 0;
    // Every bit of the header, then a sample of the windows and the entry area.
    let bits =
        (0..HEADER_SIZE as usize * 8).chain((HEADER_SIZE as usize * 8..meta.len() * 8).step_by(61));
    for bit in bits {
        let mut m = meta.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let Ok(f) = open(&gz, m) else {
            rejected += 1;
            continue;
        };
        assert!(
            bit / 8 >= HEADER_SIZE as usize,
            "header flip {bit} accepted"
        );
        // Whatever was accepted must read correctly or fail with an error.
        for e in f.index().entries.clone() {
            let mut b = vec![0u8; 100];
            let off = e.de_pos.min(data.len() as u64 - 100);
            if let Ok(n) = f.read_at(&mut b, off) {
                assert!(
                    b[..n] == data[off as usize..off as usize + n],
                    "flip {bit}: wrong data accepted"
                );
            }
        }
    }
    assert!(rejected > HEADER_SIZE as usize * 8);
}

#[test]
fn hostile_headers_with_valid_crc() {
    let (_, gz, meta) = sample();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("major version", patch(&meta, |h| h[8] = 2)),
        ("algo", patch(&meta, |h| h[10] = 7)),
        (
            "window",
            patch(&meta, |h| h[17..21].copy_from_slice(&4096i32.to_le_bytes())),
        ),
        (
            "entry size",
            patch(&meta, |h| h[21..25].copy_from_slice(&28i32.to_le_bytes())),
        ),
        (
            "span",
            patch(&meta, |h| h[13..17].copy_from_slice(&(-1i32).to_le_bytes())),
        ),
        (
            "absurd index_num",
            patch(&meta, |h| {
                h[25..33].copy_from_slice(&(1i64 << 60).to_le_bytes())
            }),
        ),
        (
            "negative index_num",
            patch(&meta, |h| h[25..33].copy_from_slice(&(-5i64).to_le_bytes())),
        ),
        ("zero index_num", patch(&meta, |h| h[25..33].fill(0))),
        (
            "index_num off by one",
            patch(&meta, |h| {
                let n = i64::from_le_bytes(h[25..33].try_into().unwrap());
                h[25..33].copy_from_slice(&(n + 1).to_le_bytes())
            }),
        ),
        (
            "gzip size",
            patch(&meta, |h| {
                let n = i64::from_le_bytes(h[33..41].try_into().unwrap());
                h[33..41].copy_from_slice(&(n + 1).to_le_bytes())
            }),
        ),
        (
            "uncompressed size too small",
            patch(&meta, |h| h[49..57].copy_from_slice(&100i64.to_le_bytes())),
        ),
        (
            "index_start",
            patch(&meta, |h| {
                let n = i64::from_le_bytes(h[313..321].try_into().unwrap());
                h[313..321].copy_from_slice(&(n - 1).to_le_bytes())
            }),
        ),
        (
            "index_area_len",
            patch(&meta, |h| {
                h[321..329].copy_from_slice(&i64::MAX.to_le_bytes())
            }),
        ),
        ("magic", patch(&meta, |h| h[0] = b'x')),
    ];
    for (what, m) in cases {
        match open(&gz, m) {
            Err(FormatError::BadMagic { .. }) | Err(FormatError::Corrupt { .. }) => {}
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    // A bad CRC is a checksum error.
    let mut m = meta.clone();
    m[20] ^= 1;
    assert!(matches!(open(&gz, m), Err(FormatError::Checksum { .. })));
}

/// `gzip.meta` files made by upstream's tools, if the shared test vectors hold any.
#[test]
fn upstream_gzip_meta_vectors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors");
    let mut found = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "gzip.meta") {
                let m = std::fs::read(&p).unwrap();
                GzIndex::parse_bytes(&m).unwrap();
                found += 1;
            }
        }
    }
    if found == 0 {
        eprintln!("no upstream gzip.meta among the shared vectors: nothing to check");
    }
}
