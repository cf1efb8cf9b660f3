//! Listeners behind a load balancer: PROXY protocol v1 and v2 headers before MQTT and
//! before TLS, the client address they carry deciding the anonymous rule, and the
//! connections refused: no header, a malformed or forged one, an untrusted source.

use std::net::SocketAddr;

use fleetmq::broker::Refusal;
use fleetmq::config::{ClientAuth, Config, ListenerConfig, ListenerKind};
use fleetmq::protocol::{reason, ProtocolVersion};
use fleetmq::server::ServerHandle;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

fn behind_balancer(kind: ListenerKind, trusted: &[&str]) -> ListenerConfig {
    let mut listener = loopback(kind);
    listener.proxy_protocol = true;
    listener.proxy_protocol_trusted = trusted.iter().map(|entry| entry.to_string()).collect();
    listener
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 1883\r\n").into_bytes()
}

/// A v2 PROXY header for an IPv4 client, with one TLV as HAProxy adds them.
fn v2(client: [u8; 4]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0x00, 12 + 6]);
    header.extend_from_slice(&client);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&1883u16.to_be_bytes());
    header.extend_from_slice(&[0x05, 0x00, 0x03, b'i', b'd', b'1']);
    header
}

/// v2 LOCAL: a health check from the balancer itself.
fn v2_local() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

/// Opens a connection, sends `header`, then an anonymous CONNECT; the CONNACK code, or
/// `None` when the broker closed the connection without one.
async fn anonymous_after(addr: SocketAddr, header: &[u8], version: ProtocolVersion) -> Option<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A broker that closes at accept may reset the connection; the read then says so.
    let _ = stream.write_all(header).await;
    let mut client = Raw::new(stream, version);
    client
        .connect(connect_packet(version, "behind-balancer", None, None))
        .await
}

fn refused(server: &ServerHandle, refusal: Refusal) -> u64 {
    server.broker().stats().snapshot().refused(refusal)
}

