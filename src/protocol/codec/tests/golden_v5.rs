//! Golden bytes for MQTT 5: every packet type, property-heavy forms and the short forms
//! of acknowledgements, DISCONNECT and AUTH.

use super::*;
use crate::protocol::reason;
use ProtocolVersion::V5;

fn user(name: &'static str, value: &'static str) -> UserProperty {
    (s(name), s(value))
}

#[test]
fn connect_minimal() {
    let expected = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    golden(
        b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00",
        V5,
        Packet::Connect(Box::new(expected)),
    );
}

#[test]
fn connect_with_every_property() {
    let bytes = cat(&[
        b"\x10\x7c\x00\x04MQTT\x05\xd6\x00\x1e",
        b"\x30",
        b"\x11\x00\x00\x00\x78",
        b"\x21\x00\x14",
        b"\x27\x00\x01\x00\x00",
        b"\x22\x00\x0a",
        b"\x19\x01",
        b"\x17\x00",
        b"\x26\x00\x01k\x00\x01v",
        b"\x26\x00\x01k\x00\x02v2",
        b"\x15\x00\x05SCRAM",
        b"\x16\x00\x02\x01\x02",
        b"\x00\x03dev",
        b"\x25",
        b"\x18\x00\x00\x00\x05",
        b"\x01\x01",
        b"\x02\x00\x00\x00\x3c",
        b"\x03\x00\x04text",
        b"\x08\x00\x03r/t",
        b"\x09\x00\x02id",
        b"\x26\x00\x01a\x00\x01b",
        b"\x00\x04will\x00\x03bye",
        b"\x00\x04user",
        b"\x00\x03\x01\x02\x03",
    ]);
    let expected = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        client_id: s("dev"),
        will: Some(Will {
            topic: s("will"),
            payload: b(b"bye"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some(s("text")),
                response_topic: Some(s("r/t")),
                correlation_data: Some(b(b"id")),
                user_properties: vec![user("a", "b")],
            },
        }),
        username: Some(s("user")),
        password: Some(b(b"\x01\x02\x03")),
        properties: ConnectProperties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(20),
            maximum_packet_size: Some(65536),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: vec![user("k", "v"), user("k", "v2")],
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(b"\x01\x02")),
        },
    };
    golden(&bytes, V5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_password_without_username_is_allowed() {
    let expected = Connect {
        protocol: V5,
        clean_start: false,
        keep_alive: 0,
        client_id: s("c"),
        will: None,
        username: None,
        password: Some(b(b"pw")),
        properties: ConnectProperties::default(),
    };
    golden(
        b"\x10\x12\x00\x04MQTT\x05\x40\x00\x00\x00\x00\x01c\x00\x02pw",
        V5,
        Packet::Connect(Box::new(expected)),
    );
}

#[test]
fn connack_minimal_and_refused() {
    golden(
        b"\x20\x03\x00\x00\x00",
        V5,
        Packet::ConnAck(ConnAck::default()),
    );
    let refused = ConnAck {
        session_present: false,
        reason_code: reason::BANNED,
        properties: ConnAckProperties::default(),
    };
    golden(b"\x20\x03\x00\x8a\x00", V5, Packet::ConnAck(refused));
    // Without a property block, as a 3.x server or a lax client library sends it.
    decodes_to(b"\x20\x02\x00\x00", V5, Packet::ConnAck(ConnAck::default()));
}

#[test]
fn connack_with_every_property() {
    let bytes = cat(&[
        b"\x20\x48\x01\x00\x45",
        b"\x11\x00\x00\x0e\x10",
        b"\x21\x00\x0a",
        b"\x24\x01",
        b"\x25\x00",
        b"\x27\x00\x10\x00\x00",
        b"\x12\x00\x04auto",
        b"\x22\x00\x05",
        b"\x1f\x00\x02ok",
        b"\x26\x00\x01x\x00\x01y",
        b"\x28\x01",
        b"\x29\x00",
        b"\x2a\x01",
        b"\x13\x00\x3c",
        b"\x1a\x00\x04resp",
        b"\x1c\x00\x03srv",
        b"\x15\x00\x01M",
        b"\x16\x00\x01\xff",
    ]);
    let expected = ConnAck {
        session_present: true,
        reason_code: reason::SUCCESS,
        properties: ConnAckProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(10),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(0x0010_0000),
            assigned_client_identifier: Some(s("auto")),
            topic_alias_maximum: Some(5),
            reason_string: Some(s("ok")),
            user_properties: vec![user("x", "y")],
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(60),
            response_information: Some(s("resp")),
            server_reference: Some(s("srv")),
            authentication_method: Some(s("M")),
            authentication_data: Some(b(b"\xff")),
        },
    };
    golden(&bytes, V5, Packet::ConnAck(expected));
}

