//! Replicated sessions: kill -9 of the node that owns persistent sessions loses none of
//! them and no acknowledged message. Three nodes with `replication_factor = 2` (the
//! default): node 1's backup is node 2. Subscribers (MQTT 5 with session expiry, MQTT
//! 3.1.1 with clean session 0) leave their sessions on node 1, a QoS 1 publisher on
//! node 1 itself gets N PUBACKs, node 1 is killed, and the subscribers come back on
//! node 2 (the backup itself) and node 3 (which fetches the session from node 2).

use std::collections::BTreeSet;
use std::time::Instant;

use crate::common::acked::{Outcome, RawClient};
use crate::common::mqtt::Subscriber;
use crate::common::{eventually, metric_value, within, Cluster};

const MESSAGES: usize = 50;

/// Node `id`'s metrics, `None` while it does not answer.
async fn metrics(cluster: &Cluster, id: u64) -> Option<String> {
    cluster.try_metrics(id).await
}

/// The value of an unlabelled metric on node `id`.
pub(crate) async fn gauge(cluster: &Cluster, id: u64, name: &str) -> Option<u64> {
    let text = metrics(cluster, id).await?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub(crate) async fn wait_in_sync(cluster: &Cluster, id: u64) {
    eventually(&format!("node {id}'s backup in sync"), || async {
        (gauge(cluster, id, "fleetmq_cluster_backups_in_sync").await? == 1).then_some(())
    })
    .await;
}

/// A persistent subscriber (MQTT 5) of `client_id` on node `on` to `prefix/#` at QoS 2,
/// once its route reached node `publishing` (QoS 0 probes from there until one arrives;
/// routes go through consensus).
async fn subscribed_and_routed(
    cluster: &Cluster,
    on: u64,
    publishing: u64,
    client_id: &str,
    prefix: &str,
) -> RawClient {
    let (mut subscriber, _) = RawClient::connect(cluster.mqtt(on), client_id, 5)
        .await
        .unwrap();
    subscriber
        .subscribe(&format!("{prefix}/#"), 2)
        .await
        .unwrap();
    let probe_id = format!("{client_id}-probe");
    let mut prober = crate::common::mqtt::Publisher::v4(cluster.mqtt(publishing), &probe_id).await;
    let topic = format!("{prefix}/probe");
    within("the route to reach the publishing node", async {
        loop {
            prober.publish(&topic, 0, false, b"probe").await;
            let probe = std::time::Duration::from_millis(100);
            if let Ok(Ok(_)) = tokio::time::timeout(probe, subscriber.receive()).await {
                return;
            }
        }
    })
    .await;
    subscriber
}

/// Three nodes with a long link timeout (nothing moves while a link is held or cut;
/// `limits`: lines for every node's `[limits]`), node 1's backup (node 2) in sync, a
/// persistent subscriber of `{prefix}/#` on node 3 whose route reached node 1, and a
/// persistent MQTT 5 publisher `{prefix}-pub` on node 1: the cluster, the subscriber
/// and the publisher.
async fn publisher_on_1_subscriber_on_3(
    prefix: &str,
    limits: Option<&str>,
) -> (Cluster, RawClient, RawClient) {
    let mut cluster = Cluster::configure(3, &[]).await;
    cluster.configure_section("cluster", "link_timeout_ms = 30000");
    if let Some(lines) = limits {
        cluster.configure_section("limits", lines);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    wait_in_sync(&cluster, 1).await;
    let subscriber = subscribed_and_routed(&cluster, 3, 1, &format!("{prefix}-sub"), prefix).await;
    let (publisher, _) = RawClient::connect(cluster.mqtt(1), &format!("{prefix}-pub"), 5)
        .await
        .unwrap();
    (cluster, subscriber, publisher)
}

/// Waits until node `publishers` keeps one forward for node `subscribers` unacknowledged
/// and its backup `backup` acknowledged a write since `before` (`replicated_writes`)
/// with nothing left waiting: the packet id of the QoS 2 PUBLISH in flight is on the
/// backup.
async fn forward_kept_and_packet_id_on_backup(
    cluster: &Cluster,
    publishers: u64,
    subscribers: u64,
    backup: u64,
    before: f64,
) {
    let kept = format!("fleetmq_cluster_forwards_unacked{{peer=\"{subscribers}\"}}");
    let waiting = format!("fleetmq_cluster_replication_queue_bytes{{backup=\"{backup}\"}}");
    eventually(
        "the forward kept and the packet id on the backup",
        || async {
            let text = cluster.try_metrics(publishers).await?;
            (metric_value(&text, &kept)? == 1.0
                && metric_value(&text, &waiting)? == 0.0
                && replicated_writes(&text) > before)
                .then_some(())
        },
    )
    .await;
}

/// The writes a node's backups acknowledged so far (its replication latency count), in
/// its metrics.
fn replicated_writes(metrics: &str) -> f64 {
    metric_value(metrics, "fleetmq_cluster_replication_latency_seconds_count").unwrap_or(0.0)
}

/// `client_id` connecting to node `id` until accepted (refused while the cluster elects
/// a leader); returns the client and Session Present.
async fn reconnected(cluster: &Cluster, id: u64, client_id: &str) -> (RawClient, bool) {
    within("the client back on another node", async {
        loop {
            if let Ok(connected) = RawClient::connect(cluster.mqtt(id), client_id, 5).await {
                return connected;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

/// `subscriber` gets `payload`, and no second copy of anything within a second after.
async fn received_once(subscriber: &mut RawClient, payload: &[u8]) {
    let message = within("the message at the subscriber", subscriber.receive())
        .await
        .unwrap();
    assert_eq!(message.payload, payload);
    let again = tokio::time::timeout(std::time::Duration::from_secs(1), subscriber.receive()).await;
    assert!(again.is_err(), "the message came twice: {again:?}");
}

/// Waits until a write of node `owner` waits for its backup `backup` (its replication
/// queue holds bytes).
async fn write_waiting_for_backup(cluster: &Cluster, owner: u64, backup: u64) {
    let waiting = format!("fleetmq_cluster_replication_queue_bytes{{backup=\"{backup}\"}}");
    eventually("the owner's write waiting for the backup", || async {
        let text = cluster.try_metrics(owner).await?;
        (metric_value(&text, &waiting)? > 0.0).then_some(())
    })
    .await;
}

/// Publishes `0..MESSAGES` at QoS 1 to node `id` with `mosquitto_pub`, which exits once
/// every PUBACK arrived.
async fn publish_acknowledged(cluster: &Cluster, id: u64, topic: &str) {
    publish_range(cluster, id, topic, 0..MESSAGES).await;
}

/// Publishes each number of `payloads` at QoS 1; returns once every PUBACK arrived.
pub(crate) async fn publish_range(
    cluster: &Cluster,
    id: u64,
    topic: &str,
    payloads: std::ops::Range<usize>,
) {
    publish_qos(cluster, id, topic, payloads, 1).await;
}

/// `publish_range` at `qos` (1: every PUBACK, 2: every PUBCOMP arrived).
async fn publish_qos(
    cluster: &Cluster,
    id: u64,
    topic: &str,
    payloads: std::ops::Range<usize>,
    qos: u8,
) {
    use tokio::io::AsyncWriteExt;
    let addr = cluster.mqtt(id);
    let mut child = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-i",
            "repl-publisher",
            "-q",
            &qos.to_string(),
            "-t",
            topic,
            "-l",
        ])
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_pub");
    let lines: String = payloads.map(|n| format!("{n}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let status = within("every PUBACK", child.wait()).await.unwrap();
    assert!(status.success(), "mosquitto_pub failed: {status}");
}

async fn receive_all(subscriber: &mut Subscriber) -> BTreeSet<String> {
    receive(subscriber, MESSAGES).await
}

/// Distinct payloads received until there are `count` of them.
pub(crate) async fn receive(subscriber: &mut Subscriber, count: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while seen.len() < count {
        let message = subscriber.next_publish().await;
        seen.insert(String::from_utf8_lossy(&message.payload).to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_owner_loses_no_acknowledged_message_and_no_session() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader(&[1, 2, 3]).await;
    wait_in_sync(&cluster, 1).await;

    let mut v5 = Subscriber::v5(cluster.mqtt(1), "repl-v5", 3600);
    assert!(!v5.connected().await);
    v5.subscribe("repl/#", 1, None).await;
    let mut v4 = Subscriber::v4(cluster.mqtt(1), "repl-v4", false);
    assert!(!v4.connected().await);
    v4.subscribe("repl/#", 1, None).await;
    drop(v5);
    drop(v4);

    publish_acknowledged(&cluster, 1, "repl/data").await;
    cluster.kill(1).await;
    let killed = Instant::now();

    // The MQTT 5 session on node 2, node 1's backup.
    cluster.wait_for_leader(&[2, 3]).await;
    let mut v5 = Subscriber::v5(cluster.mqtt(2), "repl-v5", 3600);
    assert!(
        v5.connected().await,
        "MQTT 5 session present after the failover"
    );
    let v5_connack = killed.elapsed();
    let expected: BTreeSet<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(receive_all(&mut v5).await, expected);

    // The MQTT 3.1.1 session on node 3, fetched from node 2's copy.
    let started = Instant::now();
    let mut v4 = Subscriber::v4(cluster.mqtt(3), "repl-v4", false);
    assert!(
        v4.connected().await,
        "MQTT 3.1.1 session present after the failover"
    );
    let v4_connack = started.elapsed();
    assert_eq!(receive_all(&mut v4).await, expected);
    eprintln!(
        "kill -9 to CONNACK (session present): {v5_connack:?} (MQTT 5, on the backup, election included); \
         {v4_connack:?} (MQTT 3.1.1, from another node's backup)"
    );
    // Each session came from a backup once: taken by the node its client reconnected
    // to, or adopted by node 2 when node 1 stayed unreachable for the link timeout.
    let mut failovers = 0;
    for id in [2, 3] {
        failovers += gauge(&cluster, id, "fleetmq_cluster_failovers_total")
            .await
            .expect("metrics");
    }
    assert_eq!(failovers, 2, "two sessions taken from a backup, each once");

    // Node 1 comes back: it does not serve the sessions (its stale copies go), and it
    // is a backup again (of node 3), its own backup resynced.
    cluster.spawn(1);
    wait_in_sync(&cluster, 1).await;
    wait_in_sync(&cluster, 3).await;
    eventually("the cluster to count every backup in sync", || async {
        (gauge(&cluster, 2, "fleetmq_cluster_replicas_out_of_sync").await? == 0).then_some(())
    })
    .await;
    eventually("node 1 to drop the sessions that moved away", || async {
        (gauge(&cluster, 1, "fleetmq_cluster_handover_dropped_total").await? == 2).then_some(())
    })
    .await;
    // The sessions stay where they are: a message reaches them there, once.
    let mut publisher = crate::common::mqtt::Publisher::v4(cluster.mqtt(1), "late-publisher").await;
    publisher.publish("repl/late", 1, false, b"late").await;
    assert_eq!(v5.next_publish().await.payload, b"late");
    assert_eq!(v4.next_publish().await.payload, b"late");
}

/// A backup that dies is taken out of sync (its owner's publishers keep getting their
/// PUBACKs), resynced when it returns, and then holds what was acknowledged while it was
/// away: the owner's kill -9 loses none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_backup_is_resynced_with_what_was_acknowledged_while_it_was_down() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader(&[1, 2, 3]).await;
    wait_in_sync(&cluster, 1).await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(1), "resync-v5", 3600);
    assert!(!subscriber.connected().await);
    subscriber.subscribe("resync/#", 1, None).await;
    drop(subscriber);

    // Node 1's backup dies: acknowledgements go on once it is out of sync.
    cluster.kill(2).await;
    cluster.wait_for_leader(&[1, 3]).await;
    publish_range(&cluster, 1, "resync/data", 0..MESSAGES).await;
    eventually("the cluster to count node 2 out of sync", || async {
        (gauge(&cluster, 3, "fleetmq_cluster_replicas_out_of_sync").await? >= 1).then_some(())
    })
    .await;
    eventually("node 1 to stop streaming to node 2", || async {
        (gauge(&cluster, 1, "fleetmq_cluster_backups_in_sync").await? == 0).then_some(())
    })
    .await;

    // Back, it is resynced; more messages are acknowledged with both copies.
    cluster.spawn(2);
    wait_in_sync(&cluster, 1).await;
    publish_range(&cluster, 1, "resync/data", MESSAGES..2 * MESSAGES).await;

    cluster.kill(1).await;
    cluster.wait_for_leader(&[2, 3]).await;
    let mut subscriber = Subscriber::v5(cluster.mqtt(3), "resync-v5", 3600);
    assert!(
        subscriber.connected().await,
        "session present after the failover"
    );
    let expected: BTreeSet<String> = (0..2 * MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(receive(&mut subscriber, 2 * MESSAGES).await, expected);
}

/// Messages in flight to a client that never acknowledged them survive the owner's kill
/// -9: resent first with DUP, in their order and QoS, each once, then the queued ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inflight_qos_1_and_2_messages_are_resent_in_order_after_a_failover() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader(&[1, 2, 3]).await;
    wait_in_sync(&cluster, 1).await;
    let mut options = Subscriber::v5_options(cluster.mqtt(1), "inflight-v5", 3600);
    options.set_manual_acks(true);
    let mut silent = Subscriber::v5_with(options);
    assert!(!silent.connected().await);
    silent.subscribe("inflight/#", 2, None).await;

    const HALF: usize = 30;
    publish_qos(&cluster, 1, "inflight/q1", 0..HALF, 1).await;
    publish_qos(&cluster, 1, "inflight/q2", HALF..2 * HALF, 2).await;
    // The client got the first one (in flight, never acknowledged). A message
    // acknowledged after that is replicated after the record of what was sent (one
    // ordered stream), so the backup knows what is in flight.
    assert_eq!(silent.next_publish().await.payload, b"0");
    publish_qos(&cluster, 1, "inflight/q1", 2 * HALF..2 * HALF + 1, 1).await;
    cluster.kill(1).await;
    drop(silent);

    cluster.wait_for_leader(&[2, 3]).await;
    let mut resumed = Subscriber::v5(cluster.mqtt(2), "inflight-v5", 3600);
    assert!(
        resumed.connected().await,
        "session present after the failover"
    );
    let mut received = Vec::new();
    for _ in 0..=2 * HALF {
        received.push(resumed.next_publish().await);
    }
    let payloads: Vec<String> = received
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).to_string())
        .collect();
    let expected: Vec<String> = (0..=2 * HALF).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "every message once, in order");
    let resent = received.iter().take_while(|message| message.dup).count();
    assert!(
        (1..=32).contains(&resent),
        "the ones in flight come first, with DUP: {resent}"
    );
    assert!(received[resent..].iter().all(|message| !message.dup));
    for (n, message) in received.iter().enumerate() {
        let qos = if (HALF..2 * HALF).contains(&n) { 2 } else { 1 };
        assert_eq!(message.qos, qos, "message {n} keeps its QoS");
    }
    // Nothing more: the next message is a new one.
    let mut publisher = crate::common::mqtt::Publisher::v4(cluster.mqtt(2), "after").await;
    publisher
        .publish("inflight/after", 1, false, b"after")
        .await;
    assert_eq!(resumed.next_publish().await.payload, b"after");
}

/// A message written for a persistent session while the owner's backup is out of reach
/// waits for the backup; the session is handed over to another node meanwhile (by a
/// CONNECT there, its owner reachable). Once the backup is taken out of sync, the write
/// is released with the owner's copy alone, and the message reached the new owner in the
/// hand-over: the publisher gets its PUBACK, not a refusal, and the session has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_handed_over_while_its_owners_backup_is_out_of_reach_keeps_its_message_acknowledged(
) {
    let mut cluster = Cluster::configure(3, &[]).await;
    // The backup is given up after ten heartbeats: 4 s for the hand-over to happen first.
    cluster.set_heartbeat_ms(400);
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    // Owner and backup both other than the leader, which the CONNECT goes to (a node's
    // backup is the next id after it).
    let owner = leader % 3 + 1;
    let backup = owner % 3 + 1;
    wait_in_sync(&cluster, owner).await;

    let (mut subscriber, present) = RawClient::connect(cluster.mqtt(owner), "handed-sub", 5)
        .await
        .unwrap();
    assert!(!present);
    subscriber.subscribe("handed/#", 1).await.unwrap();
    drop(subscriber);
    let (mut publisher, _) = RawClient::connect(cluster.mqtt(owner), "handed-pub", 5)
        .await
        .unwrap();

    cluster.pause_link(owner, backup, true);
    let publishing =
        tokio::spawn(async move { publisher.publish("handed/1", 1, 1, b"kept", false).await });
    write_waiting_for_backup(&cluster, owner, backup).await;

    let (mut moved, present) = RawClient::connect(cluster.mqtt(leader), "handed-sub", 5)
        .await
        .unwrap();
    assert!(present, "the session was handed over");
    let outcome = within("the PUBACK", publishing).await.unwrap();
    assert_eq!(
        outcome,
        Ok(Outcome::Accepted),
        "the message travelled with the session handed over"
    );
    let received = within("the message on the new owner", moved.receive())
        .await
        .unwrap();
    assert_eq!(received.payload, b"kept");
    cluster.pause_link(owner, backup, false);
}

/// A QoS 2 message forwarded to the node owning a persistent session, whose write there
/// waits for that node's backup when the owner is cut off (a partition): the session's
/// client comes back on the backup, which takes the session over from its copy and
/// pulls the message from the publishing node. Healed, the owner learns of the move,
/// its write is released without the backup and fails for the session that moved; the
/// owner names the session and its new node, and the publishing node hands the message
/// there (which has it already) instead of failing the publisher, whose resend would
/// have been a second message for the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_the_owner_could_not_keep_for_a_session_taken_from_its_backup_is_handed_to_the_new_owner(
) {
    let cluster = Cluster::start(3).await;
    // The publisher on the leader, the session's owner and backup the other two (a
    // node's backup is the next id after it).
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let owner = leader % 3 + 1;
    let backup = owner % 3 + 1;
    wait_in_sync(&cluster, owner).await;

    let subscriber = subscribed_and_routed(&cluster, owner, leader, "moving-sub", "moving").await;
    drop(subscriber);
    let (mut publisher, _) = RawClient::connect(cluster.mqtt(leader), "moving-pub", 5)
        .await
        .unwrap();

    // The owner's write waits for the backup, then the owner is cut off (every link of
    // it, the paused one too): it can commit nothing (the backup stays in sync), and
    // the write waits.
    cluster.pause_link(owner, backup, true);
    let publishing =
        tokio::spawn(async move { publisher.publish("moving/1", 2, 1, b"once", false).await });
    write_waiting_for_backup(&cluster, owner, backup).await;
    cluster.isolate(owner, true);

    let (mut moved, present) = RawClient::connect(cluster.mqtt(backup), "moving-sub", 5)
        .await
        .unwrap();
    assert!(present, "the session was taken over from the backup's copy");
    let message = within("the message on the new owner", moved.receive())
        .await
        .unwrap();
    assert_eq!(message.payload, b"once");
    cluster.isolate(owner, false);
    let outcome = within("the publisher's PUBREC", publishing).await.unwrap();
    assert_eq!(
        outcome,
        Ok(Outcome::Accepted),
        "the publisher was refused although the session's new owner has the message"
    );
    let handed = format!("fleetmq_cluster_forwards_moved_total{{peer=\"{owner}\"}}");
    let text = cluster.try_metrics(leader).await.unwrap();
    assert_eq!(
        metric_value(&text, &handed),
        Some(1.0),
        "the owner handed the message back for the session's new owner"
    );
    let again = tokio::time::timeout(std::time::Duration::from_secs(1), moved.receive()).await;
    assert!(again.is_err(), "the message came twice: {again:?}");
}

/// A QoS 2 PUBLISH whose node dies after storing its packet id (on its backup too) but
/// before its forward reached the subscriber's node: the publisher, never answered,
/// sends it again (DUP, same packet id) to the node that took its session over from the
/// backup's copy. That node must route it: the copy says the packet id was received,
/// not that the message reached every node it was for. (It answered PUBREC without
/// routing it, and the subscriber never got a message its publisher was told was
/// taken.) The link between the publisher's node and the subscriber's node is cut so
/// that the forward waits; the link timeout is long, so nothing else moves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos2_message_its_publishers_node_died_before_forwarding_reaches_the_subscriber_once_sent_again(
) {
    let (mut cluster, mut subscriber, mut publisher) =
        publisher_on_1_subscriber_on_3("pf", None).await;
    // The publisher's node, its backup (the next id), and the subscriber's node.
    let (publishers, backup, subscribers) = (1u64, 2u64, 3u64);

    cluster.cut_link(publishers, subscribers, true);
    let before = replicated_writes(&cluster.try_metrics(publishers).await.unwrap());
    let publishing =
        tokio::spawn(async move { publisher.publish("pf/1", 2, 1, b"once", false).await });
    forward_kept_and_packet_id_on_backup(&cluster, publishers, subscribers, backup, before).await;
    cluster.kill(publishers).await;
    publishing.abort();

    let (mut publisher, present) = reconnected(&cluster, backup, "pf-pub").await;
    assert!(
        present,
        "the publisher's session was taken over from the copy"
    );
    let outcome = within(
        "the PUBREC of the message sent again",
        publisher.publish("pf/1", 2, 1, b"once", true),
    )
    .await;
    assert_eq!(outcome, Ok(Outcome::Accepted));
    received_once(&mut subscriber, b"once").await;
}

/// A QoS 2 PUBLISH whose node died with its forward unsent, its packet id on the
/// backup: the session taken from the copy holds the packet id unconfirmed, and keeps
/// it so when that node hands the session on to a third before the client sent the
/// message again. Node 1's link to the subscriber's node 3 is cut, node 1 is killed,
/// the publisher comes back on node 2 (the backup), leaves, and sends the message again
/// on node 3: routed there, not only acknowledged (a loss before).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos2_message_unconfirmed_where_its_session_moves_on_is_routed_when_sent_again() {
    let (mut cluster, mut subscriber, mut publisher) =
        publisher_on_1_subscriber_on_3("mo", None).await;
    let (publishers, backup, subscribers) = (1u64, 2u64, 3u64);

    cluster.cut_link(publishers, subscribers, true);
    let before = replicated_writes(&cluster.try_metrics(publishers).await.unwrap());
    let publishing =
        tokio::spawn(async move { publisher.publish("mo/1", 2, 1, b"once", false).await });
    forward_kept_and_packet_id_on_backup(&cluster, publishers, subscribers, backup, before).await;
    cluster.kill(publishers).await;
    publishing.abort();

    let (on_backup, present) = reconnected(&cluster, backup, "mo-pub").await;
    assert!(present, "the publisher's session was taken from the copy");
    drop(on_backup);
    let (mut publisher, present) = reconnected(&cluster, subscribers, "mo-pub").await;
    assert!(present, "the publisher's session was handed on");
    let outcome = within(
        "the PUBREC of the message sent again",
        publisher.publish("mo/1", 2, 1, b"once", true),
    )
    .await;
    assert_eq!(outcome, Ok(Outcome::Accepted));
    received_once(&mut subscriber, b"once").await;
}

