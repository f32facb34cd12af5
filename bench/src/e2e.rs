//! `obd-bench e2e`: the convertor end to end through a real local registry, every output
//! byte really uploaded, beside a floor computed from the same primitives on the same bytes
//! in the same run.
//!
//! The source image (an OCI layout's tag) is pushed once into `bench/src` of a fresh
//! `docker-registry`; each run converts it into a repository of its own (`bench/runN`),
//! which holds none of the outputs, so every layer is sent (checked: the report's
//! `bytes_uploaded` must equal the outputs' size and no upload may be skipped). Several
//! convertors (`--convertor LABEL=PATH`, "before" and "after" builds, say) run interleaved,
//! one after another in each round, so that the machine's drift hits them alike.
//!
//! Per run: wall seconds and their ratio to the floor, the convertor's CPU seconds (and per
//! GB of layer tar), per-stage CPU seconds from its `--report` (`cpu_seconds`, see
//! `obd-meter`; builds without it show `-`), the registry's CPU seconds, peak RSS, peak
//! work-directory disk, bytes uploaded and the manifest digest (same input, same bytes).
//!
//! The floor: one inflate pass over the layers, one SHA-256 pass over every byte that
//! must be hashed (compressed layers, layer tars, outputs), one LZ4 pass (4 KiB blocks) over
//! the layer tars, each timed single-threaded here, summed and divided by the cores.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use sha2::Digest;

use crate::pipeline::{layer_paths, manifest, measured, proc_cpu_secs, seed, E2e};

/// Primitives timed over the image's bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Floor {
    compressed: u64,
    tar: u64,
    inflate: f64,
    /// SHA-256 seconds per byte, measured over compressed and tar bytes.
    sha_per_byte: f64,
    sha_compressed: f64,
    sha_tar: f64,
    lz4: f64,
    cores: usize,
}

impl Floor {
    /// Seconds of the floor for an image whose outputs are `out` bytes.
    fn secs(&self, out: u64) -> f64 {
        (self.inflate
            + self.sha_compressed
            + self.sha_tar
            + self.sha_per_byte * out as f64
            + self.lz4)
            / self.cores as f64
    }
}

fn measure_floor(layers: &[PathBuf]) -> Floor {
    let mut f = Floor {
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        ..Default::default()
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut lz = vec![0u8; lz4_flex::block::get_maximum_output_size(4096)];
    for p in layers {
        // SHA-256 of the compressed blob (the registry client checks it while downloading).
        let bytes = std::fs::read(p).unwrap();
        let t = Instant::now();
        std::hint::black_box(sha2::Sha256::digest(&bytes));
        f.sha_compressed += t.elapsed().as_secs_f64();
        f.compressed += bytes.len() as u64;
        // One pass: inflate, with the SHA-256 and LZ4 of each chunk timed apart.
        let t_all = Instant::now();
        let (mut sha, mut lz4) = (0.0, 0.0);
        let (_, mut r) = obd_tar::decompress::decompress(&bytes[..]).unwrap();
        let mut h = sha2::Sha256::new();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            f.tar += n as u64;
            let t = Instant::now();
            h.update(&buf[..n]);
            sha += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for c in buf[..n].chunks(4096) {
                std::hint::black_box(lz4_flex::block::compress_into(c, &mut lz).unwrap());
            }
            lz4 += t.elapsed().as_secs_f64();
        }
        std::hint::black_box(h.finalize());
        f.inflate += t_all.elapsed().as_secs_f64() - sha - lz4;
        f.sha_tar += sha;
        f.lz4 += lz4;
    }
    f.sha_per_byte = (f.sha_compressed + f.sha_tar) / (f.compressed + f.tar) as f64;
    f
}

/// One convertor run.
struct Run {
    label: String,
    round: usize,
    e2e: E2e,
    report: Value,
}

fn stage(r: &Value, s: &str) -> Option<f64> {
    r["cpu_seconds"][s].as_f64()
}

