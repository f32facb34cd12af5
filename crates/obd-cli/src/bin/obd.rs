//! `obd`: the overlaybd toolbox. Its subcommands mirror upstream's C++ tools
//! (`overlaybd-create`, `overlaybd-commit`, `overlaybd-zfile`, ...) so scripts can use
//! either, plus tools to look inside layers.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use obd_format::config::ImageConfig;
use obd_format::detect;
use obd_format::gzindex::GzIndexOptions;
use obd_format::io::WriteAt;
use obd_format::lsmt::{self, CommitOptions, RwKind, RwLayer, WarpLayer, WarpStack};
use obd_format::output::{write_wrapped, Wrapping};
use obd_format::uuid::Uuid;
use obd_format::zfile::{Algorithm, ZFileOptions};
use obd_format::ReadAt;

const EXAMPLES: &str = "Examples:
  obd create data index 64 && obd apply --mkfs layer.tar config.json
  obd commit -z -t data index layer.obd
  obd inspect layer.obd
  obd export-raw config.json disk.img && e2fsck -fn disk.img
  obd check --source oci:./in --source-ref v1 --converted-ref v1_obd
  obd completion zsh > _obd";

#[derive(Parser, Debug)]
#[command(
    name = "obd",
    version = obd_cli::docs::VERSION,
    about = "overlaybd layer toolbox (create, commit, zfile, inspect, export-raw)",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(flatten)]
    log: obd_cli::logging::LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct ZArgs {
    /// Compression algorithm of the ZFile.
    #[arg(long, default_value = "lz4")]
    algorithm: Algorithm,
    /// ZFile block size in KiB (a power of two from 4 to 64).
    #[arg(long = "bs", default_value_t = 4)]
    bs: u32,
    /// Compression threads (the output does not depend on it; 0 = all cores).
    #[arg(long = "compress-threads", default_value_t = 0)]
    threads: usize,
}