/// A persistent publisher's QoS 1 messages queue behind its QoS 2 message held until
/// its packet id is on the backup; once `LINE_LIMIT` (1,024) wait, its connection is not
/// read, and once the backup answers, what waited in the read buffer is read too:
/// everything is acknowledged and delivered, in order. Node 1's link to its backup is
/// held while the publisher sends one QoS 2 and 1,100 QoS 1 messages without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_behind_a_held_qos2_forward_keep_their_order_past_the_line_limit() {
    const LINE_LIMIT: usize = 1024;
    const MORE: u16 = 1100;
    // The subscriber's queue takes the whole burst (1,000 by default: the overflow of
    // a subscriber that far behind is dropped and counted).
    let (cluster, mut subscriber, mut publisher) =
        publisher_on_1_subscriber_on_3("ll", Some("max_queued_messages = 5000")).await;
    let (publishers, backup) = (1u64, 2u64);

    cluster.pause_link(publishers, backup, true);
    publisher.send_publish("ll/1", 2, 1, b"0").await.unwrap();
    for n in 1..=MORE {
        let payload = n.to_string();
        publisher
            .send_publish("ll/1", 1, n + 1, payload.as_bytes())
            .await
            .unwrap();
    }
    let read = "fleetmq_messages_received_total{qos=\"1\"}";
    eventually("the line full", || async {
        let text = cluster.try_metrics(publishers).await?;
        (metric_value(&text, read)? >= (LINE_LIMIT - 1) as f64).then_some(())
    })
    .await;
    let text = cluster.try_metrics(publishers).await.unwrap();
    assert_eq!(
        metric_value(&text, read),
        Some((LINE_LIMIT - 1) as f64),
        "read on past a full line"
    );

    cluster.pause_link(publishers, backup, false);
    let last = within(
        "the last acknowledgement",
        publisher.acknowledgement(4, MORE + 1),
    )
    .await;
    assert_eq!(last, Ok(0));
    for n in 0..=MORE {
        let message = within(&format!("message {n}"), subscriber.receive())
            .await
            .unwrap();
        assert_eq!(message.payload, n.to_string().as_bytes(), "out of order");
    }
}

