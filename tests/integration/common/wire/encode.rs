//! Client packets as exact bytes, including deliberately broken ones.

use super::{prop, Prop, V31, V5};

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
