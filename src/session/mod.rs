//! The per-client session as a pure state machine (no sockets, no clocks, no tokio).
//!
//! Time comes in as `now`, packets come in decoded, and what the connection must do comes
//! out as `Action`s. The session outlives its connections: a persistent session keeps its
//! subscriptions, queued messages and inflight state while its client is offline.
//! The connection task and the broker carry out the actions; nothing here does I/O, so
//! every QoS flow, takeover and expiry rule is testable without a socket.
//!
//! The connection drives it in two steps: `handle_packet` for each packet read (its
//! actions include the acknowledgements), then `poll_outgoing` for what may be sent now.
//! An acknowledgement from the client frees window slots only for the next poll, and
//! `enqueue` from the router only queues, so the connection polls after both.
//!
//! This file holds the API and the per-connection parameters; the work is split along the
//! two directions of traffic: `inbound` (client to broker PUBLISH, PUBREL, topic aliases),
//! `outbound` (queue, inflight window, packet ids, redelivery), `retained_backlog`
//! (retained messages owed since a SUBSCRIBE, apart from the queue), `alias` (outgoing
//! topic alias cache) and `control` (SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH and the packets a
//! client may not send).

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::message::{Message, SessionKey};
use crate::protocol::{Connect, Packet, ProtocolVersion, QoS, SubscriptionOptions, Will};
use crate::storage::{InflightState, MessageId, StoreOp};
use crate::topic::SmallMap;
use packed_instant::PackedInstant;

mod actions;
mod alias;
mod client_info;
mod control;
mod inbound;
mod inflight;
mod journal;
mod lazy_map;
mod outbound;
mod outgoing;
mod packed_instant;
mod retained_backlog;
#[cfg(test)]
mod tests;

pub use actions::{Action, FilterRequest, SubscribeRequest, UnsubscribeRequest, Violation};
pub use client_info::{ClientInfo, PeerAddr};
pub use outgoing::{EncodedOutgoing, Outgoing};

/// Per-session limits, from `[limits]` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outgoing QoS 1/2 window for 3.x clients; MQTT 5 uses min(this, client Receive Maximum).
    pub max_inflight: u16,
    /// Incoming QoS 2 messages awaiting PUBREL (our MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Retained messages owed since SUBSCRIBEs, waiting apart from the queue.
    pub max_retained_backlog: usize,
    /// Topic aliases the client may use towards us (our Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Set for the local session of a bridge, whose queue is the bridge's outbox.
    pub outbox: Option<OutboxMode>,
}

/// How the queue of a bridge's local session differs from a client's: it never makes
/// publishers wait (a slow or unreachable remote must not slow the site down), a full
/// queue drops its oldest QoS 0 messages first and, under `drop_oldest`, then its
/// oldest messages, and every drop is counted for the bridge.
#[derive(Debug, Clone)]
pub struct OutboxMode {
    pub drop_oldest: bool,
    pub drops: Arc<OutboxDrops>,
}

impl PartialEq for OutboxMode {
    fn eq(&self, other: &OutboxMode) -> bool {
        self.drop_oldest == other.drop_oldest && Arc::ptr_eq(&self.drops, &other.drops)
    }
}

impl Eq for OutboxMode {}

/// Messages a bridge's outbox did not keep, by reason.
#[derive(Debug, Default)]
pub struct OutboxDrops {
    /// New messages refused by a full outbox.
    pub refused: AtomicU64,
    /// Waiting messages dropped to make room (QoS 0 first, then the oldest).
    pub evicted: AtomicU64,
    /// Messages whose Message Expiry Interval passed before they could be sent.
    pub expired: AtomicU64,
    /// QoS 0 messages while the link was down (never kept, as for any client).
    pub offline_qos0: AtomicU64,
    /// Larger than the remote accepts.
    pub too_large: AtomicU64,
}

