//! The TLS 1.3 cipher suite a listener picks (`cipher_preference`) and the compact
//! ChaCha20-Poly1305 record cipher with real clients: rustls (which offers AES-256-GCM
//! first), OpenSSL's `s_client` and the real `mosquitto_pub`/`mosquitto_sub` over
//! TLS 1.3, with messages spanning several records in both directions.

use fleetmq::config::{CipherPreference, ClientAuth, ListenerKind};
use fleetmq::protocol::{Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter};
use rustls::CipherSuite;

use crate::common::*;

type TlsRaw = Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A payload of several TLS records (16 KiB each at most).
fn large_payload() -> String {
    (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

async fn tls_client(pki: &Pki, addr: std::net::SocketAddr, id: &str) -> (TlsRaw, CipherSuite) {
    let stream = pki.tls_connect(addr, None).await.expect("TLS handshake");
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
async fn round_trip(pki: &Pki, addr: std::net::SocketAddr, prefix: &str) -> CipherSuite {
    let (mut subscriber, suite) = tls_client(pki, addr, &format!("{prefix}-sub")).await;
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
    let (mut publisher, publisher_suite) = tls_client(pki, addr, &format!("{prefix}-pub")).await;
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

/// A rustls client offers AES-256-GCM first and ChaCha20-Poly1305 last: by default the
/// listener picks ChaCha20-Poly1305; with `cipher_preference = "client"` the client's
/// AES-256-GCM. Both carry multi-record messages both ways.
#[tokio::test]
async fn the_listener_picks_chacha20_unless_it_follows_the_client() {
    let pki = Pki::new();
    let mut client_order = pki.listener(ListenerKind::Tls, ClientAuth::None);
    if let Some(tls) = client_order.tls.as_mut() {
        tls.cipher_preference = CipherPreference::Client;
    }
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::None),
        client_order,
    ]))
    .await;
    let addrs = server.listener_addrs();
    assert_eq!(
        round_trip(&pki, addrs[1], "server-order").await,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    assert_eq!(
        round_trip(&pki, addrs[2], "client-order").await,
        CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    server.shutdown().await;
}

fn run(program: &str, args: &[String]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{program} is installed: {error}"))
}

/// OpenSSL offers AES-256-GCM first too; `s_client` reports ChaCha20-Poly1305. The real
/// `mosquitto_pub` stores a large retained message over TLS 1.3 and the real
/// `mosquitto_sub` receives it over TLS 1.3: OpenSSL decrypts and encrypts what the
/// compact cipher produces and reads.
#[tokio::test]
async fn openssl_and_mosquitto_clients_get_chacha20_over_tls13() {
    let pki = Pki::new();
    let server = start(config_with(vec![
        pki.listener(ListenerKind::Tls, ClientAuth::None)
    ]))
    .await;
    let port = server.listener_addrs()[1].port().to_string();
    let ca = pki.path("ca.pem").display().to_string();

    let s_client = [
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
        "-tls1_3",
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-brief",
    ]
    .map(String::from);
    let output = tokio::task::spawn_blocking(move || run("openssl", &s_client))
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("Ciphersuite: TLS_CHACHA20_POLY1305_SHA256"),
        "openssl s_client reported:\n{report}"
    );

    let payload = large_payload();
    let common = |program_args: &[&str]| -> Vec<String> {
        let mut args = vec![
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &ca,
            "--tls-version",
            "tlsv1.3",
            "-t",
            "ciphers/retained",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(program_args.iter().map(|arg| arg.to_string()));
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
    server.shutdown().await;
}
