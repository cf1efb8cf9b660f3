//! Publishing and delivery at QoS 0, 1 and 2, in both directions: the acknowledgement
//! flows, delivery QoS = min(published, granted), and exactly-once on duplicates.

use crate::both_versions;
use crate::common::clients::{V4Client, V5Client};
use crate::common::raw::RawClient;
use crate::common::wire::{self, Packet, PublishSpec, V311, V5};
use crate::common::{client_id, start_default, topic};

both_versions!(
    delivery_qos_is_min_of_published_and_granted,
    qos1_flow_exact_packets,
    qos2_flow_exact_packets,
    qos2_duplicate_publish_before_pubrel_delivered_once,
    rumqttc_round_trip_each_qos,
    publish_arriving_in_pieces_is_delivered_whole,
);

async fn delivery_qos_is_min_of_published_and_granted(version: u8) {
    let broker = start_default().await;
    let base = topic("minqos");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    for granted in 0..=2u8 {
        sub.subscribe(&format!("{base}/{granted}"), granted).await;
    }
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    let mut expected = Vec::new();
    for granted in 0..=2u8 {
        for published in 0..=2u8 {
            let payload = format!("g{granted}p{published}");
            publisher
                .publish_simple(&format!("{base}/{granted}"), published, payload.as_bytes())
                .await;
            expected.push((payload, granted.min(published)));
        }
    }
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let p = sub.recv_publish().await;
        assert!(!p.dup && !p.retain, "fresh live delivery: {p:?}");
        got.push((String::from_utf8(p.payload).expect("utf-8"), p.qos));
    }
    // Messages of one publisher reach a subscriber in the order they were published.
    assert_eq!(got, expected);
}

/// A large PUBLISH that arrives in pieces with pauses between them (from a lone first
/// byte to 4 KiB writes) is delivered whole, and so is the packet read together with its
/// last piece.
async fn publish_arriving_in_pieces_is_delivered_whole(version: u8) {
    let broker = start_default().await;
    let t = topic("pieces");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = PublishSpec::new(&t, 1, &payload).id(7).encode(version);
    bytes.extend(PublishSpec::new(&t, 0, b"behind").encode(version));
    let (head, rest) = bytes.split_at(1);
    publisher.send(head).await;
    for piece in std::iter::once(&rest[..3]).chain(rest[3..].chunks(4096)) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        publisher.send(piece).await;
    }
    assert_eq!(
        publisher.recv_bytes().await,
        [0x40, 0x02, 0x00, 0x07],
        "PUBACK"
    );
    let whole = sub.recv_publish().await;
    assert_eq!((whole.qos, whole.payload.len()), (1, payload.len()));
    assert!(whole.payload == payload, "payload delivered intact");
    assert_eq!(sub.recv_publish().await.payload, b"behind");
}

async fn qos1_flow_exact_packets(version: u8) {
    let broker = start_default().await;
    let t = topic("q1");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;

    publisher
        .send(&PublishSpec::new(&t, 1, b"one").id(0x0102).encode(version))
        .await;
    assert_eq!(
        publisher.recv_bytes().await,
        [0x40, 0x02, 0x01, 0x02],
        "PUBACK"
    );

    let p = sub.recv_publish_noack().await;
    assert_eq!(
        (
            p.qos,
            p.dup,
            p.retain,
            p.topic.as_str(),
            p.payload.as_slice()
        ),
        (1, false, false, t.as_str(), &b"one"[..])
    );
    assert_ne!(p.packet_id, 0);
    sub.send(&wire::ack(wire::PUBACK, p.packet_id)).await;
    // The acknowledged message is not sent again.
    publisher.publish_simple(&t, 0, b"sentinel").await;
    assert_eq!(sub.recv_publish().await.payload, b"sentinel");
}

