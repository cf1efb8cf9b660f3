//! Shared helpers: a broker on 127.0.0.1:0, a raw MQTT client over any stream, and a
//! development PKI written to a temporary directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetmq::certs::{validity, Authority};
use fleetmq::config::{ClientAuth, Config, ListenerConfig, ListenerKind, TlsConfig};
use fleetmq::protocol::{
    decode, encode, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS,
};
use fleetmq::server::{self, ServerHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn loopback(kind: ListenerKind) -> ListenerConfig {
    ListenerConfig::new(kind, "127.0.0.1:0".parse().unwrap())
}

/// Starts a broker with `config`, keeping its state in memory: these tests are about
/// access control, and the durable store has its own suites.
pub async fn start(mut config: Config) -> ServerHandle {
    config.storage.persistence = false;
    server::start(config).await.expect("broker starts")
}

/// A broker with one plain loopback listener (anonymous allowed) plus `extra`.
pub fn config_with(extra: Vec<ListenerConfig>) -> Config {
    let mut listeners = vec![loopback(ListenerKind::Tcp)];
    listeners.extend(extra);
    Config {
        listeners,
        ..Config::default()
    }
}

pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.into(),
        will: None,
        username: username.map(Into::into),
        password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        properties: ConnectProperties::default(),
    }
}

/// An MQTT client that sends and reads packets as they are, over any stream.
pub struct Raw<S> {
    pub stream: S,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw<TcpStream> {
    pub async fn tcp(addr: SocketAddr, version: ProtocolVersion) -> Raw<TcpStream> {
        Raw::new(TcpStream::connect(addr).await.unwrap(), version)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S, version: ProtocolVersion) -> Raw<S> {
        Raw {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out);
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A broker that already closed may reset the connection; reads then say so.
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next packet; `None` once the broker closed the connection.
    pub async fn next(&mut self) -> Option<Packet> {
        within("a packet from the broker", async {
            loop {
                if let Ok(Some(packet)) = decode(&mut self.buf, Some(self.version), u32::MAX) {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Sends CONNECT and returns the CONNACK reason code (`None`: closed without one).
    pub async fn connect(&mut self, connect: Connect) -> Option<u8> {
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.next().await? {
            Packet::ConnAck(connack) => Some(connack.reason_code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Reads until the broker closes; returns the DISCONNECT reason it sent, if any.
    pub async fn closed_with(&mut self) -> Option<u8> {
        let mut reason = None;
        while let Some(packet) = self.next().await {
            if let Packet::Disconnect(disconnect) = packet {
                reason = Some(disconnect.reason_code);
            }
        }
        reason
    }
}

/// A client that connected with `id` on `addr` (anonymous), for checking the broker
/// still serves.
pub async fn connected(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Raw<TcpStream> {
    let mut client = Raw::tcp(addr, version).await;
    assert_eq!(
        client
            .connect(connect_packet(version, id, None, None))
            .await,
        Some(0)
    );
    client
}

/// Proves the broker still serves: a new client connects and gets PINGRESP.
pub async fn still_serving(addr: SocketAddr) {
    let mut witness = connected(addr, ProtocolVersion::V5, "witness").await;
    witness.send(Packet::PingReq).await;
    assert_eq!(witness.next().await, Some(Packet::PingResp));
}

pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Default::default(),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
    })
}

/// A development PKI in a temporary directory: a CA, a server certificate for
/// localhost/127.0.0.1, client certificates (CN "device-1" in `client`, "device-2" in
/// `client2`), one from another CA and an expired one.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA, to sign certificate revocation lists.
    pub ca: Authority,
    /// Serial numbers of `client` and `client2`.
    pub serials: [rcgen::SerialNumber; 2],
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("test CA", 30).unwrap();
        let other = Authority::new("other CA", 30).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.cert_pem());
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .unwrap();
        write("server.pem", &server.cert);
        write("server.key", &server.key);
        let (not_before, not_after) = validity(30);
        let client = ca.issue_client("device-1", not_before, not_after).unwrap();
        write("client.pem", &client.cert);
        write("client.key", &client.key);
        let client2 = ca.issue_client("device-2", not_before, not_after).unwrap();
        write("client2.pem", &client2.cert);
        write("client2.key", &client2.key);
        let stranger = other
            .issue_client("device-1", not_before, not_after)
            .unwrap();
        write("stranger.pem", &stranger.cert);
        write("stranger.key", &stranger.key);
        let past = time::OffsetDateTime::now_utc() - time::Duration::days(10);
        let expired = ca
            .issue_client("device-1", past, past + time::Duration::days(1))
            .unwrap();
        write("expired.pem", &expired.cert);
        write("expired.key", &expired.key);
        Pki {
            dir,
            ca,
            serials: [client.serial, client2.serial],
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn listener(&self, kind: ListenerKind, client_auth: ClientAuth) -> ListenerConfig {
        let mut listener = loopback(kind);
        listener.tls = Some(TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: (client_auth != ClientAuth::None).then(|| self.path("ca.pem")),
            crl: None,
            client_auth,
            identity: None,
            cipher_preference: Default::default(),
        });
        listener
    }

    /// A rustls client configuration trusting the test CA, with the client certificate
    /// pair `name` (`client`, `stranger`, `expired`) or none.
    pub fn client_config(&self, name: Option<&str>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match name {
            Some(name) => {
                let certs = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// A TLS connection to `addr` as `localhost`; `Err` if the handshake fails.
    pub async fn tls_connect(
        &self,
        addr: SocketAddr,
        client: Option<&str>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.client_config(client));
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }
}
