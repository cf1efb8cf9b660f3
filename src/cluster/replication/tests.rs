//! Socket-free tests of the owner's side of replication: which operations go to the
//! backups, who the backups are, the wire form, the in-sync rule (a write waiting on a
//! silent backup is released only after the backup was committed out of sync), with a
//! fake link, and how a replicated write's parts decide it. The backup's side is in
//! `replica_tests.rs`, with the fixtures here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::protocol::{ProtocolVersion, QoS};
use crate::storage::{MemoryStore, QueuedDelivery, SessionRecord, StoredMessage};

/// The node that adopts sessions in these tests.
const ADOPTER: NodeId = 3;

pub(super) fn put(client_id: &str) -> StoreOp {
    StoreOp::PutSession(SessionRecord {
        client_id: client_id.into(),
        protocol: ProtocolVersion::V5,
        expiry_interval: 3600,
        will: None,
        disconnected_at: None,
    })
}

fn message() -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        topic: "t".into(),
        payload: Bytes::from_static(b"payload"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
        cluster_id: None,
    })
}

pub(super) fn accept(message_id: u64, clients: &[&str]) -> StoreOp {
    StoreOp::Accept {
        message_id,
        message: message(),
        deliveries: clients
            .iter()
            .map(|client_id| QueuedDelivery {
                client_id: (*client_id).into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![3],
            })
            .collect(),
    }
}

#[test]
fn only_operations_of_persistent_sessions_are_replicated() {
    let mut persistent = HashSet::new();
    let ops = vec![
        put("kept"),
        accept(1, &["kept", "clean"]),
        accept(2, &["clean"]),
        StoreOp::SetRetained(message()),
        StoreOp::ClearRetained { topic: "t".into() },
        StoreOp::CompleteInflight {
            client_id: "clean".into(),
            packet_id: 1,
        },
        StoreOp::CompleteInflight {
            client_id: "kept".into(),
            packet_id: 2,
        },
    ];
    let kept = replicated_ops(&ops, &mut persistent);
    assert_eq!(
        kept,
        vec![
            put("kept"),
            accept(1, &["kept"]),
            StoreOp::CompleteInflight {
                client_id: "kept".into(),
                packet_id: 2,
            },
        ]
    );
    // A removed session's later operations are not replicated; its removal is.
    let removal = StoreOp::RemoveSession {
        client_id: "kept".into(),
    };
    assert_eq!(
        replicated_ops(&[removal.clone(), accept(3, &["kept"])], &mut persistent),
        vec![removal.clone()]
    );
    assert!(replicated_ops(&[removal], &mut persistent).is_empty());
}

#[test]
fn backups_are_the_next_voters_in_id_order_wrapping_around() {
    assert_eq!(backups_of(1, [1, 2, 3], 2), vec![2]);
    assert_eq!(backups_of(3, [3, 1, 2], 2), vec![1]);
    assert_eq!(backups_of(2, [1, 2, 3, 5], 3), vec![3, 5]);
    assert_eq!(backups_of(5, [1, 2, 3, 5], 3), vec![1, 2]);
    // Capped at the other voters; factor 1 is no replication.
    assert_eq!(backups_of(1, [1, 2], 5), vec![2]);
    assert!(backups_of(1, [1, 2, 3], 1).is_empty());
    assert!(backups_of(1, [1], 2).is_empty());
}

#[test]
fn every_replicated_operation_survives_the_wire() {
    let ops = vec![
        put("c"),
        accept(7, &["c"]),
        StoreOp::MarkInflight {
            client_id: "c".into(),
            message_id: 7,
            packet_id: 9,
            state: crate::storage::InflightState::AwaitingPubRec,
        },
        StoreOp::AddIncomingQos2 {
            client_id: "c".into(),
            packet_id: 4,
        },
        StoreOp::CompletedInCluster {
            client_id: "c".into(),
            cluster_id: crate::message::ClusterMessageId {
                node: 2,
                sequence: 11,
            },
        },
        StoreOp::RemoveSession {
            client_id: "c".into(),
        },
    ];
    for op in ops {
        let wire = WireOp::encode(&op).expect("replicated");
        let json = serde_json::to_string(&wire).unwrap();
        let back: WireOp = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode(), Some(op));
    }
    assert_eq!(WireOp::encode(&StoreOp::SetRetained(message())), None);
}

/// A backup that takes resyncs but never answers the stream; committing it out of sync
/// waits for `commit_gate`.
struct SilentBackup {
    in_sync: Mutex<bool>,
    /// Sessions adopted by another node (this node no longer owns them).
    adopted: Mutex<HashSet<String>>,
    events: Mutex<Vec<&'static str>>,
    changed: Notify,
    commit_gate: Semaphore,
}

