//! The on-disk byte layout: keys of every column family and the compact binary values.
//!
//! Keys sort the way restore needs them: per-client keys start with the client id length
//! (u16 big-endian) and the id, so one client's entries are contiguous, and end with a
//! big-endian number (queue sequence, packet id) so they scan in order. Values start with
//! a format-version byte, then fixed-width big-endian integers, u32-length-prefixed byte
//! strings, 0/1-tagged options and u32-counted lists. Decoding checks every length against
//! the bytes left (corrupt data cannot make it allocate much) and never panics.
//!
//! | family          | key                              | value (after the version byte)        |
//! |-----------------|----------------------------------|---------------------------------------|
//! | `meta`          | `schema_version`                 | u32 (no version byte)                 |
//! | `sessions`      | client id                        | protocol level u8, expiry secs u32,   |
//! |                 |                                  | disconnected-at opt u64 ms, will opt  |
//! | `subscriptions` | client prefix + filter           | options u8 (SUBSCRIBE layout),        |
//! |                 |                                  | subscription id opt u32               |
//! | `retained`      | topic                            | message                               |
//! | `messages`      | message id u64                   | message                               |
//! | `queue`         | client prefix + sequence u64     | message id u64, QoS u8, retain u8,    |
//! |                 |                                  | subscription ids list u32             |
//! | `inflight`      | client prefix + sequence u64     | as `queue`, then packet id u16,       |
//! |                 |                                  | state u8 (1 PUBACK, 2 PUBREC, 3 PUBCOMP awaited) |
//! | `incoming`      | client prefix + packet id u16    | nothing                               |
//!
//! A message is: QoS u8, retain u8, expires-at opt u64 ms, topic, payload, then the
//! PUBLISH properties (payload format opt u8, message expiry opt u32, topic alias opt u16,
//! response topic opt, correlation data opt, user properties list of pairs, subscription
//! identifiers list u32, content type opt). A will is: topic, payload, QoS u8, retain u8,
//! will delay opt u32, payload format opt u8, message expiry opt u32, content type opt,
//! response topic opt, correlation data opt, user properties.

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{
    ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions, UserProperty,
    Will, WillProperties,
};
use crate::session::SubscriptionEntry;

use super::record::{InflightState, MessageId, SessionRecord, StoredMessage};

/// The record format of every value, and of a message without a cluster id.
pub const FORMAT_VERSION: u8 = 1;
/// A message with a cluster id (`StoredMessage::cluster_id`): the version 1 layout
/// followed by the id's node and sequence (u64 each). Only cluster nodes write it, so a
/// single node's records are exactly as before.
pub const MESSAGE_WITH_ID_VERSION: u8 = 2;
/// An incoming QoS 2 entry with the cluster id its message went under
/// (`StoreOp::IncomingInCluster`): the id's node and sequence (u64 each). Only cluster
/// nodes write it.
pub const INCOMING_WITH_ID_VERSION: u8 = 2;

/// Why bytes did not decode. The caller adds the column family and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub &'static str);

type Decoded<T> = Result<T, DecodeError>;

/// A queue or inflight reference as stored: which message, and how it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueValue {
    pub message_id: MessageId,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

// ---- keys ----

/// Client id length (u16 BE) and bytes. Client ids are MQTT strings, so at most 65535
/// bytes; the ledger refuses longer ones before anything is written.
pub fn client_prefix(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + client_id.len() + 8);
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key
}

pub fn subscription_key(client_id: &str, filter: &str) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(filter.as_bytes());
    key
}

/// Key of a queue or inflight entry.
pub fn sequence_key(client_id: &str, sequence: u64) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

pub fn incoming_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

pub fn message_key(message_id: MessageId) -> [u8; 8] {
    message_id.to_be_bytes()
}

/// Splits a per-client key into the client id and the rest.
pub fn split_client_key(key: &[u8]) -> Decoded<(ByteString, &[u8])> {
    let mut reader = Reader::new(key);
    let len = usize::from(reader.u16()?);
    let client = reader.take(len)?;
    let client = utf8(client)?;
    Ok((client, reader.rest()))
}

