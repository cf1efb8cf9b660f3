//! The relay of a session that moved between nodes, both ends.
//!
//! The old owner: for a while, messages that still reach this node for a session that
//! moved away (routes elsewhere still point here until they learn of its new node) are
//! relayed to the new owner, which keeps one copy of each (`broker/recent.rs`, by
//! `ClusterMessageId`). A relay starts when the claim is applied here, before the
//! session is handed over, and holds this node's routes for the session's filters, so
//! that every node's route table names this node or the new one for them at every point
//! of the log. It buffers what matches until the new owner confirms it stored the
//! session (so nothing reaches it before the session is there), then sends in order,
//! each batch acknowledged after the new owner's store write. It ends once this node's
//! route table names the new owner (or the session's owner by then) for every filter,
//! plus `RELAY_GRACE` for frames still on their way, after `RELAY_MAX` in any case, or
//! at once when the session comes back here; its last batch says so (`last`). Shared
//! subscriptions are not relayed: a group is served by its other members meanwhile.
//!
//! The new owner (`inbound`): a session imported from a node that relays to it holds
//! the deliveries that reach it otherwise (`Broker::release_held`) until that relay's
//! last batch, `HOLD_MAX` at most or until the relaying node is unreachable (counted).
//!
//! Chained moves (A to B, then on to C before A's relay ended, as when two connects
//! race): A's relay goes on to B; B relays onwards what A relays for the session it
//! passed on, and its own matches (with what the session held when it left) wait in
//! `deferred` behind A's relay; B's relay ends only after A's did.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::broker::{Broker, Relayed};
use crate::message::{ClusterMessageId, Message};
use crate::protocol::QoS;
use crate::session::{Delivery, SubscriptionEntry};
use crate::storage::codec;

use super::config::NodeId;
use super::network::{Request, Response};
use super::node::{lock, ClusterNode};
use super::state::{decode_base64, encode_base64};

mod inbound;

/// How long a relay goes on at most.
pub const RELAY_MAX: Duration = Duration::from_secs(30);
/// How long after the new owner's routes show here a relay goes on (frames other nodes
/// sent before they applied them).
const RELAY_GRACE: Duration = Duration::from_secs(2);
/// Messages a relay holds before the new owner confirmed, and waiting to be sent; more
/// are dropped and counted.
const RELAY_BUFFER: usize = 10_000;
/// Messages all relays of this node hold together; more are dropped and counted.
const RELAY_BUDGET: usize = 100_000;
/// Messages per relay request.
const RELAY_BATCH: usize = 256;
/// How often a relay checks whether it is over.
const RELAY_TICK: Duration = Duration::from_millis(100);
/// How long a moved session's deliveries wait behind its previous node's relay at most:
/// longer than a relay lasts, for a relay whose end never arrives.
pub const HOLD_MAX: Duration = Duration::from_secs(RELAY_MAX.as_secs() + 5);

/// A relayed message on the link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayedMessage {
    node: u64,
    sequence: u64,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
    /// The message, store encoding, base64.
    message: String,
}

impl RelayedMessage {
    fn new(
        broker: &Broker,
        message: &Message,
        qos: u8,
        retain: bool,
        subscription_ids: Vec<u32>,
    ) -> RelayedMessage {
        let id = message.cluster_id();
        // The id travels beside the body.
        let stored = crate::storage::StoredMessage::from_message(message, broker.wall_clock())
            .without_cluster_id();
        RelayedMessage {
            node: id.node,
            sequence: id.sequence,
            qos,
            retain,
            subscription_ids,
            message: encode_base64(&codec::encode_message(&stored)),
        }
    }

    pub fn decode(self, broker: &Broker) -> Option<Relayed> {
        let stored = codec::decode_message(&decode_base64(&self.message)?).ok()?;
        let message = stored.to_message(broker.wall_clock());
        let _ = message.cluster_id.set(ClusterMessageId {
            node: self.node,
            sequence: self.sequence,
        });
        Some(Relayed {
            message: Arc::new(message),
            qos: QoS::from_u8(self.qos)?,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
        })
    }
}

struct Relay {
    to: NodeId,
    epoch: u64,
    /// The session's plain filters.
    subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    /// Until the new owner confirms.
    buffer: Vec<RelayedMessage>,
    /// Once it confirmed.
    sender: Option<mpsc::Sender<RelayedMessage>>,
    started: Instant,
    /// Since when this node's route table names the new owner for every filter.
    covered_since: Option<Instant>,
    /// The session came here from a node that still relays to this one: this relay's
    /// own messages wait in `deferred` until that relay ended.
    behind: bool,
    deferred: Vec<RelayedMessage>,
}

