//! The data a store keeps, the operations that change it, and what `restore` hands back.
//!
//! Everything here is plain data shared by every backend. Times are absolute wall-clock
//! milliseconds since the Unix epoch (`UnixMillis`), never `Instant`s: an `Instant` means
//! nothing to the next process, and session and message expiry must count the time the
//! broker spent stopped. `WallClock` converts between the two at the edge.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytestring::ByteString;

use crate::message::{ClusterMessageId, Message};
use crate::protocol::{ProtocolVersion, PublishProperties, QoS, Will};
use crate::session::SubscriptionEntry;

/// Milliseconds since the Unix epoch, wall clock.
pub type UnixMillis = u64;

/// Identifies one stored message body. Allocated by `Store::next_message_id`, never reused
/// by the same database.
pub type MessageId = u64;

/// A session expiry interval of this many seconds never runs out (MQTT 5: 0xFFFFFFFF).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// The state of a session that outlives its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: ByteString,
    pub protocol: ProtocolVersion,
    /// Session expiry interval in seconds; `EXPIRY_NEVER` for never.
    pub expiry_interval: u32,
    /// The will of the last connection, with its properties (delay, message expiry).
    pub will: Option<Will>,
    /// When the last connection went away; `None` while a client is connected.
    pub disconnected_at: Option<UnixMillis>,
}

impl SessionRecord {
    /// True once the session outlived its expiry interval after the disconnect. A session
    /// without a disconnect time counts as disconnected at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        if self.expiry_interval == EXPIRY_NEVER {
            return false;
        }
        let since = self.disconnected_at.unwrap_or(now);
        since.saturating_add(u64::from(self.expiry_interval) * 1000) <= now
    }
}

/// An application message body as stored: once per message, however many sessions hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    pub retain: bool,
    pub properties: PublishProperties,
    /// When it stops being deliverable (MQTT 5 message expiry), wall clock.
    pub expires_at: Option<UnixMillis>,
    /// Its identity across the cluster (`Message::cluster_id`), kept once a cluster node
    /// gave it one: a node that takes a session over from a backup's copy recognises a
    /// copy of the message that the publishing node sends again (it kept the message
    /// for the session's dead owner). A single node never sets it.
    pub cluster_id: Option<ClusterMessageId>,
}

impl StoredMessage {
    /// The stored form of a live message. The publisher's session key is not kept: it only
    /// serves No Local at routing time, which is over once a message is stored.
    pub fn from_message(message: &Message, clock: &WallClock) -> StoredMessage {
        StoredMessage {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
            properties: message.properties.clone(),
            expires_at: message.expires_at.map(|at| clock.to_unix_millis(at)),
            cluster_id: message.cluster_id.get().copied(),
        }
    }

    /// The same message without its cluster id: for a retained message (a new
    /// delivery each time it is sent, never a copy of an earlier one) and for bodies
    /// that carry the id beside them (forwards and relays).
    pub fn without_cluster_id(self) -> StoredMessage {
        StoredMessage {
            cluster_id: None,
            ..self
        }
    }

    /// The live message again, its expiry translated to this process's clock.
    pub fn to_message(&self, clock: &WallClock) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self.expires_at.map(|at| clock.to_instant(at)),
            publisher: None,
            cluster_id: self.cluster_id.map(OnceLock::from).unwrap_or_default(),
        }
    }

    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Where an outgoing QoS 1/2 message stands with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InflightState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    AwaitingPubComp,
}

/// One session's reference to a message it is to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDelivery {
    pub client_id: ByteString,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
}

