//! rustls configuration: system roots + extra CAs, cert dirs, client certificates,
//! optional verification bypass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read key file {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|e| Error::Config(format!("no usable private key in {}: {e}", path.display())))
}

/// What a cert dir contributes: CA files and client (cert, key) pairs.
#[derive(Debug, Default)]
pub(crate) struct CertDirContents {
    pub cas: Vec<PathBuf>,
    pub pairs: Vec<(PathBuf, PathBuf)>,
}

/// Scan `dir` and `dir/<host>` (containerd `certs.d` style): `*.crt` are CAs, `*.cert` are
/// client certificates whose key is `<stem>.key`. Missing directories are ignored.
pub(crate) fn scan_cert_dir(dir: &Path, host: &str) -> Result<CertDirContents> {
    scan_dirs(&[dir.to_path_buf(), dir.join(host)])
}

/// Scan the certs.d roots (`/etc/containers/certs.d`, `/etc/docker/certs.d`): only
/// `<root>/<host[:port]>/` counts, as for docker and the containers tools.
pub(crate) fn scan_certs_d(roots: &[PathBuf], host: &str) -> Result<CertDirContents> {
    let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(host)).collect();
    scan_dirs(&dirs)
}

fn scan_dirs(dirs: &[PathBuf]) -> Result<CertDirContents> {
    let mut out = CertDirContents::default();
    for d in dirs {
        let rd = match std::fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read cert directory {}: {e}",
                    d.display()
                )))
            }
        };
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            if !p.is_file() {
                continue;
            }
            match p.extension().and_then(|e| e.to_str()) {
                Some("crt") => out.cas.push(p),
                Some("cert") => {
                    let key = p.with_extension("key");
                    if !key.exists() {
                        return Err(Error::Config(format!(
                            "client certificate {} has no matching key {}",
                            p.display(),
                            key.display()
                        )));
                    }
                    out.pairs.push((p, key));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Inputs for [`build_config`].
pub(crate) struct TlsInputs<'a> {
    pub host: &'a str,
    pub insecure_skip_verify: bool,
    pub cert_dirs: &'a [PathBuf],
    pub certs_d_roots: &'a [PathBuf],
    pub root_cas: &'a [PathBuf],
    pub client_cert: Option<&'a (PathBuf, PathBuf)>,
}

pub(crate) fn build_config(inp: &TlsInputs<'_>) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    let mut ca_files: Vec<PathBuf> = inp.root_cas.to_vec();
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Some(p) = inp.client_cert {
        pairs.push(p.clone());
    }
    for d in inp.cert_dirs {
        let c = scan_cert_dir(d, inp.host)?;
        ca_files.extend(c.cas);
        pairs.extend(c.pairs);
    }
    let c = scan_certs_d(inp.certs_d_roots, inp.host)?;
    ca_files.extend(c.cas);
    pairs.extend(c.pairs);
    for f in &ca_files {
        for c in read_certs(f)? {
            roots.add(c).map_err(|e| {
                Error::Config(format!("unusable CA certificate in {}: {e}", f.display()))
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    let builder = if inp.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut cfg = match pairs.first() {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = read_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Config(format!("bad client certificate {}: {e}", cert.display()))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts any server certificate (still checks handshake signatures so the connection is
/// well-formed). Only used with `insecure_skip_verify`.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