impl OutboxDrops {
    pub fn count(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::QueueFull | DropReason::RetainedBacklogFull => &self.refused,
            DropReason::Expired => &self.expired,
            DropReason::OfflineQos0 => &self.offline_qos0,
            DropReason::TooLargeForClient => &self.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
    /// The stored body this delivery refers to, when the store holds it for this
    /// session (QoS 1/2 for a persistent session); its progress is then journaled.
    pub stored: Option<MessageId>,
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
    /// A retained message matched at SUBSCRIBE beyond `max_retained_backlog`.
    RetainedBacklogFull,
}

/// What the current connection negotiated in CONNECT. Reset on every `attach`.
#[derive(Debug, Clone)]
struct ConnectionParams {
    protocol: ProtocolVersion,
    connected: bool,
    /// The client's Receive Maximum (MQTT 5; the decoder refuses 0); `None`: 65535 as
    /// the spec defaults it.
    client_receive_maximum: Option<NonZeroU16>,
    /// The client's Maximum Packet Size (MQTT 5; the decoder refuses 0); `None`: only
    /// the protocol limit.
    client_maximum_packet_size: Option<NonZeroU32>,
    /// The client's Topic Alias Maximum (MQTT 5): how many aliases we may assign.
    client_topic_alias_maximum: u16,
    /// MQTT 5 forbids raising a zero Session Expiry Interval from CONNECT in DISCONNECT.
    connect_expiry_was_zero: bool,
}

pub struct Session {
    key: SessionKey,
    /// Shared by every session created under the same configuration.
    limits: Arc<SessionLimits>,
    params: ConnectionParams,
    /// How long the session lives after detach, in milliseconds (a `Duration` would take
    /// 16 bytes of every session; see `expiry_interval`).
    expiry_interval_ms: u64,
    /// The will and the authentication method of CONNECT, boxed together: most clients
    /// set neither, and inline they would size every session.
    extras: Option<Box<ConnectExtras>>,
    /// Vector-backed for the usual one or few filters (`SmallMap`).
    /// Filters as `Box<str>` (16 bytes, not a `ByteString`'s 32): a device's one filter
    /// entry is then a 32-byte allocation; callers get `ByteString`s made on the way out.
    subscriptions: SmallMap<Box<str>, SubscriptionEntry>,
    inbound: inbound::Inbound,
    /// Allocated by the first message for the client and dropped again once nothing is
    /// queued, owed or in flight and the connection goes idle (`release_idle_memory`):
    /// an idle device holds one pointer of it.
    outbound: Option<Box<outbound::Outbound>>,
    journal: journal::Journal,
    /// When the last connection went away; none while connected or never connected.
    detached_at: PackedInstant,
    /// What operators see of the session (`crate::admin`); boxed, as only they read
    /// it, so it costs a session one pointer.
    operator: Option<Box<OperatorView>>,
}

/// What few CONNECTs carry, kept while the connection's session lasts.
#[derive(Debug)]
struct ConnectExtras {
    will: Option<Will>,
    /// The Authentication Method of CONNECT, if any (enhanced authentication).
    authentication_method: Option<ByteString>,
}

/// The operators' view of a session: who is (or was last) connected and how many
/// messages for it were dropped.
#[derive(Debug, Default)]
struct OperatorView {
    client: Option<ClientInfo>,
    dropped: u64,
}

/// What a restarted broker knows of a session the store kept.
#[derive(Debug)]
pub struct RestoredParts {
    pub protocol: ProtocolVersion,
    pub expiry_interval: Duration,
    pub detached_at: Instant,
    pub subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    /// In queue order.
    pub queue: Vec<Delivery>,
    /// In send order, with the packet id and state each had.
    pub inflight: Vec<(Delivery, u16, InflightState)>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
    /// Those of them whose resend is routed again: all of them restored on a cluster
    /// node, where the record does not say that every forward of its message left
    /// (`inbound::IncomingWrite::Unconfirmed`), and those a session handed over by its
    /// live owner had not seen resent there yet.
    pub incoming_qos2_unconfirmed: Vec<u16>,
    /// The cluster ids those messages went under, where the backups knew them: a resend
    /// is routed under the same id.
    pub incoming_qos2_ids: Vec<(u16, crate::message::ClusterMessageId)>,
}

impl Session {
    /// A new, empty session for `client_id`.
    ///
    /// Until the first `attach` the session assumes MQTT 3.1.1 and is not connected.
    pub fn new(key: SessionKey, limits: impl Into<Arc<SessionLimits>>) -> Session {
        Session {
            key,
            limits: limits.into(),
            params: ConnectionParams {
                protocol: ProtocolVersion::V3_1_1,
                connected: false,
                client_receive_maximum: None,
                client_maximum_packet_size: None,
                client_topic_alias_maximum: 0,
                connect_expiry_was_zero: true,
            },
            expiry_interval_ms: 0,
            extras: None,
            subscriptions: Default::default(),
            inbound: inbound::Inbound::default(),
            outbound: None,
            journal: journal::Journal::default(),
            detached_at: PackedInstant::NONE,
            operator: None,
        }
    }