const STAGES: [&str; 6] = ["download", "inflate", "hash", "apply", "compress", "upload"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// `e2e LAYOUT TAG [--runs N] [--convertor LABEL=PATH]... [--upstream SECS]`.
pub fn main(args: &[String]) {
    let layout = PathBuf::from(args.first().expect("LAYOUT"));
    let tag = args.get(1).expect("TAG").clone();
    let mut runs = 3usize;
    let mut convertors: Vec<(String, PathBuf)> = Vec::new();
    let mut upstream: Option<f64> = None;
    let mut i = 2;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--runs" => runs = v.parse().expect("--runs N"),
            "--convertor" => {
                let (l, p) = v.split_once('=').expect("--convertor LABEL=PATH");
                convertors.push((l.to_string(), PathBuf::from(p)));
            }
            "--upstream" => upstream = Some(v.parse().expect("--upstream SECS")),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    if convertors.is_empty() {
        let exe = std::env::current_exe().unwrap();
        convertors.push(("this".into(), exe.parent().unwrap().join("convertor")));
    }
    for (l, p) in &convertors {
        assert!(p.exists(), "convertor {l}: {} does not exist", p.display());
    }

    let (_, mt, m) = manifest(&layout, &tag);
    let layers = layer_paths(&layout, &m);
    let reg =
        obd_registry::testutil::TestRegistry::start(obd_registry::testutil::RegistryKind::Plain)
            .expect("a local docker-registry (apt-get install docker-registry)");
    seed(&reg.client(), &layout, "bench/src", &tag, &mt, &m);

    let floor = measure_floor(&layers);
    println!(
        "image {tag}: {} layers, {:.1} MB compressed, {:.1} MB of tar; {} cores",
        layers.len(),
        floor.compressed as f64 / 1e6,
        floor.tar as f64 / 1e6,
        floor.cores
    );
    println!(
        "primitives, 1 thread, this run: inflate {:.2} s ({:.0} MB/s of tar), sha256 {:.0} MB/s, lz4 4K {:.2} s ({:.0} MB/s)",
        floor.inflate,
        floor.tar as f64 / floor.inflate / 1e6,
        1.0 / floor.sha_per_byte / 1e6,
        floor.lz4,
        floor.tar as f64 / floor.lz4 / 1e6
    );

    let work = std::env::temp_dir().join(format!("obd-bench-e2e-{}", std::process::id()));
    let mut done: Vec<Run> = Vec::new();
    let mut n = 0;
    for round in 1..=runs {
        for (label, conv) in &convertors {
            n += 1;
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).unwrap();
            let report = work.join("report.json");
            let mut c = Command::new(conv);
            c.args(["-r", &reg.reference("bench/src"), "-i", &tag])
                .args([
                    "-o",
                    &format!("{tag}_obd"),
                    "--plain",
                    "--target-repository",
                ])
                .arg(reg.reference(&format!("bench/run{n}")))
                .arg("-d")
                .arg(work.join("tmp"))
                .arg("--report")
                .arg(&report)
                .env("RUST_LOG", "warn")
                .env("OBDCONV_DB_TYPE", "none")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(work.join("convertor.log")).unwrap());
            let reg0 = proc_cpu_secs(reg.pid());
            let mut e2e = measured(c, &work.join("tmp"));
            e2e.registry_cpu = reg0.zip(proc_cpu_secs(reg.pid())).map(|(a, b)| b - a);
            let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            let t = &report["totals"];
            assert_eq!(
                t["bytes_uploaded"], t["output_bytes"],
                "{label} run {round}: not every output byte was uploaded"
            );
            assert_eq!(
                t["uploads_skipped"], 0,
                "{label} run {round}: uploads skipped"
            );
            eprintln!(
                "{label} round {round}: {:.2} s, {:.2} CPU s",
                e2e.secs, e2e.cpu
            );
            done.push(Run {
                label: label.clone(),
                round,
                e2e,
                report,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    print_runs(&floor, &done, upstream);
}

fn print_runs(floor: &Floor, runs: &[Run], upstream: Option<f64>) {
    let gb = floor.tar as f64 / 1e9;
    let out = runs
        .first()
        .and_then(|r| r.report["totals"]["output_bytes"].as_u64())
        .unwrap_or(0);
    let fl = floor.secs(out);
    println!(
        "floor: ({:.2} inflate + {:.2} sha256 of {:.0} MB compressed + {:.2} of {:.0} MB tar + {:.2} of {:.0} MB output + {:.2} lz4) / {} cores = {fl:.2} s",
        floor.inflate,
        floor.sha_compressed,
        floor.compressed as f64 / 1e6,
        floor.sha_tar,
        floor.tar as f64 / 1e6,
        floor.sha_per_byte * out as f64,
        out as f64 / 1e6,
        floor.lz4,
        floor.cores
    );
    println!();
    let up_col = if upstream.is_some() {
        " vs upstream |"
    } else {
        ""
    };
    println!(
        "| convertor | run | wall s | x floor |{up_col} CPU s | CPU s/GB tar | download | inflate | hash | apply | compress | upload | other | registry CPU s | RSS MiB | work MB | uploaded MB | manifest |"
    );
    println!(
        "|---|---:|---:|---:|{}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        if upstream.is_some() { "---:|" } else { "" }
    );
    let cell = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    let row = |label: &str, run: &str, e: &E2e, stages: Vec<Option<f64>>, up: u64, digest: &str| {
        let known: Option<f64> = stages.iter().copied().sum();
        let other = known.map(|k| e.cpu - k);
        let up_cell = upstream.map_or(String::new(), |u| format!(" {:.2}x |", e.secs / u));
        println!(
            "| {label} | {run} | {:.2} | {:.2}x |{up_cell} {:.2} | {:.2} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {} |",
            e.secs,
            e.secs / fl,
            e.cpu,
            e.cpu / gb,
            stages.iter().map(|s| cell(*s)).collect::<Vec<_>>().join(" | "),
            cell(other),
            e.registry_cpu.unwrap_or(f64::NAN),
            e.rss_kib / 1024,
            e.disk as f64 / 1e6,
            up as f64 / 1e6,
            digest.get(7..19).unwrap_or(digest)
        );
    };
    let mut labels: Vec<&str> = Vec::new();
    for r in runs {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
        row(
            &r.label,
            &r.round.to_string(),
            &r.e2e,
            STAGES.iter().map(|s| stage(&r.report, s)).collect(),
            r.report["totals"]["bytes_uploaded"].as_u64().unwrap_or(0),
            r.report["output_digest"].as_str().unwrap_or(""),
        );
    }
    for l in labels {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.label == l).collect();
        let med = |f: &dyn Fn(&Run) -> f64| median(mine.iter().map(|r| f(r)).collect());
        let e = E2e {
            secs: med(&|r| r.e2e.secs),
            cpu: med(&|r| r.e2e.cpu),
            rss_kib: med(&|r| r.e2e.rss_kib as f64) as u64,
            disk: med(&|r| r.e2e.disk as f64) as u64,
            registry_cpu: Some(med(&|r| r.e2e.registry_cpu.unwrap_or(f64::NAN))),
        };
        let stages = STAGES
            .iter()
            .map(|s| {
                let v: Option<Vec<f64>> = mine.iter().map(|r| stage(&r.report, s)).collect();
                v.map(median)
            })
            .collect();
        let digests: std::collections::BTreeSet<&str> = mine
            .iter()
            .map(|r| r.report["output_digest"].as_str().unwrap_or(""))
            .collect();
        let d = if digests.len() == 1 {
            digests.into_iter().next().unwrap().to_string()
        } else {
            "differ!".to_string()
        };
        let up = mine[0].report["totals"]["bytes_uploaded"]
            .as_u64()
            .unwrap_or(0);
        row(l, "median", &e, stages, up, &d);
    }
}
