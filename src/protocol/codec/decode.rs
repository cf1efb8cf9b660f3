//! Decoding of packet bodies, once framing has isolated one whole packet.
//!
//! Each function receives the fixed-header flags and a reader over exactly the remaining
//! length, and must consume all of it: leftover bytes are Malformed.

use super::properties as props;
use super::reader::{Reader, Result};
use super::DecodeError;
use crate::protocol::packet::*;
use crate::protocol::reason::*;

const fn malformed(rule: &'static str) -> DecodeError {
    DecodeError::Malformed(rule)
}

const fn protocol(rule: &'static str) -> DecodeError {
    DecodeError::Protocol(rule)
}

/// A packet identifier that must be non-zero (spec 2.2.1).
fn packet_id(r: &mut Reader) -> Result<u16> {
    match r.u16()? {
        0 => Err(protocol("[MQTT-2.2.1-3] packet identifier 0")),
        id => Ok(id),
    }
}

fn qos(bits: u8, rule: &'static str) -> Result<QoS> {
    QoS::from_u8(bits).ok_or(malformed(rule))
}

pub(crate) fn connect(r: &mut Reader) -> Result<Connect> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol_version = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        // A known name at another level is answered with CONNACK 0x01 [MQTT-3.1.2-2];
        // any other name is not MQTT at all and is closed without one [MQTT-3.1.2-1].
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocol),
        _ => {
            return Err(protocol(
                "[MQTT-3.1.2-1] protocol name is neither MQTT nor MQIsdp",
            ))
        }
    };
    let v5 = protocol_version.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(malformed("[MQTT-3.1.2-3] reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = qos((flags >> 3) & 0x03, "[MQTT-3.1.2-14] will QoS 3")?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && will_qos != QoS::AtMostOnce {
        return Err(malformed(
            "[MQTT-3.1.2-13] will QoS set without the will flag",
        ));
    }
    if !will_flag && will_retain {
        return Err(malformed(
            "[MQTT-3.1.2-15] will retain set without the will flag",
        ));
    }
    if !v5 && has_password && !has_username {
        return Err(malformed(
            "[MQTT-3.1.2-22] password flag set without the user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        props::read_connect(r)?
    } else {
        ConnectProperties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            props::read_will(r)?
        } else {
            WillProperties::default()
        };
        Some(Will {
            topic: r.string()?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol: protocol_version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

pub(crate) fn connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck> {
    let flags = r.u8()?;
    let code = r.u8()?;
    if version.is_v5() {
        if flags & 0xfe != 0 {
            return Err(malformed("[MQTT-3.2.2-1] reserved CONNACK flag set"));
        }
        if !CONNACK_CODES.contains(&code) {
            return Err(protocol("[MQTT-3.2.2.2] invalid CONNACK reason code"));
        }
        // A 3.x server refusing a 5.0 client answers with a two-byte CONNACK; accept the
        // missing property block rather than misreport the refusal as malformed.
        let properties = if r.is_empty() {
            ConnAckProperties::default()
        } else {
            props::read_connack(r)?
        };
        r.finish()?;
        return Ok(ConnAck {
            session_present: flags & 0x01 != 0,
            reason_code: code,
            properties,
        });
    }
    r.finish()?;
    // MQTT 3.1 has no session present flag: its first byte is reserved and ignored.
    let session_present = version == ProtocolVersion::V3_1_1 && flags & 0x01 != 0;
    if version == ProtocolVersion::V3_1_1 && flags & 0xfe != 0 {
        return Err(malformed("[MQTT-3.2.2-1] reserved CONNACK flag set"));
    }
    let reason_code = match code {
        0 => SUCCESS,
        1 => UNSUPPORTED_PROTOCOL_VERSION,
        2 => CLIENT_IDENTIFIER_NOT_VALID,
        3 => SERVER_UNAVAILABLE,
        4 => BAD_USER_NAME_OR_PASSWORD,
        5 => NOT_AUTHORIZED,
        _ => return Err(protocol("[MQTT-3.2.2.3] invalid CONNACK return code")),
    };
    Ok(ConnAck {
        session_present,
        reason_code,
        properties: ConnAckProperties::default(),
    })
}

pub(crate) fn publish(r: &mut Reader, flags: u8, version: ProtocolVersion) -> Result<Publish> {
    let dup = flags & 0x08 != 0;
    let qos = qos((flags >> 1) & 0x03, "[MQTT-3.3.1-4] PUBLISH QoS 3")?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(malformed("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r)?
    };
    let properties = if version.is_v5() {
        props::read_publish(r)?
    } else {
        PublishProperties::default()
    };
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP, including the MQTT 5 short forms (a remaining
/// length of 2 means success without properties, 3 a reason code without properties).
pub(crate) fn pub_response(
    r: &mut Reader,
    version: ProtocolVersion,
    valid_codes: &[u8],
) -> Result<PubResponse> {
    let packet_id = packet_id(r)?;
    let mut response = PubResponse {
        packet_id,
        ..PubResponse::default()
    };
    if version.is_v5() && !r.is_empty() {
        response.reason_code = r.u8()?;
        if !valid_codes.contains(&response.reason_code) {
            return Err(protocol(
                "[MQTT-3.4.2.1] invalid acknowledgement reason code",
            ));
        }
        if !r.is_empty() {
            response.properties = props::read_ack(r)?;
        }
    }
    r.finish()?;
    Ok(response)
}

fn subscription_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions> {
    if !version.is_v5() {
        if byte & 0xfc != 0 {
            return Err(malformed(
                "[MQTT-3.8.3-4] reserved bits set in requested QoS",
            ));
        }
        return Ok(SubscriptionOptions {
            qos: qos(byte, "[MQTT-3.8.3-4] requested QoS 3")?,
            ..SubscriptionOptions::default()
        });
    }
    if byte & 0xc0 != 0 {
        return Err(malformed(
            "[MQTT-3.8.3-5] reserved subscription option bits set",
        ));
    }
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(protocol("[MQTT-3.8.3.1] retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos: qos(byte & 0x03, "[MQTT-3.8.3.1] maximum QoS 3")?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

pub(crate) fn subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe> {
    let packet_id = packet_id(r)?;
    let (subscription_identifier, user_properties) = if version.is_v5() {
        props::read_subscribe(r)?
    } else {
        (None, Vec::new())
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, version)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(protocol("[MQTT-3.8.3-3] SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        subscription_identifier,
        user_properties,
    })
}

pub(crate) fn suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck> {
    let packet_id = packet_id(r)?;
    let properties = if version.is_v5() {
        props::read_ack(r)?
    } else {
        AckProperties::default()
    };
    let reason_codes = r.rest().to_vec();
    let valid: &[u8] = if version.is_v5() {
        SUBACK_CODES
    } else {
        &[0x00, 0x01, 0x02, 0x80]
    };
    if reason_codes.iter().any(|code| !valid.contains(code)) {
        return Err(protocol("[MQTT-3.9.3] invalid SUBACK reason code"));
    }
    if reason_codes.is_empty() {
        return Err(protocol("[MQTT-3.9.3] SUBACK without reason codes"));
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

pub(crate) fn unsubscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe> {
    let packet_id = packet_id(r)?;
    let user_properties = if version.is_v5() {
        props::read_unsubscribe(r)?
    } else {
        Vec::new()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(protocol(
            "[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

pub(crate) fn unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck> {
    let packet_id = packet_id(r)?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            ..UnsubAck::default()
        });
    }
    let properties = props::read_ack(r)?;
    let reason_codes = r.rest().to_vec();
    if reason_codes
        .iter()
        .any(|code| !UNSUBACK_CODES.contains(code))
    {
        return Err(protocol("[MQTT-3.11.3] invalid UNSUBACK reason code"));
    }
    if reason_codes.is_empty() {
        return Err(protocol("[MQTT-3.11.3] UNSUBACK without reason codes"));
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// DISCONNECT: empty for 3.x; for MQTT 5 a remaining length of 0 is a normal
/// disconnection and 1 a reason code without properties.
pub(crate) fn disconnect(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect> {
    let mut disconnect = Disconnect::default();
    if !version.is_v5() {
        if !r.is_empty() {
            return Err(malformed("[MQTT-3.14.1] DISCONNECT with a body"));
        }
        return Ok(disconnect);
    }
    if !r.is_empty() {
        disconnect.reason_code = r.u8()?;
        if !DISCONNECT_CODES.contains(&disconnect.reason_code) {
            return Err(protocol("[MQTT-3.14.2.1] invalid DISCONNECT reason code"));
        }
        if !r.is_empty() {
            disconnect.properties = props::read_disconnect(r)?;
        }
    }
    r.finish()?;
    Ok(disconnect)
}

/// AUTH (MQTT 5 only): a remaining length of 0 means success without properties.
pub(crate) fn auth(r: &mut Reader, version: ProtocolVersion) -> Result<Auth> {
    if !version.is_v5() {
        return Err(malformed(
            "[MQTT-2.1.2] AUTH is not a packet type of MQTT 3",
        ));
    }
    let mut auth = Auth::default();
    if !r.is_empty() {
        auth.reason_code = r.u8()?;
        if !AUTH_CODES.contains(&auth.reason_code) {
            return Err(protocol("[MQTT-3.15.2.1] invalid AUTH reason code"));
        }
        if !r.is_empty() {
            auth.properties = props::read_auth(r)?;
        }
    }
    r.finish()?;
    Ok(auth)
}

pub(crate) fn empty(r: &mut Reader, packet: Packet) -> Result<Packet> {
    if !r.is_empty() {
        return Err(malformed("[MQTT-3.12.1] PINGREQ or PINGRESP with a body"));
    }
    Ok(packet)
}

/// Reason codes allowed in an MQTT 5 CONNACK (spec 3.2.2.2).
pub(crate) const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// PUBACK and PUBREC (spec 3.4.2.1, 3.5.2.1).
pub(crate) const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// PUBREL and PUBCOMP (spec 3.6.2.1, 3.7.2.1).
pub(crate) const PUBREL_CODES: &[u8] = &[0x00, 0x92];
pub(crate) const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
pub(crate) const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
pub(crate) const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
pub(crate) const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];
