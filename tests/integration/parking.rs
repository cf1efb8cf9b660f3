//! Parked connections (idle plain-TCP clients kept as their socket, without a task):
//! they come back for their client's packets, for deliveries, keep-alive expiry, a
//! takeover, an operator's kick and shutdown, and behave as if never parked. The broker
//! parks after 50 ms here; each test waits until the broker reports its clients parked
//! (`connections_parked`) before it acts.

use std::time::{Duration, Instant};

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{self, ConnectSpec, Packet, PublishSpec, WillSpec, V311, V5};
use crate::common::{client_id, start_broker, topic, Broker, GUARD};

async fn parking_broker() -> Broker {
    start_broker(|config| config.limits.park_after_ms = 50).await
}

/// Waits until exactly `parked` connections are parked (the broker's gauge).
async fn until_parked(broker: &Broker, parked: u64) {
    let deadline = Instant::now() + GUARD;
    loop {
        let Some(stats) = broker.stats() else {
            return;
        };
        if stats.connections_parked == parked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} connections parked, {parked} expected",
            stats.connections_parked
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

both_versions!(
    a_parked_subscriber_receives_what_is_published,
    a_parked_client_is_read,
    keep_alive_expires_while_parked_with_the_will,
    a_parked_client_that_closes_leaves_its_will,
    a_parked_connection_is_taken_over,
    a_parked_connection_is_kicked,
    a_qos_2_flow_goes_on_across_a_park,
);

async fn a_parked_subscriber_receives_what_is_published(version: u8) {
    let broker = parking_broker().await;
    let t = topic("parked");
    let mut subscriber = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    subscriber.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    until_parked(&broker, 2).await;
    for round in 0..3u8 {
        publisher.publish_simple(&t, 1, &[round]).await;
        let message = subscriber.recv_publish().await;
        assert_eq!((message.payload, message.qos), (vec![round], 1));
        // Both idle again: parked again, and the next message still arrives.
        until_parked(&broker, 2).await;
    }
    if let Some(stats) = broker.stats() {
        assert_eq!(
            stats.connections_open(),
            2,
            "parked connections are open ones"
        );
    }
}

async fn a_parked_client_is_read(version: u8) {
    let broker = parking_broker().await;
    let spec = ConnectSpec::new(version, &client_id("ping")).keep_alive(60);
    let mut client = RawClient::connect_ok(broker.addr, &spec).await;
    for _ in 0..3 {
        until_parked(&broker, 1).await;
        client.ping().await;
    }
    until_parked(&broker, 1).await;
    client.disconnect().await;
    until_parked(&broker, 0).await;
}

async fn keep_alive_expires_while_parked_with_the_will(version: u8) {
    let broker = parking_broker().await;
    let t = topic("kapark");
    let mut watcher = RawClient::connect(broker.addr, V5, &client_id("watcher")).await;
    watcher.subscribe(&t, 1).await;
    let spec = ConnectSpec::new(version, &client_id("silent"))
        .keep_alive(2)
        .will(WillSpec::new(&t, b"timed out", 1));
    let connected = Instant::now();
    let mut silent = RawClient::connect_ok(broker.addr, &spec).await;
    until_parked(&broker, 2).await;
    let will = watcher.recv_publish().await;
    assert_eq!(will.payload, b"timed out");
    let elapsed = connected.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "closed after {elapsed:?}, before 1.5 x keep alive"
    );
    // MQTT 5 gets DISCONNECT 0x8D Keep alive timeout first.
    silent.closed_after(connected, 0x8D).await;
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.keep_alive_timeouts, 1);
    }
}

async fn a_parked_client_that_closes_leaves_its_will(version: u8) {
    let broker = parking_broker().await;
    let t = topic("dropwill");
    let mut watcher = RawClient::connect(broker.addr, V5, &client_id("watcher")).await;
    watcher.subscribe(&t, 1).await;
    let spec = ConnectSpec::new(version, &client_id("leaver")).will(WillSpec::new(&t, b"gone", 1));
    let leaver = RawClient::connect_ok(broker.addr, &spec).await;
    until_parked(&broker, 2).await;
    leaver.drop_connection().await;
    assert_eq!(watcher.recv_publish().await.payload, b"gone");
}