/// The payloads `subscriber` gets until (and without) `marker`.
async fn received_before(subscriber: &mut RawClient, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut before = Vec::new();
    loop {
        let message = within("the marker at the subscriber", subscriber.receive())
            .await
            .unwrap();
        if message.payload == marker {
            return before;
        }
        before.push(message.payload);
    }
}

/// A QoS 2 PUBLISH from a persistent session goes to other nodes only once its packet
/// id is on the session's backup: had it been forwarded before, and the publisher's
/// node died, the node taking the session over from the backup's copy (without the
/// packet id) would route the client's resend as a new message, a second copy for the
/// subscriber. Node 1's link to its backup, node 2, is held while the publisher on node
/// 1 sends the message; a marker published on node 1 after it reaches the subscriber
/// on node 3 over the same link (the message would have come first), node 1 is killed
/// (and the held link cut), the publisher sends the message again to node 2, and a
/// second marker from node 2 ends what the subscriber got: the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos2_message_goes_to_other_nodes_only_once_its_packet_id_is_on_the_backup() {
    let (mut cluster, mut subscriber, mut publisher) =
        publisher_on_1_subscriber_on_3("ho", None).await;
    let (publishers, backup) = (1u64, 2u64);
    let mut marker = crate::common::mqtt::Publisher::v4(cluster.mqtt(publishers), "ho-m1").await;

    cluster.pause_link(publishers, backup, true);
    let publishing =
        tokio::spawn(async move { publisher.publish("ho/1", 2, 1, b"once", false).await });
    write_waiting_for_backup(&cluster, publishers, backup).await;
    marker.publish("ho/marker", 1, false, b"marker 1").await;
    let mut received = received_before(&mut subscriber, b"marker 1").await;
    cluster.kill(publishers).await;
    publishing.abort();
    // The held link would hide the death from node 2 (the proxy keeps its side open);
    // cut, node 2 sees it at once, and nothing held reaches it.
    cluster.cut_link(publishers, backup, true);

    let (mut publisher, present) = reconnected(&cluster, backup, "ho-pub").await;
    assert!(
        present,
        "the publisher's session was taken over from the copy"
    );
    let outcome = within(
        "the PUBREC of the message sent again",
        publisher.publish("ho/1", 2, 1, b"once", true),
    )
    .await;
    assert_eq!(outcome, Ok(Outcome::Accepted));
    let mut marker = crate::common::mqtt::Publisher::v4(cluster.mqtt(backup), "ho-m2").await;
    marker.publish("ho/marker", 1, false, b"marker 2").await;
    received.extend(received_before(&mut subscriber, b"marker 2").await);
    let received: Vec<_> = received
        .iter()
        .map(|payload| String::from_utf8_lossy(payload))
        .collect();
    let copies = received.iter().filter(|payload| *payload == "once").count();
    assert_eq!(copies, 1, "the subscriber got {received:?}");
}

