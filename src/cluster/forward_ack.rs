//! Acknowledged forwarding of QoS 1/2 messages (ARCHITECTURE.md, "Forwarded QoS 1/2
//! messages are acknowledged"), the parts the running node owns:
//!
//! - receiving: a `FORWARD_ACKED` message is routed once per `ClusterMessageId` (a copy
//!   sent again after a link failure is recognised in `Received`, a bounded window of
//!   recent ids, whether or not the first copy's writes are done) and answered with a
//!   `FORWARD_ACK` once the store writes it caused here (the local write and, with
//!   replication, the in-sync backups' copies) are durable. One task per sending node
//!   awaits those writes in arrival order and batches the acknowledgements.
//! - sending: once per `SWEEP_INTERVAL`, messages that waited
//!   `cluster.forward_ack_timeout_ms` fail their publishers' acknowledgements, and the
//!   messages kept for a peer that is down go to the nodes that now have routes for
//!   them (its sessions moved there: a failover to a backup, or the clients reconnecting
//!   elsewhere). The sender's side of the link keeps the messages (`link::unacked`).
//! - restart: a node that restored persistent sessions may hold some that moved away
//!   while it was down, and learns so only once it caught up with the cluster's log.
//!   Until then it holds the forwards it receives (`CatchingUp`) and routes them after:
//!   stored for a session that is gone, a copy the publishing node kept for this node
//!   (sent again as the link came back) was acknowledged into nowhere, and the message
//!   was lost; refused because such a write cannot be kept, its publisher was told to
//!   send it again and the subscriber got it twice. The sessions that moved while this
//!   node was down took those copies with them (`pull_pending`).
//! - failover: a session taken over from a backup of its dead owner lacks what was on
//!   its way to that owner; before it is resumed, the node that took it asks every node
//!   for the messages it holds unacknowledged for the dead one (`pull_pending`) and
//!   queues those the session subscribes to (copies it has are dropped by their id).
//!   An adoption of a dead node's sessions (`cluster::adoption`) does the same, asking
//!   once for all the sessions it adopts. Rerouting alone would miss sessions taken over after their node's routes moved.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::message::{ClusterMessageId, Message};
use crate::storage::Completion;

use super::config::NodeId;
use super::forward;
use super::link;
use super::network::{Request, Response};
use super::node::{lock, ClusterNode};
use crate::broker::Relayed;

/// Ids of acknowledged forwards remembered per node for recognising copies sent again.
/// Larger than what a sender keeps unacknowledged (`link::MAX_UNACKED_FORWARDS`), so a
/// copy sent again is always within it while this node runs.
pub const RECEIVED_WINDOW: usize = 4 * link::MAX_UNACKED_FORWARDS;
/// How often timeouts and rerouting are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Acknowledgements in one `FORWARD_ACK` frame at most.
const ACKS_PER_FRAME: usize = 1024;

/// Where a received message's writes stand.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Written {
    /// Routed; its writes are under way (its acknowledgement follows them, to the node
    /// that sent it first). With the other nodes that sent a copy meanwhile, each
    /// answered too once the writes are done: a publisher's client sent its message
    /// again to another node after the first one died, which routed it under the same
    /// id.
    Pending { first: NodeId, others: Vec<NodeId> },
    /// Its writes are durable: a copy is acknowledged at once.
    Durable,
}

/// What to do with an acknowledged forward that arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First copy: route it.
    New,
    /// A copy of one already routed whose writes are durable: acknowledge it at once.
    AcknowledgeAgain,
    /// A copy of one whose writes are under way: its acknowledgement follows them.
    Wait,
}

/// The ids of forwards received lately, bounded (the oldest go first).
#[derive(Default)]
pub struct ReceivedIds {
    state: HashMap<ClusterMessageId, Written>,
    order: VecDeque<ClusterMessageId>,
}

