//! Durable broker state: the `Store` trait and its two backends.
//!
//! The broker's structures (`crate::broker`, `crate::session`) are the live state; a store
//! receives each change as a `StoreOp` at the point where the change happens, and on
//! start-up hands everything back (`restore`) so the broker can rebuild sessions, routes,
//! queues, inflight messages and retained messages before any listener opens.
//!
//! - [`MemoryStore`] keeps the state in memory (`persistence = false`, and tests).
//! - `RocksStore` writes it to RocksDB, one column family per table, through a single
//!   writer thread with group commit (`SyncMode`). It needs the `rocksdb` cargo feature
//!   (on by default; the fuzz targets build without it, to skip RocksDB's C++).
//!
//! Writes are asynchronous: `submit` never blocks and returns a [`Completion`] that
//! resolves once the write covering it is as durable as the sync mode promises. The
//! broker acknowledges a QoS 1/2 PUBLISH only after awaiting it. The operations of one
//! `submit` are applied atomically, and submissions are applied in the order they were
//! made, so callers submit while holding the lock that orders the change they report.
//!
//! Module map: `record` (the data and operations), `ledger` (what each operation means,
//! shared by both backends), `codec` (the byte layout on disk), `writer` (the writer
//! thread and group commit), `memory`, `rocks`.

// The on-disk layout and the writer thread serve the RocksDB backend; their unit tests run
// in every build.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) mod codec;
mod ledger;
mod memory;
mod record;
#[cfg(feature = "rocksdb")]
mod rocks;
mod shared;
#[cfg(test)]
mod transfer_tests;
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

pub use memory::MemoryStore;
pub use record::{
    InflightState, MessageId, QueuedDelivery, RestoredDelivery, RestoredInflight, RestoredSession,
    RestoredState, SessionRecord, StoreOp, StoredMessage, UnixMillis, WallClock, EXPIRY_NEVER,
};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksMemory, RocksOptions, RocksStore, MIB, SCHEMA_VERSION};
pub use shared::{write_promise, SharedCompletion, WritePromise};

/// The broker's persistence backend.
///
/// All methods take `&self` and are safe to call from any thread; none blocks on I/O
/// except `restore`, which is meant for start-up.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` atomically, after every earlier submission. Never blocks: the
    /// returned completion resolves when the write is durable per the sync mode, or with
    /// an error (then the broker must not acknowledge what depended on it).
    fn submit(&self, ops: Vec<StoreOp>) -> Completion;

    /// Resolves once everything submitted before is on stable storage, whatever the sync
    /// mode (for a graceful shutdown with `sync = "never"`).
    fn flush(&self) -> Completion;

    /// Everything stored, with expiry applied at `now`: expired sessions and expired
    /// queued or retained messages are deleted, and sessions that were connected when
    /// the broker stopped count as disconnected at `now`. Blocks until done.
    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError>;

    /// `restore`, ordered after every earlier submission but answered later: the
    /// returned function blocks until the answer is there (run it off the executor).
    /// Replication takes a consistent copy of everything stored with it.
    fn restore_later(&self, now: UnixMillis) -> RestoreLater {
        let restored = self.restore(now);
        Box::new(move || restored)
    }

    /// A message id not used by any stored body.
    fn next_message_id(&self) -> MessageId;

    fn stats(&self) -> StoreStats;
}

/// A restore answered later (`Store::restore_later`).
pub type RestoreLater = Box<dyn FnOnce() -> Result<RestoredState, StoreError> + Send>;

/// How hard a write is pushed to disk before its completion resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every submission is its own write with its own WAL sync.
    Always,
    /// Group commit: everything queued is written together and covered by one WAL sync.
    #[default]
    Batch,
    /// Written to the WAL without a sync: survives a crash of the broker, not of the
    /// machine.
    Never,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage write failed: {0}")]
    Io(String),
    #[error("storage writer is overloaded: write refused")]
    Overloaded,
    #[error("storage writer has stopped")]
    Closed,
    /// Cluster replication: a write released without a backup's copy stored messages
    /// for sessions that another node has taken over from a copy without them since
    /// (client id, the node that owns it now). The message belongs to those nodes now:
    /// a forwarding node hands it to them instead of failing its publisher.
    #[error("a session moved to another node while its backup was out of reach")]
    SessionMoved(Vec<(String, u64)>),
    #[error("cannot open database {}: it is locked, another process is using it ({detail})", .path.display())]
    Locked { path: PathBuf, detail: String },
    #[error("database {} is corrupt: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("database {} has schema version {found}, newer than version {supported} this build supports", .path.display())]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot open database {}: {detail}", .path.display())]
    Open { path: PathBuf, detail: String },
}

