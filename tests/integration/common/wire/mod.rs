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

mod decode;
mod encode;

pub use decode::{decode, read_varint};
pub use encode::*;

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
