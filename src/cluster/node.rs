//! A running cluster node: starts openraft over our storage and link, forms the cluster
//! from `peers` on first start, keeps the link's peers in line with the membership,
//! proposes this node's route changes and retained messages, applies what consensus
//! decided to the local broker, and forwards PUBLISHes (`super::forward`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytestring::ByteString;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};
use rocksdb::DB;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::message::Message;
use crate::storage::Completion;

use super::config::{ClusterConfig, NodeId};
use super::forward::RouteTable;
use super::link::{self, Links};
use super::network::{self, NetworkFactory, Request, Response};
use super::retained::PendingRetained;
use super::state::{ClusterState, Command, CommandResult, Effect};
use super::storage::{EffectSink, LogStore, StateMachineStore};
use super::types::{ProposeError, Raft};

mod book;
mod hooks;
mod proposer;

use book::FilterBook;

/// How long a proposal may take before it counts as failed (a leader cut off from the
/// majority never commits it).
pub(super) const PROPOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a removal keeps proposing to drop the removed node's routes.
const ROUTES_DROP_TIMEOUT: Duration = Duration::from_secs(20);
/// Retained changes waiting to be proposed; more are dropped and counted.
const MAX_PENDING_RETAINED: usize = 10_000;
/// Retained changes proposed in one log entry.
const MAX_RETAINED_PER_ENTRY: usize = 256;
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters exported as metrics.
#[derive(Default)]
pub struct ClusterStats {
    pub forwarded_messages: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    pub forward_dropped: AtomicU64,
    pub received_messages: AtomicU64,
    pub retained_dropped: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub ownership_moves: AtomicU64,
    /// Sessions handed over to another node that never took them (it started them
    /// fresh), deleted here.
    pub handover_dropped: AtomicU64,
    /// Sessions this node took over whole from another node.
    pub handover_moves: AtomicU64,
    /// Queued and in-flight messages that came with them.
    pub handover_messages: AtomicU64,
    /// Sessions taken over from a backup of their unreachable owner.
    pub failovers: AtomicU64,
    /// Of those, sessions this node adopted because their node stayed unreachable
    /// (`super::adoption`).
    pub adopted: AtomicU64,
    /// Messages relayed to the new node of a session that moved away.
    pub relayed_messages: AtomicU64,
    /// Messages not relayed: the relay's buffer was full, or its new owner never
    /// stored the session.
    pub relay_dropped: AtomicU64,
    /// Sessions moved here whose deliveries held behind their previous node's relay
    /// were released without the relay's end: the bound passed, or that node became
    /// unreachable.
    pub relay_holds_expired: AtomicU64,
    /// Forwarded messages received while this node caught up after a restart beyond
    /// what it holds meanwhile (`forward_ack::CatchingUp`): not acknowledged, so their
    /// publishers send them again.
    pub forwards_dropped_catching_up: AtomicU64,
}

/// Sessions that moved to another node, kept for the new owner to fetch until it confirms
/// it stored them (`ownership`).
pub(super) type Handovers = Mutex<HashMap<String, Kept>>;

/// A session kept for its new owner.
pub(super) struct Kept {
    /// The new owner's epoch.
    pub(super) epoch: u64,
    pub(super) handed: crate::broker::HandedOver,
    pub(super) since: std::time::Instant,
    /// The new owner asked for it.
    pub(super) fetched: bool,
}

/// Sessions whose handover may wait for their new owner; beyond, the oldest go.
const MAX_HANDOVERS: usize = 10_000;

