//! Throughput benchmarks of the block formats, each reported beside the machine's
//! single-thread LZ4 block speed and one gunzip+sha256 pass over the same input, all
//! measured in this run.
//!
//! Usage:
//! * `cargo run --release -p obd-bench [-- INPUT_FILE [MIB]]`: block formats. Without an
//!   input file, the first 256 MiB of the files under /usr/lib are used.
//! * `cargo run --release -p obd-bench -- convert LAYOUT TAG`: apply+commit of each layer and
//!   the whole `convertor` run (from a local registry and from the OCI layout), beside one
//!   single-threaded decompress+sha256 pass over the same layers.
//! * `cargo run --release -p obd-bench -- e2e LAYOUT TAG [--runs N] [--convertor
//!   LABEL=PATH]... [--upstream SECS]`: the convertor through a local registry, every byte
//!   uploaded, per-stage CPU seconds, beside a floor from primitives timed in the same run
//!   ([`e2e`]).
//! * `cargo run --release -p obd-bench -- service-load OBDCONV [N] [PROCESSES]`: N small
//!   images through PROCESSES `obdconv worker` processes on one MariaDB
//!   ([`service_load`]).

mod e2e;
mod pipeline;
mod service_load;

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use obd_format::io::WriteAt;
use obd_format::lsmt::{CommitOptions, RwKind, RwLayer};
use obd_format::output::Wrapping;
use obd_format::uuid::Uuid;
use obd_format::zfile::{Algorithm, ZFileOptions, ZFileReader, ZFileWriter};
use sha2::Digest;

