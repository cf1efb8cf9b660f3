//! Broker-to-client delivery: queue limits, window, packet ids, redelivery, expiry, aliases.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::reason;

fn enqueue_ok(session: &mut Session, delivery: Delivery, now: Instant) {
    if let Err(reason) = session.enqueue(delivery, now) {
        panic!("enqueue dropped: {reason:?}");
    }
}

fn v5_connect(configure: impl FnOnce(&mut ConnectProperties)) -> Connect {
    let mut connect = connect(ProtocolVersion::V5);
    configure(&mut connect.properties);
    connect
}

#[test]
fn qos1_delivery_is_held_until_puback() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        enqueue_ok(&mut session, delivery("a/b", QoS::AtLeastOnce), now);
        assert!(session.has_outgoing());
        let sent = publishes(poll(&mut session, now).0);
        assert_eq!(sent.len(), 1);
        let publish = &sent[0];
        assert_eq!(
            (publish.packet_id, publish.qos, publish.dup),
            (1, QoS::AtLeastOnce, false)
        );
        assert_eq!(publish.topic, "a/b");
        assert_eq!(publish.payload, Bytes::from_static(b"21.5"));
        assert_eq!(session.inflight_len(), 1);
        assert!(!session.has_outgoing());

        assert!(handle(&mut session, Packet::PubAck(response(1)), now).is_empty());
        assert_eq!(session.inflight_len(), 0);
        // A second PUBACK for the same id is ignored.
        assert!(handle(&mut session, Packet::PubAck(response(1)), now).is_empty());
    }
}

#[test]
fn qos2_delivery_runs_pubrec_pubrel_pubcomp() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        enqueue_ok(&mut session, delivery("a/b", QoS::ExactlyOnce), now);
        let sent = publishes(poll(&mut session, now).0);
        assert_eq!(sent[0].qos, QoS::ExactlyOnce);

        let code = violation_code(&mut session, Packet::PubComp(response(1)), now);
        assert_eq!(code, reason::PROTOCOL_ERROR, "PUBCOMP before PUBREC");
        let actions = handle(&mut session, Packet::PubRec(response(1)), now);
        assert_eq!(actions, vec![Action::Send(Packet::PubRel(response(1)))]);
        // A repeated PUBREC is answered with the PUBREL again.
        let actions = handle(&mut session, Packet::PubRec(response(1)), now);
        assert_eq!(actions, vec![Action::Send(Packet::PubRel(response(1)))]);
        assert_eq!(
            session.inflight_len(),
            1,
            "PUBREL sent: still in the window"
        );

        assert!(handle(&mut session, Packet::PubComp(response(1)), now).is_empty());
        assert_eq!(session.inflight_len(), 0);
    }
}

/// A persistent session of a cluster node journals the cluster id of each QoS 2
/// message it completes (its backups remember it: a node taking the session over from
/// their copy drops a copy of it sent again); not for QoS 1, nor for a message without
/// one (a single node).
#[test]
fn a_completed_qos2_cluster_message_journals_its_cluster_id() {
    use crate::storage::StoreOp;
    let (mut session, now) = attached(ProtocolVersion::V5);
    session.set_persistent(Some(&"device-1".into()));
    let id = crate::message::ClusterMessageId {
        node: 2,
        sequence: 9,
    };
    let with_id = |qos: QoS, cluster: bool| {
        let mut delivery = delivery("a/b", qos);
        let message = Arc::get_mut(&mut delivery.message).expect("not shared");
        if cluster {
            let _ = message.cluster_id.set(id);
        }
        delivery.stored = Some(7);
        delivery
    };
    for (qos, cluster, noted) in [
        (QoS::ExactlyOnce, true, true),
        (QoS::ExactlyOnce, false, false),
        (QoS::AtLeastOnce, true, false),
    ] {
        enqueue_ok(&mut session, with_id(qos, cluster), now);
        let packet_id = publishes(poll(&mut session, now).0)[0].packet_id;
        if qos == QoS::ExactlyOnce {
            handle(&mut session, Packet::PubRec(response(packet_id)), now);
            handle(&mut session, Packet::PubComp(response(packet_id)), now);
        } else {
            handle(&mut session, Packet::PubAck(response(packet_id)), now);
        }
        let journal = session.take_journal();
        assert!(journal
            .iter()
            .any(|op| matches!(op, StoreOp::CompleteInflight { .. })));
        let completed = journal.iter().any(
            |op| matches!(op, StoreOp::CompletedInCluster { cluster_id, .. } if *cluster_id == id),
        );
        assert_eq!(completed, noted, "{qos:?}, cluster id: {cluster}");
    }
}

