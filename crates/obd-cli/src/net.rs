//! Registry and OCI-layout access from the command line: the connection flags shared by
//! `convertor` and `obd check`, and opening a [`Store`] for `-r REPO` (`oci:DIR` or a registry
//! repository).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use obd_convert::archive::{ArchiveKind, ArchiveStore};
use obd_convert::store::{OciLayout, Store};
use obd_convert::ConvertError;

/// Default of `--read-timeout`, in seconds.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;
/// Size of the `PATCH` chunks blobs are uploaded in (16 MiB; smaller blobs go in one `PUT`).
pub const UPLOAD_CHUNK: u64 = 16 << 20;

/// Which end of a conversion a repository is: the side-specific flags (`--src-*`,
/// `--dest-*`) apply to it on top of the shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The repository images are read from (`-r`).
    Source,
    /// The repository converted images are pushed to (`--target-repository`).
    Target,
}

/// Credentials given on the command line, and the flag that gave them (named in errors).
#[derive(Debug, Clone, Copy)]
pub struct CliCreds<'a> {
    /// `user[:password]`.
    pub value: &'a str,
    /// The flag, e.g. `-u`.
    pub flag: &'a str,
}

/// How each side's credentials are given on the command line, named in the fix of an
/// authentication error. The default is `convertor`'s.
#[derive(Debug, Clone)]
pub struct CredFlags {
    pub source: String,
    pub target: String,
}

impl Default for CredFlags {
    fn default() -> Self {
        CredFlags {
            source: "-u/--src-creds user:password".into(),
            target: "--target-username/--dest-creds user:password".into(),
        }
    }
}

pub use obd_registry::CERTS_D_ROOTS_ENV;

/// Connection flags, spelled as upstream's convertor spells them (`--read-timeout` is ours;
/// the per-side `--src-*`/`--dest-*` flags are skopeo's names).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// connections using plain HTTP (both sides; see --src-plain/--dest-plain)
    #[arg(long)]
    pub plain: bool,
    /// plain HTTP for the source registry only
    #[arg(long = "src-plain")]
    pub src_plain: bool,
    /// plain HTTP for the target registry only
    #[arg(long = "dest-plain")]
    pub dest_plain: bool,
    /// In these directories, root CA should be named as *.crt and client cert should be named as *.cert, *.key
    #[arg(long = "cert-dir")]
    pub cert_dir: Vec<PathBuf>,
    /// cert dir (*.crt, *.cert, *.key) for the source registry only
    #[arg(long = "src-cert-dir")]
    pub src_cert_dir: Vec<PathBuf>,
    /// cert dir (*.crt, *.cert, *.key) for the target registry only
    #[arg(long = "dest-cert-dir")]
    pub dest_cert_dir: Vec<PathBuf>,
    /// root CA certificates
    #[arg(long = "root-ca")]
    pub root_ca: Vec<PathBuf>,
    /// client cert certificates, should form in ${cert-file}:${key-file}
    #[arg(long = "client-cert")]
    pub client_cert: Vec<String>,
    /// don't verify the server's certificate chain and host name
    #[arg(long)]
    pub insecure: bool,
    /// don't verify the source registry's certificate
    #[arg(long = "src-insecure")]
    pub src_insecure: bool,
    /// don't verify the target registry's certificate
    #[arg(long = "dest-insecure")]
    pub dest_insecure: bool,
    /// give up on a registry request after SECS seconds without data (retried like other network errors); a blob upload request may take 2*SECS plus 8 s per MiB; 0 waits forever
    #[arg(long = "read-timeout", value_name = "SECS", default_value_t = DEFAULT_READ_TIMEOUT_SECS)]
    pub read_timeout: u64,
    /// How credentials are given per side (named in errors); set by the binary.
    #[arg(skip)]
    pub cred_flags: CredFlags,
}

impl Default for NetArgs {
    fn default() -> Self {
        NetArgs {
            plain: false,
            src_plain: false,
            dest_plain: false,
            cert_dir: Vec::new(),
            src_cert_dir: Vec::new(),
            dest_cert_dir: Vec::new(),
            root_ca: Vec::new(),
            client_cert: Vec::new(),
            insecure: false,
            src_insecure: false,
            dest_insecure: false,
            read_timeout: DEFAULT_READ_TIMEOUT_SECS,
            cred_flags: CredFlags::default(),
        }
    }
}

fn usage(m: String) -> anyhow::Error {
    anyhow::Error::new(ConvertError::Unsupported(m))
}

impl NetArgs {
    /// True when any flag that only matters for registries was given.
    pub fn any_set(&self) -> bool {
        self.plain
            || self.src_plain
            || self.dest_plain
            || self.insecure
            || self.src_insecure
            || self.dest_insecure
            || !self.cert_dir.is_empty()
            || !self.src_cert_dir.is_empty()
            || !self.dest_cert_dir.is_empty()
            || !self.root_ca.is_empty()
            || !self.client_cert.is_empty()
            || self.read_timeout != DEFAULT_READ_TIMEOUT_SECS
    }

