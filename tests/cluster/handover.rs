//! A persistent session moving between nodes goes whole: a client that reconnects to
//! another node gets Session Present = 1, the messages that were in flight to it (resent
//! with DUP, in their order) and those still queued, each exactly once. Messages that
//! reach the old node during the move are relayed without being overtaken by later ones
//! of the same publisher, and reach the winner of two racing connects.

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

/// Messages a publisher sends while its node still routes a moving session's filter to
/// the old node only: they reach the new node relayed, late.
const ONLY_TO_OLD: usize = 20;
/// Messages the publisher sends once its node routes to the new node too: the first of
/// them may still go to the old node only.
const STRAIGHT_AT_MOST: usize = 300;

/// A session moves from node A to node B while a publisher on node C keeps publishing.
/// The link C to A is paused: what C sent while it routed the session's filter to A only
/// waits there, while C's later messages reach B straight once C learned that B serves
/// the session. Resumed, A relays the earlier ones to B: the subscriber on B still gets
/// every message once, in the order C published them (B held the straight ones behind
/// A's relay until A said it ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_relayed_late_during_a_move_are_not_overtaken_by_later_ones() {
    let cluster = Cluster::configure(3, &[]).await;
    // The pause must not time the link out, and only the paused link may stall.
    cluster.configure_section("cluster", "link_timeout_ms = 20000\nreplication_factor = 1");
    let mut cluster = cluster;
    for id in 1..=3 {
        cluster.spawn(id);
    }
    // The new node leads: the paused link carries no consensus traffic.
    let b = cluster.wait_for_leader(&[1, 2, 3]).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != b).collect();
    let (a, c) = (others[0], others[1]);
    let id = "mover-ordered";

    let mut first = Subscriber::v5(cluster.mqtt(a), id, 3600);
    assert!(!first.connected().await);
    first.subscribe("ordered/#", 1, None).await;
    wait_routed(cluster.mqtt(c), "ordered/probe", &mut first).await;
    // Tells when node B has handled everything C forwarded it before the marker.
    let mut watcher = Subscriber::v4(cluster.mqtt(b), "ordered-watcher", true);
    watcher.connected().await;
    watcher.subscribe("ordered-end/#", 1, None).await;
    wait_routed(cluster.mqtt(c), "ordered-end/probe", &mut watcher).await;
    let mut publisher = Publisher::v4(cluster.mqtt(c), "ordered-publisher").await;
    let forwarded = || async {
        crate::common::metric_value(
            &cluster.metrics(c).await,
            "fleetmq_cluster_forwarded_messages_total",
        )
        .unwrap_or(0.0) as usize
    };
    let received_on_b = || async {
        crate::common::metric_value(
            &cluster.metrics(b).await,
            "fleetmq_cluster_received_messages_total",
        )
        .unwrap_or(0.0) as usize
    };

    // C routes "ordered/#" to A only: these wait in the paused link.
    cluster.pause_link(a, c, true);
    let before = forwarded().await;
    for n in 0..ONLY_TO_OLD {
        publisher
            .publish(&format!("ordered/{n}"), 1, false, b"x")
            .await;
    }
    crate::common::eventually("C to forward the first messages to A", || async {
        (forwarded().await >= before + ONLY_TO_OLD).then_some(())
    })
    .await;

    // The client comes back on B: the session moves there from A.
    let mut second = Subscriber::v5(cluster.mqtt(b), id, 3600);
    assert!(second.connected().await, "session present");
    let moved = std::time::Instant::now();
    // Until C routes to B too; then a few more, all straight to B.
    let straight_before = received_on_b().await;
    let mut published = ONLY_TO_OLD;
    loop {
        assert!(
            published < ONLY_TO_OLD + STRAIGHT_AT_MOST,
            "C never routed the moved session's filter to its new node"
        );
        publisher
            .publish(&format!("ordered/{published}"), 1, false, b"x")
            .await;
        published += 1;
        if received_on_b().await > straight_before {
            break;
        }
    }
    for _ in 0..10 {
        publisher
            .publish(&format!("ordered/{published}"), 1, false, b"x")
            .await;
        published += 1;
    }
    // B handled every straight one before this marker (one link, frames in order).
    publisher.publish("ordered-end/marker", 1, false, b"").await;
    assert_eq!(watcher.next_publish().await.topic, "ordered-end/marker");
    cluster.pause_link(a, c, false);

    for n in 0..published {
        let message = second.next_publish().await;
        assert_eq!(
            message.topic,
            format!("ordered/{n}"),
            "every message once, in the order published"
        );
    }
    let received = moved.elapsed();
    // The copies B held end with A's relay, told by its last batch, not by the bound.
    crate::common::eventually("the hold behind the relay to end", || async {
        let metrics = cluster.metrics(b).await;
        (crate::common::metric_value(&metrics, "fleetmq_cluster_relay_holds_open") == Some(0.0))
            .then_some(())
    })
    .await;
    let metrics = cluster.metrics(b).await;
    assert_eq!(
        crate::common::metric_value(&metrics, "fleetmq_cluster_relay_holds_expired_total"),
        Some(0.0),
        "the hold ended with the relay's last batch, not by its bound"
    );
    let relayed = crate::common::metric_value(
        &cluster.metrics(a).await,
        "fleetmq_cluster_relayed_messages_total",
    );
    println!(
        "{published} published, relayed by the old node: {relayed:?}; all received {received:?} and the hold ended {:?} after the CONNACK",
        moved.elapsed()
    );
}

