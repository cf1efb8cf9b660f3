//! Retained messages owed since a SUBSCRIBE: apart from the queue limits, in queue order,
//! within the window and the outbox budget.

use super::*;

/// `count` retained messages `r/0`, `r/1`... at `qos`.
fn retained(count: usize, qos: QoS) -> Vec<Arc<Message>> {
    (0..count)
        .map(|index| {
            let mut message = message(&format!("r/{index}"), qos);
            message.retain = true;
            Arc::new(message)
        })
        .collect()
}

fn topics(packets: Vec<Packet>) -> Vec<String> {
    publishes(packets)
        .into_iter()
        .map(|publish| publish.topic.to_string())
        .collect()
}

#[test]
fn a_backlog_larger_than_the_queue_is_delivered_whole() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let queue_limit = session.limits().max_queued_messages;
        let count = 4 * queue_limit;
        assert_eq!(
            session.queue_retained(QoS::AtMostOnce, None, retained(count, QoS::AtMostOnce)),
            0
        );
        assert_eq!(session.retained_backlog_len(), count);
        assert_eq!(session.queued_len(), 0, "the queue is not used");
        // Live messages still have the whole queue.
        for _ in 0..queue_limit {
            assert_eq!(
                session.enqueue(delivery("live", QoS::AtMostOnce), now),
                Ok(())
            );
        }
        let (out, dropped) = poll(&mut session, now);
        assert!(dropped.is_empty(), "{dropped:?}");
        let sent = publishes(out);
        assert_eq!(sent.len(), count + queue_limit);
        assert!(sent[..count].iter().all(|publish| publish.retain));
        let expected: Vec<String> = (0..count).map(|index| format!("r/{index}")).collect();
        let got: Vec<String> = sent[..count].iter().map(|p| p.topic.to_string()).collect();
        assert_eq!(got, expected);
        assert_eq!(session.retained_backlog_len(), 0);
        assert!(!session.has_outgoing());
    }
}

#[test]
fn the_backlog_is_bounded_and_reports_what_did_not_fit() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    let limit = session.limits().max_retained_backlog;
    assert_eq!(
        session.queue_retained(QoS::AtMostOnce, None, retained(limit - 3, QoS::AtMostOnce)),
        0
    );
    // A second SUBSCRIBE only gets the room left.
    assert_eq!(
        session.queue_retained(QoS::AtMostOnce, None, retained(10, QoS::AtMostOnce)),
        7
    );
    assert_eq!(session.retained_backlog_len(), limit);
    assert_eq!(publishes(poll(&mut session, now).0).len(), limit);
}

#[test]
fn retained_messages_keep_their_place_between_earlier_and_later_queued_ones() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        assert_eq!(
            session.enqueue(delivery("before", QoS::AtMostOnce), now),
            Ok(())
        );
        session.queue_retained(QoS::AtMostOnce, None, retained(2, QoS::AtMostOnce));
        assert_eq!(
            session.enqueue(delivery("after", QoS::AtMostOnce), now),
            Ok(())
        );
        assert_eq!(
            topics(poll(&mut session, now).0),
            ["before", "r/0", "r/1", "after"]
        );
    }
}

#[test]
fn qos1_retained_messages_wait_for_the_window_and_hold_back_later_ones() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let window = usize::from(session.limits().max_inflight);
        session.queue_retained(
            QoS::AtLeastOnce,
            None,
            retained(window + 2, QoS::AtLeastOnce),
        );
        assert_eq!(
            session.enqueue(delivery("live", QoS::AtMostOnce), now),
            Ok(())
        );
        let first = publishes(poll(&mut session, now).0);
        assert_eq!(first.len(), window);
        assert!(first
            .iter()
            .all(|p| p.qos == QoS::AtLeastOnce && p.retain && p.packet_id != 0));
        // Waiting for acknowledgements is not "falling behind".
        assert!(!session.has_outgoing());
        assert!(!session.has_queued_outgoing());
        for publish in &first {
            handle(
                &mut session,
                Packet::PubAck(response(publish.packet_id)),
                now,
            );
        }
        assert_eq!(topics(poll(&mut session, now).0), ["r/2", "r/3", "live"]);
    }
}