    /// Refuses (exit 2) cert dirs, CA files and client certificate files that do not exist,
    /// before any work.
    pub fn validate(&self) -> Result<()> {
        for (flag, dirs) in [
            ("--cert-dir", &self.cert_dir),
            ("--src-cert-dir", &self.src_cert_dir),
            ("--dest-cert-dir", &self.dest_cert_dir),
        ] {
            for d in dirs {
                if !d.is_dir() {
                    return Err(usage(format!(
                        "{flag} {}: no such directory; give a directory holding *.crt CA \
                         files (and *.cert + *.key client pairs)",
                        d.display()
                    )));
                }
            }
        }
        for f in &self.root_ca {
            if !f.is_file() {
                return Err(usage(format!(
                    "--root-ca {}: no such file; give a PEM file of CA certificates",
                    f.display()
                )));
            }
        }
        for cc in &self.client_cert {
            let (c, k) = split_client_cert(cc)?;
            for f in [c, k] {
                if !f.is_file() {
                    return Err(usage(format!(
                        "--client-cert {cc}: no such file {}; give CERT:KEY, two PEM files",
                        f.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Client options for a registry on `side`: TLS from the shared and the side's flags,
    /// credentials from `creds` or, without them, looked up for `host` (and `repository`)
    /// in the container tools' auth files and credential helpers.
    pub fn options(
        &self,
        host: &str,
        repository: &str,
        creds: Option<CliCreds<'_>>,
        side: Side,
    ) -> Result<obd_registry::ClientOptions> {
        let (plain, insecure, side_dirs, pfx) = match side {
            Side::Source => (self.src_plain, self.src_insecure, &self.src_cert_dir, "src"),
            Side::Target => (
                self.dest_plain,
                self.dest_insecure,
                &self.dest_cert_dir,
                "dest",
            ),
        };
        let mut o = obd_registry::ClientOptions {
            plain_http: self.plain || plain,
            insecure_skip_verify: self.insecure || insecure,
            cert_dirs: self.cert_dir.iter().chain(side_dirs).cloned().collect(),
            root_cas: self.root_ca.clone(),
            client_cert: match self.client_cert.first() {
                Some(cc) => {
                    let (c, k) = split_client_cert(cc)?;
                    Some((c, k))
                }
                None => None,
            },
            read_timeout: (self.read_timeout > 0)
                .then(|| std::time::Duration::from_secs(self.read_timeout)),
            // Large blobs go up in PATCH chunks: each is one buffer handed to the socket,
            // where a streamed body moves in 8 KiB pieces (the 1.5 GB `usr` bench image
            // uploads about 13% faster).
            chunk_size: Some(UPLOAD_CHUNK),
            certs_d_roots: obd_registry::certs_d_roots_from_env(),
            hints: obd_registry::Hints {
                credentials: match side {
                    Side::Source => self.cred_flags.source.clone(),
                    Side::Target => self.cred_flags.target.clone(),
                },
                plain_http: format!("--plain (or --{pfx}-plain for this side only)"),
                trust: format!(
                    "--root-ca FILE or --cert-dir DIR (or --{pfx}-cert-dir DIR for this side only)"
                ),
            },
            ..Default::default()
        };
        match creds {
            Some(c) => {
                o.credentials = cli_credentials(c.value)?;
                o.credentials_source = Some(format!("the command line ({})", c.flag));
            }
            None => {
                let env = obd_registry::credentials::LookupEnv::from_process();
                let l = obd_registry::credentials::lookup(host, Some(repository), &env)
                    .map_err(obd_convert::registry_store::map_err)?;
                match &l.source {
                    Some(s) => tracing::debug!("credentials for {host}: from {s}"),
                    None => tracing::debug!(
                        "no credentials for {host}; looked in: {}",
                        l.tried.join("; ")
                    ),
                }
                o.credentials = l.credentials;
                o.credentials_source = l.source;
                o.credentials_searched = l.tried;
            }
        }
        Ok(o)
    }

    /// Opens `repo`: `oci:DIR` is an OCI image layout (created when `create`),
    /// `oci-archive:FILE` and `docker-archive:FILE` read-only tar files, anything else a
    /// registry repository without tag or digest, reached with the flags of `side`.
    pub fn open(
        &self,
        repo: &str,
        creds: Option<CliCreds<'_>>,
        side: Side,
        create: bool,
    ) -> Result<Arc<dyn Store>> {
        if let Some(dir) = repo.strip_prefix("oci:") {
            return Ok(Arc::new(OciLayout::open(dir, create)?));
        }
        for kind in [ArchiveKind::Oci, ArchiveKind::Docker] {
            if let Some(file) = repo.strip_prefix(&format!("{}:", kind.transport())) {
                return Ok(Arc::new(ArchiveStore::open(kind, file)?));
            }
        }
        let r = obd_registry::Reference::parse(repo)
            .map_err(|e| ConvertError::Unsupported(format!("repository {repo:?}: {e}")))?;
        if r.tag.is_some() || r.digest.is_some() {
            bail!(ConvertError::Unsupported(format!(
                "repository {repo:?} must not carry a tag or digest; use -i/-g"
            )));
        }
        let opts = self.options(&r.registry, &r.repository, creds, side)?;
        let client = obd_registry::Client::for_reference(&r, opts)
            .map_err(obd_convert::registry_store::map_err)?;
        Ok(Arc::new(obd_convert::registry_store::RegistryStore::new(
            client,
            r.repository,
        )))
    }
}

/// `CERT:KEY` of `--client-cert`.
fn split_client_cert(cc: &str) -> Result<(PathBuf, PathBuf)> {
    let (c, k) = cc
        .rsplit_once(':')
        .ok_or_else(|| usage(format!("--client-cert {cc:?} is not CERT:KEY")))?;
    Ok((PathBuf::from(c), PathBuf::from(k)))
}

/// `user[:password]` as upstream reads it: no `:` means an empty password; an empty value
/// or a leading `:` means anonymous.
fn cli_credentials(u: &str) -> Result<Option<obd_registry::Credentials>> {
    Ok(match u.find(':') {
        Some(i) if i > 0 => Some(obd_registry::Credentials::parse(u)?),
        None if !u.is_empty() => Some(obd_registry::Credentials::new(u, "")),
        _ => None,
    })
}

/// Exit code for an error of the conversion engine: [`crate::exit_code`], which every
/// binary uses.
pub fn convert_exit_code(e: &anyhow::Error) -> i32 {
    crate::exit_code(e)
}