#[test]
fn mismatched_acknowledgements_are_protocol_errors() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut session, delivery("q1", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("q2", QoS::ExactlyOnce), now);
    poll(&mut session, now);
    assert_eq!(
        violation_code(&mut session, Packet::PubRec(response(1)), now),
        reason::PROTOCOL_ERROR
    );
    assert_eq!(
        violation_code(&mut session, Packet::PubAck(response(2)), now),
        reason::PROTOCOL_ERROR
    );
}

#[test]
fn pubrec_with_failure_code_ends_the_flow() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut session, delivery("a", QoS::ExactlyOnce), now);
    poll(&mut session, now);
    let refused = response_with(1, reason::NOT_AUTHORIZED);
    assert!(handle(&mut session, Packet::PubRec(refused), now).is_empty());
    assert_eq!(session.inflight_len(), 0);
}

#[test]
fn pubrec_for_unknown_id_is_answered() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let actions = handle(&mut session, Packet::PubRec(response(8)), now);
    let expected = response_with(8, reason::PACKET_IDENTIFIER_NOT_FOUND);
    assert_eq!(actions, vec![Action::Send(Packet::PubRel(expected))]);
}

#[test]
fn inflight_window_limits_and_releases() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    for _ in 0..4 {
        enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    }
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![1, 2]);
    assert_eq!(session.queued_len(), 2);
    assert!(!session.has_outgoing());
    assert!(poll(&mut session, now).0.is_empty());

    handle(&mut session, Packet::PubAck(response(1)), now);
    assert!(session.has_outgoing());
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![3]);
    handle(&mut session, Packet::PubAck(response(2)), now);
    handle(&mut session, Packet::PubAck(response(3)), now);
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![4]);
}

#[test]
fn mqtt5_window_is_bounded_by_client_receive_maximum() {
    let connect = v5_connect(|properties| properties.receive_maximum = Some(1));
    let (mut session, now) = attached_with(&connect, limits());
    for _ in 0..3 {
        enqueue_ok(&mut session, delivery("a", QoS::ExactlyOnce), now);
    }
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![1]);
    handle(&mut session, Packet::PubRec(response(1)), now);
    // Awaiting PUBCOMP still holds the slot.
    assert!(poll(&mut session, now).0.is_empty());
    handle(&mut session, Packet::PubComp(response(1)), now);
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![2]);
}

#[test]
fn qos0_needs_no_window_but_keeps_order() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    for _ in 0..2 {
        enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    }
    poll(&mut session, now);
    // Window full: a QoS 0 message at the front still goes out.
    enqueue_ok(&mut session, delivery("zero", QoS::AtMostOnce), now);
    let sent = publishes(poll(&mut session, now).0);
    assert_eq!((sent[0].topic.as_ref(), sent[0].packet_id), ("zero", 0));
    // Behind a waiting QoS 1 message it waits too.
    enqueue_ok(&mut session, delivery("one", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("zero", QoS::AtMostOnce), now);
    assert!(poll(&mut session, now).0.is_empty());
    handle(&mut session, Packet::PubAck(response(1)), now);
    let sent = publishes(poll(&mut session, now).0);
    let topics: Vec<&str> = sent.iter().map(|publish| publish.topic.as_ref()).collect();
    assert_eq!(topics, vec!["one", "zero"]);
}

#[test]
fn packet_ids_skip_inflight_and_wrap_to_one() {
    let mut limits = limits();
    limits.max_queued_messages = 10;
    let (mut session, now) = attached_with(&connect(ProtocolVersion::V3_1_1), limits);
    // Id 1 stays in flight the whole time.
    enqueue_ok(&mut session, delivery("held", QoS::AtLeastOnce), now);
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![1]);
    for expected in 2..=u16::MAX {
        enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
        assert_eq!(packet_ids(poll(&mut session, now).0), vec![expected]);
        handle(&mut session, Packet::PubAck(response(expected)), now);
    }
    // After 65535 the ids wrap to 1, which is still in flight: 2 is next.
    enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    assert_eq!(packet_ids(poll(&mut session, now).0), vec![2]);
}

