//! A QoS 2 message whose publisher's node dies is delivered exactly once: it goes to
//! other nodes only once its packet id (and the cluster id it goes under) is on the
//! publisher's session's backup, a node taking the session from the copy routes the
//! client's resend under that id (the nodes that had the message recognise it), the
//! packet id stays unconfirmed until the resend was routed wherever the session moves,
//! and a publisher's messages keep their order behind a held one. Three or four nodes
//! with `replication_factor = 2` (a node's backup is the next id) and a long link
//! timeout, so that nothing moves while a link is held or cut.

use crate::common::acked::{Outcome, RawClient};
use crate::common::{eventually, metric_value, within, Cluster};
use crate::replication::{subscribed_and_routed, wait_in_sync, write_waiting_for_backup};

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
