//! Where a drain of the session puts what it sends: a list of packets (`Vec<Packet>`,
//! for tests and anything that wants packets), or straight into a connection's write
//! buffer (`EncodedOutgoing`).
//!
//! A delivery's PUBLISH is described by an `OutgoingPublish` (the delivery, its packet
//! id, DUP and topic alias) rather than built: the write buffer gets its bytes encoded
//! from the message itself (`protocol::encode_publish`), with no `Publish` assembled,
//! moved and dropped per subscriber, and no reference counts of topic and payload taken
//! and given back. Both ends produce the same bytes (tests in `session::tests::outgoing`).

use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;

use super::alias::AliasPlan;
use super::Delivery;
use crate::protocol::{
    encode, encode_publish, encoded_len, Packet, ProtocolVersion, Publish, PublishParts,
    PublishProperties,
};

/// One PUBLISH of a delivery, as the outbound state decides it.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublish<'a> {
    pub(crate) protocol: ProtocolVersion,
    pub(crate) delivery: &'a Delivery,
    pub(crate) now: Instant,
    /// 0 for QoS 0.
    pub(crate) packet_id: u16,
    pub(crate) dup: bool,
    pub(crate) plan: AliasPlan,
}

impl OutgoingPublish<'_> {
    /// The MQTT 5 properties of this PUBLISH: the forwarded ones, the remaining message
    /// expiry, the subscription identifiers and the topic alias. 3.x carries none.
    fn properties(&self) -> Option<PublishProperties> {
        if !self.protocol.is_v5() {
            return None;
        }
        let message = &self.delivery.message;
        Some(PublishProperties {
            message_expiry_interval: message.remaining_expiry(self.now),
            topic_alias: self.plan.alias(),
            subscription_identifiers: self.delivery.subscription_ids.clone(),
            ..message.properties.clone()
        })
    }

    /// The topic name on the wire: empty where an alias the client knows stands for it.
    fn topic(&self) -> &str {
        match self.plan {
            AliasPlan::Existing(_) => "",
            AliasPlan::None | AliasPlan::Assign(_) => &self.delivery.message.topic,
        }
    }

    /// Calls `f` with the encoder's view of this PUBLISH.
    fn with_parts<R>(&self, f: impl FnOnce(&PublishParts<'_>) -> R) -> R {
        let parts = PublishParts {
            dup: self.dup,
            qos: self.delivery.qos,
            retain: self.delivery.retain,
            topic: self.topic(),
            packet_id: self.packet_id,
            properties: None,
            payload: &self.delivery.message.payload,
        };
        // 3.x (most devices) builds no property set at all.
        if !self.protocol.is_v5() {
            return f(&parts);
        }
        match self.properties() {
            None => f(&parts),
            Some(properties) => f(&PublishParts {
                properties: Some(&properties),
                ..parts
            }),
        }
    }

    /// This PUBLISH as a packet.
    pub(crate) fn build(&self) -> Publish {
        let message = &self.delivery.message;
        let topic = match self.plan {
            AliasPlan::Existing(_) => ByteString::new(),
            AliasPlan::None | AliasPlan::Assign(_) => message.topic.clone(),
        };
        Publish {
            dup: self.dup,
            qos: self.delivery.qos,
            retain: self.delivery.retain,
            topic,
            packet_id: self.packet_id,
            properties: self.properties().unwrap_or_default(),
            payload: message.payload.clone(),
        }
    }
}

/// What a drain of the session sends to.
pub trait Outgoing {
    /// Adds a control packet (a PUBREL sent again after a reconnect).
    fn packet(&mut self, packet: Packet);

    /// Adds `publish` if its packet takes at most `limit` bytes; its length if so.
    fn publish(&mut self, publish: &OutgoingPublish<'_>, limit: usize) -> Option<usize>;
}

impl Outgoing for Vec<Packet> {
    fn packet(&mut self, packet: Packet) {
        self.push(packet);
    }

    fn publish(&mut self, publish: &OutgoingPublish<'_>, limit: usize) -> Option<usize> {
        let packet = Packet::Publish(publish.build());
        let length = encoded_len(&packet, publish.protocol);
        (length <= limit).then(|| {
            self.push(packet);
            length
        })
    }
}

/// Encodes what the session sends into a connection's write buffer, and counts it for
/// the statistics.
pub struct EncodedOutgoing<'a> {
    buf: &'a mut BytesMut,
    version: ProtocolVersion,
    /// Packets written.
    pub packets: u64,
    /// PUBLISH packets written, by QoS.
    pub publishes: [u64; 3],
}

impl<'a> EncodedOutgoing<'a> {
    pub fn new(buf: &'a mut BytesMut, version: ProtocolVersion) -> EncodedOutgoing<'a> {
        EncodedOutgoing {
            buf,
            version,
            packets: 0,
            publishes: [0; 3],
        }
    }
}

impl Outgoing for EncodedOutgoing<'_> {
    fn packet(&mut self, packet: Packet) {
        if let Packet::Publish(publish) = &packet {
            self.publishes[publish.qos as usize] += 1;
        }
        self.packets += 1;
        encode(&packet, self.version, self.buf);
    }

    fn publish(&mut self, publish: &OutgoingPublish<'_>, limit: usize) -> Option<usize> {
        let length =
            publish.with_parts(|parts| encode_publish(parts, publish.protocol, limit, self.buf))?;
        self.packets += 1;
        self.publishes[publish.delivery.qos as usize] += 1;
        Some(length)
    }
}
