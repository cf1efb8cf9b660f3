//! The broker's seam to the cluster (`crate::cluster`): what a cluster node is told
//! about local activity (`ClusterHook`), and what other nodes do to this broker through
//! it: messages forwarded for local subscribers, retained messages and subscriptions
//! replicated through consensus, sessions whose ownership moved away.
//!
//! On a single node no hook is set and none of this runs.

use std::sync::Arc;

use bytestring::ByteString;

use crate::message::Message;
use crate::storage::{StoreOp, StoredMessage};
use crate::topic::Match;

use super::routing::Fanout;
use super::{lock, read, write, Broker, SessionHandle, Stats};

/// What the broker tells the cluster. Called on the publishing or subscribing task;
/// implementations only queue work, never block.
pub trait ClusterHook: Send + Sync + 'static {
    /// A message published on this node (by a client or a will), after local routing.
    /// What the publisher's acknowledgement must also wait for (a retained message's
    /// commit), if anything.
    fn published(&self, message: &Arc<Message>) -> Option<crate::storage::Completion>;
    /// Whether a message with cluster id `id` was forwarded to this node lately (and
    /// routed to its local subscribers).
    fn received(&self, _id: crate::message::ClusterMessageId) -> bool {
        false
    }
    /// Whether a subscription on another node matches `topic`: a message no local
    /// session takes is then not "unrouted" (MQTT 5: no 0x10 No matching subscribers).
    fn subscribed_elsewhere(&self, _topic: &str) -> bool {
        false
    }
    /// The first local subscription to `filter` (a `$share/...` filter kept whole).
    fn filter_added(&self, filter: &str);
    /// A local subscription to `filter` went away.
    fn filter_removed(&self, filter: &str);
    /// Whether the node knows a cluster leader (`/health`).
    fn has_leader(&self) -> bool;
    /// Takes `client_id`'s session for this node through consensus before a CONNECT
    /// attaches: `Ok(Some(claimed))` once owned (a session another node held has then
    /// moved here whole, `Broker::import_session`), `Ok(None)` for a clean session admitted without an owner (no leader),
    /// `Err(reason code)` to refuse the CONNECT.
    fn claim(&self, client_id: &str, persistent: bool) -> ClaimFuture<'_>;
    /// Whether this node still owns `client_id`'s session with `epoch`.
    fn owns(&self, client_id: &str, epoch: u64) -> bool;
    /// `client_id`'s session ended on this node: its ownership can be released.
    fn session_ended(&self, client_id: &str);
    /// The cluster's metrics in the Prometheus text format.
    fn render_metrics(&self) -> String;
}

/// A session this node took through consensus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The fencing epoch of this node's ownership.
    pub epoch: u64,
}

/// What `ClusterHook::claim` returns.
pub type ClaimFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Claimed>, u8>> + Send + 'a>>;

impl Broker {
    /// Makes this broker a cluster node. Set once, before the listeners open.
    pub fn set_cluster(&self, hook: Arc<dyn ClusterHook>) {
        let _ = self.cluster.set(hook);
    }

