//! Every configured limit, hit while another client keeps being served.

use fleetmq::config::{Config, LimitsConfig, ListenerKind};
use fleetmq::protocol::{reason, Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter};

use crate::common::*;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn config(limits: LimitsConfig) -> Config {
    Config {
        listeners: vec![loopback(ListenerKind::Tcp), loopback(ListenerKind::Tcp)],
        limits,
        ..Config::default()
    }
}

#[tokio::test]
async fn listener_connection_limit_closes_the_excess_only() {
    let mut config = config(LimitsConfig::default());
    config.listeners[1].max_connections = Some(2);
    let server = start(config).await;
    let limited = server.listener_addrs()[1];
    let _first = connected(limited, V5, "one").await;
    let _second = connected(limited, V5, "two").await;
    let mut third = Raw::tcp(limited, V5).await;
    assert_eq!(
        third.connect(connect_packet(V5, "three", None, None)).await,
        None
    );
    still_serving(server.local_addr()).await;
    drop(_first);
    // The slot comes back once the broker notices the close.
    within("a free slot", async {
        loop {
            let mut again = Raw::tcp(limited, V5).await;
            if again.connect(connect_packet(V5, "again", None, None)).await == Some(0) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn global_connection_limit_spans_listeners() {
    let server = start(config(LimitsConfig {
        max_connections: 2,
        ..LimitsConfig::default()
    }))
    .await;
    let [first, second] = [server.listener_addrs()[0], server.listener_addrs()[1]];
    let mut held_one = connected(first, V5, "a").await;
    let _held_two = connected(second, V5, "b").await;
    assert_eq!(server.open_connections(), 2);
    let mut excess = Raw::tcp(second, V5).await;
    assert_eq!(
        excess.connect(connect_packet(V5, "c", None, None)).await,
        None
    );
    held_one.send(Packet::PingReq).await;
    assert_eq!(held_one.next().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn connection_rate_is_limited_per_listener_before_any_byte_is_read() {
    let mut config = config(LimitsConfig::default());
    config.listeners[1].max_connection_rate = Some(2);
    let server = start(config).await;
    let limited = server.listener_addrs()[1];
    let mut refused = 0;
    for index in 0..4 {
        let mut client = Raw::tcp(limited, V5).await;
        if client
            .connect(connect_packet(V5, &format!("r{index}"), None, None))
            .await
            .is_none()
        {
            refused += 1;
        }
    }
    assert!(refused >= 1, "4 connections at once on a 2/s listener");
    still_serving(server.local_addr()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn publish_rate_refuses_with_0x97_then_disconnects_with_0x96() {
    let server = start(config(LimitsConfig {
        max_publish_rate: 3,
        ..LimitsConfig::default()
    }))
    .await;
    let mut client = connected(server.local_addr(), V5, "chatty").await;
    let mut codes = Vec::new();
    for id in 1..=6u16 {
        client
            .send(publish("rate/x", QoS::AtLeastOnce, id, "x"))
            .await;
        match client.next().await {
            Some(Packet::PubAck(ack)) => codes.push(ack.reason_code),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // Over the rate: refused, not delivered (0x10: no subscribers for the accepted ones).
    assert_eq!(&codes[..3], [reason::NO_MATCHING_SUBSCRIBERS; 3]);
    assert!(
        codes[3..]
            .iter()
            .all(|code| *code == reason::QUOTA_EXCEEDED),
        "{codes:?}"
    );
    // Twice the rate: disconnected.
    for id in 7..=12u16 {
        client
            .send(publish("rate/x", QoS::AtMostOnce, id, "x"))
            .await;
    }
    assert_eq!(
        client.closed_with().await,
        Some(reason::MESSAGE_RATE_TOO_HIGH)
    );
    still_serving(server.local_addr()).await;
    server.shutdown().await;
}

fn subscribe(filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 3,
        filters: filters
            .iter()
            .map(|filter| SubscribeFilter {
                filter: (*filter).into(),
                options: Default::default(),
            })
            .collect(),
        subscription_identifier: None,
        user_properties: Vec::new(),
    })
}

#[tokio::test]
async fn subscriptions_and_topic_sizes_are_bounded() {
    let server = start(config(LimitsConfig {
        max_subscriptions: 2,
        max_topic_levels: 3,
        max_topic_length: 20,
        ..LimitsConfig::default()
    }))
    .await;
    let mut client = connected(server.local_addr(), V5, "subs").await;
    let long = "x".repeat(21);
    client
        .send(subscribe(&["a/1", "a/1", "a/2", "a/3", "a/b/c/d", &long]))
        .await;
    match client.next().await {
        Some(Packet::SubAck(suback)) => assert_eq!(
            suback.reason_codes,
            [
                0,
                0,
                0,
                reason::QUOTA_EXCEEDED,
                reason::TOPIC_FILTER_INVALID,
                reason::TOPIC_FILTER_INVALID
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut v3 = connected(server.local_addr(), V3, "subs3").await;
    v3.send(subscribe(&["q/1", "q/2", "q/3"])).await;
    assert!(matches!(v3.next().await, Some(Packet::SubAck(s)) if s.reason_codes == [0, 0, 0x80]));
    // A PUBLISH beyond the topic limits closes that connection (0x90).
    client
        .send(publish("a/b/c/d", QoS::AtMostOnce, 0, "deep"))
        .await;
    assert_eq!(client.closed_with().await, Some(reason::TOPIC_NAME_INVALID));
    v3.send(Packet::PingReq).await;
    assert_eq!(v3.next().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn long_client_identifiers_are_refused() {
    let server = start(config(LimitsConfig {
        max_client_id_length: 23,
        ..LimitsConfig::default()
    }))
    .await;
    let long = "d".repeat(24);
    let mut v5 = Raw::tcp(server.local_addr(), V5).await;
    assert_eq!(
        v5.connect(connect_packet(V5, &long, None, None)).await,
        Some(reason::CLIENT_IDENTIFIER_NOT_VALID)
    );
    let mut v3 = Raw::tcp(server.local_addr(), V3).await;
    // 3.1.1 return code 0x02, which the codec reports as its MQTT 5 equivalent.
    assert_eq!(
        v3.connect(connect_packet(V3, &long, None, None)).await,
        Some(reason::CLIENT_IDENTIFIER_NOT_VALID)
    );
    let _ok = connected(server.local_addr(), V5, &"d".repeat(23)).await;
    still_serving(server.local_addr()).await;
    server.shutdown().await;
}
