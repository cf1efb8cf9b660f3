//! Protocol violations, sent as raw bytes: an MQTT 5 client gets DISCONNECT with the
//! reason code the specification names and the connection is closed; a 3.x client is
//! simply closed. Either way the broker goes on serving everyone else.

use crate::common::raw::RawClient;
use crate::common::wire::{self, ConnectSpec, PublishSpec, V311, V5};
use crate::common::{assert_still_serving, client_id, start_broker, start_default};

/// Connects a client of `version`, sends `bytes`, and checks the broker's answer: MQTT 5
/// DISCONNECT with `code` then close, or (3.x) an immediate close.
async fn violation(version: u8, bytes: &[u8], code: u8) {
    let broker = start_default().await;
    let mut c = RawClient::connect(broker.addr, version, &client_id("bad")).await;
    c.send_lossy(bytes).await;
    if version == V5 {
        c.expect_disconnect(code).await;
    } else {
        c.expect_closed().await;
    }
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_second_connect_is_protocol_error() {
    violation(V5, &ConnectSpec::new(V5, "again").encode(), 0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_second_connect_closes() {
    violation(V311, &ConnectSpec::new(V311, "again").encode(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_reserved_fixed_header_flags_are_malformed() {
    // SUBSCRIBE must carry flags 0b0010.
    let mut subscribe = wire::subscribe(V5, 1, &[("a/b", 0)], &[]);
    subscribe[0] = 0x80;
    violation(V5, &subscribe, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_reserved_fixed_header_flags_close() {
    let mut subscribe = wire::subscribe(V311, 1, &[("a/b", 0)], &[]);
    subscribe[0] = 0x80;
    violation(V311, &subscribe, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_pubrel_with_wrong_flags_is_malformed() {
    violation(V5, &wire::ack(0x60, 1), 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_wildcard_in_publish_topic_is_topic_name_invalid() {
    for t in ["a/+/c", "a/#"] {
        violation(V5, &PublishSpec::new(t, 0, b"x").encode(V5), 0x90).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_wildcard_in_publish_topic_closes() {
    violation(V311, &PublishSpec::new("a/+", 1, b"x").encode(V311), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_invalid_utf8_topic_is_malformed() {
    let bytes = PublishSpec::new("", 0, b"x").encode_topic_bytes(V5, &[b'a', 0xFF, 0xFE]);
    violation(V5, &bytes, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_null_character_in_topic_is_malformed() {
    let bytes = PublishSpec::new("", 0, b"x").encode_topic_bytes(V5, b"a\0b");
    violation(V5, &bytes, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_packet_id_zero_on_qos1_is_protocol_error() {
    violation(V5, &PublishSpec::new("a/b", 1, b"x").id(0).encode(V5), 0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos3_publish_is_malformed() {
    let mut bytes = PublishSpec::new("a/b", 2, b"x").encode(V5);
    bytes[0] |= 0x06;
    violation(V5, &bytes, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_receive_maximum_exceeded() {
    let broker = start_broker(|c| c.limits.receive_maximum = 2).await;
    let mut c = RawClient::connect(broker.addr, V5, &client_id("greedy")).await;
    // QoS 2 messages stay unacknowledged until PUBREL, which is never sent.
    for id in 1..=2u16 {
        c.send(&PublishSpec::new("rm/t", 2, b"x").id(id).encode(V5))
            .await;
        match c.recv().await {
            // 0x10: accepted, no matching subscribers.
            wire::Packet::PubRec(a) => {
                assert_eq!(a.packet_id, id);
                assert!(
                    matches!(a.code, 0x00 | 0x10),
                    "PUBREC code 0x{:02x}",
                    a.code
                );
            }
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    c.send(&PublishSpec::new("rm/t", 2, b"x").id(3).encode(V5))
        .await;
    c.expect_disconnect(0x93).await;
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect_closes() {
    let broker = start_default().await;
    for first in [
        wire::PINGREQ.to_vec(),
        PublishSpec::new("a/b", 0, b"x").encode(V311),
    ] {
        let mut c = RawClient::open(broker.addr, V311).await;
        c.send_lossy(&first).await;
        c.expect_closed().await;
    }
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_remaining_length_closes() {
    let broker = start_default().await;
    let mut c = RawClient::connect(broker.addr, V311, &client_id("overlong")).await;
    // A five byte remaining length is malformed.
    c.send_lossy(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    c.expect_closed().await;
    assert_still_serving(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_subscribe_without_filters_is_protocol_error() {
    violation(V5, &wire::subscribe(V5, 1, &[], &[]), 0x82).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_only_packets_from_a_client_are_protocol_errors() {
    // CONNACK, SUBACK, UNSUBACK, PINGRESP; well formed or not, the packet type alone
    // decides.
    for bytes in [
        &[0x20, 0x03, 0x00, 0x00, 0x00][..],
        &[0x20, 0x00],
        &[0x90, 0x04, 0x00, 0x01, 0x00, 0x00],
        &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x00],
        &[0xB0, 0x02, 0x00, 0x01],
        &[0xD0, 0x00],
    ] {
        violation(V5, bytes, 0x82).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_server_only_packets_from_a_client_close() {
    for bytes in [
        &[0x20, 0x02, 0x00, 0x00][..],
        &[0x90, 0x03, 0x00, 0x01, 0x00],
        &[0xB0, 0x02, 0x00, 0x01],
        &[0xD0, 0x00],
    ] {
        violation(V311, bytes, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_property_not_valid_for_its_packet_is_still_malformed() {
    // Session Expiry Interval (0x11) belongs to CONNECT, CONNACK and DISCONNECT only.
    let bytes = [
        0x30, 0x0B, 0x00, 0x03, b'a', b'/', b'b', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01,
    ];
    violation(V5, &bytes, 0x81).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_reaches_a_client_that_keeps_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The broker's DISCONNECT waits in its send queue behind retained messages the
    // client has not read yet, and the client goes on sending after its violation. A
    // socket closed with unread input is reset, and a reset throws the unsent queue away:
    // the broker must discard the client's input until it closes instead.
    let broker = start_broker(|c| c.limits.receive_maximum = 1).await;
    let mut publisher = RawClient::connect(broker.addr, V5, &client_id("retainer")).await;
    let payload = [b'r'; 8192];
    for i in 0..64 {
        publisher
            .publish(PublishSpec::new(&format!("rst/{i}"), 1, &payload).retain())
            .await;
    }
    let mut c = RawClient::connect_small_buffer(broker.addr, V5, &client_id("flood"), 4096).await;
    c.subscribe("rst/#", 0).await;
    let (stream, mut received) = c.into_parts();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        // Receive Maximum is 1: the second unreleased QoS 2 PUBLISH breaks it.
        for id in 1..=2u16 {
            let publish = PublishSpec::new("flood/in", 2, b"x").id(id).encode(V5);
            if writer.write_all(&publish).await.is_err() {
                return;
            }
        }
        // Then more, while the broker is closing: 512 KiB at most.
        let filler = PublishSpec::new("flood/in", 0, &[7u8; 4096]).encode(V5);
        for _ in 0..128 {
            if writer.write_all(&filler).await.is_err() {
                return;
            }
        }
    });
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        let read = tokio::time::timeout(crate::common::GUARD, reader.read(&mut chunk))
            .await
            .expect("the broker closes the connection within the guard timeout");
        match read {
            Ok(0) => break "end of stream",
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("the connection failed instead of closing: {error}"),
        }
    };
    sender.await.unwrap();
    // Every packet arrived whole, and the last one is the DISCONNECT.
    let mut last = None;
    let mut rest = &received[..];
    while !rest.is_empty() {
        let (len, n) = wire::read_varint(&rest[1..]).expect("a whole fixed header");
        assert!(rest.len() >= 1 + n + len, "{end} inside a packet");
        last = Some(wire::decode(rest[0], &rest[1 + n..1 + n + len], V5));
        rest = &rest[1 + n + len..];
    }
    match last {
        Some(wire::Packet::Disconnect { code, .. }) => assert_eq!(code, 0x93),
        other => panic!("expected DISCONNECT 0x93 last, got {other:?}"),
    }
    assert_still_serving(broker.addr).await;
}
