//! QoS 1/2 flows cut by a crash (SIGKILL) resume where they stopped: outgoing messages
//! the subscriber had not acknowledged are resent with DUP=1 and their packet ids, a
//! PUBREL is resent for a message whose PUBREC the broker had received, and the packet id
//! of an incoming QoS 2 message the broker had acknowledged with PUBREC still protects it
//! from a second delivery when the publisher resends it.

use fleetmq::protocol::{Packet, ProtocolVersion, Publish, QoS};

use crate::client::{ack, check_ack, publish, Client, Identity, Inbox, V311, V5};
use crate::common::{Node, Settings};

const SENTINEL: &[u8] = b"sentinel";

/// Publishes a retained QoS 1 message and waits for its PUBACK. The broker acknowledges
/// only once the write storing it is durable, and writes are made durable in the order
/// they were submitted: everything the broker had stored before is durable too.
async fn barrier(publisher: &mut Client) {
    let mut message = publish("restart/barrier", QoS::AtLeastOnce, 0, "barrier");
    message.retain = true;
    publisher.publish_acknowledged(message).await;
}

#[tokio::test]
async fn unacknowledged_deliveries_are_resent_after_sigkill_v311() {
    unacknowledged_deliveries_are_resent(V311).await;
}

#[tokio::test]
async fn unacknowledged_deliveries_are_resent_after_sigkill_v5() {
    unacknowledged_deliveries_are_resent(V5).await;
}

async fn unacknowledged_deliveries_are_resent(version: ProtocolVersion) {
    let t1 = "restart/inflight/q1";
    let t2 = "restart/inflight/q2";
    let mut node = Node::new(Settings::default());
    let broker = node.start().await;
    let identity = Identity::persistent(&format!("inflight-{}", version.level()), version);
    let mut subscriber = Client::connect_expecting(broker.addr, &identity, false).await;
    subscriber
        .subscribe(&[(t1, QoS::AtLeastOnce), (t2, QoS::ExactlyOnce)])
        .await;
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("inflight-pub", V5), false).await;
    for (topic, qos, payload) in [
        (t1, QoS::AtLeastOnce, "one"),
        (t2, QoS::ExactlyOnce, "two"),
        (t2, QoS::ExactlyOnce, "three"),
    ] {
        publisher
            .publish_acknowledged(publish(topic, qos, 0, payload))
            .await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        let publish = subscriber.expect_publish().await;
        assert!(!publish.dup, "{publish:?}");
        first.push(publish);
    }
    let by_payload = |publishes: &[Publish], payload: &str| -> Publish {
        publishes
            .iter()
            .find(|p| p.payload == payload.as_bytes())
            .unwrap_or_else(|| panic!("no {payload:?} in {publishes:?}"))
            .clone()
    };
    let one = by_payload(&first, "one");
    let two = by_payload(&first, "two");
    let three = by_payload(&first, "three");
    assert_eq!(
        (one.qos, two.qos, three.qos),
        (QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::ExactlyOnce)
    );
    // "one" and "two" stay unacknowledged; "three" gets its PUBREC, and the broker
    // answers with PUBREL, which stays without PUBCOMP.
    subscriber.send(&Packet::PubRec(ack(three.packet_id))).await;
    let pubrel = subscriber.expect_ack(Packet::PubRel, "PUBREL").await;
    check_ack(&pubrel, three.packet_id, "PUBREL");
    barrier(&mut publisher).await;

    broker.kill().await;
    assert!(
        subscriber.until_closed().await.is_empty(),
        "nothing more before the connection dropped"
    );
    let broker = node.start().await;
    let mut subscriber = Client::connect_expecting(broker.addr, &identity, true).await;
    let mut resent = Vec::new();
    let mut pubrels = Vec::new();
    for _ in 0..3 {
        match subscriber.recv().await {
            Packet::Publish(publish) => resent.push(publish),
            Packet::PubRel(pubrel) => pubrels.push(pubrel.packet_id),
            other => panic!("expected a resent PUBLISH or PUBREL, got {other:?}"),
        }
    }
    assert_eq!(
        pubrels,
        [three.packet_id],
        "the PUBREL for the message whose PUBREC the broker had, instead of its PUBLISH (resent: {resent:?})"
    );
    for original in [&one, &two] {
        let again = by_payload(&resent, std::str::from_utf8(&original.payload).unwrap());
        assert!(again.dup, "a resent PUBLISH has DUP=1: {again:?}");
        assert_eq!(
            (again.packet_id, again.qos, &again.topic),
            (original.packet_id, original.qos, &original.topic),
            "resent with its packet id"
        );
    }
    // Complete every flow, then nothing else may arrive before the sentinels.
    subscriber.send(&Packet::PubAck(ack(one.packet_id))).await;
    subscriber
        .send(&Packet::PubComp(ack(three.packet_id)))
        .await;
    subscriber.send(&Packet::PubRec(ack(two.packet_id))).await;
    let pubrel = subscriber.expect_ack(Packet::PubRel, "PUBREL").await;
    check_ack(&pubrel, two.packet_id, "PUBREL");
    subscriber.send(&Packet::PubComp(ack(two.packet_id))).await;

    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("inflight-pub", V5), false).await;
    publisher
        .publish_acknowledged(publish(t1, QoS::AtLeastOnce, 0, SENTINEL))
        .await;
    publisher
        .publish_acknowledged(publish(t2, QoS::ExactlyOnce, 0, SENTINEL))
        .await;
    let mut inbox = Inbox::new();
    inbox.receive_through(&mut subscriber, t1, SENTINEL).await;
    inbox.receive_through(&mut subscriber, t2, SENTINEL).await;
    assert_eq!(
        inbox.publishes.len(),
        2,
        "only the sentinels once every flow is complete: {:?}",
        inbox.publishes
    );
    subscriber.disconnect().await;
    publisher.disconnect().await;
    broker.terminate().await;
}

