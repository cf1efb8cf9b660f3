//! One task per backup: streams the owner's replicated operations to it in submission
//! order, up to `MAX_BATCHES_IN_FLIGHT` batches at a time (numbered, so the backup applies
//! them in order), and releases each write once the backup acknowledged it.
//!
//! The in-sync rule: a write waiting on a backup is released without its
//! acknowledgement only after consensus committed that backup out of sync (a failover
//! reads only in-sync backups, so nothing acknowledged can be missing from the copy it
//! reads). A backup out of sync gets a full resync (every persistent session, from a
//! restore taken at one point of the stream, `Replicator::resync_point`) and is then
//! committed in sync again. A starting sender first commits its backup out of sync:
//! this node's store may differ from the copy the
//! backup holds (writes a crash lost here, or sessions a failover removed there); it
//! does so whatever the state applied here says, which may still be behind the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{oneshot, Notify};

use super::super::config::NodeId;
use super::wire::WireOp;
use super::{lock, Batch, ReplicaLink, Replicator};

/// Operations sent in one batch (a bigger single submission goes alone).
const MAX_BATCH_OPS: usize = 4096;
/// Batches sent and not yet acknowledged. With one, a write that arrives while a batch
/// is out waits for that batch's whole round trip (link, the backup's durable write)
/// before its own starts; with several, the backup's group commit takes them together.
/// 16 rather than 4: a submission waited 0.1 ms for its batch to leave instead of
/// 0.4 ms (persistent QoS 1 fan-in, factor 2, two cores; BENCHMARKS.md).
const MAX_BATCHES_IN_FLIGHT: usize = 16;
/// Pause between attempts to commit the in-sync flag or to resync.
const RETRY: Duration = Duration::from_millis(100);

struct Pending {
    ops: Arc<Vec<WireOp>>,
    /// `WireOp::size` of `ops`.
    bytes: usize,
    /// When the owner submitted it (the replication latency runs to the backup's ack).
    submitted: Instant,
    /// `true` once the backup acknowledged it, `false` when released without (the
    /// backup was committed out of sync, or is no backup any more).
    done: oneshot::Sender<bool>,
}

#[derive(Default)]
struct QueueState {
    /// Submissions are queued for the backup (it is in sync, or being resynced, or not
    /// yet known to be out of sync).
    accepting: bool,
    pending: VecDeque<Pending>,
    /// Operations in `pending`.
    pending_ops: usize,
    /// `WireOp::size` of `pending`.
    pending_bytes: usize,
    /// `WireOp::size` of the batches sent and not yet answered: they count against the
    /// byte bound and in the metric until the backup answered.
    in_flight_bytes: usize,
    /// The queue went past its byte bound: what it held was let go (the backup gets a
    /// full resync), and these writes wait until the backup is committed out of sync.
    overflowed: Option<Vec<oneshot::Sender<bool>>>,
    closed: bool,
}

/// Whether a backup counted as in sync as a write was queued, and how many times it had
/// been committed in sync by then (`BackupQueue::sync_mark`).
pub(super) type SyncMark = (bool, u64);

/// The writes waiting for one backup.
pub(super) struct BackupQueue {
    state: Mutex<QueueState>,
    wake: Notify,
    /// Wakes the sender when the queue passes its byte bound.
    overflow: Notify,
    /// `[cluster] replication_queue_bytes`.
    max_bytes: usize,
    /// Times the byte bound took the backup out of sync (a metric).
    pub(super) overflows: AtomicU64,
    /// Whether the replicated state may count the backup in sync (true until the sender
    /// committed otherwise: a state from before a restart may), and how often it was
    /// committed in sync: a write released without the backup's copy put a failover or
    /// an adoption from that copy at risk only if the copy counted as in sync at some
    /// point of the write's life (`sync_mark`, `in_sync_since`).
    in_sync: AtomicBool,
    in_sync_commits: AtomicU64,
}

impl BackupQueue {
    /// Accepting from the start: until the sender knows where the backup stands, writes
    /// wait for it.
    pub(super) fn new(max_bytes: usize) -> BackupQueue {
        BackupQueue {
            state: Mutex::new(QueueState {
                accepting: true,
                ..QueueState::default()
            }),
            wake: Notify::new(),
            overflow: Notify::new(),
            max_bytes,
            overflows: AtomicU64::new(0),
            in_sync: AtomicBool::new(true),
            in_sync_commits: AtomicU64::new(0),
        }
    }

    /// Where the backup stands in the replicated state as a write is queued.
    pub(super) fn sync_mark(&self) -> SyncMark {
        (
            self.in_sync.load(Ordering::Acquire),
            self.in_sync_commits.load(Ordering::Acquire),
        )
    }

