//! The load generator's own MQTT 3.1.1 wire format: a minimal encoder for the packets
//! the generator sends and a frame splitter that reads only what the scenarios need.
//!
//! It is deliberately independent of the broker's codec, so a benchmark measures the
//! broker and a codec bug cannot hide itself by agreeing with itself. Nothing here
//! allocates per message: PUBLISH packets are encoded once into a [`PublishTemplate`]
//! and only the packet identifier (and, for latency, the payload) is patched in place.

/// MQTT control packet types (high nibble of the first byte).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Appends the Remaining Length varint.
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, no will, no credentials.
pub fn connect(out: &mut Vec<u8>, client_id: &str, keep_alive_secs: u16, clean_session: bool) {
    let body_len = 10 + 2 + client_id.len();
    out.push(0x10);
    put_remaining_length(out, body_len);
    put_str(out, b"MQTT");
    out.push(4);
    out.push(if clean_session { 0x02 } else { 0x00 });
    out.extend_from_slice(&keep_alive_secs.to_be_bytes());
    put_str(out, client_id.as_bytes());
}

/// SUBSCRIBE with one or more filters, all at the same requested QoS.
pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, filters: &[&str], qos: u8) {
    let body_len = 2 + filters.iter().map(|f| 2 + f.len() + 1).sum::<usize>();
    out.push(0x82);
    put_remaining_length(out, body_len);
    out.extend_from_slice(&packet_id.to_be_bytes());
    for filter in filters {
        put_str(out, filter.as_bytes());
        out.push(qos);
    }
}

/// The four two-byte acknowledgements. PUBREL carries the 0b0010 flags (MQTT-3.6.1-1).
pub fn ack(out: &mut Vec<u8>, packet_type: u8, packet_id: u16) {
    let flags = if packet_type == PUBREL { 0x02 } else { 0x00 };
    out.push((packet_type << 4) | flags);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// The discard server's answers: CONNACK "accepted", PINGRESP, and SUBACK granting the
/// requested QoS of every filter in a SUBSCRIBE body.
pub fn connack(out: &mut Vec<u8>) {
    out.extend_from_slice(&[CONNACK << 4, 2, 0, 0]);
}

pub fn pingresp(out: &mut Vec<u8>) {
    out.extend_from_slice(&[PINGRESP << 4, 0]);
}

pub fn suback_for(out: &mut Vec<u8>, subscribe_body: &[u8]) -> Result<(), WireError> {
    let truncated = WireError::Truncated(SUBSCRIBE);
    let (id, mut rest) = subscribe_body
        .split_at_checked(2)
        .ok_or(truncated.clone())?;
    let mut codes = Vec::new();
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let qos = *tail.get(len).ok_or(truncated.clone())?;
        codes.push(qos & 3);
        rest = &tail[len + 1..];
    }
    if !rest.is_empty() || codes.is_empty() {
        return Err(truncated);
    }
    out.push(SUBACK << 4);
    put_remaining_length(out, 2 + codes.len());
    out.extend_from_slice(id);
    out.extend_from_slice(&codes);
    Ok(())
}

pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[DISCONNECT << 4, 0]);
}

/// Appends one PUBLISH (`packet_id` is left out at QoS 0) and returns the offset of its
/// payload in `out`.
pub fn publish(
    out: &mut Vec<u8>,
    topic: &str,
    qos: u8,
    retain: bool,
    packet_id: u16,
    payload: &[u8],
) -> usize {
    let id_len = if qos > 0 { 2 } else { 0 };
    let body_len = 2 + topic.len() + id_len + payload.len();
    out.push((PUBLISH << 4) | ((qos & 3) << 1) | u8::from(retain));
    put_remaining_length(out, body_len);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    let payload_at = out.len();
    out.extend_from_slice(payload);
    payload_at
}

/// A PUBLISH encoded once; `append` copies it and patches the packet identifier.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Offset of the two packet identifier bytes (QoS 1 and 2 only).
    packet_id_at: Option<usize>,
    payload_at: usize,
}

