//! Framing, decoding and encoding of MQTT packets for every protocol version.

use bytes::BytesMut;

use super::packet::{Packet, ProtocolVersion};

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
/// before the body is waited for.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec")
}

/// Appends the encoding of `packet` for `version` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let _ = (packet, version, out);
    todo!("codec")
}
