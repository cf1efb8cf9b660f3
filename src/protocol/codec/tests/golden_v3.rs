//! Golden bytes for MQTT 3.1.1 and 3.1: every packet type, both directions.

use super::*;
use crate::protocol::reason;
use ProtocolVersion::{V3_1, V3_1_1};

fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

#[test]
fn connect_minimal() {
    golden(
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
        V3_1_1,
        Packet::Connect(Box::new(connect(V3_1_1))),
    );
}

#[test]
fn connect_with_will_username_and_password() {
    let bytes = cat(&[
        b"\x10\x1e\x00\x04MQTT\x04\xee\x00\x3c",
        b"\x00\x02c1",
        b"\x00\x03w/t\x00\x02hi",
        b"\x00\x01u\x00\x02pw",
    ]);
    let expected = Connect {
        client_id: s("c1"),
        will: Some(Will {
            topic: s("w/t"),
            payload: b(b"hi"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(b(b"pw")),
        ..connect(V3_1_1)
    };
    golden(&bytes, V3_1_1, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_with_binary_password_and_no_clean_session() {
    let bytes = b"\x10\x14\x00\x04MQTT\x04\xc0\x00\x00\x00\x01x\x00\x01u\x00\x02\xff\x00";
    let expected = Connect {
        clean_start: false,
        keep_alive: 0,
        client_id: s("x"),
        username: Some(s("u")),
        password: Some(b(b"\xff\x00")),
        ..connect(V3_1_1)
    };
    golden(bytes, V3_1_1, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_mqisdp() {
    let expected = Connect {
        client_id: s("abcd"),
        ..connect(V3_1)
    };
    golden(
        b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04abcd",
        V3_1,
        Packet::Connect(Box::new(expected)),
    );
}

#[test]
fn connack() {
    let accepted = ConnAck {
        session_present: true,
        ..ConnAck::default()
    };
    golden(b"\x20\x02\x01\x00", V3_1_1, Packet::ConnAck(accepted));
    let refused = ConnAck {
        reason_code: reason::NOT_AUTHORIZED,
        ..ConnAck::default()
    };
    golden(b"\x20\x02\x00\x05", V3_1_1, Packet::ConnAck(refused));
    for (v3, v5) in [
        (1, reason::UNSUPPORTED_PROTOCOL_VERSION),
        (2, reason::CLIENT_IDENTIFIER_NOT_VALID),
        (3, reason::SERVER_UNAVAILABLE),
        (4, reason::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let packet = Packet::ConnAck(ConnAck {
            reason_code: v5,
            ..ConnAck::default()
        });
        golden(&[0x20, 0x02, 0x00, v3], V3_1_1, packet);
    }
}

#[test]
fn connack_maps_mqtt5_reason_codes_down() {
    let connack = |reason_code| {
        Packet::ConnAck(ConnAck {
            reason_code,
            ..ConnAck::default()
        })
    };
    encodes_to(connack(reason::BANNED), V3_1_1, b"\x20\x02\x00\x05");
    encodes_to(connack(reason::SERVER_BUSY), V3_1_1, b"\x20\x02\x00\x03");
    encodes_to(
        connack(reason::BAD_AUTHENTICATION_METHOD),
        V3_1,
        b"\x20\x02\x00\x04",
    );
}

#[test]
fn connack_mqtt31_has_no_session_present() {
    golden(
        b"\x20\x02\x00\x00",
        V3_1,
        Packet::ConnAck(ConnAck::default()),
    );
    let present = ConnAck {
        session_present: true,
        ..ConnAck::default()
    };
    encodes_to(Packet::ConnAck(present), V3_1, b"\x20\x02\x00\x00");
}

#[test]
fn publish() {
    let qos0 = Publish {
        topic: s("a/b"),
        payload: b(b"hi"),
        ..Publish::default()
    };
    golden(
        b"\x30\x07\x00\x03a/bhi",
        V3_1_1,
        Packet::Publish(qos0.clone()),
    );
    golden(b"\x30\x07\x00\x03a/bhi", V3_1, Packet::Publish(qos0));
    let qos1 = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: s("a/b"),
        packet_id: 10,
        payload: b(b"hi"),
        ..Publish::default()
    };
    golden(
        b"\x3b\x09\x00\x03a/b\x00\x0ahi",
        V3_1_1,
        Packet::Publish(qos1),
    );
    let qos2 = Publish {
        qos: QoS::ExactlyOnce,
        topic: s("t"),
        packet_id: 0x1234,
        payload: Bytes::new(),
        ..Publish::default()
    };
    golden(b"\x34\x05\x00\x01t\x12\x34", V3_1_1, Packet::Publish(qos2));
}

#[test]
fn publish_acknowledgements() {
    let response = PubResponse {
        packet_id: 10,
        ..PubResponse::default()
    };
    for version in [V3_1, V3_1_1] {
        golden(
            b"\x40\x02\x00\x0a",
            version,
            Packet::PubAck(response.clone()),
        );
        golden(
            b"\x50\x02\x00\x0a",
            version,
            Packet::PubRec(response.clone()),
        );
        golden(
            b"\x62\x02\x00\x0a",
            version,
            Packet::PubRel(response.clone()),
        );
        golden(
            b"\x70\x02\x00\x0a",
            version,
            Packet::PubComp(response.clone()),
        );
    }
}

#[test]
fn subscribe() {
    let expected = Subscribe {
        packet_id: 10,
        filters: vec![
            SubscribeFilter {
                filter: s("a/b"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            },
            SubscribeFilter {
                filter: s("c/#"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..SubscriptionOptions::default()
                },
            },
        ],
        ..Subscribe::default()
    };
    let bytes = b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/#\x02";
    golden(bytes, V3_1_1, Packet::Subscribe(expected.clone()));
    golden(bytes, V3_1, Packet::Subscribe(expected.clone()));
    // MQTT 3.1 clients may set DUP on a retransmitted SUBSCRIBE.
    let dup = b"\x8a\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/#\x02";
    decodes_to(dup, V3_1, Packet::Subscribe(expected));
}

#[test]
fn suback() {
    let expected = SubAck {
        packet_id: 10,
        reason_codes: vec![0x00, 0x02, 0x80],
        ..SubAck::default()
    };
    golden(
        b"\x90\x05\x00\x0a\x00\x02\x80",
        V3_1_1,
        Packet::SubAck(expected),
    );
    let mqtt5_codes = SubAck {
        packet_id: 10,
        reason_codes: vec![0x01, reason::NOT_AUTHORIZED, reason::TOPIC_FILTER_INVALID],
        ..SubAck::default()
    };
    encodes_to(
        Packet::SubAck(mqtt5_codes),
        V3_1_1,
        b"\x90\x05\x00\x0a\x01\x80\x80",
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let unsubscribe = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/b"), s("+")],
        ..Unsubscribe::default()
    };
    golden(
        b"\xa2\x0a\x00\x0b\x00\x03a/b\x00\x01+",
        V3_1_1,
        Packet::Unsubscribe(unsubscribe),
    );
    let unsuback = UnsubAck {
        packet_id: 11,
        ..UnsubAck::default()
    };
    golden(
        b"\xb0\x02\x00\x0b",
        V3_1_1,
        Packet::UnsubAck(unsuback.clone()),
    );
    // Reason codes only exist in MQTT 5; a 3.x UNSUBACK drops them.
    let with_codes = UnsubAck {
        reason_codes: vec![0x11],
        ..unsuback
    };
    encodes_to(Packet::UnsubAck(with_codes), V3_1, b"\xb0\x02\x00\x0b");
}

#[test]
fn ping_and_disconnect() {
    for version in [V3_1, V3_1_1] {
        golden(b"\xc0\x00", version, Packet::PingReq);
        golden(b"\xd0\x00", version, Packet::PingResp);
        golden(
            b"\xe0\x00",
            version,
            Packet::Disconnect(Disconnect::default()),
        );
    }
    let with_reason = Disconnect {
        reason_code: reason::SERVER_SHUTTING_DOWN,
        ..Disconnect::default()
    };
    encodes_to(Packet::Disconnect(with_reason), V3_1_1, b"\xe0\x00");
}

#[test]
fn long_remaining_length() {
    let payload = vec![b'x'; 200];
    let mut bytes = b"\x30\xcd\x01\x00\x03a/b".to_vec();
    bytes.extend_from_slice(&payload);
    let expected = Publish {
        topic: s("a/b"),
        payload: Bytes::from(payload),
        ..Publish::default()
    };
    golden(&bytes, V3_1_1, Packet::Publish(expected));
}
