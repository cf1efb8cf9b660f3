//! MQTT 5 against the codec inside `rumqttc` (`rumqttc::v5::mqttbytes::v5`). Left out:
//! the short DISCONNECT forms, which the oracle cannot read, and AUTH, whose reason code
//! and property types rumqttc does not export.

use super::*;
use fleetmq::protocol as ours;
use proptest::sample::select;
use rumqttc::v5::mqttbytes::v5 as o;
use rumqttc::v5::mqttbytes::QoS;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn qos(q: QoS) -> ours::QoS {
    match q {
        QoS::AtMostOnce => ours::QoS::AtMostOnce,
        QoS::AtLeastOnce => ours::QoS::AtLeastOnce,
        QoS::ExactlyOnce => ours::QoS::ExactlyOnce,
    }
}

fn ack(reason_string: &Option<String>, user: &[(String, String)]) -> ours::AckProperties {
    ours::AckProperties {
        reason_string: opt_text(reason_string),
        user_properties: users(user),
    }
}

macro_rules! ack_properties {
    ($props:expr) => {
        $props
            .as_ref()
            .map(|p| ack(&p.reason_string, &p.user_properties))
            .unwrap_or_default()
    };
}

fn bytes_text(value: &bytes::Bytes) -> ByteString {
    ByteString::try_from(value.clone()).expect("generated topics are UTF-8")
}

/// The oracle's reason enums carry no wire values; these tables give them.
fn code<T: PartialEq + std::fmt::Debug>(table: &[(T, u8)], value: &T) -> u8 {
    match table.iter().find(|(known, _)| known == value) {
        Some((_, code)) => *code,
        None => panic!("no wire value for {value:?}"),
    }
}

pub(super) fn connack_codes() -> Vec<(o::ConnectReturnCode, u8)> {
    use o::ConnectReturnCode as C;
    vec![
        (C::Success, 0x00),
        (C::UnspecifiedError, 0x80),
        (C::NotAuthorized, 0x87),
        (C::BadUserNamePassword, 0x86),
        (C::ServerBusy, 0x89),
        (C::QoSNotSupported, 0x9b),
    ]
}

pub(super) fn puback_codes() -> Vec<(o::PubAckReason, u8)> {
    use o::PubAckReason as R;
    vec![
        (R::Success, 0x00),
        (R::NoMatchingSubscribers, 0x10),
        (R::QuotaExceeded, 0x97),
    ]
}

pub(super) fn pubrec_codes() -> Vec<(o::PubRecReason, u8)> {
    use o::PubRecReason as R;
    vec![(R::Success, 0x00), (R::NotAuthorized, 0x87)]
}

pub(super) fn pubrel_codes() -> Vec<(o::PubRelReason, u8)> {
    use o::PubRelReason as R;
    vec![(R::Success, 0x00), (R::PacketIdentifierNotFound, 0x92)]
}

pub(super) fn pubcomp_codes() -> Vec<(o::PubCompReason, u8)> {
    use o::PubCompReason as R;
    vec![(R::Success, 0x00), (R::PacketIdentifierNotFound, 0x92)]
}

pub(super) fn suback_codes() -> Vec<(o::SubscribeReasonCode, u8)> {
    use o::SubscribeReasonCode as S;
    vec![
        (S::Success(QoS::AtMostOnce), 0x00),
        (S::Success(QoS::AtLeastOnce), 0x01),
        (S::Success(QoS::ExactlyOnce), 0x02),
        (S::NotAuthorized, 0x87),
        (S::TopicFilterInvalid, 0x8f),
    ]
}

pub(super) fn unsuback_codes() -> Vec<(o::UnsubAckReason, u8)> {
    use o::UnsubAckReason as U;
    vec![
        (U::Success, 0x00),
        (U::NoSubscriptionExisted, 0x11),
        (U::NotAuthorized, 0x87),
    ]
}

/// Picks one of the oracle's values from a table.
pub(super) fn pick<T: Clone + std::fmt::Debug + 'static>(
    table: Vec<(T, u8)>,
) -> impl Strategy<Value = T> {
    select(
        table
            .into_iter()
            .map(|(value, _)| value)
            .collect::<Vec<_>>(),
    )
}

