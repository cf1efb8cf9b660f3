//! The writer pipeline against a scripted backend: grouping, sync counts, failures,
//! the queue bound and draining on drop. A gate holds the backend inside a commit, so
//! the tests decide what is queued meanwhile instead of relying on timing.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::*;
use crate::storage::record::RestoredState;

#[derive(Default)]
struct Log {
    /// Per commit: number of submissions, sync flag.
    commits: Vec<(usize, bool)>,
    syncs: usize,
    fail_next: bool,
}

struct Scripted {
    log: Arc<Mutex<Log>>,
    /// When set, each commit first reports it started, then waits for a release.
    gate: Option<(Sender<()>, Receiver<()>)>,
}

impl Committer for Scripted {
    fn commit(&mut self, groups: &[Vec<StoreOp>], sync: bool) -> Result<(), StoreError> {
        if let Some((started, release)) = &self.gate {
            let _ = started.send(());
            let _ = release.recv();
        }
        let mut log = self.log.lock().unwrap();
        if std::mem::take(&mut log.fail_next) {
            return Err(StoreError::Io("disk full".into()));
        }
        log.commits.push((groups.len(), sync));
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.log.lock().unwrap().syncs += 1;
        Ok(())
    }
    fn restore(&mut self, _now: UnixMillis) -> Result<RestoredState, StoreError> {
        Ok(RestoredState::default())
    }
    fn body_count(&self) -> usize {
        0
    }
}

struct Harness {
    writer: Writer,
    log: Arc<Mutex<Log>>,
    counters: Arc<Counters>,
    started: Option<Receiver<()>>,
    release: Option<Sender<()>>,
}

fn harness(sync: SyncMode, capacity: usize, gated: bool) -> Harness {
    let log = Arc::new(Mutex::new(Log::default()));
    let (started_tx, started_rx) = channel();
    let (release_tx, release_rx) = channel();
    let committer = Scripted {
        log: log.clone(),
        gate: gated.then_some((started_tx, release_rx)),
    };
    let options = WriterOptions {
        sync,
        max_batch_ops: 1000,
        max_batch_delay: Duration::ZERO,
        capacity,
    };
    let counters = Arc::new(Counters::default());
    let writer = Writer::start(committer, options, counters.clone(), None).unwrap();
    Harness {
        writer,
        log,
        counters,
        started: gated.then_some(started_rx),
        release: gated.then_some(release_tx),
    }
}

impl Harness {
    fn wait_started(&self) {
        self.started.as_ref().unwrap().recv().unwrap();
    }
    fn release(&self, commits: usize) {
        for _ in 0..commits {
            self.release.as_ref().unwrap().send(()).unwrap();
        }
    }
}

fn state_op(packet_id: u16) -> Vec<StoreOp> {
    vec![StoreOp::RemoveIncomingQos2 {
        client_id: "c".into(),
        packet_id,
    }]
}

fn retained_op() -> Vec<StoreOp> {
    vec![StoreOp::ClearRetained { topic: "t".into() }, {
        let message = crate::storage::record::StoredMessage {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            cluster_id: None,
        };
        StoreOp::SetRetained(Arc::new(message))
    }]
}

#[test]
fn submissions_queued_during_a_sync_share_the_next_one() {
    let h = harness(SyncMode::Batch, 10_000, true);
    let first = h.writer.submit(state_op(1));
    h.wait_started();
    let rest: Vec<Completion> = (2..=101).map(|id| h.writer.submit(state_op(id))).collect();
    h.release(2);
    first.wait().unwrap();
    for completion in rest {
        completion.wait().unwrap();
    }
    assert_eq!(h.log.lock().unwrap().commits, vec![(1, true), (100, true)]);
    let stats = h.counters.snapshot();
    assert_eq!((stats.submissions, stats.writes, stats.syncs), (101, 2, 2));
}

#[test]
fn always_mode_syncs_every_submission_and_never_mode_none() {
    let h = harness(SyncMode::Always, 10_000, true);
    let first = h.writer.submit(state_op(1));
    h.wait_started();
    let rest: Vec<Completion> = (2..=4).map(|id| h.writer.submit(state_op(id))).collect();
    h.release(4);
    first.wait().unwrap();
    rest.into_iter().for_each(|c| c.wait().unwrap());
    assert_eq!(h.log.lock().unwrap().commits, vec![(1, true); 4]);

    let h = harness(SyncMode::Never, 10_000, false);
    h.writer.submit(state_op(1)).wait().unwrap();
    assert_eq!(h.log.lock().unwrap().commits, vec![(1, false)]);
    assert_eq!(h.log.lock().unwrap().syncs, 0);
    h.writer.flush().wait().unwrap();
    assert_eq!(h.log.lock().unwrap().syncs, 1);
    assert_eq!(h.counters.snapshot().syncs, 1);
}

#[test]
fn a_failed_write_fails_its_waiters_and_the_writer_carries_on() {
    let h = harness(SyncMode::Batch, 10_000, false);
    h.log.lock().unwrap().fail_next = true;
    let failed = h.writer.submit(state_op(1)).wait();
    assert!(matches!(failed, Err(StoreError::Io(ref detail)) if detail == "disk full"));
    // `/health` reports the store as failing until a write succeeds again.
    assert!(h.counters.snapshot().failing);
    h.writer.submit(state_op(2)).wait().unwrap();
    let stats = h.counters.snapshot();
    assert_eq!((stats.write_errors, stats.writes, stats.syncs), (1, 2, 1));
    assert!(!stats.failing);
}

#[test]
fn new_messages_are_refused_when_the_queue_is_full_but_state_changes_still_enter() {
    let h = harness(SyncMode::Batch, 4, true);
    let first = h.writer.submit(state_op(0));
    h.wait_started();
    let queued: Vec<Completion> = (1..=4).map(|id| h.writer.submit(state_op(id))).collect();
    let refused = h.writer.submit(retained_op()).wait();
    assert!(matches!(refused, Err(StoreError::Overloaded)));
    let admitted: Vec<Completion> = (5..=8).map(|id| h.writer.submit(state_op(id))).collect();
    assert!(matches!(
        h.writer.submit(state_op(9)).wait(),
        Err(StoreError::Overloaded)
    ));
    assert_eq!(h.counters.snapshot().refused, 2);
    h.release(2);
    first.wait().unwrap();
    queued
        .into_iter()
        .chain(admitted)
        .for_each(|c| c.wait().unwrap());
    // Once drained, new messages are admitted again.
    let retained = h.writer.submit(retained_op());
    h.wait_started();
    h.release(1);
    retained.wait().unwrap();
}

#[tokio::test]
async fn dropping_the_writer_completes_what_was_queued() {
    let h = harness(SyncMode::Batch, 10_000, true);
    let first = h.writer.submit(state_op(1));
    h.wait_started();
    let second = h.writer.submit(state_op(2));
    h.release(2);
    let Harness { writer, log, .. } = h;
    tokio::task::spawn_blocking(move || drop(writer))
        .await
        .unwrap();
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(log.lock().unwrap().commits.len(), 2);
}
