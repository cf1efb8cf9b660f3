//! Validation errors: every rule with the variant it must produce, plus framing limits.

use super::*;
use ProtocolVersion::{V3_1, V3_1_1, V5};

#[derive(Debug, PartialEq)]
enum Kind {
    Malformed,
    Protocol,
}
use Kind::{Malformed as M, Protocol as P};

fn kind_of(bytes: &[u8], version: Option<ProtocolVersion>) -> Kind {
    match decode_err(bytes, version) {
        DecodeError::Malformed(_) => Kind::Malformed,
        DecodeError::Protocol(_) => Kind::Protocol,
        other => panic!("unexpected {other:?} for {bytes:02x?}"),
    }
}

fn check(cases: &[(&[u8], Option<ProtocolVersion>, Kind)]) {
    for (bytes, version, expected) in cases {
        assert_eq!(
            &kind_of(bytes, *version),
            expected,
            "{bytes:02x?} as {version:?}"
        );
    }
}

#[test]
fn framing() {
    check(&[
        // A fourth length byte with the continuation bit set.
        (b"\x30\xff\xff\xff\x80", Some(V3_1_1), M),
        (b"\x30\xff\xff\xff\xff\x01", Some(V5), M),
        // Packet type 0 is reserved.
        (b"\x00\x00", Some(V3_1_1), M),
        // Before CONNECT nothing else is acceptable.
        (b"\x30\x05\x00\x01t\x00p", None, P),
        (b"\xc0\x00", None, P),
    ]);
}

#[test]
fn packet_too_large_is_seen_from_the_fixed_header() {
    let mut buf = BytesMut::from(&b"\x30\xe8\x07"[..]);
    let error = decode(&mut buf, Some(V3_1_1), 100);
    assert_eq!(
        error,
        Err(DecodeError::PacketTooLarge {
            size: 1003,
            max: 100
        })
    );
    // Exactly at the limit is fine.
    let mut buf = BytesMut::from(&b"\x30\x05\x00\x01t\x00p"[..]);
    assert!(matches!(decode(&mut buf, Some(V5), 7), Ok(Some(_))));
    let mut buf = BytesMut::from(&b"\x30\x05\x00\x01t\x00p"[..]);
    let error = decode(&mut buf, Some(V5), 6);
    assert_eq!(error, Err(DecodeError::PacketTooLarge { size: 7, max: 6 }));
}

#[test]
fn largest_remaining_length_waits_or_is_refused() {
    let header = b"\x30\xff\xff\xff\x7f";
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(decode(&mut buf, Some(V5), NO_LIMIT), Ok(None));
    assert_eq!(buf.len(), header.len());
    let mut buf = BytesMut::from(&header[..]);
    let refused = decode(&mut buf, Some(V5), 1 << 20);
    let size = 1 + 4 + 268_435_455;
    assert_eq!(
        refused,
        Err(DecodeError::PacketTooLarge { size, max: 1 << 20 })
    );
}

#[test]
fn unsupported_protocol() {
    // A known protocol name at a level this broker does not speak gets CONNACK 0x01...
    for bytes in [
        &b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00"[..],
        b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00",
        b"\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x00",
    ] {
        assert_eq!(decode_err(bytes, None), DecodeError::UnsupportedProtocol);
    }
    // ...while an unknown name is not MQTT: closed without CONNACK, as a Protocol error.
    check(&[
        (b"\x10\x0c\x00\x04MQTZ\x04\x02\x00\x3c\x00\x00", None, P),
        (b"\x10\x0c\x00\x04mqtt\x04\x02\x00\x3c\x00\x00", None, P),
        (b"\x10\x08\x00\x00\x04\x02\x00\x3c\x00\x00", None, P),
    ]);
}

#[test]
fn fixed_header_flags() {
    check(&[
        (b"\x11\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", None, M),
        (b"\x41\x02\x00\x01", Some(V3_1_1), M),
        (b"\x60\x02\x00\x01", Some(V3_1_1), M),
        (b"\x63\x02\x00\x01", Some(V5), M),
        (b"\x80\x06\x00\x01\x00\x01a\x00", Some(V3_1_1), M),
        (b"\xa0\x05\x00\x01\x00\x01a", Some(V5), M),
        (b"\xc1\x00", Some(V3_1_1), M),
        (b"\xe2\x00", Some(V5), M),
        (b"\x36\x05\x00\x01t\x00\x01", Some(V3_1_1), M),
        (b"\x38\x03\x00\x01t", Some(V3_1_1), M),
        (b"\x39\x03\x00\x01t", Some(V5), M),
    ]);
}

