//! The TLS 1.3 cipher suite a listener picks (`cipher_preference`) and its record
//! ciphers (compact ChaCha20-Poly1305, AES-GCM keys expanded on use) with real clients:
//! rustls with either suite first, OpenSSL's `s_client` and the real `mosquitto_pub` and
//! `mosquitto_sub` over TLS 1.3, with messages spanning several records both ways.

use std::sync::Arc;

use fleetmq::config::{CipherPreference, ClientAuth, ListenerConfig, ListenerKind};
use fleetmq::protocol::{Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter};
use rustls::CipherSuite;
use tokio::net::TcpStream;

use crate::common::*;

type TlsRaw = Raw<tokio_rustls::client::TlsStream<TcpStream>>;

/// A payload of several TLS records (16 KiB each at most).
fn large_payload() -> String {
    (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

fn listener(pki: &Pki, preference: CipherPreference) -> ListenerConfig {
    let mut listener = pki.listener(ListenerKind::Tls, ClientAuth::None);
    if let Some(tls) = listener.tls.as_mut() {
        tls.cipher_preference = preference;
    }
    listener
}

/// A rustls client offering TLS 1.3's suites with ChaCha20-Poly1305 first.
fn chacha20_first_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn tls_client(
    client: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    id: &str,
) -> (TlsRaw, CipherSuite) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let suite = stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .expect("handshake done")
        .suite();
    let mut client = Raw::new(stream, ProtocolVersion::V3_1_1);
    assert_eq!(
        client
            .connect(connect_packet(ProtocolVersion::V3_1_1, id, None, None))
            .await,
        Some(0)
    );
    (client, suite)
}

/// A subscriber and a publisher over TLS on `addr`: a large message goes each way
/// (publisher to broker, broker to subscriber). Returns the suite both negotiated.
async fn round_trip(
    client: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    prefix: &str,
) -> CipherSuite {
    let (mut subscriber, suite) = tls_client(client.clone(), addr, &format!("{prefix}-sub")).await;
    subscriber
        .send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: format!("{prefix}/#").as_str().into(),
                options: Default::default(),
            }],
            subscription_identifier: None,
            user_properties: Vec::new(),
        }))
        .await;
    assert!(matches!(subscriber.next().await, Some(Packet::SubAck(_))));
    let (mut publisher, publisher_suite) = tls_client(client, addr, &format!("{prefix}-pub")).await;
    assert_eq!(publisher_suite, suite);
    let payload = large_payload();
    publisher
        .send(publish(
            &format!("{prefix}/big"),
            QoS::AtLeastOnce,
            1,
            &payload,
        ))
        .await;
    assert!(matches!(publisher.next().await, Some(Packet::PubAck(_))));
    match subscriber.next().await {
        Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], payload.as_bytes()),
        other => panic!("expected the large message, got {other:?}"),
    }
    suite
}

/// A rustls client offering ChaCha20-Poly1305 first gets AES-256-GCM by default (the
/// broker's order), ChaCha20-Poly1305 with `"chacha20"` and with `"client"`; one
/// offering AES-256-GCM first (rustls's default) gets ChaCha20-Poly1305 only with
/// `"chacha20"`. Every pair carries multi-record messages both ways.
#[tokio::test]
async fn the_listener_picks_in_its_own_order_unless_it_follows_the_client() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        listener(&pki, CipherPreference::default()),
        listener(&pki, CipherPreference::Chacha20),
        listener(&pki, CipherPreference::Client),
    ]))
    .await;
    let addrs = server.listener_addrs();
    let chacha20_first = chacha20_first_client(&pki);
    let aes_first = pki.client_config(None);
    for (addr, client, expected, prefix) in [
        (
            addrs[1],
            &chacha20_first,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "aes-c",
        ),
        (
            addrs[1],
            &aes_first,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "aes-a",
        ),
        (
            addrs[2],
            &chacha20_first,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            "chacha-c",
        ),
        (
            addrs[2],
            &aes_first,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            "chacha-a",
        ),
        (
            addrs[3],
            &chacha20_first,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            "client-c",
        ),
        (
            addrs[3],
            &aes_first,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            "client-a",
        ),
    ] {
        assert_eq!(
            round_trip(client.clone(), addr, prefix).await,
            expected,
            "{prefix}"
        );
    }
    server.shutdown().await;
}

fn run(program: &str, args: &[String]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{program} is installed: {error}"))
}