fn to_ours(packet: &o::Packet) -> Packet {
    match packet {
        o::Packet::Connect(c, last_will, login) => Packet::Connect(Box::new(ours::Connect {
            protocol: V5,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            client_id: text(&c.client_id),
            will: last_will.as_ref().map(|w| {
                let p = w.properties.clone();
                ours::Will {
                    topic: bytes_text(&w.topic),
                    payload: w.message.clone(),
                    qos: qos(w.qos),
                    retain: w.retain,
                    properties: p
                        .map(|p| ours::WillProperties {
                            will_delay_interval: p.delay_interval,
                            payload_format_indicator: p.payload_format_indicator,
                            message_expiry_interval: p.message_expiry_interval,
                            content_type: opt_text(&p.content_type),
                            response_topic: opt_text(&p.response_topic),
                            correlation_data: p.correlation_data.clone(),
                            user_properties: users(&p.user_properties),
                        })
                        .unwrap_or_default(),
                }
            }),
            username: login
                .as_ref()
                .and_then(|l| (!l.username.is_empty()).then(|| text(&l.username))),
            password: login.as_ref().and_then(|l| {
                (!l.password.is_empty()).then(|| bytes::Bytes::from(l.password.clone()))
            }),
            properties: c
                .properties
                .as_ref()
                .map(|p| ours::ConnectProperties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_maximum,
                    maximum_packet_size: p.max_packet_size,
                    topic_alias_maximum: p.topic_alias_max,
                    request_response_information: p.request_response_info.map(|v| v == 1),
                    request_problem_information: p.request_problem_info.map(|v| v == 1),
                    user_properties: users(&p.user_properties),
                    authentication_method: opt_text(&p.authentication_method),
                    authentication_data: p.authentication_data.clone(),
                })
                .unwrap_or_default(),
        })),
        o::Packet::ConnAck(c) => Packet::ConnAck(ours::ConnAck {
            session_present: c.session_present,
            reason_code: code(&connack_codes(), &c.code),
            properties: c
                .properties
                .as_ref()
                .map(|p| ours::ConnAckProperties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_max,
                    maximum_qos: p.max_qos.and_then(ours::QoS::from_u8),
                    retain_available: p.retain_available.map(|v| v == 1),
                    maximum_packet_size: p.max_packet_size,
                    assigned_client_identifier: opt_text(&p.assigned_client_identifier),
                    topic_alias_maximum: p.topic_alias_max,
                    reason_string: opt_text(&p.reason_string),
                    user_properties: users(&p.user_properties),
                    wildcard_subscription_available: p
                        .wildcard_subscription_available
                        .map(|v| v == 1),
                    subscription_identifiers_available: p
                        .subscription_identifiers_available
                        .map(|v| v == 1),
                    shared_subscription_available: p.shared_subscription_available.map(|v| v == 1),
                    server_keep_alive: p.server_keep_alive,
                    response_information: opt_text(&p.response_information),
                    server_reference: opt_text(&p.server_reference),
                    authentication_method: opt_text(&p.authentication_method),
                    authentication_data: p.authentication_data.clone(),
                })
                .unwrap_or_default(),
        }),
        o::Packet::Publish(p) => Packet::Publish(ours::Publish {
            dup: p.dup,
            qos: qos(p.qos),
            retain: p.retain,
            topic: bytes_text(&p.topic),
            packet_id: p.pkid,
            properties: p
                .properties
                .as_ref()
                .map(|p| ours::PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: p.topic_alias,
                    response_topic: opt_text(&p.response_topic),
                    correlation_data: p.correlation_data.clone(),
                    user_properties: users(&p.user_properties),
                    subscription_identifiers: p
                        .subscription_identifiers
                        .iter()
                        .map(|id| *id as u32)
                        .collect(),
                    content_type: opt_text(&p.content_type),
                })
                .unwrap_or_default(),
            payload: p.payload.clone(),
        }),
        o::Packet::PubAck(p) => Packet::PubAck(response(
            p.pkid,
            code(&puback_codes(), &p.reason),
            ack_properties!(p.properties),
        )),
        o::Packet::PubRec(p) => Packet::PubRec(response(
            p.pkid,
            code(&pubrec_codes(), &p.reason),
            ack_properties!(p.properties),
        )),
        o::Packet::PubRel(p) => Packet::PubRel(response(
            p.pkid,
            code(&pubrel_codes(), &p.reason),
            ack_properties!(p.properties),
        )),
        o::Packet::PubComp(p) => Packet::PubComp(response(
            p.pkid,
            code(&pubcomp_codes(), &p.reason),
            ack_properties!(p.properties),
        )),
        o::Packet::Subscribe(s) => Packet::Subscribe(ours::Subscribe {
            packet_id: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| ours::SubscribeFilter {
                    filter: text(&f.path),
                    options: ours::SubscriptionOptions {
                        qos: qos(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            o::RetainForwardRule::OnEverySubscribe => {
                                ours::RetainHandling::SendAtSubscribe
                            }
                            o::RetainForwardRule::OnNewSubscribe => ours::RetainHandling::SendIfNew,
                            o::RetainForwardRule::Never => ours::RetainHandling::DoNotSend,
                        },
                    },
                })
                .collect(),
            subscription_identifier: s.properties.as_ref().and_then(|p| p.id.map(|id| id as u32)),
            user_properties: s
                .properties
                .as_ref()
                .map(|p| users(&p.user_properties))
                .unwrap_or_default(),
        }),
        o::Packet::SubAck(s) => Packet::SubAck(ours::SubAck {
            packet_id: s.pkid,
            reason_codes: s
                .return_codes
                .iter()
                .map(|c| code(&suback_codes(), c))
                .collect(),
            properties: ack_properties!(s.properties),
        }),
        o::Packet::Unsubscribe(u) => Packet::Unsubscribe(ours::Unsubscribe {
            packet_id: u.pkid,
            filters: u.filters.iter().map(|f| text(f)).collect(),
            user_properties: u
                .properties
                .as_ref()
                .map(|p| users(&p.user_properties))
                .unwrap_or_default(),
        }),
        o::Packet::UnsubAck(u) => Packet::UnsubAck(ours::UnsubAck {
            packet_id: u.pkid,
            reason_codes: u
                .reasons
                .iter()
                .map(|c| code(&unsuback_codes(), c))
                .collect(),
            properties: ack_properties!(u.properties),
        }),
        o::Packet::PingReq(_) => Packet::PingReq,
        o::Packet::PingResp(_) => Packet::PingResp,
        // Never generated: rumqttc does not export AUTH's reason code and property types.
        o::Packet::Auth(auth) => panic!("unexpected {auth:?}"),
        o::Packet::Disconnect(d) => Packet::Disconnect(ours::Disconnect {
            reason_code: d.reason_code as u8,
            properties: d
                .properties
                .as_ref()
                .map(|p| ours::DisconnectProperties {
                    session_expiry_interval: p.session_expiry_interval,
                    reason_string: opt_text(&p.reason_string),
                    user_properties: users(&p.user_properties),
                    server_reference: opt_text(&p.server_reference),
                })
                .unwrap_or_default(),
        }),
    }
}

fn response(packet_id: u16, reason_code: u8, properties: ours::AckProperties) -> ours::PubResponse {
    ours::PubResponse {
        packet_id,
        reason_code,
        properties,
    }
}

fn write(packet: &o::Packet) -> BytesMut {
    let mut out = BytesMut::new();
    packet.write(&mut out, None).expect("rumqttc writes");
    out
}

fn check(packet: o::Packet) {
    let expected = to_ours(&packet);
    let theirs = write(&packet);
    assert_eq!(
        ours_decode(&theirs, V5),
        expected,
        "their bytes {theirs:02x?}"
    );
    let mut mine = ours_encode(&expected, V5);
    let back = o::Packet::read(&mut mine, None).expect("rumqttc reads our bytes");
    assert_eq!(to_ours(&back), expected);
}

use super::v5_rumqttc_strategies::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_packets(packet in prop_oneof![
        connect().boxed(),
        connack().boxed(),
        publish().boxed(),
        acks().boxed(),
        subscriptions().boxed(),
        control().boxed(),
    ]) {
        check(packet);
    }
}