    /// Whether the backup counted as in sync at `mark` or since.
    pub(super) fn in_sync_since(&self, mark: SyncMark) -> bool {
        mark.0 || self.in_sync_commits.load(Ordering::Acquire) > mark.1
    }

    /// Queues a submission; its acknowledgement, or `None` when the backup is out of
    /// sync (the write does not wait for it).
    ///
    /// Past the byte bound the queue lets go of every operation it holds (the backup
    /// will be resynced whole) but not of the writes: they wait until the sender
    /// committed the backup out of sync, as for a backup that stopped answering. So
    /// memory stays bounded and no write is released while a failover could still read
    /// a copy that lacks it.
    pub(super) fn push(&self, ops: &Arc<Vec<WireOp>>) -> Option<oneshot::Receiver<bool>> {
        let mut state = lock(&self.state);
        if !state.accepting || state.closed {
            return None;
        }
        let (done, ack) = oneshot::channel();
        if let Some(waiting) = state.overflowed.as_mut() {
            waiting.push(done);
            return Some(ack);
        }
        let bytes = ops.iter().map(WireOp::size).sum::<usize>();
        if state.pending_bytes + state.in_flight_bytes + bytes > self.max_bytes {
            let mut waiting: Vec<_> = std::mem::take(&mut state.pending)
                .into_iter()
                .map(|pending| pending.done)
                .collect();
            waiting.push(done);
            state.overflowed = Some(waiting);
            state.pending_ops = 0;
            state.pending_bytes = 0;
            drop(state);
            self.overflows.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
            self.overflow.notify_one();
            return Some(ack);
        }
        state.pending_ops += ops.len();
        state.pending_bytes += bytes;
        state.pending.push_back(Pending {
            ops: ops.clone(),
            bytes,
            submitted: Instant::now(),
            done,
        });
        drop(state);
        self.wake.notify_one();
        Some(ack)
    }