#[test]
fn server_only_packets_from_a_client_are_protocol_errors() {
    use crate::protocol::codec::decode_from_client;
    for version in [V3_1, V3_1_1, V5] {
        for bytes in [
            // CONNACK, SUBACK, UNSUBACK, PINGRESP: well formed, with a body that does not
            // parse, and with wrong fixed-header flags.
            &b"\x20\x02\x00\x00"[..],
            b"\x20\x00",
            b"\x90\x03\x00\x01\x00",
            b"\x9f\x01\x00",
            b"\xb0\x02\x00\x01",
            b"\xb0\x00",
            b"\xd0\x00",
            b"\xd0\x01\x00",
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(
                matches!(
                    decode_from_client(&mut buf, Some(version), NO_LIMIT),
                    Err(DecodeError::Protocol(_))
                ),
                "{bytes:02x?} as {version:?}"
            );
        }
        // What a client may send still decodes, and Malformed stays Malformed.
        let mut buf = BytesMut::from(&b"\xc0\x00"[..]);
        assert_eq!(
            decode_from_client(&mut buf, Some(version), NO_LIMIT),
            Ok(Some(Packet::PingReq))
        );
        let mut buf = BytesMut::from(&b"\xc0\x01\x00"[..]);
        assert!(matches!(
            decode_from_client(&mut buf, Some(version), NO_LIMIT),
            Err(DecodeError::Malformed(_))
        ));
    }
    // A property not valid for its packet type stays Malformed (spec 2.2.2.2): Session
    // Expiry Interval in PUBLISH.
    let mut buf = BytesMut::from(&b"\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01"[..]);
    assert!(matches!(
        crate::protocol::codec::decode_from_client(&mut buf, Some(V5), NO_LIMIT),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn connect_rules() {
    check(&[
        // Reserved flag.
        (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", None, M),
        (b"\x10\x0d\x00\x04MQTT\x05\x01\x00\x3c\x00\x00\x00", None, M),
        // Will QoS 3.
        (
            b"\x10\x11\x00\x04MQTT\x04\x1e\x00\x3c\x00\x00\x00\x01t\x00\x00",
            None,
            M,
        ),
        // Will QoS or retain without the will flag.
        (b"\x10\x0c\x00\x04MQTT\x04\x0a\x00\x3c\x00\x00", None, M),
        (b"\x10\x0c\x00\x04MQTT\x04\x22\x00\x3c\x00\x00", None, M),
        // Password without user name (3.1.1 and 3.1).
        (
            b"\x10\x0f\x00\x04MQTT\x04\x42\x00\x3c\x00\x00\x00\x01p",
            None,
            M,
        ),
        (
            b"\x10\x11\x00\x06MQIsdp\x03\x40\x00\x3c\x00\x00\x00\x01p",
            None,
            M,
        ),
        // Client identifier with U+0000, then invalid UTF-8.
        (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\x00", None, M),
        (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\xff", None, M),
        // User name with a surrogate encoded in UTF-8.
        (
            b"\x10\x11\x00\x04MQTT\x04\x82\x00\x3c\x00\x00\x00\x03\xed\xa0\x80",
            None,
            M,
        ),
        // Trailing byte after the payload.
        (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\x00", None, M),
        // Client identifier longer than the packet.
        (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x05", None, M),
        // Missing will payload.
        (
            b"\x10\x0f\x00\x04MQTT\x04\x06\x00\x3c\x00\x00\x00\x01t",
            None,
            M,
        ),
    ]);
    // A CONNECT after CONNECT still decodes: rejecting it is the session's call.
    let bytes = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    assert!(matches!(decode_all(bytes, V5), Ok(Packet::Connect(_))));
}

#[test]
fn publish_rules() {
    check(&[
        // Packet identifier 0 with QoS 1 and 2.
        (b"\x32\x05\x00\x01t\x00\x00", Some(V3_1_1), P),
        (b"\x34\x06\x00\x01t\x00\x00\x00", Some(V5), P),
        // Topic with invalid UTF-8, with U+0000, longer than the packet.
        (b"\x30\x05\x00\x02\xc3\x28x", Some(V3_1_1), M),
        (b"\x30\x05\x00\x02a\x00x", Some(V5), M),
        (b"\x30\x03\x00\x05a", Some(V3_1_1), M),
        // Packet identifier cut off.
        (b"\x32\x04\x00\x01t\x00", Some(V3_1_1), M),
    ]);
}

#[test]
fn acknowledgement_rules() {
    check(&[
        (b"\x40\x02\x00\x00", Some(V3_1_1), P),
        // Packet identifier 0 in every two-byte acknowledgement and version.
        (b"\x40\x02\x00\x00", Some(V5), P),
        (b"\x50\x02\x00\x00", Some(V3_1), P),
        (b"\x62\x02\x00\x00", Some(V3_1_1), P),
        (b"\x62\x02\x00\x00", Some(V5), P),
        (b"\x70\x02\x00\x00", Some(V5), P),
        (b"\x40\x03\x00\x01\x00", Some(V3_1_1), M),
        (b"\x40\x01\x00", Some(V5), M),
        (b"\x40\x03\x00\x01\x92", Some(V5), P),
        (b"\x62\x03\x00\x01\x10", Some(V5), P),
        (b"\xb0\x03\x00\x01\x00", Some(V3_1_1), M),
        (b"\xb0\x03\x00\x01\x00", Some(V5), P),
        (b"\x90\x03\x00\x01\x03", Some(V3_1_1), P),
        (b"\x90\x02\x00\x01", Some(V3_1_1), P),
        (b"\x20\x02\x02\x00", Some(V3_1_1), M),
        (b"\x20\x02\x00\x06", Some(V3_1_1), P),
        (b"\x20\x03\x00\x00\x00", Some(V3_1_1), M),
        (b"\x20\x03\x00\x01\x00", Some(V5), P),
    ]);
}

#[test]
fn subscribe_rules() {
    check(&[
        // No topic filters.
        (b"\x82\x02\x00\x01", Some(V3_1_1), P),
        (b"\x82\x03\x00\x01\x00", Some(V5), P),
        (b"\xa2\x02\x00\x01", Some(V3_1_1), P),
        (b"\xa2\x03\x00\x01\x00", Some(V5), P),
        // 3.x requested QoS byte with upper bits, or QoS 3.
        (b"\x82\x06\x00\x01\x00\x01a\x04", Some(V3_1_1), M),
        (b"\x82\x06\x00\x01\x00\x01a\x03", Some(V3_1), M),
        // MQTT 5 reserved option bits, QoS 3, retain handling 3.
        (b"\x82\x07\x00\x01\x00\x00\x01a\x40", Some(V5), M),
        (b"\x82\x07\x00\x01\x00\x00\x01a\x03", Some(V5), M),
        (b"\x82\x07\x00\x01\x00\x00\x01a\x30", Some(V5), P),
        // Filter with U+0000; options byte missing.
        (b"\x82\x06\x00\x01\x00\x01\x00\x00", Some(V3_1_1), M),
        (b"\x82\x05\x00\x01\x00\x01a", Some(V3_1_1), M),
        (b"\xa2\x05\x00\x01\x00\x01\x00", Some(V3_1_1), M),
        // Packet identifier 0.
        (b"\x82\x06\x00\x00\x00\x01a\x00", Some(V3_1_1), P),
    ]);
}

#[test]
fn disconnect_auth_and_ping_rules() {
    check(&[
        (b"\xe0\x01\x00", Some(V3_1_1), M),
        (b"\xe0\x01\x00", Some(V3_1), M),
        (b"\xe0\x01\x03", Some(V5), P),
        (b"\xe0\x03\x00\x00\x00", Some(V5), M),
        (b"\xf0\x00", Some(V3_1_1), M),
        (b"\xf0\x01\x01", Some(V5), P),
        (b"\xc0\x01\x00", Some(V3_1_1), M),
        (b"\xd0\x01\x00", Some(V5), M),
    ]);
}

#[test]
fn property_rules() {
    check(&[
        // Unknown identifier, and one not allowed in the packet.
        (b"\x30\x06\x00\x01t\x02\x7f\x00", Some(V5), M),
        (b"\x30\x07\x00\x01t\x03\x11\x00\x00", Some(V5), M),
        (b"\x40\x06\x00\x01\x00\x02\x0b\x01", Some(V5), M),
        // Property length beyond the packet; a value cut off by the property length.
        (b"\x30\x05\x00\x01t\x09x", Some(V5), M),
        (b"\x30\x06\x00\x01t\x02\x23\x00", Some(V5), M),
        // Duplicates.
        (
            b"\x30\x0a\x00\x01t\x06\x23\x00\x01\x23\x00\x02",
            Some(V5),
            P,
        ),
        (
            b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
            Some(V5),
            P,
        ),
        (
            b"\xe0\x0c\x00\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02",
            Some(V5),
            P,
        ),
        // Values out of range.
        (b"\x30\x07\x00\x01t\x03\x23\x00\x00", Some(V5), P),
        (b"\x30\x06\x00\x01t\x02\x01\x02", Some(V5), P),
        (b"\x30\x06\x00\x01t\x02\x0b\x00", Some(V5), P),
        (b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", Some(V5), P),
        (b"\x20\x06\x00\x00\x03\x21\x00\x00", Some(V5), P),
        (b"\x20\x05\x00\x00\x02\x24\x02", Some(V5), P),
        (b"\x20\x05\x00\x00\x02\x25\x02", Some(V5), P),
        (b"\x20\x05\x00\x00\x02\x2a\x05", Some(V5), P),
        (b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x00", Some(V5), P),
        // Strings inside properties are checked too.
        (
            b"\x30\x0b\x00\x01t\x07\x26\x00\x01k\x00\x01\x00",
            Some(V5),
            M,
        ),
        (b"\x30\x08\x00\x01t\x04\x03\x00\x01\xff", Some(V5), M),
    ]);
    let connect = |props: &[u8]| {
        let mut bytes = vec![0x10, (13 + props.len()) as u8];
        bytes.extend_from_slice(b"\x00\x04MQTT\x05\x02\x00\x3c");
        bytes.push(props.len() as u8);
        bytes.extend_from_slice(props);
        bytes.extend_from_slice(b"\x00\x00");
        bytes
    };
    for (props, expected) in [
        (&b"\x21\x00\x00"[..], P),
        (b"\x27\x00\x00\x00\x00", P),
        (b"\x17\x02", P),
        (b"\x19\x02", P),
        (b"\x17\x01\x17\x01", P),
        (b"\x23\x00\x01", M),
        (b"\x24\x01", M),
    ] {
        assert_eq!(kind_of(&connect(props), None), expected, "{props:02x?}");
    }
}
