//! A small, independent MQTT wire model for the black-box tests: encoders for the packets
//! a client sends (exact bytes, including deliberately broken ones) and a strict decoder
//! for the packets a broker sends back.
//!
//! It shares no code with the broker's own codec on purpose: a bug that the codec makes
//! symmetrically (encode and decode agreeing on a wrong layout) must still fail here.

/// MQTT 3.1 ("MQIsdp", level 3).
pub const V31: u8 = 3;
/// MQTT 3.1.1 ("MQTT", level 4).
pub const V311: u8 = 4;
/// MQTT 5.0 ("MQTT", level 5).
pub const V5: u8 = 5;

/// MQTT 5 property identifiers used by the tests.
pub mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIERS_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// One MQTT 5 property, typed by its wire representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    Byte(u8, u8),
    U16(u8, u16),
    U32(u8, u32),
    VarInt(u8, u32),
    Str(u8, String),
    Bin(u8, Vec<u8>),
    Pair(String, String),
}

impl Prop {
    pub fn id(&self) -> u8 {
        match self {
            Prop::Byte(id, _)
            | Prop::U16(id, _)
            | Prop::U32(id, _)
            | Prop::VarInt(id, _)
            | Prop::Str(id, _)
            | Prop::Bin(id, _) => *id,
            Prop::Pair(..) => prop::USER_PROPERTY,
        }
    }
}

/// The property list of a decoded packet, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Props(pub Vec<Prop>);

impl Props {
    fn all(&self, id: u8) -> impl Iterator<Item = &Prop> {
        self.0.iter().filter(move |p| p.id() == id)
    }

    /// The single value of a numeric property (byte, two/four byte integer, varint).
    pub fn num(&self, id: u8) -> Option<u32> {
        let mut values = self.all(id).map(|p| match p {
            Prop::Byte(_, v) => u32::from(*v),
            Prop::U16(_, v) => u32::from(*v),
            Prop::U32(_, v) | Prop::VarInt(_, v) => *v,
            other => panic!("property {other:?} is not numeric"),
        });
        let first = values.next();
        assert!(values.next().is_none(), "property 0x{id:02x} appears twice");
        first
    }

    pub fn str(&self, id: u8) -> Option<String> {
        let mut values = self.all(id).map(|p| match p {
            Prop::Str(_, v) => v.clone(),
            other => panic!("property {other:?} is not a string"),
        });
        let first = values.next();
        assert!(values.next().is_none(), "property 0x{id:02x} appears twice");
        first
    }

    pub fn bin(&self, id: u8) -> Option<Vec<u8>> {
        let mut values = self.all(id).map(|p| match p {
            Prop::Bin(_, v) => v.clone(),
            other => panic!("property {other:?} is not binary"),
        });
        let first = values.next();
        assert!(values.next().is_none(), "property 0x{id:02x} appears twice");
        first
    }

    /// Every subscription identifier, sorted (their order on the wire is unspecified).
    pub fn subscription_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .all(prop::SUBSCRIPTION_IDENTIFIER)
            .map(|p| match p {
                Prop::VarInt(_, v) => *v,
                other => panic!("bad subscription identifier {other:?}"),
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Prop::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A PUBLISH as received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub packet_id: u16,
    pub props: Props,
    pub payload: Vec<u8>,
}

/// A packet sent by the broker, decoded strictly for one protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        code: u8,
        props: Props,
    },
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    SubAck {
        packet_id: u16,
        codes: Vec<u8>,
        props: Props,
    },
    UnsubAck {
        packet_id: u16,
        codes: Vec<u8>,
        props: Props,
    },
    PingResp,
    Disconnect {
        code: u8,
        props: Props,
    },
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    pub code: u8,
    pub props: Props,
}

// ---------------------------------------------------------------- encoding

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bin(out, s.as_bytes());
}

pub fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    put_u16(out, u16::try_from(b.len()).expect("string fits u16"));
    out.extend_from_slice(b);
}

pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if v == 0 {
            break;
        }
    }
}

