//! A persistent session moving between nodes goes whole: a client that reconnects to
//! another node gets Session Present = 1, the messages that were in flight to it (resent
//! with DUP, in their order) and those still queued, each exactly once.

use crate::common::mqtt::{Event, Publisher, Received, Subscriber};
use crate::common::{wait_routed, Cluster};

/// More than the broker's inflight window (32 by default): some stay queued.
const MESSAGES: usize = 60;

/// A persistent subscriber that reads but never acknowledges: what it was sent stays
/// in flight on the broker.
fn silent(v5: bool, addr: std::net::SocketAddr, client_id: &str) -> Subscriber {
    if v5 {
        let mut options = Subscriber::v5_options(addr, client_id, 3600);
        options.set_manual_acks(true);
        Subscriber::v5_with(options)
    } else {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(std::time::Duration::from_secs(30));
        options.set_clean_session(false);
        options.set_manual_acks(true);
        Subscriber::v4_with(options)
    }
}

fn resuming(v5: bool, addr: std::net::SocketAddr, client_id: &str) -> Subscriber {
    if v5 {
        Subscriber::v5(addr, client_id, 3600)
    } else {
        Subscriber::v4(addr, client_id, false)
    }
}

async fn a_session_moves_with_its_queued_and_inflight_messages(v5: bool) {
    let cluster = Cluster::start(3).await;
    let id = if v5 { "mover-v5" } else { "mover-v4" };
    let filter = format!("move/{id}/#");

    // On node 1: the session, and a watcher that tells when node 1 has handled
    // everything the publisher sent before its marker (one link, frames in order).
    let mut first = silent(v5, cluster.mqtt(1), id);
    assert!(!first.connected().await);
    first.subscribe(&filter, 2, None).await;
    let mut watcher = Subscriber::v4(cluster.mqtt(1), &format!("{id}-watcher"), true);
    watcher.connected().await;
    watcher.subscribe(&format!("marker/{id}/#"), 1, None).await;
    wait_routed(cluster.mqtt(2), &format!("move/{id}/probe"), &mut first).await;
    wait_routed(cluster.mqtt(2), &format!("marker/{id}/probe"), &mut watcher).await;

    // QoS 1 and 2 alternately, from node 2.
    let mut publisher = Publisher::v4(cluster.mqtt(2), &format!("{id}-publisher")).await;
    for n in 0..MESSAGES {
        let qos = 1 + (n % 2) as u8;
        publisher
            .publish(
                &format!("move/{id}/{n}"),
                qos,
                false,
                n.to_string().as_bytes(),
            )
            .await;
    }
    publisher
        .publish(&format!("marker/{id}/done"), 1, false, b"all sent")
        .await;
    assert_eq!(watcher.next_publish().await.payload, b"all sent");
    // Some are in flight to the silent client (unacknowledged), the rest queued.
    let seen_by_first = first.next_publish().await;
    assert_eq!(seen_by_first.payload, b"0");

    // The client comes back on node 3.
    let reconnect = std::time::Instant::now();
    let mut second = resuming(v5, cluster.mqtt(3), id);
    assert!(second.connected().await, "session present");
    let connack = reconnect.elapsed();
    if v5 {
        loop {
            match first.next_event().await {
                Event::Disconnect(code) => {
                    assert_eq!(code, 0x8E, "Session taken over");
                    break;
                }
                Event::Closed(error) => {
                    assert!(error.contains("SessionTakenOver"), "{error}");
                    break;
                }
                _ => {}
            }
        }
    }
    let mut received: Vec<Received> = Vec::new();
    for _ in 0..MESSAGES {
        received.push(second.next_publish().await);
    }
    println!(
        "takeover across nodes with {MESSAGES} messages (v5: {v5}): CONNACK after {connack:?}, all received after {:?}",
        reconnect.elapsed()
    );
    let payloads: Vec<String> = received
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).to_string())
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "every message once, in order");
    let resent = received.iter().take_while(|message| message.dup).count();
    assert!(
        (1..=32).contains(&resent),
        "the ones in flight come first, with DUP: {resent}"
    );
    assert!(
        received[resent..].iter().all(|message| !message.dup),
        "then the queued ones, first sent"
    );
    for (n, message) in received.iter().enumerate() {
        assert_eq!(message.qos, 1 + (n % 2) as u8, "message {n} keeps its QoS");
    }
    let metrics = cluster.metrics(3).await;
    assert!(
        metrics.contains("fleetmq_cluster_handover_moves_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "fleetmq_cluster_handover_messages_total {MESSAGES}"
        )),
        "{metrics}"
    );

    // Served on its new node from now on, and nothing more of the old messages: the next
    // one is new.
    wait_routed(
        cluster.mqtt(2),
        &format!("move/{id}/probe-again"),
        &mut second,
    )
    .await;
    publisher
        .publish(&format!("move/{id}/after"), 2, false, b"after")
        .await;
    let next = second.next_publish().await;
    assert_eq!(next.payload, b"after", "no duplicate before it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mqtt5_session_moves_with_its_queued_and_inflight_messages() {
    a_session_moves_with_its_queued_and_inflight_messages(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mqtt311_session_moves_with_its_queued_and_inflight_messages() {
    a_session_moves_with_its_queued_and_inflight_messages(false).await;
}

/// Messages per publisher while the session moves: with the ones in flight, fewer than
/// the broker queues for an offline client (1,000 by default).
const FLOWING: usize = 450;

/// Two publishers, on the old node and on a third one, keep publishing while the
/// session moves: every message reaches the moved session exactly once (the old node
/// relays what still arrives there; the new one drops the copies it already has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moving_while_messages_flow_loses_and_duplicates_none() {
    let cluster = Cluster::start(3).await;
    let id = "mover-flow";
    let mut first = silent(true, cluster.mqtt(1), id);
    assert!(!first.connected().await);
    first.subscribe("flow/#", 2, None).await;
    wait_routed(cluster.mqtt(2), "flow/probe", &mut first).await;

    let publish = |addr, prefix: &'static str| async move {
        let mut publisher = Publisher::v4(addr, &format!("flow-{prefix}")).await;
        for n in 0..FLOWING {
            let qos = 1 + (n % 2) as u8;
            publisher
                .publish(&format!("flow/{prefix}/{n}"), qos, false, b"x")
                .await;
        }
        publisher
    };
    let remote = tokio::spawn(publish(cluster.mqtt(2), "remote"));
    let local = tokio::spawn(publish(cluster.mqtt(1), "local"));
    // The flow is under way; the client comes back on node 3.
    first.next_publish().await;
    let mut second = resuming(true, cluster.mqtt(3), id);
    assert!(second.connected().await, "session present");

    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 * FLOWING {
        let message = second.next_publish().await;
        assert!(
            seen.insert(message.topic.clone()),
            "{} arrived twice (after {} others)",
            message.topic,
            seen.len()
        );
    }
    let mut publisher = remote.await.unwrap();
    drop(local.await.unwrap());
    // Nothing more of them: the next message is a new one.
    wait_routed(cluster.mqtt(2), "flow/probe-again", &mut second).await;
    publisher.publish("flow/after", 2, false, b"after").await;
    assert_eq!(second.next_publish().await.topic, "flow/after");
    let relayed = cluster
        .metrics(1)
        .await
        .lines()
        .find(|line| line.starts_with("fleetmq_cluster_relayed_messages_total"))
        .map(str::to_string);
    println!("old node: {relayed:?}");
}

