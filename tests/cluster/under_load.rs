//! Node loss while messages flow: kill -9 of a follower in the middle of a QoS 1 stream
//! leaves the stream between the two others whole and in order. The dead node has a
//! route for the stream, so the publisher's acknowledgements wait for it (a QoS 1/2
//! message is acknowledged once every node it was forwarded to stored it): the
//! messages for it are kept, sent again once it is back, and acknowledged then; it
//! serves again once restarted.

use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, metric_value, wait_routed, within, Cluster};

const MESSAGES: usize = 2_000;
const KILL_AFTER: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_under_load_leaves_the_other_stream_whole() {
    let mut cluster = Cluster::configure(3, &[]).await;
    // The publisher waits for the dead node rather than being refused meanwhile.
    cluster.configure_section("cluster", "forward_ack_timeout_ms = 60000");
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
    cluster.spawn(victim);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    for i in KILL_AFTER..MESSAGES {
        check(kept.next_publish().await, i);
    }
    // Back, it got them again and acknowledged them: the publisher went on.
    let mut publisher = within("every message to be acknowledged", publishing)
        .await
        .unwrap();
    let resent = format!("fleetmq_cluster_forwards_resent_total{{peer=\"{victim}\"}}");
    eventually("the kept messages sent again and acknowledged", || async {
        let text = cluster.metrics(leader).await;
        (metric_value(&text, &resent)? >= 1.0 && metric_value(&text, &unacked)? == 0.0)
            .then_some(())
    })
    .await;
    publisher.publish("load/after", 1, false, b"after").await;
    assert_eq!(kept.next_publish().await.payload, b"after");

    // Restarted, it serves its own subscribers again.
    let mut back = Subscriber::v4(cluster.mqtt(victim), "load-back", true);
    back.connected().await;
    back.subscribe("load/#", 1, None).await;
    wait_routed(cluster.mqtt(leader), "load/probe", &mut back).await;
    publisher.publish("load/again", 1, false, b"again").await;
    assert_eq!(back.next_publish().await.payload, b"again");
}
