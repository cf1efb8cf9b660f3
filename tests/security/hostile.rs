//! Hostile and malformed input: each closes only its own connection, with the reason
//! the spec gives, and the broker keeps serving.

use std::time::Duration;

use fleetmq::config::{ClientAuth, Config, LimitsConfig, ListenerKind};
use fleetmq::protocol::{reason, ProtocolVersion};

use crate::common::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A v5 PUBLISH (QoS 0) with raw topic bytes and raw property bytes.
fn raw_publish(topic: &[u8], properties: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    body.push(properties.len() as u8);
    body.extend_from_slice(properties);
    body.extend_from_slice(b"payload");
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// After a valid CONNECT, each input ends the connection with this DISCONNECT reason.
#[tokio::test]
async fn malformed_packets_after_connect_close_with_their_reason() {
    let server = start(config_with(Vec::new())).await;
    let addr = server.local_addr();
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "remaining length overflow (5-byte varint)",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            reason::MALFORMED_PACKET,
        ),
        (
            "huge declared length",
            vec![0x30, 0xff, 0xff, 0xff, 0x7f],
            reason::PACKET_TOO_LARGE,
        ),
        (
            "duplicate property",
            raw_publish(b"a/b", &[0x01, 0x00, 0x01, 0x00]),
            reason::PROTOCOL_ERROR,
        ),
        (
            "invalid UTF-8 topic",
            raw_publish(&[0x61, 0xff, 0xfe], &[]),
            reason::MALFORMED_PACKET,
        ),
        (
            "U+0000 in topic",
            raw_publish(b"a\0b", &[]),
            reason::MALFORMED_PACKET,
        ),
        (
            "wildcard in a topic name",
            raw_publish(b"a/+", &[]),
            reason::TOPIC_NAME_INVALID,
        ),
        (
            "reserved packet type 0",
            vec![0x00, 0x00],
            reason::MALFORMED_PACKET,
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut client = connected(addr, V5, "hostile").await;
        client.send_bytes(&bytes).await;
        assert_eq!(client.closed_with().await, Some(expected), "{what}");
        still_serving(addr).await;
    }
    server.shutdown().await;
}

/// Before CONNECT the broker has nobody to explain to: it just closes.
#[tokio::test]
async fn bad_first_packets_are_closed_without_an_answer() {
    let server = start(config_with(Vec::new())).await;
    let addr = server.local_addr();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PUBLISH before CONNECT", raw_publish(b"a", &[])),
        (
            "CONNECT with a 5-byte varint",
            vec![0x10, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        (
            "truncated CONNECT, then EOF",
            vec![0x10, 0x10, 0x00, 0x04, b'M', b'Q'],
        ),
        (
            "CONNECT longer than the maximum packet size",
            vec![0x10, 0xff, 0xff, 0xff, 0x7f],
        ),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let mut client = Raw::tcp(addr, V5).await;
        client.send_bytes(&bytes).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut client.stream).await;
        assert_eq!(client.next().await, None, "{what}");
        still_serving(addr).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_connect_is_cut_at_the_connect_timeout() {
    let config = Config {
        limits: LimitsConfig {
            connect_timeout_secs: 1,
            ..LimitsConfig::default()
        },
        ..config_with(Vec::new())
    };
    let server = start(config).await;
    let addr = server.local_addr();
    let mut slow = Raw::tcp(addr, V5).await;
    let started = tokio::time::Instant::now();
    // Two bytes of a CONNECT, then nothing: the broker must not wait forever.
    slow.send_bytes(&[0x10, 0x20]).await;
    assert_eq!(slow.next().await, None);
    assert!(started.elapsed() >= Duration::from_millis(900));
    still_serving(addr).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_on_a_plain_port_is_closed() {
    let pki = Pki::new();
    let server = start(config_with(Vec::new())).await;
    let addr = server.local_addr();
    assert!(pki.tls_connect(addr, None).await.is_err());
    still_serving(addr).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_and_others_get_through() {
    let pki = Pki::new();
    let mut config = config_with(vec![pki.listener(ListenerKind::Tls, ClientAuth::None)]);
    config.limits.connect_timeout_secs = 1;
    let server = start(config).await;
    let tls = server.listener_addrs()[1];
    // The first bytes of a ClientHello, then silence.
    let mut stalled = Raw::tcp(tls, V5).await;
    stalled.send_bytes(&[0x16, 0x03, 0x01, 0x00, 0x80]).await;
    let stream = pki.tls_connect(tls, None).await.unwrap();
    let mut client = Raw::new(stream, V5);
    assert_eq!(
        client
            .connect(connect_packet(V5, "meanwhile", None, None))
            .await,
        Some(0)
    );
    assert_eq!(stalled.next().await, None);
    server.shutdown().await;
}