#[test]
fn publish_with_every_property() {
    let bytes = cat(&[
        b"\x32\x2f\x00\x03a/b\x00\x01",
        b"\x25",
        b"\x01\x01",
        b"\x02\x00\x00\x00\x0a",
        b"\x23\x00\x02",
        b"\x08\x00\x01r",
        b"\x09\x00\x01c",
        b"\x26\x00\x01k\x00\x01v",
        b"\x0b\x05",
        b"\x0b\x80\x01",
        b"\x03\x00\x04json",
        b"{}",
    ]);
    let expected = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: 1,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(10),
            topic_alias: Some(2),
            response_topic: Some(s("r")),
            correlation_data: Some(b(b"c")),
            user_properties: vec![user("k", "v")],
            subscription_identifiers: vec![5, 128],
            content_type: Some(s("json")),
        },
        payload: b(b"{}"),
    };
    golden(&bytes, V5, Packet::Publish(expected));
}

#[test]
fn publish_minimal_and_with_alias_only() {
    let minimal = Publish {
        topic: s("t"),
        payload: b(b"p"),
        ..Publish::default()
    };
    golden(b"\x30\x05\x00\x01t\x00p", V5, Packet::Publish(minimal));
    let aliased = Publish {
        retain: true,
        topic: s(""),
        properties: PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        },
        payload: b(b"x"),
        ..Publish::default()
    };
    golden(
        b"\x31\x07\x00\x00\x03\x23\x00\x01x",
        V5,
        Packet::Publish(aliased),
    );
}

#[test]
fn publish_acknowledgement_short_forms() {
    let success = PubResponse {
        packet_id: 1,
        ..PubResponse::default()
    };
    golden(b"\x40\x02\x00\x01", V5, Packet::PubAck(success.clone()));
    golden(b"\x70\x02\x00\x01", V5, Packet::PubComp(success.clone()));
    // Reason code 0 and an empty property block spelled out: same packet.
    decodes_to(
        b"\x40\x04\x00\x01\x00\x00",
        V5,
        Packet::PubAck(success.clone()),
    );
    decodes_to(b"\x50\x03\x00\x01\x00", V5, Packet::PubRec(success));
    let no_subscribers = PubResponse {
        packet_id: 1,
        reason_code: reason::NO_MATCHING_SUBSCRIBERS,
        ..PubResponse::default()
    };
    golden(
        b"\x40\x03\x00\x01\x10",
        V5,
        Packet::PubAck(no_subscribers.clone()),
    );
    golden(b"\x50\x03\x00\x01\x10", V5, Packet::PubRec(no_subscribers));
    let not_found = PubResponse {
        packet_id: 0x0102,
        reason_code: reason::PACKET_IDENTIFIER_NOT_FOUND,
        ..PubResponse::default()
    };
    golden(b"\x62\x03\x01\x02\x92", V5, Packet::PubRel(not_found));
}

#[test]
fn publish_acknowledgement_with_properties() {
    let response = PubResponse {
        packet_id: 1,
        reason_code: reason::QUOTA_EXCEEDED,
        properties: AckProperties {
            reason_string: Some(s("full")),
            user_properties: vec![user("k", "v")],
        },
    };
    let bytes = b"\x40\x12\x00\x01\x97\x0e\x1f\x00\x04full\x26\x00\x01k\x00\x01v";
    golden(bytes, V5, Packet::PubAck(response));
    let success_with_reason_string = PubResponse {
        packet_id: 1,
        reason_code: reason::SUCCESS,
        properties: AckProperties {
            reason_string: Some(s("")),
            ..AckProperties::default()
        },
    };
    golden(
        b"\x70\x07\x00\x01\x00\x03\x1f\x00\x00",
        V5,
        Packet::PubComp(success_with_reason_string),
    );
}

