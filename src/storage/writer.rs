//! The single writer thread and its bounded submission queue (group commit).
//!
//! Callers push requests into a queue under a mutex and return at once with a
//! `Completion`; the queue order is the order in which changes are applied. The writer
//! thread takes everything queued (up to `max_batch_ops`, after waiting at most
//! `max_batch_delay` for more in `batch` mode), writes it as one atomic batch with one WAL
//! sync, and then completes every waiter of that batch. In `always` mode each submission
//! is its own synced write; in `never` mode batches are written without a sync.
//!
//! A failed write completes its waiters with the error and is logged and counted; the
//! thread carries on with the next batch. The backend (`Committer`) repairs its own index
//! after a failure. Dropping the `Writer` drains what is queued, then stops the thread.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::record::{RestoredState, StoreOp, UnixMillis};
use super::{Completion, Counters, StoreError, SyncMode};
use crate::metrics::StorageMetrics;

/// What the writer thread drives: a backend that applies operations.
pub(crate) trait Committer: Send + 'static {
    /// Applies every operation of every group in one atomic write; with `sync`, durable
    /// on return. On error nothing of the write is applied.
    fn commit(&mut self, groups: &[Vec<StoreOp>], sync: bool) -> Result<(), StoreError>;
    /// Makes earlier unsynced writes durable.
    fn sync(&mut self) -> Result<(), StoreError>;
    fn restore(&mut self, now: UnixMillis) -> Result<RestoredState, StoreError>;
    fn body_count(&self) -> usize;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterOptions {
    pub(crate) sync: SyncMode,
    pub(crate) max_batch_ops: usize,
    pub(crate) max_batch_delay: Duration,
    pub(crate) capacity: usize,
}

type Done = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    Write {
        ops: Vec<StoreOp>,
        done: Done,
    },
    Flush {
        done: Done,
    },
    Restore {
        now: UnixMillis,
        reply: mpsc::Sender<Result<RestoredState, StoreError>>,
    },
}

impl Request {
    fn weight(&self) -> usize {
        match self {
            Request::Write { ops, .. } => ops.iter().map(StoreOp::weight).sum::<usize>().max(1),
            Request::Flush { .. } | Request::Restore { .. } => 1,
        }
    }
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// Sum of the weights of `requests`.
    weight: usize,
    /// Set when the store is dropped or the thread ended; nothing more is accepted.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wakeup: Condvar,
    counters: Arc<Counters>,
    options: WriterOptions,
    /// Write and sync latency histograms, when the broker exports metrics.
    latency: Option<StorageMetrics>,
}

impl Shared {
    /// The queue stays consistent whatever panicked while holding it: it is plain data.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(
        committer: impl Committer,
        options: WriterOptions,
        counters: Arc<Counters>,
        latency: Option<StorageMetrics>,
    ) -> std::io::Result<Writer> {
        counters.message_bodies.store(
            committer.body_count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wakeup: Condvar::new(),
            counters,
            options,
            latency,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fleetmq-store".into())
            .spawn(move || run(&thread_shared, committer))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn submit(&self, ops: Vec<StoreOp>) -> Completion {
        let limit = if ops.iter().any(StoreOp::brings_new_data) {
            self.shared.options.capacity
        } else {
            self.shared.options.capacity.saturating_mul(2)
        };
        let count = ops.len() as u64;
        let (done, completion) = Completion::waiting();
        if let Err(error) = self.push(Request::Write { ops, done }, limit) {
            return Completion::done(Err(error));
        }
        let counters = &self.shared.counters;
        Counters::add(&counters.submissions, 1);
        Counters::add(&counters.ops, count);
        completion
    }

    pub(crate) fn flush(&self) -> Completion {
        let (done, completion) = Completion::waiting();
        match self.push(Request::Flush { done }, usize::MAX) {
            Ok(()) => completion,
            Err(error) => Completion::done(Err(error)),
        }
    }

    pub(crate) fn restore(&self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.push(Request::Restore { now, reply }, usize::MAX)?;
        answer.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// `restore`, queued now and answered later.
    pub(crate) fn restore_later(&self, now: UnixMillis) -> super::RestoreLater {
        let (reply, answer) = mpsc::channel();
        let queued = self.push(Request::Restore { now, reply }, usize::MAX);
        Box::new(move || {
            queued?;
            answer.recv().unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Queues a request unless the queue already holds `limit` or more. The bound is on
    /// what waits, so one submission larger than the limit still gets in when it is alone.
    fn push(&self, request: Request, limit: usize) -> Result<(), StoreError> {
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(StoreError::Closed);
            }
            if queue.weight >= limit {
                drop(queue);
                Counters::add(&self.shared.counters.refused, 1);
                return Err(StoreError::Overloaded);
            }
            queue.weight += request.weight();
            queue.requests.push_back(request);
        }
        self.shared.wakeup.notify_one();
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wakeup.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("storage writer thread panicked");
            }
        }
    }
}

/// Marks the queue closed when the thread ends, even by a panic, so submitters get an
/// error instead of waiting forever.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        // Dropping the requests drops their senders: their completions resolve `Closed`.
        queue.requests.clear();
        queue.weight = 0;
    }
}