/// One change of durable state. A `submit` call applies its operations atomically.
///
/// Operations on a client id the store holds no session for are ignored: the broker can
/// report every change and only sessions it stored with `PutSession` (those that outlive
/// their connection) keep anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Creates or replaces a session record (its subscriptions and messages stay).
    PutSession(SessionRecord),
    /// Removes a session with its subscriptions, queue, inflight and incoming QoS 2 state.
    RemoveSession {
        client_id: ByteString,
    },
    /// Adds or replaces one subscription.
    AddSubscription {
        client_id: ByteString,
        filter: ByteString,
        entry: SubscriptionEntry,
    },
    RemoveSubscription {
        client_id: ByteString,
        filter: ByteString,
    },
    /// Stores the retained message of `message.topic`, replacing any previous one.
    SetRetained(Arc<StoredMessage>),
    ClearRetained {
        topic: ByteString,
    },
    /// Queues one message for each delivery. The body is written once, and only if at
    /// least one delivery is for a stored session; if `message_id` is already stored, its
    /// body is kept and only the references are added.
    Accept {
        message_id: MessageId,
        message: Arc<StoredMessage>,
        deliveries: Vec<QueuedDelivery>,
    },
    /// The oldest queued reference to `message_id` was sent with `packet_id` and is now in
    /// flight. Any inflight entry already using `packet_id` in that session is replaced.
    MarkInflight {
        client_id: ByteString,
        message_id: MessageId,
        packet_id: u16,
        state: InflightState,
    },
    /// An inflight message moved on (PUBREC received: `AwaitingPubComp`).
    AdvanceInflight {
        client_id: ByteString,
        packet_id: u16,
        state: InflightState,
    },
    /// An inflight message is done (PUBACK or PUBCOMP received).
    CompleteInflight {
        client_id: ByteString,
        packet_id: u16,
    },
    /// The incoming QoS 2 message of `packet_id` (its `AddIncomingQos2` goes in the same
    /// write) got this cluster id (a cluster node writes it). Nothing is stored: the
    /// node's backups remember it while the packet id awaits release, so that a node
    /// taking the session over from their copy routes the client's resend under the
    /// same id, and the nodes that had it already recognise it
    /// (`cluster::replication::replica`).
    IncomingInCluster {
        client_id: ByteString,
        packet_id: u16,
        cluster_id: crate::message::ClusterMessageId,
    },
    /// The session completed a QoS 2 message with this cluster id (a cluster node
    /// writes it after `CompleteInflight`). Nothing is stored: the node's backups
    /// remember it for a while, so that a node taking the session over from their copy
    /// drops the copy of it the publishing node sends again (it kept the message
    /// because the dead owner had not acknowledged its forward) instead of delivering
    /// it a second time (`cluster::replication::replica`).
    CompletedInCluster {
        client_id: ByteString,
        cluster_id: crate::message::ClusterMessageId,
    },
    /// The oldest queued reference to `message_id` left the queue without going in flight
    /// (QoS 0 sent, expired, too large for the client, dropped).
    DropQueued {
        client_id: ByteString,
        message_id: MessageId,
    },
    /// An incoming QoS 2 PUBLISH was accepted; its packet id awaits PUBREL.
    AddIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
    /// PUBREL arrived for an incoming QoS 2 packet id.
    RemoveIncomingQos2 {
        client_id: ByteString,
        packet_id: u16,
    },
}

impl StoreOp {
    /// Operations that bring new data in (and lead to an acknowledgement the broker can
    /// hold back) are refused when the writer lags; follow-up changes to state already
    /// stored are always admitted, so the disk never misses a step of what it holds.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn brings_new_data(&self) -> bool {
        matches!(self, StoreOp::Accept { .. } | StoreOp::SetRetained(_))
    }

    /// Rough amount of work, for the writer's queue bound.
    pub(crate) fn weight(&self) -> usize {
        match self {
            StoreOp::Accept { deliveries, .. } => 1 + deliveries.len(),
            _ => 1,
        }
    }
}

