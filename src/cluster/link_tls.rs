//! TLS on the node links (`[cluster.tls]`): the accepting side is a listener's
//! `TlsTerminator`, the dialling side verifies the peer against the same CA and (mutual
//! TLS) presents the same certificate. Both are re-read from their files on SIGHUP
//! (`LinkCertificates`, like the listeners' certificates): connections made from then on
//! use the new files, established links keep theirs until they are redialled.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::{ClientAuth, TlsConfig};
use crate::listener::TlsTerminator;

use super::link::LinkStream;

pub struct LinkTls {
    config: TlsConfig,
    acceptor: TlsTerminator,
    connector: RwLock<tokio_rustls::TlsConnector>,
}

impl LinkTls {
    pub fn new(config: &TlsConfig) -> anyhow::Result<LinkTls> {
        Ok(LinkTls {
            acceptor: TlsTerminator::new(config)?,
            connector: RwLock::new(connector(config)?),
            config: config.clone(),
        })
    }

    /// Reads certificate, key and CA again, for both directions. On error both keep
    /// their previous configuration.
    pub fn reload(&self) -> anyhow::Result<()> {
        let connector = connector(&self.config)?;
        self.acceptor.reload()?;
        *self
            .connector
            .write()
            .unwrap_or_else(PoisonError::into_inner) = connector;
        Ok(())
    }

    /// The server side of a handshake with a dialling peer.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Box<dyn LinkStream>> {
        Ok(Box::new(self.acceptor.accept(tcp).await?.0))
    }

    /// The client side of a handshake with the peer at `addr` (`HOST:PORT`), whose
    /// certificate must be valid for `HOST`.
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<Box<dyn LinkStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|error| std::io::Error::other(format!("{host}: {error}")))?;
        let connector = self
            .connector
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(Box::new(connector.connect(name, tcp).await?))
    }
}

fn connector(config: &TlsConfig) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let ca = config
        .ca
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("cluster.tls.ca is required"))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?
    {
        let certificate =
            certificate.map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?;
        roots
            .add(certificate)
            .map_err(|error| anyhow::anyhow!("{}: {error}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_root_certificates(roots);
    let client = if config.client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let chain = CertificateDer::pem_file_iter(&config.cert)
            .map_err(|error| anyhow::anyhow!("{}: {error}", config.cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("{}: {error}", config.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&config.key)
            .map_err(|error| anyhow::anyhow!("{}: {error}", config.key.display()))?;
        builder.with_client_auth_cert(chain, key)?
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client)))
}

/// The link's certificates as a part of the configuration reload (SIGHUP): re-read from
/// the same paths; a failure keeps the previous ones and is reported by the reload.
pub struct LinkCertificates(pub Arc<super::link::Links>);

impl crate::reload::Reloadable for LinkCertificates {
    fn name(&self) -> &str {
        "cluster link TLS certificates"
    }

    fn keys(&self) -> &[&str] {
        &[]
    }

    fn reload(&self, _: &crate::config::Config) -> anyhow::Result<()> {
        match self.0.tls() {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }
}
