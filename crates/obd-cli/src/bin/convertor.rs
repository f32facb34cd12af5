//! `convertor`: drop-in replacement for the overlaybd userspace image convertor.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};
use obd_convert::image::Flavor;
use obd_convert::native::NativeOptions;
use obd_convert::store::{OciLayout, Store};
use obd_convert::{ConvertError, ConvertOptions};
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

#[derive(Parser, Debug)]
#[command(
    name = "convertor",
    version,
    about = "An image conversion tool from oci image to overlaybd image.",
    long_about = LONG_ABOUT
)]
struct Args {
    /// repository for converting image (required); `oci:DIR` for an OCI image layout
    #[arg(short = 'r', long)]
    repository: String,
    /// user[:password] Registry user and password
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// connections using plain HTTP
    #[arg(long)]
    plain: bool,
    /// show debug log
    #[arg(long)]
    verbose: bool,
    /// tag for image converting from (required when input-digest is not set)
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
    /// export image with oci spec
    #[arg(long)]
    oci: bool,
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
    /// db str for overlaybd conversion
    #[arg(long = "db-str")]
    db_str: Option<String>,
    /// type of db to use for conversion deduplication. Available: mysql. Default none
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
    /// In these directories, root CA should be named as *.crt and client cert should be named as *.cert, *.key
    #[arg(long = "cert-dir")]
    cert_dir: Vec<PathBuf>,
    /// root CA certificates
    #[arg(long = "root-ca")]
    root_ca: Vec<PathBuf>,
    /// client cert certificates, should form in ${cert-file}:${key-file}
    #[arg(long = "client-cert")]
    client_cert: Vec<String>,
    /// don't verify the server's certificate chain and host name
    #[arg(long)]
    insecure: bool,
    /// reserve tmp data
    #[arg(long)]
    reserve: bool,
    /// don't upload layer and manifest (nothing is pushed or tagged)
    #[arg(long = "no-upload")]
    no_upload: bool,
    /// dump manifest
    #[arg(long = "dump-manifest")]
    dump_manifest: bool,
    /// only convert these platforms of an index (os/arch[/variant]; repeatable or comma-separated)
    #[arg(long, value_delimiter = ',')]
    platform: Vec<String>,
    /// push the result to this repository instead of the source one (`oci:DIR` too)
    #[arg(long = "target-repository")]
    target_repository: Option<String>,
    /// user[:password] for the target repository (default: the source credentials)
    #[arg(long = "target-username")]
    target_username: Option<String>,
    /// ZFile compression of the layers
    #[arg(long, default_value = "lz4")]
    algorithm: Algorithm,
    /// write a JSON report of the conversion to this file
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Registry connection settings from the command line.
struct Net<'a> {
    a: &'a Args,
}

impl Net<'_> {
    fn options(&self, username: Option<&str>) -> Result<obd_registry::ClientOptions> {
        let a = self.a;
        let credentials = match username {
            // Upstream: no ':' or a leading ':' means anonymous.
            Some(u) if u.find(':').is_some_and(|i| i > 0) => {
                Some(obd_registry::Credentials::parse(u)?)
            }
            Some(u) if !u.is_empty() && !u.contains(':') => {
                Some(obd_registry::Credentials::new(u, ""))
            }
            _ => None,
        };
        let client_cert = match a.client_cert.first() {
            Some(cc) => {
                let (c, k) = cc.rsplit_once(':').ok_or_else(|| {
                    ConvertError::Unsupported(format!("--client-cert {cc:?} is not CERT:KEY"))
                })?;
                Some((PathBuf::from(c), PathBuf::from(k)))
            }
            None => None,
        };
        Ok(obd_registry::ClientOptions {
            plain_http: a.plain,
            insecure_skip_verify: a.insecure,
            cert_dirs: a.cert_dir.clone(),
            root_cas: a.root_ca.clone(),
            client_cert,
            use_docker_config: username.is_none(),
            credentials,
            ..Default::default()
        })
    }

    fn open(&self, repo: &str, username: Option<&str>, create: bool) -> Result<Arc<dyn Store>> {
        if let Some(dir) = repo.strip_prefix("oci:") {
            return Ok(Arc::new(OciLayout::open(dir, create)?));
        }
        let r = obd_registry::Reference::parse(repo)
            .map_err(|e| ConvertError::Unsupported(format!("repository {repo:?}: {e}")))?;
        if r.tag.is_some() || r.digest.is_some() {
            bail!(ConvertError::Unsupported(format!(
                "repository {repo:?} must not carry a tag or digest; use -i/-g"
            )));
        }
        let client = obd_registry::Client::for_reference(&r, self.options(username)?)
            .map_err(obd_convert::registry_store::map_err)?;
        Ok(Arc::new(obd_convert::registry_store::RegistryStore::new(
            client,
            r.repository,
        )))
    }
}