    /// A persistent session rebuilt from the store after a restart: offline, with its
    /// subscriptions, queue, inflight messages (redelivered when a client attaches) and
    /// incoming QoS 2 packet ids.
    pub fn restored(
        key: SessionKey,
        client_id: ByteString,
        limits: impl Into<Arc<SessionLimits>>,
        parts: RestoredParts,
    ) -> Session {
        let mut session = Session::new(key, limits);
        session.params.protocol = parts.protocol;
        session.set_expiry_interval(parts.expiry_interval);
        session.detached_at = PackedInstant::at(parts.detached_at);
        session.subscriptions = parts
            .subscriptions
            .into_iter()
            .map(|(filter, entry)| (Box::from(&*filter), entry))
            .collect();
        for delivery in parts.queue {
            session.outbound_mut().restore_queued(delivery);
        }
        for (delivery, packet_id, state) in parts.inflight {
            session
                .outbound_mut()
                .restore_inflight(delivery, packet_id, state);
        }
        session.inbound.restore_awaiting_release(
            parts.incoming_qos2,
            &parts.incoming_qos2_unconfirmed,
            &parts.incoming_qos2_ids,
        );
        session.journal.set_persistent(Some(&client_id));
        session
    }

    /// Everything of this session another node needs to carry it on (a takeover across
    /// nodes): the same parts a restart restores. `detached_at` is when its last
    /// connection went away (the caller's now for a connected session).
    pub fn export(&self, now: Instant) -> RestoredParts {
        let (incoming_qos2_unconfirmed, incoming_qos2_ids) = self.inbound.unconfirmed();
        let (inflight, queue) = self
            .outbound
            .as_deref()
            .map(outbound::Outbound::export)
            .unwrap_or_default();
        RestoredParts {
            protocol: self.params.protocol,
            expiry_interval: self.expiry_interval(),
            detached_at: self
                .detached_at
                .get()
                .filter(|_| !self.params.connected)
                .unwrap_or(now),
            subscriptions: self
                .subscriptions()
                .map(|(filter, entry)| (filter, *entry))
                .collect(),
            queue,
            inflight,
            incoming_qos2: self.inbound.awaiting_release_ids(),
            // Handed over by a live node, the packet ids it confirmed stay confirmed
            // (their forwards go on from there); those it took unconfirmed from a
            // backup's copy and whose resend it has not seen stay unconfirmed: acknowledged
            // without routing at the next node, a message whose forward never left the
            // dead node would be lost.
            incoming_qos2_unconfirmed,
            incoming_qos2_ids,
        }
    }

    /// Whether the store keeps this session (it outlives its connection).
    pub fn is_persistent(&self) -> bool {
        self.journal.is_persistent()
    }

    /// Starts journaling changes for the store, with the client id the stored records
    /// are keyed by, or (`None`) stops.
    pub fn set_persistent(&mut self, client_id: Option<&ByteString>) {
        self.journal.set_persistent(client_id);
    }

    /// The store operations for the changes made since the last call, in order. Submit
    /// them before releasing the session lock.
    pub fn take_journal(&mut self) -> Vec<StoreOp> {
        self.journal.take()
    }