/// A QoS 2 PUBLISH whose node dies after its forward reached the subscriber's node but
/// before that node acknowledged it: the publisher sends it again (DUP) to the node that
/// takes its session over from the backup's copy, which routes it under the cluster id
/// the dead node gave it (the backup knew it), so the subscriber's node recognises it
/// and the subscriber gets it once. (Under a new id it was a second message.) Four
/// nodes (a node's backup is the next id): the publisher's node, the subscriber's node,
/// whose link to its own backup is held so that its write, and so its acknowledgement,
/// waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos2_message_sent_again_after_its_publishers_node_died_is_recognised_where_it_arrived() {
    let mut cluster = Cluster::configure(4, &[]).await;
    cluster.configure_section("cluster", "link_timeout_ms = 30000");
    for id in 1..=4 {
        cluster.spawn(id);
    }
    // The leader is the publisher's node's backup: once the publisher's node is dead and
    // the subscriber's node's link to its backup held, it still reaches a majority.
    let leader = cluster.wait_for_leader(&[1, 2, 3, 4]).await;
    let next = |id: u64| id % 4 + 1;
    let (publishers, backup) = (next(next(next(leader))), leader);
    let (subscribers, subscribers_backup) = (next(leader), next(next(leader)));
    wait_in_sync(&cluster, publishers).await;
    wait_in_sync(&cluster, subscribers).await;

    let mut subscriber =
        subscribed_and_routed(&cluster, subscribers, publishers, "pa-sub", "pa").await;
    let (mut publisher, _) = RawClient::connect(cluster.mqtt(publishers), "pa-pub", 5)
        .await
        .unwrap();

    cluster.pause_link(subscribers, subscribers_backup, true);
    let before = replicated_writes(&cluster.try_metrics(publishers).await.unwrap());
    let publishing =
        tokio::spawn(async move { publisher.publish("pa/1", 2, 1, b"once", false).await });
    // The subscriber's node holds the message (its write waits for its backup), the
    // publisher's node waits for its acknowledgement and has the packet id on its backup.
    write_waiting_for_backup(&cluster, subscribers, subscribers_backup).await;
    forward_kept_and_packet_id_on_backup(&cluster, publishers, subscribers, backup, before).await;
    cluster.kill(publishers).await;
    publishing.abort();

    let (mut publisher, present) = reconnected(&cluster, backup, "pa-pub").await;
    assert!(
        present,
        "the publisher's session was taken over from the copy"
    );
    let resent = tokio::spawn(async move { publisher.publish("pa/1", 2, 1, b"once", true).await });
    cluster.pause_link(subscribers, subscribers_backup, false);
    let outcome = within("the PUBREC of the message sent again", resent)
        .await
        .unwrap();
    assert_eq!(outcome, Ok(Outcome::Accepted));
    received_once(&mut subscriber, b"once").await;
}

