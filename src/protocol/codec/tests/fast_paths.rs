//! The encoder's and decoder's shortcuts give what the general paths give: a PUBLISH
//! encoded from its parts is byte for byte the encoding of the `Publish`, and two-byte
//! acknowledgements read in place decode like any other packet.

use super::*;
use crate::protocol::codec::{encode_publish, PublishParts};
use ProtocolVersion::{V3_1, V3_1_1, V5};

fn publishes() -> Vec<Publish> {
    let plain = Publish {
        qos: QoS::AtLeastOnce,
        topic: s("bench/fanout"),
        packet_id: 7,
        payload: b(&[0x5a; 64]),
        ..Publish::default()
    };
    let with_properties = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("a/b"),
        packet_id: 65_535,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            topic_alias: Some(2),
            response_topic: Some(s("reply/to")),
            correlation_data: Some(b(b"\x01\x02")),
            user_properties: vec![(s("k"), s("v")), (s("k"), s("w"))],
            subscription_identifiers: vec![1, 268_435_455],
            content_type: Some(s("text/plain")),
        },
        payload: b(b"21.5"),
    };
    let aliased = Publish {
        topic: s(""),
        properties: PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        },
        ..plain.clone()
    };
    let qos0_empty = Publish {
        topic: s("t"),
        ..Publish::default()
    };
    // A remaining length past 127 takes two bytes.
    let long = Publish {
        payload: Bytes::from(vec![1u8; 300]),
        ..plain.clone()
    };
    // A topic past 65,535 bytes is cut at a character boundary (the encoder never
    // panics); a remaining length past 16,383 takes three bytes.
    let oversized_topic = Publish {
        topic: ByteString::from("é".repeat(40_000)),
        ..plain.clone()
    };
    vec![
        plain,
        with_properties,
        aliased,
        qos0_empty,
        long,
        oversized_topic,
    ]
}

#[test]
fn a_publish_encoded_from_its_parts_is_its_full_encoding() {
    for version in [V3_1, V3_1_1, V5] {
        for publish in publishes() {
            let expected = encode_to_vec(&Packet::Publish(publish.clone()), version);
            let parts = PublishParts::of(&publish);
            let mut out = BytesMut::from(&b"before"[..]);
            let written = encode_publish(&parts, version, usize::MAX, &mut out);
            assert_eq!(written, Some(expected.len()), "{version:?} {publish:?}");
            assert_eq!(&out[..6], b"before");
            assert_eq!(&out[6..], &expected[..], "{version:?} {publish:?}");

            // The limit is inclusive; past it nothing is written.
            let mut out = BytesMut::new();
            let at_limit = encode_publish(&parts, version, expected.len(), &mut out);
            assert_eq!(at_limit, Some(expected.len()));
            let mut out = BytesMut::new();
            assert_eq!(
                encode_publish(&parts, version, expected.len() - 1, &mut out),
                None
            );
            assert!(out.is_empty());
        }
    }
}

#[test]
fn no_properties_is_an_empty_property_block() {
    let publish = Publish {
        properties: PublishProperties::default(),
        ..publishes()[0].clone()
    };
    let parts = PublishParts {
        properties: None,
        ..PublishParts::of(&publish)
    };
    for version in [V3_1_1, V5] {
        let mut out = BytesMut::new();
        encode_publish(&parts, version, usize::MAX, &mut out);
        assert_eq!(
            &out[..],
            &encode_to_vec(&Packet::Publish(publish.clone()), version)[..]
        );
    }
}

#[test]
fn two_byte_acknowledgements_are_read_in_place_one_at_a_time() {
    let response = PubResponse {
        packet_id: 0x0102,
        ..PubResponse::default()
    };
    for version in [V3_1, V3_1_1, V5] {
        // PUBACK, PUBREC, PUBREL, PUBCOMP back to back, then half of another PUBACK.
        let mut buf = BytesMut::from(
            &b"\x40\x02\x01\x02\x50\x02\x01\x02\x62\x02\x01\x02\x70\x02\x01\x02\x40\x02\x01"[..],
        );
        let expected = [
            Packet::PubAck(response.clone()),
            Packet::PubRec(response.clone()),
            Packet::PubRel(response.clone()),
            Packet::PubComp(response.clone()),
        ];
        for packet in expected {
            assert_eq!(decode(&mut buf, Some(version), NO_LIMIT), Ok(Some(packet)));
        }
        assert_eq!(decode(&mut buf, Some(version), NO_LIMIT), Ok(None));
        assert_eq!(&buf[..], b"\x40\x02\x01");
    }
    // The shortcut keeps the general checks' answers: a maximum below 4 bytes, a packet
    // not yet whole, MQTT 3.1's PUBREL with DUP and QoS bits (general path).
    let mut buf = BytesMut::from(&b"\x40\x02\x01\x02"[..]);
    assert_eq!(
        decode(&mut buf, Some(V3_1_1), 3),
        Err(DecodeError::PacketTooLarge { size: 4, max: 3 })
    );
    let mut buf = BytesMut::from(&b"\x40\x02\x01"[..]);
    assert_eq!(decode(&mut buf, Some(V3_1_1), NO_LIMIT), Ok(None));
    assert_eq!(buf.len(), 3);
    let mut buf = BytesMut::from(&b"\x6a\x02\x01\x02"[..]);
    assert_eq!(
        decode(&mut buf, Some(V3_1), NO_LIMIT),
        Ok(Some(Packet::PubRel(response.clone())))
    );
    // A longer acknowledgement (MQTT 5, with a reason code) takes the general path.
    let mut buf = BytesMut::from(&b"\x40\x03\x01\x02\x10"[..]);
    assert_eq!(
        decode(&mut buf, Some(V5), NO_LIMIT),
        Ok(Some(Packet::PubAck(PubResponse {
            packet_id: 0x0102,
            reason_code: 0x10,
            ..PubResponse::default()
        })))
    );
    assert!(buf.is_empty());
}