#[test]
fn redelivery_after_reconnect_sets_dup_and_resends_pubrel() {
    let connect = v5_connect(|properties| properties.topic_alias_maximum = Some(5));
    let mut limits = limits();
    limits.max_inflight = 10;
    let (mut session, now) = attached_with(&connect, limits);
    enqueue_ok(&mut session, delivery("q1", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("q2", QoS::ExactlyOnce), now);
    enqueue_ok(&mut session, delivery("q1", QoS::ExactlyOnce), now);
    let first = publishes(poll(&mut session, now).0);
    assert_eq!(first[2].topic, "", "third send used the alias");
    handle(&mut session, Packet::PubRec(response(2)), now);

    session.detach(now);
    assert!(!session.is_connected());
    enqueue_ok(&mut session, delivery("later", QoS::AtLeastOnce), now);
    assert!(
        poll(&mut session, now).0.is_empty(),
        "nothing is sent while detached"
    );

    session.attach(&connect, Duration::from_secs(60), now);
    assert!(session.has_outgoing());
    let (out, _) = poll(&mut session, now);
    assert_eq!(out.len(), 4);
    let Packet::Publish(resent) = &out[0] else {
        panic!("expected PUBLISH, got {:?}", out[0]);
    };
    assert_eq!(
        (resent.packet_id, resent.dup, resent.topic.as_ref()),
        (1, true, "q1")
    );
    assert_eq!(resent.properties.topic_alias, None);
    assert_eq!(out[1], Packet::PubRel(response(2)));
    let Packet::Publish(resent) = &out[2] else {
        panic!("expected PUBLISH, got {:?}", out[2]);
    };
    // Aliases were reset: the full topic goes out, without an alias.
    assert_eq!(
        (resent.packet_id, resent.dup, resent.topic.as_ref()),
        (3, true, "q1")
    );
    assert_eq!(resent.properties.topic_alias, None);
    let Packet::Publish(new) = &out[3] else {
        panic!("expected PUBLISH, got {:?}", out[3]);
    };
    assert_eq!(
        (new.packet_id, new.dup, new.topic.as_ref()),
        (4, false, "later")
    );
    assert!(poll(&mut session, now).0.is_empty(), "redelivered once");
}

#[test]
fn queue_is_bounded_in_messages_and_bytes() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    session.detach(now);
    for _ in 0..5 {
        enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    }
    assert_eq!(
        session.enqueue(delivery("a", QoS::AtLeastOnce), now),
        Err(DropReason::QueueFull)
    );
    assert_eq!(session.queued_len(), 5);

    let mut limits = limits();
    limits.max_queued_bytes = 300;
    let (mut session, now) = attached_with(&connect(ProtocolVersion::V3_1_1), limits);
    let mut big = message("a", QoS::AtLeastOnce);
    big.payload = Bytes::from(vec![0u8; 150]);
    let size = big.size_bytes();
    enqueue_ok(
        &mut session,
        delivery_of(big.clone(), QoS::AtLeastOnce),
        now,
    );
    assert_eq!(session.queued_bytes(), size);
    assert_eq!(
        session.enqueue(delivery_of(big.clone(), QoS::AtLeastOnce), now),
        Err(DropReason::QueueFull)
    );
    // Sending frees the bytes.
    poll(&mut session, now);
    assert_eq!(session.queued_bytes(), 0);
    enqueue_ok(&mut session, delivery_of(big, QoS::AtLeastOnce), now);
}

#[test]
fn an_empty_queue_takes_one_message_larger_than_its_byte_limit() {
    let mut limits = limits();
    limits.max_queued_bytes = 100;
    let (mut session, now) = attached_with(&connect(ProtocolVersion::V3_1_1), limits);
    // Nothing is polled: whatever is enqueued stays queued.
    let mut big = message("a", QoS::AtLeastOnce);
    big.payload = Bytes::from(vec![0u8; 500]);
    enqueue_ok(
        &mut session,
        delivery_of(big.clone(), QoS::AtLeastOnce),
        now,
    );
    assert_eq!(session.queued_len(), 1);
    assert_eq!(
        session.enqueue(delivery("a", QoS::AtLeastOnce), now),
        Err(DropReason::QueueFull)
    );
}

#[test]
fn qos0_is_not_queued_for_an_offline_client() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    session.detach(now);
    assert_eq!(
        session.enqueue(delivery("a", QoS::AtMostOnce), now),
        Err(DropReason::OfflineQos0)
    );
    enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    assert_eq!(session.queued_len(), 1);
}

fn expiring(topic: &str, now: Instant, seconds: u64) -> Delivery {
    let mut message = message(topic, QoS::AtLeastOnce);
    message.expires_at = Some(now + Duration::from_secs(seconds));
    delivery_of(message, QoS::AtLeastOnce)
}

