//! Client-to-broker PUBLISH: QoS flows, exactly-once, receive maximum, topics and aliases.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::reason;

fn routed(actions: &[Action]) -> Vec<Arc<Message>> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Route(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn qos0_publish_is_routed_without_acknowledgement() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let actions = handle(
            &mut session,
            Packet::Publish(publish("a/b", QoS::AtMostOnce, 0)),
            now,
        );
        assert_eq!(actions.len(), 1, "{version:?}");
        let message = &routed(&actions)[0];
        assert_eq!(message.topic, "a/b");
        assert_eq!(message.publisher, Some(KEY));
    }
}

#[test]
fn qos1_publish_is_routed_then_acknowledged() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let actions = handle(
            &mut session,
            Packet::Publish(publish("a/b", QoS::AtLeastOnce, 9)),
            now,
        );
        assert_eq!(actions.len(), 2);
        assert!(matches!(&actions[0], Action::Route(message) if message.qos == QoS::AtLeastOnce));
        assert_eq!(actions[1], Action::Send(Packet::PubAck(response(9))));
        // A re-sent QoS 1 PUBLISH is delivered again: at least once.
        let again = handle(
            &mut session,
            Packet::Publish(publish("a/b", QoS::AtLeastOnce, 9)),
            now,
        );
        assert_eq!(routed(&again).len(), 1);
    }
}

#[test]
fn qos2_duplicate_before_pubrel_is_not_routed_twice() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let first = handle(
            &mut session,
            Packet::Publish(publish("a/b", QoS::ExactlyOnce, 3)),
            now,
        );
        assert_eq!(routed(&first).len(), 1);
        assert_eq!(first[1], Action::Send(Packet::PubRec(response(3))));

        let mut duplicate = publish("a/b", QoS::ExactlyOnce, 3);
        duplicate.dup = true;
        let second = handle(&mut session, Packet::Publish(duplicate), now);
        assert_eq!(second, vec![Action::Send(Packet::PubRec(response(3)))]);
        assert_eq!(session.incoming_qos2_len(), 1);

        let released = handle(&mut session, Packet::PubRel(response(3)), now);
        assert_eq!(released, vec![Action::Send(Packet::PubComp(response(3)))]);
        assert_eq!(session.incoming_qos2_len(), 0);

        // After the release the id is free again: a new message with it is routed.
        let next = handle(
            &mut session,
            Packet::Publish(publish("a/b", QoS::ExactlyOnce, 3)),
            now,
        );
        assert_eq!(routed(&next).len(), 1);
    }
}

/// A session restored (MQTT 5, attached again) with incoming QoS 2 packet ids awaiting
/// release, as a cluster node restores them when `unconfirmed`.
fn restored_with_incoming(
    incoming_qos2: Vec<u16>,
    unconfirmed: bool,
    recorded: Vec<(u16, crate::message::ClusterMessageId)>,
    limits: SessionLimits,
) -> (Session, Instant) {
    let mut session = Session::restored(
        KEY,
        "device-1".into(),
        limits,
        crate::session::RestoredParts {
            protocol: ProtocolVersion::V5,
            expiry_interval: Duration::from_secs(60),
            detached_at: Instant::now(),
            subscriptions: Vec::new(),
            queue: Vec::new(),
            inflight: Vec::new(),
            incoming_qos2_unconfirmed: if unconfirmed {
                incoming_qos2.clone()
            } else {
                Vec::new()
            },
            incoming_qos2,
            incoming_qos2_ids: recorded,
        },
    );
    let now = Instant::now();
    session.attach(&connect(ProtocolVersion::V5), Duration::from_secs(60), now);
    (session, now)
}

/// A resend of an unconfirmed packet id whose cluster id the backup knew is routed under
/// that id: the nodes that got the message before recognise it.
#[test]
fn an_unconfirmed_resend_is_routed_under_its_recorded_cluster_id() {
    let id = crate::message::ClusterMessageId {
        node: 1,
        sequence: 77,
    };
    let (mut session, now) = restored_with_incoming(vec![3, 4], true, vec![(3, id)], limits());
    let mut resent = publish("a/b", QoS::ExactlyOnce, 3);
    resent.dup = true;
    let actions = handle(&mut session, Packet::Publish(resent), now);
    assert_eq!(routed(&actions)[0].cluster_id.get(), Some(&id));
    // One the backup did not know goes under a new id (given where it is routed).
    let mut resent = publish("a/b", QoS::ExactlyOnce, 4);
    resent.dup = true;
    let actions = handle(&mut session, Packet::Publish(resent), now);
    assert_eq!(routed(&actions)[0].cluster_id.get(), None);
}

