//! The queue of a bridge's local session (its outbox): never congested, QoS 0 dropped
//! first when full, then refuse or drop-oldest, every drop counted.

use std::sync::atomic::Ordering;

use super::*;
use crate::session::{OutboxDrops, OutboxMode};

fn enqueue_ok(session: &mut Session, delivery: Delivery, now: Instant) {
    if let Err(reason) = session.enqueue(delivery, now) {
        panic!("enqueue dropped: {reason:?}");
    }
}

fn outbox(drop_oldest: bool) -> (Session, Instant, Arc<OutboxDrops>) {
    let drops = Arc::new(OutboxDrops::default());
    let mut limits = limits();
    limits.outbox = Some(OutboxMode {
        drop_oldest,
        drops: drops.clone(),
    });
    let (session, now) = attached_with(&connect(ProtocolVersion::V5), limits);
    (session, now, drops)
}

fn topics(session: &mut Session, now: Instant) -> Vec<String> {
    // A window of 2: poll and acknowledge until the queue is empty.
    let mut sent = Vec::new();
    loop {
        let (packets, _) = poll(session, now);
        if packets.is_empty() {
            return sent;
        }
        for publish in publishes(packets) {
            sent.push(publish.topic.to_string());
            if publish.qos == QoS::AtLeastOnce {
                let _ = session.handle_packet(Packet::PubAck(response(publish.packet_id)), now);
            }
        }
    }
}

#[test]
fn a_full_outbox_drops_waiting_qos0_first_then_refuses() {
    let (mut session, now, drops) = outbox(false);
    enqueue_ok(&mut session, delivery("q1-a", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("q0-a", QoS::AtMostOnce), now);
    for topic in ["q1-b", "q1-c", "q1-d"] {
        enqueue_ok(&mut session, delivery(topic, QoS::AtLeastOnce), now);
    }
    assert!(
        !session.queue_congested(),
        "an outbox never holds publishers back"
    );
    // Full (5): the waiting QoS 0 message makes room, then new ones are refused.
    enqueue_ok(&mut session, delivery("q1-e", QoS::AtLeastOnce), now);
    assert_eq!(
        session.enqueue(delivery("q1-f", QoS::AtLeastOnce), now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(drops.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(drops.refused.load(Ordering::Relaxed), 1);
    assert_eq!(
        topics(&mut session, now),
        ["q1-a", "q1-b", "q1-c", "q1-d", "q1-e"]
    );
}

#[test]
fn drop_oldest_makes_room_for_qos1_but_not_for_qos0() {
    let (mut session, now, drops) = outbox(true);
    for topic in ["a", "b", "c", "d", "e"] {
        enqueue_ok(&mut session, delivery(topic, QoS::AtLeastOnce), now);
    }
    enqueue_ok(&mut session, delivery("f", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("g", QoS::AtLeastOnce), now);
    // A QoS 0 newcomer does not push out QoS 1 messages.
    assert_eq!(
        session.enqueue(delivery("h", QoS::AtMostOnce), now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(drops.evicted.load(Ordering::Relaxed), 2);
    assert_eq!(drops.refused.load(Ordering::Relaxed), 1);
    assert_eq!(topics(&mut session, now), ["c", "d", "e", "f", "g"]);
}

#[test]
fn a_client_session_keeps_its_queue_and_its_backpressure() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut session, delivery("q0", QoS::AtMostOnce), now);
    for _ in 0..4 {
        enqueue_ok(&mut session, delivery("q1", QoS::AtLeastOnce), now);
    }
    assert!(session.queue_congested());
    assert_eq!(
        session.enqueue(delivery("q1", QoS::AtLeastOnce), now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(session.queued_len(), 5);
}