/// One message a restored session is to receive, with its body shared between sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredDelivery {
    pub message_id: MessageId,
    pub message: Arc<StoredMessage>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredInflight {
    pub delivery: RestoredDelivery,
    pub packet_id: u16,
    pub state: InflightState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredSession {
    pub record: SessionRecord,
    /// Sorted by filter.
    pub subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    /// In the order the messages were queued.
    pub queue: Vec<RestoredDelivery>,
    /// In the order the messages were queued (so first sent first): redelivered in this
    /// order, with their packet ids, before anything queued.
    pub inflight: Vec<RestoredInflight>,
    /// Incoming QoS 2 packet ids awaiting PUBREL, ascending.
    pub incoming_qos2: Vec<u16>,
    /// The cluster ids the messages of some of them went under (a cluster node writes
    /// them, `StoreOp::IncomingInCluster`), ascending by packet id.
    pub incoming_ids: Vec<(u16, crate::message::ClusterMessageId)>,
}

impl RestoredSession {
    /// The store operations that write this session into a store as it is, replacing
    /// any copy there: record, subscriptions, inflight messages (each queued, then
    /// marked in flight with its packet id and state, in their order), queued messages,
    /// incoming QoS 2 ids. The message ids are used as they are: they must be free in
    /// the target store. QoS 0 deliveries are left out (never stored).
    ///
    /// A store that applies them hands the same session back from `restore` (the
    /// hand-over of a session to another node relies on it).
    pub fn to_ops(&self) -> Vec<StoreOp> {
        let client_id = &self.record.client_id;
        let mut ops = vec![
            StoreOp::RemoveSession {
                client_id: client_id.clone(),
            },
            StoreOp::PutSession(self.record.clone()),
        ];
        ops.extend(
            self.subscriptions
                .iter()
                .map(|(filter, entry)| StoreOp::AddSubscription {
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    entry: *entry,
                }),
        );
        let accept = |delivery: &RestoredDelivery| StoreOp::Accept {
            message_id: delivery.message_id,
            message: delivery.message.clone(),
            deliveries: vec![QueuedDelivery {
                client_id: client_id.clone(),
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.clone(),
            }],
        };
        let stored = |delivery: &&RestoredDelivery| delivery.qos != QoS::AtMostOnce;
        for inflight in self
            .inflight
            .iter()
            .filter(|inflight| stored(&&inflight.delivery))
        {
            ops.push(accept(&inflight.delivery));
            ops.push(StoreOp::MarkInflight {
                client_id: client_id.clone(),
                message_id: inflight.delivery.message_id,
                packet_id: inflight.packet_id,
                state: inflight.state,
            });
        }
        ops.extend(self.queue.iter().filter(stored).map(accept));
        ops.extend(
            self.incoming_qos2
                .iter()
                .map(|packet_id| StoreOp::AddIncomingQos2 {
                    client_id: client_id.clone(),
                    packet_id: *packet_id,
                }),
        );
        ops.extend(self.incoming_ids.iter().map(|(packet_id, cluster_id)| {
            StoreOp::IncomingInCluster {
                client_id: client_id.clone(),
                packet_id: *packet_id,
                cluster_id: *cluster_id,
            }
        }));
        ops
    }
}

/// Everything the broker needs to rebuild itself on start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoredState {
    /// Live sessions, sorted by client id.
    pub sessions: Vec<RestoredSession>,
    /// Sessions that expired while the broker was down (already deleted), so a will still
    /// owed can be published.
    pub expired_sessions: Vec<SessionRecord>,
    /// Retained messages still deliverable, sorted by topic.
    pub retained: Vec<Arc<StoredMessage>>,
}

const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Translates between this process's monotonic clock and the wall clock, from one pair of
/// readings taken together.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix_millis: UnixMillis,
}

impl WallClock {
    /// Pairs `instant` with `wall` (read at the same moment).
    pub fn new(instant: Instant, wall: SystemTime) -> WallClock {
        let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        WallClock {
            instant,
            unix_millis: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Pairs the system's current readings.
    pub fn now() -> WallClock {
        WallClock::new(Instant::now(), SystemTime::now())
    }

    /// The wall-clock time of the paired instant.
    pub fn unix_millis(&self) -> UnixMillis {
        self.unix_millis
    }

    pub fn to_unix_millis(&self, at: Instant) -> UnixMillis {
        if at >= self.instant {
            let ahead = u64::try_from((at - self.instant).as_millis()).unwrap_or(u64::MAX);
            self.unix_millis.saturating_add(ahead)
        } else {
            let behind = u64::try_from((self.instant - at).as_millis()).unwrap_or(u64::MAX);
            self.unix_millis.saturating_sub(behind)
        }
    }

    /// The instant of a wall-clock time. Times an `Instant` cannot represent are clamped:
    /// ones in the past to the paired instant (past anyway), far future ones to a century.
    pub fn to_instant(&self, at: UnixMillis) -> Instant {
        if at >= self.unix_millis {
            let ahead = Duration::from_millis(at - self.unix_millis);
            // Beyond what `Instant` holds is beyond any expiry that matters: a century.
            self.instant
                .checked_add(ahead)
                .or_else(|| self.instant.checked_add(FAR_FUTURE))
                .unwrap_or(self.instant)
        } else {
            let behind = Duration::from_millis(self.unix_millis - at);
            self.instant.checked_sub(behind).unwrap_or(self.instant)
        }
    }
}
