//! Backpressure state of one session: whether publishers are waiting for its queue to
//! drain, and the signal that lets them go on.
//!
//! The router marks a connected session *congested* when a delivery leaves its queue
//! nearly full (`Session::queue_congested`); the publishing connection then stops
//! reading its socket and waits for `space`. The session's own connection, after
//! draining the queue to half (`Session::queue_relieved`), clears the mark and wakes
//! every waiting publisher. A publisher waits at most `limits.slow_consumer_timeout_ms`:
//! if the session has not drained by then, it is marked *stalled*, publishers stop
//! waiting for it (its messages are dropped as before) until it catches up.
//!
//! Marking and clearing happen with the session locked, beside the queue check they
//! depend on, so a mark is never set after the drain that should have cleared it.
//!
//! The signal (a `Notify`, 32 bytes) is allocated by the first mark: every session holds
//! a `Congestion`, and most are never congested. A mark allocates it before it is set,
//! under the session lock, so whoever clears the mark later finds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Congestion {
    /// Woken (all waiters) when the session drained, stalled or went offline.
    space: OnceLock<Box<Notify>>,
    /// Publishers wait for this session's queue to drain.
    congested: AtomicBool,
    /// A publisher waited the whole timeout: nobody waits for this session until it
    /// drained.
    stalled: AtomicBool,
}

impl Congestion {
    /// Marks the session congested after a delivery found its queue nearly full; returns
    /// whether the publisher should wait (not while the session is stalled). Called with
    /// the session locked.
    pub fn note(&self) -> bool {
        if self.stalled.load(Ordering::SeqCst) {
            return false;
        }
        self.space.get_or_init(Box::default);
        self.congested.store(true, Ordering::SeqCst);
        true
    }

    /// Whether publishers are waiting, or the session stalled: its connection then checks
    /// after each drain whether the queue is relieved.
    pub fn needs_relief(&self) -> bool {
        self.congested.load(Ordering::SeqCst) || self.stalled.load(Ordering::SeqCst)
    }

    /// The queue drained (or the session went offline or ended): clears both marks and
    /// lets every waiting publisher go on. Called with the session locked.
    pub fn relieve(&self) {
        self.congested.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
        if let Some(space) = self.space.get() {
            space.notify_waiters();
        }
    }

    /// A publisher waited the whole timeout: publishers stop waiting for this session
    /// until it drained, and those waiting now go on.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        self.congested.store(false, Ordering::SeqCst);
        if let Some(space) = self.space.get() {
            space.notify_waiters();
        }
    }

    /// A future that resolves on the next `relieve` or `stall`, and whether waiting for
    /// it is needed at all. Take the future first, then check: a wake-up between the two
    /// is not lost.
    pub fn wait_for_space(&self) -> (Notified<'_>, bool) {
        let notified = self.space.get_or_init(Box::default).notified();
        let congested = self.congested.load(Ordering::SeqCst);
        (notified, congested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relief_without_a_mark_allocates_nothing() {
        let congestion = Congestion::default();
        congestion.relieve();
        congestion.stall();
        assert!(congestion.space.get().is_none());
    }

    #[tokio::test]
    async fn a_publisher_waiting_after_a_mark_is_woken_by_relief() {
        let congestion = std::sync::Arc::new(Congestion::default());
        assert!(congestion.note());
        let (space, congested) = congestion.wait_for_space();
        assert!(congested);
        let relieving = congestion.clone();
        let relief = tokio::spawn(async move { relieving.relieve() });
        tokio::time::timeout(std::time::Duration::from_secs(10), space)
            .await
            .expect("relief wakes the waiting publisher");
        relief.await.expect("the relieving task ends");
        assert!(!congestion.needs_relief());
    }
}