/// Counters of a store, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `submit` calls accepted.
    pub submissions: u64,
    /// Operations in those submissions.
    pub ops: u64,
    /// Writes (batches) made to the backend.
    pub writes: u64,
    /// WAL syncs made.
    pub syncs: u64,
    /// Writes that failed; their submissions completed with an error.
    pub write_errors: u64,
    /// Submissions refused because the writer lagged too far behind.
    pub refused: u64,
    /// Message bodies stored now.
    pub message_bodies: u64,
    /// The latest write failed: the store is not taking writes now (`/health` says so).
    pub failing: bool,
    /// RocksDB's memtables and block cache now (shared by every database of the
    /// process; zero for the memory store).
    pub rocks_memory: RocksMemoryUsage,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    submissions: AtomicU64,
    ops: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    write_errors: AtomicU64,
    refused: AtomicU64,
    message_bodies: AtomicU64,
    failing: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StoreStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            submissions: get(&self.submissions),
            ops: get(&self.ops),
            writes: get(&self.writes),
            syncs: get(&self.syncs),
            write_errors: get(&self.write_errors),
            refused: get(&self.refused),
            message_bodies: get(&self.message_bodies),
            failing: self.failing.load(Ordering::Relaxed),
            rocks_memory: RocksMemoryUsage::default(),
        }
    }
}

/// What RocksDB holds now against the `[storage]` memory budgets, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RocksMemoryUsage {
    /// Memtables of every database sharing the budget, mutable and being flushed.
    pub memtables: u64,
    /// Blocks in the shared block cache.
    pub block_cache: u64,
}

pub type CompletionResult = Result<(), StoreError>;

/// A write whose outcome depends on more than the local store (a cluster node's own
/// write and its backups' acknowledgements), decided where it is waited for: polling
/// the completion polls its parts, so no task of its own stands between the parts and
/// the waiter.
pub trait ComposedWrite: Send + Sync + std::fmt::Debug {
    /// Polls the parts; `Ready` once the outcome is decided.
    fn poll_result(&mut self, context: &mut Context<'_>) -> Poll<CompletionResult>;
    /// The outcome if decided by now, without registering for a wake-up.
    fn try_result(&mut self) -> Option<CompletionResult>;
}

/// Resolves when a submitted write is durable (or failed). Await it from async code;
/// `wait` blocks a plain thread.
#[derive(Debug)]
#[must_use = "a write is only known durable once its completion resolves"]
pub struct Completion {
    state: CompletionState,
}

#[derive(Debug)]
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
enum CompletionState {
    Done(Option<CompletionResult>),
    Waiting(oneshot::Receiver<CompletionResult>),
    /// Another holder's write, shared (`shared`).
    Shared(Option<SharedCompletion>),
    /// Several parts (`composed`); `None` once its result was handed out.
    Composed(Option<Box<dyn ComposedWrite>>),
}

impl Completion {
    pub(crate) fn done(result: CompletionResult) -> Completion {
        Completion {
            state: CompletionState::Done(Some(result)),
        }
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn waiting() -> (oneshot::Sender<CompletionResult>, Completion) {
        let (sender, receiver) = oneshot::channel();
        let completion = Completion {
            state: CompletionState::Waiting(receiver),
        };
        (sender, completion)
    }

    /// Waits for a write that others wait for too (`SharedCompletion`).
    pub fn shared(shared: SharedCompletion) -> Completion {
        Completion {
            state: CompletionState::Shared(Some(shared)),
        }
    }

    /// A write decided by `write`'s parts.
    pub fn composed(write: Box<dyn ComposedWrite>) -> Completion {
        Completion {
            state: CompletionState::Composed(Some(write)),
        }
    }

    /// The result if the write has resolved, without waiting. Each result is handed out
    /// once: call neither this nor `poll` again after it returned `Some`.
    pub fn try_result(&mut self) -> Option<CompletionResult> {
        match &mut self.state {
            CompletionState::Done(result) => Some(result.take().unwrap_or(Err(StoreError::Closed))),
            CompletionState::Waiting(receiver) => match receiver.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
            },
            CompletionState::Shared(shared) => match shared {
                Some(pending) => {
                    let result = pending.try_result()?;
                    *shared = None;
                    Some(result)
                }
                None => Some(Err(StoreError::Closed)),
            },
            CompletionState::Composed(composed) => match composed {
                Some(write) => {
                    let result = write.try_result()?;
                    *composed = None;
                    Some(result)
                }
                None => Some(Err(StoreError::Closed)),
            },
        }
    }

