//! A dead node's sessions adopted by its backup: kill -9 of the node of clients that
//! never come back. Three nodes, `replication_factor = 2`: node 1's backup (and so its
//! adopter) is node 2, whose own backup is node 3. Links time out after 1 s (ten
//! heartbeats of 100 ms), after which node 2 adopts node 1's sessions.

use std::collections::BTreeSet;

use rumqttc::v5 as r5;

use crate::common::mqtt::{Publisher, Subscriber};
use crate::common::{eventually, wait_routed, Cluster};
use crate::replication::{gauge, publish_range, receive, wait_in_sync};

/// MQTT 5 clients with session expiry 60 s and a will (one delayed 2 s, one not) are on
/// node 1 when node 1 dies; they never return. Each will reaches a subscriber on node 3
/// once (published by node 2, which adopted the sessions), and not again when node 1
/// comes back (it finds the sessions moved and does not publish the wills its restore
/// found owed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delayed_will_of_a_client_on_a_dead_node_is_published_once() {
    let mut cluster = Cluster::start(3).await;
    wait_in_sync(&cluster, 1).await;
    let mut watcher = Subscriber::v4(cluster.mqtt(3), "will-watcher", true);
    watcher.connected().await;
    watcher.subscribe("adopt-will/#", 1, None).await;
    wait_routed(cluster.mqtt(2), "adopt-will/probe", &mut watcher).await;

    // Two clients on node 1: one with a will delayed 2 s, one with a will without delay
    // (published when the adoption finds the client gone with its node).
    let delayed = will_client(
        &cluster,
        "adopt-will-delayed",
        "adopt-will/delayed",
        Some(2),
    )
    .await;
    let immediate = will_client(&cluster, "adopt-will-now", "adopt-will/now", None).await;

    cluster.kill(1).await;
    let killed = std::time::Instant::now();
    drop((delayed, immediate));
    let first = watcher.next_publish().await;
    let first_at = killed.elapsed();
    let second = watcher.next_publish().await;
    eprintln!(
        "kill -9 to the will without delay: {first_at:?}; to the will delayed 2 s: {:?}",
        killed.elapsed()
    );
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("adopt-will/now", b"adopt-will-now lost".as_slice()),
        "the will without delay comes first"
    );
    assert_eq!(
        (second.topic.as_str(), second.payload.as_slice()),
        ("adopt-will/delayed", b"adopt-will-delayed lost".as_slice())
    );
    assert_eq!(
        gauge(&cluster, 2, "fleetmq_cluster_adopted_sessions_total").await,
        Some(2),
        "node 2 adopted both sessions"
    );

    // Node 1 comes back: fenced for the session (deleted once nobody asks for it), it
    // publishes no will of it.
    cluster.spawn(1);
    wait_in_sync(&cluster, 1).await;
    eventually("node 1 to drop the adopted session", || async {
        (gauge(&cluster, 1, "fleetmq_cluster_handover_dropped_total").await? == 2).then_some(())
    })
    .await;
    let mut marker = Publisher::v4(cluster.mqtt(1), "will-marker").await;
    marker.publish("adopt-will/marker", 1, false, b"m").await;
    assert_eq!(
        watcher.nothing_before("adopt-will/marker").await,
        None,
        "a will was published a second time"
    );
}

/// Without replication nobody adopts: node 1, restarted, owes the will of a client that
/// was connected when it died. It publishes it once it caught up with the cluster (held
/// until then), so the will reaches a subscriber on another node, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_publishes_the_wills_it_still_owes_to_the_whole_cluster() {
    let mut cluster = Cluster::configure(3, &[]).await;
    cluster.configure_section("cluster", "replication_factor = 1");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut watcher = Subscriber::v4(cluster.mqtt(3), "restart-watcher", true);
    watcher.connected().await;
    watcher.subscribe("restart-will/#", 1, None).await;
    wait_routed(cluster.mqtt(1), "restart-will/probe", &mut watcher).await;
    let client = will_client(&cluster, "restart-will-client", "restart-will/gone", None).await;

    cluster.kill(1).await;
    drop(client);
    cluster.spawn(1);
    let will = watcher.next_publish().await;
    assert_eq!(will.topic, "restart-will/gone");
    let mut marker = Publisher::v4(cluster.mqtt(1), "restart-marker").await;
    marker.publish("restart-will/marker", 1, false, b"m").await;
    assert_eq!(watcher.nothing_before("restart-will/marker").await, None);
}

