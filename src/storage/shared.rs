//! A write's completion that several tasks can wait for, from before the write is
//! submitted.
//!
//! An incoming QoS 2 packet id is in the session, in memory, as soon as its PUBLISH is
//! handled; it is in the store only once the write carrying it and its message
//! completes. A resend of that PUBLISH in between (after a takeover, on the new
//! connection) is a duplicate and is not routed again, but its PUBREC promises just what
//! the first PUBREC promises, so it must wait for the same write: were it sent at once,
//! a crash before the write completed would lose a message the client was told the
//! broker has. The connection handling the PUBLISH makes a `WritePromise` and its
//! `SharedCompletion` under the session lock, where the packet id becomes visible, and
//! fulfils the promise with the write's completions once submitted; the session keeps the
//! `SharedCompletion` beside the packet id for any PUBREC that follows. A promise dropped
//! unfulfilled (the connection ended before submitting) resolves as a failed write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::{FutureExt, Shared};
use tokio::sync::oneshot;

use super::{Completion, CompletionResult, StoreError};

/// The submitting side: hands over the completions of the write once it is submitted.
#[derive(Debug)]
pub struct WritePromise(oneshot::Sender<Vec<Completion>>);

/// The waiting side, cloned by every waiter: resolves once the promised writes have all
/// resolved, with the first failure if any.
#[derive(Clone)]
pub struct SharedCompletion(Shared<PromisedWrites>);

impl std::fmt::Debug for SharedCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedCompletion")
            .field(&self.0.peek())
            .finish()
    }
}

/// A promise of a write, and the completion every waiter clones.
pub fn write_promise() -> (WritePromise, SharedCompletion) {
    let (sender, receiver) = oneshot::channel();
    let writes = PromisedWrites::Unsubmitted(receiver);
    (WritePromise(sender), SharedCompletion(writes.shared()))
}

impl WritePromise {
    /// The write was submitted: waiters now wait for `writes` (none: nothing to wait for).
    pub fn fulfil(self, writes: Vec<Completion>) {
        // Nobody waiting any more is fine.
        let _ = self.0.send(writes);
    }
}

impl SharedCompletion {
    /// The result, if the writes have resolved; polls without registering a wake-up.
    pub fn try_result(&mut self) -> Option<CompletionResult> {
        if let Some(result) = self.0.peek() {
            return Some(result.clone());
        }
        // A clone that returned its result forgets it; poll a fresh clone instead.
        let mut probe = self.0.clone();
        match Pin::new(&mut probe).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }

    /// Blocks the current thread until the writes resolved (not on an async executor).
    pub fn wait(self) -> CompletionResult {
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut shared = self.0;
        loop {
            if let Poll::Ready(result) = Pin::new(&mut shared).poll(&mut context) {
                return result;
            }
            std::thread::park();
        }
    }
}

impl Future for SharedCompletion {
    type Output = CompletionResult;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<CompletionResult> {
        Pin::new(&mut self.0).poll(context)
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// What the shared future polls: first the promise, then each write in turn.
enum PromisedWrites {
    Unsubmitted(oneshot::Receiver<Vec<Completion>>),
    Submitted {
        writes: Vec<Completion>,
        /// How many of `writes` have resolved.
        settled: usize,
        failure: Option<StoreError>,
    },
}

impl Future for PromisedWrites {
    type Output = CompletionResult;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<CompletionResult> {
        let this = &mut *self;
        loop {
            match this {
                PromisedWrites::Unsubmitted(receiver) => {
                    let writes = match std::task::ready!(Pin::new(receiver).poll(context)) {
                        Ok(writes) => writes,
                        // Dropped unfulfilled: nothing was written.
                        Err(_) => return Poll::Ready(Err(StoreError::Closed)),
                    };
                    *this = PromisedWrites::Submitted {
                        writes,
                        settled: 0,
                        failure: None,
                    };
                }
                PromisedWrites::Submitted {
                    writes,
                    settled,
                    failure,
                } => {
                    while *settled < writes.len() {
                        let result =
                            std::task::ready!(Pin::new(&mut writes[*settled]).poll(context));
                        *settled += 1;
                        if let Err(error) = result {
                            failure.get_or_insert(error);
                        }
                    }
                    return Poll::Ready(match failure.take() {
                        Some(error) => Err(error),
                        None => Ok(()),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_see_the_promised_writes_resolve_in_any_order_of_events() {
        let (promise, shared) = write_promise();
        let mut early = shared.clone();
        assert!(early.try_result().is_none(), "nothing submitted yet");
        let (sender, write) = Completion::waiting();
        promise.fulfil(vec![Completion::done(Ok(())), write]);
        assert!(early.try_result().is_none(), "submitted, not yet durable");
        let late = shared.clone();
        sender.send(Ok(())).unwrap();
        assert_eq!(early.try_result().map(|r| r.is_ok()), Some(true));
        assert!(late.wait().is_ok());
        assert!(shared.wait().is_ok());
    }

    #[test]
    fn a_failed_write_or_a_dropped_promise_is_a_failure() {
        let (promise, mut shared) = write_promise();
        promise.fulfil(vec![Completion::done(Err(StoreError::Overloaded))]);
        assert!(matches!(
            shared.try_result(),
            Some(Err(StoreError::Overloaded))
        ));
        let (promise, shared) = write_promise();
        drop(promise);
        assert!(matches!(shared.wait(), Err(StoreError::Closed)));
    }
}
