//! `convertor`: drop-in replacement for the overlaybd userspace image convertor.
// The flags' doc comments are their `--help` text, worded as upstream's (`user[:password]`
// is not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgAction, Parser};
use std::sync::Arc;

use obd_cli::location::Located;
use obd_cli::net::{convert_exit_code, CliCreds, NetArgs, Side};
use obd_cli::progress::{Bars, Lines};
use obd_convert::dedup::DedupHandle;
use obd_convert::dedup_db::DbDedup;
use obd_convert::image::Flavor;
use obd_convert::native::NativeOptions;
use obd_convert::progress::{Progress, ProgressSink};
use obd_convert::{ConvertError, ConvertOptions, Engine};
use obd_format::zfile::{Algorithm, ZFileOptions};

const LONG_ABOUT: &str = "
Description: overlaybd convertor is a standalone userspace image conversion tool that helps converting oci images to overlaybd images.

obdconv is a self-contained re-implementation: no overlaybd tools, baselayer file or root
privileges are needed. `-r oci:DIR` reads and writes an OCI image layout instead of a
registry. Differences from upstream: errors exit non-zero (1 other, 2 usage, 3 auth,
4 not found, 5 bad input, 6 I/O, 130 interrupted), `--mkfs false` means false, the
converted config keeps every field of the source config, nested index entries keep their
platform and annotations, and SIGINT/SIGTERM remove the work directory and leave the target
tag untouched.";

const EXAMPLES: &str = "Examples:
  convertor -r registry.example.com/ns/app -u user:pass -i v1 -o v1_obd
  convertor -r registry.example.com/ns/app -i v1 --turboOCI v1_turbo --fstype erofs
  convertor -r oci:./layout -i v1 -o v1_obd --target-repository oci:./out
  convertor -r oci:./in -i multi -o multi_obd --platform linux/amd64,linux/arm64
  convertor -r docker-archive:app.tar -o v1_obd --target-repository registry.example.com/ns/app
  convertor -r registry.example.com/ns/app@sha256:… -o v1_obd
  convertor completion bash > /etc/bash_completion.d/convertor
  convertor man > convertor.1";

