//! What every store knows about its contents, and the meaning of each `StoreOp`.
//!
//! The ledger holds each stored session with its subscriptions, queue (by sequence),
//! inflight entries and incoming QoS 2 ids, plus a reference count per message body. It
//! turns each operation into the key-level changes a backend must make (`Mutations`): the
//! memory store keeps the ledger itself as its state (with bodies), the RocksDB store
//! keeps it as an index without bodies and writes the changes into one `WriteBatch`.
//! Having one ledger gives both stores the same semantics by construction; the storage
//! tests still check both against an independent model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytestring::ByteString;

use crate::message::ClusterMessageId;
use crate::session::SubscriptionEntry;

use super::codec::QueueValue;
use super::record::{
    InflightState, MessageId, RestoredDelivery, RestoredInflight, RestoredSession, RestoredState,
    SessionRecord, StoreOp, StoredMessage, UnixMillis,
};

/// The key-level changes an operation makes, in terms of the column families.
pub(crate) trait Mutations {
    fn put_session(&mut self, record: &SessionRecord);
    fn delete_session(&mut self, client_id: &str);
    fn put_subscription(&mut self, client_id: &str, filter: &str, entry: &SubscriptionEntry);
    fn delete_subscription(&mut self, client_id: &str, filter: &str);
    fn put_retained(&mut self, message: &StoredMessage);
    fn delete_retained(&mut self, topic: &str);
    fn put_body(&mut self, message_id: MessageId, message: &StoredMessage);
    fn delete_body(&mut self, message_id: MessageId);
    fn put_queued(&mut self, client_id: &str, sequence: u64, value: &QueueValue);
    fn delete_queued(&mut self, client_id: &str, sequence: u64);
    fn put_inflight(&mut self, client_id: &str, sequence: u64, inflight: &Inflight);
    fn delete_inflight(&mut self, client_id: &str, sequence: u64);
    fn put_incoming(
        &mut self,
        client_id: &str,
        packet_id: u16,
        cluster_id: Option<ClusterMessageId>,
    );
    fn delete_incoming(&mut self, client_id: &str, packet_id: u16);
}

/// For a ledger that is the whole state: nothing to write elsewhere.
pub(crate) struct NoMutations;

impl Mutations for NoMutations {
    fn put_session(&mut self, _: &SessionRecord) {}
    fn delete_session(&mut self, _: &str) {}
    fn put_subscription(&mut self, _: &str, _: &str, _: &SubscriptionEntry) {}
    fn delete_subscription(&mut self, _: &str, _: &str) {}
    fn put_retained(&mut self, _: &StoredMessage) {}
    fn delete_retained(&mut self, _: &str) {}
    fn put_body(&mut self, _: MessageId, _: &StoredMessage) {}
    fn delete_body(&mut self, _: MessageId) {}
    fn put_queued(&mut self, _: &str, _: u64, _: &QueueValue) {}
    fn delete_queued(&mut self, _: &str, _: u64) {}
    fn put_inflight(&mut self, _: &str, _: u64, _: &Inflight) {}
    fn delete_inflight(&mut self, _: &str, _: u64) {}
    fn put_incoming(&mut self, _: &str, _: u16, _: Option<ClusterMessageId>) {}
    fn delete_incoming(&mut self, _: &str, _: u16) {}
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inflight {
    pub(crate) value: QueueValue,
    pub(crate) packet_id: u16,
    pub(crate) state: InflightState,
}

#[derive(Debug)]
struct Body {
    references: u64,
    /// Kept only by a ledger that holds bodies.
    message: Option<Arc<StoredMessage>>,
}

#[derive(Debug)]
struct SessionEntry {
    record: SessionRecord,
    subscriptions: BTreeMap<ByteString, SubscriptionEntry>,
    /// By sequence: queue order.
    queue: BTreeMap<u64, QueueValue>,
    /// The queue's message ids do not decrease from front to back (what the broker
    /// writes: ids are assigned in order), so the references to one message sit
    /// together and a lookup can stop early.
    ids_ascending: bool,
    /// By the sequence the entry had in the queue, so first sent first.
    inflight: BTreeMap<u64, Inflight>,
    /// Incoming QoS 2 packet ids awaiting PUBREL, with the cluster id the message went
    /// under once a cluster node wrote it (`StoreOp::IncomingInCluster`).
    incoming: BTreeMap<u16, Option<ClusterMessageId>>,
}

impl SessionEntry {
    fn new(record: SessionRecord) -> SessionEntry {
        SessionEntry {
            record,
            subscriptions: BTreeMap::new(),
            queue: BTreeMap::new(),
            ids_ascending: true,
            inflight: BTreeMap::new(),
            incoming: BTreeMap::new(),
        }
    }