fn run(shared: &Shared, mut committer: impl Committer) {
    let _close = CloseOnExit(shared);
    let mut requests = Vec::new();
    while take_batch(shared, &mut requests) {
        process(shared, &mut committer, &mut requests);
    }
    if shared.options.sync == SyncMode::Never {
        if let Err(error) = committer.sync() {
            tracing::error!(%error, "storage: final sync at shutdown failed");
        }
    }
}

/// Waits for requests and moves a batch of them into `into`. Returns false once the
/// queue is closed and empty.
fn take_batch(shared: &Shared, into: &mut Vec<Request>) -> bool {
    let options = &shared.options;
    let mut queue = shared.lock();
    while queue.requests.is_empty() {
        if queue.closed {
            return false;
        }
        queue = shared
            .wakeup
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if options.sync == SyncMode::Batch && !options.max_batch_delay.is_zero() {
        let deadline = Instant::now() + options.max_batch_delay;
        loop {
            let now = Instant::now();
            if now >= deadline || queue.weight >= options.max_batch_ops || queue.closed {
                break;
            }
            queue = shared
                .wakeup
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    let mut taken = 0;
    while let Some(front) = queue.requests.front() {
        let weight = front.weight();
        if taken > 0 && taken + weight > options.max_batch_ops {
            break;
        }
        taken += weight;
        if let Some(request) = queue.requests.pop_front() {
            into.push(request);
        }
    }
    queue.weight = queue.weight.saturating_sub(taken);
    true
}

fn process(shared: &Shared, committer: &mut impl Committer, requests: &mut Vec<Request>) {
    let mode = shared.options.sync;
    let mut groups = Vec::new();
    let mut waiters = Vec::new();
    for request in requests.drain(..) {
        match request {
            Request::Write { ops, done } => {
                groups.push(ops);
                waiters.push(done);
                if mode == SyncMode::Always {
                    commit(shared, committer, &mut groups, &mut waiters);
                }
            }
            Request::Flush { done } => {
                commit(shared, committer, &mut groups, &mut waiters);
                // Writes in `always` and `batch` mode were synced when written.
                let result = if mode == SyncMode::Never {
                    let started = Instant::now();
                    let result = committer.sync();
                    if let Some(latency) = &shared.latency {
                        latency.record_sync(started.elapsed());
                    }
                    if result.is_ok() {
                        Counters::add(&shared.counters.syncs, 1);
                    }
                    result
                } else {
                    Ok(())
                };
                let _ = done.send(result);
            }
            Request::Restore { now, reply } => {
                commit(shared, committer, &mut groups, &mut waiters);
                let restored = committer.restore(now);
                // Counters first: whoever gets the answer may read them at once.
                update_bodies(shared, committer);
                let _ = reply.send(restored);
            }
        }
    }
    commit(shared, committer, &mut groups, &mut waiters);
}

/// Writes the pending groups as one batch and completes their waiters.
fn commit(
    shared: &Shared,
    committer: &mut impl Committer,
    groups: &mut Vec<Vec<StoreOp>>,
    waiters: &mut Vec<Done>,
) {
    if groups.is_empty() {
        return;
    }
    let sync = shared.options.sync != SyncMode::Never;
    let started = Instant::now();
    let result = committer.commit(groups, sync);
    if let Some(latency) = &shared.latency {
        // A synced write is timed as both: its latency is the sync's.
        let elapsed = started.elapsed();
        latency.record_write(elapsed);
        if sync {
            latency.record_sync(elapsed);
        }
    }
    let counters = &shared.counters;
    Counters::add(&counters.writes, 1);
    counters
        .failing
        .store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
    match &result {
        Ok(()) if sync => Counters::add(&counters.syncs, 1),
        Ok(()) => {}
        Err(error) => {
            Counters::add(&counters.write_errors, 1);
            tracing::error!(%error, submissions = waiters.len(), "storage write failed; not acknowledged");
        }
    }
    update_bodies(shared, committer);
    groups.clear();
    for done in waiters.drain(..) {
        // A waiter that went away no longer needs the answer.
        let _ = done.send(result.clone());
    }
}

fn update_bodies(shared: &Shared, committer: &impl Committer) {
    shared.counters.message_bodies.store(
        committer.body_count() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
