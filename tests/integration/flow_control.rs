//! Flow control between clients: every retained message reaches a new subscriber
//! whatever the queue limit, and a fast QoS 0 publisher is slowed down (its socket is
//! not read) rather than have its messages dropped for a slow subscriber, for a bounded
//! time only.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleetmq::broker::Dropped;
use fleetmq::config::Config;
use tokio::task::JoinHandle;

use crate::both_versions;
use crate::common::raw::RawClient;
use crate::common::wire::{PublishSpec, V311};
use crate::common::{client_id, start_broker, topic, GUARD};

both_versions!(
    every_retained_message_reaches_a_new_qos0_subscriber,
    every_retained_message_reaches_a_new_qos1_subscriber,
);

const RETAINED: usize = 5_000;

async fn every_retained_message_reaches_a_new_qos0_subscriber(version: u8) {
    retained_beyond_the_queue_limit(version, 0).await;
}

async fn every_retained_message_reaches_a_new_qos1_subscriber(version: u8) {
    retained_beyond_the_queue_limit(version, 1).await;
}

/// 5,000 retained topics, a queue of 100: a new `#` subscriber still gets all of them.
async fn retained_beyond_the_queue_limit(version: u8, qos: u8) {
    let broker = start_broker(|config| {
        config.limits.max_queued_messages = 100;
        config.limits.max_publish_rate = 1_000_000;
    })
    .await;
    let base = topic("backlog");
    let mut publisher = RawClient::connect(broker.addr, version, &client_id("retainer")).await;
    let mut burst = Vec::new();
    for index in 0..RETAINED {
        burst.extend(
            PublishSpec::new(&format!("{base}/{index}"), 1, b"state")
                .id((index % 60_000) as u16 + 1)
                .retain()
                .encode(version),
        );
    }
    publisher.send(&burst).await;
    // Every PUBACK: all are retained (and stored) before anyone subscribes.
    for _ in 0..RETAINED {
        publisher.recv().await;
    }

    let mut subscriber = RawClient::connect(broker.addr, version, &client_id("all")).await;
    subscriber.subscribe(&format!("{base}/#"), qos).await;
    let mut topics = BTreeSet::new();
    for _ in 0..RETAINED {
        let publish = subscriber.recv_publish().await;
        assert!(publish.retain, "{publish:?}");
        assert_eq!(publish.qos, qos);
        assert!(
            topics.insert(publish.topic),
            "a retained message came twice"
        );
    }
    assert_eq!(topics.len(), RETAINED);
    // Nothing beyond them, and the subscriber is still served.
    subscriber.ping().await;
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.dropped_total(), 0, "{stats:?}");
    }
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

/// Messages in one burst, and their payload size: 12 MB, more than loopback socket
/// buffers hold, so a subscriber that reads slowly pushes back on the broker.
const BURST: u32 = 1_500;
const PAYLOAD: usize = 8 * 1024;

/// Small queues and outboxes, so that backpressure is needed early; no publish rate
/// limit in the way.
fn tight(config: &mut Config) {
    config.limits.max_packet_size = 16 * 1024;
    config.limits.max_outbox_bytes = 64 * 1024;
    config.limits.max_queued_messages = 50;
    config.limits.max_publish_rate = 1_000_000;
}

/// `BURST` QoS 0 PUBLISHes to `topic`, each payload starting with its index.
fn burst(topic: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut payload = vec![0u8; PAYLOAD];
    for index in 0..BURST {
        payload[..4].copy_from_slice(&index.to_be_bytes());
        bytes.extend(PublishSpec::new(topic, 0, &payload).encode(V311));
    }
    bytes
}

fn index_of(payload: &[u8]) -> u32 {
    let mut index = [0u8; 4];
    index.copy_from_slice(&payload[..4]);
    u32::from_be_bytes(index)
}

/// A subscriber to `topic` at QoS 0 whose socket receive buffer is small, so that the
/// broker's writes to it back up quickly.
async fn small_buffer_subscriber(addr: SocketAddr, name: &str, topic: &str) -> RawClient {
    let mut subscriber =
        RawClient::connect_small_buffer(addr, V311, &client_id(name), 16 * 1024).await;
    subscriber.subscribe(topic, 0).await;
    subscriber
}

/// Connects a publisher and writes the whole burst to `topic` from a task of its own
/// (a paused publisher blocks in that write); `publisher_done` gets the client back.
async fn publish_burst(addr: SocketAddr, topic: &str) -> JoinHandle<RawClient> {
    let mut publisher = RawClient::connect(addr, V311, &client_id("fast")).await;
    let bytes = burst(topic);
    tokio::spawn(async move {
        publisher.send(&bytes).await;
        publisher
    })
}

