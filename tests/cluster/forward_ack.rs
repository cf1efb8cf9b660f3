//! A QoS 1/2 message forwarded to another node is acknowledged to its publisher only
//! once that node stored it durably: publisher on node 1, persistent subscriber on node
//! 2 (whose backup is node 3). The link 1-2 stalls (the proxy holds every byte), the
//! publishers send, node 2 dies (kill -9) with the messages still on their way, and the
//! subscriber comes back on node 3: it must get every message a publisher was told was
//! accepted. (Acknowledged at node 1's own store write, as before, they were lost.)
//! Node 2 then comes back and gets the messages node 1 kept for it: it holds them until
//! it caught up with the cluster, then routes them to nobody (its copy of the session
//! moved away) and acknowledges them, so every publisher is answered "accepted" the
//! first time and the subscriber gets each message once. (Routed at once into the
//! restored copy, they were refused, because that copy cannot be kept, and each
//! publisher sent its message again: the subscriber got it twice.)

use std::collections::BTreeSet;

use crate::common::acked::{Outcome, RawClient};
use crate::common::mqtt::Subscriber;
use crate::common::{eventually, metric_value, wait_routed, Cluster, WAIT};

const PUBLISHERS: usize = 5;
const PER_PUBLISHER: usize = 4;

/// The value of `name` on node `id`, `None` while it does not answer.
async fn metric(cluster: &Cluster, id: u64, name: &str) -> Option<f64> {
    metric_value(&cluster.try_metrics(id).await?, name)
}

/// Publishes `count` QoS 1 messages `"{name}-{n}"` one at a time, each again (new
/// packet id) until accepted; returns the payloads the broker accepted and how many
/// times it refused one.
async fn publish(mut publisher: RawClient, name: String, count: usize) -> (Vec<String>, usize) {
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut packet_id = 0u16;
    for n in 0..count {
        let payload = format!("{name}-{n}");
        loop {
            packet_id = packet_id % 60_000 + 1;
            match publisher
                .publish("fa/data", 1, packet_id, payload.as_bytes(), false)
                .await
                .unwrap()
            {
                Outcome::Accepted => break,
                Outcome::Refused(_) => refused += 1,
            }
        }
        accepted.push(payload);
    }
    (accepted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_message_is_acknowledged_only_once_stored_on_the_subscribers_node() {
    // The forward timeout beyond the test: a message is refused only if a node refused it.
    let mut cluster = Cluster::start_with(3, |cluster| {
        cluster.configure_section("cluster", "forward_ack_timeout_ms = 60000")
    })
    .await;
    eventually("node 2's backup in sync", || async {
        (metric(&cluster, 2, "fleetmq_cluster_backups_in_sync").await? == 1.0).then_some(())
    })
    .await;

    let mut subscriber = Subscriber::v5(cluster.mqtt(2), "fa-sub", 3600);
    assert!(!subscriber.connected().await);
    subscriber.subscribe("fa/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "fa/probe", &mut subscriber).await;
    drop(subscriber);

    let mut connected = Vec::new();
    for n in 0..PUBLISHERS {
        let name = format!("fa-pub{n}");
        let (publisher, _) = RawClient::connect(cluster.mqtt(1), &name, 5).await.unwrap();
        connected.push((publisher, name));
    }
    // The link 1-2 stalls: what node 1 forwards stays on its way.
    cluster.pause_link(1, 2, true);
    let forwarded_before = metric(&cluster, 1, "fleetmq_cluster_forwarded_messages_total")
        .await
        .unwrap_or(0.0);
    let publishers: Vec<_> = connected
        .into_iter()
        .map(|(publisher, name)| tokio::spawn(publish(publisher, name, PER_PUBLISHER)))
        .collect();
    eventually("every publisher's first message forwarded", || async {
        let forwarded = metric(&cluster, 1, "fleetmq_cluster_forwarded_messages_total").await?;
        (forwarded >= forwarded_before + PUBLISHERS as f64).then_some(())
    })
    .await;
    cluster.kill(2).await;
    cluster.pause_link(1, 2, false);

    // The subscriber's session comes back on node 3 (node 2's backup)...
    cluster.wait_for_leader(&[1, 3]).await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(3), "fa-sub", 3600);
    assert!(
        subscriber.connected().await,
        "session present after the failover"
    );
    // ... and node 2 returns (fenced: its session moved), so node 1 hears from it.
    cluster.spawn(2);
    cluster.wait_for_leader(&[1, 2, 3]).await;

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for publisher in publishers {
        let (payloads, refusals) = tokio::time::timeout(WAIT, publisher)
            .await
            .expect("the publishers to finish")
            .unwrap();
        accepted.extend(payloads);
        refused += refusals;
    }
    assert_eq!(accepted.len(), PUBLISHERS * PER_PUBLISHER);

    let mut received = BTreeSet::new();
    let mut twice = Vec::new();
    // Shorter than a single event's wait, so that a loss fails here, named.
    let complete = tokio::time::timeout(WAIT / 2, async {
        while !accepted.is_subset(&received) {
            let message = subscriber.next_publish().await;
            let payload = String::from_utf8_lossy(&message.payload).to_string();
            if !received.insert(payload.clone()) {
                twice.push(payload);
            }
        }
    })
    .await;
    let lost: Vec<_> = accepted.difference(&received).collect();
    assert!(
        complete.is_ok() && lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    assert_eq!(refused, 0, "publishes refused (then sent again)");
    // Whatever else is on its way to the subscriber arrives within a round trip of a
    // probe published after it, on the same path.
    let (mut probe, _) = RawClient::connect(cluster.mqtt(1), "fa-probe", 5)
        .await
        .unwrap();
    assert!(matches!(
        probe
            .publish("fa/probe", 1, 1, b"probe", false)
            .await
            .unwrap(),
        Outcome::Accepted
    ));
    tokio::time::timeout(WAIT / 2, async {
        loop {
            let message = subscriber.next_publish().await;
            let payload = String::from_utf8_lossy(&message.payload).to_string();
            if payload == "probe" {
                return;
            }
            if !received.insert(payload.clone()) {
                twice.push(payload);
            }
        }
    })
    .await
    .expect("the probe to arrive");
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let text = cluster.metrics(1).await;
    eprintln!(
        "node 1: {}",
        text.lines()
            .filter(|line| line.starts_with("fleetmq_cluster_forwards_"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let acked = metric(
        &cluster,
        1,
        "fleetmq_cluster_forwards_acked_total{peer=\"3\"}",
    )
    .await;
    assert!(
        acked.is_some_and(|acked| acked >= 1.0),
        "node 3 acknowledged forwards: {acked:?}"
    );
}
