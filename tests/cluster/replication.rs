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
pub(crate) async fn subscribed_and_routed(
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

/// Waits until a write of node `owner` waits for its backup `backup` (its replication
/// queue holds bytes).
pub(crate) async fn write_waiting_for_backup(cluster: &Cluster, owner: u64, backup: u64) {
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
