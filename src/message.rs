//! The application message as the broker holds it between a publisher and its subscribers.
//!
//! A PUBLISH is turned into one `Arc<Message>` when it arrives; every subscriber's queue,
//! the retained store and (later) the storage layer share that one allocation.

use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{PublishProperties, QoS};

/// Identifies the connection-independent session a message came from, for No Local.
pub type SessionKey = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Always the full topic name (topic aliases are resolved before a Message is built).
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS the publisher sent it with; delivery QoS is min(this, granted).
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded unchanged to subscribers: payload format indicator, content
    /// type, response topic, correlation data, user properties. `topic_alias`,
    /// `subscription_identifiers` and `message_expiry_interval` are always cleared here:
    /// they are per hop and are filled in per delivery.
    pub properties: PublishProperties,
    /// When the message stops being deliverable (MQTT 5 message expiry interval).
    pub expires_at: Option<Instant>,
    /// The session that published it (`None` for wills and broker-generated messages
    /// such as `$SYS`), so No Local can skip it.
    pub publisher: Option<SessionKey>,
}

impl Message {
    /// True once the message expiry interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The remaining message expiry interval in whole seconds, to forward to a subscriber
    /// (spec 3.3.2.3.3: the receiver gets the interval minus the time spent waiting).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let remaining = at.saturating_duration_since(now);
            // Round up so a message with 0.4 s left is not forwarded as "0 = no expiry".
            let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }

    /// Approximate memory held by this message, for queue byte limits.
    pub fn size_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}