/// What `openssl s_client` offering `suites` reports of its TLS 1.3 handshake.
async fn s_client(port: u16, ca: &str, suites: &str) -> String {
    s_client_with(port, ca, ["-tls1_3", "-ciphersuites", suites]).await
}

/// What `openssl s_client` with `options` (protocol and suites) reports of its handshake.
async fn s_client_with(port: u16, ca: &str, options: [&str; 3]) -> String {
    let [version, suites_option, suites] = options;
    let args = [
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
        version,
        suites_option,
        suites,
        "-CAfile",
        ca,
        "-verify_return_error",
        "-brief",
    ]
    .map(String::from);
    let output = tokio::task::spawn_blocking(move || run("openssl", &args))
        .await
        .unwrap();
    String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout)
}

/// `mosquitto_pub` stores a large retained message over TLS 1.3 and `mosquitto_sub`
/// receives it over TLS 1.3 (both OpenSSL).
async fn mosquitto_round_trip(port: u16, ca: &str, topic: &str) {
    mosquitto_round_trip_over(port, ca, topic, "tlsv1.3").await
}

/// `mosquitto_round_trip` over `version` ("tlsv1.2" or "tlsv1.3").
async fn mosquitto_round_trip_over(port: u16, ca: &str, topic: &str, version: &str) {
    let payload = large_payload();
    let common = |extra: &[&str]| -> Vec<String> {
        let port = port.to_string();
        let mut args = vec![
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            ca,
            "--tls-version",
            version,
            "-t",
            topic,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    };
    let pub_args = common(&["-q", "1", "-r", "-m", &payload]);
    let sub_args = common(&["-q", "1", "-C", "1", "-W", "10"]);
    let published = tokio::task::spawn_blocking(move || run("mosquitto_pub", &pub_args))
        .await
        .unwrap();
    assert!(
        published.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let received = tokio::task::spawn_blocking(move || run("mosquitto_sub", &sub_args))
        .await
        .unwrap();
    assert!(
        received.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim_end(),
        payload,
        "mosquitto_sub received another payload"
    );
}

/// OpenSSL clients: `s_client` listing ChaCha20-Poly1305 first gets AES-256-GCM from the
/// default listener and ChaCha20-Poly1305 from a `"chacha20"` one; `mosquitto_pub` and
/// `mosquitto_sub` exchange a large message over each, so OpenSSL opens and seals what
/// both record ciphers produce and read.
#[tokio::test]
async fn openssl_and_mosquitto_clients_over_tls13_with_both_ciphers() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        listener(&pki, CipherPreference::default()),
        listener(&pki, CipherPreference::Chacha20),
    ]))
    .await;
    let addrs = server.listener_addrs();
    let ca = pki.path("ca.pem").display().to_string();
    let chacha20_first = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";
    for (addr, expected, topic) in [
        (
            addrs[1],
            "Ciphersuite: TLS_AES_256_GCM_SHA384",
            "ciphers/aes",
        ),
        (
            addrs[2],
            "Ciphersuite: TLS_CHACHA20_POLY1305_SHA256",
            "ciphers/chacha20",
        ),
    ] {
        let report = s_client(addr.port(), &ca, chacha20_first).await;
        assert!(
            report.contains(expected),
            "openssl s_client reported:\n{report}"
        );
        mosquitto_round_trip(addr.port(), &ca, topic).await;
    }
    server.shutdown().await;
}

/// OpenSSL over TLS 1.2: `s_client` offering each AES-GCM suite gets it, and
/// `mosquitto_pub` and `mosquitto_sub` exchange a large message, so OpenSSL opens and
/// seals the records of the TLS 1.2 AES-GCM cipher with keys expanded on use.
#[tokio::test]
async fn openssl_and_mosquitto_clients_over_tls12() {
    let pki = Pki::new();
    let server = start(config_with(vec![listener(
        &pki,
        CipherPreference::default(),
    )]))
    .await;
    let port = server.listener_addrs()[1].port();
    let ca = pki.path("ca.pem").display().to_string();
    for suite in [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ] {
        let report = s_client_with(port, &ca, ["-tls1_2", "-cipher", suite]).await;
        assert!(
            report.contains(&format!("Ciphersuite: {suite}")),
            "openssl s_client reported:\n{report}"
        );
    }
    mosquitto_round_trip_over(port, &ca, "ciphers/tls12", "tlsv1.2").await;
    server.shutdown().await;
}
