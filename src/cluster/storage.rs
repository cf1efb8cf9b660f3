//! The Raft log, vote and snapshot in the node's RocksDB (column families `raft_log` and
//! `raft_state`, next to the broker's own), and the state machine they feed.
//!
//! - `raft_log`: key = log index (u64 big-endian), value = the entry as JSON.
//! - `raft_state`: `vote`, `committed`, `last_purged` (JSON), `snapshot_meta` (JSON) and
//!   `snapshot_data` (the state machine as JSON), the last two in one atomic write.
//!
//! Every write is synced before it is reported done: a vote or an entry openraft was
//! told is on disk is on disk. The state machine lives in memory and is rebuilt at start
//! from the last snapshot, then openraft re-applies the committed entries after it.
//! Writes are small and rare (metadata: routes, retained, ownership), so they run on the
//! calling task rather than on a writer thread.

// openraft's traits fix the error type (`StorageError`, a large enum); our helpers
// return it too rather than convert at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::config::NodeId;
use super::state::{ClusterState, Command, CommandResult, Effect};
use super::types::{Entry, LogId, StorageError, TypeConfig};

pub const RAFT_LOG: &str = "raft_log";
pub const RAFT_STATE: &str = "raft_state";

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

fn io_read(error: impl std::fmt::Display) -> StorageError {
    StorageIOError::read(AnyError::error(error.to_string())).into()
}

fn io_write(error: impl std::fmt::Display) -> StorageError {
    StorageIOError::write(AnyError::error(error.to_string())).into()
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn family<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| io_read(format!("column family {name} is missing")))
}

fn get_json<T: DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, StorageError> {
    let Some(bytes) = db.get_cf(family(db, RAFT_STATE)?, key).map_err(io_read)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|error| {
        io_read(format!(
            "raft_state {}: {error}",
            String::from_utf8_lossy(key)
        ))
    })
}

fn put_json<T: Serialize>(db: &DB, key: &[u8], value: &T) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(io_write)?;
    db.put_cf_opt(family(db, RAFT_STATE)?, key, bytes, &synced())
        .map_err(io_write)
}

