//! Persistent sessions: messages queued while the client is away, unacknowledged
//! deliveries resent with DUP after reconnection, the QoS 2 PUBREL resent, and the bound
//! on the offline queue.

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{self, ConnectSpec, Packet, V311, V5};
use crate::common::{client_id, start_broker, start_default, topic};

both_versions!(
    offline_qos1_qos2_messages_delivered_on_reconnect,
    unacknowledged_qos1_redelivered_with_dup,
    unacknowledged_qos2_publish_redelivered_with_dup,
    qos2_pubrel_resent_after_reconnect,
    offline_queue_limit_keeps_the_first_messages,
    clean_session_discards_queued_messages,
);

fn persistent(version: u8, id: &str) -> ConnectSpec {
    ConnectSpec::new(version, id)
        .clean(false)
        .session_expiry(300)
}

/// Reconnects with the persistent session and asserts the broker reports it present.
async fn resume(addr: std::net::SocketAddr, version: u8, id: &str) -> RawClient {
    let (c, connack) = RawClient::connect_with(addr, &persistent(version, id)).await;
    match connack {
        Packet::ConnAck {
            session_present: true,
            code: 0,
            ..
        } => c,
        other => panic!("expected CONNACK with session present, got {other:?}"),
    }
}

async fn offline_qos1_qos2_messages_delivered_on_reconnect(version: u8) {
    let broker = start_default().await;
    let id = client_id("offline");
    let t = topic("offline");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 2).await;
    sub.disconnect().await;

    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, b"one").await;
    publisher.publish_simple(&t, 2, b"two").await;

    let mut sub = resume(broker.addr, version, &id).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.qos, p.payload.as_slice(), p.topic.as_str()),
        (1, &b"one"[..], t.as_str())
    );
    let p = sub.recv_publish().await;
    assert_eq!((p.qos, p.payload.as_slice()), (2, &b"two"[..]));

    // The subscription itself survived too: a live message arrives, and nothing else did.
    publisher.publish_simple(&t, 1, b"sentinel").await;
    assert_eq!(sub.recv_publish().await.payload, b"sentinel");
}

async fn unacknowledged_qos1_redelivered_with_dup(version: u8) {
    let broker = start_default().await;
    let id = client_id("dup1");
    let t = topic("dup1");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, b"unacked").await;

    let first = sub.recv_publish_noack().await;
    assert_eq!(
        (first.qos, first.dup, first.payload.as_slice()),
        (1, false, &b"unacked"[..])
    );
    sub.disconnect().await;

    let mut sub = resume(broker.addr, version, &id).await;
    let again = sub.recv_publish_noack().await;
    assert!(again.dup, "a resent PUBLISH has DUP set: {again:?}");
    assert_eq!(
        (again.qos, again.packet_id, again.payload.as_slice()),
        (1, first.packet_id, &b"unacked"[..]),
        "resent with the same packet id"
    );
    sub.ack_publish(&again).await;
    publisher.publish_simple(&t, 1, b"sentinel").await;
    let p = sub.recv_publish().await;
    assert_eq!((p.payload.as_slice(), p.dup), (&b"sentinel"[..], false));
}

async fn unacknowledged_qos2_publish_redelivered_with_dup(version: u8) {
    let broker = start_default().await;
    let id = client_id("dup2");
    let t = topic("dup2");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 2).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 2, b"unreceived").await;

    let first = sub.recv_publish_noack().await;
    assert_eq!((first.qos, first.dup), (2, false));
    // Dropped without DISCONNECT this time.
    sub.drop_connection().await;

    let mut sub = resume(broker.addr, version, &id).await;
    let again = sub.recv_publish_noack().await;
    assert_eq!(
        (
            again.dup,
            again.qos,
            again.packet_id,
            again.payload.as_slice()
        ),
        (true, 2, first.packet_id, &b"unreceived"[..])
    );
    sub.ack_publish(&again).await;
    publisher.publish_simple(&t, 2, b"sentinel").await;
    assert_eq!(sub.recv_publish().await.payload, b"sentinel");
}