#[derive(Parser, Debug)]
#[command(
    name = "convertor",
    version = obd_cli::docs::VERSION,
    about = "An image conversion tool from oci image to overlaybd image.",
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
struct Args {
    /// repository for converting image (required): HOST/REPO, or with the image HOST/REPO:TAG or HOST/REPO@DIGEST; `oci:DIR[:TAG]` for an OCI image layout; `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:NAME:TAG|@N]` to read a tar file (with --target-repository)
    #[arg(short = 'r', long)]
    repository: String,
    /// user[:password] Registry user and password (`--src-creds` as in skopeo); without it
    /// the credentials come from REGISTRY_AUTH_FILE, the containers auth.json files or the
    /// docker config (credential helpers too)
    #[arg(short = 'u', long, visible_alias = "src-creds")]
    username: Option<String>,
    #[command(flatten)]
    log: obd_cli::logging::LogArgs,
    /// tag for image converting from (required when input-digest is not set and -r names no image)
    #[arg(short = 'i', long = "input-tag")]
    input_tag: Option<String>,
    /// digest for image converting from (required when input-tag is not set)
    #[arg(short = 'g', long = "input-digest")]
    input_digest: Option<String>,
    /// tag for image converting to
    #[arg(short = 'o', long = "output-tag")]
    output_tag: Option<String>,
    /// directory used for temporary data
    #[arg(short = 'd', long, default_value = "tmp_conv")]
    dir: PathBuf,
    /// export image with oci spec (the default when the target is an `oci:` layout)
    #[arg(long, conflicts_with = "docker")]
    oci: bool,
    /// export image with Docker media types, also into an `oci:` layout (which other tools
    /// such as skopeo and umoci may then not open)
    #[arg(long, conflicts_with = "referrer")]
    docker: bool,
    /// filesystem type of converted image.
    #[arg(long, default_value = "ext4")]
    fstype: String,
    /// make ext4 fs in bottom layer (`--mkfs=false` or `--mkfs false` stacks on the upstream baselayer)
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    mkfs: bool,
    /// virtual block device size (GB)
    #[arg(long, default_value_t = 64)]
    vsize: u64,
    /// build 'Overlaybd-Turbo OCIv1' format (old name of turboOCIv1. deprecated)
    #[arg(long)]
    fastoci: Option<String>,
    /// build 'Overlaybd-Turbo OCIv1' format
    #[arg(long = "turboOCI")]
    turbo_oci: Option<String>,
    /// build overlaybd format
    #[arg(long)]
    overlaybd: Option<String>,
    /// db str for overlaybd conversion: a MySQL DSN (user:pass@tcp(host:port)/db) or an SQLite file path
    #[arg(long = "db-str")]
    db_str: Option<String>,
    /// type of db to use for conversion deduplication. Available: mysql, sqlite, none. Default: sqlite in ~/.cache/obdconv (env OBDCONV_DB_TYPE overrides)
    #[arg(long = "db-type")]
    db_type: Option<String>,
    /// the number of manifests that can be built at the same time, used for multi-arch images, 0 means no limit
    #[arg(long = "concurrency-limit", default_value_t = 4)]
    concurrency_limit: usize,
    /// disable sparse file for overlaybd
    #[arg(long = "disable-sparse")]
    disable_sparse: bool,
    /// push converted manifests with subject, note '--oci' will be enabled automatically if '--referrer' is set, cause the referrer must be in OCI format.
    #[arg(long)]
    referrer: bool,
    #[command(flatten)]
    net: NetArgs,
    /// reserve tmp data
    #[arg(long)]
    reserve: bool,
    /// don't upload layer and manifest (nothing is pushed or tagged)
    #[arg(long = "no-upload")]
    no_upload: bool,
    /// dump manifest
    #[arg(long = "dump-manifest")]
    dump_manifest: bool,
    /// only convert these platforms of an index (os/arch[/variant]; repeatable or comma-separated); `all` (the default) converts every platform
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PLATFORM",
        default_value = "all"
    )]
    platform: Vec<String>,
    /// push the result to this repository instead of the source one (`oci:DIR` too)
    #[arg(long = "target-repository")]
    target_repository: Option<String>,
    /// user[:password] for the target repository (`--dest-creds` as in skopeo; default: the
    /// source credentials, else looked up like them)
    #[arg(long = "target-username", visible_alias = "dest-creds")]
    target_username: Option<String>,
    /// ZFile compression of the layers
    #[arg(long, default_value = "lz4")]
    algorithm: Algorithm,
    /// write a JSON report of the conversion to this file (`-`: to stdout, instead of the
    /// output digest)
    #[arg(long)]
    report: Option<PathBuf>,
    /// when the source image is already overlaybd or TurboOCI, say so and exit 0 instead of
    /// refusing it (exit 2)
    #[arg(long = "skip-converted")]
    skip_converted: bool,
    /// no progress bars, even on a terminal (log lines instead)
    #[arg(long = "no-progress")]
    no_progress: bool,
    /// MiB of memory per converted manifest where downloaded-ahead layers and finished
    /// layers waiting for their upload stay instead of the work dir (0: all in the work dir)
    #[arg(long = "memory-budget", default_value_t = obd_convert::memory::MEMORY_BUDGET >> 20)]
    memory_budget: u64,
}

/// `convertor completion SHELL`: the completion script of `convertor` for SHELL.
#[derive(Parser, Debug)]
#[command(name = "convertor completion")]
struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

/// `convertor completion SHELL` and `convertor man`, before the conversion flags are parsed
/// (upstream's cobra CLI has a `completion` command too).
fn docs_commands() {
    use clap::CommandFactory;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let r = match argv.get(1).and_then(|a| a.to_str()) {
        Some("completion") => {
            let c = CompletionArgs::parse_from(&argv[1..]);
            obd_cli::docs::print_completion(Args::command(), c.shell)
        }
        Some("man") if argv.len() == 2 => obd_cli::docs::print_man(Args::command()),
        _ => return,
    };
    obd_cli::run_main(|| r)
}

