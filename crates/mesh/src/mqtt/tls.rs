//! TLS between clients and the broker.
//!
//! [`RunCertificates`] makes a certificate authority and a server
//! certificate for one run (rcgen, ECDSA P-256), writes them as PEM files
//! that the embedded broker and mosquitto load, and gives clients a
//! [`TlsClient`] that trusts that authority only. An external broker
//! with its own certificate is reached with [`TlsClient::from_ca_file`].
//!
//! The client side is rustls' sans-I/O `ClientConnection` inside
//! [`super::Connection`]'s own readiness-driven read and write path, rather
//! than `tokio-rustls`: a node is one socket polled without blocking, and
//! partitions and latency act on its bytes there (see [`super::link`]).
//!
//! The keys come from the operating system's random source, not from the
//! run's seed: the seed is printed in every report, and a private key
//! derived from it would be public. Nothing the run measures depends on
//! the key bits, so the run stays as reproducible as before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::MeshError;

/// The name the run's server certificate is for (and clients check).
pub const RUN_SERVER_NAME: &str = "localhost";

/// How a client opens TLS to the broker: whom it trusts and the name it
/// expects on the broker's certificate. Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsClient {
    /// Trusts the certificate authorities in `pem` (one or more PEM
    /// certificates) and expects `server_name` on the broker's certificate.
    pub fn from_ca_pem(pem: &[u8], server_name: &str) -> Result<Self, MeshError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert
                .map_err(|e| MeshError::config("tls-ca", format!("not a PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| {
                MeshError::config("tls-ca", format!("not a usable CA certificate: {e}"))
            })?;
        }
        if roots.is_empty() {
            return Err(MeshError::config(
                "tls-ca",
                "no certificate found; expected one or more PEM 'BEGIN CERTIFICATE' blocks",
            ));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| MeshError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            MeshError::config(
                "broker",
                format!("'{server_name}' is not a host name TLS can check a certificate against"),
            )
        })?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    /// [`TlsClient::from_ca_pem`] with the PEM read from `path`.
    pub fn from_ca_file(path: &Path, server_name: &str) -> Result<Self, MeshError> {
        let pem = std::fs::read(path)
            .map_err(|e| MeshError::config("tls-ca", format!("'{}': {e}", path.display())))?;
        Self::from_ca_pem(&pem, server_name).map_err(|e| match e {
            MeshError::Config { field, reason } => MeshError::Config {
                field,
                reason: format!("'{}': {reason}", path.display()),
            },
            other => other,
        })
    }

    /// A new client session, before its handshake.
    pub(crate) fn session(&self) -> Result<ClientConnection, MeshError> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| MeshError::Tls(e.to_string()))
    }
}

/// A certificate authority and a broker certificate made for one run, as
/// PEM files in a private directory that is removed with this value.
#[derive(Debug)]
pub struct RunCertificates {
    dir: PathBuf,
    ca_pem: String,
}

impl RunCertificates {
    /// Makes the authority and a certificate for `localhost` and
    /// 127.0.0.1, under a new directory in the system's temporary one.
    pub fn generate() -> Result<Self, MeshError> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vitalmesh-tls-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        Self::generate_in(dir)
    }

    /// [`RunCertificates::generate`] into `dir` (created; removed on drop).
    pub fn generate_in(dir: PathBuf) -> Result<Self, MeshError> {
        let tls = |e: rcgen::Error| MeshError::Tls(format!("making the run's certificates: {e}"));
        let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vitalmesh run CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).map_err(tls)?;

        let server_key = rcgen::KeyPair::generate().map_err(tls)?;
        let mut server_params =
            rcgen::CertificateParams::new(vec![RUN_SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
                .map_err(tls)?;
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vitalmesh broker");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .map_err(tls)?;

        create_private_dir(&dir)?;
        let this = Self {
            dir,
            ca_pem: ca.pem(),
        };
        write_file(&this.ca_path(), this.ca_pem.as_bytes())?;
        write_file(&this.cert_path(), server.pem().as_bytes())?;
        write_file(&this.key_path(), server_key.serialize_pem().as_bytes())?;
        Ok(this)
    }

    /// The authority's certificate (PEM): what clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The broker's certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("broker.pem")
    }

    /// The broker's private key (PEM, readable by this user only).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("broker.key")
    }

    /// A client that trusts this run's authority.
    pub fn client(&self) -> Result<TlsClient, MeshError> {
        TlsClient::from_ca_pem(self.ca_pem.as_bytes(), RUN_SERVER_NAME)
    }
}

impl Drop for RunCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn create_private_dir(dir: &Path) -> Result<(), MeshError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|e| MeshError::Tls(format!("'{}': {e}", dir.display())))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), MeshError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| MeshError::Tls(format!("'{}': {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_written_privately_and_removed_with_the_value() {
        use std::os::unix::fs::PermissionsExt;
        let certs = RunCertificates::generate().unwrap();
        let dir = certs.dir.clone();
        for path in [certs.ca_path(), certs.cert_path(), certs.key_path()] {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("-----BEGIN "),
                "{}: {text}",
                path.display()
            );
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
        }
        certs.client().unwrap();
        drop(certs);
        assert!(!dir.exists(), "{} outlived the run", dir.display());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("vitalmesh-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = TlsClient::from_ca_file(&path, "localhost")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("'{}'", path.display())), "{err}");
        assert!(err.contains("no certificate found"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