impl ReceivedIds {
    /// A forward of `id` arrived from node `from`.
    pub fn arrive(&mut self, id: ClusterMessageId, from: NodeId) -> Arrival {
        match self.state.get_mut(&id) {
            Some(Written::Durable) => return Arrival::AcknowledgeAgain,
            Some(Written::Pending { first, others }) => {
                if from != *first && !others.contains(&from) {
                    others.push(from);
                }
                return Arrival::Wait;
            }
            None => {}
        }
        self.state.insert(
            id,
            Written::Pending {
                first: from,
                others: Vec::new(),
            },
        );
        self.order.push_back(id);
        while self.order.len() > RECEIVED_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.state.remove(&oldest);
            }
        }
        Arrival::New
    }

    /// Whether `id` arrived lately (routed, whether or not its writes are done).
    pub fn contains(&self, id: ClusterMessageId) -> bool {
        self.state.contains_key(&id)
    }

    /// The writes of `id` finished: durable, or failed (then a copy is routed anew).
    /// The other nodes waiting for the answer too, besides the first sender.
    pub fn settle(&mut self, id: ClusterMessageId, durable: bool) -> Vec<NodeId> {
        let previous = if durable {
            self.state
                .get_mut(&id)
                .map(|state| std::mem::replace(state, Written::Durable))
        } else {
            self.state.remove(&id)
        };
        match previous {
            Some(Written::Pending { others, .. }) => others,
            _ => Vec::new(),
        }
    }
}

/// The receiving side: recent ids, one acknowledging task per sending node, and what
/// waits while a restarted node catches up.
#[derive(Default)]
pub struct Received {
    ids: Arc<Mutex<ReceivedIds>>,
    senders: Mutex<HashMap<NodeId, AckQueue>>,
    catching_up: Mutex<Option<CatchingUp>>,
    /// Whether `catching_up` is set: every forward checks it, and only a restarted node
    /// catching up takes the lock.
    holding: std::sync::atomic::AtomicBool,
}

/// Forward frames received before a restarted node caught up, in arrival order.
#[derive(Default)]
pub struct CatchingUp {
    frames: VecDeque<HeldForward>,
    bytes: usize,
}

/// One held forward frame: the sending node, the body, whether it is to be acknowledged.
type HeldForward = (NodeId, bytes::Bytes, bool);

/// Forward frames a catching-up node holds at most, and their bytes: beyond, frames are
/// dropped unacknowledged (counted) and their publishers send them again.
const CATCHING_UP_FRAMES: usize = RECEIVED_WINDOW;
const CATCHING_UP_BYTES: usize = 64 << 20;

impl Received {
    /// Whether a forward of `id` arrived lately (`ReceivedIds::contains`).
    pub fn knows(&self, id: ClusterMessageId) -> bool {
        lock(&self.ids).contains(id)
    }

    /// Starts holding forwards until `release_held_forwards` (a node that restored
    /// persistent sessions).
    pub fn hold_until_caught_up(&self) {
        *lock(&self.catching_up) = Some(CatchingUp::default());
        self.holding
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Holds a forward frame while this node catches up: `None` when it is not (route
    /// it now), else whether it was kept (`false`: beyond the bound, dropped).
    fn hold(&self, from: NodeId, body: &bytes::Bytes, acknowledge: bool) -> Option<bool> {
        if !self.holding.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut catching_up = lock(&self.catching_up);
        let held = catching_up.as_mut()?;
        if held.frames.len() >= CATCHING_UP_FRAMES || held.bytes + body.len() > CATCHING_UP_BYTES {
            return Some(false);
        }
        held.bytes += body.len();
        held.frames.push_back((from, body.clone(), acknowledge));
        Some(true)
    }

    /// The frames held so far; the hold ends when none are left (`None`).
    fn take_held(&self) -> Option<Vec<HeldForward>> {
        let mut catching_up = lock(&self.catching_up);
        let held = catching_up.as_mut()?;
        if held.frames.is_empty() {
            *catching_up = None;
            self.holding
                .store(false, std::sync::atomic::Ordering::Release);
            return None;
        }
        held.bytes = 0;
        Some(held.frames.drain(..).collect())
    }
}

/// The answers one node gets: acknowledgements (durable or failed), and messages kept
/// for sessions that moved away.
type Answers = (Vec<(ClusterMessageId, bool)>, Vec<link::MovedAck>);

/// A received message and the writes its acknowledgement waits for.
type AckQueue = mpsc::Sender<(ClusterMessageId, Option<Completion>)>;

impl ClusterNode {
    /// Holds `body` while this node catches up after a restart; whether it did (the
    /// caller routes it otherwise).
    pub(super) fn hold_while_catching_up(
        &self,
        from: NodeId,
        body: &bytes::Bytes,
        acknowledge: bool,
    ) -> bool {
        match self.received.hold(from, body, acknowledge) {
            None => false,
            Some(true) => true,
            Some(false) => {
                let dropped = self
                    .stats
                    .forwards_dropped_catching_up
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        from,
                        dropped = dropped + 1,
                        "forwarded messages dropped unacknowledged while this node catches up (their publishers send them again)"
                    );
                }
                true
            }
        }
    }