impl SilentBackup {
    fn new() -> SilentBackup {
        SilentBackup {
            in_sync: Mutex::new(false),
            adopted: Mutex::default(),
            events: Mutex::default(),
            changed: Notify::new(),
            commit_gate: Semaphore::new(0),
        }
    }

    fn record(&self, event: &'static str) {
        self.events.lock().unwrap().push(event);
        self.changed.notify_waiters();
    }

    fn events(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `event` happened `times` times.
    async fn wait_for(&self, event: &'static str, times: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let changed = self.changed.notified();
                if self.events().iter().filter(|seen| **seen == event).count() >= times {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {event}: {:?}", self.events()));
    }
}

impl ReplicaLink for SilentBackup {
    fn backups(&self) -> Vec<NodeId> {
        vec![2]
    }

    fn in_sync(&self, _: NodeId) -> bool {
        *self.in_sync.lock().unwrap()
    }

    fn reachable(&self, _: NodeId) -> bool {
        true
    }

    fn replicate(&self, _: NodeId, batch: Batch, _: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if batch.reset {
                self.record("resync");
                return Ok(());
            }
            self.record("stream batch sent");
            std::future::pending().await
        })
    }

    fn moved_from_a_copy(
        &self,
        client_ids: Vec<String>,
        _: u64,
    ) -> BoxFuture<'_, Result<Vec<(String, NodeId)>, String>> {
        let adopted: Vec<(String, NodeId)> = {
            let adopted = self.adopted.lock().unwrap();
            client_ids
                .into_iter()
                .filter(|client_id| adopted.contains(client_id))
                .map(|client_id| (client_id, ADOPTER))
                .collect()
        };
        Box::pin(async move { Ok(adopted) })
    }

    fn set_in_sync(&self, _: NodeId, in_sync: bool) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if in_sync {
                *self.in_sync.lock().unwrap() = true;
                self.record("committed in sync");
                return Ok(());
            }
            self.record("proposed out of sync");
            // Held back once the backup counted in sync (a commit that takes a while).
            let counted_in_sync = *self.in_sync.lock().unwrap();
            if counted_in_sync {
                let permit = self
                    .commit_gate
                    .acquire()
                    .await
                    .map_err(|e| e.to_string())?;
                permit.forget();
            }
            *self.in_sync.lock().unwrap() = false;
            self.record("committed out of sync");
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_silent_backup_is_committed_out_of_sync_before_the_writes_waiting_on_it_go() {
    let replicator = Replicator::new(
        Arc::new(MemoryStore::new()),
        Duration::from_millis(100),
        crate::limits::DEFAULT_CLUSTER_REPLICATION_QUEUE_BYTES,
    );
    let store = ReplicatedStore::new(replicator.clone());
    let backup = Arc::new(SilentBackup::new());
    replicator.attach(backup.clone());
    backup.wait_for("committed in sync", 1).await;
    // A starting sender commits its backup out of sync before anything else.
    assert_eq!(
        backup.events(),
        vec![
            "proposed out of sync",
            "committed out of sync",
            "resync",
            "committed in sync"
        ]
    );

    // Nothing persistent: no wait for the backup (clean sessions, retained messages).
    store
        .submit(vec![accept(1, &["clean"]), StoreOp::SetRetained(message())])
        .await
        .expect("local write");

    let mut write = store.submit(vec![put("kept"), accept(2, &["kept"])]);
    backup.wait_for("proposed out of sync", 2).await;
    // Past the acknowledgement timeout, but the commit has not happened: still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(write.try_result().is_none(), "released before the commit");
    backup.commit_gate.add_permits(1);
    write
        .await
        .expect("released once the backup is out of sync");
    assert_eq!(
        backup.events()[4..7],
        [
            "stream batch sent",
            "proposed out of sync",
            "committed out of sync",
        ]
    );
}

