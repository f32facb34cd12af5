//! `obd-bench service-load OBDCONV [N] [PROCESSES]`: N small images (default 1,000), each
//! its own tiny layer over a shared base, converted by PROCESSES `obdconv worker`
//! processes (default 3, two workers each) sharing one real MariaDB and one real
//! registry, all on this machine. Reports throughput (images per minute), claim latency
//! (p50, p99, max, from the workers' `claim took` log events) and each process's peak RSS
//! (`VmHWM`), all measured in this run. Every upload is real: each image's own layer and
//! its converted layer are new to the registry.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::{json, Value};
use sha2::Digest;

/// A gzip tar of one file `id.txt` holding `text`: (blob, diff_id).
fn tiny_layer(text: &str) -> (Vec<u8>, String) {
    let mut tar = Vec::new();
    let mut h = [0u8; 512];
    let name = b"id.txt";
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", text.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar.extend_from_slice(&h);
    tar.extend_from_slice(text.as_bytes());
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let diff_id = format!("sha256:{}", hex(&sha2::Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Peak resident set of a running process, in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn run(obdconv: &Path, n: usize, processes: usize) {
    let reg = TestRegistry::start(RegistryKind::Plain).expect("docker-registry");
    let db = obd_dedup::testutil::TestMariaDb::start_or_skip().expect("mariadbd");
    let dsn = db.dsn_for(&db.create_database("load"));
    let c = reg.client();
    // The shared base: one small layer.
    let (base_blob, base_diff) = tiny_layer("base");
    let base_size = base_blob.len();
    let dir = tempfile::tempdir().unwrap();
    let t_seed = Instant::now();
    let repos = 50usize;
    let mut refs = String::new();
    for i in 0..n {
        let repo = format!("load/app{:02}", i % repos);
        let tag = format!("v{}", i / repos);
        let (bd, _) = c.push_blob_bytes(&repo, base_blob.clone()).unwrap();
        let (own, diff) = tiny_layer(&format!("image {i}"));
        let own_size = own.len();
        let (od, _) = c.push_blob_bytes(&repo, own).unwrap();
        let cfg = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [base_diff, diff]},
        }))
        .unwrap();
        let cfg_size = cfg.len();
        let (cd, _) = c.push_blob_bytes(&repo, cfg).unwrap();
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg_size},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": bd, "size": base_size},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": od, "size": own_size},
            ],
        });
        c.put_manifest(
            &repo,
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        refs.push_str(&format!("{}/{repo}:{tag}\n", reg.host));
    }
    let seed_secs = t_seed.elapsed().as_secs_f64();
    let refs_file = dir.path().join("refs.txt");
    std::fs::write(&refs_file, refs).unwrap();
    let db_args = ["--db-type", "mysql", "--db-str", &dsn];
    let o = Command::new(obdconv)
        .arg("backfill")
        .args(db_args)
        .args(["--plain-registry", &reg.host, "--file"])
        .arg(&refs_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Instant::now();
    let mut children: Vec<(std::process::Child, std::path::PathBuf, u64)> = (0..processes)
        .map(|i| {
            let log = dir.path().join(format!("w{i}.log"));
            let child = Command::new(obdconv)
                .args(["--verbose", "--log-format", "json", "worker"])
                .args(db_args)
                .args([
                    "--plain-registry",
                    &reg.host,
                    "--workers",
                    "2",
                    "--exit-when-empty",
                ])
                .arg("--work-dir")
                .arg(dir.path().join("work"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            (child, log, 0)
        })
        .collect();
    loop {
        let mut running = 0;
        for (child, _, peak) in children.iter_mut() {
            if child.try_wait().unwrap().is_none() {
                running += 1;
                if let Some(k) = vm_hwm(child.id()) {
                    *peak = (*peak).max(k);
                }
            }
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t.elapsed().as_secs_f64();
    let mut claims = Vec::new();
    let mut succeeded = 0usize;
    for (_, log, _) in &children {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let msg = v["message"].as_str().unwrap_or_default();
            if msg == "claim took" {
                claims.push(v["claim_ms"].as_f64().unwrap_or(f64::NAN));
            }
            if msg.contains("succeeded in") {
                succeeded += 1;
            }
        }
    }
    claims.sort_by(|a, b| a.total_cmp(b));
    println!(
        "service-load: {n} images ({repos} repositories, seeded in {seed_secs:.1} s), {processes} worker processes x 2 workers, one MariaDB, one registry"
    );
    println!(
        "  converted {succeeded}/{n} in {secs:.1} s: {:.0} images/minute",
        succeeded as f64 / secs * 60.0
    );
    println!(
        "  claim latency over {} claims: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        claims.len(),
        percentile(&claims, 0.5),
        percentile(&claims, 0.99),
        claims.last().copied().unwrap_or(f64::NAN)
    );
    for (i, (_, _, peak)) in children.iter().enumerate() {
        println!(
            "  worker process {i}: peak RSS {:.1} MiB",
            *peak as f64 / 1024.0
        );
    }
}
