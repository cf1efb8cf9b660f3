//! Flow control across nodes: a QoS 1 publisher on one node is paused while the link to
//! a subscriber's node is congested (by the outbox's high-water mark, or by its window of
//! messages waiting for that node's acknowledgement), and every message it had
//! acknowledged arrives, in order; QoS 0 beyond a full outbox is dropped and counted, and never pauses anyone; a
//! QoS 1 message that does not fit the outbox is not acknowledged (MQTT 3: the publisher
//! is disconnected).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::mqtt::Subscriber;
use crate::common::{eventually, metric_value, wait_routed, within, Cluster};

/// Big enough that a window of 100 messages of `PAYLOAD` bytes fits between the
/// high-water mark (half) and the limit.
const LINK_BUFFER_BYTES: usize = 1024 * 1024;
const PAYLOAD: usize = 4 * 1024;
/// Upper bound of each load loop (48 MiB): the sockets' buffers and the outbox fill
/// long before.
const MAX_MESSAGES: usize = 12_000;

async fn metric(cluster: &Cluster, node: u64, name: &str) -> f64 {
    metric_value(&cluster.metrics(node).await, name).unwrap_or(0.0)
}

fn payload(i: usize) -> Vec<u8> {
    let mut payload = format!("{i:08}").into_bytes();
    payload.resize(PAYLOAD, b'.');
    payload
}

fn index(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[..8]).unwrap().parse().unwrap()
}

