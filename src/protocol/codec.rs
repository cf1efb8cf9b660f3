//! Framing, decoding and encoding of MQTT packets for every protocol version.
//!
//! Decoding is two-pass: the fixed header and remaining length are parsed first, so an
//! oversized packet is refused before its body is buffered and an incomplete one is left
//! in place (`Ok(None)`). Then the whole packet is split off the read buffer and decoded
//! from that shared `Bytes`, so topics, strings and payloads are views, not copies.
//!
//! The layouts live in submodules: `reader` (bounds-checked primitives), `properties`
//! (MQTT 5 property sets), `decode` and `encode` (packet bodies), `sink` (encoding
//! primitives shared by measuring and writing).

pub(crate) mod decode;
pub(crate) mod encode;
mod properties;
mod reader;
pub(crate) mod sink;
#[cfg(test)]
mod tests;

use bytes::{Buf, BytesMut};

use super::packet::{Packet, ProtocolVersion, PubResponse, QoS};
use reader::Reader;
use sink::{Counter, Sink, Writer};

pub use encode::PublishParts;
pub use sink::MAX_VARINT as MAX_REMAINING_LENGTH;

/// Why a byte stream could not be decoded. Each variant maps to the MQTT 5 reason code
/// the broker sends in DISCONNECT (or CONNACK) before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: u32 },
    #[error("unsupported protocol name or level")]
    UnsupportedProtocol,
}

