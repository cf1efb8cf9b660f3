//! Property tests: every valid packet of every version survives encode then decode, and
//! no byte sequence (random or a corrupted valid packet) makes the decoder panic.

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::*;
use crate::protocol::codec::decode::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES,
};
use crate::protocol::codec::sink::MAX_VARINT;

fn text() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,6}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn code(codes: &'static [u8]) -> impl Strategy<Value = u8> {
    proptest::sample::select(codes)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn ack_properties(v5: bool) -> BoxedStrategy<AckProperties> {
    if !v5 {
        return Just(AckProperties::default()).boxed();
    }
    (of(text()), users())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

fn will(v5: bool) -> impl Strategy<Value = Will> {
    let properties = (
        of(any::<u32>()),
        of(0..=1u8),
        of(any::<u32>()),
        of(text()),
        of(text()),
        of(binary()),
        users(),
    )
        .prop_map(
            |(delay, format, expiry, content, response, correlation, user)| WillProperties {
                will_delay_interval: delay,
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
            },
        );
    (text(), binary(), qos(), any::<bool>(), properties).prop_map(
        move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        },
    )
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let properties = (
        (
            of(any::<u32>()),
            of(1..=u16::MAX),
            of(1..=u32::MAX),
            of(any::<u16>()),
        ),
        (of(any::<bool>()), of(any::<bool>()), users()),
        (of(text()), of(binary())),
    )
        .prop_map(
            |((expiry, receive, size, alias), (response, problem, user), (method, data))| {
                ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive,
                    maximum_packet_size: size,
                    topic_alias_maximum: alias,
                    request_response_information: response,
                    request_problem_information: problem,
                    user_properties: user,
                    authentication_method: method,
                    authentication_data: data,
                }
            },
        );
    (
        (any::<bool>(), any::<u16>(), text(), of(will(v5))),
        (of(text()), of(binary()), properties),
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, client_id, will),
                (username, password, properties),
            )| {
                // 3.x forbids a password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let present = version != ProtocolVersion::V3_1;
    if !version.is_v5() {
        let codes: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
        return (any::<bool>(), code(codes))
            .prop_map(move |(session_present, reason_code)| {
                Packet::ConnAck(ConnAck {
                    session_present: session_present && present,
                    reason_code,
                    properties: ConnAckProperties::default(),
                })
            })
            .boxed();
    }
    let numbers = (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        of(any::<bool>()),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(any::<u16>()),
    );
    let flags = (of(any::<bool>()), of(any::<bool>()), of(any::<bool>()));
    let strings = (
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(binary()),
    );
    (
        any::<bool>(),
        code(CONNACK_CODES),
        numbers,
        flags,
        strings,
        users(),
    )
        .prop_map(|(session_present, reason_code, n, f, t, user_properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties: ConnAckProperties {
                    session_expiry_interval: n.0,
                    receive_maximum: n.1,
                    maximum_qos: n.2,
                    retain_available: n.3,
                    maximum_packet_size: n.4,
                    assigned_client_identifier: t.0,
                    topic_alias_maximum: n.5,
                    reason_string: t.1,
                    user_properties,
                    wildcard_subscription_available: f.0,
                    subscription_identifiers_available: f.1,
                    shared_subscription_available: f.2,
                    server_keep_alive: n.6,
                    response_information: t.2,
                    server_reference: t.3,
                    authentication_method: t.4,
                    authentication_data: t.5,
                },
            })
        })
        .boxed()
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let properties = (
        (of(0..=1u8), of(any::<u32>()), of(1..=u16::MAX), of(text())),
        (of(binary()), users(), vec(1..=MAX_VARINT, 0..3), of(text())),
    )
        .prop_map(
            |((format, expiry, alias, response), (correlation, user, ids, content))| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic: response,
                    correlation_data: correlation,
                    user_properties: user,
                    subscription_identifiers: ids,
                    content_type: content,
                }
            },
        );
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        text(),
        packet_id(),
        properties,
        binary(),
    )
        .prop_map(move |(qos, dup, retain, topic, id, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { id },
                properties: if v5 {
                    properties
                } else {
                    PublishProperties::default()
                },
                payload,
            })
        })
}

fn pub_response(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let response = move |codes: &'static [u8]| {
        let codes: &'static [u8] = if v5 { codes } else { &[0] };
        (packet_id(), code(codes), ack_properties(v5)).prop_map(
            |(packet_id, reason_code, properties)| PubResponse {
                packet_id,
                reason_code,
                properties,
            },
        )
    };
    prop_oneof![
        response(PUBACK_CODES).prop_map(Packet::PubAck),
        response(PUBACK_CODES).prop_map(Packet::PubRec),
        response(PUBREL_CODES).prop_map(Packet::PubRel),
        response(PUBREL_CODES).prop_map(Packet::PubComp),
    ]
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    let options = (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if !v5 {
                return SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                };
            }
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            }
        },
    );
    let filters = vec(
        (text(), options).prop_map(|(filter, options)| SubscribeFilter { filter, options }),
        1..4,
    );
    (packet_id(), filters, of(1..=MAX_VARINT), users()).prop_map(
        move |(packet_id, filters, identifier, user)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                subscription_identifier: identifier.filter(|_| v5),
                user_properties: if v5 { user } else { Vec::new() },
            })
        },
    )
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (packet_id(), vec(text(), 1..4), users()).prop_map(move |(packet_id, filters, user)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            user_properties: if v5 { user } else { Vec::new() },
        })
    })
}

