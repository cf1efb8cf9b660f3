//! A drain encoded straight into a write buffer (`EncodedOutgoing`) sends exactly the
//! bytes of the packets a drain into a list produces, encoded one by one: for every
//! protocol version, with and without MQTT 5 properties, subscription identifiers,
//! message expiry, topic aliases (assigned, reused, reassigned), messages too large for
//! the client, and redelivery after a reconnect.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::encode;
use crate::session::{EncodedOutgoing, Outgoing};

fn wide_limits() -> SessionLimits {
    SessionLimits {
        max_inflight: 20,
        max_queued_messages: 50,
        max_queued_bytes: 100_000,
        ..limits()
    }
}

/// The deliveries of one run: every kind of PUBLISH a session sends.
fn deliveries(now: Instant) -> Vec<Delivery> {
    let mut with_properties = message("sensors/1", QoS::ExactlyOnce);
    with_properties.properties.user_properties = vec![("k".into(), "v".into())];
    with_properties.properties.content_type = Some("text/plain".into());
    with_properties.properties.response_topic = Some("reply".into());
    with_properties.properties.correlation_data = Some(Bytes::from_static(b"\x07"));
    with_properties.properties.payload_format_indicator = Some(1);
    with_properties.expires_at = Some(now + Duration::from_secs(30));
    let mut subscribed = delivery_of(with_properties, QoS::ExactlyOnce);
    subscribed.subscription_ids = vec![3, 300];
    subscribed.retain = true;
    let mut too_large = message("sensors/big", QoS::AtLeastOnce);
    too_large.payload = Bytes::from(vec![0u8; 200]);
    let mut long = message("sensors/long", QoS::AtLeastOnce);
    long.payload = Bytes::from(vec![9u8; 150]);
    vec![
        delivery("sensors/1", QoS::AtLeastOnce),
        delivery("sensors/2", QoS::AtMostOnce),
        subscribed,
        delivery("sensors/1", QoS::AtLeastOnce),
        delivery_of(too_large, QoS::AtLeastOnce),
        delivery("sensors/3", QoS::ExactlyOnce),
        delivery("sensors/4", QoS::AtLeastOnce),
        delivery("sensors/2", QoS::AtMostOnce),
        delivery_of(long, QoS::AtLeastOnce),
    ]
}

/// Runs the same deliveries through a session, draining into `out`: a first drain, a
/// PUBREC, a reconnect, and a drain of the redeliveries (DUP, PUBREL) and new messages.
fn run(connect: &Connect, now: Instant, out: &mut impl Outgoing) -> Vec<DropReason> {
    let mut session = Session::new(KEY, wide_limits());
    session.attach(connect, Duration::from_secs(60), now);
    let mut dropped = Vec::new();
    let all = deliveries(now);
    let (first, rest) = all.split_at(6);
    for delivery in first {
        session.enqueue(delivery.clone(), now).expect("queued");
    }
    session.poll_outgoing(now, out, &mut dropped);
    // Packet id 2 is the QoS 2 message with properties.
    handle(&mut session, Packet::PubRec(response(2)), now);
    session.detach(now);
    let later = now + Duration::from_secs(5);
    session.attach(connect, Duration::from_secs(60), later);
    for delivery in rest {
        session.enqueue(delivery.clone(), later).expect("queued");
    }
    session.poll_outgoing(later, out, &mut dropped);
    dropped
}

fn connects() -> Vec<Connect> {
    let mut all = vec![
        connect(ProtocolVersion::V3_1),
        connect(ProtocolVersion::V3_1_1),
        connect(ProtocolVersion::V5),
    ];
    for (alias_maximum, maximum_packet_size) in [(Some(1), None), (Some(2), Some(120))] {
        let mut v5 = connect(ProtocolVersion::V5);
        v5.properties.topic_alias_maximum = alias_maximum;
        v5.properties.maximum_packet_size = maximum_packet_size;
        all.push(v5);
    }
    all
}

#[test]
fn an_encoded_drain_sends_the_bytes_of_the_packets() {
    for connect in connects() {
        let now = Instant::now();
        let mut packets = Vec::new();
        let listed_drops = run(&connect, now, &mut packets);

        let mut buf = BytesMut::new();
        let mut encoded = EncodedOutgoing::new(&mut buf, connect.protocol);
        let encoded_drops = run(&connect, now, &mut encoded);
        let (count, by_qos) = (encoded.packets, encoded.publishes);

        let mut expected = BytesMut::new();
        let mut expected_by_qos = [0u64; 3];
        for packet in &packets {
            if let Packet::Publish(publish) = packet {
                expected_by_qos[publish.qos as usize] += 1;
            }
            encode(packet, connect.protocol, &mut expected);
        }
        let label = format!("{:?} {:?}", connect.protocol, connect.properties);
        assert_eq!(&buf[..], &expected[..], "{label}");
        assert_eq!(encoded_drops, listed_drops, "{label}");
        assert_eq!(count, packets.len() as u64, "{label}");
        assert_eq!(by_qos, expected_by_qos, "{label}");
        // The run covers what it claims: DUP resends, a PUBREL, aliases where allowed,
        // a drop where the client's maximum is small.
        let publishes: Vec<&Publish> = packets
            .iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .collect();
        assert!(publishes.iter().any(|publish| publish.dup), "{label}");
        assert!(
            packets
                .iter()
                .any(|packet| matches!(packet, Packet::PubRel(_))),
            "{label}"
        );
        if connect.properties.topic_alias_maximum.is_some() {
            assert!(
                publishes.iter().any(|publish| publish.topic.is_empty()),
                "{label}"
            );
        }
        if connect.properties.maximum_packet_size.is_some() {
            assert!(
                listed_drops.contains(&DropReason::TooLargeForClient),
                "{label}"
            );
        }
    }
}
