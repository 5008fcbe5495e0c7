//! TLS for a listener: the certificate and key it serves (read from PEM files, and
//! replaced for new connections by a reload), and the handshake each connection makes
//! in its own task before any HTTP.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::drain::Drain;

/// The certificate and key a TLS listener serves: a cheap handle (clones share it).
///
/// [`reload`](Self::reload) swaps them for connections accepted from then on; a
/// connection keeps what its handshake used.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for ServerTls {
    /// Nothing of the configuration: it holds the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section.
    #[error(
        "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is not the one of the (first) certificate.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        certificate.display()
    )]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate or the key cannot be used (a key type the crypto provider does
    /// not support, a certificate that is not X.509 DER inside its PEM).
    #[error(
        "cannot serve the certificate in {} with the key in {}: {source}",
        certificate.display(),
        key.display()
    )]
    Unusable {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

impl ServerTls {
    /// Serves the certificate chain of `certificate` (PEM, the server's certificate
    /// first, then any intermediates) with the private key of `key` (PEM: PKCS#8,
    /// PKCS#1 or SEC1; the same file may hold both), checked to belong together.
    pub fn from_pem_files(
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let config = server_config(certificate.as_ref(), key.as_ref())?;
        Ok(Self {
            config: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads `certificate` and `key` again and serves them to the connections accepted
    /// from now on; on an error nothing changes (the pair in force stays).
    pub fn reload(
        &self,
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        let config = server_config(certificate.as_ref(), key.as_ref())?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The configuration in force, for one connection's handshake.
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The server configuration of a certificate file and a key file.
fn server_config(certificate: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_pem(certificate, |text| {
        CertificateDer::pem_slice_iter(text).collect::<Result<Vec<_>, _>>()
    })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: certificate.to_owned(),
        });
    }
    let private_key = read_pem(key, |text| {
        // Certificates beside the key are skipped: one combined file may serve as both.
        PrivateKeyDer::pem_slice_iter(text).next().transpose()
    })?
    .ok_or_else(|| TlsError::NoPrivateKey {
        path: key.to_owned(),
    })?;
    // ring, like the dispatcher's client side: no C toolchain beyond cc, and no
    // process-wide default provider to install.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
            }
        }
        source => TlsError::Unusable {
            certificate: certificate.to_owned(),
            key: key.to_owned(),
            source,
        },
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(unusable)?;
    // The server speaks HTTP/1.1 only: a client offering h2 alone is refused in the
    // handshake rather than failing on its first frame.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads `path` and parses its PEM with `parse`, naming the file in any error.
fn read_pem<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls_pki_types::pem::Error>,
) -> Result<T, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| TlsError::Pem {
        path: path.to_owned(),
        source,
    })
}

/// Runs the TLS handshake of one accepted connection under `tls`'s configuration in
/// force, until `deadline` (the connection's head deadline: the handshake is part of
/// the time a client has to send its first request) or the drain, whichever comes
/// first. `None` when the connection is to be closed; a failed or late handshake is a
/// debug log (a port scanner, a client speaking plain HTTP, an untrusting client).
pub(crate) async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &ServerTls,
    deadline: Instant,
    draining: &Drain,
) -> Option<TlsStream<TcpStream>> {
    // Made before the flag is read, so a drain starting in between still wakes it.
    let drained = draining.wake_up();
    if draining.has_started() {
        return None;
    }
    let accept = TlsAcceptor::from(tls.current()).accept(stream);
    tokio::select! {
        () = drained => None,
        done = tokio::time::timeout_at(deadline, accept) => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed; connection closed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not finished within the header read timeout; connection closed");
                None
            }
        },
    }
}