/// A session handed on from the node that took it from a backup's copy keeps the packet
/// ids whose resend that node has not seen unconfirmed, with their cluster ids:
/// confirmed, the next node would acknowledge the resend without routing it, and a
/// message whose forward never left the dead node would be lost.
#[test]
fn a_session_handed_on_keeps_its_packet_ids_not_sent_again_unconfirmed() {
    let id = crate::message::ClusterMessageId {
        node: 1,
        sequence: 78,
    };
    let (mut session, now) = restored_with_incoming(vec![3, 4], true, vec![(3, id)], limits());
    let exported = session.export(now);
    assert_eq!(exported.incoming_qos2_unconfirmed, vec![3, 4]);
    assert_eq!(exported.incoming_qos2_ids, vec![(3, id)]);

    let mut resent = publish("a/b", QoS::ExactlyOnce, 3);
    resent.dup = true;
    let actions = handle(&mut session, Packet::Publish(resent), now);
    assert_eq!(routed(&actions).len(), 1);
    let exported = session.export(now);
    assert_eq!(exported.incoming_qos2, vec![3, 4]);
    assert_eq!(
        exported.incoming_qos2_unconfirmed,
        vec![4],
        "3 was routed here"
    );
    assert!(exported.incoming_qos2_ids.is_empty());
}

/// A QoS 2 packet id restored on a cluster node (a restart, or a session taken over
/// from a backup's copy) does not say the message reached every node it was forwarded
/// to: the client's resend is routed again (and not refused by Receive Maximum, the id
/// being counted already), then answered; a packet id restored on a single node is
/// acknowledged without routing, as before.
#[test]
fn a_qos2_resend_of_an_unconfirmed_restored_packet_id_is_routed_again() {
    for unconfirmed in [true, false] {
        let limits = SessionLimits {
            receive_maximum: 1,
            ..limits()
        };
        let (mut session, now) = restored_with_incoming(vec![3], unconfirmed, Vec::new(), limits);
        let mut resent = publish("a/b", QoS::ExactlyOnce, 3);
        resent.dup = true;
        let actions = handle(&mut session, Packet::Publish(resent.clone()), now);
        assert_eq!(
            routed(&actions).len(),
            usize::from(unconfirmed),
            "unconfirmed: {unconfirmed}"
        );
        assert!(actions.contains(&Action::Send(Packet::PubRec(response(3)))));
        assert_eq!(session.incoming_qos2_len(), 1);
        // Routed once: a further resend is a duplicate.
        let again = handle(&mut session, Packet::Publish(resent), now);
        assert!(routed(&again).is_empty());
        let released = handle(&mut session, Packet::PubRel(response(3)), now);
        assert_eq!(released, vec![Action::Send(Packet::PubComp(response(3)))]);
    }
}

#[test]
fn qos2_state_survives_a_reconnect() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    handle(
        &mut session,
        Packet::Publish(publish("a/b", QoS::ExactlyOnce, 4)),
        now,
    );
    session.detach(now);
    session.attach(&connect(ProtocolVersion::V5), Duration::from_secs(60), now);
    let resent = handle(
        &mut session,
        Packet::Publish(publish("a/b", QoS::ExactlyOnce, 4)),
        now,
    );
    assert_eq!(resent, vec![Action::Send(Packet::PubRec(response(4)))]);
}

#[test]
fn pubrel_for_unknown_id_is_still_completed() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let actions = handle(&mut session, Packet::PubRel(response(42)), now);
    let expected = response_with(42, reason::PACKET_IDENTIFIER_NOT_FOUND);
    assert_eq!(actions, vec![Action::Send(Packet::PubComp(expected))]);

    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    let actions = handle(&mut session, Packet::PubRel(response(42)), now);
    assert_eq!(actions, vec![Action::Send(Packet::PubComp(response(42)))]);
}

#[test]
fn receive_maximum_is_enforced_for_mqtt5() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    for id in 1..=2 {
        handle(
            &mut session,
            Packet::Publish(publish("a", QoS::ExactlyOnce, id)),
            now,
        );
    }
    // A duplicate of a held id does not count against the quota.
    handle(
        &mut session,
        Packet::Publish(publish("a", QoS::ExactlyOnce, 2)),
        now,
    );
    let code = violation_code(
        &mut session,
        Packet::Publish(publish("a", QoS::ExactlyOnce, 3)),
        now,
    );
    assert_eq!(code, reason::RECEIVE_MAXIMUM_EXCEEDED);

    // Releasing one makes room again.
    let (mut session, now) = attached(ProtocolVersion::V5);
    for id in 1..=2 {
        handle(
            &mut session,
            Packet::Publish(publish("a", QoS::ExactlyOnce, id)),
            now,
        );
    }
    handle(&mut session, Packet::PubRel(response(1)), now);
    handle(
        &mut session,
        Packet::Publish(publish("a", QoS::ExactlyOnce, 3)),
        now,
    );
}