fn acks(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let suback_codes: &'static [u8] = if v5 { SUBACK_CODES } else { &[0, 1, 2, 0x80] };
    let suback = (
        packet_id(),
        vec(code(suback_codes), 1..4),
        ack_properties(v5),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        });
    let unsuback_codes = if v5 { 1..4 } else { 0..1 };
    let unsuback = (
        packet_id(),
        vec(code(UNSUBACK_CODES), unsuback_codes),
        ack_properties(v5),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        });
    prop_oneof![suback, unsuback]
}

fn control(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let ping = prop_oneof![Just(Packet::PingReq), Just(Packet::PingResp)];
    if !version.is_v5() {
        return prop_oneof![ping, Just(Packet::Disconnect(Disconnect::default()))].boxed();
    }
    let disconnect = (
        code(DISCONNECT_CODES),
        of(any::<u32>()),
        of(text()),
        users(),
        of(text()),
    )
        .prop_map(|(reason_code, expiry, reason, user, reference)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties: DisconnectProperties {
                    session_expiry_interval: expiry,
                    reason_string: reason,
                    user_properties: user,
                    server_reference: reference,
                },
            })
        });
    let auth = (
        code(AUTH_CODES),
        of(text()),
        of(binary()),
        of(text()),
        users(),
    )
        .prop_map(|(reason_code, method, data, reason, user)| {
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: method,
                    authentication_data: data,
                    reason_string: reason,
                    user_properties: user,
                },
            })
        });
    prop_oneof![ping, disconnect, auth].boxed()
}

/// A valid packet of `version`, of any type.
pub(super) fn packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // Boxed: the unboxed strategy type is deep enough to overflow a test thread's stack.
    prop_oneof![
        connect(version).boxed(),
        connack(version),
        publish(version).boxed(),
        pub_response(version).boxed(),
        subscribe(version).boxed(),
        unsubscribe(version).boxed(),
        acks(version).boxed(),
        control(version),
    ]
}

fn version_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        Just(ProtocolVersion::V3_1),
        Just(ProtocolVersion::V3_1_1),
        Just(ProtocolVersion::V5)
    ]
    .prop_flat_map(|version| (Just(version), packet(version)))
}

#[test]
fn oversized_strings_are_cut_at_a_character_boundary() {
    // 'é' is two bytes: 40,000 of them do not fit a two-byte length prefix.
    let long = ByteString::from("é".repeat(40_000));
    let packet = Packet::Publish(Publish {
        topic: long.clone(),
        payload: Bytes::from_static(b"p"),
        ..Publish::default()
    });
    let bytes = encode_to_vec(&packet, ProtocolVersion::V3_1_1);
    let Ok(Packet::Publish(decoded)) = decode_all(&bytes, ProtocolVersion::V3_1_1) else {
        panic!("the cut packet must still decode");
    };
    assert_eq!(decoded.topic.len(), 65_534);
    assert!(long.starts_with(&*decoded.topic));
    assert_eq!(&decoded.payload[..], b"p");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((version, packet) in version_and_packet()) {
        let bytes = encode_to_vec(&packet, version);
        prop_assert_eq!(decode_all(&bytes, version), Ok(packet.clone()));
        if let Packet::Connect(_) = packet {
            let mut buf = BytesMut::from(&bytes[..]);
            prop_assert_eq!(decode(&mut buf, None, NO_LIMIT), Ok(Some(packet)));
        }
        let mut half = BytesMut::from(&bytes[..bytes.len() / 2]);
        prop_assert_eq!(decode(&mut half, Some(version), NO_LIMIT), Ok(None));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..64), which in 0..4usize) {
        let version = [None, Some(ProtocolVersion::V3_1), Some(ProtocolVersion::V3_1_1), Some(ProtocolVersion::V5)][which];
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        if let Ok(None) = decode(&mut buf, version, NO_LIMIT) {
            prop_assert_eq!(buf.len(), before);
        }
    }

    #[test]
    fn decoding_corrupted_packets_never_panics(
        (version, packet) in version_and_packet(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = encode_to_vec(&packet, version);
        let at = position.index(bytes.len());
        bytes[at] = value;
        let mut buf = BytesMut::from(&bytes[..]);
        // Any outcome but a panic is acceptable; a decoded packet must re-encode.
        if let Ok(Some(decoded)) = decode(&mut buf, Some(version), NO_LIMIT) {
            let _ = encode_to_vec(&decoded, version);
        }
    }
}
