//! MQTT 5 properties (spec 2.2.2 and the property tables of chapter 3): the per-packet
//! sets of allowed identifiers, their value types, and the rules on repetition and range.
//!
//! An unknown identifier or one not allowed in the packet is Malformed; a second copy of
//! a single-valued property and an out-of-range value are Protocol Errors.

use bytestring::ByteString;

use super::reader::{Reader, Result};
use super::sink::{Counter, Sink};
use super::DecodeError;
use crate::protocol::packet::*;

pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

const KNOWN: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];

/// Reads a property block (length, then identifier/value pairs) and hands each
/// identifier with a reader positioned on its value to `visit`.
fn read_block(r: &mut Reader, mut visit: impl FnMut(u8, &mut Reader) -> Result<()>) -> Result<()> {
    let len = r.varint()?;
    let mut block = r.sub(len as usize)?;
    while !block.is_empty() {
        let id = block.varint()?;
        let id = u8::try_from(id)
            .map_err(|_| DecodeError::Malformed("[MQTT-2.2.2] unknown property identifier"))?;
        visit(id, &mut block)?;
    }
    Ok(())
}

fn not_allowed(id: u8) -> Result<()> {
    if KNOWN.contains(&id) {
        Err(DecodeError::Malformed(
            "[MQTT-2.2.2] property not allowed in this packet type",
        ))
    } else {
        Err(DecodeError::Malformed(
            "[MQTT-2.2.2] unknown property identifier",
        ))
    }
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(
            "[MQTT-2.2.2] property included more than once",
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn boolean(r: &mut Reader) -> Result<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol(
            "[MQTT-3] boolean property value other than 0 or 1",
        )),
    }
}

fn nonzero_u16(r: &mut Reader, rule: &'static str) -> Result<u16> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(rule)),
        value => Ok(value),
    }
}

fn payload_format(r: &mut Reader) -> Result<u8> {
    match r.u8()? {
        value @ (0 | 1) => Ok(value),
        _ => Err(DecodeError::Protocol(
            "[MQTT-3.3.2.3.2] payload format indicator above 1",
        )),
    }
}

fn subscription_identifier(r: &mut Reader) -> Result<u32> {
    match r.varint()? {
        0 => Err(DecodeError::Protocol(
            "[MQTT-3.3.2.3.8] subscription identifier 0",
        )),
        value => Ok(value),
    }
}

fn maximum_packet_size(r: &mut Reader) -> Result<u32> {
    match r.u32()? {
        0 => Err(DecodeError::Protocol(
            "[MQTT-3.1.2.11.4] maximum packet size 0",
        )),
        value => Ok(value),
    }
}

fn push<T>(list: &mut Vec<T>, value: T) -> Result<()> {
    list.push(value);
    Ok(())
}

fn user_property(r: &mut Reader) -> Result<UserProperty> {
    Ok((r.string()?, r.string()?))
}