    /// When the last connection went away; `None` while a client is connected.
    pub fn detached_at(&self) -> Option<Instant> {
        self.detached_at.get()
    }

    pub fn key(&self) -> SessionKey {
        self.key
    }

    /// Who is (or was last) connected; `None` before the first connection of this run.
    pub fn client_info(&self) -> Option<&ClientInfo> {
        self.operator.as_ref()?.client.as_ref()
    }

    pub fn set_client_info(&mut self, info: ClientInfo) {
        self.operator.get_or_insert_with(Box::default).client = Some(info);
    }

    /// Messages for this session dropped so far (queue full, expired, offline QoS 0,
    /// too large for the client, retained backlog full).
    pub fn dropped_count(&self) -> u64 {
        self.operator.as_ref().map_or(0, |view| view.dropped)
    }

    /// Counts `count` dropped messages (not on the delivery path: only when some were
    /// dropped).
    fn count_dropped(&mut self, count: usize) {
        if count > 0 {
            self.operator.get_or_insert_with(Box::default).dropped += count as u64;
        }
    }

    /// The client id of a session the store keeps (`None` for one that is not
    /// persistent: only the session's handle holds the id then).
    pub fn stored_client_id(&self) -> Option<&ByteString> {
        self.journal.client_id()
    }

    pub fn protocol(&self) -> ProtocolVersion {
        self.params.protocol
    }