async fn qos2_flow_exact_packets(version: u8) {
    let broker = start_default().await;
    let t = topic("q2");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&t, 2).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;

    publisher
        .send(&PublishSpec::new(&t, 2, b"two").id(0x0A0B).encode(version))
        .await;
    assert_eq!(
        publisher.recv_bytes().await,
        [0x50, 0x02, 0x0A, 0x0B],
        "PUBREC"
    );
    publisher.send(&wire::ack(wire::PUBREL, 0x0A0B)).await;
    assert_eq!(
        publisher.recv_bytes().await,
        [0x70, 0x02, 0x0A, 0x0B],
        "PUBCOMP"
    );

    let p = sub.recv_publish_noack().await;
    assert_eq!(
        (p.qos, p.dup, p.payload.as_slice()),
        (2, false, &b"two"[..])
    );
    sub.send(&wire::ack(wire::PUBREC, p.packet_id)).await;
    let mut pubrel = vec![0x62, 0x02];
    pubrel.extend_from_slice(&p.packet_id.to_be_bytes());
    assert_eq!(sub.recv_bytes().await, pubrel, "PUBREL");
    sub.send(&wire::ack(wire::PUBCOMP, p.packet_id)).await;
    publisher.publish_simple(&t, 0, b"sentinel").await;
    assert_eq!(sub.recv_publish().await.payload, b"sentinel");
}

async fn qos2_duplicate_publish_before_pubrel_delivered_once(version: u8) {
    let broker = start_default().await;
    let t = topic("once");
    let mut sub = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    sub.subscribe(&t, 2).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;

    let first = PublishSpec::new(&t, 2, b"exactly once").id(7);
    publisher.send(&first.encode(version)).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    // The publisher did not see the PUBREC (as far as it knows) and sends again with DUP.
    publisher.send(&first.clone().dup().encode(version)).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    publisher.send(&wire::ack(wire::PUBREL, 7)).await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(a) if a.packet_id == 7));
    // After PUBCOMP the same packet id starts a new message.
    publisher
        .publish(PublishSpec::new(&t, 2, b"sentinel"))
        .await;

    let seen = sub.payloads_until(b"sentinel").await;
    assert_eq!(seen, vec![b"exactly once".to_vec()]);
}

async fn rumqttc_round_trip_each_qos(version: u8) {
    let broker = start_default().await;
    let t = topic("lib");
    if version == V311 {
        let (mut sub, _) = V4Client::connect(broker.addr, &client_id("sub")).await;
        let (mut publisher, _) = V4Client::connect(broker.addr, &client_id("pub")).await;
        assert_eq!(
            sub.subscribe(&t, 2).await,
            vec![rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::ExactlyOnce
            )]
        );
        for level in 0..=2u8 {
            publisher
                .publish(&t, level, false, format!("q{level}").as_bytes())
                .await;
            let p = sub.next_publish().await;
            assert_eq!(p.topic, t);
            assert_eq!(p.payload.as_ref(), format!("q{level}").as_bytes());
            assert_eq!(p.qos, crate::common::clients::qos(level));
            assert!(!p.retain && !p.dup);
        }
    } else {
        assert_eq!(version, V5);
        let (mut sub, _) = V5Client::connect(broker.addr, &client_id("sub")).await;
        let (mut publisher, _) = V5Client::connect(broker.addr, &client_id("pub")).await;
        let codes = sub.subscribe(&t, 2).await;
        assert_eq!(
            codes,
            vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
                crate::common::clients::qos5(2)
            )]
        );
        for level in 0..=2u8 {
            publisher
                .publish(&t, level, false, format!("q{level}").as_bytes())
                .await;
            let p = sub.next_publish().await;
            assert_eq!(p.topic.as_ref(), t.as_bytes());
            assert_eq!(p.payload.as_ref(), format!("q{level}").as_bytes());
            assert_eq!(p.qos, crate::common::clients::qos5(level));
            assert!(!p.retain && !p.dup);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_across_protocol_versions() {
    let broker = start_default().await;
    let t = topic("cross");
    let versions = [wire::V31, V311, V5];
    let mut subs = Vec::new();
    for version in versions {
        let mut s = RawClient::connect(broker.addr, version, &client_id("sub")).await;
        s.subscribe(&t, 2).await;
        subs.push(s);
    }
    for (qos, version) in versions.into_iter().enumerate() {
        let qos = qos as u8;
        let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
        publisher
            .publish_simple(&t, qos, format!("from level {version}").as_bytes())
            .await;
        for s in subs.iter_mut() {
            let p = s.recv_publish().await;
            assert_eq!(
                (p.topic.as_str(), p.qos, p.payload),
                (
                    t.as_str(),
                    qos,
                    format!("from level {version}").into_bytes()
                ),
                "level {} subscriber",
                s.version
            );
        }
    }
}