    /// This node caught up with the cluster's log: the forwards held meanwhile are
    /// routed, in the order they came (those arriving meanwhile join the end), against
    /// the sessions it owns now.
    pub(super) async fn release_held_forwards(&self) {
        let mut released = 0usize;
        while let Some(frames) = self.received.take_held() {
            for (from, body, acknowledge) in frames {
                released += 1;
                if let Some(pause) = self.route_forward(from, body, acknowledge) {
                    pause.await;
                }
            }
        }
        if released > 0 {
            tracing::info!(released, "forwarded messages held while catching up routed");
        }
    }

    /// Routes an acknowledged forward (unless a copy was routed before) and queues its
    /// acknowledgement behind its writes. Returns the routing's congested session, and
    /// a pause of the link's reader when the acknowledging task is behind.
    pub(super) fn receive_acknowledged(
        &self,
        from: NodeId,
        message: &Arc<Message>,
        route: impl FnOnce() -> Option<Completion>,
    ) -> Option<link::ReadPause> {
        let id = message.cluster_id();
        let arrival = lock(&self.received.ids).arrive(id, from);
        let writes = match arrival {
            Arrival::Wait => return None,
            Arrival::AcknowledgeAgain => None,
            Arrival::New => route(),
        };
        let queue = self.ack_queue(from);
        match queue.try_send((id, writes)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(item)) => {
                // The reader waits: the sender's unacknowledged messages bound this.
                Some(Box::pin(async move {
                    let _ = queue.send(item).await;
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    fn ack_queue(&self, from: NodeId) -> AckQueue {
        let mut senders = lock(&self.received.senders);
        if let Some(sender) = senders.get(&from).filter(|sender| !sender.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(link::MAX_UNACKED_FORWARDS);
        senders.insert(from, sender.clone());
        tokio::spawn(acknowledge(
            self.this(),
            self.received.ids.clone(),
            from,
            receiver,
        ));
        sender
    }

    /// Sends the messages kept for `peer` (down) to the nodes that have routes for them
    /// now and did not get them; returns how many copies went.
    fn reroute(&self, peer: &link::PeerLink) -> usize {
        let mut sent = 0;
        for kept in peer.rerouting() {
            for (node, groups) in self.routes.destinations(&kept.message.topic) {
                if node == peer.id || kept.sent_to.contains(&node) {
                    continue;
                }
                let Some(other) = self.links.peer(node) else {
                    continue;
                };
                // A shared group keeps the member it was given to, unless it is here.
                let groups: Vec<String> = groups
                    .into_iter()
                    .filter(|group| kept.groups.contains(group))
                    .collect();
                let Some(completion) = self.forward_copy(&other, &kept.message, groups, &kept)
                else {
                    continue;
                };
                if peer.rerouted(kept.id, node, completion) {
                    sent += 1;
                }
            }
        }
        sent
    }

    fn forward_copy(
        &self,
        to: &link::PeerLink,
        message: &Arc<Message>,
        groups: Vec<String>,
        kept: &link::Reroute,
    ) -> Option<Completion> {
        let broker = self.broker.upgrade()?;
        let body = forward::encode(message, broker.wall_clock(), &groups);
        let frame = link::frame(link::FORWARD_ACKED, &body);
        let mut sent_to = kept.sent_to.clone();
        sent_to.push(to.id);
        // The copy's pause is not waited for: its publisher waits for the copy's
        // acknowledgement, which follows the outbox draining anyway.
        to.forward_acknowledged(frame, message, groups, sent_to)
            .ok()
            .map(|(acknowledged, _)| acknowledged)
    }
}

/// How long a node waits for each other node's answer to `Request::PendingFor`.
const PULL_WAIT: Duration = Duration::from_secs(2);

impl ClusterNode {
    /// The `FORWARD` bodies of the messages this node holds unacknowledged for `dead`.
    pub(super) fn pending_for(&self, dead: NodeId) -> Vec<String> {
        let (Some(broker), Some(peer)) = (self.broker.upgrade(), self.links.peer(dead)) else {
            return Vec::new();
        };
        peer.rerouting()
            .iter()
            .map(|kept| {
                let body = forward::encode(&kept.message, broker.wall_clock(), &[]);
                super::state::encode_base64(&body)
            })
            .collect()
    }

    /// Queues for `client_id`'s session, just taken over from a backup of `dead`, the
    /// messages any node (this one too) holds unacknowledged for `dead` that it
    /// subscribes to, and waits until they are stored.
    pub(super) async fn pull_pending(&self, dead: NodeId, client_id: &str) {
        let messages = self.pending_everywhere(dead).await;
        self.deliver_pending(client_id, &messages).await;
    }

    /// The messages any node (this one too) holds unacknowledged for `dead`: what an
    /// adoption or a failover of `dead`'s sessions must queue besides the backup's copy.
    pub(super) async fn pending_everywhere(&self, dead: NodeId) -> Vec<Arc<Message>> {
        let Some(broker) = self.broker.upgrade() else {
            return Vec::new();
        };
        let mut messages: Vec<Arc<Message>> = self
            .links
            .peer(dead)
            .map(|peer| {
                peer.rerouting()
                    .into_iter()
                    .map(|kept| kept.message)
                    .collect()
            })
            .unwrap_or_default();
        let request = Request::PendingFor { dead };
        let Ok(body) = serde_json::to_vec(&request) else {
            return messages;
        };
        for peer in self.links.peers() {
            if peer.id == dead || !peer.is_connected() {
                continue;
            }
            let Ok(answer) = self.links.request(peer.id, &body, PULL_WAIT).await else {
                continue;
            };
            let Ok(Response::Pending(bodies)) = serde_json::from_slice(&answer) else {
                continue;
            };
            for encoded in bodies {
                let decoded = super::state::decode_base64(&encoded)
                    .and_then(|body| forward::decode(body.into(), broker.wall_clock()));
                if let Some((message, _)) = decoded {
                    messages.push(Arc::new(message));
                }
            }
        }
        messages
    }

    /// Queues for `client_id`'s session those of `messages` it subscribes to, and waits
    /// until they are stored (copies it already has are recognised by their cluster id).
    /// Whether every one it subscribes to was stored, or relayed on to where the
    /// session went.
    pub(super) async fn deliver_pending(&self, client_id: &str, messages: &[Arc<Message>]) -> bool {
        if messages.is_empty() {
            return true;
        }
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let Some(handle) = broker.session(client_id) else {
            return self.relay_pending(client_id, messages.iter());
        };
        let subscriptions: Vec<(bytestring::ByteString, crate::session::SubscriptionEntry)> =
            handle
                .lock()
                .subscriptions()
                .filter(|(filter, _)| !filter.starts_with("$share/"))
                .map(|(filter, entry)| (filter.clone(), *entry))
                .collect();
        let relayed: Vec<Relayed> = messages
            .iter()
            .filter_map(|message| relayed_for(message.clone(), &subscriptions))
            .collect();
        let count = relayed.len();
        let (written, moved_on) = broker.deliver_relayed(client_id, relayed);
        let relayed_on =
            self.relay_pending(client_id, moved_on.iter().map(|relayed| &relayed.message));
        if let Some(written) = written {
            if let Err(error) = written.await {
                tracing::warn!(client_id, %error, count, "messages for a session taken over from a dead node could not be stored");
                return false;
            }
        }
        relayed_on
    }

    /// The session moved on between its import and this pull (its client reconnected
    /// elsewhere within that moment, and the claim's hand-over took it at once): the
    /// messages follow it through this node's relay to its new node, which drops what
    /// it already has by cluster id. (Left to the rerouting of the messages kept for
    /// the dead node, they were lost when that node came back first and took them for
    /// the copy it restored.) Whether every one was relayed.
    fn relay_pending<'a>(
        &self,
        client_id: &str,
        messages: impl Iterator<Item = &'a Arc<Message>>,
    ) -> bool {
        let mut unrelayed = 0usize;
        for message in messages {
            if !self.relay_for(client_id, message) {
                unrelayed += 1;
            }
        }
        if unrelayed > 0 {
            tracing::debug!(
                client_id,
                unrelayed,
                "messages pulled for a session that moved on match none of its relayed filters"
            );
        }
        unrelayed == 0
    }

    /// A message `from` could not keep for sessions that moved away from it, taken over
    /// by other nodes from a backup's copy without it (`StoreError::SessionMoved`):
    /// handed to each session's node now, which stores it for the session unless the
    /// session has it (by cluster id: the copy it pulled from this node's kept
    /// messages as it took the session over, `pull_pending`). Failing the publisher
    /// instead had it send the message again as new, a second copy for the session.
    /// What the publisher's acknowledgement waits for besides: a failure for each node
    /// that did not store it.
    pub(super) async fn hand_to_new_owners(
        &self,
        from: NodeId,
        forward: &link::MovedForward,
    ) -> Vec<Completion> {
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<String>> = Default::default();
        for (client_id, node) in &forward.sessions {
            by_node.entry(*node).or_default().push(client_id.clone());
        }
        let mut failed = Vec::new();
        for (node, client_ids) in by_node {
            let stored = if node == self.me {
                self.store_moved_copy(&client_ids, &forward.message).await
            } else {
                self.send_moved_copy(node, client_ids, &forward.message)
                    .await
            };
            if !stored {
                failed.push(Completion::done(Err(crate::storage::StoreError::Io(format!(
                    "node {node} did not store a message for sessions that moved there from node {from}"
                )))));
            }
        }
        failed
    }

    async fn send_moved_copy(
        &self,
        node: NodeId,
        client_ids: Vec<String>,
        message: &Arc<Message>,
    ) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let body = forward::encode(message, broker.wall_clock(), &[]);
        let request = Request::MovedCopy {
            client_ids,
            message: super::state::encode_base64(&body),
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return false;
        };
        match self.links.request(node, &body, PULL_WAIT).await {
            Ok(answer) => matches!(serde_json::from_slice(&answer), Ok(Response::Relayed(true))),
            Err(_) => false,
        }
    }

    /// `Request::MovedCopy` as it arrives: the message decoded, then stored.
    pub(super) async fn take_moved_copy(&self, client_ids: &[String], encoded: &str) -> bool {
        let Some(broker) = self.broker.upgrade() else {
            return false;
        };
        let decoded = super::state::decode_base64(encoded)
            .and_then(|body| forward::decode(body.into(), broker.wall_clock()));
        match decoded {
            Some((message, _)) => self.store_moved_copy(client_ids, &Arc::new(message)).await,
            None => false,
        }
    }

    /// `Request::MovedCopy`: stores `message` for those of `client_ids`' sessions here
    /// that subscribe to it and lack it (relayed on for one that moved on); whether
    /// every one has it now.
    pub(super) async fn store_moved_copy(
        &self,
        client_ids: &[String],
        message: &Arc<Message>,
    ) -> bool {
        let mut stored = true;
        for client_id in client_ids {
            stored &= self
                .deliver_pending(client_id, std::slice::from_ref(message))
                .await;
        }
        stored
    }
}

/// The delivery of `message` to a session with `subscriptions`, if it matches one.
fn relayed_for(
    message: Arc<Message>,
    subscriptions: &[(bytestring::ByteString, crate::session::SubscriptionEntry)],
) -> Option<Relayed> {
    let mut relayed: Option<Relayed> = None;
    for (filter, entry) in subscriptions {
        if !crate::topic::matches(&message.topic, filter) {
            continue;
        }
        let qos = message.qos.min(entry.options.qos);
        let retain = message.retain && entry.options.retain_as_published;
        let delivery = relayed.get_or_insert_with(|| Relayed {
            message: message.clone(),
            qos,
            retain,
            subscription_ids: Vec::new(),
        });
        delivery.qos = delivery.qos.max(qos);
        delivery.retain |= retain;
        delivery.subscription_ids.extend(entry.subscription_id);
    }
    relayed
}

/// Acknowledges `from`'s forwards in arrival order, each once its writes here are
/// durable, batching what is ready.
async fn acknowledge(
    node: Weak<ClusterNode>,
    ids: Arc<Mutex<ReceivedIds>>,
    from: NodeId,
    mut receiver: mpsc::Receiver<(ClusterMessageId, Option<Completion>)>,
) {
    let mut batch = Vec::with_capacity(ACKS_PER_FRAME);
    let mut acks = Vec::with_capacity(ACKS_PER_FRAME);
    let mut moved = Vec::new();
    while receiver.recv_many(&mut batch, ACKS_PER_FRAME).await > 0 {
        for (id, writes) in batch.drain(..) {
            let result = match writes {
                None => Ok(()),
                Some(writes) => writes.await,
            };
            match result {
                Ok(_) => acks.push((id, true)),
                // Kept for sessions that moved away meanwhile: the sending node hands
                // the message to their new nodes (`hand_to_new_owners`).
                Err(crate::storage::StoreError::SessionMoved(sessions)) => {
                    moved.push(link::MovedAck {
                        node: id.node,
                        sequence: id.sequence,
                        sessions,
                    });
                }
                Err(_) => acks.push((id, false)),
            }
        }
        // Answers for the other nodes that sent a copy while the writes were under way.
        let mut others: HashMap<NodeId, Answers> = HashMap::new();
        {
            let mut ids = lock(&ids);
            for (id, durable) in &acks {
                for other in ids.settle(*id, *durable) {
                    others.entry(other).or_default().0.push((*id, *durable));
                }
            }
            for entry in &moved {
                for other in ids.settle(entry.id(), false) {
                    others.entry(other).or_default().1.push(entry.clone());
                }
            }
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        // A link that is down loses them: the sender sends the messages again, and
        // they are acknowledged again from `ids`.
        for (other, (other_acks, other_moved)) in others {
            answer(&node, other, &other_acks, &other_moved);
        }
        answer(&node, from, &acks, &moved);
        acks.clear();
        moved.clear();
    }
}

/// Sends node `to` its acknowledgements and the messages kept for sessions that moved.
fn answer(
    node: &ClusterNode,
    to: NodeId,
    acks: &[(ClusterMessageId, bool)],
    moved: &[link::MovedAck],
) {
    let Some(peer) = node.links.peer(to) else {
        return;
    };
    if !acks.is_empty() {
        peer.send(link::frame(link::FORWARD_ACK, &link::encode_acks(acks)));
    }
    if !moved.is_empty() {
        peer.send(link::frame(link::FORWARD_MOVED, &link::encode_moved(moved)));
    }
}

/// Expires unacknowledged forwards and reroutes those of peers that are down, until
/// the node stops.
pub(super) async fn sweep(node: Weak<ClusterNode>, timeout: Duration) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        for peer in node.links.peers() {
            peer.expire_unacked(timeout);
            if !peer.is_connected() && peer.unacked_forwards() > 0 {
                node.reroute(&peer);
                // Once its routes are gone (`Command::DropRoutes`) and the copies sent
                // to their new holders, nothing waits for the dead peer any more.
                peer.release_unrouted(|message| {
                    node.routes
                        .destinations(&message.topic)
                        .into_iter()
                        .map(|(node, _)| node)
                        .collect()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> ClusterMessageId {
        ClusterMessageId { node: 1, sequence }
    }

    #[test]
    fn a_copy_is_routed_once_and_acknowledged_again_once_durable() {
        let mut ids = ReceivedIds::default();
        assert_eq!(ids.arrive(id(1), 2), Arrival::New);
        assert_eq!(ids.arrive(id(1), 2), Arrival::Wait, "writes under way");
        assert_eq!(ids.arrive(id(1), 3), Arrival::Wait, "another node's copy");
        assert_eq!(
            ids.settle(id(1), true),
            vec![3],
            "the other nodes that sent a copy meanwhile are answered too"
        );
        assert_eq!(ids.arrive(id(1), 2), Arrival::AcknowledgeAgain);
        assert_eq!(ids.arrive(id(2), 2), Arrival::New);
        ids.settle(id(2), false);
        assert_eq!(
            ids.arrive(id(2), 2),
            Arrival::New,
            "a failed write is routed anew"
        );
    }

    #[test]
    fn the_window_is_bounded() {
        let mut ids = ReceivedIds::default();
        for sequence in 0..(RECEIVED_WINDOW as u64 + 10) {
            assert_eq!(ids.arrive(id(sequence), 2), Arrival::New);
        }
        assert_eq!(ids.order.len(), RECEIVED_WINDOW);
        assert_eq!(ids.arrive(id(0), 2), Arrival::New, "the oldest went");
    }
}
