//! The per-client session as a pure state machine (no sockets, no clocks, no tokio).
//!
//! Time comes in as `now`, packets come in decoded, and what the connection must do comes
//! out as `Action`s. The session outlives its connections: a persistent session keeps its
//! subscriptions, queued messages and inflight state while its client is offline.
//! The connection task and the broker carry out the actions; nothing here does I/O, so
//! every QoS flow, takeover and expiry rule is testable without a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::message::{Message, SessionKey};
use crate::protocol::{Connect, Packet, ProtocolVersion, QoS, SubscriptionOptions, Will};

/// Per-session limits, from `[limits]` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outgoing QoS 1/2 window for 3.x clients; MQTT 5 uses min(this, client Receive Maximum).
    pub max_inflight: u16,
    /// Incoming QoS 2 messages awaiting PUBREL (our MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Topic aliases the client may use towards us (our Topic Alias Maximum).
    pub topic_alias_maximum: u16,
}

/// One message on its way to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS), already computed by the router.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Identifiers of every matching subscription that has one (MQTT 5).
    pub subscription_ids: Vec<u32>,
}

/// A subscription as the session remembers it (to restore routes and answer UNSUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEntry {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Why a message did not reach the client. Every drop is counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    QueueFull,
    Expired,
    /// QoS 0 for a client that is offline is not queued (as Mosquitto by default).
    OfflineQos0,
    /// Larger than the client's Maximum Packet Size (MQTT 5 says discard it).
    TooLargeForClient,
}

/// A protocol violation: the connection is closed, with a MQTT 5 DISCONNECT carrying
/// `reason_code` where the client speaks 5.0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (reason 0x{reason_code:02X})")]
pub struct Violation {
    pub reason_code: u8,
    pub message: &'static str,
}

/// What the connection must do after the session handled a packet.
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

pub struct Session {
    _private: (),
}

impl Session {
    /// A new, empty session for `client_id`.
    pub fn new(key: SessionKey, client_id: ByteString, limits: SessionLimits) -> Session {
        let _ = (key, client_id, limits);
        todo!("session")
    }

    pub fn key(&self) -> SessionKey {
        todo!("session")
    }

    pub fn client_id(&self) -> &ByteString {
        todo!("session")
    }

    pub fn protocol(&self) -> ProtocolVersion {
        todo!("session")
    }

    /// A connection attaches (first connect, reconnect or takeover). Takes the client's
    /// version, Receive Maximum, Maximum Packet Size, Topic Alias Maximum, session expiry
    /// and will from CONNECT, resets topic aliases (they live per connection), and marks
    /// inflight messages for redelivery with DUP set (PUBREL for those already PUBREC'd),
    /// in their original order, ahead of queued messages.
    pub fn attach(&mut self, connect: &Connect, session_expiry: Duration, now: Instant) {
        let _ = (connect, session_expiry, now);
        todo!("session")
    }

    /// The connection went away (for any reason). Topic aliases are dropped; inflight and
    /// queued messages stay for the next connection.
    pub fn detach(&mut self, now: Instant) {
        let _ = now;
        todo!("session")
    }

    pub fn is_connected(&self) -> bool {
        todo!("session")
    }

    /// How long the session lives after detach (0: ends with the connection).
    pub fn expiry_interval(&self) -> Duration {
        todo!("session")
    }

    /// Takes the will (it is published at most once).
    pub fn take_will(&mut self) -> Option<Will> {
        todo!("session")
    }

    /// Handles one packet from the client (anything after CONNECT).
    pub fn handle_packet(
        &mut self,
        packet: Packet,
        now: Instant,
    ) -> Result<Vec<Action>, Violation> {
        let _ = (packet, now);
        todo!("session")
    }

    /// Queues a message for the client. QoS 0 to an offline client, an expired message
    /// or a full queue (in messages or bytes) drop it and say why.
    pub fn enqueue(&mut self, delivery: Delivery, now: Instant) -> Result<(), DropReason> {
        let _ = (delivery, now);
        todo!("session")
    }

    /// Moves what may be sent now into `out`: redeliveries first, then queued messages
    /// while the inflight window allows, assigning packet ids (from 1 upwards, skipping ids
    /// in flight) and outgoing topic aliases. Expired or too-large messages are dropped and
    /// reported in `dropped`.
    pub fn poll_outgoing(
        &mut self,
        now: Instant,
        out: &mut Vec<Packet>,
        dropped: &mut Vec<DropReason>,
    ) {
        let _ = (now, out, dropped);
        todo!("session")
    }

    /// True if `poll_outgoing` would produce something.
    pub fn has_outgoing(&self) -> bool {
        todo!("session")
    }

    /// Records an accepted subscription; returns whether it existed before.
    pub fn add_subscription(&mut self, filter: ByteString, entry: SubscriptionEntry) -> bool {
        let _ = (filter, entry);
        todo!("session")
    }

    /// Forgets a subscription; returns whether it existed.
    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        let _ = filter;
        todo!("session")
    }

    /// Every subscription, to remove the routes when the session ends.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteString, &SubscriptionEntry)> {
        std::iter::empty()
    }

    /// Messages queued and not yet in flight.
    pub fn queued_len(&self) -> usize {
        todo!("session")
    }

    /// Outgoing QoS 1/2 messages awaiting acknowledgement.
    pub fn inflight_len(&self) -> usize {
        todo!("session")
    }
}