impl ZArgs {
    fn options(&self) -> Result<ZFileOptions> {
        let threads = if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.threads
        };
        let o = ZFileOptions {
            algorithm: self.algorithm,
            block_size: self.bs.checked_mul(1024).context("--bs is too large")?,
            verify: true,
            threads,
        };
        o.validate()?;
        Ok(o)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a writable layer (data + index files), like `overlaybd-create`.
    Create {
        /// Sparse data file (the raw image at offset 4096 + LBA; no index records).
        /// Ignored with --turbo-oci, as upstream.
        #[arg(short = 's', long)]
        sparse: bool,
        /// Create a TurboOCI warp layer: DATA becomes the raw fs-meta image of VSIZE_GB,
        /// INDEX its index file (upstream `--turboOCI` / `--fastoci`).
        #[arg(long = "turbo-oci", aliases = ["turboOCI", "fastoci"])]
        turbo_oci: bool,
        /// Parent UUID written into the headers.
        #[arg(short = 'u', long = "parent-uuid")]
        parent_uuid: Option<String>,
        /// UUID written into the headers (null by default, for deterministic output).
        #[arg(long)]
        uuid: Option<String>,
        /// Make an empty ext4 filesystem on the new layer (upstream's mkfs parameters).
        #[arg(long)]
        mkfs: bool,
        data_file: PathBuf,
        index_file: PathBuf,
        /// Virtual size in GiB.
        vsize_gb: u64,
    },
    /// Compact a writable layer into a committed read-only layer, like `overlaybd-commit`.
    Commit {
        /// Commit a TurboOCI warp layer (DATA the fs-meta image, INDEX its index file):
        /// remote mappings keep pointing into the layer tar (upstream `--turboOCI` /
        /// `--fastoci`; the convertor's `ext4.fs.meta` is `-z` of this).
        #[arg(long = "turbo-oci", aliases = ["turboOCI", "fastoci"])]
        turbo_oci: bool,
        /// Compress the output into a ZFile.
        #[arg(short = 'z', long)]
        zfile: bool,
        /// Wrap the output in a tar (the registry blob form).
        #[arg(short = 't', long)]
        tar: bool,
        #[command(flatten)]
        z: ZArgs,
        /// UUID of the committed layer (null if absent).
        #[arg(long)]
        uuid: Option<String>,
        /// Parent UUID (copied from the writable layer if absent).
        #[arg(short = 'p', long = "parent-uuid")]
        parent_uuid: Option<String>,
        /// Commit message stored in the header (at most 256 bytes).
        #[arg(short = 'm', long = "message")]
        message: Option<String>,
        /// Replace OUT if it exists.
        #[arg(short = 'f', long)]
        force: bool,
        data_file: PathBuf,
        index_file: PathBuf,
        commit_file: PathBuf,
    },
    /// Compress, decompress or verify a ZFile, like `overlaybd-zfile`.
    Zfile {
        /// Decompress SRC into DST.
        #[arg(short = 'x', long)]
        extract: bool,
        /// Check every block's CRC of SRC (tar-wrapped input is fine).
        #[arg(long)]
        verify: bool,
        /// Wrap the compressed output in a tar.
        #[arg(short = 't', long)]
        tar: bool,
        /// Replace DST if it exists.
        #[arg(short = 'f', long)]
        force: bool,
        #[command(flatten)]
        z: ZArgs,
        src: PathBuf,
        dst: Option<PathBuf>,
    },
    /// Apply an OCI layer tar (plain, gzip or zstd) onto the ext4 filesystem of an image
    /// config's stack, writing into its upper layer, like `overlaybd-apply`.
    ///
    /// TurboOCI (with --gz-index-path, or when the config's upper has `target` or
    /// `gzipIndex`): the upper is a warp layer (`obd create --turbo-oci`) and only metadata
    /// is written: file blocks are mapped onto their data in the uncompressed layer tar, and
    /// a gzip layer's random-access index is written while the layer streams once, like
    /// upstream's `overlaybd-apply --gz_index_path` / `turboOCI-apply`.
    Apply {
        /// Make a new ext4 filesystem on the device first.
        #[arg(long)]
        mkfs: bool,
        /// Expected sha256 of the uncompressed tar (`sha256:HEX`); a mismatch fails.
        #[arg(long)]
        checksum: Option<String>,
        /// TurboOCI metadata-only apply; a gzip layer's index (`gzip.meta`) is written here
        /// (default: the config's `upper.gzipIndex`). Nothing is written for a plain tar.
        #[arg(long = "gz-index-path", alias = "gz_index_path")]
        gz_index_path: Option<PathBuf>,
        /// Filesystem of the image. Only ext4 here (EROFS fs-meta: `convertor --turboOCI
        /// --fstype erofs`).
        #[arg(long, default_value = "ext4")]
        fstype: String,
        layer_tar: PathBuf,
        config: PathBuf,
    },
    /// Flatten the layer stack of an image config into a sparse raw disk image.
    ExportRaw { config: PathBuf, out: PathBuf },
    /// Say what a file is and print its headers and index statistics as JSON.
    Inspect { file: PathBuf },
    /// Print the shell completion script of `obd` (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Print the man page of `obd` (roff).
    Man,
    /// Compare a converted image's filesystem with its source image's merged layers,
    /// without mounting. Prints `identical: N entries` per platform or the differences.
    /// Exit status: 0 identical, 1 differences found, other codes (2-6) when the check
    /// could not run (as for `convertor`).
    Check(CheckArgs),
}

/// `obd check` flags.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    net: obd_cli::net::NetArgs,
    /// Credentials `user[:password]` for both repositories (default: looked up in
    /// REGISTRY_AUTH_FILE, the containers auth.json files and the docker config).
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Source repository (`oci:DIR` or `host/repo`).
    #[arg(long)]
    source: String,
    /// Source tag or `sha256:` digest.
    #[arg(long = "source-ref")]
    source_ref: String,
    /// Converted repository (default: the source repository).
    #[arg(long)]
    converted: Option<String>,
    /// Converted tag or `sha256:` digest.
    #[arg(long = "converted-ref")]
    converted_ref: String,
    /// Check only this platform (`os/arch[/variant]`; repeatable). Without it every source
    /// platform must have been converted.
    #[arg(long)]
    platform: Vec<String>,
    /// Where converted layers are downloaded (default: the system temp dir).
    #[arg(long = "work-dir")]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `obd check` and exits: 0 identical, 1 differences, else the error's exit code.