    fn insert_queued(&mut self, sequence: u64, value: QueueValue) {
        if let Some((last_sequence, last)) = self.queue.last_key_value() {
            if sequence < *last_sequence || value.message_id < last.message_id {
                self.ids_ascending = false;
            }
        }
        self.queue.insert(sequence, value);
    }

    fn remove_queued(&mut self, sequence: u64) -> Option<QueueValue> {
        let value = self.queue.remove(&sequence);
        if self.queue.is_empty() {
            self.ids_ascending = true;
        }
        value
    }

    /// The oldest queued reference to `message_id`. Deliveries leave the queue from the
    /// front, so this is normally the first entry; a delivery refused by a full queue
    /// (stored with its message, then dropped) is the newest. With ascending ids the
    /// scan runs from the back and stops at the first older message, so a full queue
    /// of thousands does not cost a scan per refused message.
    fn queued_sequence(&self, message_id: MessageId) -> Option<u64> {
        let (first_sequence, first) = self.queue.first_key_value()?;
        if first.message_id == message_id {
            return Some(*first_sequence);
        }
        if !self.ids_ascending {
            return self
                .queue
                .iter()
                .find(|(_, value)| value.message_id == message_id)
                .map(|(sequence, _)| *sequence);
        }
        let mut oldest = None;
        for (sequence, value) in self.queue.iter().rev() {
            match value.message_id.cmp(&message_id) {
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Equal => oldest = Some(*sequence),
                std::cmp::Ordering::Less => break,
            }
        }
        oldest
    }

    /// Inflight entries are bounded by the inflight window, so a scan is cheap.
    fn inflight_sequence(&self, packet_id: u16) -> Option<u64> {
        self.inflight
            .iter()
            .find(|(_, inflight)| inflight.packet_id == packet_id)
            .map(|(sequence, _)| *sequence)
    }
}

/// A record that breaks the ledger's invariants, found while loading a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) enum LoadError {
    NoSession,
    NoBody,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    keep_bodies: bool,
    sessions: BTreeMap<ByteString, SessionEntry>,
    bodies: HashMap<MessageId, Body>,
    /// Kept only by a ledger that holds bodies.
    retained: BTreeMap<ByteString, Arc<StoredMessage>>,
    next_sequence: u64,
}

impl Ledger {
    /// `keep_bodies`: hold message bodies and retained messages too (a complete state),
    /// rather than only what is needed to translate operations into key changes.
    pub(crate) fn new(keep_bodies: bool) -> Ledger {
        Ledger {
            keep_bodies,
            sessions: BTreeMap::new(),
            bodies: HashMap::new(),
            retained: BTreeMap::new(),
            next_sequence: 0,
        }
    }

    /// Number of message bodies stored.
    pub(crate) fn body_count(&self) -> usize {
        self.bodies.len()
    }