pub(crate) fn read_connect(r: &mut Reader) -> Result<ConnectProperties> {
    let mut p = ConnectProperties::default();
    read_block(r, |id, v| match id {
        SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, v.u32()?),
        RECEIVE_MAXIMUM => once(
            &mut p.receive_maximum,
            nonzero_u16(v, "[MQTT-3.1.2.11.3] receive maximum 0")?,
        ),
        MAXIMUM_PACKET_SIZE => once(&mut p.maximum_packet_size, maximum_packet_size(v)?),
        TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, v.u16()?),
        REQUEST_RESPONSE_INFORMATION => once(&mut p.request_response_information, boolean(v)?),
        REQUEST_PROBLEM_INFORMATION => once(&mut p.request_problem_information, boolean(v)?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        AUTHENTICATION_METHOD => once(&mut p.authentication_method, v.string()?),
        AUTHENTICATION_DATA => once(&mut p.authentication_data, v.binary()?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

pub(crate) fn read_will(r: &mut Reader) -> Result<WillProperties> {
    let mut p = WillProperties::default();
    read_block(r, |id, v| match id {
        WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, v.u32()?),
        PAYLOAD_FORMAT_INDICATOR => once(&mut p.payload_format_indicator, payload_format(v)?),
        MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, v.u32()?),
        CONTENT_TYPE => once(&mut p.content_type, v.string()?),
        RESPONSE_TOPIC => once(&mut p.response_topic, v.string()?),
        CORRELATION_DATA => once(&mut p.correlation_data, v.binary()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

pub(crate) fn read_connack(r: &mut Reader) -> Result<ConnAckProperties> {
    let mut p = ConnAckProperties::default();
    read_block(r, |id, v| match id {
        SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, v.u32()?),
        RECEIVE_MAXIMUM => once(
            &mut p.receive_maximum,
            nonzero_u16(v, "[MQTT-3.2.2.3.3] receive maximum 0")?,
        ),
        MAXIMUM_QOS => {
            let qos = match v.u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => {
                    return Err(DecodeError::Protocol(
                        "[MQTT-3.2.2.3.4] maximum QoS above 1",
                    ))
                }
            };
            once(&mut p.maximum_qos, qos)
        }
        RETAIN_AVAILABLE => once(&mut p.retain_available, boolean(v)?),
        MAXIMUM_PACKET_SIZE => once(&mut p.maximum_packet_size, maximum_packet_size(v)?),
        ASSIGNED_CLIENT_IDENTIFIER => once(&mut p.assigned_client_identifier, v.string()?),
        TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, v.u16()?),
        REASON_STRING => once(&mut p.reason_string, v.string()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            once(&mut p.wildcard_subscription_available, boolean(v)?)
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            once(&mut p.subscription_identifiers_available, boolean(v)?)
        }
        SHARED_SUBSCRIPTION_AVAILABLE => once(&mut p.shared_subscription_available, boolean(v)?),
        SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, v.u16()?),
        RESPONSE_INFORMATION => once(&mut p.response_information, v.string()?),
        SERVER_REFERENCE => once(&mut p.server_reference, v.string()?),
        AUTHENTICATION_METHOD => once(&mut p.authentication_method, v.string()?),
        AUTHENTICATION_DATA => once(&mut p.authentication_data, v.binary()?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

pub(crate) fn read_publish(r: &mut Reader) -> Result<PublishProperties> {
    let mut p = PublishProperties::default();
    read_block(r, |id, v| match id {
        PAYLOAD_FORMAT_INDICATOR => once(&mut p.payload_format_indicator, payload_format(v)?),
        MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, v.u32()?),
        TOPIC_ALIAS => once(
            &mut p.topic_alias,
            nonzero_u16(v, "[MQTT-3.3.2-8] topic alias 0")?,
        ),
        RESPONSE_TOPIC => once(&mut p.response_topic, v.string()?),
        CORRELATION_DATA => once(&mut p.correlation_data, v.binary()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        SUBSCRIPTION_IDENTIFIER => {
            push(&mut p.subscription_identifiers, subscription_identifier(v)?)
        }
        CONTENT_TYPE => once(&mut p.content_type, v.string()?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
pub(crate) fn read_ack(r: &mut Reader) -> Result<AckProperties> {
    let mut p = AckProperties::default();
    read_block(r, |id, v| match id {
        REASON_STRING => once(&mut p.reason_string, v.string()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

/// SUBSCRIBE: the optional subscription identifier and user properties.
pub(crate) fn read_subscribe(r: &mut Reader) -> Result<(Option<u32>, Vec<UserProperty>)> {
    let mut identifier = None;
    let mut user = Vec::new();
    read_block(r, |id, v| match id {
        SUBSCRIPTION_IDENTIFIER => once(&mut identifier, subscription_identifier(v)?),
        USER_PROPERTY => push(&mut user, user_property(v)?),
        other => not_allowed(other),
    })?;
    Ok((identifier, user))
}

/// UNSUBSCRIBE: user properties only.
pub(crate) fn read_unsubscribe(r: &mut Reader) -> Result<Vec<UserProperty>> {
    let mut user = Vec::new();
    read_block(r, |id, v| match id {
        USER_PROPERTY => push(&mut user, user_property(v)?),
        other => not_allowed(other),
    })?;
    Ok(user)
}

pub(crate) fn read_disconnect(r: &mut Reader) -> Result<DisconnectProperties> {
    let mut p = DisconnectProperties::default();
    read_block(r, |id, v| match id {
        SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, v.u32()?),
        REASON_STRING => once(&mut p.reason_string, v.string()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        SERVER_REFERENCE => once(&mut p.server_reference, v.string()?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

pub(crate) fn read_auth(r: &mut Reader) -> Result<AuthProperties> {
    let mut p = AuthProperties::default();
    read_block(r, |id, v| match id {
        AUTHENTICATION_METHOD => once(&mut p.authentication_method, v.string()?),
        AUTHENTICATION_DATA => once(&mut p.authentication_data, v.binary()?),
        REASON_STRING => once(&mut p.reason_string, v.string()?),
        USER_PROPERTY => push(&mut p.user_properties, user_property(v)?),
        other => not_allowed(other),
    })?;
    Ok(p)
}

/// A set of properties that can write itself as identifier/value pairs.
pub(crate) trait WriteProperties {
    fn write<S: Sink>(&self, s: &mut S);
}

/// Writes the property length and then the properties.
pub(crate) fn write_block<S: Sink, P: WriteProperties + ?Sized>(s: &mut S, properties: &P) {
    let mut counter = Counter::default();
    properties.write(&mut counter);
    s.varint(u32::try_from(counter.0).unwrap_or(u32::MAX));
    properties.write(s);
}

fn put_u8<S: Sink>(s: &mut S, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        s.u8(id);
        s.u8(value);
    }
}

fn put_bool<S: Sink>(s: &mut S, id: u8, value: Option<bool>) {
    put_u8(s, id, value.map(u8::from));
}

fn put_u16<S: Sink>(s: &mut S, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        s.u8(id);
        s.u16(value);
    }
}

fn put_u32<S: Sink>(s: &mut S, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        s.u8(id);
        s.u32(value);
    }
}

fn put_str<S: Sink>(s: &mut S, id: u8, value: &Option<ByteString>) {
    if let Some(value) = value {
        s.u8(id);
        s.string(value);
    }
}

fn put_bin<S: Sink>(s: &mut S, id: u8, value: &Option<bytes::Bytes>) {
    if let Some(value) = value {
        s.u8(id);
        s.binary(value);
    }
}

fn put_user<S: Sink>(s: &mut S, user: &[UserProperty]) {
    for (name, value) in user {
        s.u8(USER_PROPERTY);
        s.string(name);
        s.string(value);
    }
}

impl WriteProperties for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_bool(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_bool(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_user(s, &self.user_properties);
        put_str(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_bin(s, AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl WriteProperties for WillProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_u8(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_str(s, CONTENT_TYPE, &self.content_type);
        put_str(s, RESPONSE_TOPIC, &self.response_topic);
        put_bin(s, CORRELATION_DATA, &self.correlation_data);
        put_user(s, &self.user_properties);
    }
}

impl WriteProperties for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u8(s, MAXIMUM_QOS, self.maximum_qos.map(|qos| qos as u8));
        put_bool(s, RETAIN_AVAILABLE, self.retain_available);
        put_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_str(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        put_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_str(s, REASON_STRING, &self.reason_string);
        put_user(s, &self.user_properties);
        put_bool(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_bool(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_bool(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_str(s, RESPONSE_INFORMATION, &self.response_information);
        put_str(s, SERVER_REFERENCE, &self.server_reference);
        put_str(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_bin(s, AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl WriteProperties for PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u8(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_u16(s, TOPIC_ALIAS, self.topic_alias);
        put_str(s, RESPONSE_TOPIC, &self.response_topic);
        put_bin(s, CORRELATION_DATA, &self.correlation_data);
        put_user(s, &self.user_properties);
        for identifier in &self.subscription_identifiers {
            s.u8(SUBSCRIPTION_IDENTIFIER);
            s.varint(*identifier);
        }
        put_str(s, CONTENT_TYPE, &self.content_type);
    }
}

impl WriteProperties for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_str(s, REASON_STRING, &self.reason_string);
        put_user(s, &self.user_properties);
    }
}

impl WriteProperties for DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_str(s, REASON_STRING, &self.reason_string);
        put_user(s, &self.user_properties);
        put_str(s, SERVER_REFERENCE, &self.server_reference);
    }
}

impl WriteProperties for AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        put_str(s, AUTHENTICATION_METHOD, &self.authentication_method);
        put_bin(s, AUTHENTICATION_DATA, &self.authentication_data);
        put_str(s, REASON_STRING, &self.reason_string);
        put_user(s, &self.user_properties);
    }
}

/// SUBSCRIBE's properties live on the packet itself.
impl WriteProperties for Subscribe {
    fn write<S: Sink>(&self, s: &mut S) {
        if let Some(identifier) = self.subscription_identifier {
            s.u8(SUBSCRIPTION_IDENTIFIER);
            s.varint(identifier);
        }
        put_user(s, &self.user_properties);
    }
}

/// UNSUBSCRIBE carries user properties only.
impl WriteProperties for [UserProperty] {
    fn write<S: Sink>(&self, s: &mut S) {
        put_user(s, self);
    }
}
