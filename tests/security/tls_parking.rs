//! Parked TLS connections: an idle TLS client is parked with rustls's state (keys,
//! sequence numbers) and its socket only, and comes back for a delivery, its own
//! packets (after a TLS 1.3 key update too), a takeover and its close_notify, as if it
//! had never been parked. The broker parks after 50 ms; each test waits until the broker
//! reports its clients parked before it acts.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmq::config::{CipherPreference, ClientAuth, ListenerKind};
use fleetmq::protocol::{
    Packet, ProtocolVersion, PubResponse, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
    Will,
};
use fleetmq::server::ServerHandle;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

type TlsRaw = Raw<tokio_rustls::client::TlsStream<TcpStream>>;

async fn parking_server(pki: &Pki) -> (ServerHandle, std::net::SocketAddr) {
    parking_server_with(pki, CipherPreference::default()).await
}

async fn parking_server_with(
    pki: &Pki,
    preference: CipherPreference,
) -> (ServerHandle, std::net::SocketAddr) {
    let mut listener = pki.listener(ListenerKind::Tls, ClientAuth::None);
    if let Some(tls) = listener.tls.as_mut() {
        tls.cipher_preference = preference;
    }
    let mut config = config_with(vec![listener]);
    config.limits.park_after_ms = 50;
    let server = start(config).await;
    let addr = server.listener_addrs()[1];
    (server, addr)
}

/// A MQTT 5 client over TLS, connected as `id` (with `will`).
async fn tls_client(pki: &Pki, addr: std::net::SocketAddr, id: &str, will: Option<Will>) -> TlsRaw {
    let stream = pki.tls_connect(addr, None).await.expect("TLS handshake");
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    let mut connect = connect_packet(ProtocolVersion::V5, id, None, None);
    connect.will = will;
    assert_eq!(client.connect(connect).await, Some(0));
    client
}

/// Waits until exactly `parked` connections are parked.
async fn until_parked(server: &ServerHandle, parked: u64) {
    let deadline = Instant::now() + WAIT;
    while server.broker().stats().snapshot().connections_parked != parked {
        assert!(Instant::now() < deadline, "never {parked} parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        subscription_identifier: None,
        user_properties: Vec::new(),
    })
}

async fn expect_publish(client: &mut TlsRaw, payload: &str) {
    match client.next().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(publish.payload, Bytes::copy_from_slice(payload.as_bytes()));
            client
                .send(Packet::PubAck(PubResponse {
                    packet_id: publish.packet_id,
                    reason_code: 0,
                    properties: Default::default(),
                }))
                .await;
        }
        other => panic!("expected PUBLISH {payload}, got {other:?}"),
    }
}

/// Deliveries reach a parked TLS subscriber, its PINGREQ is answered, also after it
/// renewed its traffic keys (TLS 1.3 key update) while parked, and a takeover closes the
/// parked connection with DISCONNECT 0x8E; with the suite each `cipher_preference`
/// gives a rustls client.
async fn parked_connection_served_after_key_update(
    preference: CipherPreference,
    suite: rustls::CipherSuite,
) {
    let pki = Pki::new();
    let (server, addr) = parking_server_with(&pki, preference).await;
    let mut subscriber = tls_client(&pki, addr, "tls-parked-sub", None).await;
    let negotiated = subscriber.stream.get_ref().1.negotiated_cipher_suite();
    assert_eq!(negotiated.map(|negotiated| negotiated.suite()), Some(suite));
    subscriber.send(subscribe("park/#")).await;
    assert!(matches!(subscriber.next().await, Some(Packet::SubAck(_))));
    let mut publisher = tls_client(&pki, addr, "tls-parked-pub", None).await;
    until_parked(&server, 2).await;

    publisher
        .send(publish("park/1", QoS::AtLeastOnce, 1, "first"))
        .await;
    expect_publish(&mut subscriber, "first").await;
    assert!(matches!(publisher.next().await, Some(Packet::PubAck(_))));
    until_parked(&server, 2).await;

    // A key update from the parked client (sent with its next record), which also asks
    // the broker to update its own keys.
    subscriber
        .stream
        .get_mut()
        .1
        .refresh_traffic_keys()
        .expect("TLS 1.3 key update");
    subscriber.send(Packet::PingReq).await;
    assert_eq!(subscriber.next().await, Some(Packet::PingResp));
    until_parked(&server, 2).await;
    publisher
        .send(publish("park/2", QoS::AtLeastOnce, 2, "second"))
        .await;
    expect_publish(&mut subscriber, "second").await;
    assert!(matches!(publisher.next().await, Some(Packet::PubAck(_))));
    until_parked(&server, 2).await;

    let _taker = tls_client(&pki, addr, "tls-parked-sub", None).await;
    assert_eq!(subscriber.closed_with().await, Some(0x8E));
    server.shutdown().await;
}