#[tokio::test]
async fn v1_and_v2_headers_give_the_client_address_to_the_anonymous_rule() {
    // Bound to loopback without allow_anonymous: anonymous clients are admitted only from
    // loopback addresses, which behind a balancer means the header's address.
    let server = start(Config {
        listeners: vec![behind_balancer(ListenerKind::Tcp, &["127.0.0.1/32"])],
        ..Config::default()
    })
    .await;
    let addr = server.local_addr();
    for (what, header, code) in [
        ("v1 loopback client", v1("127.0.0.1"), 0),
        (
            "v1 remote client",
            v1("203.0.113.7"),
            reason::NOT_AUTHORIZED,
        ),
        ("v2 loopback client", v2([127, 0, 0, 1]), 0),
        (
            "v2 remote client",
            v2([198, 51, 100, 9]),
            reason::NOT_AUTHORIZED,
        ),
        ("v2 LOCAL keeps the balancer's address", v2_local(), 0),
    ] {
        for version in [V3, V5] {
            assert_eq!(
                anonymous_after(addr, &header, version).await,
                Some(code),
                "{what}, {version:?}"
            );
        }
    }
    assert_eq!(refused(&server, Refusal::ProxyHeader), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn missing_malformed_and_untrusted_headers_are_refused() {
    let mut open = behind_balancer(ListenerKind::Tcp, &["127.0.0.1/32"]);
    open.allow_anonymous = Some(true);
    let mut elsewhere = behind_balancer(ListenerKind::Tcp, &["10.0.0.0/8", "::1"]);
    elsewhere.allow_anonymous = Some(true);
    let server = start(Config {
        listeners: vec![open, elsewhere, loopback(ListenerKind::Tcp)],
        ..Config::default()
    })
    .await;
    let addrs = server.listener_addrs();
    let mut wrong_version = v2([127, 0, 0, 1]);
    wrong_version[12] = 0x11;
    for (what, header) in [
        ("no header", Vec::new()),
        ("forged v1 address", v1("999.0.0.1")),
        (
            "v1 without CRLF",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2\n".to_vec(),
        ),
        ("v2 of version 1", wrong_version),
    ] {
        assert_eq!(anonymous_after(addrs[0], &header, V5).await, None, "{what}");
    }
    assert_eq!(refused(&server, Refusal::ProxyHeader), 4);
    // A valid header from a source that is not a trusted balancer.
    assert_eq!(anonymous_after(addrs[1], &v1("127.0.0.1"), V5).await, None);
    assert_eq!(refused(&server, Refusal::UntrustedProxy), 1);
    // The listener still serves a proper header; the plain listener needs none.
    assert_eq!(
        anonymous_after(addrs[0], &v1("192.0.2.1"), V5).await,
        Some(0)
    );
    still_serving(addrs[2]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_header_comes_before_the_tls_handshake() {
    let pki = Pki::new();
    let mut listener = pki.listener(ListenerKind::Tls, ClientAuth::None);
    listener.proxy_protocol = true;
    listener.proxy_protocol_trusted = vec!["127.0.0.1".to_string()];
    let server = start(Config {
        listeners: vec![listener],
        ..Config::default()
    })
    .await;
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(None));
    for (header, code) in [
        (v2([127, 0, 0, 1]), 0),
        (v2([203, 0, 113, 7]), reason::NOT_AUTHORIZED),
        (v1("127.0.0.1"), 0),
    ] {
        let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = within("the TLS handshake", connector.connect(name, tcp))
            .await
            .expect("TLS after the PROXY header");
        let mut client = Raw::new(tls, V5);
        assert_eq!(
            client
                .connect(connect_packet(V5, "tls-behind-balancer", None, None))
                .await,
            Some(code)
        );
    }
    // Without the header, the ClientHello is not a PROXY header: closed.
    assert!(pki.tls_connect(server.local_addr(), None).await.is_err());
    assert_eq!(refused(&server, Refusal::ProxyHeader), 1);
    server.shutdown().await;
}

/// Sends `header`, upgrades to WebSocket (subprotocol `mqtt`) and connects anonymously;
/// returns the CONNACK code.
async fn anonymous_over_websocket(addr: SocketAddr, header: &[u8]) -> u8 {
    use bytes::BytesMut;
    use fleetmq::protocol::{decode, encode, Packet};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = within(
        "the WebSocket upgrade",
        tokio_tungstenite::client_async(request, tcp),
    )
    .await
    .expect("WebSocket after the PROXY header");
    let mut out = BytesMut::new();
    let connect = connect_packet(V5, "ws-behind-balancer", None, None);
    encode(&Packet::Connect(Box::new(connect)), V5, &mut out);
    ws.send(Message::binary(out.to_vec())).await.unwrap();
    let reply = within("CONNACK over WebSocket", ws.next())
        .await
        .expect("a message")
        .expect("a binary message");
    let mut bytes = BytesMut::from(&reply.into_data()[..]);
    match decode(&mut bytes, Some(V5), u32::MAX) {
        Ok(Some(Packet::ConnAck(connack))) => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn the_header_comes_before_the_websocket_upgrade() {
    let server = start(Config {
        listeners: vec![behind_balancer(ListenerKind::Ws, &["127.0.0.1/32"])],
        ..Config::default()
    })
    .await;
    let addr = server.local_addr();
    assert_eq!(anonymous_over_websocket(addr, &v1("127.0.0.1")).await, 0);
    assert_eq!(
        anonymous_over_websocket(addr, &v2([203, 0, 113, 7])).await,
        reason::NOT_AUTHORIZED
    );
    assert_eq!(refused(&server, Refusal::ProxyHeader), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_header_that_never_completes_is_cut_at_the_connect_timeout() {
    let mut listener = behind_balancer(ListenerKind::Tcp, &["127.0.0.1/32"]);
    listener.allow_anonymous = Some(true);
    let mut config = Config {
        listeners: vec![listener],
        ..Config::default()
    };
    config.limits.connect_timeout_secs = 1;
    let server = start(config).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    // The start of a v1 header, then nothing.
    stream.write_all(b"PROXY TCP4 192.0.2").await.unwrap();
    let mut slow = Raw::new(stream, V5);
    assert_eq!(slow.next().await, None, "closed without a packet");
    assert_eq!(refused(&server, Refusal::ProxyHeader), 1);
    assert_eq!(refused(&server, Refusal::TransportHandshake), 0);
    server.shutdown().await;
}
