//! The in-memory store: the same semantics as the RocksDB store, nothing on disk.
//!
//! Used with `persistence = false` (a restart loses everything, as with Mosquitto
//! without persistence) and as the reference backend of the storage tests. Operations are
//! applied under a mutex when submitted, so every completion is ready at once; message
//! bodies are shared with the broker's own `Arc`s, not copied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ledger::{Ledger, NoMutations};
use super::record::{MessageId, RestoredState, StoreOp, UnixMillis};
use super::{Completion, Counters, Store, StoreError, StoreStats};

#[derive(Debug)]
pub struct MemoryStore {
    ledger: Mutex<Ledger>,
    next_message_id: AtomicU64,
    counters: Arc<Counters>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            ledger: Mutex::new(Ledger::new(true)),
            next_message_id: AtomicU64::new(1),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The ledger is plain data, consistent between operations whatever panicked.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps the id allocator above every id a caller chose itself.
pub(crate) fn note_message_ids(next: &AtomicU64, ops: &[StoreOp]) {
    for op in ops {
        if let StoreOp::Accept { message_id, .. } = op {
            next.fetch_max(message_id.saturating_add(1), Ordering::Relaxed);
        }
    }
}

impl Store for MemoryStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        note_message_ids(&self.next_message_id, &ops);
        let bodies = {
            let mut ledger = self.ledger();
            for op in &ops {
                ledger.apply(op, &mut NoMutations);
            }
            ledger.body_count()
        };
        let counters = &self.counters;
        Counters::add(&counters.submissions, 1);
        Counters::add(&counters.ops, ops.len() as u64);
        Counters::add(&counters.writes, 1);
        counters
            .message_bodies
            .store(bodies as u64, Ordering::Relaxed);
        Completion::done(Ok(()))
    }

    fn flush(&self) -> Completion {
        Completion::done(Ok(()))
    }

    fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        let mut ledger = self.ledger();
        let (ops, expired) = ledger.expiry_ops(now);
        for op in &ops {
            ledger.apply(op, &mut NoMutations);
        }
        self.counters
            .message_bodies
            .store(ledger.body_count() as u64, Ordering::Relaxed);
        let mut state = ledger.snapshot();
        state.expired_sessions = expired;
        Ok(state)
    }

    fn next_message_id(&self) -> MessageId {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
}