impl PublishTemplate {
    pub fn new(topic: &str, qos: u8, retain: bool, payload: &[u8]) -> PublishTemplate {
        let mut bytes = Vec::new();
        let payload_at = publish(&mut bytes, topic, qos, retain, 0, payload);
        PublishTemplate {
            bytes,
            packet_id_at: (qos > 0).then(|| payload_at - 2),
            payload_at,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the packet; `packet_id` is ignored at QoS 0. Returns the offset of the
    /// payload inside `out`, so a caller can stamp it.
    pub fn append(&self, out: &mut Vec<u8>, packet_id: u16) -> usize {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.packet_id_at {
            out[start + at..start + at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        start + self.payload_at
    }
}

/// Why a byte stream is not MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A Remaining Length of more than four bytes (MQTT-1.5.5).
    MalformedLength,
    /// A frame larger than the reader accepts.
    TooLarge(usize),
    /// A packet too short for the fields it must carry.
    Truncated(u8),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::MalformedLength => write!(f, "malformed remaining length"),
            WireError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit"),
            WireError::Truncated(t) => write!(f, "packet type {t} too short"),
        }
    }
}

impl std::error::Error for WireError {}

/// The parts of a PUBLISH, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub topic: &'a [u8],
    /// Present at QoS 1 and 2.
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// One complete packet borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub packet_type: u8,
    pub flags: u8,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Packet identifier of PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK (first two body bytes).
    pub fn packet_id(&self) -> Result<u16, WireError> {
        match self.body {
            [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(WireError::Truncated(self.packet_type)),
        }
    }

    pub fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }

    /// Splits a PUBLISH body into topic, packet identifier and payload.
    pub fn publish(&self) -> Result<PublishView<'a>, WireError> {
        let truncated = WireError::Truncated(self.packet_type);
        let [hi, lo, rest @ ..] = self.body else {
            return Err(truncated);
        };
        let topic_len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let topic = rest.get(..topic_len).ok_or(truncated.clone())?;
        let rest = &rest[topic_len..];
        if self.qos() == 0 {
            return Ok(PublishView {
                topic,
                packet_id: None,
                payload: rest,
            });
        }
        match rest {
            [hi, lo, payload @ ..] => Ok(PublishView {
                topic,
                packet_id: Some(u16::from_be_bytes([*hi, *lo])),
                payload,
            }),
            _ => Err(truncated),
        }
    }
}