impl DecodeError {
    pub fn reason_code(&self) -> u8 {
        use super::reason::*;
        match self {
            DecodeError::Malformed(_) => MALFORMED_PACKET,
            DecodeError::Protocol(_) => PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol => UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// `version` is `None` until CONNECT has been decoded (only CONNECT is valid then; its
/// protocol level selects the version). Returns `Ok(None)` when `buf` does not yet hold a
/// whole packet; the bytes stay in `buf`. The size limit is checked from the fixed header,
/// before the body is waited for. On success exactly one packet is consumed.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // A two-byte PUBACK, PUBREC, PUBREL or PUBCOMP (a packet id, success in every
    // version), the packet a subscriber sends for every QoS 1/2 message it gets, is
    // recognised by its first two bytes and read in place, before the general checks it
    // would pass (the flags, a one-byte remaining length of 2, 4 bytes within any
    // maximum of 4 or more). Built here, in the returned value: a `Packet` returned by a
    // helper would be copied into it.
    if version.is_some()
        && matches!(first, 0x40 | 0x50 | 0x62 | 0x70)
        && buf.len() >= 4
        && buf[1] == 2
        && max_packet_size >= 4
    {
        let response = PubResponse {
            packet_id: short_ack_id(buf)?,
            ..PubResponse::default()
        };
        return Ok(Some(match first >> 4 {
            4 => Packet::PubAck(response),
            5 => Packet::PubRec(response),
            6 => Packet::PubRel(response),
            _ => Packet::PubComp(response),
        }));
    }
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    if version.is_none() && packet_type != 1 {
        return Err(DecodeError::Protocol(
            "[MQTT-3.1.0-1] the first packet must be CONNECT",
        ));
    }
    check_flags(packet_type, flags, version)?;
    let Some((remaining, varint_len)) = reader::parse_varint(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + varint_len + remaining as usize;
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(1 + varint_len);
    let mut r = Reader::new(frame);
    let packet = match version {
        None => Packet::Connect(Box::new(decode::connect(&mut r)?)),
        Some(version) => body(packet_type, flags, &mut r, version)?,
    };
    Ok(Some(packet))
}

/// Consumes a two-byte acknowledgement (fixed header, then the packet id) from the front
/// of `buf`, which holds at least its 4 bytes, and returns its packet id.
fn short_ack_id(buf: &mut BytesMut) -> Result<u16, DecodeError> {
    let packet_id = u16::from_be_bytes([buf[2], buf[3]]);
    if packet_id == 0 {
        return Err(DecodeError::Protocol("[MQTT-2.2.1-3] packet identifier 0"));
    }
    buf.advance(4);
    Ok(packet_id)
}

/// Decodes one packet a client sent, like `decode`, after refusing the packet types only
/// a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) from their first byte: receiving
/// one is a Protocol Error (MQTT 5 section 4.13, 0x82), whatever its body holds, so
/// the answer does not depend on whether the body happens to parse. A packet type that
/// does not exist (0, or AUTH in MQTT 3) stays Malformed.
pub fn decode_from_client(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    if version.is_some() {
        if let Some(&first) = buf.first() {
            if matches!(first >> 4, 2 | 9 | 11 | 13) {
                return Err(DecodeError::Protocol(
                    "[MQTT-4.13] a client sent a packet only a server may send",
                ));
            }
        }
    }
    decode(buf, version, max_packet_size)
}

/// Fixed-header flags (spec 2.1.3): PUBLISH carries its own, PUBREL, SUBSCRIBE and
/// UNSUBSCRIBE must have 0b0010 and every other type 0. MQTT 3.1 set QoS 1 and DUP on
/// those three like on a PUBLISH, so for 3.1 only the QoS bits are checked there.
fn check_flags(
    packet_type: u8,
    flags: u8,
    version: Option<ProtocolVersion>,
) -> Result<(), DecodeError> {
    let valid = match packet_type {
        0 => {
            return Err(DecodeError::Malformed(
                "[MQTT-2.1.2] reserved packet type 0",
            ))
        }
        3 => true,
        6 | 8 | 10 if version == Some(ProtocolVersion::V3_1) => flags & 0b0110 == 0b0010,
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    };
    if valid {
        Ok(())
    } else {
        Err(DecodeError::Malformed(
            "[MQTT-2.1.3-1] invalid fixed header flags",
        ))
    }
}

fn body(
    packet_type: u8,
    flags: u8,
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    use decode::*;
    Ok(match packet_type {
        1 => Packet::Connect(Box::new(connect(r)?)),
        2 => Packet::ConnAck(connack(r, version)?),
        3 => Packet::Publish(publish(r, flags, version)?),
        4 => Packet::PubAck(pub_response(r, version, PUBACK_CODES)?),
        5 => Packet::PubRec(pub_response(r, version, PUBACK_CODES)?),
        6 => Packet::PubRel(pub_response(r, version, PUBREL_CODES)?),
        7 => Packet::PubComp(pub_response(r, version, PUBREL_CODES)?),
        8 => Packet::Subscribe(subscribe(r, version)?),
        9 => Packet::SubAck(suback(r, version)?),
        10 => Packet::Unsubscribe(unsubscribe(r, version)?),
        11 => Packet::UnsubAck(unsuback(r, version)?),
        12 => empty(r, Packet::PingReq)?,
        13 => empty(r, Packet::PingResp)?,
        14 => Packet::Disconnect(disconnect(r, version)?),
        _ => Packet::Auth(auth(r, version)?),
    })
}

/// Appends the encoding of `packet` for `version` to `out`.
///
/// Never panics. Fields a packet cannot carry are cut to fit (strings and binary data at
/// 65,535 bytes). A packet whose remaining length would exceed 268,435,455 bytes cannot
/// be framed at all and writes nothing; `encoded_len` reports its size, so a caller that
/// checks the peer's maximum packet size first never gets there.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let mut counter = Counter::default();
    encode::body(packet, version, &mut counter);
    let Ok(remaining) = u32::try_from(counter.0) else {
        return;
    };
    if remaining > sink::MAX_VARINT {
        return;
    }
    out.reserve(1 + sink::varint_len(remaining) + counter.0);
    let mut writer = Writer(out);
    writer.u8(encode::first_byte(packet));
    writer.varint(remaining);
    encode::body(packet, version, &mut writer);
}

/// Appends the encoding of one PUBLISH from its parts, if it takes at most `limit` bytes
/// (fixed header included), and returns its length; `None` (nothing written) for a
/// larger one or one too large to frame at all. The bytes are those `encode` writes for
/// the `Publish` the parts describe, without one being built.
pub fn encode_publish(
    parts: &PublishParts<'_>,
    version: ProtocolVersion,
    limit: usize,
    out: &mut BytesMut,
) -> Option<usize> {
    // One PUBLISH per subscriber and message: its length is added up from the parts
    // rather than measured by a first run of `publish_body`, and the fixed header with
    // the topic's length goes in with one copy. `publish_body` is the reference the
    // tests hold this to, byte for byte.
    let v5 = version.is_v5();
    let topic = sink::string_field(parts.topic);
    let properties_len = match (v5, parts.properties) {
        (false, _) => 0,
        (true, None) => 1,
        (true, Some(properties)) => {
            let mut counter = Counter::default();
            properties::write_block(&mut counter, properties);
            counter.0
        }
    };
    let packet_id_len = if parts.qos == QoS::AtMostOnce { 0 } else { 2 };
    let body = 2 + topic.len() + packet_id_len + properties_len + parts.payload.len();
    let remaining = u32::try_from(body)
        .ok()
        .filter(|remaining| *remaining <= sink::MAX_VARINT)?;
    let length = 1 + sink::varint_len(remaining) + body;
    if length > limit {
        return None;
    }
    out.reserve(length);
    let mut header = [0u8; 7];
    header[0] = parts.first_byte();
    let mut at = 1 + sink::put_varint(&mut header[1..], remaining);
    header[at..at + 2].copy_from_slice(&(topic.len() as u16).to_be_bytes());
    at += 2;
    out.extend_from_slice(&header[..at]);
    out.extend_from_slice(topic);
    if packet_id_len > 0 {
        out.extend_from_slice(&parts.packet_id.to_be_bytes());
    }
    match (v5, parts.properties) {
        (false, _) => {}
        (true, None) => out.extend_from_slice(&[0]),
        (true, Some(properties)) => properties::write_block(&mut Writer(out), properties),
    }
    out.extend_from_slice(parts.payload);
    Some(length)
}

/// The number of bytes `encode` writes for `packet` (fixed header included), computed
/// without writing; compare it with the peer's Maximum Packet Size before sending.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut counter = Counter::default();
    encode::body(packet, version, &mut counter);
    let remaining = u32::try_from(counter.0).unwrap_or(u32::MAX);
    1 + sink::varint_len(remaining) + counter.0
}
