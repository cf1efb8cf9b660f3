//! SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH and the packets a client may not send.

use std::time::Duration;

use super::*;
use crate::protocol::reason;
use crate::protocol::{
    Auth, AuthProperties, ConnAck, Disconnect, DisconnectProperties, SubAck, Subscribe,
    SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::session::{FilterRequest, SubscribeRequest, SubscriptionEntry, UnsubscribeRequest};

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

fn subscribe(
    filters: &[(&str, SubscriptionOptions)],
    subscription_identifier: Option<u32>,
) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 10,
        filters: filters
            .iter()
            .map(|(filter, options)| SubscribeFilter {
                filter: (*filter).into(),
                options: *options,
            })
            .collect(),
        subscription_identifier,
        user_properties: Vec::new(),
    })
}

fn subscribe_request(actions: Vec<Action>) -> SubscribeRequest {
    match <[Action; 1]>::try_from(actions) {
        Ok([Action::Subscribe(request)]) => request,
        Ok(other) => panic!("expected one Subscribe action, got {other:?}"),
        Err(other) => panic!("expected one Subscribe action, got {other:?}"),
    }
}

#[test]
fn subscribe_checks_filters_and_reports_existing_ones() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    session.add_subscription(
        "old/#".into(),
        SubscriptionEntry {
            options: options(QoS::AtMostOnce),
            subscription_id: None,
        },
    );
    let packet = subscribe(
        &[
            ("a/+", options(QoS::AtLeastOnce)),
            ("a/#/b", options(QoS::AtMostOnce)),
            ("old/#", options(QoS::ExactlyOnce)),
            ("a/+", options(QoS::ExactlyOnce)),
        ],
        Some(12),
    );
    let request = subscribe_request(handle(&mut session, packet, now));
    assert_eq!(request.packet_id, 10);
    let results: Vec<_> = request.filters.iter().map(|filter| filter.result).collect();
    assert_eq!(
        results,
        vec![
            Ok(false),
            Err(reason::TOPIC_FILTER_INVALID),
            Ok(true),
            Ok(true)
        ]
    );
    assert_eq!(
        request.filters[0],
        FilterRequest {
            filter: "a/+".into(),
            entry: SubscriptionEntry {
                options: options(QoS::AtLeastOnce),
                subscription_id: Some(12),
            },
            result: Ok(false),
        }
    );
    // The broker records what it accepts; the session did not.
    assert_eq!(session.subscriptions().count(), 1);
    assert!(!session.add_subscription("a/+".into(), request.filters[0].entry));
    assert!(session.add_subscription("a/+".into(), request.filters[3].entry));
    assert_eq!(session.subscriptions().count(), 2);
}

#[test]
fn mqtt3_subscriptions_carry_no_identifier() {
    let (mut session, now) = attached(ProtocolVersion::V3_1_1);
    let packet = subscribe(&[("a", options(QoS::AtLeastOnce))], Some(3));
    let request = subscribe_request(handle(&mut session, packet, now));
    assert_eq!(request.filters[0].entry.subscription_id, None);
}

#[test]
fn no_local_on_shared_subscription_is_a_protocol_error() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let no_local = SubscriptionOptions {
        no_local: true,
        ..options(QoS::AtLeastOnce)
    };
    let packet = subscribe(&[("$share/group/a/b", no_local)], None);
    assert_eq!(
        violation_code(&mut session, packet, now),
        reason::PROTOCOL_ERROR
    );
    // No Local on a plain filter is fine.
    handle(&mut session, subscribe(&[("a/b", no_local)], None), now);
}

#[test]
fn unsubscribe_reports_and_forgets_subscriptions() {
    let (mut session, now) = attached(ProtocolVersion::V5);
    let entry = SubscriptionEntry {
        options: options(QoS::AtLeastOnce),
        subscription_id: None,
    };
    session.add_subscription("a/b".into(), entry);
    let packet = Packet::Unsubscribe(Unsubscribe {
        packet_id: 5,
        filters: vec!["a/b".into(), "c".into()],
        user_properties: Vec::new(),
    });
    let actions = handle(&mut session, packet, now);
    let expected = UnsubscribeRequest {
        packet_id: 5,
        filters: vec![("a/b".into(), true), ("c".into(), false)],
    };
    assert_eq!(actions, vec![Action::Unsubscribe(expected)]);
    assert_eq!(session.subscriptions().count(), 0);
    assert!(!session.remove_subscription("a/b"));
}

#[test]
fn pingreq_is_answered() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        assert_eq!(
            handle(&mut session, Packet::PingReq, now),
            vec![Action::Send(Packet::PingResp)]
        );
    }
}

