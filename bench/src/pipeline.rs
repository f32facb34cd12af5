//! Conversion benchmarks over an image in an OCI layout: per-layer apply+commit in process,
//! and the `convertor` binary end to end (registry → registry, and layout → layout), each
//! beside one single-threaded decompress+sha256 pass over the same compressed layers.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use obd_ext4::{Ext4, MkfsOptions};
use obd_format::lsmt::{CommitOptions, RwKind, Stack, StreamLayer, StreamStack};
use obd_format::output::Wrapping;
use obd_format::zfile::ZFileOptions;
use serde_json::Value;
use sha2::Digest;

pub(crate) fn blob(layout: &Path, d: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"))
}

pub(crate) fn manifest(layout: &Path, tag: &str) -> (String, String, Value) {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let e = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout")
        .clone();
    let d = e["digest"].as_str().unwrap().to_string();
    let m = serde_json::from_slice(&std::fs::read(blob(layout, &d)).unwrap()).unwrap();
    (
        d,
        e["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string(),
        m,
    )
}

/// The layer blobs of manifest `m` in `layout`.
pub(crate) fn layer_paths(layout: &Path, m: &Value) -> Vec<PathBuf> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(layout, l["digest"].as_str().unwrap()))
        .collect()
}

/// Pushes the image (`m` of media type `mt`, its layers and config from `layout`) into
/// `repo:tag` of a registry.
pub(crate) fn seed(
    client: &obd_registry::Client,
    layout: &Path,
    repo: &str,
    tag: &str,
    mt: &str,
    m: &Value,
) {
    let config = blob(layout, m["config"]["digest"].as_str().unwrap());
    for p in layer_paths(layout, m)
        .iter()
        .chain(std::iter::once(&config))
    {
        client.push_blob_file(repo, p).unwrap();
    }
    client
        .put_manifest(repo, tag, mt, &serde_json::to_vec(m).unwrap())
        .unwrap();
}

/// One pass: decompress + sha256, single thread.
fn lower_bound(paths: &[PathBuf]) -> (f64, u64) {
    let t = Instant::now();
    let mut total = 0u64;
    for p in paths {
        let (_, mut r) = obd_tar::decompress::decompress(File::open(p).unwrap()).unwrap();
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        std::hint::black_box(h.finalize());
    }
    (t.elapsed().as_secs_f64(), total)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                _ => {}
            }
        }
    }
    total
}

/// CPU seconds (user + system) a live process has used, from `/proc/PID/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: utime and
    // stime are the 12th and 13th, in USER_HZ ticks (100 per second on Linux).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            tv(u.user_time()) + tv(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Figures of one end-to-end run.
#[derive(Clone, Copy, Debug, Default)]
pub struct E2e {
    pub secs: f64,
    pub rss_kib: u64,
    pub disk: u64,
    /// CPU seconds of the convertor.
    pub cpu: f64,
    /// CPU seconds of the registry during the run (registry runs only).
    pub registry_cpu: Option<f64>,
}

/// Runs a command, sampling its peak RSS and the peak disk use of `work`; also its CPU time.
pub(crate) fn measured(mut cmd: Command, work: &Path) -> E2e {
    let cpu0 = children_cpu_secs();
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let (rss, disk) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rss, disk, done, work) = (rss.clone(), disk.clone(), done.clone(), work.to_path_buf());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = peak_rss_kib(pid) {
                    rss.fetch_max(r, Ordering::Relaxed);
                }
                disk.fetch_max(dir_size(&work), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let st = child.wait().unwrap();
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(st.success(), "{cmd:?} failed");
    E2e {
        secs,
        rss_kib: rss.load(Ordering::Relaxed),
        disk: disk.load(Ordering::Relaxed),
        cpu: children_cpu_secs() - cpu0,
        registry_cpu: None,
    }
}

