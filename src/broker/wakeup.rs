//! `Wakeup`: how a session wakes the one connection task serving it.
//!
//! A session has at most one current connection, so the wake-up keeps one waker (the
//! waiting task's) and one flag (a delivery arrived since the connection last looked),
//! rather than a `tokio::sync::Notify`, whose `Notified` future (64 bytes, a node of the
//! notifier's waiter list) would be part of every connection's task for as long as it
//! lives. The connection polls `poll_wake` as one of its events; nothing is allocated.
//!
//! A connection that was taken over must not keep the slot from the new one: it is
//! registered only while its generation is current, checked under the slot's lock, and
//! a generation change (`SessionHandle::bump_generation`) wakes whoever is registered
//! after the change is visible. So an old connection either is woken by the change or
//! sees it before it could register, and never overwrites the new connection's waker.
//!
//! A parked connection (`crate::connection`'s parking table: an idle socket without a
//! task) waits here too, as a request to its table ([`UnparkQueue`]) instead of a task's
//! waker, so a delivery, a takeover, a kick or shutdown brings it back the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::lock;

#[derive(Debug, Default)]
pub struct Wakeup {
    /// Who waits for this session, if anyone: a connection task, or a parked connection.
    waiter: Mutex<Option<Waiter>>,
    /// Something was enqueued since the connection last took the wake-up.
    pending: AtomicBool,
}

/// The connection waiting for a session.
#[derive(Debug)]
enum Waiter {
    Task(Waker),
    /// A parked connection: waking it asks its table to unpark `token`.
    Parked {
        queue: Arc<UnparkQueue>,
        token: u64,
    },
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Task(waker) => waker.wake(),
            Waiter::Parked { queue, token } => queue.request(token),
        }
    }
}

/// Requests to unpark connections of one parking table, from whichever thread woke
/// them; the table's task takes them (`take`) when `ready` fires.
#[derive(Debug, Default)]
pub struct UnparkQueue {
    tokens: Mutex<Vec<u64>>,
    pub ready: tokio::sync::Notify,
}

impl UnparkQueue {
    /// Asks the table to unpark the connection parked as `token` (a stale token, of a
    /// connection already unparked, is ignored by the table).
    pub fn request(&self, token: u64) {
        lock(&self.tokens).push(token);
        self.ready.notify_one();
    }

    /// The requests so far, oldest first.
    pub fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.tokens))
    }
}

impl Wakeup {
    /// Wakes the connection to drain the session; if it is not waiting, its next
    /// `poll_wake` returns at once (the wake-up is kept, as a `Notify` permit is).
    pub fn notify_one(&self) {
        // Already pending: whoever set it woke the waiter, and it has not looked yet.
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        self.wake_waiter();
    }

    /// Wakes the waiting connection without leaving a wake-up behind: it then checks
    /// what changed (generation, shutdown).
    pub fn notify_waiters(&self) {
        self.wake_waiter();
    }

    fn wake_waiter(&self) {
        let waiter = lock(&self.waiter).take();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// Whether a wake-up waits to be taken.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Registers a parked connection: the next wake-up asks `queue` to unpark `token`.
    /// Refused (false, nothing registered) when a wake-up is pending or `is_current`
    /// (evaluated under the slot's lock) says the connection is no longer the
    /// session's: it must then stay or become a task and look.
    pub fn park(
        &self,
        queue: &Arc<UnparkQueue>,
        token: u64,
        is_current: impl FnOnce() -> bool,
    ) -> bool {
        let mut waiter = lock(&self.waiter);
        if !is_current() || self.pending.load(Ordering::Acquire) {
            return false;
        }
        *waiter = Some(Waiter::Parked {
            queue: queue.clone(),
            token,
        });
        true
    }

    /// Ready when the session was notified since the last call, or at once when
    /// `is_current` (evaluated under the slot's lock) says the caller's connection is no
    /// longer the session's: it must then look at what changed, and leaves both the slot
    /// and the pending wake-up to the current connection. Otherwise registers the task.
    ///
    /// A task that takes the wake-up leaves no waker behind: it is running, and a
    /// delivery meanwhile only sets the flag instead of scheduling it again. The flag is
    /// taken and the waker stored under the slot's lock, which a notifier takes after
    /// setting the flag, so no wake-up falls between the two.
    pub fn poll_wake(&self, cx: &mut Context<'_>, is_current: impl FnOnce() -> bool) -> Poll<()> {
        let mut waiter = lock(&self.waiter);
        if !is_current() {
            return Poll::Ready(());
        }
        if self.pending.swap(false, Ordering::AcqRel) {
            *waiter = None;
            return Poll::Ready(());
        }
        match &mut *waiter {
            Some(Waiter::Task(waker)) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(Waiter::Task(cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_notification_before_the_wait_is_kept() {
        let wakeup = Wakeup::default();
        wakeup.notify_one();
        poll_fn(|cx| wakeup.poll_wake(cx, || true)).await;
        assert!(
            lock(&wakeup.waiter).is_none(),
            "a running task leaves no waker"
        );
        // Taken: the next poll waits.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wakeup.poll_wake(&mut cx, || true).is_pending());
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken() {
        let wakeup = Arc::new(Wakeup::default());
        let waiting = {
            let wakeup = wakeup.clone();
            tokio::spawn(async move { poll_fn(|cx| wakeup.poll_wake(cx, || true)).await })
        };
        // Wait until the task registered, by watching the slot.
        while lock(&wakeup.waiter).is_none() {
            tokio::task::yield_now().await;
        }
        wakeup.notify_one();
        waiting.await.unwrap();
    }

    #[test]
    fn a_connection_no_longer_current_neither_registers_nor_takes_the_wake_up() {
        let wakeup = Wakeup::default();
        wakeup.notify_one();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wakeup.poll_wake(&mut cx, || false).is_ready());
        assert!(lock(&wakeup.waiter).is_none());
        // The current connection still finds the wake-up.
        assert!(wakeup.poll_wake(&mut cx, || true).is_ready());
    }

    #[test]
    fn a_parked_connection_is_unparked_by_the_next_wake_up() {
        let wakeup = Wakeup::default();
        let queue = Arc::new(UnparkQueue::default());
        assert!(wakeup.park(&queue, 7, || true));
        assert!(queue.take().is_empty());
        wakeup.notify_one();
        assert_eq!(queue.take(), vec![7]);
        // The wake-up stays pending for the task that takes over from the parked
        // connection, and a pending wake-up refuses parking.
        assert!(wakeup.is_pending());
        assert!(!wakeup.park(&queue, 8, || true));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wakeup.poll_wake(&mut cx, || true).is_ready());
    }

    #[test]
    fn a_connection_no_longer_current_does_not_park() {
        let wakeup = Wakeup::default();
        let queue = Arc::new(UnparkQueue::default());
        assert!(!wakeup.park(&queue, 1, || false));
        wakeup.notify_waiters();
        assert!(queue.take().is_empty(), "nothing was registered");
    }

    #[test]
    fn a_task_replaces_a_parked_waiter() {
        let wakeup = Wakeup::default();
        let queue = Arc::new(UnparkQueue::default());
        assert!(wakeup.park(&queue, 1, || true));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wakeup.poll_wake(&mut cx, || true).is_pending());
        wakeup.notify_one();
        assert!(queue.take().is_empty(), "the task was woken, not the table");
    }

    #[test]
    fn notify_waiters_leaves_no_wake_up_behind() {
        let wakeup = Wakeup::default();
        wakeup.notify_waiters();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wakeup.poll_wake(&mut cx, || true).is_pending());
    }
}
