//! Replication of persistent sessions, primary-backup at the level of store operations
//! (ARCHITECTURE.md, "The cluster": "Replicated sessions").
//!
//! - On the owner, `ReplicatedStore` wraps the node's store: every submission's
//!   operations that concern persistent sessions (`replicated_ops`) go, in submission
//!   order, to each of the node's backups (`backups_of`: the next `replication_factor -
//!   1` voters after it in id order), and the submission's `Completion` resolves only
//!   once the local write and every in-sync backup's acknowledgement are in.
//! - `sender`: one task per backup streams the operations, and takes a backup that does
//!   not answer in time out of the in-sync set through consensus before it releases the
//!   writes waiting on it; a returning backup gets a full resync first.
//! - `replica`: the backup side, one RocksDB store per origin node.
//! - `wire`: store operations on the link.
//! - `latency`: the histogram of submission to backup acknowledgement.

pub mod latency;
pub(super) mod node_link;
pub mod replica;
#[cfg(test)]
mod replica_tests;
mod sender;
#[cfg(test)]
mod tests;
pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::storage::{
    Completion, MessageId, RestoredState, Store, StoreError, StoreOp, StoreStats, UnixMillis,
};

use super::config::NodeId;
use sender::{BackupQueue, SyncMark};
use wire::WireOp;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Operations a backup applies in one write, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The stream this batch belongs to: a resync starts a new one, and a backup refuses
    /// batches of an older stream (one that arrived late on the link).
    pub generation: u64,
    /// First batch of a resync: the backup drops everything it held of the origin first.
    pub reset: bool,
    /// Position in the stream, from 1 at the resync's first batch: several batches are
    /// in flight at once and the backup applies them in this order whatever order its
    /// requests run in. 0 (a sender that numbers nothing) is applied as it arrives.
    #[serde(default)]
    pub sequence: u64,
    pub ops: Vec<WireOp>,
}

/// What the sender needs from the cluster: the backups, the in-sync set kept by
/// consensus, and the link (a fake one in socket-free tests).
pub trait ReplicaLink: Send + Sync + 'static {
    /// This node's backups now, from the applied membership.
    fn backups(&self) -> Vec<NodeId>;
    /// Whether the applied cluster state counts `backup` in sync for this node.
    fn in_sync(&self, backup: NodeId) -> bool;
    /// Whether the link to `backup` is up.
    fn reachable(&self, backup: NodeId) -> bool;
    /// Sends one batch; `Ok` once the backup wrote it durably.
    fn replicate(
        &self,
        backup: NodeId,
        batch: Batch,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Commits `backup`'s in-sync flag for this node through consensus.
    fn set_in_sync(&self, backup: NodeId, in_sync: bool) -> BoxFuture<'_, Result<(), String>>;
    /// Those of `client_ids` whose sessions moved to a node that may have taken them
    /// from a backup's copy (not handed over by this node, at the current owner's claim
    /// or after `mark`), with that node; may wait a little for the new owner's
    /// confirmation of a hand-over. `Err` when it cannot tell (the node stops).
    fn moved_from_a_copy(
        &self,
        client_ids: Vec<String>,
        mark: u64,
    ) -> BoxFuture<'_, Result<Vec<(String, NodeId)>, String>>;
    /// Where this node's confirmed hand-overs stand, noted as a write is submitted.
    fn handover_mark(&self) -> u64 {
        0
    }
}

/// The backups of `origin`: the next `factor - 1` of `voters` after it in id order,
/// wrapping around, capped at the number of other voters.
pub fn backups_of(
    origin: NodeId,
    voters: impl IntoIterator<Item = NodeId>,
    factor: usize,
) -> Vec<NodeId> {
    let mut others: Vec<NodeId> = voters.into_iter().filter(|id| *id != origin).collect();
    others.sort_unstable();
    others.dedup();
    let start = others.partition_point(|id| *id < origin);
    let wanted = factor.saturating_sub(1).min(others.len());
    (0..wanted)
        .map(|step| others[(start + step) % others.len()])
        .collect()
}

