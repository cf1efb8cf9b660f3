//! Packet layouts for the encoder: the first header byte and the body of every packet,
//! written once against `Sink` so the same code measures and writes.
//!
//! MQTT 3.x drops everything MQTT 5 added (properties, ack reason codes) and maps reason
//! codes down where 3.x has an equivalent. MQTT 5 acks use the short forms whenever the
//! reason code is success and there are no properties, as mosquitto does.

use super::properties::{write_block, WriteProperties};
use super::sink::Sink;
use crate::protocol::packet::*;
use crate::protocol::reason;

/// The fields of a PUBLISH as the encoder reads them, borrowed from wherever they live:
/// a `Publish`, or a message on its way to a subscriber, which is then written without
/// building a `Publish` for it. Both go through `publish_body`, so they encode alike.
#[derive(Debug, Clone, Copy)]
pub struct PublishParts<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    /// Written for QoS 1 and 2 only.
    pub packet_id: u16,
    /// MQTT 5 only; `None` stands for no properties (an empty property block).
    pub properties: Option<&'a PublishProperties>,
    pub payload: &'a [u8],
}

impl<'a> PublishParts<'a> {
    pub fn of(publish: &'a Publish) -> PublishParts<'a> {
        PublishParts {
            dup: publish.dup,
            qos: publish.qos,
            retain: publish.retain,
            topic: &publish.topic,
            packet_id: publish.packet_id,
            properties: Some(&publish.properties),
            payload: &publish.payload,
        }
    }

    /// The first byte of the fixed header.
    pub(crate) fn first_byte(&self) -> u8 {
        (3 << 4) | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }
}

/// The body of a PUBLISH.
pub(crate) fn publish_body<S: Sink>(parts: &PublishParts<'_>, v5: bool, s: &mut S) {
    s.string(parts.topic);
    if parts.qos != QoS::AtMostOnce {
        s.u16(parts.packet_id);
    }
    if v5 {
        match parts.properties {
            Some(properties) => write_block(s, properties),
            // The length of an empty property block.
            None => s.u8(0),
        }
    }
    s.raw(parts.payload);
}

/// The first byte of the fixed header: packet type and flags.
pub(crate) fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(publish) => return PublishParts::of(publish).first_byte(),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.packet_type() << 4) | flags
}

/// Writes the body (everything after the remaining length) of `packet`.
pub(crate) fn body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(connect) => write_connect(connect, version, s),
        Packet::ConnAck(connack) => write_connack(connack, version, s),
        Packet::Publish(publish) => publish_body(&PublishParts::of(publish), v5, s),
        Packet::PubAck(response)
        | Packet::PubRec(response)
        | Packet::PubRel(response)
        | Packet::PubComp(response) => {
            s.u16(response.packet_id);
            if v5 {
                short_form(s, response.reason_code, &response.properties, true);
            }
        }
        Packet::Subscribe(subscribe) => {
            s.u16(subscribe.packet_id);
            if v5 {
                write_block(s, subscribe);
            }
            for filter in &subscribe.filters {
                s.string(&filter.filter);
                s.u8(options_byte(&filter.options, v5));
            }
        }
        Packet::SubAck(suback) => {
            s.u16(suback.packet_id);
            if v5 {
                write_block(s, &suback.properties);
                s.raw(&suback.reason_codes);
            } else {
                for code in &suback.reason_codes {
                    s.u8(reason::v3_suback_code(*code));
                }
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            s.u16(unsubscribe.packet_id);
            if v5 {
                write_block(s, unsubscribe.user_properties.as_slice());
            }
            for filter in &unsubscribe.filters {
                s.string(filter);
            }
        }
        Packet::UnsubAck(unsuback) => {
            s.u16(unsuback.packet_id);
            if v5 {
                write_block(s, &unsuback.properties);
                s.raw(&unsuback.reason_codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        // A DISCONNECT with a reason code always carries its (possibly empty) property
        // length: the spec allows omitting it, but common clients (rumqttc) then fail to
        // read the reason.
        Packet::Disconnect(disconnect) => {
            if v5 {
                short_form(s, disconnect.reason_code, &disconnect.properties, false);
            }
        }
        // AUTH does not exist before MQTT 5; for 3.x only the (empty) header is written.
        Packet::Auth(auth) => {
            if v5 {
                short_form(s, auth.reason_code, &auth.properties, false);
            }
        }
    }
}

/// The MQTT 5 tail of acknowledgements, DISCONNECT and AUTH: nothing for success without
/// properties, the reason code alone when there are no properties (if `reason_alone`),
/// else reason code and property block.
fn short_form<S: Sink, P: WriteProperties + Default + PartialEq>(
    s: &mut S,
    reason_code: u8,
    properties: &P,
    reason_alone: bool,
) {
    let no_properties = *properties == P::default();
    if reason_code == reason::SUCCESS && no_properties {
        return;
    }
    s.u8(reason_code);
    if !(no_properties && reason_alone) {
        write_block(s, properties);
    }
}

fn options_byte(options: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = options.qos as u8;
    if !v5 {
        return qos;
    }
    qos | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

fn write_connect<S: Sink>(connect: &Connect, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    if version == ProtocolVersion::V3_1 {
        s.string("MQIsdp");
    } else {
        s.string("MQTT");
    }
    s.u8(version.level());
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    s.u8(flags);
    s.u16(connect.keep_alive);
    if v5 {
        write_block(s, &connect.properties);
    }
    s.string(&connect.client_id);
    if let Some(will) = &connect.will {
        if v5 {
            write_block(s, &will.properties);
        }
        s.string(&will.topic);
        s.binary(&will.payload);
    }
    if let Some(username) = &connect.username {
        s.string(username);
    }
    if let Some(password) = &connect.password {
        s.binary(password);
    }
}

fn write_connack<S: Sink>(connack: &ConnAck, version: ProtocolVersion, s: &mut S) {
    match version {
        ProtocolVersion::V3_1 => {
            s.u8(0);
            s.u8(reason::v3_connack_code(connack.reason_code));
        }
        ProtocolVersion::V3_1_1 => {
            s.u8(u8::from(connack.session_present));
            s.u8(reason::v3_connack_code(connack.reason_code));
        }
        ProtocolVersion::V5 => {
            s.u8(u8::from(connack.session_present));
            s.u8(connack.reason_code);
            write_block(s, &connack.properties);
        }
    }
}