#[test]
fn expired_messages_are_not_delivered() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let later = now + Duration::from_secs(20);
    assert_eq!(
        session.enqueue(expiring("a", now, 10), later),
        Err(DropReason::Expired)
    );

    enqueue_ok(&mut session, expiring("short", now, 10), now);
    enqueue_ok(&mut session, expiring("long", now, 100), now);
    let (out, dropped) = poll(&mut session, later);
    assert_eq!(dropped, vec![DropReason::Expired]);
    let sent = publishes(out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic, "long");
    // The remaining interval is forwarded: 100 s minus the 20 s spent waiting.
    assert_eq!(sent[0].properties.message_expiry_interval, Some(80));
    assert_eq!(sent[0].packet_id, 1, "a dropped message takes no packet id");
}

#[test]
fn expired_inflight_publish_is_not_redelivered() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut session, expiring("a", now, 10), now);
    poll(&mut session, now);
    session.detach(now);
    let later = now + Duration::from_secs(30);
    session.attach(
        &connect(ProtocolVersion::V5),
        Duration::from_secs(60),
        later,
    );
    let (out, dropped) = poll(&mut session, later);
    assert!(out.is_empty());
    assert_eq!(dropped, vec![DropReason::Expired]);
    assert_eq!(session.inflight_len(), 0);
}

fn topics_and_aliases(packets: Vec<Packet>) -> Vec<(String, Option<u16>)> {
    publishes(packets)
        .into_iter()
        .map(|publish| (publish.topic.to_string(), publish.properties.topic_alias))
        .collect()
}

#[test]
fn outgoing_topic_aliases_assign_reuse_and_replace_least_recently_used() {
    let connect = v5_connect(|properties| properties.topic_alias_maximum = Some(2));
    let mut limits = limits();
    limits.max_queued_messages = 10;
    let (mut session, now) = attached_with(&connect, limits);
    for topic in ["a", "a", "b", "a", "c", "b"] {
        enqueue_ok(&mut session, delivery(topic, QoS::AtMostOnce), now);
    }
    let expected = vec![
        ("a".to_string(), Some(1)),
        (String::new(), Some(1)),
        ("b".to_string(), Some(2)),
        (String::new(), Some(1)),
        // Both aliases taken; "b" (alias 2) was used least recently.
        ("c".to_string(), Some(2)),
        // Now "a" (alias 1) is the least recently used.
        ("b".to_string(), Some(1)),
    ];
    assert_eq!(topics_and_aliases(poll(&mut session, now).0), expected);
}

#[test]
fn no_outgoing_aliases_when_client_allows_none_or_speaks_mqtt3() {
    for connect in [
        connect(ProtocolVersion::V5),
        connect(ProtocolVersion::V3_1_1),
    ] {
        let (mut session, now) = attached_with(&connect, limits());
        enqueue_ok(&mut session, delivery("a", QoS::AtMostOnce), now);
        enqueue_ok(&mut session, delivery("a", QoS::AtMostOnce), now);
        let expected = vec![("a".to_string(), None), ("a".to_string(), None)];
        assert_eq!(topics_and_aliases(poll(&mut session, now).0), expected);
    }
}

#[test]
fn too_large_for_client_is_dropped() {
    let connect = v5_connect(|properties| {
        properties.maximum_packet_size = Some(64);
        properties.topic_alias_maximum = Some(2);
    });
    let (mut session, now) = attached_with(&connect, limits());
    let mut big = message("big", QoS::AtLeastOnce);
    big.payload = Bytes::from(vec![0u8; 100]);
    enqueue_ok(&mut session, delivery_of(big, QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("small", QoS::AtLeastOnce), now);
    let (out, dropped) = poll(&mut session, now);
    assert_eq!(dropped, vec![DropReason::TooLargeForClient]);
    let sent = publishes(out);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].packet_id, 1,
        "the dropped message took no packet id"
    );
    // The dropped message took no alias either: "small" got the first one.
    assert_eq!(sent[0].properties.topic_alias, Some(1));
}

