//! A QoS 1/2 message forwarded to another node is acknowledged to its publisher only
//! once that node stored it durably: publisher on node 1, persistent subscriber on node
//! 2 (whose backup is node 3). The link 1-2 stalls (the proxy holds every byte), the
//! publishers send, node 2 dies (kill -9) with the messages still on their way, and the
//! subscriber comes back on node 3: it must get every message a publisher was told was
//! accepted. (Acknowledged at node 1's own store write, as before, they were lost.)

use std::collections::BTreeSet;

use crate::common::acked::{Outcome, RawClient, ANSWER_WITHIN};
use crate::common::mqtt::Subscriber;
use crate::common::{eventually, metric_value, wait_routed, Cluster, WAIT};

const PUBLISHERS: usize = 5;
const PER_PUBLISHER: usize = 4;

/// The value of `name` on node `id`, `None` while it does not answer.
async fn metric(cluster: &Cluster, id: u64, name: &str) -> Option<f64> {
    metric_value(&cluster.try_metrics(id).await?, name)
}

/// Publishes `count` QoS 1 messages `"{name}-{n}"` one at a time, each again (new
/// packet id) until accepted; returns the payloads the broker accepted.
async fn publish(mut publisher: RawClient, name: String, count: usize) -> Vec<String> {
    let mut accepted = Vec::new();
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
                Outcome::Refused(_) => continue,
            }
        }
        accepted.push(payload);
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_message_is_acknowledged_only_once_stored_on_the_subscribers_node() {
    let mut cluster = Cluster::start(3).await;
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
    for publisher in publishers {
        let payloads = tokio::time::timeout(ANSWER_WITHIN * 2, publisher)
            .await
            .expect("the publishers to finish")
            .unwrap();
        accepted.extend(payloads);
    }
    assert_eq!(accepted.len(), PUBLISHERS * PER_PUBLISHER);

    let mut received = BTreeSet::new();
    // Shorter than a single event's wait, so that a loss fails here, named.
    let complete = tokio::time::timeout(WAIT / 2, async {
        while !accepted.is_subset(&received) {
            let message = subscriber.next_publish().await;
            received.insert(String::from_utf8_lossy(&message.payload).to_string());
        }
    })
    .await;
    let lost: Vec<_> = accepted.difference(&received).collect();
    assert!(
        complete.is_ok() && lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
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