/// A MQTT 5 client of node 1 with session expiry 60 s and a will to `topic` (payload
/// "<client id> lost") delayed by `delay` seconds, connected.
async fn will_client(
    cluster: &Cluster,
    client_id: &str,
    topic: &str,
    delay: Option<u32>,
) -> Subscriber {
    let mut options = Subscriber::v5_options(cluster.mqtt(1), client_id, 60);
    let properties = r5::mqttbytes::v5::LastWillProperties {
        delay_interval: delay,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    options.set_last_will(r5::mqttbytes::v5::LastWill::new(
        topic,
        format!("{client_id} lost"),
        r5::mqttbytes::QoS::AtLeastOnce,
        false,
        Some(properties),
    ));
    let mut client = Subscriber::v5_with(options);
    // The CONNACK of a persistent session waits for the backup's copy.
    assert!(!client.connected().await);
    client
}

/// An MQTT 3.1.1 persistent session (clean session 0) on node 1, whose client never
/// comes back before node 1 dies, is adopted by node 2 with every acknowledged message
/// and replicated to node 2's backup (node 3): when node 2 dies too (node 1 back), node
/// 3 adopts it in turn, and the client, connecting later, finds it (Session Present =
/// 1, the messages queued before the first kill and those published to node 2 since).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_mqtt_3_session_of_a_dead_node_is_served_from_its_adopter() {
    const BEFORE: usize = 20;
    const AFTER: usize = 10;
    let mut cluster = Cluster::start(3).await;
    wait_in_sync(&cluster, 1).await;
    let mut v4 = Subscriber::v4(cluster.mqtt(1), "adopt-v4", false);
    assert!(!v4.connected().await);
    v4.subscribe("adopt-v4/#", 1, None).await;
    drop(v4);
    publish_range(&cluster, 1, "adopt-v4/data", 0..BEFORE).await;

    cluster.kill(1).await;
    eventually("node 2 to adopt node 1's session", || async {
        (gauge(&cluster, 2, "fleetmq_cluster_adopted_sessions_total").await? == 1).then_some(())
    })
    .await;
    // The adopted session lives on node 2 now: what is published there is queued for it,
    // and node 2's backup (node 3) has the copy.
    publish_range(&cluster, 2, "adopt-v4/data", BEFORE..BEFORE + AFTER).await;
    wait_in_sync(&cluster, 2).await;
    // Node 2 measured its backup's acknowledgements of those messages.
    let acknowledged = gauge(
        &cluster,
        2,
        "fleetmq_cluster_replication_latency_seconds_count",
    )
    .await
    .expect("the latency histogram");
    assert!(acknowledged >= AFTER as u64, "{acknowledged} acknowledged");

    // The factor is back: node 1 returns (a majority without node 2), node 2 dies, and
    // node 3, node 2's backup, adopts the session in turn with every message.
    cluster.spawn(1);
    wait_in_sync(&cluster, 1).await;
    cluster.kill(2).await;
    eventually(
        "node 3 to adopt the session from its copy of node 2",
        || async {
            (gauge(&cluster, 3, "fleetmq_cluster_adopted_sessions_total").await? == 1).then_some(())
        },
    )
    .await;

    let mut v4 = Subscriber::v4(cluster.mqtt(3), "adopt-v4", false);
    assert!(
        v4.connected().await,
        "session present after two node deaths"
    );
    let expected: BTreeSet<String> = (0..BEFORE + AFTER).map(|n| n.to_string()).collect();
    assert_eq!(receive(&mut v4, BEFORE + AFTER).await, expected);

    // Node 3 owns the session now, and its backup (node 1) holds the copy.
    assert_eq!(
        gauge(&cluster, 3, "fleetmq_cluster_sessions_under_replicated").await,
        Some(0)
    );
}