/// A MQTT 3.1.1 publisher whose PUBACKs are counted; any connection error is recorded.
struct CountingPublisher {
    client: rumqttc::AsyncClient,
    acknowledged: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingPublisher {
    async fn connect(cluster: &Cluster, node: u64, client_id: &str) -> CountingPublisher {
        let addr = cluster.mqtt(node);
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (connected, is_connected) = tokio::sync::oneshot::channel();
        let mut connected = Some(connected);
        let task = {
            let acknowledged = acknowledged.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            if let Some(connected) = connected.take() {
                                let _ = connected.send(());
                            }
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
        };
        within("the publisher's CONNACK", is_connected)
            .await
            .unwrap();
        CountingPublisher {
            client,
            acknowledged,
            failed,
            task,
        }
    }

    /// Publishes `payload(i)` for i = 0.. until `stop` is set, `MAX_MESSAGES` or the
    /// connection failed; returns how many were handed to the client.
    fn publish_until(
        &self,
        qos: rumqttc::QoS,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<usize> {
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < MAX_MESSAGES && !stop.load(Ordering::SeqCst) {
                // The event loop ended: the connection failed (counted in `failed`).
                if client
                    .publish("flow/stream", qos, false, payload(sent))
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
            sent
        })
    }
}

impl Drop for CountingPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn three_nodes_with_a_small_link_buffer() -> Cluster {
    three_nodes_with_link_buffer(LINK_BUFFER_BYTES).await
}

async fn three_nodes_with_link_buffer(link_buffer_bytes: usize) -> Cluster {
    let mut cluster = Cluster::configure(3, &[]).await;
    cluster.configure_section(
        "cluster",
        &format!("link_buffer_bytes = {link_buffer_bytes}\nlink_timeout_ms = 60000"),
    );
    // Nothing but the link may lose or hold up messages in these tests.
    cluster.configure_section(
        "limits",
        "slow_consumer_timeout_ms = 60000\nmax_queued_messages = 100000",
    );
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_congested_link_pauses_qos_1_publishers_and_loses_nothing_they_were_acknowledged() {
    let cluster = three_nodes_with_a_small_link_buffer().await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(2), "flow-sub", 0);
    subscriber.connected().await;
    subscriber.subscribe("flow/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "flow/probe", &mut subscriber).await;
    subscriber.drain_probes("flow/probe");
    let publisher = CountingPublisher::connect(&cluster, 1, "flow-pub").await;
    let paused_name = "fleetmq_cluster_link_paused_publishes_total{peer=\"2\"}";
    let dropped_name = "fleetmq_cluster_forward_dropped_total";
    let dropped_before = metric(&cluster, 1, dropped_name).await;

    cluster.pause_link(1, 2, true);
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publisher.publish_until(rumqttc::QoS::AtLeastOnce, stop.clone());
    // Held either way: by the outbox above its high-water mark, or by its window of
    // 100 messages waiting for node 2's acknowledgements (which come once node 2 stored
    // them, after the link resumes).
    let unacked_name = "fleetmq_cluster_forwards_unacked{peer=\"2\"}";
    eventually("node 1 to hold the publisher for node 2's link", || async {
        let paused = metric(&cluster, 1, paused_name).await >= 1.0;
        let window_full = metric(&cluster, 1, unacked_name).await >= 100.0;
        (paused || window_full).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    cluster.pause_link(1, 2, false);
    let sent = within("the publisher to stop", publishing).await.unwrap();

    eventually("every message to be acknowledged", || async {
        assert!(
            !publisher.failed.load(Ordering::SeqCst),
            "the publisher was disconnected"
        );
        (publisher.acknowledged.load(Ordering::SeqCst) == sent).then_some(())
    })
    .await;
    for i in 0..sent {
        let received = subscriber.next_publish().await;
        assert_eq!(received.topic, "flow/stream");
        assert_eq!(
            index(&received.payload),
            i,
            "message {i} of {sent}, in order"
        );
    }
    assert_eq!(
        metric(&cluster, 1, dropped_name).await,
        dropped_before,
        "nothing dropped at the link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_beyond_a_full_outbox_is_dropped_counted_and_pauses_nobody() {
    let cluster = three_nodes_with_a_small_link_buffer().await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(2), "flow0-sub", 0);
    subscriber.connected().await;
    subscriber.subscribe("flow/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "flow/probe", &mut subscriber).await;
    subscriber.drain_probes("flow/probe");
    let publisher = CountingPublisher::connect(&cluster, 1, "flow0-pub").await;
    let dropped_name = "fleetmq_cluster_forward_dropped_total";
    let dropped_before = metric(&cluster, 1, dropped_name).await;

    cluster.pause_link(1, 2, true);
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publisher.publish_until(rumqttc::QoS::AtMostOnce, stop.clone());
    eventually(
        "QoS 0 messages to be dropped at node 2's full outbox",
        || async { (metric(&cluster, 1, dropped_name).await > dropped_before).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let sent = within("the publisher to stop", publishing).await.unwrap();
    // Before the QoS 1 marker below, which may well be paused itself.
    let paused = metric(
        &cluster,
        1,
        "fleetmq_cluster_link_paused_publishes_total{peer=\"2\"}",
    )
    .await;
    assert_eq!(paused, 0.0, "QoS 0 never pauses");
    cluster.pause_link(1, 2, false);

    // A QoS 1 marker after the stream: everything before it has arrived.
    publisher
        .client
        .publish(
            "flow/marker",
            rumqttc::QoS::AtLeastOnce,
            false,
            b"end".to_vec(),
        )
        .await
        .unwrap();
    let mut received = 0;
    let mut last = None;
    loop {
        let message = subscriber.next_publish().await;
        if message.topic == "flow/marker" {
            break;
        }
        let i = index(&message.payload);
        assert!(
            last.is_none_or(|last| i > last),
            "in order: {i} after {last:?}"
        );
        last = Some(i);
        received += 1;
    }
    let dropped = (metric(&cluster, 1, dropped_name).await - dropped_before) as usize;
    assert!(dropped >= 1);
    assert!(
        received + dropped <= sent,
        "{received} received + {dropped} dropped of {sent}"
    );
    assert!(!publisher.failed.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_1_message_beyond_a_full_outbox_is_not_acknowledged() {
    // 64 KiB: a window of 100 messages of 4 KiB does not fit above the high-water mark.
    let cluster = three_nodes_with_link_buffer(64 * 1024).await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(2), "full-sub", 0);
    subscriber.connected().await;
    subscriber.subscribe("flow/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "flow/probe", &mut subscriber).await;
    subscriber.drain_probes("flow/probe");
    let publisher = CountingPublisher::connect(&cluster, 1, "full-pub").await;
    let dropped_name = "fleetmq_cluster_forward_dropped_total";
    let dropped_before = metric(&cluster, 1, dropped_name).await;

    cluster.pause_link(1, 2, true);
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publisher.publish_until(rumqttc::QoS::AtLeastOnce, stop.clone());
    eventually(
        "the MQTT 3 publisher to be disconnected unacknowledged",
        || async { publisher.failed.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let acknowledged = publisher.acknowledged.load(Ordering::SeqCst);
    assert!(metric(&cluster, 1, dropped_name).await > dropped_before);
    cluster.pause_link(1, 2, false);
    publishing.abort();

    // Every acknowledged message arrives, first and in order (messages queued but not
    // yet acknowledged when the publisher was disconnected may follow).
    for i in 0..acknowledged {
        let received = subscriber.next_publish().await;
        assert_eq!(index(&received.payload), i, "message {i} of {acknowledged}");
    }
}