/// Figures of one image, measured in one run.
#[derive(Default, Clone)]
pub struct Row {
    pub tag: String,
    pub layers: usize,
    pub compressed: u64,
    pub uncompressed: u64,
    pub lower_bound: f64,
    pub apply_commit: f64,
    pub apply_commit_rss_kib: u64,
    pub output: u64,
    /// The convertor end to end, layout→layout and registry→registry.
    pub layout: Option<E2e>,
    pub registry: Option<E2e>,
}

pub fn run(layout: &Path, tag: &str) {
    let r = measure(layout, tag, true);
    print_table(&[r]);
}

/// Prints the table of the suite.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| image | layers | in MB (gz) | tar MB | out MB | out/in | lower bound s | apply+commit s | ratio | layout→layout s | ratio | RSS MiB | work MB | CPU s | registry→registry s | ratio | RSS MiB | work MB | CPU s | registry CPU s |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let e = |x: &Option<E2e>| match x {
            Some(m) => format!(
                "{:.2} | {:.2}x | {} | {:.1} | {:.2}",
                m.secs,
                m.secs / r.lower_bound,
                m.rss_kib / 1024,
                m.disk as f64 / 1e6,
                m.cpu
            ),
            None => "- | - | - | - | -".into(),
        };
        let reg_cpu = match r.registry.and_then(|m| m.registry_cpu) {
            Some(c) => format!("{c:.2}"),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2}x | {} | {} | {} |",
            r.tag,
            r.layers,
            r.compressed as f64 / 1e6,
            r.uncompressed as f64 / 1e6,
            r.output as f64 / 1e6,
            r.output as f64 / r.compressed.max(1) as f64,
            r.lower_bound,
            r.apply_commit,
            r.apply_commit / r.lower_bound,
            e(&r.layout),
            e(&r.registry),
            reg_cpu
        );
    }
}

