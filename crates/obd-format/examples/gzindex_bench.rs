//! Throughput of the gzip index builder against plain flate2 decompression, and of
//! sequential reads through the index.
//!
//! `cargo run --release -p obd-format --example gzindex_bench -- FILE.gz`

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use obd_format::gzindex::{GzIndexReader, GzIndexedFile};
use obd_format::io::{FileSource, ReadAt};

fn drain(mut r: impl Read) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).expect("read");
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

/// CPU seconds used by this process so far (all threads), from /proc/self/stat.
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: gzindex_bench FILE.gz");
    let gz = std::fs::read(&path).expect("reading the input");
    println!("input: {path}, {} compressed bytes", gz.len());
    for round in 0..2 {
        let (t, c) = (Instant::now(), cpu());
        let n = drain(flate2::read::MultiGzDecoder::new(gz.as_slice()));
        let (plain, plain_cpu) = (t.elapsed().as_secs_f64(), cpu() - c);

        let (t, c) = (Instant::now(), cpu());
        let mut r = GzIndexReader::new(gz.as_slice()).expect("builder");
        let m = drain(&mut r);
        let b = r.finish().expect("finish");
        let (indexed, indexed_cpu) = (t.elapsed().as_secs_f64(), cpu() - c);
        assert_eq!(n, m);
        println!(
            "round {round}: {n} bytes out; flate2 MultiGzDecoder {:.0} MB/s ({:.0} MB per CPU-s); \
             GzIndexReader {:.0} MB/s ({:.0} MB per CPU-s, all threads) ({} entries, gzip.meta {} bytes)",
            mbs(n, plain),
            mbs(n, plain_cpu),
            mbs(m, indexed),
            mbs(m, indexed_cpu),
            b.index.entries.len(),
            b.meta.len()
        );
        if round == 1 {
            let f = GzIndexedFile::open(
                Arc::new(FileSource::open(&path).expect("open")),
                Arc::new(b.meta),
            )
            .expect("index");
            let mut buf = vec![0u8; 1 << 20];
            let t = Instant::now();
            let mut off = 0;
            while off < f.size() {
                off += f.read_at(&mut buf, off).expect("read") as u64;
            }
            println!(
                "GzIndexedFile sequential 1 MiB reads: {:.0} MB/s",
                mbs(off, t.elapsed().as_secs_f64())
            );
            let t = Instant::now();
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let reads = 200;
            for _ in 0..reads {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let o = x % f.size().max(1);
                f.read_at(&mut buf[..4096], o).expect("read");
            }
            println!(
                "GzIndexedFile random 4 KiB reads: {:.2} ms each",
                t.elapsed().as_secs_f64() * 1000.0 / reads as f64
            );
        }
    }
}
