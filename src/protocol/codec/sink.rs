//! Encoding primitives behind one trait with two implementations: `Counter` measures a
//! packet and `Writer` writes it. Each packet layout is written once, generically, and
//! run twice (length first, because the fixed header carries the remaining length).

use bytes::{BufMut, BytesMut};

/// The largest value a Variable Byte Integer can carry (spec 1.5.5).
pub const MAX_VARINT: u32 = 268_435_455;

/// The largest string or binary field (a two-byte length prefix).
const MAX_FIELD: usize = u16::MAX as usize;

pub(crate) trait Sink {
    fn u8(&mut self, value: u8);
    fn u16(&mut self, value: u16);
    fn u32(&mut self, value: u32);
    fn raw(&mut self, bytes: &[u8]);

    /// A Variable Byte Integer; values past the maximum are clamped (only a caller bug can
    /// produce one, and clamping keeps the encoder panic-free).
    fn varint(&mut self, value: u32) {
        let mut value = value.min(MAX_VARINT);
        loop {
            let mut byte = (value & 0x7f) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.u8(byte);
            if value == 0 {
                break;
            }
        }
    }

    /// Binary Data; anything past 65,535 bytes cannot be represented and is cut off.
    fn binary(&mut self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_FIELD)];
        self.u16(bytes.len() as u16);
        self.raw(bytes);
    }

    /// A UTF-8 string; one longer than 65,535 bytes is cut at a character boundary so the
    /// output stays valid UTF-8.
    fn string(&mut self, text: &str) {
        self.binary(string_field(text));
    }
}

/// The bytes of `text` a string field carries: all of them, or for a text longer than
/// 65,535 bytes as many as fit, cut at a character boundary so they stay valid UTF-8.
pub(crate) fn string_field(text: &str) -> &[u8] {
    let mut end = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

/// Writes `value` (at most `MAX_VARINT`) as a Variable Byte Integer at the start of
/// `out`, which has room for four bytes; returns the bytes written.
pub(crate) fn put_varint(out: &mut [u8], value: u32) -> usize {
    let mut value = value.min(MAX_VARINT);
    let mut written = 0;
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out[written] = byte;
        written += 1;
        if value == 0 {
            return written;
        }
    }
}

/// Counts the bytes a layout would write.
#[derive(Default)]
pub(crate) struct Counter(pub usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Appends a layout to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut BytesMut);

impl Sink for Writer<'_> {
    fn u8(&mut self, value: u8) {
        self.0.put_u8(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.put_u16(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.put_u32(value);
    }
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// Bytes taken by `value` as a Variable Byte Integer.
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}