#[test]
fn mqtt3_has_no_receive_maximum() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    for id in 1..=10 {
        handle(
            &mut session,
            Packet::Publish(publish("a", QoS::ExactlyOnce, id)),
            now,
        );
    }
    assert_eq!(session.incoming_qos2_len(), 10);
}

#[test]
fn invalid_topic_name_is_a_violation() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let code = violation_code(
            &mut session,
            Packet::Publish(publish("a/+", QoS::AtMostOnce, 0)),
            now,
        );
        assert_eq!(code, reason::TOPIC_NAME_INVALID, "{version:?}");
        let code = violation_code(
            &mut session,
            Packet::Publish(publish("a/#", QoS::AtLeastOnce, 1)),
            now,
        );
        assert_eq!(code, reason::TOPIC_NAME_INVALID, "{version:?}");
    }
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    let code = violation_code(
        &mut session,
        Packet::Publish(publish("", QoS::AtMostOnce, 0)),
        now,
    );
    assert_eq!(code, reason::TOPIC_NAME_INVALID);
}

#[test]
fn message_carries_forwarded_properties_and_expiry() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let mut packet = publish("a/b", QoS::AtLeastOnce, 1);
    packet.retain = true;
    packet.payload = Bytes::from_static(b"{}");
    packet.properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(30),
        topic_alias: Some(1),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"c1")),
        user_properties: vec![("k".into(), "v".into())],
        subscription_identifiers: Vec::new(),
        content_type: Some("application/json".into()),
    };
    let actions = handle(&mut session, Packet::Publish(packet), now);
    let message = &routed(&actions)[0];
    assert!(message.retain);
    assert_eq!(message.payload, Bytes::from_static(b"{}"));
    assert_eq!(message.expires_at, Some(now + Duration::from_secs(30)));
    assert_eq!(
        message.properties,
        PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            user_properties: vec![("k".into(), "v".into())],
            subscription_identifiers: Vec::new(),
            content_type: Some("application/json".into()),
        }
    );

    let mut no_expiry = publish("a/b", QoS::AtMostOnce, 0);
    no_expiry.properties.message_expiry_interval = Some(0);
    let actions = handle(&mut session, Packet::Publish(no_expiry), now);
    assert_eq!(routed(&actions)[0].expires_at, None);
}

fn aliased(topic: &str, alias: u16) -> Packet {
    let mut packet = publish(topic, QoS::AtMostOnce, 0);
    packet.properties.topic_alias = Some(alias);
    Packet::Publish(packet)
}

#[test]
fn incoming_topic_alias_is_set_then_used() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let set = handle(&mut session, aliased("sensors/1/temp", 2), now);
    assert_eq!(routed(&set)[0].topic, "sensors/1/temp");
    let used = handle(&mut session, aliased("", 2), now);
    assert_eq!(routed(&used)[0].topic, "sensors/1/temp");
    // Setting an alias again replaces its topic.
    handle(&mut session, aliased("sensors/2/temp", 2), now);
    let used = handle(&mut session, aliased("", 2), now);
    assert_eq!(routed(&used)[0].topic, "sensors/2/temp");
}

#[test]
fn incoming_topic_alias_errors() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    assert_eq!(
        violation_code(&mut session, aliased("a", 0), now),
        reason::TOPIC_ALIAS_INVALID
    );
    // Our Topic Alias Maximum is 3.
    assert_eq!(
        violation_code(&mut session, aliased("a", 4), now),
        reason::TOPIC_ALIAS_INVALID
    );
    assert_eq!(
        violation_code(&mut session, aliased("", 1), now),
        reason::PROTOCOL_ERROR
    );
    let empty = Packet::Publish(publish("", QoS::AtMostOnce, 0));
    assert_eq!(
        violation_code(&mut session, empty, now),
        reason::PROTOCOL_ERROR
    );
    assert_eq!(
        violation_code(&mut session, aliased("a/#", 1), now),
        reason::TOPIC_NAME_INVALID
    );
}

#[test]
fn incoming_topic_aliases_live_per_connection() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    handle(&mut session, aliased("a", 1), now);
    session.detach(now);
    session.attach(&connect(ProtocolVersion::V5), Duration::from_secs(60), now);
    assert_eq!(
        violation_code(&mut session, aliased("", 1), now),
        reason::PROTOCOL_ERROR
    );
}

#[test]
fn mqtt3_ignores_topic_alias_property() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    // 3.x has no properties on the wire; a stray value must not change the topic.
    let actions = handle(&mut session, aliased("a", 99), now);
    assert_eq!(routed(&actions)[0].topic, "a");
}

#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let mut packet = publish("a", QoS::AtLeastOnce, 1);
    packet.properties.subscription_identifiers = vec![5];
    let code = violation_code(&mut session, Packet::Publish(packet), now);
    assert_eq!(code, reason::PROTOCOL_ERROR);
}