/// The default preference: AES-256-GCM, its keys' expansions released while parked and
/// rebuilt for each delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_tls_connection_is_served_after_a_key_update_and_taken_over() {
    parked_connection_served_after_key_update(
        CipherPreference::default(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    )
    .await;
}

/// ChaCha20-Poly1305 with its 32-byte keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_chacha20_connection_is_served_after_a_key_update_and_taken_over() {
    parked_connection_served_after_key_update(
        CipherPreference::Chacha20,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    )
    .await;
}

/// A parked TLS client that ends with close_notify leaves its will, as an unannounced
/// close does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_tls_client_closing_with_close_notify_leaves_its_will() {
    let pki = Pki::new();
    let (server, addr) = parking_server(&pki).await;
    let mut watcher = tls_client(&pki, addr, "tls-watcher", None).await;
    watcher.send(subscribe("wills/#")).await;
    assert!(matches!(watcher.next().await, Some(Packet::SubAck(_))));
    let will = Will {
        topic: "wills/leaver".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    let mut leaver = tls_client(&pki, addr, "tls-leaver", Some(will)).await;
    until_parked(&server, 2).await;
    // close_notify, then the end of the stream.
    leaver.stream.shutdown().await.expect("close_notify sent");
    expect_publish(&mut watcher, "gone").await;
    server.shutdown().await;
}

/// A rustls client offering TLS 1.2's `suite` only.
fn tls12_client_config(
    pki: &Pki,
    suite: rustls::SupportedCipherSuite,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

async fn tls12_client(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    id: &str,
) -> TlsRaw {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS 1.2 handshake");
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    assert_eq!(
        client
            .connect(connect_packet(ProtocolVersion::V5, id, None, None))
            .await,
        Some(0)
    );
    client
}

/// TLS 1.2 clients with each AES-GCM suite: a parked subscriber receives messages of
/// several records, its PINGREQ is answered, and again after parking a second time (its
/// keys released at each park and expanded again at the next record).
#[tokio::test]
async fn a_parked_tls12_connection_is_served_again_and_again() {
    use rustls::crypto::ring::cipher_suite;
    let large: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for suite in [
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        let pki = Pki::new();
        let (server, addr) = parking_server(&pki).await;
        let config = tls12_client_config(&pki, suite);
        let mut subscriber = tls12_client(config.clone(), addr, "tls12-sub").await;
        let negotiated = subscriber.stream.get_ref().1.negotiated_cipher_suite();
        assert_eq!(
            negotiated.map(|negotiated| negotiated.suite()),
            Some(suite.suite())
        );
        subscriber.send(subscribe("park12/#")).await;
        assert!(matches!(subscriber.next().await, Some(Packet::SubAck(_))));
        let mut publisher = tls12_client(config, addr, "tls12-pub").await;
        for (packet_id, payload) in [(1u16, large.as_str()), (2, "second"), (3, large.as_str())] {
            until_parked(&server, 2).await;
            publisher
                .send(publish("park12/1", QoS::AtLeastOnce, packet_id, payload))
                .await;
            expect_publish(&mut subscriber, payload).await;
            assert!(matches!(publisher.next().await, Some(Packet::PubAck(_))));
            until_parked(&server, 2).await;
            subscriber.send(Packet::PingReq).await;
            assert_eq!(subscriber.next().await, Some(Packet::PingResp));
        }
        server.shutdown().await;
    }
}
