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
//! The marks and the signal (a `Notify`) live in one box, allocated by the first mark:
//! every session holds a `Congestion`, most are never congested, and so it is one
//! pointer (8 bytes; `OnceLock` would be 16, and the marks beside it 8 more) that is
//! null until then. A mark allocates the box before it is set, under the session lock,
//! so whoever clears the mark later finds it; without the box there is no mark.

use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::race::OnceBox;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Congestion {
    state: OnceBox<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    /// Woken (all waiters) when the session drained, stalled or went offline.
    space: Notify,
    /// Publishers wait for this session's queue to drain.
    congested: AtomicBool,
    /// A publisher waited the whole timeout: nobody waits for this session until it
    /// drained.
    stalled: AtomicBool,
}

impl Congestion {
    fn marks(&self) -> &Marks {
        self.state.get_or_init(Box::default)
    }

    /// Marks the session congested after a delivery found its queue nearly full; returns
    /// whether the publisher should wait (not while the session is stalled). Called with
    /// the session locked.
    pub fn note(&self) -> bool {
        let marks = self.marks();
        if marks.stalled.load(Ordering::SeqCst) {
            return false;
        }
        marks.congested.store(true, Ordering::SeqCst);
        true
    }

    /// Whether publishers are waiting, or the session stalled: its connection then checks
    /// after each drain whether the queue is relieved.
    pub fn needs_relief(&self) -> bool {
        self.state.get().is_some_and(|marks| {
            marks.congested.load(Ordering::SeqCst) || marks.stalled.load(Ordering::SeqCst)
        })
    }

    /// The queue drained (or the session went offline or ended): clears both marks and
    /// lets every waiting publisher go on. Called with the session locked.
    pub fn relieve(&self) {
        if let Some(marks) = self.state.get() {
            marks.congested.store(false, Ordering::SeqCst);
            marks.stalled.store(false, Ordering::SeqCst);
            marks.space.notify_waiters();
        }
    }

    /// A publisher waited the whole timeout: publishers stop waiting for this session
    /// until it drained, and those waiting now go on.
    pub fn stall(&self) {
        let marks = self.marks();
        marks.stalled.store(true, Ordering::SeqCst);
        marks.congested.store(false, Ordering::SeqCst);
        marks.space.notify_waiters();
    }

    /// A future that resolves on the next `relieve` or `stall`, and whether waiting for
    /// it is needed at all. Take the future first, then check: a wake-up between the two
    /// is not lost.
    pub fn wait_for_space(&self) -> (Notified<'_>, bool) {
        let marks = self.marks();
        let notified = marks.space.notified();
        let congested = marks.congested.load(Ordering::SeqCst);
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
        assert!(!congestion.needs_relief());
        assert!(congestion.state.get().is_none());
    }

    #[test]
    fn a_stalled_session_takes_no_mark_until_relieved() {
        let congestion = Congestion::default();
        congestion.stall();
        assert!(
            congestion.needs_relief(),
            "its connection checks for relief"
        );
        assert!(
            !congestion.note(),
            "publishers do not wait for a stalled session"
        );
        congestion.relieve();
        assert!(!congestion.needs_relief());
        assert!(congestion.note());
        assert!(congestion.needs_relief());
    }

    #[test]
    fn a_congestion_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Congestion>(), 8);
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