    /// The limits this session was created with.
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Replaces the limits (a bridge's outbox settings, reloaded). What is queued stays,
    /// even beyond new, smaller limits: nothing accepted is dropped by a reload.
    pub fn set_limits(&mut self, limits: Arc<SessionLimits>) {
        self.limits = limits;
    }

    /// A connection attaches (first connect, reconnect or takeover). Takes the client's
    /// version, Receive Maximum, Maximum Packet Size, Topic Alias Maximum, session expiry
    /// and will from CONNECT, resets topic aliases (they live per connection), and marks
    /// inflight messages for redelivery with DUP set (PUBREL for those already PUBREC'd),
    /// in their original order, ahead of queued messages.
    pub fn attach(&mut self, connect: &Connect, session_expiry: Duration, now: Instant) {
        let _ = now;
        self.detached_at = PackedInstant::NONE;
        let v5 = connect.protocol.is_v5();
        let properties = &connect.properties;
        self.params = ConnectionParams {
            protocol: connect.protocol,
            connected: true,
            client_receive_maximum: properties
                .receive_maximum
                .filter(|_| v5)
                .and_then(NonZeroU16::new),
            client_maximum_packet_size: properties
                .maximum_packet_size
                .filter(|_| v5)
                .and_then(NonZeroU32::new),
            client_topic_alias_maximum: if v5 {
                properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            connect_expiry_was_zero: properties.session_expiry_interval.unwrap_or(0) == 0,
        };
        self.set_expiry_interval(session_expiry);
        let authentication_method = properties.authentication_method.clone().filter(|_| v5);
        self.extras = (connect.will.is_some() || authentication_method.is_some()).then(|| {
            Box::new(ConnectExtras {
                will: connect.will.clone(),
                authentication_method,
            })
        });
        self.inbound.reset_aliases();
        if let Some(outbound) = &mut self.outbound {
            outbound.attach(self.params.client_topic_alias_maximum);
        }
    }

    /// The connection went away (for any reason). Topic aliases are dropped; inflight and
    /// queued messages stay for the next connection.
    pub fn detach(&mut self, now: Instant) {
        self.detached_at = PackedInstant::at(now);
        self.params.connected = false;
        self.inbound.reset_aliases();
        if let Some(outbound) = &mut self.outbound {
            outbound.detach();
        }
        self.release_idle_memory();
    }

    /// Gives back the memory of the outbound state (queue, inflight window, retained
    /// backlog, topic aliases) when none of it holds a message: called when the
    /// connection goes idle or away. The next message allocates it again; packet ids and
    /// outgoing topic aliases start afresh then, which MQTT allows once no flow uses them
    /// (an alias is assigned again with its topic).
    pub fn release_idle_memory(&mut self) {
        if self
            .outbound
            .as_deref()
            .is_some_and(outbound::Outbound::is_idle)
        {
            self.outbound = None;
        }
    }

    /// The outbound state, allocated on first use.
    fn outbound_mut(&mut self) -> &mut outbound::Outbound {
        let alias_maximum = if self.params.connected {
            self.params.client_topic_alias_maximum
        } else {
            0
        };
        outbound::Outbound::ensure(&mut self.outbound, alias_maximum)
    }

    pub fn is_connected(&self) -> bool {
        self.params.connected
    }

    /// How long the session lives after detach (0: ends with the connection).
    pub fn expiry_interval(&self) -> Duration {
        Duration::from_millis(self.expiry_interval_ms)
    }

    /// Overrides the session expiry interval, e.g. to clamp a value the client set in
    /// DISCONNECT to the broker's configured maximum.
    /// Kept to the millisecond, rounded up: a non-zero interval stays non-zero.
    pub fn set_expiry_interval(&mut self, interval: Duration) {
        let millis = interval.as_nanos().div_ceil(1_000_000);
        self.expiry_interval_ms = u64::try_from(millis).unwrap_or(u64::MAX);
    }

    /// Takes the will (it is published at most once).
    pub fn take_will(&mut self) -> Option<Will> {
        let will = self.extras.as_deref_mut()?.will.take();
        if self
            .extras
            .as_deref()
            .is_some_and(|extras| extras.authentication_method.is_none())
        {
            self.extras = None;
        }
        will
    }

    /// The will as stored, without taking it (e.g. to read its delay interval).
    pub fn will(&self) -> Option<&Will> {
        self.extras.as_deref()?.will.as_ref()
    }

    /// Handles one packet from the client (anything after CONNECT).
    ///
    /// A client may only send what the spec lets a client send: a second CONNECT and the
    /// server-only packets (CONNACK, SUBACK, UNSUBACK, PINGRESP) are protocol errors
    /// (0x82), as is AUTH without an authentication method in CONNECT.
    pub fn handle_packet(
        &mut self,
        packet: Packet,
        now: Instant,
    ) -> Result<Vec<Action>, Violation> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, now),
            Packet::PubRel(response) => Ok(self.handle_pubrel(response)),
            Packet::PubAck(response) => self.handle_puback(response).map(|()| Vec::new()),
            Packet::PubRec(response) => self.handle_pubrec(response),
            Packet::PubComp(response) => self.handle_pubcomp(response),
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => Ok(self.handle_unsubscribe(unsubscribe)),
            Packet::PingReq => Ok(vec![Action::Send(Packet::PingResp)]),
            Packet::Disconnect(disconnect) => self.handle_disconnect(disconnect),
            Packet::Auth(auth) => self.handle_auth(auth),
            Packet::Connect(_) => Err(control::protocol_error("second CONNECT on a connection")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => Err(
                control::protocol_error("client sent a packet only a server may send"),
            ),
        }
    }

    /// Queues a message for the client. QoS 0 to an offline client, an expired message
    /// or a full queue (in messages or bytes) drop it and say why.
    ///
    /// A stored delivery that is refused is journaled as dropped, since the store queued
    /// it before the session saw it.
    pub fn enqueue(&mut self, delivery: Delivery, now: Instant) -> Result<(), DropReason> {
        let refused = if delivery.message.is_expired(now) {
            DropReason::Expired
        } else if !self.params.connected && delivery.qos == QoS::AtMostOnce {
            DropReason::OfflineQos0
        } else if !self.has_room(&delivery) && !self.make_room(&delivery) {
            DropReason::QueueFull
        } else {
            self.outbound_mut().push(delivery);
            return Ok(());
        };
        self.journal.dropped(&delivery);
        self.count_dropped(1);
        if let Some(outbox) = &self.limits.outbox {
            outbox.drops.count(refused);
        }
        Err(refused)
    }

