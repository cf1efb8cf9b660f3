//! One peer's forwarded QoS 1/2 messages that it has not acknowledged yet: kept (bounded
//! in messages and in `cluster.link_buffer_bytes`) until its `FORWARD_ACK` says every
//! store write they caused there is durable, sent again whole on every new connection,
//! and failed when no acknowledgement came within `cluster.forward_ack_timeout_ms`.
//! The publisher's PUBACK/PUBREC waits for the completion each entry hands out
//! (ARCHITECTURE.md, "Forwarded QoS 1/2 messages are acknowledged").
//!
//! `FORWARD_ACK` body: entries of `u64` BE node, `u64` BE sequence (the message's
//! `ClusterMessageId`) and one byte, 1 when the writes are durable, 0 when they failed.
//! `FORWARD_MOVED` body: a JSON list of `MovedAck`, messages whose writes failed only
//! because sessions they were for moved to other nodes: the entry leaves the list, and
//! its publisher's acknowledgement waits for those nodes instead (`MovedForward`).

use std::collections::BTreeMap;

use crate::message::{ClusterMessageId, Message};

use super::*;

/// Unacknowledged forwards kept per peer; beyond, a QoS 1/2 message is refused (its
/// publisher is not acknowledged and sends it again).
pub const MAX_UNACKED_FORWARDS: usize = 10_000;

/// Bytes of one entry of a `FORWARD_ACK` body.
pub const ACK_ENTRY_BYTES: usize = 17;

/// One forwarded message waiting for the peer's acknowledgement.
pub(super) struct PendingForward {
    frame: Bytes,
    /// Resolves the publisher's completion; dropped unfulfilled it fails it.
    promise: WritePromise,
    since: Instant,
    message: Arc<Message>,
    groups: Vec<String>,
    /// Every node the message was sent to (this peer included), so that a destination
    /// found again while this peer is down is not sent a second copy.
    sent_to: Vec<NodeId>,
    /// Copies sent to other nodes while this peer was down, which the publisher's
    /// acknowledgement waits for too.
    also: Vec<Completion>,
}

#[derive(Default)]
pub(super) struct Unacked {
    entries: BTreeMap<(u64, u64), PendingForward>,
    bytes: usize,
}

/// A message kept for a peer that is down, to be sent to the nodes that now have
/// routes for it (`PeerLink::rerouting`).
pub struct Reroute {
    pub id: ClusterMessageId,
    pub message: Arc<Message>,
    pub groups: Vec<String>,
    pub sent_to: Vec<NodeId>,
}

/// A `FORWARD_MOVED` entry: a forwarded message the peer could not keep for sessions
/// that other nodes took over from a backup's copy without it, and those sessions
/// (client id, the node that holds it now).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MovedAck {
    pub node: u64,
    pub sequence: u64,
    pub sessions: Vec<(String, NodeId)>,
}

impl MovedAck {
    pub fn id(&self) -> ClusterMessageId {
        ClusterMessageId {
            node: self.node,
            sequence: self.sequence,
        }
    }
}

/// A message off the unacknowledged list by `FORWARD_MOVED`, to be handed to the nodes
/// its sessions moved to; its publisher's acknowledgement waits for `settle`.
pub struct MovedForward {
    pub message: Arc<Message>,
    pub sessions: Vec<(String, NodeId)>,
    promise: WritePromise,
    /// Copies sent to other nodes while the peer was down (`PendingForward::also`).
    also: Vec<Completion>,
}

impl MovedForward {
    /// The publisher's acknowledgement waits for `copies` (the new nodes' answers) and
    /// for whatever it waited for besides the peer.
    pub fn settle(self, copies: Vec<Completion>) {
        let mut writes = self.also;
        writes.extend(copies);
        self.promise.fulfil(writes);
    }

    /// Nobody takes it to the new nodes: its publisher is not acknowledged.
    pub fn fail(self, peer: NodeId) {
        self.settle(vec![Completion::done(Err(StoreError::Io(format!(
            "node {peer} could not store a forwarded message"
        ))))]);
    }
}

fn key(id: ClusterMessageId) -> (u64, u64) {
    (id.node, id.sequence)
}