    /// On a cluster node, takes the session's ownership before a CONNECT attaches (see
    /// `ClusterHook::claim`); on a single node, `Ok(None)` at once.
    pub async fn claim_session(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> Result<Option<Claimed>, u8> {
        match self.cluster.get() {
            None => Ok(None),
            Some(cluster) => cluster.claim(client_id, persistent).await,
        }
    }

    /// Whether a claim made before attaching still holds once attached: another node's
    /// claim committed in between fences this one (exactly one of two concurrent
    /// connects of one client id wins).
    pub fn still_owner(&self, client_id: &str, claim: Option<&Claimed>) -> bool {
        match (self.cluster.get(), claim) {
            (Some(cluster), Some(claimed)) => cluster.owns(client_id, claimed.epoch),
            _ => true,
        }
    }

    /// The cluster's metrics (Prometheus text), empty on a single node.
    pub fn cluster_metrics(&self) -> String {
        self.cluster
            .get()
            .map(|cluster| cluster.render_metrics())
            .unwrap_or_default()
    }

    /// False on a cluster node that knows no leader (cut off from the majority).
    pub fn cluster_healthy(&self) -> bool {
        self.cluster
            .get()
            .is_none_or(|cluster| cluster.has_leader())
    }

    /// Every filter local sessions subscribe to, with the number of sessions each.
    pub fn local_filters(&self) -> Vec<(ByteString, usize)> {
        let mut counts = std::collections::HashMap::<ByteString, usize>::new();
        for handle in self.sessions() {
            let session = handle.lock();
            if handle.is_retired() {
                continue;
            }
            for (filter, _) in session.subscriptions() {
                *counts.entry(filter.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Delivers a message another node forwarded to this one: to the local plain
    /// subscribers, and to local members of the shared groups named in `shared_groups`
    /// (the publishing node picked this node for them). Not retained here (retained
    /// messages travel through consensus) and never forwarded again. Returns the number
    /// of deliveries, the first session the message left congested (the link's reader
    /// waits for it like a local publisher: ARCHITECTURE.md, "Forwarding is
    /// flow-controlled for QoS 1 and 2"), and the store write of the copies queued for
    /// persistent sessions, which the sending node's acknowledgement waits for (with
    /// replication, it covers the in-sync backups' copies too).
    pub fn route_forwarded(
        &self,
        message: &Arc<Message>,
        shared_groups: &[String],
    ) -> (
        usize,
        Option<Arc<SessionHandle>>,
        Option<crate::storage::Completion>,
    ) {
        self.stats.message_received(message.qos);
        let mut fanout = Fanout::new();
        {
            let routes = read(&self.routes);
            routes.for_each_match(&message.topic, |found| match found {
                Match::Direct(key, route) => fanout.add_direct(*key, route, message),
                Match::Shared(group) => {
                    if shared_groups.contains(&group.name) {
                        fanout.add_shared(group, message);
                    }
                }
            });
        }
        let now = super::now();
        let count = fanout.targets.len() + fanout.shared.len();
        // Queued for persistent sessions like a local publish.
        let writes = self.store_deliveries(message, &mut fanout, Vec::new());
        let mut congested = None;
        for (session, delivery) in fanout.targets.drain(..).chain(fanout.shared) {
            if self.deliver(&session, delivery, now) && congested.is_none() {
                congested = Some(session);
            }
        }
        Fanout::recycle(fanout.targets);
        if count == 0 {
            Stats::incr(&self.stats.messages_unrouted);
        }
        (count, congested, writes)
    }

    /// Sets (or with `None` clears) the retained message of `topic` as consensus
    /// decided, in the tree and the store. Nothing is routed.
    pub fn apply_replicated_retained(&self, topic: &ByteString, message: Option<Arc<Message>>) {
        let mut retained = write(&self.retained);
        match message {
            Some(message) => {
                let stored =
                    StoredMessage::from_message(&message, &self.clock).without_cluster_id();
                retained.insert(topic, message);
                self.submit_detached(vec![StoreOp::SetRetained(Arc::new(stored))]);
            }
            None => {
                if retained.remove(topic).is_some() {
                    self.submit_detached(vec![StoreOp::ClearRetained {
                        topic: topic.clone(),
                    }]);
                }
            }
        }
    }

    /// Every retained topic, to reconcile with the replicated set after a snapshot.
    pub fn retained_topics(&self) -> Vec<ByteString> {
        let mut topics = Vec::new();
        read(&self.retained).for_each_matching("#", |message| topics.push(message.topic.clone()));
        topics
    }

    /// The wall clock the broker converts message expiry with.
    pub fn wall_clock(&self) -> &crate::storage::WallClock {
        &self.clock
    }

    /// Whether a client of this node holds `client_id`'s session right now.
    pub fn is_connected_here(&self, client_id: &str) -> bool {
        lock(&self.registry)
            .get(client_id)
            .is_some_and(|handle| handle.is_connected())
    }
}