pub fn decode_string_key(key: &[u8]) -> Decoded<ByteString> {
    utf8(key)
}

pub fn decode_u64_key(key: &[u8]) -> Decoded<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| DecodeError("key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub fn decode_u16_key(key: &[u8]) -> Decoded<u16> {
    let bytes: [u8; 2] = key
        .try_into()
        .map_err(|_| DecodeError("key is not 2 bytes"))?;
    Ok(u16::from_be_bytes(bytes))
}

fn utf8(bytes: &[u8]) -> Decoded<ByteString> {
    ByteString::try_from(bytes).map_err(|_| DecodeError("string is not UTF-8"))
}

// ---- values: encoding ----

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![FORMAT_VERSION])
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }
    /// MQTT bounds every string and payload far below 4 GiB.
    fn bytes(&mut self, value: &[u8]) {
        self.u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(value);
    }
    fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Writer, T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }
    fn list<T>(&mut self, values: &[T], mut write: impl FnMut(&mut Writer, &T)) {
        self.u32(u32::try_from(values.len()).unwrap_or(u32::MAX));
        for value in values {
            write(self, value);
        }
    }
    fn user_properties(&mut self, properties: &[UserProperty]) {
        self.list(properties, |w, (name, value)| {
            w.bytes(name.as_bytes());
            w.bytes(value.as_bytes());
        });
    }
}

pub fn encode_session(record: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(record.protocol.level());
    w.u32(record.expiry_interval);
    w.option(record.disconnected_at, Writer::u64);
    w.option(record.will.as_ref(), |w, will| {
        w.bytes(will.topic.as_bytes());
        w.bytes(&will.payload);
        w.u8(will.qos as u8);
        w.bool(will.retain);
        let p = &will.properties;
        w.option(p.will_delay_interval, Writer::u32);
        w.option(p.payload_format_indicator, Writer::u8);
        w.option(p.message_expiry_interval, Writer::u32);
        w.option(p.content_type.as_ref(), |w, v| w.bytes(v.as_bytes()));
        w.option(p.response_topic.as_ref(), |w, v| w.bytes(v.as_bytes()));
        w.option(p.correlation_data.as_ref(), |w, v| w.bytes(v));
        w.user_properties(&p.user_properties);
    });
    w.0
}

/// Subscription options in their SUBSCRIBE wire layout: QoS, No Local, Retain As
/// Published, Retain Handling.
pub fn encode_subscription(entry: &SubscriptionEntry) -> Vec<u8> {
    let options = entry.options;
    let mut w = Writer::new();
    w.u8(options.qos as u8
        | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4);
    w.option(entry.subscription_id, Writer::u32);
    w.0
}

pub fn encode_message(message: &StoredMessage) -> Vec<u8> {
    let mut w = Writer::new();
    if message.cluster_id.is_some() {
        w.0[0] = MESSAGE_WITH_ID_VERSION;
    }
    w.u8(message.qos as u8);
    w.bool(message.retain);
    w.option(message.expires_at, Writer::u64);
    w.bytes(message.topic.as_bytes());
    w.bytes(&message.payload);
    let p = &message.properties;
    w.option(p.payload_format_indicator, Writer::u8);
    w.option(p.message_expiry_interval, Writer::u32);
    w.option(p.topic_alias, Writer::u16);
    w.option(p.response_topic.as_ref(), |w, v| w.bytes(v.as_bytes()));
    w.option(p.correlation_data.as_ref(), |w, v| w.bytes(v));
    w.user_properties(&p.user_properties);
    w.list(&p.subscription_identifiers, |w, id| w.u32(*id));
    w.option(p.content_type.as_ref(), |w, v| w.bytes(v.as_bytes()));
    if let Some(id) = message.cluster_id {
        w.u64(id.node);
        w.u64(id.sequence);
    }
    w.0
}

fn write_queue_value(w: &mut Writer, value: &QueueValue) {
    w.u64(value.message_id);
    w.u8(value.qos as u8);
    w.bool(value.retain);
    w.list(&value.subscription_ids, |w, id| w.u32(*id));
}