pub struct ClusterNode {
    pub(super) me: NodeId,
    pub(super) raft: Raft,
    pub(super) links: Arc<Links>,
    state: Arc<RwLock<ClusterState>>,
    pub(super) routes: Arc<RouteTable>,
    pub(super) broker: Weak<Broker>,
    book: Mutex<FilterBook>,
    book_changed: Notify,
    pub stats: Arc<ClusterStats>,
    link_addr: std::net::SocketAddr,
    pub(super) handovers: Arc<Handovers>,
    /// Hand-overs their new owner confirmed lately (`handover_done`): a session that
    /// moved this way was taken from this node's own state, not from a backup's copy.
    pub(super) confirmed_handovers: super::ownership::ConfirmedHandovers,
    pub(super) relays: super::relay::Relays,
    /// Sessions on their way here from their previous owner (`ownership::take_over`).
    pub(super) importing: Mutex<HashMap<String, usize>>,
    /// Sessions being adopted here from an unreachable node (`super::adoption`): a
    /// CONNECT of one of them waits until it is in place.
    pub(super) adopting: Mutex<std::collections::HashSet<String>>,
    /// What applies committed changes to the broker (a session that moved on while on
    /// its way here is handed over the same way).
    pub(super) sink: Arc<BrokerSink>,
    /// This node, for the tasks it spawns.
    this: Weak<ClusterNode>,
    /// Copies of other nodes' sessions kept here (`super::replication`); `None` when
    /// replication is off.
    pub(super) replicas: Option<Arc<super::replication::replica::Replicas>>,
    /// `[cluster] replication_factor`.
    pub(super) replication_factor: usize,
    /// The owner's side of replication, when on.
    pub(super) replicator: Option<Arc<super::replication::Replicator>>,
    /// Acknowledged forwards received lately, and their acknowledging tasks
    /// (`super::forward_ack`).
    pub(super) received: super::forward_ack::Received,
}

/// Applies committed changes to the local broker.
pub(super) struct BrokerSink {
    me: NodeId,
    /// The node, once started (a claim applied before cannot have a relay).
    node: std::sync::OnceLock<Weak<ClusterNode>>,
    broker: Weak<Broker>,
    routes: Arc<RouteTable>,
    links: Arc<Links>,
    stats: Arc<ClusterStats>,
    handovers: Arc<Handovers>,
}

impl BrokerSink {
    fn retained(&self, broker: &Broker, topic: &str, message: Option<Vec<u8>>) {
        let message = message.and_then(|bytes| {
            crate::storage::codec::decode_message(&bytes)
                .ok()
                .map(|stored| Arc::new(stored.to_message(broker.wall_clock())))
        });
        broker.apply_replicated_retained(&ByteString::from(topic), message);
    }

    /// Ends the local copy of a session that moved to another node, keeping it whole
    /// for the new owner (`ownership::take_handover`).
    pub(super) fn moved(&self, broker: &Broker, client_id: &str, owner: super::state::Owner) {
        let epoch = owner.epoch;
        let Some(handle) = broker.session(client_id) else {
            return;
        };
        self.stats.ownership_moves.fetch_add(1, Ordering::Relaxed);
        // The relay first: it holds this node's routes for the session's filters, and
        // takes whatever arrives once the session left (`super::relay`).
        if let Some(node) = self.node.get().and_then(Weak::upgrade) {
            let subscriptions = handle
                .lock()
                .subscriptions()
                .map(|(filter, entry)| (filter.clone(), *entry))
                .collect();
            node.start_relay(client_id, owner.node, epoch, subscriptions);
        }
        let (session, held) = broker.hand_over_session_and_held(client_id);
        // What it held behind a relay to this node goes on behind that relay.
        if let Some(node) = self.node.get().and_then(Weak::upgrade) {
            node.defer_held(client_id, held);
        }
        let Some(session) = session else {
            return;
        };
        let mut handovers = lock(&self.handovers);
        let evicted = if handovers.len() >= MAX_HANDOVERS {
            let oldest = handovers
                .iter()
                .min_by_key(|(_, kept)| kept.epoch)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = &oldest {
                handovers.remove(oldest);
                self.stats.handover_dropped.fetch_add(1, Ordering::Relaxed);
            }
            oldest
        } else {
            None
        };
        handovers.insert(
            client_id.to_string(),
            Kept {
                epoch,
                handed: session,
                since: std::time::Instant::now(),
                fetched: false,
            },
        );
        drop(handovers);
        if let Some(evicted) = evicted {
            tracing::warn!(
                client_id = evicted,
                "too many sessions handed over at once: the oldest deleted"
            );
            broker.forget_moved_session(&evicted);
        }
    }

