//! TLS for `https://` function endpoints: which roots are trusted, and the client
//! configuration built from them.
//!
//! Roots are the platform's (rustls-native-certs: the distribution's store, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus any given in [`PoolConfig`]. The platform's
//! store is what operators already manage (a cluster CA installed into a container
//! image, a corporate CA), which an embedded list such as webpki-roots would ignore;
//! for a store that has no usable roots at all, the extra roots are the way in.
//!
//! [`PoolConfig`]: crate::PoolConfig

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a file of PEM certificates cannot serve as trust roots.
#[derive(Debug, thiserror::Error)]
pub enum CertificateFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A section is not an X.509 certificate usable as a trust anchor.
    #[error("certificate {index} of {} cannot be a trust root: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
}

/// Reads the PEM certificates of `path` (other sections, such as keys, are skipped),
/// checking each can be a trust root, for
/// [`PoolConfig::extra_root_certificates`](crate::PoolConfig::extra_root_certificates).
///
/// Checked here rather than at the first `https` dispatch so a bad file stops the
/// control plane at start instead of failing every attempt later.
pub fn read_pem_certificates(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, CertificateFileError> {
    let path = path.as_ref();
    let text = std::fs::read(path).map_err(|source| CertificateFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertificateFileError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(CertificateFileError::Empty {
            path: path.to_owned(),
        });
    }
    let mut check = RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        check
            .add(certificate.clone())
            .map_err(|source| CertificateFileError::Invalid {
                path: path.to_owned(),
                index: index + 1,
                source,
            })?;
    }
    Ok(certificates)
}

/// Why no TLS client configuration could be built.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// An extra root certificate given in the configuration is not usable.
    #[error("extra root certificate {index} cannot be a trust root: {source}")]
    BadRoot { index: usize, source: rustls::Error },
    /// The crypto provider refused the protocol versions.
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
}

/// The TLS client configuration, built at the first `https` connection: an
/// HTTP-only control plane never reads the platform's certificate store.
#[derive(Debug)]
pub(crate) struct Tls {
    extra_roots: Vec<CertificateDer<'static>>,
    config: OnceLock<Result<Arc<ClientConfig>, TlsSetupError>>,
}

impl Tls {
    pub(crate) fn new(extra_roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            extra_roots,
            config: OnceLock::new(),
        }
    }

    /// The client configuration; the first call loads the roots (a few milliseconds
    /// of file reads, once per dispatcher).
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        self.config
            .get_or_init(|| client_config(&self.extra_roots))
            .clone()
    }
}

fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        // Not fatal: the other platform roots and the extra ones still serve.
        tracing::warn!(%error, "cannot load platform root certificates for https endpoints");
    }
    let (platform, unparsable) = roots.add_parsable_certificates(native.certs);
    for (index, root) in extra_roots.iter().enumerate() {
        roots
            .add(root.clone())
            .map_err(|source| TlsSetupError::BadRoot {
                index: index + 1,
                source,
            })?;
    }
    tracing::info!(
        platform,
        unparsable,
        extra = extra_roots.len(),
        "trust roots for https function endpoints loaded"
    );
    // ring, not aws-lc-rs: no C toolchain beyond cc, and no process-wide default
    // provider to install (and race with) either.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Dispatch speaks HTTP/1.1 only; saying so keeps a server from choosing h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