#[test]
fn subscribe_with_options_and_properties() {
    let expected = Subscribe {
        packet_id: 10,
        filters: vec![
            SubscribeFilter {
                filter: s("a/+"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            SubscribeFilter {
                filter: s("$share/g/x"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    retain_handling: RetainHandling::SendIfNew,
                    ..SubscriptionOptions::default()
                },
            },
        ],
        subscription_identifier: Some(12),
        user_properties: vec![user("k", "v")],
    };
    let bytes = cat(&[
        b"\x82\x1f\x00\x0a",
        b"\x09\x0b\x0c\x26\x00\x01k\x00\x01v",
        b"\x00\x03a/+\x2d",
        b"\x00\x0a$share/g/x\x12",
    ]);
    golden(&bytes, V5, Packet::Subscribe(expected));
}

#[test]
fn suback_and_unsuback() {
    let suback = SubAck {
        packet_id: 10,
        reason_codes: vec![0x01, 0x02, 0x8f, 0xa2],
        properties: AckProperties {
            reason_string: Some(s("ok")),
            user_properties: Vec::new(),
        },
    };
    golden(
        b"\x90\x0c\x00\x0a\x05\x1f\x00\x02ok\x01\x02\x8f\xa2",
        V5,
        Packet::SubAck(suback),
    );
    let unsuback = UnsubAck {
        packet_id: 11,
        reason_codes: vec![0x00, 0x11],
        properties: AckProperties::default(),
    };
    golden(
        b"\xb0\x05\x00\x0b\x00\x00\x11",
        V5,
        Packet::UnsubAck(unsuback),
    );
}

#[test]
fn unsubscribe() {
    let plain = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/b")],
        user_properties: Vec::new(),
    };
    golden(
        b"\xa2\x08\x00\x0b\x00\x00\x03a/b",
        V5,
        Packet::Unsubscribe(plain),
    );
    let with_user = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/b")],
        user_properties: vec![user("k", "v")],
    };
    golden(
        b"\xa2\x0f\x00\x0b\x07\x26\x00\x01k\x00\x01v\x00\x03a/b",
        V5,
        Packet::Unsubscribe(with_user),
    );
}

#[test]
fn ping() {
    golden(b"\xc0\x00", V5, Packet::PingReq);
    golden(b"\xd0\x00", V5, Packet::PingResp);
}

#[test]
fn disconnect_forms() {
    golden(b"\xe0\x00", V5, Packet::Disconnect(Disconnect::default()));
    decodes_to(
        b"\xe0\x01\x00",
        V5,
        Packet::Disconnect(Disconnect::default()),
    );
    let with_will = Disconnect {
        reason_code: reason::DISCONNECT_WITH_WILL_MESSAGE,
        properties: DisconnectProperties::default(),
    };
    golden(
        b"\xe0\x02\x04\x00",
        V5,
        Packet::Disconnect(with_will.clone()),
    );
    decodes_to(b"\xe0\x01\x04", V5, Packet::Disconnect(with_will));
    let moved = Disconnect {
        reason_code: reason::SERVER_SHUTTING_DOWN,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: Some(s("srv2")),
        },
    };
    golden(
        b"\xe0\x0e\x8b\x0c\x11\x00\x00\x00\x00\x1c\x00\x04srv2",
        V5,
        Packet::Disconnect(moved),
    );
}

#[test]
fn auth_forms() {
    golden(b"\xf0\x00", V5, Packet::Auth(Auth::default()));
    decodes_to(b"\xf0\x02\x00\x00", V5, Packet::Auth(Auth::default()));
    let continue_auth = Auth {
        reason_code: reason::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(b"z")),
            reason_string: None,
            user_properties: Vec::new(),
        },
    };
    golden(
        b"\xf0\x0e\x18\x0c\x15\x00\x05SCRAM\x16\x00\x01z",
        V5,
        Packet::Auth(continue_auth),
    );
    let reauth = Auth {
        reason_code: reason::RE_AUTHENTICATE,
        properties: AuthProperties::default(),
    };
    golden(b"\xf0\x02\x19\x00", V5, Packet::Auth(reauth));
}