async fn a_parked_connection_is_taken_over(version: u8) {
    let broker = parking_broker().await;
    let id = client_id("taken");
    let mut first = RawClient::connect(broker.addr, version, &id).await;
    until_parked(&broker, 1).await;
    let _second = RawClient::connect(broker.addr, version, &id).await;
    if version == V5 {
        first.expect_disconnect(0x8E).await;
    } else {
        first.expect_closed().await;
    }
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.takeovers, 1);
    }
}

async fn a_parked_connection_is_kicked(version: u8) {
    let broker = parking_broker().await;
    let Some(inner) = broker.inner().cloned() else {
        return;
    };
    let id = client_id("kicked");
    let mut client = RawClient::connect(broker.addr, version, &id).await;
    until_parked(&broker, 1).await;
    assert!(inner.kick(&id, false).is_some());
    if version == V5 {
        client.expect_disconnect(0x98).await;
    } else {
        client.expect_closed().await;
    }
}

/// Shutdown brings parked connections back to say why they close, and waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections() {
    let broker = parking_broker().await;
    let mut v5 = RawClient::connect(broker.addr, V5, &client_id("v5")).await;
    let mut v311 = RawClient::connect(broker.addr, V311, &client_id("v311")).await;
    until_parked(&broker, 2).await;
    let clients = async {
        v5.expect_disconnect(0x8B).await;
        v311.expect_closed().await;
    };
    tokio::time::timeout(GUARD, async { tokio::join!(broker.shutdown(), clients) })
        .await
        .expect("shutdown ends once the parked connections closed");
}

/// With `park_after_ms = 0` nothing is parked: a broker beside it, whose clients
/// connected later, parks its clients, and this one still has none parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parking_can_be_turned_off() {
    let broker = start_broker(|config| config.limits.park_after_ms = 0).await;
    let t = topic("unparked");
    let mut subscriber = RawClient::connect(broker.addr, V311, &client_id("sub")).await;
    subscriber.subscribe(&t, 0).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    let parking = parking_broker().await;
    let _parked = RawClient::connect(parking.addr, V311, &client_id("parked")).await;
    until_parked(&parking, 1).await;
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.connections_parked, 0);
    }
    publisher.publish_simple(&t, 0, b"x").await;
    assert_eq!(subscriber.recv_publish().await.payload, b"x");
}

/// A burst of messages to a parked subscriber arrives whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_parked_subscriber_arrives_in_order() {
    let broker = parking_broker().await;
    let t = topic("burst");
    let mut subscriber = RawClient::connect(broker.addr, V311, &client_id("sub")).await;
    subscriber.subscribe(&t, 1).await;
    let mut publisher = RawClient::connect(broker.addr, V311, &client_id("pub")).await;
    until_parked(&broker, 2).await;
    for index in 0..50u8 {
        publisher.publish_simple(&t, 1, &[index]).await;
    }
    for index in 0..50u8 {
        let message = subscriber.recv_publish().await;
        assert_eq!(message.payload, vec![index]);
    }
}

/// A publisher parked between PUBREC and PUBREL completes its QoS 2 flow when it comes
/// back: the session kept the packet id, the parked entry nothing of it.
async fn a_qos_2_flow_goes_on_across_a_park(version: u8) {
    let broker = parking_broker().await;
    let t = topic("qos2park");
    let mut subscriber = RawClient::connect(broker.addr, version, &client_id("sub")).await;
    subscriber.subscribe(&t, 0).await;
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("pub")).await;
    publisher
        .send(&PublishSpec::new(&t, 2, b"once").id(9).encode(version))
        .await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    assert_eq!(subscriber.recv_publish().await.payload, b"once");
    until_parked(&broker, 2).await;
    publisher.send(&wire::ack(wire::PUBREL, 9)).await;
    match publisher.recv().await {
        Packet::PubComp(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The same packet id again, after the flow completed: a new message.
    until_parked(&broker, 2).await;
    publisher
        .send(&PublishSpec::new(&t, 2, b"twice").id(9).encode(version))
        .await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    assert_eq!(subscriber.recv_publish().await.payload, b"twice");
}