/// The part of `ops` that concerns persistent sessions, which the backups keep:
/// no retained messages, and `Accept` deliveries only for sessions stored with
/// `PutSession` (tracked in `persistent`, which this updates).
pub fn replicated_ops(ops: &[StoreOp], persistent: &mut HashSet<ByteString>) -> Vec<StoreOp> {
    let mut kept = Vec::new();
    for op in ops {
        let keep = match op {
            StoreOp::PutSession(record) => {
                persistent.insert(record.client_id.clone());
                true
            }
            StoreOp::RemoveSession { client_id } => persistent.remove(client_id),
            StoreOp::SetRetained(_) | StoreOp::ClearRetained { .. } => false,
            StoreOp::Accept {
                message_id,
                message,
                deliveries,
            } => {
                let stored: Vec<_> = deliveries
                    .iter()
                    .filter(|delivery| persistent.contains(&delivery.client_id))
                    .cloned()
                    .collect();
                if !stored.is_empty() {
                    kept.push(StoreOp::Accept {
                        message_id: *message_id,
                        message: message.clone(),
                        deliveries: stored,
                    });
                }
                false
            }
            StoreOp::AddSubscription { client_id, .. }
            | StoreOp::RemoveSubscription { client_id, .. }
            | StoreOp::MarkInflight { client_id, .. }
            | StoreOp::AdvanceInflight { client_id, .. }
            | StoreOp::CompleteInflight { client_id, .. }
            | StoreOp::CompletedInCluster { client_id, .. }
            | StoreOp::IncomingInCluster { client_id, .. }
            | StoreOp::DropQueued { client_id, .. }
            | StoreOp::AddIncomingQos2 { client_id, .. }
            | StoreOp::RemoveIncomingQos2 { client_id, .. } => persistent.contains(client_id),
        };
        if keep {
            kept.push(op.clone());
        }
    }
    kept
}

/// Whether a message of `ops` was stored for a session that moved to a node which may
/// have read it from a backup's copy. A session that `ops` write whole (removed and put
/// again: a session imported from a hand-over or an adoption) does not count: failing
/// that write would not keep its messages anywhere else (the node that handed it over
/// let it go), while this node carries it on in memory and hands it on as it holds it;
/// failing it lost the session when its client moved on during the import.
async fn moved_away(
    ops: &[StoreOp],
    written_whole: &HashSet<ByteString>,
    handover_mark: u64,
    link: &dyn ReplicaLink,
) -> Result<Vec<(String, NodeId)>, String> {
    let client_ids: Vec<String> = ops
        .iter()
        .flat_map(|op| match op {
            StoreOp::Accept { deliveries, .. } => deliveries.as_slice(),
            _ => &[],
        })
        .filter(|delivery| !written_whole.contains(&delivery.client_id))
        .map(|delivery| delivery.client_id.to_string())
        .collect();
    if client_ids.is_empty() {
        return Ok(Vec::new());
    }
    link.moved_from_a_copy(client_ids, handover_mark).await
}