/// A write released without its backup's copy fails when the session it stored a
/// message for was adopted elsewhere meanwhile (the adopter's copy lacks the message),
/// naming the session and its new node: a local publisher gets no acknowledgement and
/// sends the message again, a forwarding node hands it to that node.
#[tokio::test]
async fn a_write_released_without_its_backup_fails_for_a_session_adopted_meanwhile() {
    let replicator = Replicator::new(
        Arc::new(MemoryStore::new()),
        Duration::from_millis(100),
        crate::limits::DEFAULT_CLUSTER_REPLICATION_QUEUE_BYTES,
    );
    let store = ReplicatedStore::new(replicator.clone());
    let backup = Arc::new(SilentBackup::new());
    replicator.attach(backup.clone());
    backup.wait_for("committed in sync", 1).await;
    let stays = store.submit(vec![put("stays"), put("adopted")]);
    backup.wait_for("proposed out of sync", 2).await;
    backup.commit_gate.add_permits(1);
    stays.await.expect("session changes of sessions still here");
    backup.wait_for("committed in sync", 2).await;

    let here = store.submit(vec![accept(1, &["stays"])]);
    let moved = store.submit(vec![accept(2, &["adopted"])]);
    // The same session written whole (an import): failing it would keep nothing.
    let imported = store.submit(vec![
        StoreOp::RemoveSession {
            client_id: "adopted".into(),
        },
        put("adopted"),
        accept(3, &["adopted"]),
    ]);
    // A session new to this node imported whole (an adoption whose client moved on
    // at once): its removal is not replicated, and it is an import all the same.
    let arrived = store.submit(vec![
        StoreOp::RemoveSession {
            client_id: "arrived".into(),
        },
        put("arrived"),
        accept(4, &["arrived"]),
    ]);
    backup.wait_for("proposed out of sync", 3).await;
    backup.adopted.lock().unwrap().insert("adopted".into());
    backup.adopted.lock().unwrap().insert("arrived".into());
    backup.commit_gate.add_permits(1);
    here.await.expect("the session is still owned here");
    match moved.await {
        Err(StoreError::SessionMoved(sessions)) => {
            assert_eq!(sessions, vec![("adopted".to_string(), ADOPTER)]);
        }
        other => panic!("acknowledged without any copy the new owner has: {other:?}"),
    }
    imported
        .await
        .expect("an imported session is not failed for moving on");
    arrived
        .await
        .expect("a session imported here for the first time is not failed either");
}

/// A backup that falls behind until its queue passes `replication_queue_bytes` is
/// committed out of sync (the writes waiting on it are released only after that commit,
/// none dropped before) and then resynced, long before its acknowledgement timeout.
#[tokio::test]
async fn a_backup_queue_past_its_byte_bound_takes_the_backup_out_of_sync_and_resyncs_it() {
    const BOUND: usize = 64 * 1024;
    let replicator = Replicator::new(
        Arc::new(MemoryStore::new()),
        Duration::from_secs(600),
        BOUND,
    );
    let store = ReplicatedStore::new(replicator.clone());
    let backup = Arc::new(SilentBackup::new());
    replicator.attach(backup.clone());
    backup.wait_for("committed in sync", 1).await;
    let mut writes = vec![store.submit(vec![put("kept")])];
    backup.wait_for("stream batch sent", 1).await;

    // The first batch hangs at the backup; what follows queues up to the bound.
    let big = Arc::new(StoredMessage {
        payload: Bytes::from(vec![b'x'; 1024]),
        ..(*message()).clone()
    });
    let mut id = 10;
    while replicator.overflows() == 0 {
        id += 1;
        assert!(id < 1_000, "the byte bound never took effect");
        let op = StoreOp::Accept {
            message_id: id,
            message: big.clone(),
            deliveries: vec![QueuedDelivery {
                client_id: "kept".into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
            }],
        };
        writes.push(store.submit(vec![op]));
    }
    assert!(
        writes.len() > 32,
        "1 KiB messages: the queue held {} of them",
        writes.len()
    );
    let queued: usize = replicator
        .queue_bytes()
        .iter()
        .map(|(_, bytes)| bytes)
        .sum();
    assert!(queued <= BOUND, "{queued} bytes held past the bound");
    backup.wait_for("proposed out of sync", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        writes.iter_mut().all(|write| write.try_result().is_none()),
        "a write released before the backup was committed out of sync"
    );
    backup.commit_gate.add_permits(1);
    for write in writes {
        write
            .await
            .expect("released once the backup is out of sync");
    }
    backup.wait_for("committed in sync", 2).await;
    assert_eq!(
        backup.events()[4..],
        [
            "stream batch sent",
            "proposed out of sync",
            "committed out of sync",
            "resync",
            "committed in sync"
        ]
    );
    assert_eq!(replicator.overflows(), 1);
}

/// A replicated write with its parts in the test's hands: the local write's sender, one
/// backup acknowledgement's sender per `marks` entry (where that backup stood as the
/// write was queued), over `link` for the check after a release.
fn replicated_write(
    ops: Vec<StoreOp>,
    marks: &[sender::SyncMark],
    link: Arc<dyn ReplicaLink>,
) -> (
    oneshot::Sender<crate::storage::CompletionResult>,
    Vec<oneshot::Sender<bool>>,
    Completion,
) {
    let (local_done, local) = Completion::waiting();
    let mut acks = Vec::new();
    let mut senders = Vec::new();
    for mark in marks {
        let (sender, ack) = oneshot::channel();
        senders.push(sender);
        acks.push((ack, Arc::new(BackupQueue::new(1 << 20)), *mark));
    }
    let write = ReplicatedWrite {
        local: Some(local),
        acks,
        result: Ok(()),
        released: Vec::new(),
        moved_check: Some(MovedCheck {
            written_whole: written_whole(&ops),
            replicated: ops,
            handover_mark: 0,
            link,
            runtime: tokio::runtime::Handle::current(),
        }),
        checking: None,
    };
    (local_done, senders, Completion::composed(Box::new(write)))
}