/// What a session brought along is stored on its new node: kill -9 of that node right
/// after the move, and the session comes back from its disk whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_is_durable_on_its_new_node() {
    let mut cluster = Cluster::start(3).await;
    let id = "mover-durable";
    let mut first = silent(false, cluster.mqtt(1), id);
    assert!(!first.connected().await);
    first.subscribe("durable/#", 2, None).await;
    let mut watcher = Subscriber::v4(cluster.mqtt(1), "durable-watcher", true);
    watcher.connected().await;
    watcher.subscribe("durable-marker", 1, None).await;
    let mut publisher = Publisher::v5(cluster.mqtt(1), "durable-publisher").await;
    for n in 0..MESSAGES {
        publisher
            .publish(&format!("durable/{n}"), 1 + (n % 2) as u8, false, b"x")
            .await;
    }
    // Its connection's packets are handled in order: once the marker is routed, every
    // message is queued or in flight.
    publisher.publish("durable-marker", 1, false, b"").await;
    watcher.next_publish().await;
    assert_eq!(first.next_publish().await.topic, "durable/0");
    let mut second = silent(false, cluster.mqtt(3), id);
    assert!(second.connected().await, "session present");
    assert_eq!(second.next_publish().await.topic, "durable/0");
    drop(second);
    cluster.kill(3).await;
    cluster.spawn(3);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let mut third = resuming(false, cluster.mqtt(3), id);
    assert!(third.connected().await, "session present after the restart");
    for n in 0..MESSAGES {
        assert_eq!(
            third.next_publish().await.topic,
            format!("durable/{n}"),
            "every message, in order"
        );
    }
}