fn collect_input(limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit);
    let mut stack = vec![PathBuf::from("/usr/lib")];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut es: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        es.sort();
        for p in es {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    for f in files {
        if out.len() >= limit {
            break;
        }
        if let Ok(mut h) = File::open(&f) {
            let _ = h.read_to_end(&mut out);
        }
    }
    out.truncate(limit);
    out
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("service-load") {
        let obdconv = std::path::Path::new(args.get(2).expect("OBDCONV binary"));
        let n = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
        let p = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3);
        service_load::run(obdconv, n, p);
        return;
    }
    if args.get(1).map(String::as_str) == Some("e2e") {
        e2e::main(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("suite") {
        // `suite LAYOUT [TAG...]`: one table row per image.
        let layout = std::path::Path::new(args.get(2).expect("LAYOUT"));
        let default = ["tiny", "edge", "debian", "debian-zstd"];
        let tags: Vec<&str> = if args.len() > 3 {
            args[3..].iter().map(String::as_str).collect()
        } else {
            default.to_vec()
        };
        let mut rows = Vec::new();
        for t in tags {
            if has_tag(layout, t) {
                rows.push(pipeline::measure(layout, t, false));
            } else {
                println!("(image {t} not in {}; skipped)", layout.display());
            }
        }
        pipeline::print_table(&rows);
        return;
    }
    if args.get(1).map(String::as_str) == Some("convert") {
        let (layout, tag) = (args.get(2).expect("LAYOUT"), args.get(3).expect("TAG"));
        pipeline::run(std::path::Path::new(layout), tag);
        return;
    }
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let data = match args.get(1) {
        Some(p) => {
            let mut v = std::fs::read(p).expect("read input");
            v.truncate(mib << 20);
            v
        }
        None => collect_input(mib << 20),
    };
    let n = data.len();
    if n < 1 << 20 {
        eprintln!("obd-bench: need at least 1 MiB of input, got {n} bytes");
        std::process::exit(2);
    }
    let threads = std::thread::available_parallelism()
        .map(|x| x.get())
        .unwrap_or(1);
    println!("input: {:.1} MiB, {threads} cores", n as f64 / 1048576.0);
    let tmp = tempdir();

    // Baselines.
    let (_, t_lz4) = time(|| {
        let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(4096)];
        let mut total = 0;
        for c in data.chunks(4096) {
            total += lz4_flex::block::compress_into(c, &mut out).unwrap();
        }
        total
    });
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let (_, t_gunzip) = time(|| {
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = d.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        h.finalize()
    });
    let lz4 = mbps(n, t_lz4);
    let pass = mbps(n, t_gunzip);
    println!(
        "{:<44} {:>10} {:>9} {:>10}",
        "operation", "MB/s", "vs LZ4", "vs gunzip+sha256"
    );
    let row = |name: &str, secs: f64| {
        let r = mbps(n, secs);
        println!("{name:<44} {r:>10.0} {:>8.2}x {:>9.2}x", r / lz4, r / pass);
    };
    row("lz4 block compress, 4 KiB, 1 thread (base)", t_lz4);
    row("gunzip + sha256, 1 thread (base)", t_gunzip);

    for (algo, bs) in [
        (Algorithm::Lz4, 4096u32),
        (Algorithm::Lz4, 65536),
        (Algorithm::Zstd, 4096),
    ] {
        for th in [1, threads] {
            let opts = ZFileOptions {
                algorithm: algo,
                block_size: bs,
                verify: true,
                threads: th,
            };
            let (z, t) = time(|| {
                let mut w = ZFileWriter::new(Vec::with_capacity(n), opts).unwrap();
                for c in data.chunks(1 << 20) {
                    w.write_all(c).unwrap();
                }
                w.finish().unwrap().0
            });
            row(
                &format!(
                    "zfile compress {} {}K, {th} thr (ratio {:.3})",
                    algo.name(),
                    bs / 1024,
                    z.len() as f64 / n as f64
                ),
                t,
            );
            if th == 1 {
                let r = ZFileReader::open(Arc::new(z)).unwrap();
                let (_, t) = time(|| {
                    let mut out = Vec::new();
                    let mut sum = 0u64;
                    r.for_each_block(
                        |_, d| {
                            sum += d.len() as u64;
                            Ok(())
                        },
                        &mut out,
                    )
                    .unwrap();
                    sum
                });
                row(
                    &format!(
                        "zfile decompress+crc {} {}K, sequential",
                        algo.name(),
                        bs / 1024
                    ),
                    t,
                );
            }
        }
    }

    // LSMT: write the input into a writable layer, then commit it plain and as -z -t.
    let (d, i) = (tmp.join("data"), tmp.join("index"));
    let vsize = ((n as u64).div_ceil(1 << 30) + 1) << 30;
    let mut l = RwLayer::create(&d, &i, vsize, RwKind::Append, Uuid::NULL, Uuid::NULL).unwrap();
    let padded_len = n / 4096 * 4096;
    let (_, t) = time(|| {
        for (k, c) in data[..padded_len].chunks(1 << 20).enumerate() {
            l.write_at(c, (k as u64) << 20).unwrap();
        }
        WriteAt::flush(&mut l).unwrap();
    });
    row("lsmt writable layer append (page cache)", t);
    for (name, wrap) in [
        ("lsmt commit, plain", Wrapping::default()),
        (
            "lsmt commit -z -t (lz4 4K, all threads)",
            Wrapping {
                zfile: Some(ZFileOptions {
                    threads,
                    ..Default::default()
                }),
                tar: true,
                overwrite_header: true,
            },
        ),
        (
            "lsmt commit -z -t (lz4 4K, 1 thread)",
            Wrapping {
                zfile: Some(ZFileOptions::default()),
                tar: true,
                overwrite_header: true,
            },
        ),
    ] {
        let out = tmp.join("commit");
        let _ = std::fs::remove_file(&out);
        let opts = CommitOptions {
            virtual_size: vsize,
            ..Default::default()
        };
        let (_, t) = time(|| {
            l.commit_to(&opts, wrap, File::create(&out).unwrap())
                .unwrap()
        });
        let sz = std::fs::metadata(&out).unwrap().len();
        row(&format!("{name} ({:.0} MB out)", sz as f64 / 1e6), t);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn has_tag(layout: &std::path::Path, tag: &str) -> bool {
    let idx: serde_json::Value = match std::fs::read(layout.join("index.json")) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => return false,
    };
    idx["manifests"].as_array().is_some_and(|a| {
        a.iter()
            .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    })
}

fn tempdir() -> PathBuf {
    let p = std::env::temp_dir().join(format!("obd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