#[test]
fn the_budget_limits_retained_messages_but_always_moves_one() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    session.queue_retained(QoS::AtMostOnce, None, retained(5, QoS::AtMostOnce));
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    session.poll_outgoing_within(now, 0, &mut out, &mut dropped);
    assert_eq!(topics(std::mem::take(&mut out)), ["r/0"]);
    // The rest waits, and is not a backlog of live traffic.
    assert!(session.has_outgoing());
    assert!(!session.has_queued_outgoing());
    let one = crate::protocol::encoded_len(
        &Packet::Publish(publishes(poll_within(&mut session, now, 0)).remove(0)),
        ProtocolVersion::V3_1_1,
    );
    assert_eq!(session.retained_backlog_len(), 3);
    session.poll_outgoing_within(now, 2 * one, &mut out, &mut dropped);
    assert_eq!(topics(out), ["r/2", "r/3"]);
    assert!(dropped.is_empty());
}

fn poll_within(session: &mut Session, now: Instant, budget: usize) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    session.poll_outgoing_within(now, budget, &mut out, &mut dropped);
    out
}

#[test]
fn retained_messages_go_at_the_granted_qos_with_the_subscription_identifier() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let mut messages = retained(1, QoS::ExactlyOnce);
    messages.extend(retained(1, QoS::AtMostOnce));
    session.queue_retained(QoS::AtLeastOnce, Some(42), messages);
    let sent = publishes(poll(&mut session, now).0);
    let got: Vec<(QoS, bool, Vec<u32>)> = sent
        .into_iter()
        .map(|p| (p.qos, p.retain, p.properties.subscription_identifiers))
        .collect();
    assert_eq!(
        got,
        [
            (QoS::AtLeastOnce, true, vec![42]),
            (QoS::AtMostOnce, true, vec![42])
        ]
    );
}

#[test]
fn an_expired_retained_message_is_dropped_when_its_turn_comes() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let mut expiring = message("r/old", QoS::AtMostOnce);
    expiring.expires_at = Some(now + Duration::from_secs(1));
    let messages = vec![Arc::new(expiring), retained(1, QoS::AtMostOnce).remove(0)];
    session.queue_retained(QoS::AtMostOnce, None, messages);
    let (out, dropped) = poll(&mut session, now + Duration::from_secs(2));
    assert_eq!(topics(out), ["r/0"]);
    assert_eq!(dropped, [DropReason::Expired]);
}

#[test]
fn the_backlog_waits_while_offline_and_goes_out_after_reconnecting() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    session.queue_retained(QoS::AtMostOnce, None, retained(3, QoS::AtMostOnce));
    session.detach(now);
    assert!(poll(&mut session, now).0.is_empty());
    session.attach(
        &connect(ProtocolVersion::V3_1_1),
        Duration::from_secs(60),
        now,
    );
    assert_eq!(topics(poll(&mut session, now).0), ["r/0", "r/1", "r/2"]);
}

#[test]
fn congestion_starts_near_the_queue_limit_and_ends_at_half() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    let mut limits = limits();
    limits.max_queued_messages = 16;
    let (mut session16, _) = attached_with(&connect(ProtocolVersion::V3_1_1), limits);
    for queued in 1..=16 {
        assert_eq!(
            session16.enqueue(delivery("a", QoS::AtLeastOnce), now),
            Ok(())
        );
        // 7/8 of 16 is 14.
        assert_eq!(session16.queue_congested(), queued >= 14, "{queued} queued");
    }
    assert!(!session16.queue_relieved());
    // A window of 2 takes two: 14 left, still more than half.
    poll(&mut session16, now);
    assert!(!session16.queue_relieved());
    // The retained backlog does not count.
    session.queue_retained(QoS::AtMostOnce, None, retained(20, QoS::AtMostOnce));
    assert!(!session.queue_congested());
    assert!(session.queue_relieved());
}