    /// Blocks the current thread until the write is durable. Must not be called on an
    /// async executor thread (tokio panics there); await the completion instead.
    pub fn wait(self) -> CompletionResult {
        match self.state {
            CompletionState::Done(result) => result.unwrap_or(Err(StoreError::Closed)),
            CompletionState::Waiting(receiver) => {
                receiver.blocking_recv().unwrap_or(Err(StoreError::Closed))
            }
            CompletionState::Shared(shared) => {
                shared.map_or(Err(StoreError::Closed), |shared| shared.wait())
            }
            CompletionState::Composed(None) => Err(StoreError::Closed),
            CompletionState::Composed(Some(mut write)) => {
                // Parks this thread between polls; the parts wake it.
                struct Unpark(std::thread::Thread);
                impl std::task::Wake for Unpark {
                    fn wake(self: std::sync::Arc<Self>) {
                        self.0.unpark();
                    }
                }
                let waker =
                    std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
                let mut context = Context::from_waker(&waker);
                loop {
                    if let Poll::Ready(result) = write.poll_result(&mut context) {
                        return result;
                    }
                    std::thread::park();
                }
            }
        }
    }
}

impl Future for Completion {
    type Output = CompletionResult;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<CompletionResult> {
        match &mut self.state {
            CompletionState::Done(result) => {
                Poll::Ready(result.take().unwrap_or(Err(StoreError::Closed)))
            }
            // A dropped sender means the writer went away without answering.
            CompletionState::Waiting(receiver) => Pin::new(receiver)
                .poll(context)
                .map(|result| result.unwrap_or(Err(StoreError::Closed))),
            CompletionState::Shared(shared) => match shared {
                Some(pending) => {
                    let result = std::task::ready!(Pin::new(pending).poll(context));
                    *shared = None;
                    Poll::Ready(result)
                }
                None => Poll::Ready(Err(StoreError::Closed)),
            },
            CompletionState::Composed(composed) => match composed {
                Some(write) => {
                    let result = std::task::ready!(write.poll_result(context));
                    *composed = None;
                    Poll::Ready(result)
                }
                None => Poll::Ready(Err(StoreError::Closed)),
            },
        }
    }
}

/// Defaults of the writer pipeline.
pub mod defaults {
    use std::time::Duration;

    /// Most operations (a message counts one per session it is queued for) written in one
    /// batch.
    pub const MAX_BATCH_OPS: usize = 4096;
    /// How long the writer waits for more submissions before a `batch` write, after the
    /// first one arrived. Zero: submissions pile up while the previous sync is under way,
    /// which groups them in proportion to the load without delaying a lone publisher
    /// (measured: a fixed wait only paid off with dozens of concurrent publishers).
    pub const MAX_BATCH_DELAY: Duration = Duration::ZERO;
    /// Operations waiting for the writer beyond which new messages are refused (state
    /// changes of what is already stored are admitted up to twice this).
    pub const QUEUE_CAPACITY: usize = 65_536;
    /// `[storage] write_buffer_mb`: RocksDB's memtables of every database of the
    /// process together (RocksDB's own default for one column family, now shared).
    pub const WRITE_BUFFER_MB: u32 = 64;
    /// `[storage] block_cache_mb`: one block cache for every database of the process.
    /// Reads are few (start-up, a session read for a failover or an adoption): the
    /// broker serves from memory, the store is written far more than read.
    pub const BLOCK_CACHE_MB: u32 = 16;
    /// The smallest memtable budget: below it nearly every write would flush.
    pub const MIN_WRITE_BUFFER_BYTES: usize = 1 << 20;
    /// The largest memtable of one column family (RocksDB's default).
    pub const FAMILY_WRITE_BUFFER_BYTES: usize = 64 << 20;
}