/// The log and the vote. Cheap to clone: every clone shares the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let log = family(&self.db, RAFT_LOG)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(io_read)?;
                let entry: Entry = serde_json::from_slice(&value).map_err(io_read)?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Deletes the entries with index in `[from, to)`.
    fn delete_range(&self, from: u64, to: u64, batch: &mut WriteBatch) -> Result<(), StorageError> {
        batch.delete_range_cf(
            family(&self.db, RAFT_LOG)?,
            from.to_be_bytes(),
            to.to_be_bytes(),
        );
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let log = family(&self.db, RAFT_LOG)?;
        let mut entries = Vec::new();
        let from = start.to_be_bytes();
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(io_read)?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| io_read("raft_log: a key is not 8 bytes"))?,
            );
            if !range.contains(&index) {
                break;
            }
            entries.push(serde_json::from_slice(&value).map_err(io_read)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = get_json(&self.db, LAST_PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        put_json(&self.db, VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get_json(&self.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        put_json(&self.db, COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_json::<Option<LogId>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = family(&self.db, RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(io_write)?;
            batch.put_cf(log, entry.log_id.index.to_be_bytes(), value);
        }
        let result = self.db.write_opt(batch, &synced());
        let reported = result
            .as_ref()
            .map(|_| ())
            .map_err(|error| std::io::Error::other(error.to_string()));
        callback.log_io_completed(reported);
        result.map_err(io_write)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.delete_range(log_id.index, u64::MAX, &mut batch)?;
        self.db.write_opt(batch, &synced()).map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark first: a crash between the two writes leaves entries below it,
        // which are never read again.
        put_json(&self.db, LAST_PURGED, &log_id)?;
        let mut batch = WriteBatch::default();
        self.delete_range(0, log_id.index.saturating_add(1), &mut batch)?;
        self.db.write_opt(batch, &synced()).map_err(io_write)
    }
}

/// Receives what each applied command changed (the broker side of the cluster).
pub trait EffectSink: Send + Sync + 'static {
    fn applied(&self, state: &ClusterState, effects: Vec<Effect>);
    /// The whole state was replaced (a snapshot was installed).
    fn reset(&self, state: &ClusterState);
}

/// The state machine: `ClusterState` in memory, its snapshots in `raft_state`.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    state: Arc<RwLock<ClusterState>>,
    sink: Option<Arc<dyn EffectSink>>,
}

impl StateMachineStore {
    /// Opens the state machine from the last stored snapshot (empty without one) and the
    /// committed entries of the local log after it, so that the broker is told the state
    /// as of the committed index (`EffectSink::reset`), never one in between.
    ///
    /// Why not leave those entries to openraft, which re-applies them at start: the
    /// snapshot can be older than moves that brought a session back to this node (away
    /// to another node before the snapshot, back here after it), and a reset from the
    /// snapshot alone would hand that session over (`moved`) to a node that no longer
    /// owns it, while the replayed entry that brings it back finds nothing to restore:
    /// the session, which the store holds, would be missing here while the cluster
    /// counts this node its owner (the client would get a fresh one). openraft then
    /// finds nothing left to re-apply.
    pub fn open(
        db: Arc<DB>,
        sink: Option<Arc<dyn EffectSink>>,
    ) -> Result<StateMachineStore, StorageError> {
        let mut state = match db
            .get_cf(family(&db, RAFT_STATE)?, SNAPSHOT_DATA)
            .map_err(io_read)?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(io_read)?,
            None => ClusterState::default(),
        };
        let committed: Option<LogId> = get_json(&db, COMMITTED)?;
        apply_committed(&db, &mut state, committed)?;
        if let Some(sink) = &sink {
            sink.reset(&state);
        }
        Ok(StateMachineStore {
            db,
            state: Arc::new(RwLock::new(state)),
            sink,
        })
    }

    /// The state as applied on this node so far.
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        self.state.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn stored_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let meta: Option<SnapshotMeta<NodeId, openraft::BasicNode>> =
            get_json(&self.db, SNAPSHOT_META)?;
        let Some(meta) = meta else {
            return Ok(None);
        };
        let data = self
            .db
            .get_cf(family(&self.db, RAFT_STATE)?, SNAPSHOT_DATA)
            .map_err(io_read)?
            .unwrap_or_default();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        }))
    }

    fn store_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let state = family(&self.db, RAFT_STATE)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            state,
            SNAPSHOT_META,
            serde_json::to_vec(meta).map_err(io_write)?,
        );
        batch.put_cf(state, SNAPSHOT_DATA, data);
        self.db.write_opt(batch, &synced()).map_err(io_write)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let state = self.read();
            (
                serde_json::to_vec(&*state).map_err(io_write)?,
                state.last_applied,
                state.membership.clone(),
            )
        };
        let snapshot_id = match last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.store_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, openraft::BasicNode>), StorageError> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut effects = Vec::new();
        let mut state = self.write();
        for entry in entries {
            results.push(apply_entry(&mut state, entry, &mut effects));
        }
        if let Some(sink) = &self.sink {
            if !effects.is_empty() {
                sink.applied(&state, effects);
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut installed: ClusterState = serde_json::from_slice(&data).map_err(io_read)?;
        installed.last_applied = meta.last_log_id;
        installed.membership = meta.last_membership.clone();
        self.store_snapshot(meta, &data)?;
        let mut state = self.write();
        *state = installed;
        if let Some(sink) = &self.sink {
            sink.reset(&state);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.stored_snapshot()
    }
}

fn apply_command(
    state: &mut ClusterState,
    command: &Command,
    effects: &mut Vec<Effect>,
) -> CommandResult {
    state.apply(command, effects)
}

/// Applies one log entry to `state`.
fn apply_entry(state: &mut ClusterState, entry: Entry, effects: &mut Vec<Effect>) -> CommandResult {
    state.last_applied = Some(entry.log_id);
    match entry.payload {
        EntryPayload::Blank => CommandResult::default(),
        EntryPayload::Normal(command) => {
            let mut result = apply_command(state, &command, effects);
            result.log_index = entry.log_id.index;
            result
        }
        EntryPayload::Membership(membership) => {
            state.membership = StoredMembership::new(Some(entry.log_id), membership);
            effects.push(Effect::MembersChanged);
            CommandResult::default()
        }
    }
}

/// Applies to `state` the entries of the local log after its last applied one up to
/// `committed` (what a restarted node had committed before it stopped). Stops at a gap
/// (an entry missing from the log): openraft applies the rest as usual. Their effects
/// are not reported one by one: the caller resets the broker from the resulting state.
fn apply_committed(
    db: &DB,
    state: &mut ClusterState,
    committed: Option<LogId>,
) -> Result<(), StorageError> {
    let Some(committed) = committed else {
        return Ok(());
    };
    let first = state.last_applied.map_or(0, |id| id.index + 1);
    let log = family(db, RAFT_LOG)?;
    let from = first.to_be_bytes();
    let entries = db.iterator_cf(log, IteratorMode::From(&from, Direction::Forward));
    let mut effects = Vec::new();
    for (index, item) in (first..=committed.index).zip(entries) {
        let (_, value) = item.map_err(io_read)?;
        let entry: Entry = serde_json::from_slice(&value).map_err(io_read)?;
        if entry.log_id.index != index {
            break;
        }
        apply_entry(state, entry, &mut effects);
        effects.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().map_err(io_write)?;
            let options = crate::storage::RocksOptions {
                raft_families: true,
                ..Default::default()
            };
            let store = crate::storage::RocksStore::open(dir.path(), options).map_err(io_write)?;
            let db = store.database();
            Ok((
                dir,
                LogStore::new(db.clone()),
                StateMachineStore::open(db, None)?,
            ))
        }
    }

    /// openraft's own conformance suite against our RocksDB log and state machine.
    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(RocksBuilder).unwrap();
    }

    /// Records the state each `reset` shows the broker.
    #[derive(Default)]
    struct Resets(std::sync::Mutex<Vec<ClusterState>>);

    impl EffectSink for Resets {
        fn applied(&self, _: &ClusterState, _: Vec<Effect>) {}
        fn reset(&self, state: &ClusterState) {
            self.0.lock().unwrap().push(state.clone());
        }
    }

    fn claim(index: u64, client_id: &str, node: NodeId) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Claim {
                client_id: client_id.into(),
                node,
            }),
        }
    }

    /// A node restarts with a snapshot taken after a session moved away from it (node 2)
    /// to node 1, and committed entries after the snapshot that bring the session back:
    /// the broker is shown the state as of the committed index, where node 2 owns the
    /// session, and never the snapshot's, which would hand the session it holds over to
    /// a node that no longer owns it (its client then got a fresh session).
    #[tokio::test]
    async fn a_restart_shows_the_broker_the_state_as_of_the_committed_index() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::storage::RocksOptions {
            raft_families: true,
            ..Default::default()
        };
        let store = crate::storage::RocksStore::open(dir.path(), options).unwrap();
        let db = store.database();
        let mut log = LogStore::new(db.clone());

        // Before the snapshot: "pub" claimed by node 2, then moved to node 1.
        let mut snapshot_state = ClusterState::default();
        for entry in [claim(1, "pub", 2), claim(2, "pub", 1)] {
            apply_entry(&mut snapshot_state, entry, &mut Vec::new());
        }
        assert_eq!(snapshot_state.owners["pub"].node, 1);
        let machine = StateMachineStore {
            db: db.clone(),
            state: Arc::new(RwLock::new(snapshot_state)),
            sink: None,
        };
        machine.clone().build_snapshot().await.unwrap();

        // After it, committed: back to node 2, and another session claimed; one entry
        // appended but not committed.
        let after = vec![claim(3, "other", 3), claim(4, "pub", 2), claim(5, "pub", 3)];
        let key = |entry: &Entry| entry.log_id.index.to_be_bytes();
        for entry in &after {
            db.put_cf(
                family(&db, RAFT_LOG).unwrap(),
                key(entry),
                serde_json::to_vec(entry).unwrap(),
            )
            .unwrap();
        }
        log.save_committed(Some(after[1].log_id)).await.unwrap();

        let resets = Arc::new(Resets::default());
        let mut reopened = StateMachineStore::open(db.clone(), Some(resets.clone())).unwrap();
        let shown = resets.0.lock().unwrap().clone();
        assert_eq!(shown.len(), 1);
        let owner = shown[0].owners["pub"];
        assert_eq!(owner.node, 2, "the state as of the committed index");
        assert_eq!(owner.epoch, 4);
        assert_eq!(shown[0].owners["other"].node, 3);
        // openraft finds everything committed applied; the uncommitted entry is its own.
        let (applied, _) = reopened.applied_state().await.unwrap();
        assert_eq!(applied, Some(after[1].log_id));
    }
}
