//! Opening the two ends of a bridge: the connection to the remote broker (TCP or TLS,
//! trying the configured addresses in order) and the in-process connection to the
//! local broker (a pipe served by `crate::connection` like any client, without a
//! socket, a listener or a connection limit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::link::{LinkError, LinkStream};
use crate::auth::Security;
use crate::broker::Broker;
use crate::config::{split_host_port, AuthConfig, BridgeTlsConfig, ListenerKind};
use crate::listener::tls::{file_error, read_certificates};
use crate::listener::{Accepted, ClientStream, ConnectionSlots, ListenerContext, TlsError};

/// Bytes buffered each way in the pipe to the local broker.
const LOCAL_PIPE_BYTES: usize = 256 * 1024;

/// The rustls client configuration of a bridge's `[bridges.tls]`.
pub fn client_tls(config: &BridgeTlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(&config.ca)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(&config.ca, format!("invalid CA certificate: {error}")))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let config = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let certificates = read_certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| file_error(key, format!("no usable private key: {error}")))?;
            builder.with_client_auth_cert(certificates, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Connects to `address` (`HOST:PORT`), with TLS when `tls` is given.
pub async fn dial_remote(
    address: &str,
    tls: Option<(&Arc<ClientConfig>, Option<&str>)>,
    deadline: Duration,
) -> Result<LinkStream, LinkError> {
    let (host, _) = split_host_port(address)
        .ok_or_else(|| LinkError::Setup(format!("'{address}' is not HOST:PORT")))?;
    let host = host.to_string();
    let open = async {
        let tcp = TcpStream::connect(address).await?;
        let _ = tcp.set_nodelay(true);
        let Some((config, server_name)) = tls else {
            return Ok(LinkStream::Tcp(tcp));
        };
        let name = server_name.unwrap_or(&host).to_string();
        let name = ServerName::try_from(name.clone())
            .map_err(|_| LinkError::Setup(format!("'{name}' is not a valid TLS server name")))?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = connector.connect(name, tcp).await?;
        Ok(LinkStream::Tls(Box::new(stream)))
    };
    tokio::time::timeout(deadline, open)
        .await
        .map_err(|_| LinkError::Timeout(deadline))?
}

/// Opens an in-process connection to the local broker: the broker serves the other end
/// of the pipe in its own task (returned, so the bridge can wait for it to finish
/// recording the disconnect before the store is flushed at shutdown).
pub fn dial_local(broker: &Arc<Broker>) -> (LinkStream, JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(LOCAL_PIPE_BYTES);
    let accepted = Accepted {
        stream: ClientStream::Local(Box::new(theirs)),
        peer: SocketAddr::from(([127, 0, 0, 1], 0)),
        certificate_identity: None,
        slots: ConnectionSlots::internal(),
    };
    // No password file and no ACL: the bridge forwards what its rules say, whatever the
    // clients' permissions are.
    let security =
        Security::load(&AuthConfig::default()).unwrap_or_else(|_| unreachable!("no files to load"));
    let context = Arc::new(ListenerContext {
        kind: ListenerKind::Tcp,
        allow_anonymous: true,
        anonymous_only_from_loopback: false,
        security: Arc::new(security),
        internal: true,
        parking: None,
    });
    let broker = broker.clone();
    let task = tokio::spawn(async move {
        if let Some(connected) = crate::connection::open(accepted, broker, context).await {
            connected.serve().await;
        }
    });
    (LinkStream::Local(ours), task)
}
