//! Where the broker records state changes (sessions, subscriptions, retained messages,
//! accepted messages) so that a durable backend can make them survive the process.
//!
//! The broker's own structures (`crate::broker`) are the live state; a `Store` only
//! receives events describing each change, at the point where the change happens. The
//! only implementation today is `MemoryStore`, which keeps nothing: with it, a restart
//! loses every session and retained message, exactly like a broker without persistence.
//! A durable backend implements the same trait and adds restore on start-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::message::Message;
use crate::session::SubscriptionEntry;

/// One change of broker state, borrowed from the broker for the duration of the call.
#[derive(Debug, Clone, Copy)]
pub enum StoreEvent<'a> {
    /// A session was created for `client_id` (first connect or clean start).
    SessionCreated {
        client_id: &'a str,
        expiry: Duration,
    },
    /// A session ended (expired, discarded by a clean start, or ended at disconnect).
    SessionRemoved {
        client_id: &'a str,
    },
    SubscriptionAdded {
        client_id: &'a str,
        filter: &'a str,
        entry: &'a SubscriptionEntry,
    },
    SubscriptionRemoved {
        client_id: &'a str,
        filter: &'a str,
    },
    /// A retained message was stored (replacing any previous one on its topic).
    RetainedSet {
        message: &'a Arc<Message>,
    },
    /// A retained message was cleared by an empty retained PUBLISH.
    RetainedCleared {
        topic: &'a str,
    },
    /// An incoming QoS 1/2 message was routed to `deliveries` session queues. A durable
    /// store must hold it before the broker acknowledges it to the publisher.
    MessageAccepted {
        message: &'a Arc<Message>,
        deliveries: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// The narrow seam between the broker and persistence. Calls are synchronous and must
/// be quick: the broker makes them on its connection tasks.
pub trait Store: Send + Sync + 'static {
    fn record(&self, event: StoreEvent<'_>) -> Result<(), StoreError>;
}

/// Keeps nothing. Counts the events it saw, so the broker's calls into the seam can be
/// observed in tests and by operators.
#[derive(Debug, Default)]
pub struct MemoryStore {
    events: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of events recorded since start.
    pub fn events_recorded(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl Store for MemoryStore {
    fn record(&self, _event: StoreEvent<'_>) -> Result<(), StoreError> {
        self.events.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_accepts_and_counts_events() {
        let store = MemoryStore::new();
        store
            .record(StoreEvent::SessionCreated {
                client_id: "c1",
                expiry: Duration::ZERO,
            })
            .unwrap();
        store
            .record(StoreEvent::RetainedCleared { topic: "a/b" })
            .unwrap();
        assert_eq!(store.events_recorded(), 2);
    }
}
