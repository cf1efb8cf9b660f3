//! The old owner's part of a move after the hand-over: for a while, messages that still
//! reach this node for a session that moved away (routes elsewhere still point here
//! until they learn of its new node) are relayed to the new owner, which keeps one copy
//! of each (`Session::remember_moved`, by `ClusterMessageId`).
//!
//! A relay starts when the claim is applied here, before the session is handed over,
//! and holds this node's routes for the session's filters, so that every node's route
//! table names this node or the new one for them at every point of the log. It buffers
//! what matches until the new owner confirms it stored the session (so nothing reaches
//! it before the session is there), then sends in order, each batch acknowledged after
//! the new owner's store write. It ends once this node's route table names the new
//! owner for every filter (plus `RELAY_GRACE` for frames still on their way), after
//! `RELAY_MAX` in any case, or when the session changes owner again. Shared
//! subscriptions are not relayed: a group is served by its other members meanwhile.

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
use crate::session::SubscriptionEntry;
use crate::storage::codec;

use super::config::NodeId;
use super::network::{Request, Response};
use super::node::{lock, ClusterNode};
use super::state::{decode_base64, encode_base64};

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
}

/// The relays of sessions that moved away from this node.
#[derive(Default)]
pub struct Relays {
    /// How many there are: the check every PUBLISH makes while there are none.
    active: AtomicUsize,
    /// Messages held by all of them (buffered or waiting to be sent).
    held: AtomicUsize,
    relays: Mutex<HashMap<String, Relay>>,
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
        let relay = Relay {
            to,
            epoch,
            subscriptions,
            buffer: Vec::new(),
            sender: None,
            started: Instant::now(),
            covered_since: None,
        };
        let previous = lock(&self.relays.relays).insert(client_id.to_string(), relay);
        match previous {
            Some(previous) => self.retire(previous),
            None => {
                self.relays.active.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::spawn(watch(self.this(), client_id.to_string(), epoch));
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
        tokio::spawn(send(self.this(), client_id.to_string(), relay.to, receiver));
    }

    /// The session changed owner again (or came back): its relay, if any, ends.
    pub(super) fn owner_changed(&self, client_id: &str, owner: NodeId) {
        let ended = {
            let mut relays = lock(&self.relays.relays);
            match relays.get(client_id) {
                Some(relay) if relay.to != owner => relays.remove(client_id),
                _ => None,
            }
        };
        if let Some(relay) = ended {
            self.relays.active.fetch_sub(1, Ordering::Relaxed);
            self.retire(relay);
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
                    let id = message.cluster_id();
                    let stored =
                        crate::storage::StoredMessage::from_message(message, broker.wall_clock());
                    RelayedMessage {
                        node: id.node,
                        sequence: id.sequence,
                        qos,
                        retain,
                        subscription_ids: Vec::new(),
                        message: encode_base64(&codec::encode_message(&stored)),
                    }
                });
                relayed.qos = relayed.qos.max(qos);
                relayed.retain |= retain;
                relayed.subscription_ids.extend(entry.subscription_id);
            }
            let Some(relayed) = matched else {
                continue;
            };
            let kept = self.relays.held.load(Ordering::Relaxed) < RELAY_BUDGET
                && match &relay.sender {
                    Some(sender) => sender.try_send(relayed).is_ok(),
                    None if relay.buffer.len() < RELAY_BUFFER => {
                        relay.buffer.push(relayed);
                        true
                    }
                    None => false,
                };
            if kept {
                self.relays.held.fetch_add(1, Ordering::Relaxed);
                self.stats.relayed_messages.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
            }
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
            let covered = self.with_state(|state| {
                relay.subscriptions.iter().all(|(filter, _)| {
                    state
                        .routes
                        .get(&**filter)
                        .is_some_and(|nodes| nodes.contains(&relay.to))
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
            self.retire(relay);
        }
        true
    }

    /// A relay that ended: its routes go back, and what it still buffered (its new owner
    /// never confirmed, so it did not store the session) is counted as dropped.
    fn retire(&self, relay: Relay) {
        let buffered = relay.buffer.len();
        if buffered > 0 {
            self.relays.held.fetch_sub(buffered, Ordering::Relaxed);
            self.stats
                .relay_dropped
                .fetch_add(buffered as u64, Ordering::Relaxed);
        }
        self.release_routes(&relay);
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
/// `RELAY_MAX`, then counted as dropped.
async fn send(
    node: Weak<ClusterNode>,
    client_id: String,
    to: NodeId,
    mut receiver: mpsc::Receiver<RelayedMessage>,
) {
    let mut batch = Vec::with_capacity(RELAY_BATCH);
    while receiver.recv_many(&mut batch, RELAY_BATCH).await > 0 {
        let count = batch.len();
        let request = Request::Relay {
            client_id: client_id.clone(),
            messages: std::mem::take(&mut batch),
        };
        let delivered = match serde_json::to_vec(&request) {
            Ok(body) => send_batch(&node, to, &body).await,
            Err(_) => false,
        };
        let Some(cluster) = node.upgrade() else {
            return;
        };
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