/// The relays of sessions that moved away from this node, and those to this node.
#[derive(Default)]
pub struct Relays {
    /// How many there are: the check every PUBLISH makes while there are none.
    active: AtomicUsize,
    /// Messages held by all of them (buffered, deferred or waiting to be sent).
    held: AtomicUsize,
    relays: Mutex<HashMap<String, Relay>>,
    /// Sessions that moved here whose previous owner still relays to this node.
    inbound: Mutex<HashMap<String, inbound::Inbound>>,
}

impl ClusterNode {
    /// Starts relaying for `client_id`'s session, which moved to `to` (claim `epoch`),
    /// holding this node's routes for its filters. Called before the hand-over.
    pub(super) fn start_relay(
        &self,
        client_id: &str,
        to: NodeId,
        epoch: u64,
        subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    ) {
        let subscriptions: Vec<_> = subscriptions
            .into_iter()
            .filter(|(filter, _)| !filter.starts_with("$share/"))
            .collect();
        if subscriptions.is_empty() {
            return;
        }
        for (filter, _) in &subscriptions {
            crate::broker::ClusterHook::filter_added(self, filter);
        }
        let behind = lock(&self.relays.inbound).contains_key(client_id);
        let relay = Relay {
            to,
            epoch,
            subscriptions,
            buffer: Vec::new(),
            sender: None,
            started: Instant::now(),
            covered_since: None,
            behind,
            deferred: Vec::new(),
        };
        let previous = lock(&self.relays.relays).insert(client_id.to_string(), relay);
        match previous {
            Some(previous) => self.retire(client_id, previous),
            None => {
                self.relays.active.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::spawn(watch(self.this(), client_id.to_string(), epoch));
    }

    /// Whether this node relays `client_id`'s session to the node that claimed it with
    /// `epoch` (told to that node with the hand-over, so that it holds its other
    /// deliveries behind the relay).
    pub(super) fn relays_to(&self, client_id: &str, epoch: u64) -> bool {
        lock(&self.relays.relays)
            .get(client_id)
            .is_some_and(|relay| relay.epoch == epoch)
    }

    /// The new owner stored the session: what was buffered goes, and what follows.
    pub(super) fn confirm_relay(&self, client_id: &str, epoch: u64) {
        let mut relays = lock(&self.relays.relays);
        let Some(relay) = relays
            .get_mut(client_id)
            .filter(|relay| relay.epoch == epoch)
        else {
            return;
        };
        if relay.sender.is_some() {
            return;
        }
        let (sender, receiver) = mpsc::channel(RELAY_BUFFER);
        for message in relay.buffer.drain(..) {
            let _ = sender.try_send(message);
        }
        relay.sender = Some(sender);
        tokio::spawn(send(
            self.this(),
            client_id.to_string(),
            relay.to,
            relay.epoch,
            receiver,
        ));
    }

    /// The session changed owner again. A relay to the node it went to before goes on
    /// until its own end (that node relays onwards what reaches it); one of a session
    /// that came back here ends.
    pub(super) fn owner_changed(&self, client_id: &str, owner: NodeId) {
        if owner != self.me {
            return;
        }
        let ended = lock(&self.relays.relays).remove(client_id);
        if let Some(relay) = ended {
            self.relays.active.fetch_sub(1, Ordering::Relaxed);
            self.retire(client_id, relay);
        }
    }

    /// Relays `message` to the new owners of moving sessions it matches. Called after
    /// local routing for every message published here or forwarded to this node.
    pub(super) fn relay(&self, message: &Arc<Message>) {
        if self.relays.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let mut relays = lock(&self.relays.relays);
        for relay in relays.values_mut() {
            self.relay_one(&broker, relay, message);
        }
    }

    /// Relays `message` to where `client_id`'s session moved, if this node relays to it
    /// and the session subscribes to it; whether it does.
    pub(super) fn relay_for(&self, client_id: &str, message: &Arc<Message>) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let mut relays = lock(&self.relays.relays);
        relays
            .get_mut(client_id)
            .is_some_and(|relay| self.relay_one(&broker, relay, message))
    }

    /// Relays `message` through `relay` if its session subscribes to it; whether it did.
    fn relay_one(&self, broker: &Broker, relay: &mut Relay, message: &Arc<Message>) -> bool {
        {
            let mut matched: Option<RelayedMessage> = None;
            for (filter, entry) in &relay.subscriptions {
                if !crate::topic::matches(&message.topic, filter) {
                    continue;
                }
                // No Local: the new node may have the client publishing there already,
                // and a message from that node cannot be told apart from its own. (One
                // of another client there reaches the session on that node once it
                // imported it.)
                if entry.options.no_local
                    && message
                        .cluster_id
                        .get()
                        .is_some_and(|id| id.node == relay.to)
                {
                    continue;
                }
                let qos = message.qos.min(entry.options.qos) as u8;
                let retain = message.retain && entry.options.retain_as_published;
                let relayed = matched.get_or_insert_with(|| {
                    RelayedMessage::new(broker, message, qos, retain, Vec::new())
                });
                relayed.qos = relayed.qos.max(qos);
                relayed.retain |= retain;
                relayed.subscription_ids.extend(entry.subscription_id);
            }
            match matched {
                Some(relayed) => {
                    self.keep(relay, relayed);
                    true
                }
                None => false,
            }
        }
    }

    /// Queues one message of `relay` (buffered until confirmed; deferred while the
    /// relay is behind another), within the bounds; counted either way.
    fn keep(&self, relay: &mut Relay, relayed: RelayedMessage) {
        let kept = if self.relays.held.load(Ordering::Relaxed) >= RELAY_BUDGET {
            false
        } else if !relay.behind {
            send_or_buffer(relay, relayed)
        } else if relay.deferred.len() < RELAY_BUFFER {
            relay.deferred.push(relayed);
            true
        } else {
            false
        };
        if kept {
            self.relays.held.fetch_add(1, Ordering::Relaxed);
            self.stats.relayed_messages.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages relayed here for a session that moved on meanwhile: they go on through
    /// this node's relay to its next owner, ahead of what that relay defers (counted as
    /// dropped when there is none).
    pub(super) fn relay_onwards(&self, client_id: &str, messages: Vec<Relayed>) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let mut relays = lock(&self.relays.relays);
        let mut relay = relays.get_mut(client_id);
        for relayed in messages {
            let Some(relay) = relay.as_deref_mut() else {
                self.stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let message = RelayedMessage::new(
                &broker,
                &relayed.message,
                relayed.qos as u8,
                relayed.retain,
                relayed.subscription_ids,
            );
            let behind = std::mem::replace(&mut relay.behind, false);
            self.keep(relay, message);
            relay.behind = behind;
        }
    }

    /// What a session held behind the relay to this node when it moved on (arrived
    /// before anything its new relay took): first in that relay's deferred messages.
    pub(super) fn defer_held(&self, client_id: &str, held: Vec<Delivery>) {
        if held.is_empty() {
            return;
        }
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let mut relays = lock(&self.relays.relays);
        let Some(relay) = relays.get_mut(client_id) else {
            self.stats
                .relay_dropped
                .fetch_add(held.len() as u64, Ordering::Relaxed);
            return;
        };
        let earlier = relay.deferred.len();
        for delivery in held {
            let message = RelayedMessage::new(
                &broker,
                &delivery.message,
                delivery.qos as u8,
                delivery.retain,
                delivery.subscription_ids,
            );
            self.keep(relay, message);
        }
        if relay.behind {
            // Before what the relay deferred since it started.
            relay.deferred.rotate_left(earlier);
        }
    }

    /// Gives back the routes a relay held.
    fn release_routes(&self, relay: &Relay) {
        for (filter, _) in &relay.subscriptions {
            crate::broker::ClusterHook::filter_removed(self, filter);
        }
    }

    /// Ends the relay of `client_id` (claim `epoch`) if it is over; whether it ended.
    fn end_relay_if_over(&self, client_id: &str, epoch: u64) -> bool {
        let now = Instant::now();
        let ended = {
            let mut relays = lock(&self.relays.relays);
            let Some(relay) = relays.get_mut(client_id) else {
                return true;
            };
            if relay.epoch != epoch {
                return true;
            }
            // Named for every filter: the node relayed to, or the session's owner now
            // (which that node relays onwards to); and nothing relayed here for the
            // session any more.
            let covered = !relay.behind
                && self.with_state(|state| {
                    let owner = state.owners.get(client_id).map(|owner| owner.node);
                    relay.subscriptions.iter().all(|(filter, _)| {
                        state.routes.get(&**filter).is_some_and(|nodes| {
                            nodes.contains(&relay.to)
                                || owner.is_some_and(|owner| nodes.contains(&owner))
                        })
                    })
                });
            relay.covered_since = if covered {
                relay.covered_since.or(Some(now))
            } else {
                None
            };
            let over = now.duration_since(relay.started) >= RELAY_MAX
                || relay
                    .covered_since
                    .is_some_and(|since| now.duration_since(since) >= RELAY_GRACE);
            if !over {
                return false;
            }
            relays.remove(client_id)
        };
        if let Some(relay) = ended {
            self.relays.active.fetch_sub(1, Ordering::Relaxed);
            self.retire(client_id, relay);
        }
        true
    }

    /// A relay that ended: its routes go back, what it deferred goes after what it
    /// sent, and the new owner is told (after the last batch). What it still buffered
    /// (its new owner never confirmed, so it did not store the session) is counted as
    /// dropped.
    fn retire(&self, client_id: &str, mut relay: Relay) {
        flush_deferred(self, &mut relay);
        let buffered = relay.buffer.len();
        if buffered > 0 {
            self.relays.held.fetch_sub(buffered, Ordering::Relaxed);
            self.stats
                .relay_dropped
                .fetch_add(buffered as u64, Ordering::Relaxed);
        }
        self.release_routes(&relay);
        // A confirmed relay's sender ends with its last batch (`send`).
        if relay.sender.is_none() {
            tokio::spawn(send_end(
                self.this(),
                client_id.to_string(),
                relay.to,
                relay.epoch,
            ));
        }
    }
}

/// The deferred messages of `relay` go, after what it sent so far.
fn flush_deferred(node: &ClusterNode, relay: &mut Relay) {
    relay.behind = false;
    for message in std::mem::take(&mut relay.deferred) {
        if !send_or_buffer(relay, message) {
            node.relays.held.fetch_sub(1, Ordering::Relaxed);
            node.stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands one message to a relay's sender, or buffers it until its new owner confirmed;
/// false when full.
fn send_or_buffer(relay: &mut Relay, message: RelayedMessage) -> bool {
    match &relay.sender {
        Some(sender) => sender.try_send(message).is_ok(),
        None if relay.buffer.len() < RELAY_BUFFER => {
            relay.buffer.push(message);
            true
        }
        None => false,
    }
}

/// Ends the relay when it is over.
async fn watch(node: Weak<ClusterNode>, client_id: String, epoch: u64) {
    loop {
        tokio::time::sleep(RELAY_TICK).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if node.end_relay_if_over(&client_id, epoch) {
            return;
        }
    }
}

/// Sends a confirmed relay's messages to the new owner in order, a batch at a time,
/// each acknowledged once stored there; a failed batch is sent again for up to
/// `RELAY_MAX`, then counted as dropped. Once the relay ended (its channel closed), the
/// last batch tells so.
async fn send(
    node: Weak<ClusterNode>,
    client_id: String,
    to: NodeId,
    epoch: u64,
    mut receiver: mpsc::Receiver<RelayedMessage>,
) {
    let mut batch = Vec::with_capacity(RELAY_BATCH);
    loop {
        let received = receiver.recv_many(&mut batch, RELAY_BATCH).await;
        let count = batch.len();
        let request = Request::Relay {
            client_id: client_id.clone(),
            messages: std::mem::take(&mut batch),
            epoch,
            last: received == 0,
        };
        let delivered = match serde_json::to_vec(&request) {
            Ok(body) => send_batch(&node, to, &body).await,
            Err(_) => false,
        };
        let Some(cluster) = node.upgrade() else {
            return;
        };
        if received == 0 {
            return;
        }
        cluster.relays.held.fetch_sub(count, Ordering::Relaxed);
        if !delivered {
            tracing::warn!(
                client_id,
                to,
                count,
                "messages relayed to a moved session's new node were not acknowledged"
            );
            cluster
                .stats
                .relay_dropped
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }
}

/// Tells the new owner that a relay that never sent anything ended (best effort: it
/// may not even hold the session; otherwise its hold ends by its bound).
async fn send_end(node: Weak<ClusterNode>, client_id: String, to: NodeId, epoch: u64) {
    let request = Request::Relay {
        client_id,
        messages: Vec::new(),
        epoch,
        last: true,
    };
    let (Some(cluster), Ok(body)) = (node.upgrade(), serde_json::to_vec(&request)) else {
        return;
    };
    let _ = cluster.links.request(to, &body, RELAY_GRACE).await;
}

/// One batch, until the new owner acknowledges it or `RELAY_MAX` passed.
async fn send_batch(node: &Weak<ClusterNode>, to: NodeId, body: &[u8]) -> bool {
    let started = Instant::now();
    loop {
        let Some(cluster) = node.upgrade() else {
            return false;
        };
        if let Ok(answer) = cluster.links.request(to, body, RELAY_MAX).await {
            if matches!(serde_json::from_slice(&answer), Ok(Response::Relayed(true))) {
                return true;
            }
        }
        if started.elapsed() >= RELAY_MAX {
            return false;
        }
        drop(cluster);
        tokio::time::sleep(RELAY_TICK).await;
    }
}
