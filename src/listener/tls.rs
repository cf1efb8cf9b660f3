//! TLS for `tls` and `wss` listeners: the rustls server configuration (ring provider,
//! TLS 1.2 and 1.3, the cipher suites and their order from `tls_suites`),
//! client-certificate verification, and its reload.
//!
//! The whole `ServerConfig` is rebuilt on reload and swapped behind a lock; each
//! handshake takes the configuration current at accept time, so a new certificate, CA
//! or certificate revocation list applies to new connections while established ones keep
//! theirs.
//!
//! Clients resume sessions with stateless tickets (TLS 1.3 and 1.2, rustls's ring
//! `Ticketer`, keys rotated every 6 hours): a resumed handshake skips the certificate
//! exchange and its signatures, so a reconnect storm costs a fraction of full
//! handshakes, and the broker keeps no per-session state for it. Each configuration,
//! rebuilt on reload, has its own ticket keys, so a reload (new CA or CRL) also ends
//! resumption of sessions established under the old files.
//!
//! A CRL (`crl`) is checked for the client's own certificate, as Mosquitto's
//! `crlfile` is: a certificate it lists is refused, and so is one whose issuer it does
//! not cover (its revocation status is unknown). An expired CRL (past its next update)
//! is still used rather than locking every client out: replace it and reload.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use super::tls_stream::TlsStream;

use crate::config::{CertIdentity, ClientAuth, TlsConfig};

/// Why a TLS configuration could not be built. Names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub(crate) fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The TLS side of one listener, reloadable.
pub struct TlsTerminator {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsTerminator {
    pub fn new(config: &TlsConfig) -> Result<TlsTerminator, TlsError> {
        Ok(TlsTerminator {
            current: RwLock::new(build(config)?),
            config: config.clone(),
        })
    }

    /// Reads certificate, key and CA again. On error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let rebuilt = build(&self.config)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = rebuilt;
        Ok(())
    }

    /// Runs the handshake; returns the stream and the client certificate's identity when
    /// the listener uses one.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(TlsStream, Option<String>)> {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let stream = TlsStream::accept(config, tcp).await?;
        let identity = self.config.identity.and_then(|kind| {
            let certificate = stream.peer_certificates()?.first()?;
            super::identity::extract(certificate.as_ref(), kind == CertIdentity::San)
        });
        Ok((stream, identity))
    }
}

fn build(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let (provider, ignore_client_order) = super::tls_suites::provider_arc(config.cipher_preference);
    let certificates = read_certificates(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|error| file_error(&config.key, format!("no usable private key: {error}")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match (config.client_auth, &config.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| file_error(ca, format!("invalid CA certificate: {error}")))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crl) = &config.crl {
                verifier = verifier
                    .with_crls(read_crls(crl)?)
                    .only_check_end_entity_revocation();
            }
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|error| match (&config.crl, error) {
                    (Some(crl), rustls::server::VerifierBuilderError::InvalidCrl(error)) => {
                        file_error(
                            crl,
                            format!("invalid certificate revocation list: {error:?}"),
                        )
                    }
                    (_, error) => TlsError::Verifier(error),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        // Config validation requires a CA for client authentication.
        (_, None) => return Err(file_error(Path::new("ca"), "client_auth needs a CA file")),
    };
    let mut server = builder.with_single_cert(certificates, key)?;
    server.ticketer = rustls::crypto::ring::Ticketer::new()?;
    server.ignore_client_order = ignore_client_order;
    Ok(Arc::new(server))
}

/// Reads `path` as a PEM file of certificate revocation lists.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if crls.is_empty() {
        return Err(file_error(path, "no PEM certificate revocation list found"));
    }
    Ok(crls)
}

/// Reads every TLS file the listeners of `config` name (certificate, key, CA,
/// certificate revocation list) and builds their TLS configurations, as the broker does
/// at start and on SIGHUP, without binding anything: for `fleetmq check-config`. Each
/// problem names the listener and the file.
pub fn check_files(config: &crate::config::Config) -> Vec<String> {
    config
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(index, listener)| {
            let tls = listener.tls.as_ref()?;
            build(tls)
                .err()
                .map(|error| format!("listeners[{index}].tls: {error}"))
        })
        .collect()
}

pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate found"));
    }
    Ok(certificates)
}
