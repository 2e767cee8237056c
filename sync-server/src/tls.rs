//! The server's TLS identity: a certificate and key from files, or, on embedded defaults, a
//! private CA and a server certificate made on first start and kept in the data directory.
//! Clients trust the CA file (`aq ... --ca DATA/tls/ca.pem`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aq_store::atomic_write::{self, Existing, Mode};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("failed to read PEM from {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("failed to make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the generated identity lives inside a data directory.
pub struct GeneratedPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl GeneratedPaths {
    pub fn in_dir(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        GeneratedPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// Makes (once) a private CA and a server certificate for `names` (DNS names or IP
/// addresses), and writes them under `DATA/tls/`. Existing files are kept as they are.
pub fn ensure_generated(data_dir: &Path, names: &[String]) -> Result<GeneratedPaths, TlsError> {
    let paths = GeneratedPaths::in_dir(data_dir);
    if paths.ca.exists() && paths.cert.exists() && paths.key.exists() {
        return Ok(paths);
    }
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    };
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aq-sync private CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aq-sync");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    write_private(&paths.key, key.serialize_pem().as_bytes()).map_err(io("write", &paths.key))?;
    write_public(
        &paths.cert,
        format!("{}{}", cert.pem(), ca_cert.pem()).as_bytes(),
    )
    .map_err(io("write", &paths.cert))?;
    write_public(&paths.ca, ca_cert.pem().as_bytes()).map_err(io("write", &paths.ca))?;
    Ok(paths)
}

/// Writes a file only its owner can read (0600 before any byte is written), atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write::write(path, bytes, Mode::Private, Existing::Replace)
}

fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write::write(path, bytes, Mode::Public, Existing::Replace)
}

/// A rustls server configuration from PEM files (a chain, leaf first; and its key).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem {
            path,
            message: e.to_string(),
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