#[test]
fn second_connect_and_server_packets_are_protocol_errors() {
    for version in BOTH {
        let (mut session, now) = attached(version);
        let packets = [
            Packet::Connect(Box::new(connect(version))),
            Packet::ConnAck(ConnAck::default()),
            Packet::SubAck(SubAck::default()),
            Packet::UnsubAck(UnsubAck::default()),
            Packet::PingResp,
        ];
        for packet in packets {
            assert_eq!(
                violation_code(&mut session, packet, now),
                reason::PROTOCOL_ERROR
            );
        }
    }
}

fn disconnect(reason_code: u8, session_expiry_interval: Option<u32>) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code,
        properties: DisconnectProperties {
            session_expiry_interval,
            ..DisconnectProperties::default()
        },
    })
}

fn with_will(protocol: ProtocolVersion, session_expiry: Option<u32>) -> Connect {
    let mut connect = connect(protocol);
    connect.will = Some(will());
    connect.properties.session_expiry_interval = session_expiry;
    connect
}

#[test]
fn disconnect_with_will_message_keeps_the_will() {
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V5, None), limits());
    let actions = handle(
        &mut session,
        disconnect(reason::DISCONNECT_WITH_WILL_MESSAGE, None),
        now,
    );
    assert_eq!(actions, vec![Action::Disconnect { publish_will: true }]);
    assert_eq!(session.take_will(), Some(will()));
    assert_eq!(session.take_will(), None, "published at most once");
}

#[test]
fn normal_disconnect_discards_the_will() {
    for version in BOTH {
        let (mut session, now) = attached_with(&with_will(version, None), limits());
        assert!(session.will().is_some());
        let actions = handle(
            &mut session,
            disconnect(reason::NORMAL_DISCONNECTION, None),
            now,
        );
        assert_eq!(
            actions,
            vec![Action::Disconnect {
                publish_will: false
            }]
        );
        assert_eq!(session.take_will(), None);
    }
    // 3.x has no reason code: a stray 0x04 does not keep the will.
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V3_1_1, None), limits());
    let actions = handle(
        &mut session,
        disconnect(reason::DISCONNECT_WITH_WILL_MESSAGE, None),
        now,
    );
    assert_eq!(
        actions,
        vec![Action::Disconnect {
            publish_will: false
        }]
    );
}

#[test]
fn disconnect_session_expiry_rules() {
    // CONNECT said 0: DISCONNECT may not raise it.
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V5, Some(0)), limits());
    assert_eq!(
        violation_code(&mut session, disconnect(0, Some(30)), now),
        reason::PROTOCOL_ERROR
    );
    handle(&mut session, disconnect(0, Some(0)), now);

    // CONNECT said 60: DISCONNECT may change it, to 0 too.
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V5, Some(60)), limits());
    handle(&mut session, disconnect(0, Some(300)), now);
    assert_eq!(session.expiry_interval(), Duration::from_secs(300));
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V5, Some(60)), limits());
    handle(&mut session, disconnect(0, Some(0)), now);
    assert_eq!(session.expiry_interval(), Duration::ZERO);

    // Without the property the interval from attach stays.
    let (mut session, now) = attached_with(&with_will(ProtocolVersion::V5, Some(60)), limits());
    handle(&mut session, disconnect(0, None), now);
    assert_eq!(session.expiry_interval(), Duration::from_secs(60));
}

#[test]
fn auth_needs_an_authentication_method_from_connect() {
    let auth = Packet::Auth(Auth {
        reason_code: reason::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            ..AuthProperties::default()
        },
    });
    let (mut session, now) = attached(ProtocolVersion::V5);
    assert_eq!(
        violation_code(&mut session, auth.clone(), now),
        reason::PROTOCOL_ERROR
    );

    let mut connect = connect(ProtocolVersion::V5);
    connect.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (mut session, now) = attached_with(&connect, limits());
    assert_eq!(
        violation_code(&mut session, auth, now),
        reason::BAD_AUTHENTICATION_METHOD
    );
}

#[test]
fn attach_and_detach_track_the_connection() {
    let mut connect = with_will(ProtocolVersion::V5, Some(120));
    connect.client_id = "sensor-9".into();
    let (mut session, now) = attached_with(&connect, limits());
    assert_eq!(session.key(), KEY);
    // Only a persistent session keeps the id (for its stored records).
    assert_eq!(session.stored_client_id(), None);
    session.set_persistent(Some(&connect.client_id));
    assert_eq!(session.stored_client_id().map(|id| &**id), Some("sensor-9"));
    session.set_persistent(None);
    assert_eq!(session.protocol(), ProtocolVersion::V5);
    assert!(session.is_connected());
    assert_eq!(session.expiry_interval(), Duration::from_secs(60));
    session.detach(now);
    assert!(!session.is_connected());
    session.attach(&super::connect(ProtocolVersion::V3_1), Duration::ZERO, now);
    assert_eq!(session.protocol(), ProtocolVersion::V3_1);
    assert_eq!(session.expiry_interval(), Duration::ZERO);
    assert_eq!(session.will(), None, "the new CONNECT had no will");
}