fn main() {
    docs_commands();
    let args = Args::parse();
    // Bars only on a terminal; elsewhere one log line per finished stage.
    let progress: Arc<dyn Progress> = if args.log.bars_allowed() && !args.no_progress {
        let bars = Bars::new();
        obd_cli::logging::init(&args.log, Some(bars.multi()));
        bars
    } else {
        obd_cli::logging::init(&args.log, None);
        Arc::new(Lines)
    };
    let (quiet, json) = (
        args.log.quiet,
        args.log.log_format == obd_cli::logging::LogFormat::Json,
    );
    match run(args, progress) {
        Ok(summaries) => {
            // The last lines: what was made, where, how big, how fast.
            for s in summaries.iter().filter(|_| !quiet) {
                if json {
                    tracing::info!("{s}");
                } else {
                    eprintln!("{s}");
                }
            }
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("error: {}", obd_cli::error_text(&e));
            std::process::exit(convert_exit_code(&e));
        }
    }
}

/// The dedup database chosen by `--db-type`/`--db-str` (default: SQLite in the user's cache
/// directory). A database that cannot be opened gives a warning and no dedup.
fn open_dedup(a: &Args) -> Result<Option<Arc<dyn obd_dedup::DedupDb>>> {
    let env_type = std::env::var("OBDCONV_DB_TYPE")
        .ok()
        .filter(|s| !s.is_empty());
    let ty = a.db_type.clone().or(env_type);
    let (ty, s) = match (ty.as_deref(), a.db_str.as_deref()) {
        (Some("none"), _) => return Ok(None),
        (Some("mysql"), None) => {
            return Err(anyhow::Error::new(ConvertError::Unsupported(
                "--db-type mysql needs --db-str user:pass@tcp(host:port)/db".into(),
            )))
        }
        (Some(t), Some(s)) => (t.to_string(), s.to_string()),
        (None, Some(s)) if s.contains("@tcp(") || s.contains("@unix(") || s.contains("@/") => {
            ("mysql".to_string(), s.to_string())
        }
        (ty, s) => {
            let path = match s {
                Some(p) => PathBuf::from(p),
                None => {
                    let base = std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                        });
                    let Some(base) = base else {
                        tracing::warn!("no cache directory (HOME unset): converting without dedup");
                        return Ok(None);
                    };
                    let dir = base.join("obdconv");
                    if let Err(e) = std::fs::create_dir_all(&dir) {
                        tracing::warn!(
                            "cannot create {}: {e}; converting without dedup",
                            dir.display()
                        );
                        return Ok(None);
                    }
                    dir.join("dedup.sqlite")
                }
            };
            (
                ty.unwrap_or("sqlite").to_string(),
                path.display().to_string(),
            )
        }
    };
    match obd_dedup::open(&ty, &s) {
        Ok(db) => {
            tracing::debug!("dedup database: {ty}");
            Ok(Some(Arc::from(db)))
        }
        Err(e @ obd_dedup::Error::UnknownDbType(_)) => {
            Err(anyhow::Error::new(ConvertError::Unsupported(e.to_string())))
        }
        Err(e) => {
            tracing::warn!("dedup database unavailable ({e}); converting without dedup");
            Ok(None)
        }
    }
}

/// OCI media types with `--oci` or `--referrer`, and by default into an `oci:` layout
/// (whose readers, skopeo and umoci among them, expect them); Docker's otherwise, or with
/// `--docker`.
fn oci_types(a: &Args, src_repo: &str) -> bool {
    let target = a.target_repository.as_deref().unwrap_or(src_repo);
    a.oci || a.referrer || (!a.docker && target.starts_with("oci:"))
}

