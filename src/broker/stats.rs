//! Broker counters: plain atomics bumped on the hot path, read as a snapshot.
//!
//! Every message the broker does not deliver is counted here by reason, as are the
//! connection events an operator watches (takeovers, slow consumers, violations). A
//! metrics exporter reads `snapshot()`; nothing here allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::DropReason;

#[derive(Debug, Default)]
pub struct Stats {
    pub connections_accepted: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub connections_closed: AtomicU64,
    pub takeovers: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub keep_alive_timeouts: AtomicU64,
    pub protocol_violations: AtomicU64,
    pub messages_received: AtomicU64,
    /// One per (message, session) delivery handed to a session queue.
    pub messages_enqueued: AtomicU64,
    /// Published messages that matched no subscription.
    pub messages_unrouted: AtomicU64,
    pub wills_published: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_expired: AtomicU64,
    pub dropped_offline_qos0: AtomicU64,
    pub dropped_too_large: AtomicU64,
}

/// A point-in-time copy of `Stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub connections_closed: u64,
    pub takeovers: u64,
    pub slow_consumers: u64,
    pub keep_alive_timeouts: u64,
    pub protocol_violations: u64,
    pub messages_received: u64,
    pub messages_enqueued: u64,
    pub messages_unrouted: u64,
    pub wills_published: u64,
    pub sessions_expired: u64,
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_offline_qos0: u64,
    pub dropped_too_large: u64,
}

impl Stats {
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::Expired => &self.dropped_expired,
            DropReason::OfflineQos0 => &self.dropped_offline_qos0,
            DropReason::TooLargeForClient => &self.dropped_too_large,
        };
        Stats::incr(counter);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_rejected: get(&self.connections_rejected),
            connections_closed: get(&self.connections_closed),
            takeovers: get(&self.takeovers),
            slow_consumers: get(&self.slow_consumers),
            keep_alive_timeouts: get(&self.keep_alive_timeouts),
            protocol_violations: get(&self.protocol_violations),
            messages_received: get(&self.messages_received),
            messages_enqueued: get(&self.messages_enqueued),
            messages_unrouted: get(&self.messages_unrouted),
            wills_published: get(&self.wills_published),
            sessions_expired: get(&self.sessions_expired),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_expired: get(&self.dropped_expired),
            dropped_offline_qos0: get(&self.dropped_offline_qos0),
            dropped_too_large: get(&self.dropped_too_large),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason() {
        let stats = Stats::default();
        stats.dropped(DropReason::QueueFull);
        stats.dropped(DropReason::QueueFull);
        stats.dropped(DropReason::Expired);
        stats.dropped(DropReason::OfflineQos0);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.dropped_queue_full, 2);
        assert_eq!(snapshot.dropped_expired, 1);
        assert_eq!(snapshot.dropped_offline_qos0, 1);
        assert_eq!(snapshot.dropped_too_large, 0);
    }
}
