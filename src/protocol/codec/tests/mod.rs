//! Codec tests: golden bytes per version, validation errors, and a round-trip proptest.
//!
//! The golden helpers check both directions and every split point, so each literal also
//! proves that framing waits for the whole packet without consuming anything.

mod errors;
mod fast_paths;
mod golden_v3;
mod golden_v5;
mod roundtrip;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::codec::{decode, encode, encoded_len, DecodeError};
use crate::protocol::packet::*;

const NO_LIMIT: u32 = u32::MAX;

pub(super) fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

pub(super) fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Decodes `bytes` as a packet of `version` (for CONNECT: also with no version yet).
pub(super) fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, Some(version), NO_LIMIT)?;
    let packet = packet.unwrap_or_else(|| panic!("incomplete: {bytes:02x?}"));
    assert!(buf.is_empty(), "left {} bytes", buf.len());
    Ok(packet)
}

pub(super) fn encode_to_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    assert_eq!(out.len(), encoded_len(packet, version));
    out.to_vec()
}

/// Every proper prefix of a packet is incomplete and stays in the buffer untouched.
pub(super) fn assert_prefixes_incomplete(bytes: &[u8], version: Option<ProtocolVersion>) {
    for split in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..split]);
        assert_eq!(
            decode(&mut buf, version, NO_LIMIT),
            Ok(None),
            "split {split}"
        );
        assert_eq!(&buf[..], &bytes[..split]);
    }
}

/// Decodes to `expected`, encodes back to the same bytes, and is incomplete at every split.
pub(super) fn golden(bytes: &[u8], version: ProtocolVersion, expected: Packet) {
    assert_eq!(decode_all(bytes, version), Ok(expected.clone()));
    assert_eq!(
        encode_to_vec(&expected, version),
        bytes,
        "encoding of {expected:?}"
    );
    let mut two = BytesMut::from(bytes);
    two.extend_from_slice(bytes);
    let first = decode(&mut two, Some(version), NO_LIMIT);
    assert_eq!(first, Ok(Some(expected.clone())), "first of two packets");
    assert_eq!(&two[..], bytes, "exactly one packet consumed");
    if let Packet::Connect(_) = expected {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, None, NO_LIMIT), Ok(Some(expected)));
        assert_prefixes_incomplete(bytes, None);
    }
    assert_prefixes_incomplete(bytes, Some(version));
}

/// Decodes to `expected` from a non-canonical form the encoder does not produce.
pub(super) fn decodes_to(bytes: &[u8], version: ProtocolVersion, expected: Packet) {
    assert_eq!(decode_all(bytes, version), Ok(expected));
}

/// Encodes to `bytes` (for packets whose decoding differs, e.g. mapped reason codes).
pub(super) fn encodes_to(packet: Packet, version: ProtocolVersion, bytes: &[u8]) {
    assert_eq!(encode_to_vec(&packet, version), bytes);
}

pub(super) fn decode_err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, NO_LIMIT) {
        Err(error) => error,
        other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
    }
}
