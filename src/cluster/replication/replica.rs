//! The backup's side: one RocksDB store per origin node under
//! `<data_dir>/replicas/<origin id>` (the layout of a node's own store; only the session
//! tables are used), written in the order the origin sent, and read when the origin is
//! down and one of its sessions is claimed elsewhere (failover).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use tokio::sync::Notify;

use crate::storage::{
    RestoredSession, RestoredState, RocksOptions, RocksStore, Store, StoreOp, WallClock,
};

use super::super::config::NodeId;
use super::{lock, Batch};
use crate::message::ClusterMessageId;

/// How long a completed QoS 2 message's id is remembered: longer than a publishing node
/// keeps a forward its dead peer did not acknowledge (`cluster.forward_ack_timeout_ms`,
/// 5 s by default) plus a failover.
const COMPLETED_FOR: Duration = Duration::from_secs(60);
/// Completed ids remembered at most, all origins together (the oldest go first).
const COMPLETED_MAX: usize = 50_000;

/// The cluster ids of QoS 2 messages the origins' sessions completed lately
/// (`StoreOp::CompletedInCluster`), in memory only, oldest first. A subscriber's node
/// can die after its client completed a message and before the publishing node got its
/// acknowledgement of the forward; that node then sends the message again to whoever
/// takes the session over from this copy, which no longer holds it: these ids let the
/// new owner drop it instead of delivering it twice. Lost with this node (a second
/// failure), bounded in time and count.
#[derive(Default)]
struct RecentlyCompleted {
    entries: VecDeque<(Instant, NodeId, ByteString, ClusterMessageId)>,
}

impl RecentlyCompleted {
    fn note(&mut self, now: Instant, origin: NodeId, client_id: &ByteString, id: ClusterMessageId) {
        self.entries.push_back((now, origin, client_id.clone(), id));
        self.prune(now);
    }

    /// Drops what ran out and what is beyond the bound, oldest first.
    fn prune(&mut self, now: Instant) {
        while self.entries.len() > COMPLETED_MAX
            || self
                .entries
                .front()
                .is_some_and(|(at, ..)| now.duration_since(*at) > COMPLETED_FOR)
        {
            self.entries.pop_front();
        }
    }

    fn of(&self, now: Instant, origin: NodeId, client_id: &str) -> Vec<ClusterMessageId> {
        self.entries
            .iter()
            .filter(|(at, from, session, _)| {
                *from == origin && session == client_id && now.duration_since(*at) <= COMPLETED_FOR
            })
            .map(|(.., id)| *id)
            .collect()
    }
}

/// The copy of one origin's sessions.
struct Replica {
    store: Arc<RocksStore>,
    /// Where the origin's stream stands; held while a batch is handed to the store (not
    /// while it is written), so batches are submitted in the stream's order.
    stream: tokio::sync::Mutex<StreamPosition>,
    /// Wakes the batches waiting for their turn when the position moves.
    turn: Notify,
}

/// The origin's current stream (`Batch::generation`) and the next batch it expects.
#[derive(Default)]
struct StreamPosition {
    generation: u64,
    next: u64,
}

/// How long a batch waits for an earlier one of its stream: the origin gives up on a
/// batch after its acknowledgement timeout and resyncs, so a batch whose predecessor
/// never arrives (its link went down) is refused rather than held.
const TURN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `replica` holds, read off the runtime's threads.
async fn restore_copy(replica: &Replica) -> Result<RestoredState, String> {
    let store = replica.store.clone();
    tokio::task::spawn_blocking(move || store.restore(WallClock::now().unix_millis()))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())
}

/// This node's copies of other nodes' sessions.
pub struct Replicas {
    dir: PathBuf,
    options: RocksOptions,
    open: Mutex<HashMap<NodeId, Arc<Replica>>>,
    /// Held while a copy is opened: RocksDB refuses a second open of one database.
    opening: tokio::sync::Mutex<()>,
    completed: Mutex<RecentlyCompleted>,
}

impl Replicas {
    /// Copies under `data_dir/replicas`, opened with `options`: the node's `[storage]
    /// sync` and the RocksDB memory budgets its own store shares.
    pub fn new(data_dir: &std::path::Path, options: RocksOptions) -> Replicas {
        Replicas {
            dir: data_dir.join("replicas"),
            options,
            open: Mutex::default(),
            opening: tokio::sync::Mutex::new(()),
            completed: Mutex::default(),
        }
    }

    async fn replica(&self, origin: NodeId) -> Result<Arc<Replica>, String> {
        if let Some(replica) = lock(&self.open).get(&origin) {
            return Ok(replica.clone());
        }
        let _opening = self.opening.lock().await;
        if let Some(replica) = lock(&self.open).get(&origin) {
            return Ok(replica.clone());
        }
        let path = self.dir.join(origin.to_string());
        let options = self.options.clone();
        let store = tokio::task::spawn_blocking(move || RocksStore::open(path, options))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        let replica = Arc::new(Replica {
            store: Arc::new(store),
            stream: tokio::sync::Mutex::default(),
            turn: Notify::new(),
        });
        lock(&self.open).insert(origin, replica.clone());
        Ok(replica)
    }