#[tokio::test]
async fn an_incoming_qos2_message_is_delivered_once_across_sigkill_v311() {
    incoming_qos2_is_delivered_once(V311).await;
}

#[tokio::test]
async fn an_incoming_qos2_message_is_delivered_once_across_sigkill_v5() {
    incoming_qos2_is_delivered_once(V5).await;
}

async fn incoming_qos2_is_delivered_once(version: ProtocolVersion) {
    let topic = "restart/incoming";
    let mut node = Node::new(Settings::default());
    let broker = node.start().await;
    let subscriber_identity = Identity::persistent("incoming-sub", V5);
    let mut subscriber = Client::connect_expecting(broker.addr, &subscriber_identity, false).await;
    subscriber.subscribe(&[(topic, QoS::ExactlyOnce)]).await;
    subscriber.disconnect().await;

    let identity = Identity::persistent(&format!("incoming-pub-{}", version.level()), version);
    let mut publisher = Client::connect_expecting(broker.addr, &identity, false).await;
    // PUBREC for both: the broker owns them now. No PUBREL yet.
    for (packet_id, payload) in [(7, "resent"), (8, "released")] {
        publisher
            .send(&Packet::Publish(publish(
                topic,
                QoS::ExactlyOnce,
                packet_id,
                payload,
            )))
            .await;
        let pubrec = publisher.expect_ack(Packet::PubRec, "PUBREC").await;
        check_ack(&pubrec, packet_id, "PUBREC");
    }

    broker.kill().await;
    let broker = node.start().await;
    let mut publisher = Client::connect_expecting(broker.addr, &identity, true).await;
    // Resending the PUBLISH (DUP=1, same packet id) is allowed before PUBREL: the broker
    // answers PUBREC again without delivering it a second time.
    let mut again = publish(topic, QoS::ExactlyOnce, 7, "resent");
    again.dup = true;
    publisher.send(&Packet::Publish(again)).await;
    let pubrec = publisher.expect_ack(Packet::PubRec, "PUBREC").await;
    check_ack(&pubrec, 7, "PUBREC");
    for packet_id in [7, 8] {
        publisher.send(&Packet::PubRel(ack(packet_id))).await;
        let pubcomp = publisher.expect_ack(Packet::PubComp, "PUBCOMP").await;
        // In MQTT 5, 0x92 (packet identifier not found) would mean the broker had lost it.
        check_ack(&pubcomp, packet_id, "PUBCOMP");
    }
    publisher
        .publish_acknowledged(publish(topic, QoS::ExactlyOnce, 0, SENTINEL))
        .await;
    publisher.disconnect().await;

    let mut subscriber = Client::connect_expecting(broker.addr, &subscriber_identity, true).await;
    let mut inbox = Inbox::new();
    inbox
        .receive_through(&mut subscriber, topic, SENTINEL)
        .await;
    assert_eq!(
        inbox.topic(topic),
        ["resent".as_bytes(), b"released", SENTINEL],
        "each message exactly once, in order"
    );
    subscriber.disconnect().await;
    broker.terminate().await;
}
