//! `$SYS/broker/...`: Mosquitto's topic names with the broker's live values, published
//! retained every `sys.interval_secs`; clients cannot publish there.

use std::collections::BTreeMap;

use bytes::Bytes;
use fleetmq::protocol::{
    Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use crate::common::{base_config, within, RawClient, Service};

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions::default(),
        }],
        ..Subscribe::default()
    })
}

/// Reads `$SYS` publications until `topic` has `wanted`; returns the latest value of
/// every topic seen.
async fn until(client: &mut RawClient, topic: &str, wanted: &str) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    within(&format!("{topic} = {wanted}"), async {
        loop {
            match client.next_packet().await {
                Some(Packet::Publish(publish)) => {
                    let value = String::from_utf8_lossy(&publish.payload).into_owned();
                    let done = &*publish.topic == topic && value == wanted;
                    seen.insert(publish.topic.to_string(), value);
                    if done {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("the broker closed the connection"),
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn sys_topics_carry_live_values_and_refuse_client_publishes() {
    let service = Service::start(&base_config("[sys]\ninterval_secs = 1\n"), &[], &[]).await;
    let mut watcher =
        RawClient::connect(service.mqtt, "sys-watcher", ProtocolVersion::V3_1_1).await;
    watcher.send(&subscribe("$SYS/broker/#")).await;
    let mut everything = RawClient::connect(service.mqtt, "sys-hash", ProtocolVersion::V5).await;
    everything.send(&subscribe("#")).await;
    assert!(matches!(
        everything.next_packet().await,
        Some(Packet::SubAck(_))
    ));

    // A v5 client publishing to $SYS is told it may not; nobody receives it.
    everything
        .send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "$SYS/broker/clients/connected".into(),
            packet_id: 3,
            payload: Bytes::from_static(b"999"),
            ..Publish::default()
        }))
        .await;
    match everything.next_packet().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, 0x87),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }

    // Two clients connected, two subscriptions, one dropped message: the next
    // publication says so.
    let seen = until(&mut watcher, "$SYS/broker/publish/messages/dropped", "1").await;
    let seen = {
        let mut seen = seen;
        seen.extend(until(&mut watcher, "$SYS/broker/clients/connected", "2").await);
        seen
    };
    let value = |topic: &str| {
        seen.get(topic)
            .unwrap_or_else(|| panic!("{topic} missing from {seen:#?}"))
            .as_str()
    };
    assert_eq!(
        value("$SYS/broker/version"),
        format!("fleetmq version {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(value("$SYS/broker/uptime").ends_with(" seconds"));
    assert_eq!(value("$SYS/broker/clients/total"), "2");
    assert_eq!(value("$SYS/broker/subscriptions/count"), "2");
    assert_eq!(value("$SYS/broker/publish/messages/received"), "0");
    for topic in [
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/bytes/sent/15min",
        "$SYS/broker/load/connections/5min",
    ] {
        let number: f64 = value(topic).parse().unwrap_or_else(|_| panic!("{topic}"));
        assert!(number >= 0.0, "{topic}");
    }
    assert!(
        value("$SYS/broker/messages/received")
            .parse::<u64>()
            .unwrap()
            >= 5
    );

    // A `#` subscriber sees none of it ($ topics never match a leading wildcard), and a
    // late subscriber gets the retained values at once.
    everything.send(&Packet::PingReq).await;
    assert_eq!(everything.next_packet().await, Some(Packet::PingResp));
    let mut late = RawClient::connect(service.mqtt, "sys-late", ProtocolVersion::V3_1_1).await;
    late.send(&subscribe("$SYS/broker/version")).await;
    assert!(matches!(late.next_packet().await, Some(Packet::SubAck(_))));
    match late.next_packet().await {
        Some(Packet::Publish(publish)) => {
            assert!(publish.retain);
            assert_eq!(&*publish.topic, "$SYS/broker/version");
        }
        other => panic!("expected the retained version, got {other:?}"),
    }
}
