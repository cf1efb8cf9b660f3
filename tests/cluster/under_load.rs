//! Node loss while messages flow: kill -9 of a follower in the middle of a QoS 1 stream
//! leaves the stream between the two others whole and in order. The dead node has a
//! route for the stream (a clean session), so the publisher's acknowledgements first
//! wait for it (a QoS 1/2 message is acknowledged once every node it was forwarded to
//! stored it) and the messages for it are kept; once it has been unreachable for the
//! link timeout its routes are dropped through consensus, the kept messages are
//! released and the publisher goes on while the node is still down (the forward
//! timeout is set far beyond the test, so nothing else can release them). Restarted, it
//! proposes its routes again and serves its own subscribers.
use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, metric_value, wait_routed, within, Cluster};

const MESSAGES: usize = 2_000;
const KILL_AFTER: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_under_load_leaves_the_other_stream_whole() {
    follower_killed_under_load(2).await;
}

/// Without replication nobody adopts the dead node's sessions: the first reachable
/// voter drops its routes instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replication_a_dead_followers_routes_are_dropped_too() {
    follower_killed_under_load(1).await;
}

async fn follower_killed_under_load(replication_factor: usize) {
    let mut cluster = Cluster::configure(3, &[]).await;
    // Only the dropped routes can release what waits for the dead node.
    cluster.configure_section(
        "cluster",
        &format!("forward_ack_timeout_ms = 600000\nreplication_factor = {replication_factor}"),
    );
    for id in 1..=3 {
        cluster.spawn(id);
    }
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
    let publishing = tokio::spawn(async move {
        for i in 0..MESSAGES {
            publisher
                .publish("load/stream", 1, false, i.to_string().as_bytes())
                .await;
        }
        publisher
    });
    let check = |received: crate::common::mqtt::Received, i: usize| {
        assert_eq!(
            (received.topic.as_str(), received.payload),
            ("load/stream", i.to_string().into_bytes()),
            "message {i} of the surviving stream"
        );
    };
    for i in 0..KILL_AFTER {
        check(kept.next_publish().await, i);
    }
    cluster.kill(victim).await;

    // What is forwarded to the dead node waits for it, kept for it.
    let unacked = format!("fleetmq_cluster_forwards_unacked{{peer=\"{victim}\"}}");
    eventually("messages kept for the dead node", || async {
        let text = cluster.metrics(leader).await;
        (metric_value(&text, &unacked)? >= 1.0).then_some(())
    })
    .await;
    // Its routes dropped, nothing waits for it: the stream completes while it is down.
    for i in KILL_AFTER..MESSAGES {
        check(kept.next_publish().await, i);
    }
    let mut publisher = within("every message to be acknowledged", publishing)
        .await
        .unwrap();
    eventually("nothing kept for the dead node", || async {
        let text = cluster.metrics(leader).await;
        (metric_value(&text, &unacked)? == 0.0).then_some(())
    })
    .await;
    let text = cluster.metrics(leader).await;
    let timed_out = format!("fleetmq_cluster_forwards_timed_out_total{{peer=\"{victim}\"}}");
    assert_eq!(metric_value(&text, &timed_out), Some(0.0), "{timed_out}");
    publisher.publish("load/after", 1, false, b"after").await;
    assert_eq!(kept.next_publish().await.payload, b"after");

    cluster.spawn(victim);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    // Restarted, it serves its own subscribers again.
    let mut back = Subscriber::v4(cluster.mqtt(victim), "load-back", true);
    back.connected().await;
    back.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(leader), "load/probe", &mut back).await;
    publisher.publish("load/again", 1, false, b"again").await;
    assert_eq!(back.next_publish().await.payload, b"again");
}
