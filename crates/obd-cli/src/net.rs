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

/// Connection flags, spelled as upstream's convertor spells them (`--read-timeout` is ours).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// connections using plain HTTP
    #[arg(long)]
    pub plain: bool,
    /// In these directories, root CA should be named as *.crt and client cert should be named as *.cert, *.key
    #[arg(long = "cert-dir")]
    pub cert_dir: Vec<PathBuf>,
    /// root CA certificates
    #[arg(long = "root-ca")]
    pub root_ca: Vec<PathBuf>,
    /// client cert certificates, should form in ${cert-file}:${key-file}
    #[arg(long = "client-cert")]
    pub client_cert: Vec<String>,
    /// don't verify the server's certificate chain and host name
    #[arg(long)]
    pub insecure: bool,
    /// give up on a registry request after SECS seconds without data (retried like other network errors); a blob upload request may take 2*SECS plus 8 s per MiB; 0 waits forever
    #[arg(long = "read-timeout", value_name = "SECS", default_value_t = DEFAULT_READ_TIMEOUT_SECS)]
    pub read_timeout: u64,
}

impl Default for NetArgs {
    fn default() -> Self {
        NetArgs {
            plain: false,
            cert_dir: Vec::new(),
            root_ca: Vec::new(),
            client_cert: Vec::new(),
            insecure: false,
            read_timeout: DEFAULT_READ_TIMEOUT_SECS,
        }
    }
}

impl NetArgs {
    /// True when any flag that only matters for registries was given.
    pub fn any_set(&self) -> bool {
        self.plain
            || self.insecure
            || !self.cert_dir.is_empty()
            || !self.root_ca.is_empty()
            || !self.client_cert.is_empty()
            || self.read_timeout != DEFAULT_READ_TIMEOUT_SECS
    }

    /// Client options for a registry, with `username` as `user[:password]`; without it the
    /// credentials come from `~/.docker/config.json`.
    pub fn options(&self, username: Option<&str>) -> Result<obd_registry::ClientOptions> {
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
        let client_cert = match self.client_cert.first() {
            Some(cc) => {
                let (c, k) = cc.rsplit_once(':').ok_or_else(|| {
                    ConvertError::Unsupported(format!("--client-cert {cc:?} is not CERT:KEY"))
                })?;
                Some((PathBuf::from(c), PathBuf::from(k)))
            }
            None => None,
        };
        Ok(obd_registry::ClientOptions {
            plain_http: self.plain,
            insecure_skip_verify: self.insecure,
            cert_dirs: self.cert_dir.clone(),
            root_cas: self.root_ca.clone(),
            client_cert,
            use_docker_config: username.is_none(),
            credentials,
            read_timeout: (self.read_timeout > 0)
                .then(|| std::time::Duration::from_secs(self.read_timeout)),
            // Large blobs go up in PATCH chunks: each is one buffer handed to the socket,
            // where a streamed body moves in 8 KiB pieces (the 1.5 GB `usr` bench image
            // uploads about 13% faster).
            chunk_size: Some(UPLOAD_CHUNK),
            ..Default::default()
        })
    }

    /// Opens `repo`: `oci:DIR` is an OCI image layout (created when `create`),
    /// `oci-archive:FILE` and `docker-archive:FILE` read-only tar files, anything else a
    /// registry repository without tag or digest.
    pub fn open(&self, repo: &str, username: Option<&str>, create: bool) -> Result<Arc<dyn Store>> {
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
        let client = obd_registry::Client::for_reference(&r, self.options(username)?)
            .map_err(obd_convert::registry_store::map_err)?;
        Ok(Arc::new(obd_convert::registry_store::RegistryStore::new(
            client,
            r.repository,
        )))
    }
}

/// Exit code for an error of the conversion engine: [`crate::exit_code`], which every
/// binary uses.
pub fn convert_exit_code(e: &anyhow::Error) -> i32 {
    crate::exit_code(e)
}