/// Publishes `raced/{n}` (QoS 1) on `addr` every few milliseconds until `stop` turns
/// true, then `AFTER_STOP` more; at most `RACE_MESSAGES` in all (fewer than a session
/// queues). Returns how many it published.
const RACE_MESSAGES: usize = 800;
const AFTER_STOP: usize = 100;

fn publish_through_race(
    addr: std::net::SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(Publisher, usize)> {
    tokio::spawn(async move {
        let mut publisher = Publisher::v4(addr, "raced-publisher").await;
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(4));
        let mut end = RACE_MESSAGES;
        for n in 0..RACE_MESSAGES {
            if n == end {
                return (publisher, n);
            }
            if end == RACE_MESSAGES && *stop.borrow_and_update() {
                end = (n + AFTER_STOP).min(RACE_MESSAGES);
            }
            pace.tick().await;
            publisher
                .publish(&format!("raced/{n}"), 1, false, b"x")
                .await;
        }
        (publisher, RACE_MESSAGES)
    })
}

/// Two connects of one client id race on nodes B and C while a publisher on the
/// session's old node A keeps publishing: what reaches A after it applied the second
/// claim goes through A's relay to the first claimant and on through that node's relay
/// to the winner, so between the two connections every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connects_racing_while_messages_flow_keep_every_message() {
    let cluster = Cluster::start(3).await;
    let id = "contested-flow";
    let mut first = Subscriber::v5(cluster.mqtt(1), id, 3600);
    assert!(!first.connected().await);
    first.subscribe("raced/#", 1, None).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishing = publish_through_race(cluster.mqtt(1), stopped);
    // The flow is under way.
    assert_eq!(first.next_publish().await.topic, "raced/0");

    let mut b = Subscriber::v5(cluster.mqtt(2), id, 3600);
    let mut c = Subscriber::v5(cluster.mqtt(3), id, 3600);
    let (first_b, first_c) = tokio::join!(b.next_event(), c.next_event());
    let accepted = |event: &Event| matches!(event, Event::ConnAck { code: 0, .. });
    assert!(
        accepted(&first_b) || accepted(&first_c),
        "{first_b:?} {first_c:?}"
    );
    let alive_b = accepted(&first_b) && b.try_subscribe("alive/raced").await;
    let alive_c = accepted(&first_c) && c.try_subscribe("alive/raced").await;
    assert!(alive_b ^ alive_c, "one keeps it ({alive_b}, {alive_c})");
    stop.send_replace(true);
    let (mut winner, mut loser, loser_accepted) = if alive_b {
        (b, c, accepted(&first_c))
    } else {
        (c, b, accepted(&first_b))
    };
    let numbered = |topic: &str| topic.strip_prefix("raced/")?.parse::<usize>().ok();
    let mut seen: std::collections::HashSet<usize> = first
        .received_until_closed()
        .await
        .iter()
        .filter_map(|message| numbered(&message.topic))
        .collect();
    seen.insert(0);
    if loser_accepted {
        seen.extend(
            loser
                .received_until_closed()
                .await
                .iter()
                .filter_map(|message| numbered(&message.topic)),
        );
    }
    let (_publisher, published) = publishing.await.unwrap();
    let every_one = async {
        while (0..published).any(|n| !seen.contains(&n)) {
            let message = winner.next_publish().await;
            if let Some(n) = numbered(&message.topic) {
                seen.insert(n);
            }
        }
    };
    if tokio::time::timeout(crate::common::WAIT, every_one)
        .await
        .is_err()
    {
        let missing: Vec<usize> = (0..published).filter(|n| !seen.contains(n)).collect();
        for node in 1..=3 {
            let metrics = cluster.metrics(node).await;
            let relay: Vec<&str> = metrics
                .lines()
                .filter(|line| line.starts_with("fleetmq_cluster_relay"))
                .collect();
            println!("node {node}: {relay:?}");
        }
        panic!(
            "{} of {published} never arrived: {missing:?}",
            missing.len()
        );
    }
    // Every hold along the chain of relays ended with its relay's last batch.
    for node in 1..=3 {
        crate::common::eventually("the holds behind the relays to end", || async {
            let metrics = cluster.metrics(node).await;
            (crate::common::metric_value(&metrics, "fleetmq_cluster_relay_holds_open") == Some(0.0))
                .then_some(())
        })
        .await;
        assert_eq!(
            crate::common::metric_value(
                &cluster.metrics(node).await,
                "fleetmq_cluster_relay_holds_expired_total"
            ),
            Some(0.0),
            "node {node}: a hold ended by its bound"
        );
    }
    println!("{published} published during the race, every one delivered");
}