pub fn encode_props(props: &[Prop]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in props {
        body.push(p.id());
        match p {
            Prop::Byte(_, v) => body.push(*v),
            Prop::U16(_, v) => put_u16(&mut body, *v),
            Prop::U32(_, v) => body.extend_from_slice(&v.to_be_bytes()),
            Prop::VarInt(_, v) => put_varint(&mut body, *v as usize),
            Prop::Str(_, v) => put_str(&mut body, v),
            Prop::Bin(_, v) => put_bin(&mut body, v),
            Prop::Pair(k, v) => {
                put_str(&mut body, k);
                put_str(&mut body, v);
            }
        }
    }
    let mut out = Vec::new();
    put_varint(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Fixed header byte plus remaining length plus body.
pub fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// The will of a CONNECT.
#[derive(Debug, Clone)]
pub struct WillSpec {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Vec<Prop>,
}

impl WillSpec {
    pub fn new(topic: &str, payload: &[u8], qos: u8) -> Self {
        WillSpec {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos,
            retain: false,
            props: Vec::new(),
        }
    }
}

/// Everything a test may vary in a CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub version: u8,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<WillSpec>,
    pub props: Vec<Prop>,
}

impl ConnectSpec {
    pub fn new(version: u8, client_id: &str) -> Self {
        ConnectSpec {
            version,
            client_id: client_id.to_string(),
            clean: true,
            keep_alive: 60,
            will: None,
            props: Vec::new(),
        }
    }

    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    pub fn will(mut self, will: WillSpec) -> Self {
        self.will = Some(will);
        self
    }

    pub fn prop(mut self, p: Prop) -> Self {
        self.props.push(p);
        self
    }

    /// MQTT 5 Session Expiry Interval (ignored by the encoder for 3.x).
    pub fn session_expiry(self, secs: u32) -> Self {
        self.prop(Prop::U32(prop::SESSION_EXPIRY_INTERVAL, secs))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        if self.version == V31 {
            put_str(&mut body, "MQIsdp");
        } else {
            put_str(&mut body, "MQTT");
        }
        body.push(self.version);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        body.push(flags);
        put_u16(&mut body, self.keep_alive);
        if self.version == V5 {
            body.extend(encode_props(&self.props));
        }
        put_str(&mut body, &self.client_id);
        if let Some(w) = &self.will {
            if self.version == V5 {
                body.extend(encode_props(&w.props));
            }
            put_str(&mut body, &w.topic);
            put_bin(&mut body, &w.payload);
        }
        frame(0x10, &body)
    }
}

/// A PUBLISH from the client; `packet_id` is ignored for QoS 0.
#[derive(Debug, Clone)]
pub struct PublishSpec {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub packet_id: u16,
    pub props: Vec<Prop>,
    pub payload: Vec<u8>,
}

impl PublishSpec {
    pub fn new(topic: &str, qos: u8, payload: &[u8]) -> Self {
        PublishSpec {
            topic: topic.to_string(),
            qos,
            retain: false,
            dup: false,
            packet_id: if qos > 0 { 1 } else { 0 },
            props: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    pub fn id(mut self, packet_id: u16) -> Self {
        self.packet_id = packet_id;
        self
    }

    pub fn retain(mut self) -> Self {
        self.retain = true;
        self
    }

    pub fn dup(mut self) -> Self {
        self.dup = true;
        self
    }

    pub fn prop(mut self, p: Prop) -> Self {
        self.props.push(p);
        self
    }

    pub fn encode(&self, version: u8) -> Vec<u8> {
        self.encode_topic_bytes(version, self.topic.as_bytes())
    }

    /// Encodes with arbitrary topic bytes (used to send invalid UTF-8).
    pub fn encode_topic_bytes(&self, version: u8, topic: &[u8]) -> Vec<u8> {
        let mut header = 0x30 | (self.qos << 1);
        if self.retain {
            header |= 0x01;
        }
        if self.dup {
            header |= 0x08;
        }
        let mut body = Vec::new();
        put_bin(&mut body, topic);
        if self.qos > 0 {
            put_u16(&mut body, self.packet_id);
        }
        if version == V5 {
            body.extend(encode_props(&self.props));
        }
        body.extend_from_slice(&self.payload);
        frame(header, &body)
    }
}

/// Subscription options byte: QoS, No Local, Retain As Published, Retain Handling.
pub fn sub_options(qos: u8, no_local: bool, retain_as_published: bool, retain_handling: u8) -> u8 {
    qos | (u8::from(no_local) << 2) | (u8::from(retain_as_published) << 3) | (retain_handling << 4)
}

pub fn subscribe(version: u8, packet_id: u16, filters: &[(&str, u8)], props: &[Prop]) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, packet_id);
    if version == V5 {
        body.extend(encode_props(props));
    }
    for (filter, options) in filters {
        put_str(&mut body, filter);
        body.push(*options);
    }
    frame(0x82, &body)
}

pub fn unsubscribe(version: u8, packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, packet_id);
    if version == V5 {
        body.extend(encode_props(&[]));
    }
    for filter in filters {
        put_str(&mut body, filter);
    }
    frame(0xA2, &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) with success: the
/// two-byte form, valid for every version.
pub fn ack(header: u8, packet_id: u16) -> Vec<u8> {
    frame(header, &packet_id.to_be_bytes())
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT, normal disconnection (every version).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// MQTT 5 DISCONNECT with a reason code and properties.
pub fn disconnect_v5(code: u8, props: &[Prop]) -> Vec<u8> {
    let mut body = vec![code];
    body.extend(encode_props(props));
    frame(0xE0, &body)
}

// ---------------------------------------------------------------- decoding

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