impl PeerLink {
    /// Forwards a QoS 1/2 message and keeps it until the peer acknowledges it, sent
    /// again on every reconnection. Returns what the publisher's acknowledgement waits
    /// for: the peer's acknowledgement, and the outbox draining when it is congested
    /// (`forward`). A peer that is down keeps it too (sent once the link is back, or to
    /// the nodes that take its sessions). `Err` (counted, logged rate-limited) when the
    /// entry cannot be kept or the outbox is full.
    pub fn forward_acknowledged(
        &self,
        frame: Bytes,
        message: &Arc<Message>,
        groups: Vec<String>,
        sent_to: Vec<NodeId>,
    ) -> Result<(Completion, Option<Completion>), NotQueued> {
        let id = message.cluster_id();
        let mut unacked = lock(&self.unacked);
        if unacked.entries.len() >= MAX_UNACKED_FORWARDS || unacked.bytes + frame.len() > self.limit
        {
            drop(unacked);
            self.stats.unacked_refused.fetch_add(1, Ordering::Relaxed);
            self.dropped("too many forwarded messages wait for its acknowledgement (cluster.link_buffer_bytes, 10000 messages)");
            return Err(NotQueued::OutboxFull);
        }
        // Under the entries' lock: a connection that starts requeues every entry under
        // it too, so the message is either queued here or requeued there.
        let mut pause = None;
        if self.is_connected() {
            let mut outbox = lock(&self.outbox);
            if outbox.bytes + frame.len() > self.limit {
                drop(outbox);
                drop(unacked);
                self.dropped("its outbox (cluster.link_buffer_bytes) is full");
                return Err(NotQueued::OutboxFull);
            }
            outbox.bytes += frame.len();
            outbox.frames.push_back(frame.clone());
            let congested = outbox.bytes > self.high_water() && !outbox.stalled;
            if congested && !self.publisher_pause.is_zero() {
                pause = Some(self.pause(&mut outbox));
            }
        }
        let (promise, waiters) = write_promise();
        unacked.bytes += frame.len();
        unacked.entries.insert(
            key(id),
            PendingForward {
                frame,
                promise,
                since: Instant::now(),
                message: message.clone(),
                groups,
                sent_to,
                also: Vec::new(),
            },
        );
        drop(unacked);
        self.ready.notify_one();
        Ok((Completion::shared(waiters), pause))
    }

    /// Forwarded messages this peer has not acknowledged yet (a metric).
    pub fn unacked_forwards(&self) -> usize {
        lock(&self.unacked).entries.len()
    }

    /// A `FORWARD_ACK` from the peer: the acknowledged messages' publishers go on (once
    /// the copies sent elsewhere meanwhile are acknowledged too).
    pub(super) fn acknowledged(&self, mut body: Bytes) {
        let mut settled = Vec::new();
        {
            let mut unacked = lock(&self.unacked);
            while body.remaining() >= ACK_ENTRY_BYTES {
                let id = (body.get_u64(), body.get_u64());
                let durable = body.get_u8() == 1;
                if let Some(entry) = unacked.entries.remove(&id) {
                    unacked.bytes -= entry.frame.len();
                    settled.push((entry, durable));
                }
            }
        }
        for (entry, durable) in settled {
            self.stats.acked_forwards.fetch_add(1, Ordering::Relaxed);
            let mut writes = entry.also;
            if !durable {
                writes.push(Completion::done(Err(StoreError::Io(format!(
                    "node {} could not store a forwarded message",
                    self.id
                )))));
            }
            entry.promise.fulfil(writes);
        }
    }