#[test]
fn mqtt5_gets_subscription_ids_and_properties_mqtt3_does_not() {
    let mut message = message("a", QoS::AtLeastOnce);
    message.properties.user_properties = vec![("k".into(), "v".into())];
    message.properties.content_type = Some("text/plain".into());
    let delivery = Delivery {
        message: Arc::new(message),
        qos: QoS::AtMostOnce,
        retain: true,
        subscription_ids: vec![4, 9],
        stored: None,
    };
    let (mut session, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut session, delivery.clone(), now);
    let sent = publishes(poll(&mut session, now).0);
    assert_eq!((sent[0].qos, sent[0].retain), (QoS::AtMostOnce, true));
    assert_eq!(sent[0].properties.subscription_identifiers, vec![4, 9]);
    assert_eq!(
        sent[0].properties.user_properties,
        vec![("k".into(), "v".into())]
    );
    assert_eq!(sent[0].properties.content_type, Some("text/plain".into()));
    assert_eq!(sent[0].properties.message_expiry_interval, None);

    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    enqueue_ok(&mut session, delivery, now);
    let sent = publishes(poll(&mut session, now).0);
    assert_eq!(sent[0].properties, PublishProperties::default());
    assert!(sent[0].retain);
}

#[test]
fn maximum_packet_size_is_an_inclusive_bound() {
    let mut message = message("a/b", QoS::AtLeastOnce);
    message.properties.user_properties = vec![("k".into(), "v".into())];
    let delivery = delivery_of(message, QoS::AtLeastOnce);
    let (mut probe, now) = attached(ProtocolVersion::V5);
    enqueue_ok(&mut probe, delivery.clone(), now);
    let (out, _) = poll(&mut probe, now);
    let size = crate::protocol::encoded_len(&out[0], ProtocolVersion::V5);

    for (maximum, delivered) in [(size, true), (size - 1, false)] {
        let connect = v5_connect(|properties| {
            properties.maximum_packet_size = Some(u32::try_from(maximum).unwrap());
        });
        let (mut session, now) = attached_with(&connect, limits());
        enqueue_ok(&mut session, delivery.clone(), now);
        let (out, dropped) = poll(&mut session, now);
        assert_eq!(out.len(), usize::from(delivered), "maximum {maximum}");
        assert_eq!(dropped.is_empty(), delivered, "maximum {maximum}");
    }
}

#[test]
fn redelivery_respects_a_smaller_maximum_packet_size() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let mut big = message("a", QoS::AtLeastOnce);
    big.payload = Bytes::from(vec![0u8; 100]);
    enqueue_ok(&mut session, delivery_of(big, QoS::AtLeastOnce), now);
    poll(&mut session, now);
    session.detach(now);
    let connect = v5_connect(|properties| properties.maximum_packet_size = Some(50));
    session.attach(&connect, Duration::from_secs(60), now);
    let (out, dropped) = poll(&mut session, now);
    assert!(out.is_empty());
    assert_eq!(dropped, vec![DropReason::TooLargeForClient]);
    assert_eq!(session.inflight_len(), 0);
}

#[test]
fn an_idle_session_gives_its_outbound_state_back_only_when_nothing_waits() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    enqueue_ok(&mut session, delivery("b", QoS::AtLeastOnce), now);
    let (packets, _) = poll(&mut session, now);
    assert_eq!(packet_ids(packets), vec![1, 2]);
    // In flight: nothing may be released.
    session.release_idle_memory();
    assert_eq!(session.inflight_len(), 2);
    handle(&mut session, Packet::PubAck(response(1)), now);
    session.release_idle_memory();
    assert_eq!(session.inflight_len(), 1);
    handle(&mut session, Packet::PubAck(response(2)), now);
    session.release_idle_memory();
    assert_eq!(session.inflight_len(), 0);
    assert!(!session.has_outgoing());
    // A late duplicate acknowledgement finds no state and is ignored.
    assert!(handle(&mut session, Packet::PubAck(response(2)), now).is_empty());
    // The next message builds the state again; packet ids start afresh.
    enqueue_ok(&mut session, delivery("c", QoS::AtLeastOnce), now);
    assert_eq!(session.queued_len(), 1);
    let (packets, _) = poll(&mut session, now);
    assert_eq!(packet_ids(packets), vec![1]);
}

#[test]
fn an_offline_session_keeps_what_is_queued_and_releases_the_rest() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    enqueue_ok(&mut session, delivery("a", QoS::AtLeastOnce), now);
    session.detach(now);
    // Queued for the next connection: kept through the detach.
    assert_eq!(session.queued_len(), 1);
    session.attach(
        &connect(ProtocolVersion::V3_1_1),
        Duration::from_secs(60),
        now,
    );
    let (packets, _) = poll(&mut session, now);
    assert_eq!(publishes(packets).len(), 1);
    handle(&mut session, Packet::PubAck(response(1)), now);
    session.detach(now);
    assert_eq!(session.queued_len() + session.inflight_len(), 0);
}