async fn qos2_pubrel_resent_after_reconnect(version: u8) {
    let broker = start_default().await;
    let id = client_id("pubrel");
    let t = topic("pubrel");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 2).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 2, b"half done").await;

    let p = sub.recv_publish_noack().await;
    sub.send(&wire::ack(wire::PUBREC, p.packet_id)).await;
    match sub.recv().await {
        Packet::PubRel(a) => assert_eq!(a.packet_id, p.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    // PUBCOMP never sent: the broker must resend PUBREL, not the PUBLISH.
    sub.disconnect().await;

    let mut sub = resume(broker.addr, version, &id).await;
    let mut expected = vec![0x62, 0x02];
    expected.extend_from_slice(&p.packet_id.to_be_bytes());
    assert_eq!(sub.recv_bytes().await, expected, "PUBREL resent");
    sub.send(&wire::ack(wire::PUBCOMP, p.packet_id)).await;
    publisher.publish_simple(&t, 2, b"sentinel").await;
    assert_eq!(sub.recv_publish().await.payload, b"sentinel");
}

async fn offline_queue_limit_keeps_the_first_messages(version: u8) {
    let broker = start_broker(|c| c.limits.max_queued_messages = 5).await;
    let id = client_id("limit");
    let t = topic("limit");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 1).await;
    sub.disconnect().await;

    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    for i in 0..10 {
        publisher
            .publish_simple(&t, 1, format!("m{i}").as_bytes())
            .await;
    }

    let mut sub = resume(broker.addr, version, &id).await;
    publisher.publish_simple(&t, 1, b"sentinel").await;
    let seen: Vec<String> = sub
        .payloads_until(b"sentinel")
        .await
        .into_iter()
        .map(|p| String::from_utf8(p).expect("utf-8"))
        .collect();
    // Like Mosquitto, a full queue drops the newest messages.
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4"]);
}

async fn clean_session_discards_queued_messages(version: u8) {
    let broker = start_default().await;
    let id = client_id("discard");
    let t = topic("discard");
    let mut sub = RawClient::connect_ok(broker.addr, &persistent(version, &id)).await;
    sub.subscribe(&t, 1).await;
    sub.disconnect().await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    publisher.publish_simple(&t, 1, b"stale").await;

    let mut sub = RawClient::connect(broker.addr, version, &id).await;
    // The subscription went with the session, so subscribe again to see live traffic.
    sub.subscribe(&t, 1).await;
    publisher.publish_simple(&t, 1, b"sentinel").await;
    let seen = sub.payloads_until(b"sentinel").await;
    assert!(
        seen.is_empty(),
        "clean session received the old session's messages: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expires_after_its_interval() {
    let broker = start_default().await;
    let id = client_id("expire");
    let short = ConnectSpec::new(V5, &id).clean(false).session_expiry(1);
    let mut c = RawClient::connect_ok(broker.addr, &short).await;
    c.subscribe(&topic("expire"), 1).await;
    c.disconnect().await;
    // Session expiry is about time passing: wait beyond the 1 s interval.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (_c, connack) = RawClient::connect_with(broker.addr, &persistent(V5, &id)).await;
    assert!(
        matches!(
            connack,
            Packet::ConnAck {
                session_present: false,
                code: 0,
                ..
            }
        ),
        "the session outlived its expiry interval: {connack:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_sets_session_expiry_to_zero() {
    let broker = start_default().await;
    let id = client_id("end");
    let mut c = RawClient::connect_ok(broker.addr, &persistent(V5, &id)).await;
    c.send(&wire::disconnect_v5(
        0x00,
        &[wire::Prop::U32(wire::prop::SESSION_EXPIRY_INTERVAL, 0)],
    ))
    .await;
    c.expect_closed().await;
    let (_c, connack) = RawClient::connect_with(broker.addr, &persistent(V5, &id)).await;
    assert!(
        matches!(
            connack,
            Packet::ConnAck {
                session_present: false,
                code: 0,
                ..
            }
        ),
        "DISCONNECT with Session Expiry Interval 0 ends the session: {connack:?}"
    );
}