/// A QoS 2 PUBLISH to a persistent session reaches its client only once the record that
/// it is in flight is on the session's backup: a node taking the session over from that
/// copy then resends it with DUP (or releases it) rather than sending it again as new,
/// which the client would take for a second message. Node 1's link to its backup, node
/// 2, is held (the proxy keeps every byte) while a QoS 2 message is published to a
/// subscriber on node 1: the message waits until the link goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qos2_publish_reaches_its_client_only_once_the_backup_has_it_in_flight() {
    // The backup is declared out of sync only after ten heartbeats, well after the
    // observation below.
    let cluster = Cluster::start_with(3, |cluster| cluster.set_heartbeat_ms(400)).await;
    eventually("node 1's backup in sync", || async {
        (gauge(&cluster, 1, "fleetmq_cluster_backups_in_sync").await? == 1).then_some(())
    })
    .await;
    let (mut subscriber, _) = RawClient::connect(cluster.mqtt(1), "durable-sub", 5)
        .await
        .unwrap();
    subscriber.subscribe("durable/#", 2).await.unwrap();
    let (mut publisher, _) = RawClient::connect(cluster.mqtt(1), "durable-pub", 5)
        .await
        .unwrap();

    cluster.pause_link(1, 2, true);
    let publishing = tokio::spawn(async move {
        publisher
            .publish("durable/1", 2, 1, b"exactly once", false)
            .await
    });
    let early = tokio::time::timeout(std::time::Duration::from_secs(1), subscriber.receive()).await;
    assert!(
        early.is_err(),
        "shown to the client before its backup had it in flight: {early:?}"
    );
    cluster.pause_link(1, 2, false);
    let message = within("the message once the backup answered", subscriber.receive())
        .await
        .unwrap();
    assert_eq!(message.payload, b"exactly once");
    assert!(!message.dup);
    let outcome = within("the publisher's acknowledgement", publishing)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted));
}