    /// Applies one batch of `origin`'s stream; `Ok` once durable. Batches are handed to
    /// the store in their stream's order (`Batch::sequence`) and written together by its
    /// group commit, so several can be in flight from the origin.
    pub async fn apply(&self, origin: NodeId, batch: Batch) -> Result<(), String> {
        let replica = self.replica(origin).await?;
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            ops.push(op.decode().ok_or("an operation did not decode")?);
        }
        let waited_since = tokio::time::Instant::now();
        let written = loop {
            let turn = replica.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let mut position = replica.stream.lock().await;
            if batch.reset {
                // Whatever the earlier stream still writes goes first, then the copy
                // is emptied.
                replica
                    .store
                    .flush()
                    .await
                    .map_err(|error| error.to_string())?;
                let held = restore_copy(&replica).await?;
                let removed = held
                    .sessions
                    .into_iter()
                    .map(|session| StoreOp::RemoveSession {
                        client_id: session.record.client_id,
                    });
                ops.splice(0..0, removed);
                position.generation = batch.generation;
            } else if batch.generation != position.generation {
                return Err("a batch of an earlier stream: resync first".into());
            } else if batch.sequence > position.next && position.next != 0 {
                // An earlier batch of the stream is still on its way.
                drop(position);
                let left = TURN_TIMEOUT.saturating_sub(waited_since.elapsed());
                if tokio::time::timeout(left, turn).await.is_err() {
                    return Err("an earlier batch of the stream never arrived".into());
                }
                continue;
            } else if batch.sequence != 0 && batch.sequence < position.next {
                return Err("a batch of the stream arrived twice".into());
            }
            position.next = if batch.sequence == 0 {
                0
            } else {
                batch.sequence + 1
            };
            self.remember_completed(origin, &ops);
            let written = (!ops.is_empty()).then(|| replica.store.submit(ops));
            drop(position);
            replica.turn.notify_waiters();
            break written;
        };
        match written {
            Some(written) => written.await.map_err(|error| error.to_string()),
            None => Ok(()),
        }
    }

    /// The copy of `client_id`'s session that `origin` replicated here, if any: that
    /// session alone is read (a failover costs the session's size, not the copy's).
    pub async fn session(&self, origin: NodeId, client_id: &str) -> Option<RestoredSession> {
        let replica = self.replica(origin).await.ok()?;
        // No batch of the origin is handed to the store meanwhile, and those handed to
        // it before are written.
        let _stream = replica.stream.lock().await;
        if replica.store.flush().await.is_err() {
            return None;
        }
        let store = replica.store.clone();
        let client_id = client_id.to_string();
        let read = tokio::task::spawn_blocking(move || store.read_session(&client_id)).await;
        match read {
            Ok(Ok(session)) => session,
            Ok(Err(error)) => {
                tracing::warn!(origin, %error, "a session of a backup copy could not be read");
                None
            }
            Err(_) => None,
        }
    }

    /// Those of `client_ids` whose session `origin`'s copy holds (an adoption's
    /// candidates): only their records are looked up, and nothing leaves the copy (a
    /// session that expired there stays, with the will it owes, until it is adopted).
    pub async fn holding(
        &self,
        origin: NodeId,
        client_ids: Vec<String>,
    ) -> Result<Vec<String>, String> {
        let replica = self.replica(origin).await?;
        let _stream = replica.stream.lock().await;
        // Whatever was handed to the store is written first.
        replica
            .store
            .flush()
            .await
            .map_err(|error| error.to_string())?;
        let store = replica.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut held = Vec::new();
            for client_id in client_ids {
                if store
                    .has_session(&client_id)
                    .map_err(|error| error.to_string())?
                {
                    held.push(client_id);
                }
            }
            Ok(held)
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// Notes the QoS 2 messages `origin`'s sessions completed (`ops`, in the stream's
    /// order; the store ignores the operations that only say so). The cluster ids of
    /// their incoming ones are in the copy's store (`StoreOp::IncomingInCluster`).
    fn remember_completed(&self, origin: NodeId, ops: &[StoreOp]) {
        let now = Instant::now();
        let mut completed = lock(&self.completed);
        for op in ops {
            if let StoreOp::CompletedInCluster {
                client_id,
                cluster_id,
            } = op
            {
                completed.note(now, origin, client_id, *cluster_id);
            }
        }
    }

    /// The cluster ids of the QoS 2 messages `client_id`'s session on `origin` completed
    /// lately (`RecentlyCompleted`): a node taking the session over from this copy
    /// drops copies of them that reach it.
    pub fn recently_completed(&self, origin: NodeId, client_id: &str) -> Vec<ClusterMessageId> {
        lock(&self.completed).of(Instant::now(), origin, client_id)
    }

    /// The session moved on from a failover: its copy goes.
    pub async fn forget(&self, origin: NodeId, client_id: &str) {
        let Ok(replica) = self.replica(origin).await else {
            return;
        };
        let _stream = replica.stream.lock().await;
        let _ = replica
            .store
            .submit(vec![StoreOp::RemoveSession {
                client_id: client_id.into(),
            }])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> ClusterMessageId {
        ClusterMessageId { node: 1, sequence }
    }

    #[test]
    fn completed_ids_are_forgotten_after_a_while_and_beyond_the_bound() {
        let mut completed = RecentlyCompleted::default();
        let start = Instant::now();
        let (s, t, u) = ("s".into(), "t".into(), "u".into());
        completed.note(start, 2, &s, id(1));
        completed.note(start + COMPLETED_FOR / 2, 2, &s, id(2));
        assert_eq!(
            completed.of(start + COMPLETED_FOR / 2, 2, "s"),
            vec![id(1), id(2)]
        );
        // The first one ran out.
        let later = start + COMPLETED_FOR + Duration::from_secs(1);
        assert_eq!(completed.of(later, 2, "s"), vec![id(2)]);
        completed.note(later, 2, &t, id(3));
        assert_eq!(
            completed.entries.len(),
            2,
            "what ran out is dropped as more come"
        );

        for n in 0..COMPLETED_MAX as u64 + 10 {
            completed.note(later, 2, &u, id(100 + n));
        }
        assert_eq!(completed.entries.len(), COMPLETED_MAX);
        assert!(
            completed.of(later, 2, "t").is_empty(),
            "the oldest go first"
        );
    }
}
