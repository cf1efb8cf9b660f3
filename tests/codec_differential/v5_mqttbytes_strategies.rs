//! Strategies for random `mqttbytes::v5` packets with valid field values.

use super::*;
use mqttbytes::v5 as o;
use mqttbytes::QoS;
use proptest::option::of;
use proptest::sample::select;

pub(super) fn oracle_qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

pub(super) fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

pub(super) fn flag() -> impl Strategy<Value = Option<u8>> {
    of(0..=1u8)
}

pub(super) fn connect() -> impl Strategy<Value = o::Packet> {
    let will_properties = (
        (of(any::<u32>()), flag(), of(any::<u32>()), of(any_text())),
        (of(any_text()), of(any_bytes()), user_list()),
    )
        .prop_map(
            |((delay, format, expiry, content), (response, correlation, user))| o::WillProperties {
                delay_interval: delay,
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
            },
        );
    let will = (
        any_text(),
        any_bytes(),
        oracle_qos(),
        any::<bool>(),
        of(will_properties),
    )
        .prop_map(|(topic, message, qos, retain, properties)| o::LastWill {
            topic,
            message,
            qos,
            retain,
            properties,
        });
    let properties = (
        (
            of(any::<u32>()),
            of(1..=u16::MAX),
            of(1..=u32::MAX),
            of(any::<u16>()),
        ),
        (flag(), flag(), user_list(), of(any_text()), of(any_bytes())),
    )
        .prop_map(
            |((expiry, receive, size, alias), (response, problem, user, method, data))| {
                o::ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive,
                    max_packet_size: size,
                    topic_alias_max: alias,
                    request_response_info: response,
                    request_problem_info: problem,
                    user_properties: user,
                    authentication_method: method,
                    authentication_data: data,
                }
            },
        );
    let login = (nonempty_text(), any_text())
        .prop_map(|(username, password)| o::Login { username, password });
    (
        (any::<u16>(), any_text(), any::<bool>()),
        (of(will), of(login), of(properties)),
    )
        .prop_map(
            |((keep_alive, client_id, clean_session), (last_will, login, properties))| {
                o::Packet::Connect(o::Connect {
                    protocol: mqttbytes::Protocol::V5,
                    keep_alive,
                    client_id,
                    clean_session,
                    last_will,
                    login,
                    properties,
                })
            },
        )
}

pub(super) fn connack() -> impl Strategy<Value = o::Packet> {
    use o::ConnectReturnCode as C;
    let code = select(vec![
        C::Success,
        C::UnspecifiedError,
        C::NotAuthorized,
        C::BadUserNamePassword,
        C::ServerBusy,
        C::QoSNotSupported,
    ]);
    let properties = (
        (
            of(any::<u32>()),
            of(1..=u16::MAX),
            flag(),
            flag(),
            of(1..=u32::MAX),
        ),
        (
            of(any_text()),
            of(any::<u16>()),
            of(any_text()),
            user_list(),
        ),
        (flag(), flag(), flag(), of(any::<u16>())),
        (
            of(any_text()),
            of(any_text()),
            of(any_text()),
            of(any_bytes()),
        ),
    )
        .prop_map(|(a, b, c, d)| o::ConnAckProperties {
            session_expiry_interval: a.0,
            receive_max: a.1,
            max_qos: a.2,
            retain_available: a.3,
            max_packet_size: a.4,
            assigned_client_identifier: b.0,
            topic_alias_max: b.1,
            reason_string: b.2,
            user_properties: b.3,
            wildcard_subscription_available: c.0,
            subscription_identifiers_available: c.1,
            shared_subscription_available: c.2,
            server_keep_alive: c.3,
            response_information: d.0,
            server_reference: d.1,
            authentication_method: d.2,
            authentication_data: d.3,
        });
    (any::<bool>(), code, of(properties)).prop_map(|(session_present, code, properties)| {
        o::Packet::ConnAck(o::ConnAck {
            session_present,
            code,
            properties,
        })
    })
}

