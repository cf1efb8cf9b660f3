//! Node loss while messages flow: kill -9 of a follower in the middle of a QoS 1 stream
//! leaves the stream between the two others whole and in order; the dead node's share
//! is dropped at the link (counted) until it is back, and it serves again once
//! restarted.

use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, metric_value, wait_routed, Cluster};

const MESSAGES: usize = 2_000;
const KILL_AFTER: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_under_load_leaves_the_other_stream_whole() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (victim, survivor) = (followers[0], followers[1]);

    let mut kept = Subscriber::v5(cluster.mqtt(survivor), "load-kept", 0);
    kept.connected().await;
    kept.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(leader), "load/probe", &mut kept).await;
    let mut lost = Subscriber::v4(cluster.mqtt(victim), "load-lost", true);
    lost.connected().await;
    lost.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(leader), "load/probe", &mut lost).await;
    kept.drain_probes("load/probe");

    let mut publisher = Publisher::v4(cluster.mqtt(leader), "load-pub").await;
    for i in 0..MESSAGES {
        if i == KILL_AFTER {
            cluster.kill(victim).await;
        }
        publisher
            .publish("load/stream", 1, false, i.to_string().as_bytes())
            .await;
    }
    for i in 0..MESSAGES {
        let received = kept.next_publish().await;
        assert_eq!(
            (received.topic.as_str(), received.payload),
            ("load/stream", i.to_string().into_bytes()),
            "message {i} of the surviving stream"
        );
    }

    // The dead node's routes stay: what is published for it meanwhile is dropped at the
    // link and counted.
    eventually("the leader to see the victim's link down", || async {
        let status = cluster.status(leader).await?;
        status
            .members
            .iter()
            .any(|member| member.id == victim && !member.reachable)
            .then_some(())
    })
    .await;
    publisher.publish("load/after", 1, false, b"after").await;
    assert_eq!(kept.next_publish().await.payload, b"after");
    let text = cluster.metrics(leader).await;
    let dropped = metric_value(
        &text,
        &format!("fleetmq_cluster_link_dropped_frames_total{{peer=\"{victim}\"}}"),
    )
    .unwrap();
    assert!(dropped >= 1.0, "{text}");

    // Restarted, it serves its own subscribers again.
    cluster.spawn(victim);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut back = Subscriber::v4(cluster.mqtt(victim), "load-back", true);
    back.connected().await;
    back.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(leader), "load/probe", &mut back).await;
    publisher.publish("load/again", 1, false, b"again").await;
    assert_eq!(back.next_publish().await.payload, b"again");
}