    fn members(&self, state: &ClusterState) {
        for (id, node) in state.membership.nodes() {
            if *id != self.me {
                self.links.ensure_peer(*id, &node.addr);
            }
        }
    }
}

impl EffectSink for BrokerSink {
    fn applied(&self, state: &ClusterState, effects: Vec<Effect>) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        for effect in effects {
            match effect {
                Effect::RouteChanged { filter } => self.routes.update(state, &filter),
                Effect::Retained { topic, message } => self.retained(&broker, &topic, message),
                Effect::MembersChanged => {}
                Effect::RoutesDropped { node } => {
                    // Another node took this one for gone: its routes are proposed
                    // again whole, as at start.
                    if node == self.me {
                        if let Some(node) = self.node.get().and_then(Weak::upgrade) {
                            node.propose_all_routes();
                        }
                    }
                }
                Effect::Owner { client_id, owner } => {
                    if let Some(node) = self.node.get().and_then(Weak::upgrade) {
                        node.owner_changed(&client_id, owner.node);
                    }
                    // Each move in log order (the node that claimed it asks for the
                    // session with its own epoch), unless the session is back here by
                    // the end of what was applied: a node replaying its log after a
                    // restart applies old moves of sessions that came back since.
                    let latest = state.owners.get(&client_id).map(|latest| latest.node);
                    if owner.node != self.me && latest != Some(self.me) {
                        self.moved(&broker, &client_id, owner);
                    }
                }
            }
        }
        self.members(state);
    }

    fn reset(&self, state: &ClusterState) {
        self.routes.reset(state);
        self.members(state);
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        for topic in broker.retained_topics() {
            if !state.retained.contains_key(&*topic) {
                broker.apply_replicated_retained(&topic, None);
            }
        }
        for (topic, encoded) in &state.retained {
            self.retained(&broker, topic, super::state::decode_base64(encoded));
        }
        // Sessions that moved to another node while this one was behind.
        for handle in broker.sessions() {
            if let Some(owner) = state
                .owners
                .get(&*handle.client_id)
                .filter(|owner| owner.node != self.me)
            {
                self.moved(&broker, &handle.client_id, *owner);
            }
        }
    }
}