pub(super) fn publish() -> impl Strategy<Value = o::Packet> {
    let properties = (
        (flag(), of(any::<u32>()), of(1..=u16::MAX), of(any_text())),
        (
            of(any_bytes()),
            user_list(),
            proptest::collection::vec(1..=268_435_455usize, 0..3),
        ),
        of(any_text()),
    )
        .prop_map(
            |((format, expiry, alias, response), (correlation, user, ids), content)| {
                o::PublishProperties {
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
        (
            oracle_qos(),
            any::<bool>(),
            any::<bool>(),
            any_text(),
            pkid(),
        ),
        (of(properties), any_bytes()),
    )
        .prop_map(|((qos, dup, retain, topic, pkid), (properties, payload))| {
            let qos0 = qos == QoS::AtMostOnce;
            o::Packet::Publish(o::Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                pkid: if qos0 { 0 } else { pkid },
                properties,
                payload,
            })
        })
}

pub(super) fn acks() -> impl Strategy<Value = o::Packet> {
    let reason_string = || of(any_text());
    let puback = (
        pkid(),
        select(vec![
            o::PubAckReason::Success,
            o::PubAckReason::NoMatchingSubscribers,
            o::PubAckReason::QuotaExceeded,
        ]),
        of((reason_string(), user_list())),
    )
        .prop_map(|(pkid, reason, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::PubAckProperties {
                reason_string,
                user_properties,
            });
            o::Packet::PubAck(o::PubAck {
                pkid,
                reason,
                properties,
            })
        });
    let pubrec = (
        pkid(),
        select(vec![
            o::PubRecReason::Success,
            o::PubRecReason::NotAuthorized,
        ]),
        of((reason_string(), user_list())),
    )
        .prop_map(|(pkid, reason, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::PubRecProperties {
                reason_string,
                user_properties,
            });
            o::Packet::PubRec(o::PubRec {
                pkid,
                reason,
                properties,
            })
        });
    let pubrel = (
        pkid(),
        select(vec![
            o::PubRelReason::Success,
            o::PubRelReason::PacketIdentifierNotFound,
        ]),
        of((reason_string(), user_list())),
    )
        .prop_map(|(pkid, reason, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::PubRelProperties {
                reason_string,
                user_properties,
            });
            o::Packet::PubRel(o::PubRel {
                pkid,
                reason,
                properties,
            })
        });
    let pubcomp = (
        pkid(),
        select(vec![
            o::PubCompReason::Success,
            o::PubCompReason::PacketIdentifierNotFound,
        ]),
        of((reason_string(), user_list())),
    )
        .prop_map(|(pkid, reason, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::PubCompProperties {
                reason_string,
                user_properties,
            });
            o::Packet::PubComp(o::PubComp {
                pkid,
                reason,
                properties,
            })
        });
    prop_oneof![puback, pubrec, pubrel, pubcomp]
}

pub(super) fn subscriptions() -> impl Strategy<Value = o::Packet> {
    use o::RetainForwardRule as R;
    let rule = select(vec![R::OnEverySubscribe, R::OnNewSubscribe, R::Never]);
    let filter = (any_text(), oracle_qos(), any::<bool>(), any::<bool>(), rule).prop_map(
        |(path, qos, nolocal, preserve_retain, retain_forward_rule)| o::SubscribeFilter {
            path,
            qos,
            nolocal,
            preserve_retain,
            retain_forward_rule,
        },
    );
    let sub_properties =
        (of(1..=268_435_455usize), user_list()).prop_map(|(id, user_properties)| {
            o::SubscribeProperties {
                id,
                user_properties,
            }
        });
    let subscribe = (
        pkid(),
        proptest::collection::vec(filter, 1..4),
        of(sub_properties),
    )
        .prop_map(|(pkid, filters, properties)| {
            o::Packet::Subscribe(o::Subscribe {
                pkid,
                filters,
                properties,
            })
        });
    use o::SubscribeReasonCode as S;
    let code = select(vec![
        S::QoS0,
        S::QoS1,
        S::QoS2,
        S::NotAuthorized,
        S::TopicFilterInvalid,
    ]);
    let suback = (
        pkid(),
        proptest::collection::vec(code, 1..4),
        of((of(any_text()), user_list())),
    )
        .prop_map(|(pkid, return_codes, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::SubAckProperties {
                reason_string,
                user_properties,
            });
            o::Packet::SubAck(o::SubAck {
                pkid,
                return_codes,
                properties,
            })
        });
    let unsubscribe = (
        pkid(),
        proptest::collection::vec(any_text(), 1..4),
        of(user_list()),
    )
        .prop_map(|(pkid, filters, user)| {
            let properties =
                user.map(|user_properties| o::UnsubscribeProperties { user_properties });
            o::Packet::Unsubscribe(o::Unsubscribe {
                pkid,
                filters,
                properties,
            })
        });
    use o::UnsubAckReason as U;
    let reason = select(vec![U::Success, U::NoSubscriptionExisted, U::NotAuthorized]);
    let unsuback = (
        pkid(),
        proptest::collection::vec(reason, 1..4),
        of((of(any_text()), user_list())),
    )
        .prop_map(|(pkid, reasons, p)| {
            let properties = p.map(|(reason_string, user_properties)| o::UnsubAckProperties {
                reason_string,
                user_properties,
            });
            o::Packet::UnsubAck(o::UnsubAck {
                pkid,
                reasons,
                properties,
            })
        });
    prop_oneof![subscribe, suback, unsubscribe, unsuback]
}

pub(super) fn control() -> impl Strategy<Value = o::Packet> {
    use o::DisconnectReasonCode as D;
    let code = select(vec![
        D::NormalDisconnection,
        D::ServerShuttingDown,
        D::SessionTakenOver,
    ]);
    // Only the full form: the oracle cannot read the short ones.
    let properties = (
        of(any::<u32>()),
        of(any_text()),
        user_list(),
        of(any_text()),
    )
        .prop_map(
            |(session_expiry_interval, reason_string, user_properties, server_reference)| {
                o::DisconnectProperties {
                    session_expiry_interval,
                    reason_string,
                    user_properties,
                    server_reference,
                }
            },
        );
    let disconnect = (code, properties)
        .prop_filter("the short forms are out of the oracle's reach", |(_, p)| {
            p.session_expiry_interval.is_some()
                || p.reason_string.is_some()
                || p.server_reference.is_some()
                || !p.user_properties.is_empty()
        })
        .prop_map(|(reason_code, properties)| {
            o::Packet::Disconnect(o::Disconnect {
                reason_code,
                properties: Some(properties),
            })
        });
    prop_oneof![
        Just(o::Packet::PingReq),
        Just(o::Packet::PingResp),
        disconnect
    ]
}