    /// A `FORWARD_MOVED` from the peer: the messages it names leave the list, to be
    /// handed to the nodes their sessions moved to. A malformed body is ignored (its
    /// messages time out).
    pub(super) fn take_moved(&self, body: &[u8]) -> Vec<MovedForward> {
        let entries: Vec<MovedAck> = match serde_json::from_slice(body) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(peer = self.id, %error, "malformed FORWARD_MOVED frame ignored");
                return Vec::new();
            }
        };
        let mut moved = Vec::with_capacity(entries.len());
        let mut unacked = lock(&self.unacked);
        for entry in entries {
            if let Some(pending) = unacked.entries.remove(&key(entry.id())) {
                unacked.bytes -= pending.frame.len();
                moved.push(MovedForward {
                    message: pending.message,
                    sessions: entry.sessions,
                    promise: pending.promise,
                    also: pending.also,
                });
            }
        }
        drop(unacked);
        self.stats
            .moved_forwards
            .fetch_add(moved.len() as u64, Ordering::Relaxed);
        moved
    }

    /// Queues every unacknowledged message again, in order, on a connection that just
    /// started (called with the outbox emptied for it, under the entries' lock).
    pub(super) fn requeue_unacked(&self, unacked: &Unacked, outbox: &mut Outbox) {
        for entry in unacked.entries.values() {
            outbox.bytes += entry.frame.len();
            outbox.frames.push_back(entry.frame.clone());
        }
        if !unacked.entries.is_empty() {
            self.stats
                .resent_forwards
                .fetch_add(unacked.entries.len() as u64, Ordering::Relaxed);
        }
    }

    /// Fails the messages that waited `timeout` for an acknowledgement: their publishers
    /// are not acknowledged (they send them again). Returns how many.
    pub fn expire_unacked(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let expired = self.take_where(|entry| now.duration_since(entry.since) >= timeout);
        let count = expired.len();
        if count == 0 {
            return 0;
        }
        self.stats
            .timed_out_forwards
            .fetch_add(count as u64, Ordering::Relaxed);
        if let Some(logged) = self.drops_logged.occurred(now) {
            tracing::warn!(
                peer = self.id,
                count,
                logged,
                "forwarded QoS 1/2 messages not acknowledged within cluster.forward_ack_timeout_ms: their publishers are not acknowledged"
            );
        }
        for entry in expired {
            entry
                .promise
                .fulfil(vec![Completion::done(Err(StoreError::Io(format!(
                    "node {} did not acknowledge a forwarded message in time",
                    self.id
                ))))]);
        }
        count
    }

    /// Settles the kept messages of this (unreachable) peer that no longer need it: the
    /// route table no longer sends them here and every node it does send them to got a
    /// copy (`rerouted`). Their publishers wait only for those copies (none: nothing
    /// subscribes any more, as for a message without subscribers). Returns how many.
    pub fn release_unrouted(&self, destinations: impl Fn(&Message) -> Vec<NodeId>) -> usize {
        let released = self.take_where(|entry| {
            let now = destinations(&entry.message);
            !now.contains(&self.id) && now.iter().all(|node| entry.sent_to.contains(node))
        });
        let count = released.len();
        for entry in released {
            entry.promise.fulfil(entry.also);
        }
        count
    }

    /// Removes the entries `settled` picks, in order, for their promises to be fulfilled
    /// outside the lock.
    fn take_where(&self, settled: impl Fn(&PendingForward) -> bool) -> Vec<PendingForward> {
        let mut unacked = lock(&self.unacked);
        let ids: Vec<(u64, u64)> = unacked
            .entries
            .iter()
            .filter(|(_, entry)| settled(entry))
            .map(|(id, _)| *id)
            .collect();
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = unacked.entries.remove(&id) {
                unacked.bytes -= entry.frame.len();
                taken.push(entry);
            }
        }
        taken
    }

    /// The kept messages, for sending to the nodes that took over this (unreachable)
    /// peer's routes.
    pub fn rerouting(&self) -> Vec<Reroute> {
        lock(&self.unacked)
            .entries
            .iter()
            .map(|(&(node, sequence), entry)| Reroute {
                id: ClusterMessageId { node, sequence },
                message: entry.message.clone(),
                groups: entry.groups.clone(),
                sent_to: entry.sent_to.clone(),
            })
            .collect()
    }

    /// `id` was sent to `node` too (`rerouting`): the publisher's acknowledgement also
    /// waits for `completion`. False when the entry is gone (acknowledged or expired).
    pub fn rerouted(&self, id: ClusterMessageId, node: NodeId, completion: Completion) -> bool {
        let mut unacked = lock(&self.unacked);
        let Some(entry) = unacked.entries.get_mut(&key(id)) else {
            return false;
        };
        entry.sent_to.push(node);
        entry.also.push(completion);
        self.stats.rerouted_forwards.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Encodes a `FORWARD_MOVED` body.
pub fn encode_moved(entries: &[MovedAck]) -> Vec<u8> {
    serde_json::to_vec(entries).unwrap_or_default()
}

/// Encodes `FORWARD_ACK` entries.
pub fn encode_acks(acks: &[(ClusterMessageId, bool)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(acks.len() * ACK_ENTRY_BYTES);
    for (id, durable) in acks {
        body.put_u64(id.node);
        body.put_u64(id.sequence);
        body.put_u8(u8::from(*durable));
    }
    body
}