/// The sessions `ops` write whole (removed, then put again): imports.
fn written_whole(ops: &[StoreOp]) -> HashSet<ByteString> {
    ops.iter()
        .filter_map(|op| match op {
            StoreOp::RemoveSession { client_id } => Some(client_id.clone()),
            _ => None,
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The owner's side: which sessions are persistent and one queue per backup.
pub struct Replicator {
    inner: Arc<dyn Store>,
    shared: Mutex<Shared>,
    ack_timeout: Duration,
    /// Set once the cluster runs (`attach`); before, nothing is sent anywhere.
    attached: OnceLock<(tokio::runtime::Handle, Arc<dyn ReplicaLink>)>,
    /// Backups whose sender resynced them and streams to them now.
    synced: std::sync::atomic::AtomicU64,
    /// Submissions of new messages refused because a backup lagged too far behind.
    refused: std::sync::atomic::AtomicU64,
    refused_log: crate::broker::log_throttle::LogThrottle,
    /// `[cluster] replication_queue_bytes`, per backup.
    max_queue_bytes: usize,
    /// From a submission to each backup's acknowledgement (a metric).
    pub latency: latency::LatencyHistogram,
    /// Overflows of backup queues closed since (a backup no more).
    former_overflows: std::sync::atomic::AtomicU64,
}

/// Operations waiting for one backup beyond which new messages are refused (as the
/// writer refuses them when it lags: the publisher gets no acknowledgement, a QoS 1/2
/// client sends again). Changes to what is already stored are always admitted.
const MAX_PENDING_OPS: usize = crate::storage::defaults::QUEUE_CAPACITY;

#[derive(Default)]
struct Shared {
    persistent: HashSet<ByteString>,
    backups: BTreeMap<NodeId, Arc<BackupQueue>>,
}

impl Replicator {
    pub fn new(
        inner: Arc<dyn Store>,
        ack_timeout: Duration,
        max_queue_bytes: usize,
    ) -> Arc<Replicator> {
        Arc::new(Replicator {
            max_queue_bytes,
            latency: Default::default(),
            former_overflows: Default::default(),
            inner,
            shared: Mutex::default(),
            ack_timeout,
            attached: OnceLock::new(),
            synced: Default::default(),
            refused: Default::default(),
            refused_log: Default::default(),
        })
    }

    /// Submissions refused because a backup lagged (a metric).
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes waiting for each backup (a metric).
    pub fn queue_bytes(&self) -> Vec<(NodeId, usize)> {
        lock(&self.shared)
            .backups
            .iter()
            .map(|(id, queue)| (*id, queue.pending_bytes()))
            .collect()
    }

    /// Times a backup went past `replication_queue_bytes` and was taken out of sync.
    pub fn overflows(&self) -> u64 {
        lock(&self.shared)
            .backups
            .values()
            .map(|queue| queue.overflows.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
            + self
                .former_overflows
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Persistent sessions stored here (each replicated to every in-sync backup).
    pub fn persistent_sessions(&self) -> usize {
        lock(&self.shared).persistent.len()
    }

    /// This node's backups that are in sync and streamed to now (a metric).
    pub fn backups_in_sync(&self) -> u64 {
        self.synced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts replicating over `link` (call from the runtime): a task keeps one sender
    /// per current backup.
    pub fn attach(self: &Arc<Self>, link: Arc<dyn ReplicaLink>) {
        let handle = tokio::runtime::Handle::current();
        if self.attached.set((handle, link.clone())).is_err() {
            return;
        }
        let replicator = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(replicator) = replicator.upgrade() else {
                    return;
                };
                replicator.set_backups(&link, link.backups());
                drop(replicator);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Starts a sender for each new backup and closes the queues of former ones (their
    /// waiting writes are released: no failover reads a node that is no backup).
    fn set_backups(self: &Arc<Self>, link: &Arc<dyn ReplicaLink>, backups: Vec<NodeId>) {
        let mut shared = lock(&self.shared);
        let gone: Vec<NodeId> = shared
            .backups
            .keys()
            .filter(|id| !backups.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(queue) = shared.backups.remove(&id) {
                self.former_overflows.fetch_add(
                    queue.overflows.load(std::sync::atomic::Ordering::Relaxed),
                    std::sync::atomic::Ordering::Relaxed,
                );
                queue.close();
            }
        }
        for id in backups {
            if shared.backups.contains_key(&id) {
                continue;
            }
            let queue = Arc::new(BackupQueue::new(self.max_queue_bytes));
            shared.backups.insert(id, queue.clone());
            tokio::spawn(sender::run(
                Arc::downgrade(self),
                link.clone(),
                id,
                queue,
                self.ack_timeout,
            ));
        }
    }

    /// A consistent point of the stream for a resync of `queue`'s backup: from here on,
    /// submissions are queued for it, and the returned restore sees exactly what was
    /// submitted before.
    fn resync_point(&self, queue: &BackupQueue) -> crate::storage::RestoreLater {
        let _shared = lock(&self.shared);
        queue.set_accepting(true);
        let now = crate::storage::WallClock::now().unix_millis();
        self.inner.restore_later(now)
    }

    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        let mut shared = lock(&self.shared);
        let lagging = || {
            shared
                .backups
                .values()
                .any(|queue| queue.pending_ops() >= MAX_PENDING_OPS)
        };
        if ops.iter().any(|op| matches!(op, StoreOp::Accept { .. })) && lagging() {
            drop(shared);
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(count) = self.refused_log.occurred(std::time::Instant::now()) {
                tracing::warn!(count, "a backup lags too far behind: new messages refused");
            }
            return Completion::done(Err(StoreError::Overloaded));
        }
        let replicated = replicated_ops(&ops, &mut shared.persistent);
        let Some((handle, link)) = self.attached.get().filter(|_| !replicated.is_empty()) else {
            return self.inner.submit(ops);
        };
        let wire: Arc<Vec<WireOp>> =
            Arc::new(replicated.iter().filter_map(WireOp::encode).collect());
        // Taken from the submission, not from what is replicated: the removal that
        // starts an import of a session new to this node is not replicated (the backups
        // hold nothing of it), and the import is written whole all the same.
        let written_whole = written_whole(&ops);
        let handover_mark = link.handover_mark();
        // Locally and to the backups under one lock: both see the submission order.
        let local = self.inner.submit(ops);
        let acks: Vec<_> = shared
            .backups
            .values()
            .filter_map(|queue| {
                let mark = queue.sync_mark();
                queue.push(&wire).map(|ack| (ack, queue.clone(), mark))
            })
            .collect();
        drop(shared);
        if acks.is_empty() {
            return local;
        }
        Completion::composed(Box::new(ReplicatedWrite {
            local: Some(local),
            acks,
            result: Ok(()),
            released: Vec::new(),
            moved_check: Some(MovedCheck {
                replicated,
                written_whole,
                handover_mark,
                link: link.clone(),
                runtime: handle.clone(),
            }),
            checking: None,
        }))
    }
}

/// A replicated submission's outcome: the local write and every backup's
/// acknowledgement, decided where the completion is waited for (no task per write).
struct ReplicatedWrite {
    local: Option<Completion>,
    /// Each backup's acknowledgement still awaited: `true` once it holds the write,
    /// `false` when released without it; with its queue and where the backup stood in
    /// the replicated state as the write was queued (`BackupQueue::sync_mark`).
    acks: Vec<PendingAck>,
    /// What the parts decided so far.
    result: Result<(), StoreError>,
    /// Backups that released the write without holding it, with where each stood as it
    /// was queued; weighed once every part answered (`settle`).
    released: Vec<(Arc<BackupQueue>, SyncMark)>,
    /// What the check after such a release needs (`moved_away`); taken when it starts.
    moved_check: Option<MovedCheck>,
    /// The check under way, on the runtime (it asks the cluster).
    checking: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

/// A backup's acknowledgement of one write, with its queue and the backup's standing
/// as the write was queued.
type PendingAck = (oneshot::Receiver<bool>, Arc<BackupQueue>, SyncMark);

struct MovedCheck {
    replicated: Vec<StoreOp>,
    written_whole: HashSet<ByteString>,
    handover_mark: u64,
    link: Arc<dyn ReplicaLink>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ReplicatedWrite {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReplicatedWrite")
            .field("local_pending", &self.local.is_some())
            .field("acks_pending", &self.acks.len())
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl ReplicatedWrite {
    fn local_done(&mut self, result: Result<(), StoreError>) {
        self.local = None;
        // The local write's error comes first, as the first thing awaited before.
        if let Err(error) = result {
            self.result = Err(error);
        }
    }

    fn ack_done(&mut self, index: usize, answer: Result<bool, oneshot::error::RecvError>) {
        let (_, queue, mark) = self.acks.swap_remove(index);
        match answer {
            Ok(true) => {}
            Ok(false) => self.released.push((queue, mark)),
            Err(_) => self.stopped_error(),
        }
    }

    /// A backup's queue went away without answering: the write cannot count as
    /// replicated (a local error takes precedence: `local_done` overrides this).
    fn stopped_error(&mut self) {
        if self.result.is_ok() {
            self.result = Err(StoreError::Io("replication to a backup stopped".into()));
        }
    }

    /// Released without the copy of a backup that counted as in sync at some point of
    /// the write's life; a copy that never did (a backup being resynced) is read by no
    /// failover or adoption.
    fn released_at_risk(&self) -> bool {
        self.released
            .iter()
            .any(|(queue, mark)| queue.in_sync_since(*mark))
    }

    /// Once every part answered: the outcome, or the check that still decides it.
    ///
    /// Released without a backup's copy: if a session it stored a message for was
    /// taken elsewhere from a backup's copy meanwhile (a failover or an adoption read a
    /// copy without it), the write fails, naming those sessions and their nodes: a
    /// local publisher sends the message again, a forwarding node hands it to them
    /// (`forward_ack`). A session this node handed over itself carried the message.
    fn settle(&mut self) -> Option<Result<(), StoreError>> {
        if self.local.is_some() || !self.acks.is_empty() {
            return None;
        }
        if self.result.is_err() || (self.checking.is_none() && !self.released_at_risk()) {
            return Some(std::mem::replace(&mut self.result, Ok(())));
        }
        if let Some(check) = self.moved_check.take() {
            let (done, answer) = oneshot::channel();
            check.runtime.spawn(async move {
                let result = match moved_away(
                    &check.replicated,
                    &check.written_whole,
                    check.handover_mark,
                    check.link.as_ref(),
                )
                .await
                {
                    Ok(moved) if moved.is_empty() => Ok(()),
                    Ok(moved) => Err(StoreError::SessionMoved(moved)),
                    Err(error) => Err(StoreError::Io(error)),
                };
                let _ = done.send(result);
            });
            self.checking = Some(answer);
        }
        None
    }
}

impl crate::storage::ComposedWrite for ReplicatedWrite {
    fn poll_result(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<crate::storage::CompletionResult> {
        use std::task::Poll;
        if let Some(local) = self.local.as_mut() {
            if let Poll::Ready(result) = Pin::new(local).poll(context) {
                self.local_done(result);
            }
        }
        let mut index = 0;
        while index < self.acks.len() {
            match Pin::new(&mut self.acks[index].0).poll(context) {
                Poll::Ready(answer) => self.ack_done(index, answer),
                Poll::Pending => index += 1,
            }
        }
        if let Some(result) = self.settle() {
            return Poll::Ready(result);
        }
        match self.checking.as_mut() {
            Some(checking) => Pin::new(checking)
                .poll(context)
                .map(|answer| answer.unwrap_or(Err(StoreError::Closed))),
            None => Poll::Pending,
        }
    }

    fn try_result(&mut self) -> Option<crate::storage::CompletionResult> {
        if let Some(local) = self.local.as_mut() {
            let result = local.try_result()?;
            self.local_done(result);
        }
        let mut index = 0;
        while index < self.acks.len() {
            match self.acks[index].0.try_recv() {
                Ok(acknowledged) => self.ack_done(index, Ok(acknowledged)),
                Err(oneshot::error::TryRecvError::Empty) => index += 1,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.acks.swap_remove(index);
                    self.stopped_error();
                }
            }
        }
        if let Some(result) = self.settle() {
            return Some(result);
        }
        match self.checking.as_mut()?.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }
}

/// Replication as a node starts it (`replication_factor` >= 2): the owner's side,
/// wrapping the node's store, and where the backup's copies go.
pub struct Replication {
    pub replicator: Arc<Replicator>,
    pub data_dir: std::path::PathBuf,
    /// How the backup's copies are opened: the node's `[storage] sync` and its RocksDB
    /// memory budgets.
    pub replica_options: crate::storage::RocksOptions,
}

impl Replication {
    /// Wraps `store` for a node with `[cluster]` `config` (`None` when replication is
    /// off): the store to give the broker, and the replication to start with the node.
    pub fn wrap(
        store: Arc<dyn Store>,
        config: &super::ClusterConfig,
        storage: &crate::config::StorageConfig,
        memory: crate::storage::RocksMemory,
    ) -> (Arc<dyn Store>, Option<Replication>) {
        if config.replication_factor < 2 {
            return (store, None);
        }
        // Ten heartbeats without an answer: a backup that is alive answers well within.
        let ack_timeout = Duration::from_millis(config.heartbeat_ms.saturating_mul(10).max(500));
        let replicator = Replicator::new(store, ack_timeout, config.replication_queue_bytes);
        let wrapped: Arc<dyn Store> = Arc::new(ReplicatedStore::new(replicator.clone()));
        let replication = Replication {
            replicator,
            data_dir: storage.data_dir.clone(),
            replica_options: crate::storage::RocksOptions {
                sync: storage.sync,
                memory,
                ..crate::storage::RocksOptions::default()
            },
        };
        (wrapped, Some(replication))
    }
}

/// The store of a cluster node with replication: the local store, and the backups.
pub struct ReplicatedStore {
    replicator: Arc<Replicator>,
}

impl ReplicatedStore {
    pub fn new(replicator: Arc<Replicator>) -> ReplicatedStore {
        ReplicatedStore { replicator }
    }
}

impl Store for ReplicatedStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        self.replicator.submit(ops)
    }

    fn flush(&self) -> Completion {
        self.replicator.inner.flush()
    }

    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        let state = self.replicator.inner.restore(now)?;
        let mut shared = lock(&self.replicator.shared);
        shared.persistent = state
            .sessions
            .iter()
            .map(|session| session.record.client_id.clone())
            .collect();
        Ok(state)
    }

    fn next_message_id(&self) -> MessageId {
        self.replicator.inner.next_message_id()
    }

    fn stats(&self) -> StoreStats {
        self.replicator.inner.stats()
    }
}
