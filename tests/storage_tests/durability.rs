//! Group commit under concurrency, from async tasks as the broker's connections submit,
//! and what each sync mode costs (run with `--nocapture` to see the numbers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmq::protocol::QoS;
use fleetmq::storage::{
    RocksOptions, RocksStore, Store, StoreOp, StoreStats, SyncMode, EXPIRY_NEVER,
};

use crate::common::*;

/// `tasks` async submitters, each accepting `per_task` messages for its own session and
/// awaiting each one before the next, as a publishing connection awaits its PUBACK.
async fn publish_concurrently(store: Arc<RocksStore>, tasks: usize, per_task: usize) -> Duration {
    let setup: Vec<StoreOp> = (0..tasks)
        .map(|task| StoreOp::PutSession(session(&format!("sub-{task}"), EXPIRY_NEVER)))
        .collect();
    store.submit(setup).await.unwrap();
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let client = format!("sub-{task}");
            let body = message("fleet/telemetry", "{\"speed\":87}");
            for _ in 0..per_task {
                let message_id = store.next_message_id();
                let op = StoreOp::Accept {
                    message_id,
                    message: body.clone(),
                    deliveries: vec![delivery(&client, QoS::AtLeastOnce)],
                };
                store.submit(vec![op]).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    started.elapsed()
}

fn open_with(options: RocksOptions, dir: &tempfile::TempDir) -> Arc<RocksStore> {
    let name = format!("{:?}-{}", options.sync, options.max_batch_delay.as_micros());
    Arc::new(RocksStore::open(dir.path().join(name), options).unwrap())
}

fn open(sync: SyncMode, dir: &tempfile::TempDir) -> Arc<RocksStore> {
    let options = RocksOptions {
        sync,
        ..RocksOptions::default()
    };
    open_with(options, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_share_syncs_in_batch_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(SyncMode::Batch, &dir);
    publish_concurrently(store.clone(), 64, 20).await;
    let stats = store.stats();
    let accepted = 64 * 20;
    assert_eq!(stats.submissions, accepted + 1);
    assert_eq!(stats.write_errors, 0);
    assert_eq!(stats.message_bodies, accepted);
    // Every write in batch mode is synced, and each covered many submissions.
    assert_eq!(stats.syncs, stats.writes);
    assert!(
        stats.syncs * 8 < stats.submissions,
        "{} syncs for {} submissions",
        stats.syncs,
        stats.submissions
    );
    // Everything acknowledged is on disk.
    drop(Arc::try_unwrap(store).ok().unwrap());
    let reopened = open(SyncMode::Batch, &dir);
    let state = reopened.restore(0).unwrap();
    let queued: usize = state.sessions.iter().map(|s| s.queue.len()).sum();
    assert_eq!(queued as u64, accepted);
}

fn report(options: RocksOptions, elapsed: Duration, stats: StoreStats, ops: u64) {
    let per_second = ops as f64 / elapsed.as_secs_f64();
    eprintln!(
        "sync={:?} max_batch_delay={:?}: {ops} acknowledged accepts in {:.0} ms ({per_second:.0}/s), {} writes, {} syncs, {:.1} accepts per sync",
        options.sync,
        options.max_batch_delay,
        elapsed.as_secs_f64() * 1000.0,
        stats.writes,
        stats.syncs,
        ops as f64 / stats.syncs.max(1) as f64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sync_mode_keeps_its_promise_and_batch_syncs_far_less_than_always() {
    let dir = tempfile::tempdir().unwrap();
    let (tasks, per_task) = (8, 40);
    let ops = (tasks * per_task) as u64;
    let mut syncs = Vec::new();
    let modes = [
        (SyncMode::Always, Duration::ZERO),
        (SyncMode::Batch, RocksOptions::default().max_batch_delay),
        (SyncMode::Batch, Duration::from_micros(500)),
        (SyncMode::Never, Duration::ZERO),
    ];
    for (sync, max_batch_delay) in modes {
        let options = RocksOptions {
            sync,
            max_batch_delay,
            ..RocksOptions::default()
        };
        let store = open_with(options.clone(), &dir);
        let elapsed = publish_concurrently(store.clone(), tasks, per_task).await;
        let stats = store.stats();
        report(options, elapsed, stats, ops);
        syncs.push(stats.syncs);
    }
    let (always, batch, never) = (syncs[0], syncs[1].max(syncs[2]), syncs[3]);
    // `always` syncs every submission (plus the setup write), `never` none at all.
    assert_eq!(always, ops + 1);
    assert_eq!(never, 0);
    assert!(batch * 2 < always, "batch {batch} vs always {always}");
}
