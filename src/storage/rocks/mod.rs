//! The RocksDB store: opening a database (schema version, lock, corruption) and the
//! `Store` implementation on top of the writer thread.
//!
//! Column families: `meta` (schema version), `sessions`, `subscriptions`, `retained`,
//! `messages` (bodies by message id), `queue`, `inflight`, `incoming` (see `codec` for
//! the key and value layouts). One `WriteBatch` is atomic across all of them, so a message
//! body and its queue references, or a session and everything under it, are written or
//! deleted together. Opening scans every record once: corrupt data is found at start-up,
//! and the reference counts of message bodies are rebuilt from the references.

mod committer;
mod memory;
mod one_session;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{ColumnFamilyDescriptor, DBCompressionType, ErrorKind, Options, WriteOptions, DB};

use super::memory::note_message_ids;
use super::record::{MessageId, RestoredState, StoreOp, UnixMillis};
use super::writer::{Writer, WriterOptions};
use super::{defaults, Completion, Counters, Store, StoreError, StoreStats, SyncMode};
use crate::metrics::StorageMetrics;

use committer::RocksCommitter;
pub use memory::{RocksMemory, MIB};

/// The layout this build reads and writes. A database with a higher version was written
/// by a newer fleetmq and is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

const META: &str = "meta";
const SESSIONS: &str = "sessions";
const SUBSCRIPTIONS: &str = "subscriptions";
const RETAINED: &str = "retained";
const MESSAGES: &str = "messages";
const QUEUE: &str = "queue";
const INFLIGHT: &str = "inflight";
const INCOMING: &str = "incoming";
const COLUMN_FAMILIES: [&str; 8] = [
    META,
    SESSIONS,
    SUBSCRIPTIONS,
    RETAINED,
    MESSAGES,
    QUEUE,
    INFLIGHT,
    INCOMING,
];
/// The cluster's Raft log and state (`crate::cluster::storage`), created on cluster
/// nodes only (`RocksOptions::raft_families`), so a single node's database keeps the
/// families older builds know.
const RAFT_FAMILIES: [&str; 2] = [
    crate::cluster::storage::RAFT_LOG,
    crate::cluster::storage::RAFT_STATE,
];
const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub sync: SyncMode,
    /// Most operations per write (see `defaults::MAX_BATCH_OPS`).
    pub max_batch_ops: usize,
    /// Longest wait for more submissions in `batch` mode.
    pub max_batch_delay: Duration,
    /// Queue bound (see `defaults::QUEUE_CAPACITY`).
    pub queue_capacity: usize,
    /// Create the cluster's Raft column families (a `[cluster]` node). Families that
    /// exist are opened in any case: a former cluster node's database opens without.
    pub raft_families: bool,
    /// The memtable and block cache budgets this database shares with every other one
    /// opened with a clone of it (`[storage] write_buffer_mb`, `block_cache_mb`).
    pub memory: RocksMemory,
}

impl Default for RocksOptions {
    fn default() -> RocksOptions {
        RocksOptions {
            sync: SyncMode::default(),
            max_batch_ops: defaults::MAX_BATCH_OPS,
            max_batch_delay: defaults::MAX_BATCH_DELAY,
            queue_capacity: defaults::QUEUE_CAPACITY,
            raft_families: false,
            memory: RocksMemory::default(),
        }
    }
}

pub struct RocksStore {
    writer: Writer,
    counters: Arc<Counters>,
    next_message_id: AtomicU64,
    path: PathBuf,
    db: Arc<DB>,
    memory: RocksMemory,
}

impl RocksStore {
    /// Opens (or creates) the database in directory `path` and starts its writer thread.
    ///
    /// Fails with an error naming the path if another process holds the database, if it
    /// was written by a newer schema version, or if any record is corrupt.
    pub fn open(path: impl AsRef<Path>, options: RocksOptions) -> Result<RocksStore, StoreError> {
        RocksStore::open_with_metrics(path, options, None)
    }

