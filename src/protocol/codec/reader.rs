//! A bounds-checked cursor over the body of one packet.
//!
//! Every read checks the remaining length first, so a lying length prefix yields
//! `Malformed` instead of a panic. Strings and binary fields are split off the shared
//! `Bytes` of the frame: decoding never copies a topic, a string or a payload.

use bytes::{Buf, Bytes};
use bytestring::ByteString;

use super::DecodeError;

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

const TRUNCATED: DecodeError = DecodeError::Malformed("[MQTT-1.5] field extends beyond the packet");

/// The body of one framed packet (everything after the remaining length).
pub(crate) struct Reader {
    bytes: Bytes,
}

impl Reader {
    pub(crate) fn new(bytes: Bytes) -> Reader {
        Reader { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        if self.bytes.is_empty() {
            return Err(TRUNCATED);
        }
        Ok(self.bytes.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        if self.bytes.len() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.bytes.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        if self.bytes.len() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.bytes.get_u32())
    }

    /// A Variable Byte Integer (spec 1.5.5) inside the body, e.g. a property length.
    pub(crate) fn varint(&mut self) -> Result<u32> {
        match parse_varint(&self.bytes)? {
            Some((value, used)) => {
                self.bytes.advance(used);
                Ok(value)
            }
            None => Err(TRUNCATED),
        }
    }

    /// The next `len` bytes, shared with the frame.
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes> {
        if self.bytes.len() < len {
            return Err(TRUNCATED);
        }
        Ok(self.bytes.split_to(len))
    }

    /// Everything left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    /// Binary Data (spec 1.5.6): a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String (spec 1.5.4): well-formed UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<ByteString> {
        let raw = self.binary()?;
        to_string(raw)
    }

    /// A sub-reader over the next `len` bytes (a property block).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader> {
        if self.bytes.len() < len {
            return Err(DecodeError::Malformed(
                "[MQTT-2.2.2] property length extends beyond the packet",
            ));
        }
        Ok(Reader::new(self.bytes.split_to(len)))
    }

    /// Ends a packet: any byte left over means the sender and we disagree on the layout.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }
}

/// Validates a UTF-8 Encoded String. A zero byte can only encode U+0000 in UTF-8, so a
/// byte scan finds it; surrogates and overlong forms are rejected by the UTF-8 check.
pub(crate) fn to_string(raw: Bytes) -> Result<ByteString> {
    if raw.contains(&0) {
        return Err(DecodeError::Malformed(
            "[MQTT-1.5.4-2] string contains the null character U+0000",
        ));
    }
    ByteString::try_from(raw)
        .map_err(|_| DecodeError::Malformed("[MQTT-1.5.4-1] string is not well-formed UTF-8"))
}

/// Parses a Variable Byte Integer at the start of `bytes`: `Ok(None)` when more bytes are
/// needed, `Malformed` when a fourth byte still has its continuation bit.
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>> {
    let mut value: u32 = 0;
    for (index, byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
        if index == 3 {
            return Err(DecodeError::Malformed(
                "[MQTT-1.5.5-1] variable byte integer longer than four bytes",
            ));
        }
    }
    Ok(None)
}
