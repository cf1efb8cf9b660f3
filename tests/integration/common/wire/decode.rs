//! Strict decoding of what a broker sends: anything the specification forbids a server
//! to send fails the test.

use super::{Ack, Packet, Prop, Props, Publish, V5};

/// Reads a variable byte integer; `None` if `buf` ends before it does.
pub fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    assert!(buf.len() < 4, "variable byte integer longer than 4 bytes");
    None
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.pos + n <= self.buf.len(), "packet body too short");
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_be_bytes([b[0], b[1]])
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    fn varint(&mut self) -> usize {
        let (v, n) = read_varint(&self.buf[self.pos..]).expect("truncated varint");
        self.pos += n;
        v
    }
    fn bin(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16());
        self.take(n).to_vec()
    }
    fn string(&mut self) -> String {
        String::from_utf8(self.bin()).expect("broker sent a non UTF-8 string")
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn rest(&mut self) -> Vec<u8> {
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        out
    }
    fn props(&mut self) -> Props {
        let len = self.varint();
        let end = self.pos + len;
        assert!(end <= self.buf.len(), "property length beyond the packet");
        let mut props = Vec::new();
        while self.pos < end {
            let id = self.u8();
            let p = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(id, self.u8()),
                0x13 | 0x21 | 0x22 | 0x23 => Prop::U16(id, self.u16()),
                0x02 | 0x11 | 0x18 | 0x27 => Prop::U32(id, self.u32()),
                0x0B => Prop::VarInt(id, self.varint() as u32),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Prop::Str(id, self.string()),
                0x09 | 0x16 => Prop::Bin(id, self.bin()),
                0x26 => Prop::Pair(self.string(), self.string()),
                other => panic!("unknown property identifier 0x{other:02x}"),
            };
            props.push(p);
        }
        assert_eq!(self.pos, end, "property list overruns its length");
        Props(props)
    }
}

/// Decodes one whole frame (fixed header byte + body) sent by the broker. Panics on
/// anything the specification forbids a server to send.
pub fn decode(header: u8, body: &[u8], version: u8) -> Packet {
    let mut r = Reader { buf: body, pos: 0 };
    let v5 = version == V5;
    let kind = header >> 4;
    let flags = header & 0x0F;
    let packet = match kind {
        2 => {
            assert_eq!(flags, 0, "CONNACK flags");
            let ack_flags = r.u8();
            assert_eq!(ack_flags & 0xFE, 0, "CONNACK reserved flags");
            let code = r.u8();
            let props = if v5 { r.props() } else { Props::default() };
            Packet::ConnAck {
                session_present: ack_flags == 1,
                code,
                props,
            }
        }
        3 => {
            let qos = (flags >> 1) & 0x03;
            assert!(qos < 3, "PUBLISH with QoS 3");
            let dup = flags & 0x08 != 0;
            assert!(!(dup && qos == 0), "QoS 0 PUBLISH with DUP set");
            let topic = r.string();
            let packet_id = if qos > 0 { r.u16() } else { 0 };
            assert!(
                qos == 0 || packet_id != 0,
                "QoS > 0 PUBLISH with packet id 0"
            );
            let props = if v5 { r.props() } else { Props::default() };
            let payload = r.rest();
            Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                props,
                payload,
            })
        }
        4..=7 => {
            let expected_flags = if kind == 6 { 2 } else { 0 };
            assert_eq!(flags, expected_flags, "acknowledgement flags");
            let packet_id = r.u16();
            let (code, props) = if v5 && r.remaining() > 0 {
                let code = r.u8();
                let props = if r.remaining() > 0 {
                    r.props()
                } else {
                    Props::default()
                };
                (code, props)
            } else {
                (0, Props::default())
            };
            let ack = Ack {
                packet_id,
                code,
                props,
            };
            match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        9 | 11 => {
            assert_eq!(flags, 0, "SUBACK/UNSUBACK flags");
            let packet_id = r.u16();
            let props = if v5 { r.props() } else { Props::default() };
            let codes = r.rest();
            if kind == 9 {
                assert!(!codes.is_empty(), "SUBACK without return codes");
                Packet::SubAck {
                    packet_id,
                    codes,
                    props,
                }
            } else {
                assert!(v5 || codes.is_empty(), "3.x UNSUBACK with a payload");
                Packet::UnsubAck {
                    packet_id,
                    codes,
                    props,
                }
            }
        }
        13 => {
            assert_eq!(flags, 0, "PINGRESP flags");
            Packet::PingResp
        }
        14 => {
            assert!(v5, "a broker never sends DISCONNECT to a 3.x client");
            assert_eq!(flags, 0, "DISCONNECT flags");
            let code = if r.remaining() > 0 { r.u8() } else { 0 };
            let props = if r.remaining() > 0 {
                r.props()
            } else {
                Props::default()
            };
            Packet::Disconnect { code, props }
        }
        other => panic!("a broker must not send packet type {other}"),
    };
    assert_eq!(r.remaining(), 0, "trailing bytes in {packet:?}");
    packet
}
