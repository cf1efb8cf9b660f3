//! `/metrics` after a known sequence of connects, publishes and drops: exact counter
//! values, and output that parses as the Prometheus text format.

use std::collections::BTreeMap;

use bytes::Bytes;
use fleetmq::protocol::{
    Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use crate::common::{base_config, connect_packet, parse_prometheus, RawClient, Service};

fn publish(topic: &str, qos: QoS, packet_id: u16, retain: bool) -> Packet {
    Packet::Publish(Publish {
        qos,
        retain,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"payload"),
        ..Publish::default()
    })
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

#[tokio::test]
async fn scrape_after_a_known_sequence_gives_exact_counts() {
    // No $SYS topics, so the retained count is only what the clients left.
    let service = Service::start(&base_config("[sys]\ninterval_secs = 0\n"), &[], &[]).await;
    let v311 = ProtocolVersion::V3_1_1;

    let mut subscriber = RawClient::connect(service.mqtt, "metrics-sub", v311).await;
    subscriber
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: "t/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            ..Subscribe::default()
        }))
        .await;
    assert!(matches!(
        subscriber.next_packet().await,
        Some(Packet::SubAck(_))
    ));

    let mut publisher = RawClient::connect(service.mqtt, "metrics-pub", ProtocolVersion::V5).await;
    publisher
        .send(&publish("t/1", QoS::AtMostOnce, 0, false))
        .await;
    publisher
        .send(&publish("t/2", QoS::AtMostOnce, 0, false))
        .await;
    publisher
        .send(&publish("t/3", QoS::AtLeastOnce, 7, false))
        .await;
    assert!(matches!(
        publisher.next_packet().await,
        Some(Packet::PubAck(_))
    ));
    // Retained, and no subscriber: unrouted.
    publisher
        .send(&publish("r/1", QoS::AtMostOnce, 0, true))
        .await;
    // Clients may not publish to $SYS: dropped as denied, PUBACK 0x87.
    publisher
        .send(&publish("$SYS/fake", QoS::AtLeastOnce, 8, false))
        .await;
    match publisher.next_packet().await {
        Some(Packet::PubAck(ack)) => assert_eq!((ack.packet_id, ack.reason_code), (8, 0x87)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    for _ in 0..3 {
        match subscriber.next_packet().await {
            Some(Packet::Publish(message)) if message.qos == QoS::AtLeastOnce => {
                subscriber
                    .send(&Packet::PubAck(fleetmq::protocol::PubResponse {
                        packet_id: message.packet_id,
                        ..Default::default()
                    }))
                    .await
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // A round trip, so the broker has handled that PUBACK before the scrape.
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(subscriber.next_packet().await, Some(Packet::PingResp));
    // The publisher leaves; its clean session ends with it.
    publisher
        .send(&Packet::Disconnect(Default::default()))
        .await;
    assert!(publisher.next_packet().await.is_none());

    // Two refused connections: garbage, and a 3.1.1 client with an empty client id
    // asking for a persistent session.
    let mut garbage = RawClient::open(service.mqtt, v311).await;
    garbage.send_bytes(&[0x30, 0x02, 0x00, 0x00]).await;
    assert!(garbage.next_packet().await.is_none());
    let mut no_id = RawClient::open(service.mqtt, v311).await;
    no_id.send(&connect_packet("", v311, false)).await;
    match no_id.next_packet().await {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, 0x85),
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
    assert!(no_id.next_packet().await.is_none());

    let received =
        subscriber.bytes_sent + publisher.bytes_sent + garbage.bytes_sent + no_id.bytes_sent;
    let sent = subscriber.bytes_received
        + publisher.bytes_received
        + garbage.bytes_received
        + no_id.bytes_received;
    // A socket is counted closed, and written bytes counted sent, just after the
    // client can see it: wait for those two, then every other number must be final.
    let samples = crate::common::within("the closed sockets to be counted", async {
        loop {
            let samples = parse_prometheus(&service.scrape().await);
            if value(&samples, "fleetmq_connections_current") == 1.0
                && value(&samples, "fleetmq_bytes_sent_total") == sent as f64
            {
                return samples;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let expected = [
        ("fleetmq_connections_total", 4.0),
        (
            "fleetmq_connections_refused_total{reason=\"malformed_connect\"}",
            1.0,
        ),
        (
            "fleetmq_connections_refused_total{reason=\"client_id_invalid\"}",
            1.0,
        ),
        (
            "fleetmq_connections_refused_total{reason=\"bad_credentials\"}",
            0.0,
        ),
        ("fleetmq_auth_failures_total", 0.0),
        ("fleetmq_sessions{state=\"online\"}", 1.0),
        ("fleetmq_sessions{state=\"offline\"}", 0.0),
        ("fleetmq_subscriptions", 1.0),
        ("fleetmq_retained_messages", 1.0),
        ("fleetmq_messages_received_total{qos=\"0\"}", 3.0),
        ("fleetmq_messages_received_total{qos=\"1\"}", 1.0),
        ("fleetmq_messages_received_total{qos=\"2\"}", 0.0),
        ("fleetmq_messages_sent_total{qos=\"0\"}", 2.0),
        ("fleetmq_messages_sent_total{qos=\"1\"}", 1.0),
        ("fleetmq_messages_dropped_total{reason=\"acl_denied\"}", 1.0),
        ("fleetmq_messages_dropped_total{reason=\"queue_full\"}", 0.0),
        ("fleetmq_messages_unrouted_total", 1.0),
        ("fleetmq_queued_messages", 0.0),
        ("fleetmq_takeovers_total", 0.0),
        ("fleetmq_storage_errors_total", 0.0),
        // CONNECT x2 (+1 refused), SUBSCRIBE, PUBACK, PINGREQ, 5 PUBLISH, DISCONNECT.
        ("fleetmq_packets_received_total", 12.0),
        // CONNACK x3, SUBACK, PUBACK x2, PINGRESP, 3 PUBLISH.
        ("fleetmq_packets_sent_total", 10.0),
        // Clean sessions and messages for them never touch the store: the retained
        // message is the one write, synced once (`sync = "batch"`).
        ("fleetmq_storage_write_seconds_count", 1.0),
        ("fleetmq_storage_sync_seconds_count", 1.0),
    ];
    for (series, count) in expected {
        assert_eq!(value(&samples, series), count, "{series}");
    }
    assert_eq!(
        value(&samples, "fleetmq_bytes_received_total"),
        received as f64
    );
    assert!(value(&samples, "fleetmq_uptime_seconds") >= 0.0);
    // The retained message sits in a memtable, counted against storage.write_buffer_mb
    // (64 MiB by default); the block cache is within storage.block_cache_mb (16 MiB).
    let memtables = value(&samples, "fleetmq_storage_memtable_bytes");
    assert!(
        memtables > 0.0 && memtables <= 64.0 * 1024.0 * 1024.0,
        "memtables {memtables}"
    );
    let cached = value(&samples, "fleetmq_storage_block_cache_bytes");
    assert!(cached <= 16.0 * 1024.0 * 1024.0, "block cache {cached}");
    let version = format!(
        "fleetmq_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&samples, &version), 1.0);
}

#[test]
fn the_parser_rejects_malformed_exports() {
    let good = "# TYPE a_total counter\na_total{x=\"1\"} 3\n";
    assert_eq!(parse_prometheus(good).len(), 1);
    for bad in [
        "a_total 3\n",                  // no # TYPE
        "# TYPE a counter\na{x=1} 3\n", // unquoted label value
        "# TYPE a counter\na 3 4 x\n",  // bad value
        "# TYPE 1a counter\n1a 3\n",    // bad name
        "# TYPE a counter\na 1\na 2\n", // duplicate series
    ] {
        let result = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
}