/// Splits the next frame off the front of `buf`.
///
/// `Ok(None)` means "not enough bytes yet", never an error. On success returns the frame
/// and the number of bytes it occupies.
pub fn split_frame(buf: &[u8], max_frame: usize) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut multiplier = 1usize;
    let mut header_len = 1;
    loop {
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        header_len += 1;
        remaining += usize::from(byte & 0x7f) * multiplier;
        if byte & 0x80 == 0 {
            break;
        }
        if header_len == 5 {
            return Err(WireError::MalformedLength);
        }
        multiplier *= 128;
    }
    let total = header_len + remaining;
    if total > max_frame {
        return Err(WireError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        packet_type: first >> 4,
        flags: first & 0x0f,
        body: &buf[header_len..total],
    };
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mut buf: &[u8]) -> Vec<Frame<'_>> {
        let mut out = Vec::new();
        while let Some((frame, used)) = split_frame(buf, 1 << 20).unwrap() {
            out.push(frame);
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "leftover bytes {buf:?}");
        out
    }

    #[test]
    fn connect_matches_the_spec_example_layout() {
        let mut out = Vec::new();
        connect(&mut out, "ab", 60, true);
        assert_eq!(
            out,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b']
        );
        let mut persistent = Vec::new();
        connect(&mut persistent, "", 0, false);
        assert_eq!(persistent[9], 0x00);
        assert_eq!(persistent[1], 12);
    }

    #[test]
    fn subscribe_and_acks_have_the_reserved_flags() {
        let mut out = Vec::new();
        subscribe(&mut out, 7, &["a/+", "#"], 1);
        assert_eq!(
            out,
            [0x82, 12, 0, 7, 0, 3, b'a', b'/', b'+', 1, 0, 1, b'#', 1]
        );
        let mut acks = Vec::new();
        ack(&mut acks, PUBACK, 0x0102);
        ack(&mut acks, PUBREC, 3);
        ack(&mut acks, PUBREL, 4);
        ack(&mut acks, PUBCOMP, 5);
        assert_eq!(
            acks,
            [0x40, 2, 1, 2, 0x50, 2, 0, 3, 0x62, 2, 0, 4, 0x70, 2, 0, 5]
        );
        let mut tail = Vec::new();
        disconnect(&mut tail);
        assert_eq!(tail, [0xe0, 0]);
    }

    #[test]
    fn suback_grants_each_requested_qos() {
        let mut request = Vec::new();
        subscribe(&mut request, 9, &["a", "b/#"], 2);
        let (frame, _) = split_frame(&request, 1024).unwrap().unwrap();
        let mut out = Vec::new();
        suback_for(&mut out, frame.body).unwrap();
        assert_eq!(out, [0x90, 4, 0, 9, 2, 2]);
        for bad in [
            &[0u8][..],
            &[0, 1],
            &[0, 1, 0, 3, b'a'],
            &[0, 1, 0, 1, b'a', 1, 0],
        ] {
            assert!(suback_for(&mut Vec::new(), bad).is_err(), "{bad:?}");
        }
        let mut fixed = Vec::new();
        connack(&mut fixed);
        pingresp(&mut fixed);
        assert_eq!(fixed, [0x20, 2, 0, 0, 0xd0, 0]);
    }

    #[test]
    fn publish_template_patches_the_packet_id() {
        let template = PublishTemplate::new("t/1", 1, false, b"xyz");
        let mut out = Vec::new();
        let payload_at = template.append(&mut out, 0xabcd);
        template.append(&mut out, 2);
        assert_eq!(payload_at, 9);
        assert_eq!(
            &out[..12],
            [0x32, 10, 0, 3, b't', b'/', b'1', 0xab, 0xcd, b'x', b'y', b'z']
        );
        let parsed = frames(&out);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[1].publish().unwrap(),
            PublishView {
                topic: b"t/1",
                packet_id: Some(2),
                payload: b"xyz"
            }
        );
        assert_eq!(out.len(), 2 * template.len());
    }

    #[test]
    fn qos0_retained_publish_has_no_packet_id() {
        let template = PublishTemplate::new("r", 0, true, b"");
        let mut out = Vec::new();
        assert_eq!(template.append(&mut out, 99), 5);
        assert_eq!(out, [0x31, 3, 0, 1, b'r']);
        let frame = frames(&out)[0];
        assert_eq!(frame.qos(), 0);
        assert_eq!(frame.flags & 1, 1);
        assert_eq!(
            frame.publish().unwrap(),
            PublishView {
                topic: b"r",
                packet_id: None,
                payload: b""
            }
        );
    }

    #[test]
    fn long_remaining_lengths_round_trip() {
        for len in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, len);
            let expected_len = match len {
                0..=127 => 1,
                128..=16_383 => 2,
                16_384..=2_097_151 => 3,
                _ => 4,
            };
            assert_eq!(out.len(), expected_len, "length {len}");
            let mut frame = vec![0x30];
            frame.extend_from_slice(&out);
            frame.resize(frame.len() + len, 0);
            let (parsed, used) = split_frame(&frame, usize::MAX).unwrap().unwrap();
            assert_eq!(parsed.body.len(), len);
            assert_eq!(used, frame.len());
        }
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let mut out = Vec::new();
        PublishTemplate::new("topic", 2, false, &[1; 200]).append(&mut out, 1);
        for cut in 0..out.len() {
            assert_eq!(split_frame(&out[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
        assert!(split_frame(&out, 1 << 20).unwrap().is_some());
    }

    #[test]
    fn malformed_and_oversized_frames_are_errors() {
        assert_eq!(
            split_frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 30),
            Err(WireError::MalformedLength)
        );
        assert_eq!(
            split_frame(&[0x30, 0x80, 0x01], 64),
            Err(WireError::TooLarge(131))
        );
    }

    #[test]
    fn truncated_bodies_are_reported_not_panicked() {
        let ack = Frame {
            packet_type: PUBACK,
            flags: 0,
            body: &[1],
        };
        assert_eq!(ack.packet_id(), Err(WireError::Truncated(PUBACK)));
        let short_topic = Frame {
            packet_type: PUBLISH,
            flags: 0,
            body: &[0, 5, b'a'],
        };
        assert!(short_topic.publish().is_err());
        let missing_id = Frame {
            packet_type: PUBLISH,
            flags: 2,
            body: &[0, 1, b'a', 0],
        };
        assert!(missing_id.publish().is_err());
        let empty = Frame {
            packet_type: PUBLISH,
            flags: 0,
            body: &[],
        };
        assert!(empty.publish().is_err());
    }
}