    /// A bridge's outbox is full: drops waiting QoS 0 messages, then (under
    /// `drop_oldest`, for a QoS 1/2 newcomer) the oldest ones, until `delivery` fits.
    /// Whether it fits now. Client sessions never drop what they queued.
    fn make_room(&mut self, delivery: &Delivery) -> bool {
        let Some(outbox) = &self.limits.outbox else {
            return false;
        };
        let any_qos = outbox.drop_oldest && delivery.qos != QoS::AtMostOnce;
        let drops = outbox.drops.clone();
        while !self.has_room(delivery) {
            let Some(evicted) = self.outbound_mut().evict_oldest(any_qos) else {
                return false;
            };
            self.journal.dropped(&evicted);
            self.count_dropped(1);
            drops.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Moves what may be sent now into `out`: redeliveries first, then queued and
    /// retained messages in order while the inflight window allows, assigning packet ids
    /// (from 1 upwards, skipping ids in flight) and outgoing topic aliases. Expired or
    /// too-large messages are dropped and reported in `dropped`.
    pub fn poll_outgoing(
        &mut self,
        now: Instant,
        out: &mut impl Outgoing,
        dropped: &mut Vec<DropReason>,
    ) {
        self.poll_outgoing_within(now, usize::MAX, out, dropped);
    }

    /// `poll_outgoing`, taking retained messages from the backlog only while the packets
    /// produced stay under `budget` bytes (the room left in the connection's outbox);
    /// at least one is taken, so the backlog always moves.
    pub fn poll_outgoing_within(
        &mut self,
        now: Instant,
        budget: usize,
        out: &mut impl Outgoing,
        dropped: &mut Vec<DropReason>,
    ) {
        if !self.params.connected {
            return;
        }
        let Some(outbound) = self.outbound.as_deref_mut() else {
            return;
        };
        let context = outgoing_context(&self.params, &self.limits);
        let dropped_before = dropped.len();
        outbound.poll(&context, now, budget, out, dropped, &mut self.journal);
        self.count_dropped(dropped.len() - dropped_before);
    }

    /// True if `poll_outgoing` would produce something.
    pub fn has_outgoing(&self) -> bool {
        self.params.connected
            && self
                .outbound
                .as_deref()
                .is_some_and(|outbound| outbound.pending(self.window()).is_some())
    }

    /// True if `poll_outgoing` would produce something and the first thing would be a
    /// redelivery or a queued message, not a retained message from the backlog. A client
    /// that cannot take these is falling behind live traffic; a retained backlog merely
    /// waits for it.
    pub fn has_queued_outgoing(&self) -> bool {
        self.params.connected
            && matches!(
                self.outbound
                    .as_deref()
                    .and_then(|outbound| outbound.pending(self.window())),
                Some(outbound::Pending::Redelivery | outbound::Pending::Queued)
            )
    }

    /// Queues the retained messages matching one subscribed filter, granted `granted`,
    /// behind everything queued so far. They wait apart from the queue limits, in the
    /// retained backlog (bounded by `max_retained_backlog`); returns how many did not fit
    /// (to be counted as `DropReason::RetainedBacklogFull`).
    pub fn queue_retained(
        &mut self,
        granted: QoS,
        subscription_id: Option<u32>,
        messages: Vec<Arc<Message>>,
    ) -> usize {
        if messages.is_empty() {
            return 0;
        }
        let max_backlog = self.limits.max_retained_backlog;
        let outbound = self.outbound_mut();
        let refused = outbound.add_retained(granted, subscription_id, messages, max_backlog);
        self.count_dropped(refused);
        refused
    }

    /// Retained messages owed since SUBSCRIBEs and not yet sent.
    pub fn retained_backlog_len(&self) -> usize {
        self.outbound
            .as_deref()
            .map_or(0, outbound::Outbound::retained_backlog_len)
    }

    /// Whether the queue is nearly full (7/8 of its limit in messages or bytes): a
    /// publisher that can wait should, rather than have its messages dropped.
    pub fn queue_congested(&self) -> bool {
        let limits = &self.limits;
        // A bridge's outbox never holds publishers back: it drops by its policy instead.
        if limits.outbox.is_some() {
            return false;
        }
        let messages = limits.max_queued_messages;
        let bytes = limits.max_queued_bytes;
        self.queued_len() >= messages - messages / 8 || self.queued_bytes() >= bytes - bytes / 8
    }

    /// Whether the queue has drained to half its limit in messages and bytes: publishers
    /// held back by `queue_congested` may go on.
    pub fn queue_relieved(&self) -> bool {
        let limits = &self.limits;
        self.queued_len() <= limits.max_queued_messages / 2
            && self.queued_bytes() <= limits.max_queued_bytes / 2
    }

    /// Records an accepted subscription; returns whether it existed before.
    ///
    /// The filter is kept as a copy of its own: a view of the SUBSCRIBE would keep the
    /// whole packet (and the header of its read buffer) for as long as the subscription
    /// lasts.
    pub fn add_subscription(&mut self, filter: ByteString, entry: SubscriptionEntry) -> bool {
        self.subscriptions
            .insert(Box::from(&*filter), entry)
            .is_some()
    }

    /// Forgets a subscription; returns whether it existed.
    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    /// Every subscription, to remove the routes when the session ends. Each filter is a
    /// `ByteString` made for the caller (sessions end, move and are listed far less
    /// often than idle devices are kept).
    pub fn subscriptions(&self) -> impl Iterator<Item = (ByteString, &SubscriptionEntry)> {
        self.subscriptions
            .iter()
            .map(|(filter, entry)| (ByteString::from(&**filter), entry))
    }

    /// Messages queued and not yet in flight.
    pub fn queued_len(&self) -> usize {
        self.outbound
            .as_deref()
            .map_or(0, outbound::Outbound::queued_len)
    }

    /// Bytes (as `Message::size_bytes` counts them) queued and not yet in flight.
    pub fn queued_bytes(&self) -> usize {
        self.outbound
            .as_deref()
            .map_or(0, outbound::Outbound::queued_bytes)
    }

    /// Outgoing QoS 1/2 messages awaiting acknowledgement.
    pub fn inflight_len(&self) -> usize {
        self.outbound
            .as_deref()
            .map_or(0, outbound::Outbound::inflight_len)
    }

    /// Bytes (as `Message::size_bytes` counts them) of the messages in flight. Walks the
    /// inflight window: for operators, not for the message path.
    pub fn inflight_bytes(&self) -> usize {
        self.outbound
            .as_deref()
            .map_or(0, outbound::Outbound::inflight_bytes)
    }

    /// Incoming QoS 2 messages received and not yet released by PUBREL.
    /// Whether incoming QoS 2 `packet_id` was received and awaits its PUBREL.
    pub fn awaits_release(&self, packet_id: u16) -> bool {
        self.inbound.awaits_release(packet_id)
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.inbound.awaiting_release_len()
    }

    fn window(&self) -> usize {
        window(&self.params, &self.limits)
    }

    /// Whether the queue limits leave room for `delivery` (see `Outbound::has_room`).
    fn has_room(&self, delivery: &Delivery) -> bool {
        self.outbound
            .as_deref()
            .map_or(self.limits.max_queued_messages > 0, |outbound| {
                outbound.has_room(delivery, &self.limits)
            })
    }
}

/// The outgoing QoS 1/2 window: `max_inflight` for 3.x, and for MQTT 5 also no more
/// than the client's Receive Maximum. Never 0, so a queue can always drain.
fn window(params: &ConnectionParams, limits: &SessionLimits) -> usize {
    let ours = limits.max_inflight.max(1);
    let window = match params.client_receive_maximum {
        Some(theirs) if params.protocol.is_v5() => ours.min(theirs.get()),
        _ => ours,
    };
    usize::from(window)
}

fn outgoing_context(
    params: &ConnectionParams,
    limits: &SessionLimits,
) -> outbound::OutgoingContext {
    outbound::OutgoingContext {
        protocol: params.protocol,
        window: window(params, limits),
        maximum_packet_size: params.client_maximum_packet_size.map(NonZeroU32::get),
    }
}