    /// The highest message id stored, if any.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn max_message_id(&self) -> Option<MessageId> {
        self.bodies.keys().copied().max()
    }

    /// Turns a complete ledger into an index: bodies and retained messages are dropped.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn drop_bodies(&mut self) {
        self.keep_bodies = false;
        self.retained.clear();
        for body in self.bodies.values_mut() {
            body.message = None;
        }
    }

    pub(crate) fn apply(&mut self, op: &StoreOp, out: &mut impl Mutations) {
        match op {
            StoreOp::PutSession(record) => {
                // Keys carry the client id length in 16 bits, as MQTT strings do.
                if u16::try_from(record.client_id.len()).is_err() {
                    return;
                }
                out.put_session(record);
                self.sessions
                    .entry(record.client_id.clone())
                    .and_modify(|entry| entry.record = record.clone())
                    .or_insert_with(|| SessionEntry::new(record.clone()));
            }
            StoreOp::RemoveSession { client_id } => self.remove_session(client_id, out),
            StoreOp::AddSubscription {
                client_id,
                filter,
                entry,
            } => {
                if let Some(session) = self.sessions.get_mut(client_id) {
                    out.put_subscription(client_id, filter, entry);
                    session.subscriptions.insert(filter.clone(), *entry);
                }
            }
            StoreOp::RemoveSubscription { client_id, filter } => {
                if let Some(session) = self.sessions.get_mut(client_id) {
                    if session.subscriptions.remove(filter).is_some() {
                        out.delete_subscription(client_id, filter);
                    }
                }
            }
            StoreOp::SetRetained(message) => {
                out.put_retained(message);
                if self.keep_bodies {
                    self.retained.insert(message.topic.clone(), message.clone());
                }
            }
            StoreOp::ClearRetained { topic } => {
                out.delete_retained(topic);
                self.retained.remove(topic);
            }
            StoreOp::Accept {
                message_id,
                message,
                deliveries,
            } => {
                let mut references = 0;
                for delivery in deliveries {
                    let Some(session) = self.sessions.get_mut(&delivery.client_id) else {
                        continue;
                    };
                    let sequence = self.next_sequence;
                    self.next_sequence += 1;
                    let value = QueueValue {
                        message_id: *message_id,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        subscription_ids: delivery.subscription_ids.clone(),
                    };
                    out.put_queued(&delivery.client_id, sequence, &value);
                    session.insert_queued(sequence, value);
                    references += 1;
                }
                if references > 0 {
                    let body = self.bodies.entry(*message_id).or_insert_with(|| {
                        out.put_body(*message_id, message);
                        Body {
                            references: 0,
                            message: self.keep_bodies.then(|| message.clone()),
                        }
                    });
                    body.references += references;
                }
            }
            StoreOp::MarkInflight {
                client_id,
                message_id,
                packet_id,
                state,
            } => self.mark_inflight(client_id, *message_id, *packet_id, *state, out),
            StoreOp::AdvanceInflight {
                client_id,
                packet_id,
                state,
            } => {
                let Some(session) = self.sessions.get_mut(client_id) else {
                    return;
                };
                let Some(sequence) = session.inflight_sequence(*packet_id) else {
                    return;
                };
                if let Some(inflight) = session.inflight.get_mut(&sequence) {
                    inflight.state = *state;
                    out.put_inflight(client_id, sequence, inflight);
                }
            }
            StoreOp::CompleteInflight {
                client_id,
                packet_id,
            } => self.complete_inflight(client_id, *packet_id, out),
            // Kept in memory by a cluster node's backups, not stored.
            StoreOp::CompletedInCluster { .. } => {}
            // Stored with the packet id: a restarted node routes the client's resend
            // under the same id (`session::inbound`, "unconfirmed").
            StoreOp::IncomingInCluster {
                client_id,
                packet_id,
                cluster_id,
            } => {
                let Some(session) = self.sessions.get_mut(client_id) else {
                    return;
                };
                if let Some(recorded) = session.incoming.get_mut(packet_id) {
                    if *recorded != Some(*cluster_id) {
                        *recorded = Some(*cluster_id);
                        out.put_incoming(client_id, *packet_id, Some(*cluster_id));
                    }
                }
            }
            StoreOp::DropQueued {
                client_id,
                message_id,
            } => {
                let Some(session) = self.sessions.get_mut(client_id) else {
                    return;
                };
                let Some(sequence) = session.queued_sequence(*message_id) else {
                    return;
                };
                session.remove_queued(sequence);
                out.delete_queued(client_id, sequence);
                self.release(*message_id, out);
            }
            StoreOp::AddIncomingQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(client_id) {
                    if !session.incoming.contains_key(packet_id) {
                        session.incoming.insert(*packet_id, None);
                        out.put_incoming(client_id, *packet_id, None);
                    }
                }
            }
            StoreOp::RemoveIncomingQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(session) = self.sessions.get_mut(client_id) {
                    if session.incoming.remove(packet_id).is_some() {
                        out.delete_incoming(client_id, *packet_id);
                    }
                }
            }
        }
    }

    fn remove_session(&mut self, client_id: &str, out: &mut impl Mutations) {
        let Some(session) = self.sessions.remove(client_id) else {
            return;
        };
        for filter in session.subscriptions.keys() {
            out.delete_subscription(client_id, filter);
        }
        for (sequence, value) in &session.queue {
            out.delete_queued(client_id, *sequence);
            self.release(value.message_id, out);
        }
        for (sequence, inflight) in &session.inflight {
            out.delete_inflight(client_id, *sequence);
            self.release(inflight.value.message_id, out);
        }
        for packet_id in session.incoming.keys() {
            out.delete_incoming(client_id, *packet_id);
        }
        out.delete_session(client_id);
    }

    fn mark_inflight(
        &mut self,
        client_id: &str,
        message_id: MessageId,
        packet_id: u16,
        state: InflightState,
        out: &mut impl Mutations,
    ) {
        let Some(session) = self.sessions.get(client_id) else {
            return;
        };
        if session.queued_sequence(message_id).is_none() {
            return;
        }
        // A packet id names one inflight message at a time.
        self.complete_inflight(client_id, packet_id, out);
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        let Some(sequence) = session.queued_sequence(message_id) else {
            return;
        };
        let Some(value) = session.remove_queued(sequence) else {
            return;
        };
        out.delete_queued(client_id, sequence);
        let inflight = Inflight {
            value,
            packet_id,
            state,
        };
        out.put_inflight(client_id, sequence, &inflight);
        session.inflight.insert(sequence, inflight);
    }

    fn complete_inflight(&mut self, client_id: &str, packet_id: u16, out: &mut impl Mutations) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        let Some(sequence) = session.inflight_sequence(packet_id) else {
            return;
        };
        if let Some(inflight) = session.inflight.remove(&sequence) {
            out.delete_inflight(client_id, sequence);
            self.release(inflight.value.message_id, out);
        }
    }

    /// Drops one reference; the body goes with the last one, in the same write.
    fn release(&mut self, message_id: MessageId, out: &mut impl Mutations) {
        if let Some(body) = self.bodies.get_mut(&message_id) {
            body.references = body.references.saturating_sub(1);
            if body.references == 0 {
                self.bodies.remove(&message_id);
                out.delete_body(message_id);
            }
        }
    }

    // ---- loading a stored state (reference counts are rebuilt from the references) ----

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_body(&mut self, message_id: MessageId, message: StoredMessage) {
        let message = self.keep_bodies.then(|| Arc::new(message));
        self.bodies.insert(
            message_id,
            Body {
                references: 0,
                message,
            },
        );
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_retained(&mut self, message: StoredMessage) {
        if self.keep_bodies {
            self.retained
                .insert(message.topic.clone(), Arc::new(message));
        }
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_session(&mut self, record: SessionRecord) {
        self.sessions
            .insert(record.client_id.clone(), SessionEntry::new(record));
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    fn loaded_session(&mut self, client_id: &str) -> Result<&mut SessionEntry, LoadError> {
        self.sessions.get_mut(client_id).ok_or(LoadError::NoSession)
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_subscription(
        &mut self,
        client_id: &str,
        filter: ByteString,
        entry: SubscriptionEntry,
    ) -> Result<(), LoadError> {
        self.loaded_session(client_id)?
            .subscriptions
            .insert(filter, entry);
        Ok(())
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    fn reference(&mut self, message_id: MessageId, sequence: u64) -> Result<(), LoadError> {
        let body = self.bodies.get_mut(&message_id).ok_or(LoadError::NoBody)?;
        body.references += 1;
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
        Ok(())
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_queued(
        &mut self,
        client_id: &str,
        sequence: u64,
        value: QueueValue,
    ) -> Result<(), LoadError> {
        self.loaded_session(client_id)?;
        self.reference(value.message_id, sequence)?;
        self.loaded_session(client_id)?
            .insert_queued(sequence, value);
        Ok(())
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_inflight(
        &mut self,
        client_id: &str,
        sequence: u64,
        inflight: Inflight,
    ) -> Result<(), LoadError> {
        self.loaded_session(client_id)?;
        self.reference(inflight.value.message_id, sequence)?;
        self.loaded_session(client_id)?
            .inflight
            .insert(sequence, inflight);
        Ok(())
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn load_incoming(
        &mut self,
        client_id: &str,
        packet_id: u16,
        cluster_id: Option<ClusterMessageId>,
    ) -> Result<(), LoadError> {
        self.loaded_session(client_id)?
            .incoming
            .insert(packet_id, cluster_id);
        Ok(())
    }

    /// Deletes bodies that no reference reached (left by nothing this ledger writes, but
    /// harmless to clean up). Returns how many.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn finish_load(&mut self, out: &mut impl Mutations) -> usize {
        let orphans: Vec<MessageId> = self
            .bodies
            .iter()
            .filter(|(_, body)| body.references == 0)
            .map(|(id, _)| *id)
            .collect();
        for message_id in &orphans {
            self.bodies.remove(message_id);
            out.delete_body(*message_id);
        }
        orphans.len()
    }

    // ---- restore ----

    /// The operations that apply expiry at `now`: sessions past their expiry interval go,
    /// sessions that were connected when the broker stopped count as disconnected now,
    /// expired queued messages and retained messages go. Inflight messages stay: their
    /// delivery had started. Needs a ledger that keeps bodies.
    pub(crate) fn expiry_ops(&self, now: UnixMillis) -> (Vec<StoreOp>, Vec<SessionRecord>) {
        let mut ops = Vec::new();
        let mut expired = Vec::new();
        for (client_id, session) in &self.sessions {
            if session.record.is_expired(now) {
                ops.push(StoreOp::RemoveSession {
                    client_id: client_id.clone(),
                });
                expired.push(session.record.clone());
                continue;
            }
            if session.record.disconnected_at.is_none() {
                ops.push(StoreOp::PutSession(SessionRecord {
                    disconnected_at: Some(now),
                    ..session.record.clone()
                }));
            }
            for value in session.queue.values() {
                let body_expired = self
                    .bodies
                    .get(&value.message_id)
                    .and_then(|body| body.message.as_ref())
                    .is_some_and(|message| message.is_expired(now));
                if body_expired {
                    ops.push(StoreOp::DropQueued {
                        client_id: client_id.clone(),
                        message_id: value.message_id,
                    });
                }
            }
        }
        for (topic, message) in &self.retained {
            if message.is_expired(now) {
                ops.push(StoreOp::ClearRetained {
                    topic: topic.clone(),
                });
            }
        }
        (ops, expired)
    }

    /// The whole state, bodies shared between the sessions that hold them. Needs a ledger
    /// that keeps bodies.
    pub(crate) fn snapshot(&self) -> RestoredState {
        let delivery = |value: &QueueValue| {
            let message = self.bodies.get(&value.message_id)?.message.clone()?;
            Some(RestoredDelivery {
                message_id: value.message_id,
                message,
                qos: value.qos,
                retain: value.retain,
                subscription_ids: value.subscription_ids.clone(),
            })
        };
        let sessions = self
            .sessions
            .values()
            .map(|session| RestoredSession {
                record: session.record.clone(),
                subscriptions: session
                    .subscriptions
                    .iter()
                    .map(|(filter, entry)| (filter.clone(), *entry))
                    .collect(),
                queue: session.queue.values().filter_map(delivery).collect(),
                inflight: session
                    .inflight
                    .values()
                    .filter_map(|inflight| {
                        Some(RestoredInflight {
                            delivery: delivery(&inflight.value)?,
                            packet_id: inflight.packet_id,
                            state: inflight.state,
                        })
                    })
                    .collect(),
                incoming_qos2: session.incoming.keys().copied().collect(),
                incoming_ids: session
                    .incoming
                    .iter()
                    .filter_map(|(packet_id, id)| Some((*packet_id, (*id)?)))
                    .collect(),
            })
            .collect();
        RestoredState {
            sessions,
            expired_sessions: Vec::new(),
            retained: self.retained.values().cloned().collect(),
        }
    }
}