fn exit_code(e: &anyhow::Error) -> i32 {
    use obd_cli::exit;
    for c in e.chain() {
        if let Some(ce) = c.downcast_ref::<ConvertError>() {
            return match ce {
                ConvertError::NotFound(_) => exit::NOT_FOUND,
                ConvertError::Auth(_) => exit::AUTH,
                ConvertError::BadInput(_) => exit::BAD_INPUT,
                ConvertError::Io { .. } | ConvertError::Store(_) => exit::IO,
                ConvertError::Unsupported(_) => exit::USAGE,
                ConvertError::Interrupted => exit::INTERRUPTED,
            };
        }
    }
    obd_cli::exit_code(e)
}

fn main() {
    let args = Args::parse();
    obd_cli::init_logging(args.verbose);
    match run(args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(exit_code(&e));
        }
    }
}

fn run(a: Args) -> Result<()> {
    let usage = |m: &str| anyhow::Error::new(ConvertError::Unsupported(m.to_string()));
    let reference = match (&a.input_tag, &a.input_digest) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(usage(
                "one of input-tag [-i] or input-digest [-g] is required",
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
    if turbo.is_some() {
        return Err(usage(
            "TurboOCIv1 (--turboOCI/--fastoci) is not implemented yet",
        ));
    }
    if a.fstype != "ext4" {
        return Err(usage(
            "--fstype erofs applies to TurboOCIv1 only, which is not implemented yet",
        ));
    }
    if a.db_type.is_some() || a.db_str.is_some() {
        tracing::warn!("conversion deduplication (--db-type/--db-str) is not implemented yet; converting without it");
    }
    if a.username.is_some()
        || a.plain
        || a.insecure
        || !a.cert_dir.is_empty()
        || !a.root_ca.is_empty()
        || !a.client_cert.is_empty()
    {
        tracing::debug!("registry options are ignored for oci: repositories");
    }
    if a.vsize == 0 || a.vsize > 1 << 20 {
        return Err(usage("--vsize must be between 1 and 1048576 GB"));
    }
    let net = Net { a: &a };
    let src = net.open(&a.repository, a.username.as_deref(), false)?;
    let dst = match &a.target_repository {
        Some(t) => net.open(
            t,
            a.target_username.as_deref().or(a.username.as_deref()),
            true,
        )?,
        None => src.clone(),
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let run_dir = a.dir.join(format!("obdconv-{}", std::process::id()));
    let opts = ConvertOptions {
        native: NativeOptions {
            mkfs: a.mkfs,
            vsize_gb: a.vsize,
            flavor: Flavor {
                oci: a.oci || a.referrer,
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
        },
        work_dir: run_dir.clone(),
        concurrency: a.concurrency_limit,
        platforms: a.platform.clone(),
    };
    // SIGINT/SIGTERM: drop the work directory and leave; the tag only moves at the very end.
    {
        let (dir, reserve) = (run_dir.clone(), a.reserve);
        ctrlc::set_handler(move || {
            eprintln!("interrupted; cleaning up");
            if !reserve {
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::process::exit(obd_cli::exit::INTERRUPTED);
        })
        .context("installing the signal handler")?;
    }
    let tag = native_tag.expect("checked above");
    tracing::info!("building [Overlaybd - Native]  image...");
    let r = obd_convert::convert(src, dst, &reference, &tag, &opts);
    if !a.reserve {
        let _ = std::fs::remove_dir_all(&run_dir);
        let _ = std::fs::remove_dir(&a.dir);
    }
    let report = r.map_err(|e| anyhow::Error::new(e).context("failed to build overlaybd"))?;
    tracing::info!("overlaybd build finished");
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{}", report.output_digest);
    Ok(())
}
