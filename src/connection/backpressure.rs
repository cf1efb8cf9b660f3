//! Backpressure on publishers: a connection whose message left a subscriber's queue
//! nearly full stops reading its socket until that subscriber has drained, so TCP flow
//! control slows the publisher down instead of the broker dropping its messages.
//!
//! The wait is bounded by `limits.slow_consumer_timeout_ms`: a subscriber that has not
//! drained by then is marked stalled (see `crate::broker::congestion`), publishers stop
//! waiting for it and its messages are dropped as before, and the slow-consumer rule of
//! its own connection applies to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::SessionHandle;

/// Why a paused publisher goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// The subscriber drained (or stalled, or went away).
    Space,
    /// The timeout passed first.
    TimedOut,
}

/// A publisher's connection waiting for one congested subscriber.
pub(super) struct Paused {
    target: Arc<SessionHandle>,
    /// Resolves once the subscriber has room again, or at the deadline. Boxed and made
    /// once per pause: a connection that is not paused holds none of it.
    resume: Pin<Box<dyn Future<Output = Resume> + Send>>,
}

impl Paused {
    pub(super) fn new(target: Arc<SessionHandle>, timeout: Duration) -> Paused {
        let deadline = Instant::now() + timeout;
        let waited = target.clone();
        let resume = Box::pin(async move {
            let (space, congested) = waited.congestion.wait_for_space();
            if !congested {
                return Resume::Space;
            }
            tokio::select! {
                _ = space => Resume::Space,
                _ = tokio::time::sleep_until(deadline) => Resume::TimedOut,
            }
        });
        Paused { target, resume }
    }

    /// Ready once the subscriber has room again, or at the deadline.
    pub(super) fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<Resume> {
        self.resume.as_mut().poll(cx)
    }

    /// The subscriber did not drain in time: nobody waits for it until it does.
    pub(super) fn give_up(self) {
        self.target.congestion.stall();
    }
}