/// Mistakes refused before any work, with exit 2 and nothing touched: an invalid output
/// tag, an output tag that would overwrite the source image (same repository, same tag) or
/// the other engine's output, a read-only source (an archive) without another target, and
/// a `--report` whose directory does not exist.
fn preflight(
    a: &Args,
    src: &Located,
    reference: &str,
    native: Option<&str>,
    turbo: Option<&str>,
) -> Result<()> {
    let usage = |m: String| anyhow::Error::new(ConvertError::Unsupported(m));
    if src.is_archive() && a.target_repository.is_none() && !a.no_upload {
        return Err(usage(format!(
            "{} is read-only: give --target-repository (a registry repository or oci:DIR) \
             to write the conversion to",
            src.repo
        )));
    }
    let same_repo = a
        .target_repository
        .as_deref()
        .is_none_or(|t| t.trim_end_matches('/') == src.repo.trim_end_matches('/'));
    for (flag, tag) in [("--overlaybd/-o", native), ("--turboOCI", turbo)] {
        let Some(tag) = tag else { continue };
        if !obd_registry::valid_tag(tag) {
            return Err(usage(format!(
                "{flag} {tag:?} is not a valid tag: a tag is 1 to 128 characters of \
                 [A-Za-z0-9_.-] and does not start with '.' or '-'"
            )));
        }
        if same_repo && reference == tag {
            return Err(usage(format!(
                "{flag} {tag:?} is the source tag in the same repository: the conversion \
                 would replace the image it converts; choose another output tag (e.g. \
                 {tag}_obd) or --target-repository"
            )));
        }
    }
    if let (Some(n), Some(t)) = (native, turbo) {
        if n == t {
            return Err(usage(format!(
                "--overlaybd and --turboOCI are both {n:?}: the second image would replace \
                 the first; give them different tags"
            )));
        }
    }
    if let Some(p) = a.report.as_ref().filter(|p| !is_stdout(p)) {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(usage(format!(
                "--report {}: the directory {} does not exist",
                p.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// `--report -`: the report goes to stdout.
fn is_stdout(p: &std::path::Path) -> bool {
    p.as_os_str() == "-"
}

/// Decimal sizes as registries and docker show them (`28.0 MB`).
fn size(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// The closing line of one build: the full target reference and digest, sizes in and out,
/// what was really uploaded, and the time.
fn summary(kind: &str, r: &obd_convert::ConvertReport, no_upload: bool) -> String {
    let t = &r.totals;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut parts = vec![format!("{} layer{}", t.layers, plural(t.layers))];
    if t.layers_reused > 0 {
        parts.push(format!("{} reused (dedup)", t.layers_reused));
    }
    parts.push(format!(
        "{} in, {} out",
        size(t.source_bytes),
        size(t.output_bytes)
    ));
    if no_upload {
        parts.push("nothing pushed (--no-upload)".into());
    } else {
        let mut up = format!("{} uploaded", size(t.bytes_uploaded));
        if t.uploads_skipped > 0 {
            up.push_str(&format!(
                ", {} layer{} already there",
                t.uploads_skipped,
                plural(t.uploads_skipped)
            ));
        }
        parts.push(up);
    }
    parts.push(format!("{:.1} s", r.seconds));
    let what = if no_upload {
        "built (not pushed)"
    } else {
        "converted"
    };
    format!(
        "{kind} {what}: {}@{} ({})",
        r.target,
        r.output_digest,
        parts.join(", ")
    )
}

fn run(a: Args, progress: Arc<dyn Progress>) -> Result<Vec<String>> {
    let usage = |m: &str| anyhow::Error::new(ConvertError::Unsupported(m.to_string()));
    // `-r HOST/REPO:TAG` (or `@DIGEST`, or an archive's `:NAME`) names the image too.
    let loc = obd_cli::location::split(&a.repository);
    let flag = a.input_tag.clone().or(a.input_digest.clone());
    let reference = match (flag, &loc.reference) {
        (Some(f), Some(r)) if f != *r => {
            return Err(usage(&format!(
                "-r {} names the image {r:?} and -i/-g names {f:?}: give it once",
                a.repository
            )))
        }
        (Some(f), _) => f,
        (None, Some(r)) => r.clone(),
        // An archive holding one image needs no name.
        (None, None) if loc.is_archive() => String::new(),
        (None, None) => {
            return Err(usage(
                "one of input-tag [-i] or input-digest [-g] is required (or -r HOST/REPO:TAG)",
            ))
        }
    };
    let turbo = a.turbo_oci.clone().or(a.fastoci.clone());
    let native_tag = a.overlaybd.clone().or(if turbo.is_none() {
        a.output_tag.clone()
    } else {
        None
    });
    if native_tag.is_none() && turbo.is_none() {
        return Err(usage(
            "output-tag is required, you can specify it by [-o|--overlaybd|--turboOCI]",
        ));
    }
    if !matches!(a.fstype.as_str(), "ext4" | "erofs") {
        return Err(usage("--fstype must be ext4 or erofs"));
    }
    if a.fstype != "ext4" && turbo.is_none() {
        tracing::warn!(
            "--fstype {} only applies to TurboOCIv1 (--turboOCI); the native image is ext4",
            a.fstype
        );
    }
    if a.username.is_some() || a.net.any_set() {
        tracing::debug!("registry options are ignored for oci: repositories");
    }
    if a.vsize == 0 || a.vsize > 1 << 20 {
        return Err(usage("--vsize must be between 1 and 1048576 GB"));
    }
    preflight(
        &a,
        &loc,
        &reference,
        native_tag.as_deref(),
        turbo.as_deref(),
    )?;
    a.net.validate()?;
    let net = &a.net;
    let src_creds = a
        .username
        .as_deref()
        .map(|value| CliCreds { value, flag: "-u" });
    let src = net.open(&loc.repo, src_creds, Side::Source, false)?;
    // An image that is already converted is refused before any work (its manifests are
    // read, nothing else): converting it again would wrap block layers in block layers.
    if let Some(kind) = obd_convert::already_converted(src.as_ref(), &reference)? {
        if a.skip_converted {
            tracing::info!(
                "{} is already converted ({kind}): nothing to do (--skip-converted)",
                obd_convert::image_ref(&loc.repo, &reference)
            );
            return Ok(Vec::new());
        }
        return Err(usage(&format!(
            "{} is already converted ({kind}: its layers carry the overlaybd \
             annotations): convert its original image instead, or pass --skip-converted to \
             exit 0 without converting",
            obd_convert::image_ref(&loc.repo, &reference)
        )));
    }
    let dst = match &a.target_repository {
        Some(t) => {
            let creds = match &a.target_username {
                Some(value) => Some(CliCreds {
                    value,
                    flag: "--target-username",
                }),
                None => src_creds,
            };
            net.open(t, creds, Side::Target, true)?
        }
        None => src.clone(),
    };
    // Push access is checked before anything is downloaded or built: a refusal would
    // otherwise only show at the first upload.
    if !a.no_upload {
        let target = a.target_repository.as_deref().unwrap_or(&loc.repo);
        dst.check_push().map_err(|e| {
            let what = if matches!(e, ConvertError::Auth(_)) {
                format!(
                    "cannot push to the target repository {target}: these credentials are not \
                     allowed to push there (checked before converting anything)"
                )
            } else {
                format!("checking that the target repository {target} takes pushes")
            };
            anyhow::Error::new(e).context(what)
        })?;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let run_dir = a.dir.join(format!("obdconv-{}", std::process::id()));
    let opts = ConvertOptions {
        native: NativeOptions {
            mkfs: a.mkfs,
            vsize_gb: a.vsize,
            flavor: Flavor {
                oci: oci_types(&a, &loc.repo),
            },
            referrer: a.referrer,
            disable_sparse: a.disable_sparse,
            zfile: ZFileOptions {
                algorithm: a.algorithm,
                threads,
                ..Default::default()
            },
            reserve: a.reserve,
            no_upload: a.no_upload,
            dump_manifest: a.dump_manifest,
            download_concurrency: 3,
            memory_budget: a.memory_budget.saturating_mul(1 << 20),
            progress: ProgressSink(progress),
        },
        work_dir: run_dir.clone(),
        concurrency: a.concurrency_limit,
        platforms: if a.platform.iter().any(|p| p == "all") {
            Vec::new()
        } else {
            a.platform.clone()
        },
        dedup: Default::default(),
        engine: Engine::Native,
    };
    let mut opts = opts;
    if let Some(db) = open_dedup(&a)? {
        let (lp, mp) = obd_convert::dedup_db::profiles(&opts.native, "native")
            .context("building the dedup profile")?;
        opts.dedup = DedupHandle(Arc::new(DbDedup::new(
            db,
            dst.clone(),
            lp,
            mp,
            opts.native.flavor.manifest(),
        )));
    }
    // SIGINT/SIGTERM: drop the work directory and leave; the tag only moves at the very end.
    {
        let (dir, reserve) = (run_dir.clone(), a.reserve);
        ctrlc::set_handler(move || {
            eprintln!("interrupted; cleaning up");
            if !reserve {
                // Worker threads keep writing while this runs: a file created in between
                // makes removal fail (ENOTEMPTY), so try again, briefly.
                for _ in 0..100 {
                    if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            std::process::exit(obd_cli::exit::INTERRUPTED);
        })
        .context("installing the signal handler")?;
    }
    // Upstream order: the native build, then the TurboOCIv1 build; a failure stops there.
    let mut reports = Vec::new();
    let report_to_stdout = a.report.as_deref().is_some_and(is_stdout);
    let result = (|| -> Result<()> {
        if let Some(tag) = &native_tag {
            tracing::info!("building [Overlaybd - Native]  image...");
            let r = obd_convert::convert(src.clone(), dst.clone(), &reference, tag, &opts)
                .map_err(|e| anyhow::Error::new(e).context("failed to build overlaybd"))?;
            tracing::info!("overlaybd build finished");
            // The image is pushed: a closed stdout must not turn that into a failure.
            if !report_to_stdout {
                let _ = obd_cli::print_out(&format!("{}\n", r.output_digest));
            }
            reports.push(("overlaybd", r));
        }
        if let Some(tag) = &turbo {
            tracing::info!("building [Overlaybd - Turbo OCIv1] image...");
            let mut topts = opts.clone();
            topts.engine = Engine::Turbo {
                fstype: a.fstype.clone(),
            };
            topts.work_dir = run_dir.join("turbo");
            let r = obd_convert::convert(src.clone(), dst.clone(), &reference, tag, &topts)
                .map_err(|e| anyhow::Error::new(e).context("failed to build TurboOCIv1 image"))?;
            tracing::info!("TurboOCIv1 build finished");
            // The image is pushed: a closed stdout must not turn that into a failure.
            if !report_to_stdout {
                let _ = obd_cli::print_out(&format!("{}\n", r.output_digest));
            }
            reports.push(("turboOCI", r));
        }
        Ok(())
    })();
    if !a.reserve {
        let _ = std::fs::remove_dir_all(&run_dir);
        let _ = std::fs::remove_dir(&a.dir);
    }
    if let Some(p) = &a.report {
        // One engine: its report; both: an object keyed by engine.
        let v = if reports.len() == 1 {
            serde_json::to_value(&reports[0].1)?
        } else {
            let m: serde_json::Map<String, serde_json::Value> = reports
                .iter()
                .map(|(k, r)| Ok((k.to_string(), serde_json::to_value(r)?)))
                .collect::<Result<_>>()?;
            serde_json::Value::Object(m)
        };
        if result.is_ok() || !reports.is_empty() {
            let mut json = serde_json::to_vec_pretty(&v)?;
            if is_stdout(p) {
                json.push(b'\n');
                let _ = obd_cli::print_out(&String::from_utf8_lossy(&json));
            } else {
                std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
            }
        }
    }
    result?;
    Ok(reports
        .iter()
        .map(|(k, r)| summary(k, r, a.no_upload))
        .collect())
}
