//! Node loss and partitions: kill -9 of the leader and its restart, a node cut off by
//! the TCP proxies on its links (the minority refuses persistent sessions, the majority
//! serves), and healing.

use crate::common::mqtt::{Event, Publisher, Subscriber};
use crate::common::{eventually, wait_routed, Cluster, RETAINED_WINDOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_leaves_the_others_serving_and_the_restarted_node_catches_up() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.kill(leader).await;
    let new_leader = cluster.wait_for_leader(&others).await;
    assert_ne!(new_leader, leader);

    // The two survivors serve: publish on one, subscribe on the other.
    let mut sub = Subscriber::v5(cluster.mqtt(others[1]), "survivor-sub", 0);
    sub.connected().await;
    sub.subscribe("after/#", 1, None).await;
    wait_routed(cluster.mqtt(others[0]), "after/probe", &mut sub).await;
    let mut publisher = Publisher::v4(cluster.mqtt(others[0]), "survivor-pub").await;
    publisher
        .publish("after/kill", 1, true, b"retained-while-down")
        .await;
    assert_eq!(sub.next_publish().await.payload, b"retained-while-down");

    // The PUBACK followed the commit; wait until the other survivor applied it too,
    // so that the restarted node must catch up on it.
    eventually("the retained message to be committed", || async {
        let mut check = Subscriber::v4(cluster.mqtt(others[1]), "retained-check", true);
        check.connected().await;
        check.subscribe("after/kill", 1, None).await;
        check
            .probe_for("after/kill", RETAINED_WINDOW)
            .await
            .then_some(())
    })
    .await;

    // The killed node restarts, catches up from the log and serves what it missed: the
    // retained message published while it was down, and forwarding from it.
    cluster.spawn(leader);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut late = Subscriber::v4(cluster.mqtt(leader), "late", true);
    late.connected().await;
    late.subscribe("after/kill", 1, None).await;
    let retained = late.next_publish().await;
    assert!(retained.retain);
    assert_eq!(retained.payload, b"retained-while-down");
    wait_routed(cluster.mqtt(leader), "after/probe", &mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_refuses_persistent_sessions_while_the_majority_serves_and_healing_converges(
) {
    let cluster = Cluster::start(3).await;
    let mut watcher = Subscriber::v4(cluster.mqtt(2), "majority-sub", true);
    watcher.connected().await;
    watcher.subscribe("m/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "m/probe", &mut watcher).await;

    cluster.isolate(3, true);
    cluster.wait_for_no_leader(3).await;
    cluster.wait_for_leader(&[1, 2]).await;
    assert_eq!(cluster.health(3).await, Some(503));
    assert_eq!(cluster.health(1).await, Some(200));

    // The minority: persistent sessions refused (MQTT 5 0x88, MQTT 3 0x03), a clean
    // session still admitted.
    let mut v5 = Subscriber::v5(cluster.mqtt(3), "minority-v5", 600);
    match v5.next_event().await {
        Event::Closed(error) => assert!(
            error.contains("ServerUnavailable") || error.contains("Unavailable"),
            "{error}"
        ),
        other => panic!("expected CONNACK 0x88, got {other:?}"),
    }
    let mut v3 = Subscriber::v4(cluster.mqtt(3), "minority-v3", false);
    match v3.next_event().await {
        Event::Closed(error) => assert!(
            error.contains("ServiceUnavailable") || error.contains("Unavailable"),
            "{error}"
        ),
        other => panic!("expected CONNACK 0x03, got {other:?}"),
    }
    let mut clean = Subscriber::v4(cluster.mqtt(3), "minority-clean", true);
    clean.connected().await;

    // The majority serves.
    let mut publisher = Publisher::v4(cluster.mqtt(1), "majority-pub").await;
    publisher
        .publish("m/during", 1, false, b"partitioned")
        .await;
    assert_eq!(watcher.next_publish().await.payload, b"partitioned");

    // Healed: node 3 follows the leader again and admits persistent sessions.
    cluster.isolate(3, false);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    eventually("node 3 to report healthy", || async {
        (cluster.health(3).await == Some(200)).then_some(())
    })
    .await;
    let mut back = Subscriber::v5(cluster.mqtt(3), "minority-v5", 600);
    back.connected().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_more_than_a_snapshot_catches_up_from_the_snapshot() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let away = if leader == 3 { 2 } else { 3 };
    let others: Vec<u64> = (1..=3).filter(|id| *id != away).collect();
    cluster.kill(away).await;
    cluster.wait_for_leader(&others).await;

    // The test nodes snapshot every 50 entries (`snapshot_entries`): route changes of
    // 120 subscribers, each its own entry, take the log well past two snapshots, after
    // which the entries before them are purged; and 1,200 retained messages.
    let mut publisher = Publisher::v4(cluster.mqtt(others[0]), "snapshotter").await;
    for i in 0..1_200 {
        publisher
            .publish(&format!("snap/{i}"), 1, true, b"kept")
            .await;
    }
    for i in 0..120 {
        let mut subscriber = Subscriber::v4(cluster.mqtt(others[1]), &format!("churn{i}"), true);
        subscriber.connected().await;
        subscriber.subscribe(&format!("churn/{i}"), 0, None).await;
    }
    // The last retained message (and the others before it, proposed in order) is in the
    // replicated state once a late subscriber on another survivor receives it.
    eventually("every retained message to be replicated", || async {
        let mut check = Subscriber::v4(cluster.mqtt(others[1]), "snap-check", true);
        check.connected().await;
        check.subscribe("snap/1199", 1, None).await;
        check
            .probe_for("snap/1199", RETAINED_WINDOW)
            .await
            .then_some(())
    })
    .await;
    eventually("a snapshot past the restarted node's log", || async {
        let status = cluster.status(others[0]).await?;
        (status.applied_index? > 200).then_some(())
    })
    .await;

    cluster.spawn(away);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut sub = Subscriber::v4(cluster.mqtt(away), "snap-reader", true);
    sub.connected().await;
    sub.subscribe("snap/#", 1, None).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 1_200 {
        let p = sub.next_publish().await;
        assert!(p.retain);
        seen.insert(p.topic);
    }
    let metrics = cluster.metrics(away).await;
    assert!(
        metrics.contains("fleetmq_cluster_applied_index"),
        "{metrics}"
    );
}