/// Starts this node's part of the cluster: binds the link, opens consensus over the
/// RocksDB `db`, and makes `broker` a cluster member. Call before the listeners open.
pub async fn start(
    config: &ClusterConfig,
    db: Arc<DB>,
    broker: &Arc<Broker>,
    replication: Option<super::replication::Replication>,
) -> anyhow::Result<Arc<ClusterNode>> {
    let me = config.node_id;
    let tls = match &config.tls {
        Some(tls) => Some(super::link_tls::LinkTls::new(tls).context("cluster.tls")?),
        None => None,
    };
    let liveness = link::Liveness {
        ping_interval: Duration::from_millis(config.heartbeat_ms),
        timeout: config.link_timeout(),
        publisher_pause: Duration::from_millis(broker.config().limits.slow_consumer_timeout_ms),
    };
    let links = Links::new(me, config.link_buffer_bytes, liveness, tls);
    if config.tls.is_some() {
        broker.add_reloadable(Arc::new(super::link_tls::LinkCertificates(links.clone())));
    }
    let members = config.members();
    for peer in &members {
        if peer.id != me {
            links.ensure_peer(peer.id, &peer.addr);
        }
    }
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} for the cluster link", config.bind))?;
    let link_addr = listener
        .local_addr()
        .context("cannot read the cluster link's address")?;
    tracing::info!(addr = %link_addr, node_id = me, "listening (cluster link)");

    let routes = Arc::new(RouteTable::new(me));
    let stats = Arc::new(ClusterStats::default());
    let handovers = Arc::new(Handovers::default());
    crate::message::ClusterMessageId::set_local_node(me);
    let sink = Arc::new(BrokerSink {
        me,
        node: std::sync::OnceLock::new(),
        broker: Arc::downgrade(broker),
        routes: routes.clone(),
        links: links.clone(),
        stats: stats.clone(),
        handovers: handovers.clone(),
    });
    let state_machine = StateMachineStore::open(db.clone(), Some(sink.clone()))
        .map_err(|error| anyhow::anyhow!("cannot open the cluster state: {error}"))?;
    let state = state_machine.state();
    let raft_config = openraft::Config {
        cluster_name: "fleetmq".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.heartbeat_ms * 3,
        election_timeout_max: config.heartbeat_ms * 6,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
        // Enough for a follower a little behind to catch up from the log.
        max_in_snapshot_log_to_keep: (config.snapshot_entries / 10).max(1),
        ..openraft::Config::default()
    }
    .validate()
    .context("invalid consensus settings")?;
    let raft = Raft::new(
        me,
        Arc::new(raft_config),
        NetworkFactory {
            links: links.clone(),
        },
        LogStore::new(db),
        state_machine,
    )
    .await
    .map_err(|error| anyhow::anyhow!("cannot start consensus: {error}"))?;

    let book = FilterBook::starting_with(
        broker
            .local_filters()
            .into_iter()
            .map(|(filter, count)| (filter.to_string(), count)),
    );
    let node = Arc::new_cyclic(|this| ClusterNode {
        me,
        this: this.clone(),
        relays: Default::default(),
        importing: Mutex::default(),
        adopting: Mutex::default(),
        sink: sink.clone(),
        raft: raft.clone(),
        links: links.clone(),
        state,
        routes,
        broker: Arc::downgrade(broker),
        book: Mutex::new(book),
        book_changed: Notify::new(),
        stats,
        link_addr,
        handovers,
        replicas: replication.as_ref().map(|replication| {
            Arc::new(super::replication::replica::Replicas::new(
                &replication.data_dir,
                replication.replica_options.clone(),
            ))
        }),
        replication_factor: config.replication_factor,
        replicator: replication
            .as_ref()
            .map(|replication| replication.replicator.clone()),
        received: Default::default(),
        confirmed_handovers: Default::default(),
    });
    let _ = sink.node.set(Arc::downgrade(&node));
    if broker.session_count() > 0 {
        // Sessions restored from this node's store may have moved away while it was
        // down: forwards wait until it caught up (`forward_ack`, "restart").
        node.received.hold_until_caught_up();
    }
    links.set_handler(node.clone());
    tokio::spawn(links.clone().accept_loop(listener));

    if !config.join
        && !raft
            .is_initialized()
            .await
            .map_err(|error| anyhow::anyhow!("consensus stopped: {error}"))?
    {
        let initial: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|peer| (peer.id, BasicNode::new(&peer.addr)))
            .collect();
        match raft.initialize(initial).await {
            Ok(()) => tracing::info!(members = members.len(), "cluster initialised"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => anyhow::bail!("cannot initialise the cluster: {error}"),
        }
    }
    tokio::spawn(node.clone().propose_loop());
    tokio::spawn(super::ownership::sweep_handovers(Arc::downgrade(&node)));
    super::adoption::start(&node, config.link_timeout());
    tokio::spawn(super::forward_ack::sweep(
        Arc::downgrade(&node),
        Duration::from_millis(config.forward_ack_timeout_ms),
    ));
    if let Some(replication) = &replication {
        super::replication::node_link::attach(&node, &replication.replicator);
    }
    broker.set_cluster(node.clone());
    Ok(node)
}

impl ClusterNode {
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    pub(super) fn this(&self) -> Weak<ClusterNode> {
        self.this.clone()
    }