pub fn encode_queued(value: &QueueValue) -> Vec<u8> {
    let mut w = Writer::new();
    write_queue_value(&mut w, value);
    w.0
}

pub fn encode_inflight(value: &QueueValue, packet_id: u16, state: InflightState) -> Vec<u8> {
    let mut w = Writer::new();
    write_queue_value(&mut w, value);
    w.u16(packet_id);
    w.u8(match state {
        InflightState::AwaitingPubAck => 1,
        InflightState::AwaitingPubRec => 2,
        InflightState::AwaitingPubComp => 3,
    });
    w.0
}

/// An incoming QoS 2 entry is all key; the value carries the format version, and on a
/// cluster node the id its message went under once known.
pub fn encode_incoming(cluster_id: Option<crate::message::ClusterMessageId>) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some(id) = cluster_id {
        w.0[0] = INCOMING_WITH_ID_VERSION;
        w.u64(id.node);
        w.u64(id.sequence);
    }
    w.0
}

// ---- values: decoding ----

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }
    /// Checks the format version byte.
    fn versioned(bytes: &'a [u8]) -> Decoded<Reader<'a>> {
        let mut reader = Reader::new(bytes);
        match reader.u8()? {
            FORMAT_VERSION => Ok(reader),
            0 => Err(DecodeError("record format version 0 is invalid")),
            _ => Err(DecodeError(
                "record format version is newer than this build",
            )),
        }
    }
    fn take(&mut self, len: usize) -> Decoded<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(DecodeError("record is truncated"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let bytes = self.take(N)?;
        bytes
            .try_into()
            .map_err(|_| DecodeError("record is truncated"))
    }
    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Decoded<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bool(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("invalid boolean")),
        }
    }
    fn qos(&mut self) -> Decoded<QoS> {
        QoS::from_u8(self.u8()?).ok_or(DecodeError("invalid QoS"))
    }
    fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError("length too large"))?;
        self.take(len)
    }
    fn owned_bytes(&mut self) -> Decoded<Bytes> {
        Ok(Bytes::copy_from_slice(self.bytes()?))
    }
    fn string(&mut self) -> Decoded<ByteString> {
        utf8(self.bytes()?)
    }
    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Reader<'a>) -> Decoded<T>,
    ) -> Decoded<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(DecodeError("invalid option tag")),
        }
    }
    /// Each element takes at least one byte, so a count larger than what is left is
    /// corrupt; checking it first keeps a bad count from reserving memory.
    fn list<T>(&mut self, mut read: impl FnMut(&mut Reader<'a>) -> Decoded<T>) -> Decoded<Vec<T>> {
        let count = usize::try_from(self.u32()?).map_err(|_| DecodeError("count too large"))?;
        if count > self.bytes.len() {
            return Err(DecodeError("list count exceeds the record"));
        }
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(read(self)?);
        }
        Ok(values)
    }
    fn user_properties(&mut self) -> Decoded<Vec<UserProperty>> {
        self.list(|r| Ok((r.string()?, r.string()?)))
    }
    fn rest(&self) -> &'a [u8] {
        self.bytes
    }
    fn finish<T>(self, value: T) -> Decoded<T> {
        if self.bytes.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError("trailing bytes after the record"))
        }
    }
}

fn protocol_from_level(level: u8) -> Decoded<ProtocolVersion> {
    match level {
        3 => Ok(ProtocolVersion::V3_1),
        4 => Ok(ProtocolVersion::V3_1_1),
        5 => Ok(ProtocolVersion::V5),
        _ => Err(DecodeError("invalid protocol level")),
    }
}