/// Two nodes claim a session at once while it is on another one, with messages queued:
/// one connection keeps it, and between the two connections every message arrives (a
/// session that reaches a node whose claim was already overtaken goes on to the winner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connects_on_two_nodes_to_a_session_with_messages_keep_every_message() {
    const QUEUED: usize = 10;
    let cluster = Cluster::start(3).await;
    for round in 0..3 {
        let id = format!("contested-{round}");
        let mut first = silent(true, cluster.mqtt(1), &id);
        assert!(!first.connected().await);
        first
            .subscribe(&format!("contested/{round}/#"), 1, None)
            .await;
        let mut publisher = Publisher::v5(cluster.mqtt(1), &format!("{id}-pub")).await;
        for n in 0..QUEUED {
            publisher
                .publish(&format!("contested/{round}/{n}"), 1, false, b"x")
                .await;
        }
        // The last one reached the client: all are in flight.
        while first.next_publish().await.topic != format!("contested/{round}/{}", QUEUED - 1) {}

        let mut b = Subscriber::v5(cluster.mqtt(2), &id, 3600);
        let mut c = Subscriber::v5(cluster.mqtt(3), &id, 3600);
        let (first_b, first_c) = tokio::join!(b.next_event(), c.next_event());
        let accepted = |event: &Event| matches!(event, Event::ConnAck { code: 0, .. });
        assert!(
            accepted(&first_b) || accepted(&first_c),
            "{first_b:?} {first_c:?}"
        );
        cluster.wait_for_leader(&[1, 2, 3]).await;
        let alive_b = accepted(&first_b) && b.try_subscribe("alive/check").await;
        let alive_c = accepted(&first_c) && c.try_subscribe("alive/check").await;
        assert!(
            alive_b ^ alive_c,
            "round {round}: one keeps it ({alive_b}, {alive_c})"
        );
        let (mut winner, mut loser, loser_accepted) = if alive_b {
            (b, c, accepted(&first_c))
        } else {
            (c, b, accepted(&first_b))
        };
        let mut seen: std::collections::HashSet<String> = if loser_accepted {
            loser
                .received_until_closed()
                .await
                .into_iter()
                .map(|message| message.topic)
                .collect()
        } else {
            Default::default()
        };
        while seen.len() < QUEUED {
            seen.insert(winner.next_publish().await.topic);
        }
    }
}

/// The owner is killed: a client reconnecting elsewhere waits a bounded time for it,
/// then starts afresh (Session Present = 0: sessions are not replicated here, nobody
/// holds a copy). Restarted, the old owner never serves that session again and deletes
/// its copy (fencing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_a_dead_node_starts_afresh_and_the_node_deletes_its_copy_when_back() {
    let mut cluster = Cluster::configure(3, &[]).await;
    cluster.configure_section("cluster", "replication_factor = 1");
    for node in 1..=3 {
        cluster.spawn(node);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let id = "orphan";
    let mut first = resuming(false, cluster.mqtt(1), id);
    assert!(!first.connected().await);
    first.subscribe("orphan/#", 1, None).await;
    drop(first);
    cluster.kill(1).await;
    cluster.wait_for_leader(&[2, 3]).await;

    let asked = std::time::Instant::now();
    let mut second = resuming(false, cluster.mqtt(3), id);
    assert!(!second.connected().await, "a fresh session");
    let waited = asked.elapsed();
    assert!(waited < std::time::Duration::from_secs(8), "{waited:?}");
    drop(second);

    cluster.spawn(1);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    crate::common::eventually("the old owner to delete the session it kept", || async {
        let metrics = cluster.metrics(1).await;
        metrics
            .lines()
            .any(|line| line == "fleetmq_cluster_handover_dropped_total 1")
            .then_some(())
    })
    .await;
    // Deleted from its store too: a restart finds nothing.
    cluster.kill(1).await;
    cluster.spawn(1);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let log = std::fs::read_to_string(&cluster.node(1).log).unwrap();
    let restored: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("state restored"))
        .collect();
    assert_eq!(restored.len(), 3, "{restored:?}");
    assert!(restored[1].contains("sessions=1"), "{}", restored[1]);
    assert!(restored[2].contains("sessions=0"), "{}", restored[2]);
}