const IN_SYNC: sender::SyncMark = (true, 0);
/// A backup being resynced as the write was queued (out of sync, never committed in
/// sync since).
const RESYNCING: sender::SyncMark = (false, 0);

/// The outcome a replicated write's parts decide, polled in place by its waiter: every
/// part is waited for, the local write's error comes first, a backup that went away
/// fails the write, and one that released it without its copy is weighed as before.
#[tokio::test]
async fn a_replicated_write_is_decided_by_its_parts_where_it_is_waited_for() {
    let link: Arc<dyn ReplicaLink> = Arc::new(SilentBackup::new());

    // Both parts are waited for, whichever answers first.
    let (local, mut acks, mut write) =
        replicated_write(vec![accept(1, &["a"])], &[IN_SYNC, IN_SYNC], link.clone());
    acks.remove(0).send(true).unwrap();
    local.send(Ok(())).unwrap();
    assert!(
        write.try_result().is_none(),
        "decided before the second backup answered"
    );
    acks.remove(0).send(true).unwrap();
    assert!(matches!(write.try_result(), Some(Ok(()))));

    // The local write's error wins over a backup that went away, in either order.
    let (local, acks, write) = replicated_write(vec![accept(2, &["a"])], &[IN_SYNC], link.clone());
    drop(acks);
    local
        .send(Err(StoreError::Io("the disk is full".into())))
        .unwrap();
    match write.await {
        Err(StoreError::Io(error)) => assert_eq!(error, "the disk is full"),
        other => panic!("{other:?}"),
    }

    // A backup that went away without answering fails a write stored locally.
    let (local, acks, write) = replicated_write(vec![accept(3, &["a"])], &[IN_SYNC], link.clone());
    local.send(Ok(())).unwrap();
    drop(acks);
    match write.await {
        Err(StoreError::Io(error)) => assert_eq!(error, "replication to a backup stopped"),
        other => panic!("{other:?}"),
    }

    // Released without the copy of a backup that never counted as in sync meanwhile:
    // no failover reads that copy, the write stands without a check.
    let (local, acks, mut write) =
        replicated_write(vec![accept(4, &["a"])], &[RESYNCING], link.clone());
    local.send(Ok(())).unwrap();
    for ack in acks {
        ack.send(false).unwrap();
    }
    assert!(matches!(write.try_result(), Some(Ok(()))));
}

/// Released without the copy of an in-sync backup: the check runs on the runtime and
/// fails the write for a session adopted elsewhere meanwhile, both for a waiter that
/// polls and for a plain thread that blocks on the completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_write_released_without_its_backup_is_checked_where_it_is_waited_for() {
    let backup = Arc::new(SilentBackup::new());
    backup.adopted.lock().unwrap().insert("adopted".into());
    let link: Arc<dyn ReplicaLink> = backup.clone();

    let (local, acks, mut write) =
        replicated_write(vec![accept(1, &["adopted"])], &[IN_SYNC], link.clone());
    local.send(Ok(())).unwrap();
    for ack in acks {
        ack.send(false).unwrap();
    }
    // The check asks the cluster: not decided by a look alone.
    assert!(write.try_result().is_none());
    match write.await {
        Err(StoreError::SessionMoved(sessions)) => {
            assert_eq!(sessions, vec![("adopted".to_string(), ADOPTER)]);
        }
        other => panic!("acknowledged without any copy the new owner has: {other:?}"),
    }

    // The same from a plain thread that blocks on the completion while the parts
    // answer from the runtime (the local write at once, the backup once the thread
    // waits or is about to).
    let (local, acks, write) = replicated_write(
        vec![accept(2, &["adopted"]), accept(3, &["stays"])],
        &[IN_SYNC],
        link,
    );
    local.send(Ok(())).unwrap();
    let blocked = std::thread::spawn(move || write.wait());
    for ack in acks {
        ack.send(false).unwrap();
    }
    let result = tokio::task::spawn_blocking(move || blocked.join().unwrap())
        .await
        .unwrap();
    match result {
        Err(StoreError::SessionMoved(sessions)) => {
            assert_eq!(sessions, vec![("adopted".to_string(), ADOPTER)]);
        }
        other => panic!("{other:?}"),
    }
}