/// Decodes a session value; the client id comes from the key.
pub fn decode_session(client_id: ByteString, value: &[u8]) -> Decoded<SessionRecord> {
    let mut r = Reader::versioned(value)?;
    let protocol = protocol_from_level(r.u8()?)?;
    let expiry_interval = r.u32()?;
    let disconnected_at = r.option(Reader::u64)?;
    let will = r.option(|r| {
        Ok(Will {
            topic: r.string()?,
            payload: r.owned_bytes()?,
            qos: r.qos()?,
            retain: r.bool()?,
            properties: WillProperties {
                will_delay_interval: r.option(Reader::u32)?,
                payload_format_indicator: r.option(Reader::u8)?,
                message_expiry_interval: r.option(Reader::u32)?,
                content_type: r.option(Reader::string)?,
                response_topic: r.option(Reader::string)?,
                correlation_data: r.option(Reader::owned_bytes)?,
                user_properties: r.user_properties()?,
            },
        })
    })?;
    r.finish(SessionRecord {
        client_id,
        protocol,
        expiry_interval,
        will,
        disconnected_at,
    })
}

pub fn decode_subscription(value: &[u8]) -> Decoded<SubscriptionEntry> {
    let mut r = Reader::versioned(value)?;
    let byte = r.u8()?;
    if byte & 0xC0 != 0 {
        return Err(DecodeError("reserved subscription option bits set"));
    }
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError("invalid retain handling")),
    };
    let options = SubscriptionOptions {
        qos: QoS::from_u8(byte & 0x03).ok_or(DecodeError("invalid QoS"))?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    };
    let subscription_id = r.option(Reader::u32)?;
    r.finish(SubscriptionEntry {
        options,
        subscription_id,
    })
}

pub fn decode_message(value: &[u8]) -> Decoded<StoredMessage> {
    let with_id = value.first() == Some(&MESSAGE_WITH_ID_VERSION);
    let mut r = match value.split_first() {
        Some((_, rest)) if with_id => Reader::new(rest),
        _ => Reader::versioned(value)?,
    };
    let qos = r.qos()?;
    let retain = r.bool()?;
    let expires_at = r.option(Reader::u64)?;
    let topic = r.string()?;
    let payload = r.owned_bytes()?;
    let properties = PublishProperties {
        payload_format_indicator: r.option(Reader::u8)?,
        message_expiry_interval: r.option(Reader::u32)?,
        topic_alias: r.option(Reader::u16)?,
        response_topic: r.option(Reader::string)?,
        correlation_data: r.option(Reader::owned_bytes)?,
        user_properties: r.user_properties()?,
        subscription_identifiers: r.list(Reader::u32)?,
        content_type: r.option(Reader::string)?,
    };
    let cluster_id = if with_id {
        Some(crate::message::ClusterMessageId {
            node: r.u64()?,
            sequence: r.u64()?,
        })
    } else {
        None
    };
    r.finish(StoredMessage {
        topic,
        payload,
        qos,
        retain,
        properties,
        expires_at,
        cluster_id,
    })
}

fn read_queue_value(r: &mut Reader<'_>) -> Decoded<QueueValue> {
    Ok(QueueValue {
        message_id: r.u64()?,
        qos: r.qos()?,
        retain: r.bool()?,
        subscription_ids: r.list(Reader::u32)?,
    })
}

pub fn decode_queued(value: &[u8]) -> Decoded<QueueValue> {
    let mut r = Reader::versioned(value)?;
    let queued = read_queue_value(&mut r)?;
    r.finish(queued)
}

pub fn decode_inflight(value: &[u8]) -> Decoded<(QueueValue, u16, InflightState)> {
    let mut r = Reader::versioned(value)?;
    let queued = read_queue_value(&mut r)?;
    let packet_id = r.u16()?;
    let state = match r.u8()? {
        1 => InflightState::AwaitingPubAck,
        2 => InflightState::AwaitingPubRec,
        3 => InflightState::AwaitingPubComp,
        _ => return Err(DecodeError("invalid inflight state")),
    };
    r.finish((queued, packet_id, state))
}

pub fn decode_incoming(value: &[u8]) -> Decoded<Option<crate::message::ClusterMessageId>> {
    match value.split_first() {
        Some((&INCOMING_WITH_ID_VERSION, rest)) => {
            let mut r = Reader::new(rest);
            let id = crate::message::ClusterMessageId {
                node: r.u64()?,
                sequence: r.u64()?,
            };
            r.finish(Some(id))
        }
        _ => Reader::versioned(value)?.finish(None),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