    pub fn link_addr(&self) -> std::net::SocketAddr {
        self.link_addr
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// The leader this node knows of. A leader that cannot reach a majority of the
    /// voters over its links counts as none: openraft keeps such a leader in office (it
    /// commits nothing), and this node must refuse what needs a commit at once. So does
    /// a leader this follower has no link to (nothing could be proposed through it).
    pub fn leader(&self) -> Option<NodeId> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        if leader != self.me {
            return self
                .links
                .peer(leader)
                .is_some_and(|peer| peer.is_connected())
                .then_some(leader);
        }
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let reachable = voters
            .iter()
            .filter(|id| {
                **id == self.me
                    || self
                        .links
                        .peer(**id)
                        .is_some_and(|peer| peer.is_connected())
            })
            .count();
        (reachable * 2 > voters.len()).then_some(leader)
    }

    /// The replicated state as applied here.
    pub fn with_state<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        read(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Commits `command` through the leader, wherever it is.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let result = self.propose_inner(command).await;
        if result.is_err() {
            self.stats.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn propose_inner(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let leader = self.leader().ok_or(ProposeError::NoLeader)?;
        if leader == self.me {
            self.propose_local(command).await
        } else {
            network::propose_remote(&self.links, leader, command, PROPOSE_TIMEOUT).await
        }
    }

    /// Commits `command` on this node, which must be the leader.
    async fn propose_local(&self, command: Command) -> Result<CommandResult, ProposeError> {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command)).await {
            Err(_) => Err(ProposeError::Failed("not committed in time".into())),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ProposeError::NoLeader)
            }
            Ok(Err(error)) => Err(ProposeError::Failed(error.to_string())),
        }
    }

    /// Adds a voting member (as a learner first, caught up, then promoted: joint
    /// consensus), from the leader or forwarded to it.
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<(), String> {
        let leader = self
            .leader()
            .ok_or_else(|| ProposeError::NoLeader.to_string())?;
        if leader != self.me {
            return self
                .forward_membership(leader, Request::AddNode { id, addr })
                .await;
        }
        self.links.ensure_peer(id, &addr);
        self.raft
            .add_learner(id, BasicNode::new(&addr), true)
            .await
            .map_err(|error| error.to_string())?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Removes a member (joint consensus), from the leader or forwarded to it.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), String> {
        let leader = self
            .leader()
            .ok_or_else(|| ProposeError::NoLeader.to_string())?;
        if leader != self.me {
            return self
                .forward_membership(leader, Request::RemoveNode { id })
                .await;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|error| error.to_string())?;
        // Its routes go with it: nothing is forwarded to a node that left. The removal
        // has committed by now, so this is proposed until it commits too: right after a
        // membership change, under load, one proposal can take longer than
        // `PROPOSE_TIMEOUT`, and answering "failed" would misreport a removal that took
        // place (replacing a node's routes twice changes nothing), for at most
        // `ROUTES_DROP_TIMEOUT`.
        let deadline = tokio::time::Instant::now() + ROUTES_DROP_TIMEOUT;
        loop {
            let command = Command::ReplaceRoutes {
                node: id,
                filters: Vec::new(),
            };
            match self.propose(command).await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "node {id} was removed, but its routes were not dropped: {error}"
                    ));
                }
                Err(error) => {
                    tracing::info!(node = id, %error, "routes of a removed node not dropped yet; proposing again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn forward_membership(&self, leader: NodeId, request: Request) -> Result<(), String> {
        let body = serde_json::to_vec(&request).map_err(|error| error.to_string())?;
        let answer = self
            .links
            .request(leader, &body, Duration::from_secs(60))
            .await?;
        match serde_json::from_slice(&answer) {
            Ok(Response::Membership(result)) => result,
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Whether this node knows a leader (`/health`).
    pub fn has_leader(&self) -> bool {
        self.leader().is_some()
    }
}

/// openraft seen through our trait: what the rest of the cluster code needs from
/// consensus, so that another Raft library could stand in for it.
impl super::types::Consensus for ClusterNode {
    fn propose(
        &self,
        command: Command,
    ) -> impl std::future::Future<Output = Result<CommandResult, ProposeError>> + Send {
        ClusterNode::propose(self, command)
    }

    fn leader(&self) -> Option<NodeId> {
        ClusterNode::leader(self)
    }
}