/// The publisher of `publish_burst`, once it has written everything.
async fn publisher_done(publishing: JoinHandle<RawClient>) -> RawClient {
    tokio::time::timeout(GUARD, publishing)
        .await
        .expect("the publisher finished")
        .expect("publisher task")
}

/// Reads the burst's messages until the last one, or until the broker closes the
/// connection. With `pace`, waits a millisecond after every four messages (32 MB/s):
/// a subscriber that keeps reading, only slowly.
async fn receive_burst(subscriber: &mut RawClient, pace: bool) -> Vec<u32> {
    let mut indices = Vec::new();
    while let Some(packet) = subscriber.recv_or_closed().await {
        let crate::common::wire::Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        let index = index_of(&publish.payload);
        indices.push(index);
        if index == BURST - 1 {
            break;
        }
        if pace && indices.len() % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    indices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_gets_every_message_of_a_fast_qos0_publisher() {
    let broker = start_broker(tight).await;
    let t = topic("paced");
    let mut subscriber = small_buffer_subscriber(broker.addr, "slow", &t).await;
    let publishing = publish_burst(broker.addr, &t).await;

    let received = receive_burst(&mut subscriber, true).await;
    assert_eq!(
        received,
        (0..BURST).collect::<Vec<_>>(),
        "every message, in order"
    );
    let publisher = publisher_done(publishing).await;
    if let Some(stats) = broker.stats() {
        assert!(stats.publishers_paused > 0, "{stats:?}");
        assert_eq!(stats.dropped_total(), 0, "{stats:?}");
        assert_eq!(stats.slow_consumers, 0);
    }
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_waiting_the_same_slow_subscriber_loses_messages() {
    let broker = start_broker(|config| {
        tight(config);
        config.limits.slow_consumer_timeout_ms = 0;
    })
    .await;
    let t = topic("unpaced");
    let mut subscriber = small_buffer_subscriber(broker.addr, "slow", &t).await;
    let publishing = publish_burst(broker.addr, &t).await;

    // Nothing holds the publisher back; once it is done (PINGRESP: everything it sent
    // was routed), the subscriber gets what was not dropped, or is cut off.
    let mut publisher = publisher_done(publishing).await;
    publisher.ping().await;
    let Some(stats) = broker.stats() else {
        return;
    };
    assert_eq!(stats.publishers_paused, 0);
    let dropped = stats.dropped(Dropped::QueueFull);
    assert!(stats.slow_consumers + dropped > 0, "{stats:?}");
    // Counted in bytes, read at the same pace: a subscriber cut off as a slow consumer
    // may get its last packet cut short.
    let frame = PublishSpec::new(&t, 0, &[0u8; PAYLOAD]).encode(V311).len();
    let expected = (u64::from(BURST) - dropped) as usize * frame;
    let mut received = 0;
    while received < expected {
        match subscriber.read_raw(32 * 1024).await {
            Some(read) => received += read,
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        received < BURST as usize * frame,
        "all {BURST} arrived without backpressure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_the_publisher_back_only_for_the_timeout() {
    let broker = start_broker(|config| {
        tight(config);
        config.limits.slow_consumer_timeout_ms = 300;
    })
    .await;
    let t = topic("stuck");
    let mut stuck = small_buffer_subscriber(broker.addr, "stuck", &t).await;
    let mut healthy = RawClient::connect(broker.addr, V311, &client_id("healthy")).await;
    healthy.subscribe(&t, 0).await;
    let publishing = publish_burst(broker.addr, &t).await;

    // The other subscriber gets everything: the publisher waited for the stuck one at
    // most once, then its messages for it were dropped.
    let received = receive_burst(&mut healthy, false).await;
    assert_eq!(
        received,
        (0..BURST).collect::<Vec<_>>(),
        "every message, in order"
    );
    let publisher = publisher_done(publishing).await;

    // The stuck subscriber was disconnected as a slow consumer: what its socket holds
    // (the last packet possibly cut short), then the end of the stream.
    let buffered = stuck.read_until_closed().await;
    assert!(
        buffered < BURST as usize * PAYLOAD,
        "the stuck subscriber got {buffered} bytes"
    );
    if let Some(stats) = broker.stats() {
        assert_eq!(stats.slow_consumers, 1, "{stats:?}");
        assert!(stats.publishers_paused > 0, "{stats:?}");
    }
    publisher.disconnect().await;
    healthy.disconnect().await;
}