/// Measures one image: the lower-bound pass, apply+commit in process, and the convertor end
/// to end (layout → layout; local registry → registry).
pub fn measure(layout: &Path, tag: &str, verbose: bool) -> Row {
    let (_, mt, m) = manifest(layout, tag);
    let layers = layer_paths(layout, &m);
    let compressed: u64 = layers
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let (t_lb, uncompressed) = lower_bound(&layers);
    let mut row = Row {
        tag: tag.to_string(),
        layers: layers.len(),
        compressed,
        uncompressed,
        lower_bound: t_lb,
        ..Default::default()
    };
    println!(
        "image {tag}: {} layers, {:.1} MB compressed, {:.1} MB uncompressed",
        layers.len(),
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
    );
    println!("lower bound (decompress + sha256, 1 thread): {t_lb:.2} s");

    // apply + commit, in process.
    let tmp = std::env::temp_dir().join(format!("obd-bench-conv-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut lowers = Vec::new();
    let mut t_apply = 0.0;
    let mut out_total = 0;
    if verbose {
        println!(
            "{:<6} {:>10} {:>10} {:>9} {:>12}",
            "layer", "tar MB", "out MB", "secs", "MB/s (tar)"
        );
    }
    for (i, l) in layers.iter().enumerate() {
        let t = Instant::now();
        // The convertor's path: the layer commits while it is written (file data streams
        // through the ZFile compressor on its own thread), metadata is kept for the next.
        let c = tmp.join(format!("c{i}"));
        let meta = tmp.join(format!("m{i}"));
        let wrap = Wrapping {
            zfile: Some(ZFileOptions::default()),
            tar: true,
            overwrite_header: true,
        };
        let opts = CommitOptions {
            virtual_size: 64 << 30,
            ..Default::default()
        };
        let up = StreamLayer::create(
            File::create(&c).unwrap(),
            wrap,
            false,
            &meta,
            RwKind::Sparse,
            opts,
        )
        .unwrap();
        let stack = StreamStack::new(Stack::new(lowers.clone(), None).unwrap(), up);
        let mut fs = if i == 0 {
            Ext4::mkfs(stack, &MkfsOptions::default()).unwrap()
        } else {
            Ext4::open(stack).unwrap()
        };
        let st = obd_tar::apply_layer(&mut fs, File::open(l).unwrap()).unwrap();
        fs.flush().unwrap();
        let finished = fs
            .into_device()
            .into_upper()
            .finish(&meta.with_extension("view"))
            .unwrap();
        lowers.push(Arc::new(finished.meta_view().unwrap()));
        let secs = t.elapsed().as_secs_f64();
        t_apply += secs;
        let out = std::fs::metadata(&c).unwrap().len();
        out_total += out;
        if verbose {
            println!(
                "{i:<6} {:>10.1} {:>10.1} {secs:>9.2} {:>12.0}",
                st.tar_bytes as f64 / 1e6,
                out as f64 / 1e6,
                st.tar_bytes as f64 / 1e6 / secs
            );
        }
    }
    row.apply_commit = t_apply;
    row.output = out_total;
    row.apply_commit_rss_kib = peak_rss_kib(std::process::id()).unwrap_or(0);
    println!(
        "apply+commit total: {t_apply:.2} s = {:.2}x the lower bound; output {:.1} MB ({:.2}x compressed input); bench peak RSS {} MiB",
        t_apply / t_lb,
        out_total as f64 / 1e6,
        out_total as f64 / compressed as f64,
        peak_rss_kib(std::process::id()).unwrap_or(0) / 1024
    );
    let _ = std::fs::remove_dir_all(&tmp);

    // End to end with the convertor binary.
    let exe = std::env::current_exe().unwrap();
    let conv = exe.parent().unwrap().join("convertor");
    if !conv.exists() {
        println!("(build the convertor binary with `cargo build --release --bins` for the end-to-end rows)");
        return row;
    }
    let work = std::env::temp_dir().join(format!("obd-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out_layout = work.join("out");
    let mut c = Command::new(&conv);
    c.arg("-r")
        .arg(format!("oci:{}", layout.display()))
        .arg("--target-repository")
        .arg(format!("oci:{}", out_layout.display()));
    c.args(["-i", tag, "-o", "bench-obd", "-d"])
        .arg(work.join("tmp"))
        .env("RUST_LOG", "warn")
        .env("OBDCONV_DB_TYPE", "none")
        .stdout(std::process::Stdio::null());
    let lay = measured(c, &work.join("tmp"));
    row.layout = Some(lay);
    println!(
        "convertor, OCI layout -> OCI layout: {:.2} s = {:.2}x the lower bound; peak RSS {} MiB; peak work-dir disk {:.1} MB; {:.2} CPU s",
        lay.secs,
        lay.secs / t_lb,
        lay.rss_kib / 1024,
        lay.disk as f64 / 1e6,
        lay.cpu
    );
    match obd_registry::testutil::TestRegistry::start(obd_registry::testutil::RegistryKind::Plain) {
        Ok(reg) => {
            let client = reg.client();
            seed(&client, layout, "bench/src", tag, &mt, &m);
            let mut c = Command::new(&conv);
            c.args([
                "-r",
                &reg.reference("bench/src"),
                "--plain",
                "-i",
                tag,
                "-o",
                "bench-obd",
                "-d",
            ]);
            c.arg(work.join("tmp2"))
                .env("RUST_LOG", "warn")
                .env("OBDCONV_DB_TYPE", "none")
                .stdout(std::process::Stdio::null());
            let reg0 = proc_cpu_secs(reg.pid());
            let mut e2e = measured(c, &work.join("tmp2"));
            e2e.registry_cpu = reg0.zip(proc_cpu_secs(reg.pid())).map(|(a, b)| b - a);
            row.registry = Some(e2e);
            println!(
                "convertor, local registry -> registry: {:.2} s = {:.2}x the lower bound; peak RSS {} MiB; peak work-dir disk {:.1} MB; {:.2} CPU s, registry {:.2} CPU s",
                e2e.secs,
                e2e.secs / t_lb,
                e2e.rss_kib / 1024,
                e2e.disk as f64 / 1e6,
                e2e.cpu,
                e2e.registry_cpu.unwrap_or(f64::NAN)
            );
        }
        Err(e) => println!("(no local registry: {e})"),
    }
    let _ = std::fs::remove_dir_all(&work);
    row
}
