//! Backpressure on publishers: a connection whose message left a subscriber's queue
//! nearly full stops reading its socket until that subscriber has drained, so TCP flow
//! control slows the publisher down instead of the broker dropping its messages.
//!
//! The wait is bounded by `limits.slow_consumer_timeout_ms`: a subscriber that has not
//! drained by then is marked stalled (see `crate::broker::congestion`), publishers stop
//! waiting for it and its messages are dropped as before, and the slow-consumer rule of
//! its own connection applies to it.

use std::sync::Arc;
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
    deadline: Instant,
}

impl Paused {
    pub(super) fn new(target: Arc<SessionHandle>, timeout: Duration) -> Paused {
        Paused {
            target,
            deadline: Instant::now() + timeout,
        }
    }

    /// Resolves once the subscriber has room again, or at the deadline.
    pub(super) async fn wait(&self) -> Resume {
        let (space, congested) = self.target.congestion.wait_for_space();
        if !congested {
            return Resume::Space;
        }
        tokio::select! {
            _ = space => Resume::Space,
            _ = tokio::time::sleep_until(self.deadline) => Resume::TimedOut,
        }
    }

    /// The subscriber did not drain in time: nobody waits for it until it does.
    pub(super) fn give_up(self) {
        self.target.congestion.stall();
    }
}

/// Waits for `paused` if there is one (the caller enables the branch only then).
pub(super) async fn wait(paused: Option<&Paused>) -> Resume {
    match paused {
        Some(paused) => paused.wait().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline` if there is one, forever otherwise.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