    /// Resolves once the queue is past its byte bound (a wake-up left from an overflow
    /// handled before is ignored).
    async fn until_overflowed(&self) {
        loop {
            let notified = self.overflow.notified();
            if self.overflowed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the queue went past its byte bound since the backup was last
    /// committed out of sync.
    fn overflowed(&self) -> bool {
        lock(&self.state).overflowed.is_some()
    }

    /// Bytes of operations waiting for the backup, queued or sent (a metric).
    pub(super) fn pending_bytes(&self) -> usize {
        let state = lock(&self.state);
        state.pending_bytes + state.in_flight_bytes
    }

    /// A batch of `bytes` was answered (or abandoned).
    fn settle(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(bytes);
    }

    pub(super) fn set_accepting(&self, accepting: bool) {
        lock(&self.state).accepting = accepting;
    }

    /// Stops queueing for the backup and releases every write waiting on it. Only once
    /// the backup is committed out of sync (or is no backup any more).
    fn stop_and_release(&self) {
        let (released, overflowed) = {
            let mut state = lock(&self.state);
            state.accepting = false;
            state.pending_ops = 0;
            state.pending_bytes = 0;
            state.in_flight_bytes = 0;
            (
                std::mem::take(&mut state.pending),
                state.overflowed.take().unwrap_or_default(),
            )
        };
        for pending in released {
            let _ = pending.done.send(false);
        }
        for done in overflowed {
            let _ = done.send(false);
        }
    }

    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.stop_and_release();
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The oldest waiting submissions, up to `MAX_BATCH_OPS` operations (at least one).
    fn take_batch(&self) -> Vec<Pending> {
        let mut state = lock(&self.state);
        let mut taken = Vec::new();
        let mut ops = 0;
        let mut bytes = 0;
        while let Some(next) = state.pending.front() {
            if !taken.is_empty() && ops + next.ops.len() > MAX_BATCH_OPS {
                break;
            }
            ops += next.ops.len();
            bytes += next.bytes;
            taken.extend(state.pending.pop_front());
        }
        state.pending_ops -= ops;
        state.pending_bytes -= bytes;
        state.in_flight_bytes += bytes;
        taken
    }

    /// Operations waiting for the backup.
    pub(super) fn pending_ops(&self) -> usize {
        lock(&self.state).pending_ops
    }
}

/// A generation number no earlier stream of this origin used (wall-clock based, so it
/// also grows across restarts).
fn new_generation(last: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    now.max(last + 1)
}

/// Commits `backup`'s in-sync flag, retrying until it commits or the queue closes.
async fn commit_in_sync(
    link: &Arc<dyn ReplicaLink>,
    queue: &BackupQueue,
    backup: NodeId,
    in_sync: bool,
) -> bool {
    loop {
        if in_sync {
            // Counted before the commit: a write queued meanwhile counts as at risk.
            queue.in_sync_commits.fetch_add(1, Ordering::AcqRel);
            queue.in_sync.store(true, Ordering::Release);
        }
        match link.set_in_sync(backup, in_sync).await {
            Ok(()) => {
                if !in_sync {
                    queue.in_sync.store(false, Ordering::Release);
                }
                return true;
            }
            Err(error) => {
                tracing::debug!(backup, in_sync, %error, "replica state not committed yet; retrying");
            }
        }
        if queue.is_closed() {
            return false;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Counts the backup in `Replicator::synced` while it is in sync.
struct SyncedFlag {
    replicator: Weak<Replicator>,
    set: bool,
}

impl SyncedFlag {
    fn set(&mut self, synced: bool) {
        if synced == self.set {
            return;
        }
        self.set = synced;
        if let Some(replicator) = self.replicator.upgrade() {
            if synced {
                replicator.synced.fetch_add(1, Ordering::Relaxed);
            } else {
                replicator.synced.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for SyncedFlag {
    fn drop(&mut self) {
        self.set(false);
    }
}

pub(super) async fn run(
    replicator: Weak<Replicator>,
    link: Arc<dyn ReplicaLink>,
    backup: NodeId,
    queue: Arc<BackupQueue>,
    ack_timeout: Duration,
) {
    let mut generation = 0;
    let mut sequence = 0;
    let mut in_flight = InFlight::default();
    let mut synced = false;
    let mut flag = SyncedFlag {
        replicator: replicator.clone(),
        set: false,
    };
    loop {
        flag.set(synced);
        if queue.is_closed() {
            return;
        }
        if !synced {
            // At the start always: the state applied here may still be behind the log
            // and miss that the backup was committed in sync.
            let counted_in_sync = generation == 0 || link.in_sync(backup);
            if counted_in_sync && !commit_in_sync(&link, &queue, backup, false).await {
                return;
            }
            queue.stop_and_release();
            while !link.reachable(backup) {
                if queue.is_closed() {
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
            let Some(owner) = replicator.upgrade() else {
                return;
            };
            generation = new_generation(generation);
            let resynced = resync(&owner, &link, &queue, backup, generation, ack_timeout)
                .await
                .and_then(|last| {
                    sequence = last;
                    // What queued during the resync was let go: the copy lacks it.
                    if queue.overflowed() {
                        Err("the queue went past replication_queue_bytes during the resync".into())
                    } else {
                        Ok(())
                    }
                });
            match resynced {
                Ok(()) => {
                    if !commit_in_sync(&link, &queue, backup, true).await {
                        return;
                    }
                    tracing::info!(backup, "backup in sync");
                    synced = true;
                }
                Err(error) => {
                    tracing::info!(backup, %error, "resync of a backup failed; retrying");
                    queue.stop_and_release();
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        }
        let wake = queue.wake.notified();
        if queue.overflowed() {
            tracing::warn!(
                backup,
                "backup too far behind (replication_queue_bytes): out of sync until resynced"
            );
            if !commit_in_sync(&link, &queue, backup, false).await {
                return;
            }
            synced = false;
            in_flight.release_all();
            queue.stop_and_release();
            continue;
        }
        while in_flight.len() < MAX_BATCHES_IN_FLIGHT {
            let taken = queue.take_batch();
            if taken.is_empty() {
                break;
            }
            sequence += 1;
            let batch = Batch {
                generation,
                reset: false,
                sequence,
                ops: taken
                    .iter()
                    .flat_map(|pending| pending.ops.iter().cloned())
                    .collect(),
            };
            in_flight.send(&link, backup, batch, taken, ack_timeout);
        }
        if in_flight.len() == 0 {
            wake.await;
            continue;
        }
        let room = in_flight.len() < MAX_BATCHES_IN_FLIGHT;
        // A backup slow enough for the queue to pass its byte bound behind these
        // batches goes out of sync now, not once they are answered or time out.
        let (sent, taken) = tokio::select! {
            answered = in_flight.oldest() => match answered {
                Some(answered) => answered,
                None => continue,
            },
            () = wake, if room => continue,
            // Every batch out is released below, once the backup is out of sync.
            () = queue.until_overflowed() => (Err("past replication_queue_bytes".into()), Vec::new()),
        };
        queue.settle(taken.iter().map(|pending| pending.bytes).sum());
        if let Err(error) = sent {
            tracing::warn!(backup, %error, "backup out of sync");
            // Out of sync through consensus first; only then may the writes go on.
            if !commit_in_sync(&link, &queue, backup, false).await {
                return;
            }
            synced = false;
        }
        let acknowledged = synced.then(Instant::now);
        for pending in taken {
            if let (Some(at), Some(owner)) = (acknowledged, replicator.upgrade()) {
                owner
                    .latency
                    .record(at.saturating_duration_since(pending.submitted));
            }
            let _ = pending.done.send(synced);
        }
        if !synced {
            in_flight.release_all();
            queue.stop_and_release();
        }
    }
}

/// The batches sent to the backup and not yet answered, oldest first, with the writes
/// each one releases. The sender task polls the requests itself: an answer wakes it
/// directly, not through a task of the request's own.
#[derive(Default)]
struct InFlight {
    writes: VecDeque<Vec<Pending>>,
    answers: FuturesOrdered<BackupAnswer>,
}

/// The backup's answer to one batch: `Ok` once it wrote the batch durably.
type BackupAnswer = super::BoxFuture<'static, Result<(), String>>;

impl InFlight {
    fn len(&self) -> usize {
        self.writes.len()
    }

    fn send(
        &mut self,
        link: &Arc<dyn ReplicaLink>,
        backup: NodeId,
        batch: Batch,
        taken: Vec<Pending>,
        ack_timeout: Duration,
    ) {
        let link = link.clone();
        self.answers.push_back(Box::pin(async move {
            tokio::time::timeout(ack_timeout, link.replicate(backup, batch, ack_timeout))
                .await
                .unwrap_or_else(|_| Err("no acknowledgement in time".into()))
        }));
        self.writes.push_back(taken);
    }

    /// The oldest batch's answer, with the writes it releases; polling it also sends
    /// the batches not sent yet. `None` when nothing is in flight.
    async fn oldest(&mut self) -> Option<(Result<(), String>, Vec<Pending>)> {
        let answer = self.answers.next().await?;
        Some((answer, self.writes.pop_front().unwrap_or_default()))
    }

    /// The backup was committed out of sync: the writes of every batch still out are
    /// released without its acknowledgement (their requests are dropped).
    fn release_all(&mut self) {
        self.answers = FuturesOrdered::new();
        for taken in self.writes.drain(..) {
            for pending in taken {
                let _ = pending.done.send(false);
            }
        }
    }
}

/// Sends the backup everything stored here as of one point of the stream (the first
/// batch resets its copy), then the stream goes on from that point.
async fn resync(
    owner: &Replicator,
    link: &Arc<dyn ReplicaLink>,
    queue: &BackupQueue,
    backup: NodeId,
    generation: u64,
    ack_timeout: Duration,
) -> Result<u64, String> {
    let restore = owner.resync_point(queue);
    let state = tokio::task::spawn_blocking(restore)
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let mut batches = vec![Batch {
        generation,
        reset: true,
        sequence: 1,
        ops: Vec::new(),
    }];
    for session in &state.sessions {
        let ops: Vec<WireOp> = session.to_ops().iter().filter_map(WireOp::encode).collect();
        let last = batches.last_mut().map_or(0, |batch| batch.ops.len());
        if last > 0 && last + ops.len() > MAX_BATCH_OPS {
            batches.push(Batch {
                generation,
                reset: false,
                sequence: batches.len() as u64 + 1,
                ops: Vec::new(),
            });
        }
        if let Some(batch) = batches.last_mut() {
            batch.ops.extend(ops);
        }
    }
    let sessions = state.sessions.len();
    drop(state);
    let last = batches.len() as u64;
    for batch in batches {
        // A resync may be large: each batch gets the timeout of its own.
        tokio::time::timeout(
            ack_timeout * 4,
            link.replicate(backup, batch, ack_timeout * 4),
        )
        .await
        .unwrap_or_else(|_| Err("no acknowledgement in time".into()))?;
    }
    tracing::info!(backup, sessions, "backup resynced");
    Ok(last)
}

#[cfg(test)]
mod sync_mark_tests {
    use super::*;

    #[test]
    fn a_release_counts_only_if_the_copy_counted_as_in_sync_during_the_write() {
        let queue = BackupQueue::new(1 << 20);
        // Before the sender committed anything, a state from before a restart may count
        // the backup in sync.
        assert!(queue.in_sync_since(queue.sync_mark()));
        // Out of sync, being resynced: a write queued now and released before the
        // backup counted as in sync again was never in a copy anyone reads.
        queue.in_sync.store(false, Ordering::Release);
        let during_resync = queue.sync_mark();
        assert!(!queue.in_sync_since(during_resync));
        // Committed in sync while that write waited: its release is at risk.
        queue.in_sync_commits.fetch_add(1, Ordering::AcqRel);
        queue.in_sync.store(true, Ordering::Release);
        assert!(queue.in_sync_since(during_resync));
        assert!(queue.in_sync_since(queue.sync_mark()));
    }
}