fn check_main(a: CheckArgs) -> ! {
    let r = (|| -> Result<obd_check::Report> {
        let mut net = a.net.clone();
        net.cred_flags = obd_cli::net::CredFlags {
            source: "-u user:password".into(),
            target: "-u user:password".into(),
        };
        net.validate()?;
        let user = a
            .username
            .as_deref()
            .map(|value| obd_cli::net::CliCreds { value, flag: "-u" });
        let src = net.open(&a.source, user, obd_cli::net::Side::Source, false)?;
        let conv = match &a.converted {
            Some(c) => net.open(c, user, obd_cli::net::Side::Target, false)?,
            None => src.clone(),
        };
        let opts = obd_check::CheckOptions {
            platforms: a.platform.clone(),
            work_dir: a.work_dir.clone(),
        };
        obd_check::check(
            src.as_ref(),
            &a.source_ref,
            conv.as_ref(),
            &a.converted_ref,
            &opts,
        )
        .map_err(|e| anyhow::Error::new(obd_convert::ConvertError::from(e)))
    })();
    match r {
        Ok(report) => {
            let text = if a.json {
                serde_json::to_string_pretty(&report).expect("serialises") + "\n"
            } else {
                report.summary()
            };
            // A closed stdout still leaves the verdict in the exit code.
            let _ = obd_cli::print_out(&text);
            std::process::exit(if report.identical() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("error: {}", obd_cli::error_text(&e));
            std::process::exit(obd_cli::net::convert_exit_code(&e));
        }
    }
}

fn parse_uuid(s: &Option<String>, what: &str) -> Result<Option<Uuid>> {
    match s {
        None => Ok(None),
        Some(s) => Uuid::parse(s)
            .map(Some)
            .with_context(|| {
                format!("{what} {s:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
            })
            .map_err(|e| anyhow::Error::new(obd_format::FormatError::Invalid(format!("{e:#}")))),
    }
}

fn create_out(path: &Path, force: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn main() {
    let cli = Cli::parse();
    obd_cli::logging::init(&cli.log, None);
    obd_cli::run_main(|| run(cli.cmd))
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create {
            sparse,
            turbo_oci,
            parent_uuid,
            uuid,
            mkfs,
            data_file,
            index_file,
            vsize_gb,
        } => {
            let parent = parse_uuid(&parent_uuid, "--parent-uuid")?.unwrap_or_default();
            let uuid = parse_uuid(&uuid, "--uuid")?.unwrap_or_default();
            let vsize = vsize_gb
                .checked_mul(1 << 30)
                .context("virtual size overflows")?;
            if turbo_oci {
                let layer = WarpLayer::create(&data_file, &index_file, vsize, uuid, parent)?;
                if mkfs {
                    let mut fs = obd_ext4::Ext4::mkfs(layer, &obd_ext4::MkfsOptions::default())?;
                    fs.flush()?;
                    fs.into_device().flush()?;
                }
                return Ok(());
            }
            let kind = if sparse {
                RwKind::Sparse
            } else {
                RwKind::Append
            };
            let layer = RwLayer::create(&data_file, &index_file, vsize, kind, uuid, parent)?;
            if mkfs {
                let mut fs = obd_ext4::Ext4::mkfs(layer, &obd_ext4::MkfsOptions::default())?;
                fs.flush()?;
                fs.into_device().flush()?;
            }
            Ok(())
        }
        Cmd::Commit {
            turbo_oci,
            zfile,
            tar,
            z,
            uuid,
            parent_uuid,
            message,
            force,
            data_file,
            index_file,
            commit_file,
        } => {
            // Either kind of writable layer: (virtual size, parent UUID of its header).
            enum Layer {
                Rw(RwLayer),
                Warp(WarpLayer),
            }
            let (layer, vsize, parent) = if turbo_oci {
                // A warp layer's DATA is a raw fs-meta image; an ordinary writable layer's
                // data file starts with an LSMT header (their index files look alike).
                let mut head = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(
                        File::open(&data_file)
                            .with_context(|| format!("opening {}", data_file.display()))?,
                        24,
                    ),
                    &mut head,
                )?;
                if lsmt::HeaderTrailer::has_magic(&head) {
                    bail!(obd_format::FormatError::Invalid(format!(
                        "{} is the data file of an ordinary writable layer, not a TurboOCI \
                         fs-meta image (commit it without --turbo-oci)",
                        data_file.display()
                    )));
                }
                let l = WarpLayer::open(&data_file, &index_file)?;
                let (v, p) = (l.virtual_size(), l.header().parent_uuid);
                (Layer::Warp(l), v, p)
            } else {
                let l = RwLayer::open(&data_file, &index_file)?;
                let (v, p) = (l.virtual_size(), l.header().parent_uuid);
                (Layer::Rw(l), v, p)
            };
            let opts = CommitOptions {
                virtual_size: vsize,
                uuid: parse_uuid(&uuid, "--uuid")?,
                parent_uuid: parse_uuid(&parent_uuid, "--parent-uuid")?.unwrap_or(parent),
                user_tag: message.unwrap_or_default().into_bytes(),
            };
            if opts.user_tag.len() > 256 {
                bail!(obd_format::FormatError::Invalid(
                    "commit message longer than 256 bytes".into()
                ));
            }
            let wrap = Wrapping {
                zfile: if zfile { Some(z.options()?) } else { None },
                tar,
                overwrite_header: true,
            };
            let out = create_out(&commit_file, force)?;
            let (stats, _) = match &layer {
                Layer::Rw(l) => l.commit_to(&opts, wrap, out)?,
                Layer::Warp(l) => l.commit_to(&opts, wrap, out)?,
            };
            tracing::info!(
                data_bytes = stats.data_bytes,
                entries = stats.valid_entries,
                "committed {}",
                commit_file.display()
            );
            Ok(())
        }
        Cmd::Zfile {
            extract,
            verify,
            tar,
            force,
            z,
            src,
            dst,
        } => {
            if verify {
                let u = detect::unwrap(detect::open_file(&src)?)?;
                let zr = u
                    .zfile
                    .with_context(|| format!("{} is not a ZFile", src.display()))?;
                let n = zr.verify_all()?;
                obd_cli::print_out(&format!("{}: {n} blocks verified\n", src.display()))?;
                return Ok(());
            }
            let dst = dst.context("DST is required unless --verify")?;
            if extract {
                let u = detect::unwrap(detect::open_file(&src)?)?;
                let zr = u
                    .zfile
                    .with_context(|| format!("{} is not a ZFile", src.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, create_out(&dst, force)?);
                let mut buf = Vec::new();
                zr.for_each_block(
                    |_, d| {
                        w.write_all(d).map_err(|e| obd_format::FormatError::Io {
                            context: "writing".into(),
                            source: e,
                        })
                    },
                    &mut buf,
                )?;
                w.flush()?;
            } else {
                let mut input = BufReader::with_capacity(
                    1 << 20,
                    File::open(&src).with_context(|| format!("opening {}", src.display()))?,
                );
                let wrap = Wrapping {
                    zfile: Some(z.options()?),
                    tar,
                    overwrite_header: false,
                };
                write_wrapped(create_out(&dst, force)?, wrap, |w| {
                    std::io::copy(&mut input, w).map_err(|e| obd_format::FormatError::Io {
                        context: "compressing".into(),
                        source: e,
                    })
                })?;
            }
            Ok(())
        }
        Cmd::Apply {
            mkfs,
            checksum,
            gz_index_path,
            fstype,
            layer_tar,
            config,
        } => {
            if fstype != "ext4" {
                bail!(obd_format::FormatError::Invalid(format!(
                    "--fstype {fstype} is not supported by obd apply (ext4 only; EROFS \
                     fs-meta is built by `convertor --turboOCI T --fstype erofs`)"
                )));
            }
            let cfg = ImageConfig::load(&config)?;
            if gz_index_path.is_some() || cfg.upper.as_ref().is_some_and(|u| u.is_warp()) {
                return apply_turbo(&cfg, mkfs, checksum, gz_index_path, &layer_tar);
            }
            let stack = cfg.open_stack()?;
            if stack.upper().is_none() {
                bail!(obd_format::FormatError::Invalid(format!(
                    "{} has no upper layer to write into",
                    config.display()
                )));
            }
            let mut fs = if mkfs {
                obd_ext4::Ext4::mkfs(stack, &obd_ext4::MkfsOptions::default())?
            } else {
                obd_ext4::Ext4::open(stack)?
            };
            let input = File::open(&layer_tar)
                .with_context(|| format!("opening {}", layer_tar.display()))?;
            let stats = obd_tar::apply_layer(&mut fs, input)
                .with_context(|| format!("applying {}", layer_tar.display()))?;
            check_digest(&checksum, &stats.diff_id)?;
            fs.flush()?;
            fs.into_device().flush()?;
            tracing::info!(?stats, "applied {}", layer_tar.display());
            Ok(())
        }
        Cmd::ExportRaw { config, out } => {
            let cfg = ImageConfig::load(&config)?;
            let stack = cfg.open_stack()?;
            export_raw(&stack, &out)
        }
        Cmd::Check(a) => check_main(a),
        Cmd::Completion { shell } => {
            obd_cli::docs::print_completion(<Cli as clap::CommandFactory>::command(), shell)
        }
        Cmd::Man => obd_cli::docs::print_man(<Cli as clap::CommandFactory>::command()),
        Cmd::Inspect { file } => {
            let v = detect::inspect(&file)?;
            obd_cli::print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            Ok(())
        }
    }
}

/// Checks the uncompressed digest of a layer against `--checksum`.
fn check_digest(want: &Option<String>, got: &str) -> Result<()> {
    if let Some(want) = want {
        if !want.eq_ignore_ascii_case(got) {
            bail!(obd_format::FormatError::Corrupt {
                what: "layer",
                detail: format!("uncompressed digest is {got}, expected {want}"),
            });
        }
    }
    Ok(())
}

/// `obd apply` in TurboOCI form: metadata only onto the config's warp upper; a gzip layer's
/// index goes to `gz_index_path` (or the config's `upper.gzipIndex`).
fn apply_turbo(
    cfg: &ImageConfig,
    mkfs: bool,
    checksum: Option<String>,
    gz_index_path: Option<PathBuf>,
    layer_tar: &Path,
) -> Result<()> {
    use std::io::BufRead;
    let gz_path = gz_index_path.or_else(|| {
        cfg.upper
            .as_ref()
            .filter(|u| !u.gzip_index.is_empty())
            .map(|u| PathBuf::from(&u.gzip_index))
    });
    // Tell a gzip layer up front: without a place for its index the upper is not touched.
    let mut input = BufReader::with_capacity(
        1 << 20,
        File::open(layer_tar).with_context(|| format!("opening {}", layer_tar.display()))?,
    );
    let head = input
        .fill_buf()
        .with_context(|| format!("reading {}", layer_tar.display()))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if gzip && gz_path.is_none() {
        bail!(obd_format::FormatError::Invalid(format!(
            "{} is gzip-compressed: TurboOCI needs --gz-index-path (or upper.gzipIndex) for \
             its index",
            layer_tar.display()
        )));
    }
    let dev = cfg.open_warp_stack()?;
    let mut fs = if mkfs {
        obd_ext4::Ext4::mkfs(dev, &obd_ext4::MkfsOptions::default())?
    } else {
        obd_ext4::Ext4::open(dev)?
    };
    let r = obd_tar::apply_layer_remote(
        &mut fs,
        input,
        GzIndexOptions::default(),
        &mut |d: &mut WarpStack, off, len, toff| {
            d.upper
                .remote_data(off, len, toff)
                .map(|_| ())
                .map_err(std::io::Error::other)
        },
    )
    .map_err(|e| match e {
        obd_tar::RemoteApplyError::Unsupported(m) => {
            anyhow::Error::new(obd_format::FormatError::Invalid(m))
        }
        other => anyhow::Error::new(other),
    })
    .with_context(|| format!("applying {}", layer_tar.display()))?;
    check_digest(&checksum, &r.stats.diff_id)?;
    fs.flush()?;
    fs.into_device().flush()?;
    match (&r.gz_index, &gz_path) {
        (Some(b), Some(p)) => {
            std::fs::write(p, &b.meta).with_context(|| format!("writing {}", p.display()))?;
            tracing::info!(
                entries = b.index.entries.len(),
                bytes = b.meta.len(),
                "gzip index written to {}",
                p.display()
            );
        }
        (None, Some(p)) => {
            tracing::info!(
                "{} is not gzip-compressed: no index written to {}",
                layer_tar.display(),
                p.display()
            );
        }
        _ => {}
    }
    tracing::info!(stats = ?r.stats, "applied {} (metadata only)", layer_tar.display());
    Ok(())
}

/// Writes every mapped, non-zero range of the stack into a sparse file of the stack's size.
fn export_raw(stack: &lsmt::Stack, out: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.set_len(stack.size())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for s in stack.flattened() {
        if s.zeroed {
            continue;
        }
        let (mut pos, end) = (s.offset * 512, (s.end() * 512).min(stack.size()));
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            let b = &mut buf[..n];
            stack.read_exact_at(b, pos)?;
            for (i, c) in b.chunks(4096).enumerate() {
                if c.iter().any(|&x| x != 0) {
                    std::os::unix::fs::FileExt::write_all_at(&f, c, pos + (i * 4096) as u64)?;
                    written += c.len() as u64;
                }
            }
            pos += n as u64;
        }
    }
    f.sync_all()?;
    tracing::info!(
        virtual_size = stack.size(),
        written,
        "exported {}",
        out.display()
    );
    Ok(())
}