    /// Like `open`, recording the latency of every write and sync in `latency`.
    pub fn open_with_metrics(
        path: impl AsRef<Path>,
        options: RocksOptions,
        latency: Option<StorageMetrics>,
    ) -> Result<RocksStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|error| StoreError::Open {
            path: path.clone(),
            detail: error.to_string(),
        })?;
        let db = Arc::new(open_db(&path, options.raft_families, &options.memory)?);
        check_schema(&db, &path)?;
        let committer = RocksCommitter::load(db.clone(), path.clone())?;
        let next_message_id = committer
            .max_message_id()
            .map_or(1, |id| id.saturating_add(1));
        let counters = Arc::new(Counters::default());
        let writer_options = WriterOptions {
            sync: options.sync,
            max_batch_ops: options.max_batch_ops.max(1),
            max_batch_delay: options.max_batch_delay,
            capacity: options.queue_capacity.max(1),
        };
        let writer = Writer::start(committer, writer_options, counters.clone(), latency).map_err(
            |error| StoreError::Open {
                path: path.clone(),
                detail: format!("cannot start the writer thread: {error}"),
            },
        )?;
        Ok(RocksStore {
            writer,
            counters,
            next_message_id: AtomicU64::new(next_message_id),
            path,
            db,
            memory: options.memory,
        })
    }

    /// The memory budgets this database shares.
    pub fn memory(&self) -> &RocksMemory {
        &self.memory
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database itself, for the cluster's Raft column families (which it writes
    /// directly, beside the writer thread: the two touch disjoint families).
    pub fn database(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// `client_id`'s stored session alone (`one_session`), `None` when there is none.
    /// Reads the database directly: the caller keeps writes to that session out.
    pub fn read_session(
        &self,
        client_id: &str,
    ) -> Result<Option<super::record::RestoredSession>, StoreError> {
        one_session::read_session(&self.db, &self.path, client_id)
    }

    /// Whether a session of `client_id` is stored (its record alone is looked up).
    pub fn has_session(&self, client_id: &str) -> Result<bool, StoreError> {
        one_session::has_session(&self.db, &self.path, client_id)
    }
}

impl Store for RocksStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        note_message_ids(&self.next_message_id, &ops);
        self.writer.submit(ops)
    }

    fn flush(&self) -> Completion {
        self.writer.flush()
    }

    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        self.writer.restore(now)
    }

    fn restore_later(&self, now: UnixMillis) -> super::RestoreLater {
        self.writer.restore_later(now)
    }

    fn next_message_id(&self) -> MessageId {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            rocks_memory: self.memory.usage(),
            ..self.counters.snapshot()
        }
    }
}

fn db_options(memory: &RocksMemory) -> Options {
    let mut options = Options::default();
    memory.apply_to_database(&mut options);
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_max_background_jobs(2);
    // RocksDB's own info logs, rotated: a handful is enough to diagnose a problem.
    options.set_keep_log_file_num(4);
    options
}

fn open_db(path: &Path, raft_families: bool, memory: &RocksMemory) -> Result<DB, StoreError> {
    let options = db_options(memory);
    let mut names: Vec<String> = COLUMN_FAMILIES
        .iter()
        .map(|name| name.to_string())
        .collect();
    if raft_families {
        names.extend(RAFT_FAMILIES.iter().map(|name| name.to_string()));
    }
    // RocksDB opens a database only with all of its families: whatever exists too.
    for existing in DB::list_cf(&options, path).unwrap_or_default() {
        if existing != "default" && !names.contains(&existing) {
            names.push(existing);
        }
    }
    let families = names.into_iter().map(|name| {
        let mut family = Options::default();
        family.set_compression_type(DBCompressionType::Lz4);
        memory.apply_to_family(&mut family);
        ColumnFamilyDescriptor::new(name, family)
    });
    DB::open_cf_descriptors(&options, path, families).map_err(|error| {
        let detail = error.to_string();
        let path = path.to_path_buf();
        if detail.contains("lock") || detail.contains("LOCK") {
            StoreError::Locked { path, detail }
        } else if error.kind() == ErrorKind::Corruption {
            StoreError::Corrupt { path, detail }
        } else {
            StoreError::Open { path, detail }
        }
    })
}

/// Checks the schema version, writing it into a new database.
fn check_schema(db: &DB, path: &Path) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let meta = db
        .cf_handle(META)
        .ok_or_else(|| corrupt("column family meta is missing".into()))?;
    let stored = db
        .get_cf(meta, SCHEMA_VERSION_KEY)
        .map_err(|error| corrupt(format!("cannot read the schema version: {error}")))?;
    match stored {
        Some(bytes) => {
            let bytes: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                corrupt(format!(
                    "column family meta, key schema_version: {} bytes instead of 4",
                    bytes.len()
                ))
            })?;
            let found = u32::from_be_bytes(bytes);
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found == 0 {
                return Err(corrupt("column family meta: schema version 0".into()));
            }
            Ok(())
        }
        None => {
            // Data without a version was not written by fleetmq: refuse to guess.
            for name in &COLUMN_FAMILIES[1..] {
                let family = db
                    .cf_handle(name)
                    .ok_or_else(|| corrupt(format!("column family {name} is missing")))?;
                if db
                    .iterator_cf(family, rocksdb::IteratorMode::Start)
                    .next()
                    .is_some()
                {
                    return Err(corrupt(format!(
                        "column family {name} holds data but the database has no schema version"
                    )));
                }
            }
            let mut write = WriteOptions::default();
            write.set_sync(true);
            db.put_cf_opt(
                meta,
                SCHEMA_VERSION_KEY,
                SCHEMA_VERSION.to_be_bytes(),
                &write,
            )
            .map_err(|error| StoreError::Open {
                path: path.to_path_buf(),
                detail: format!("cannot write the schema version: {error}"),
            })
        }
    }
}
