//! What the session hands back to its connection after a packet: the actions to carry
//! out (`Action`, with the subscription changes it asks the broker for) or the protocol
//! violation that closes the connection.

use std::sync::Arc;

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::Packet;

use super::SubscriptionEntry;

/// A protocol violation: the connection is closed, with a MQTT 5 DISCONNECT carrying
/// `reason_code` where the client speaks 5.0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (reason 0x{reason_code:02X})")]
pub struct Violation {
    pub reason_code: u8,
    pub message: &'static str,
}

/// What the connection must do after the session handled a packet.
// `Send` is large because a packet is; actions are short-lived and moved, not stored, so
// boxing every packet would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this packet to the client.
    Send(Packet),
    /// Route an application message to subscribers (and retain it if flagged).
    /// Comes before the acknowledgement of the same PUBLISH in the action list.
    Route(Arc<Message>),
    /// The client subscribed; the broker updates the routes, sends SUBACK with these
    /// per-filter results and the retained messages. Filters the session found invalid
    /// carry their failure reason code and must not be routed.
    Subscribe(SubscribeRequest),
    /// The client unsubscribed; the broker removes the routes and sends UNSUBACK.
    Unsubscribe(UnsubscribeRequest),
    /// The client disconnected cleanly (DISCONNECT); publish the will only if
    /// `publish_will` (MQTT 5 reason 0x04).
    Disconnect { publish_will: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub packet_id: u16,
    pub filters: Vec<FilterRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRequest {
    pub filter: ByteString,
    pub entry: SubscriptionEntry,
    /// `Ok(existed_before)` for an accepted filter, `Err(reason_code)` otherwise.
    pub result: Result<bool, u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRequest {
    pub packet_id: u16,
    /// Each filter with whether the session had it (MQTT 5 UNSUBACK 0x00 vs 0x11).
    pub filters: Vec<(ByteString, bool)>,
}
