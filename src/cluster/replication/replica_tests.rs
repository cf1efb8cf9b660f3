//! Socket-free tests of the backup's side of replication: a copy follows its origin's
//! stream (generations, resets, the order of numbered batches), and what failover and
//! adoption read from it.

use std::sync::Arc;

use bytes::Bytes;

use super::tests::{accept, put};
use super::*;
use crate::protocol::{ProtocolVersion, QoS};
use crate::storage::SessionRecord;

fn wire(ops: &[StoreOp]) -> Vec<WireOp> {
    ops.iter().filter_map(WireOp::encode).collect()
}

#[tokio::test]
async fn a_backup_copy_follows_its_stream_refuses_an_older_one_and_a_reset_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = replica::Replicas::new(dir.path(), crate::storage::RocksOptions::default());
    let batch = |generation, reset, ops: &[StoreOp]| Batch {
        generation,
        reset,
        sequence: 0,
        ops: wire(ops),
    };
    replicas
        .apply(1, batch(10, true, &[put("a"), accept(5, &["a"])]))
        .await
        .unwrap();
    replicas
        .apply(1, batch(10, false, &[put("b")]))
        .await
        .unwrap();
    let a = replicas.session(1, "a").await.expect("replicated");
    assert_eq!(a.queue.len(), 1);
    assert_eq!(&a.queue[0].message.payload[..], b"payload");
    // Another origin's copy is separate.
    assert!(replicas.session(3, "a").await.is_none());

    // A resync (generation 11) replaces the copy; a late batch of stream 10 is refused.
    replicas
        .apply(1, batch(11, true, &[put("c")]))
        .await
        .unwrap();
    assert!(replicas
        .apply(1, batch(10, false, &[put("late")]))
        .await
        .is_err());
    assert!(replicas.session(1, "a").await.is_none());
    assert!(replicas.session(1, "b").await.is_none());
    assert!(replicas.session(1, "late").await.is_none());
    assert!(replicas.session(1, "c").await.is_some());
    replicas.forget(1, "c").await;
    assert!(replicas.session(1, "c").await.is_none());
}

/// A backup remembers the cluster ids of the QoS 2 messages a session of its origin
/// completed (nothing of them is stored), for that origin's session only, and a node
/// taking the session over from the copy gets them with it: the copy the publishing
/// node sends again (its forward to the dead owner was never acknowledged) is then
/// dropped, not delivered a second time. Likewise the ids of the incoming QoS 2
/// messages whose packet ids await release: the client's resend is routed under the
/// same id.
#[tokio::test]
async fn a_backup_hands_the_ids_of_qos2_messages_its_origin_completed_lately_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = replica::Replicas::new(dir.path(), crate::storage::RocksOptions::default());
    let completed = crate::message::ClusterMessageId {
        node: 3,
        sequence: 42,
    };
    let incoming = crate::message::ClusterMessageId {
        node: 1,
        sequence: 43,
    };
    let ops = [
        put("a"),
        accept(5, &["a"]),
        StoreOp::MarkInflight {
            client_id: "a".into(),
            message_id: 5,
            packet_id: 1,
            state: crate::storage::InflightState::AwaitingPubRec,
        },
        StoreOp::CompleteInflight {
            client_id: "a".into(),
            packet_id: 1,
        },
        StoreOp::CompletedInCluster {
            client_id: "a".into(),
            cluster_id: completed,
        },
        StoreOp::AddIncomingQos2 {
            client_id: "a".into(),
            packet_id: 7,
        },
        StoreOp::IncomingInCluster {
            client_id: "a".into(),
            packet_id: 7,
            cluster_id: incoming,
        },
    ];
    let batch = Batch {
        generation: 1,
        reset: true,
        sequence: 0,
        ops: wire(&ops),
    };
    replicas.apply(1, batch).await.unwrap();
    let session = replicas.session(1, "a").await.expect("replicated");
    assert!(session.inflight.is_empty() && session.queue.is_empty());
    assert_eq!(replicas.recently_completed(1, "a"), vec![completed]);
    assert!(replicas.recently_completed(1, "b").is_empty());
    assert!(replicas.recently_completed(2, "a").is_empty());

    assert_eq!(session.incoming_qos2, vec![7]);
    assert_eq!(
        session.incoming_ids,
        vec![(7, incoming)],
        "in the copy's store"
    );

    let mut dump = crate::cluster::handover::SessionDump::from_session(&session);
    dump.also_held(replicas.recently_completed(1, "a"));
    let json = serde_json::to_vec(&dump).unwrap();
    let dump: crate::cluster::handover::SessionDump = serde_json::from_slice(&json).unwrap();
    let handed = dump.into_handed().expect("decodes");
    assert_eq!(handed.held, vec![completed]);
    assert_eq!(handed.session.incoming_ids, vec![(7, incoming)]);

    // Released, the packet id's cluster id goes.
    let released = Batch {
        generation: 1,
        reset: false,
        sequence: 0,
        ops: wire(&[StoreOp::RemoveIncomingQos2 {
            client_id: "a".into(),
            packet_id: 7,
        }]),
    };
    replicas.apply(1, released).await.unwrap();
    let session = replicas.session(1, "a").await.expect("replicated");
    assert!(session.incoming_ids.is_empty());
}

#[tokio::test]
async fn numbered_batches_are_applied_in_their_streams_order_whatever_order_they_arrive_in() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = Arc::new(replica::Replicas::new(
        dir.path(),
        crate::storage::RocksOptions::default(),
    ));
    let batch = |generation, sequence, ops: &[StoreOp]| Batch {
        generation,
        reset: sequence == 1,
        sequence,
        ops: wire(ops),
    };
    replicas.apply(1, batch(20, 1, &[put("a")])).await.unwrap();
    // Batch 3 removes what batch 2 adds; it arrives first and waits for batch 2.
    let third = tokio::spawn({
        let replicas = replicas.clone();
        async move {
            replicas
                .apply(
                    1,
                    batch(
                        20,
                        3,
                        &[StoreOp::RemoveSession {
                            client_id: "b".into(),
                        }],
                    ),
                )
                .await
        }
    });
    // The test runtime has one thread: the spawned apply runs up to its wait here.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!third.is_finished(), "batch 3 went before batch 2");
    replicas.apply(1, batch(20, 2, &[put("b")])).await.unwrap();
    third.await.unwrap().unwrap();
    assert!(replicas.session(1, "a").await.is_some());
    assert!(
        replicas.session(1, "b").await.is_none(),
        "batch 2 was applied after batch 3"
    );
    // A batch seen before is refused.
    assert!(replicas.apply(1, batch(20, 2, &[put("c")])).await.is_err());

    // A batch waiting for one that never comes is refused once a resync starts anew.
    let stranded = tokio::spawn({
        let replicas = replicas.clone();
        async move { replicas.apply(1, batch(20, 9, &[put("d")])).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!stranded.is_finished());
    replicas.apply(1, batch(21, 1, &[put("e")])).await.unwrap();
    assert!(stranded.await.unwrap().is_err());
    assert!(replicas.session(1, "d").await.is_none());
    assert!(
        replicas.session(1, "a").await.is_none(),
        "the reset emptied the copy"
    );
    assert!(replicas.session(1, "e").await.is_some());
}

#[tokio::test]
async fn an_adoption_looks_sessions_up_in_a_copy_without_taking_an_expired_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = replica::Replicas::new(dir.path(), crate::storage::RocksOptions::default());
    // Its client left long ago and its expiry ran out: it still owes its will.
    let expired = StoreOp::PutSession(SessionRecord {
        client_id: "gone".into(),
        protocol: ProtocolVersion::V5,
        expiry_interval: 1,
        will: Some(crate::protocol::Will {
            topic: "wills/gone".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        }),
        disconnected_at: Some(1_000),
    });
    let reset = Batch {
        generation: 1,
        reset: true,
        sequence: 1,
        ops: wire(&[put("live"), accept(5, &["live"]), expired]),
    };
    replicas.apply(1, reset).await.unwrap();
    let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    // An adoption that did not commit, then its next attempt: the copy is unchanged.
    for _ in 0..2 {
        let held = replicas
            .holding(1, ids(&["live", "gone", "elsewhere"]))
            .await
            .unwrap();
        assert_eq!(held, ["live", "gone"]);
    }
    let gone = replicas
        .session(1, "gone")
        .await
        .expect("still in the copy");
    assert!(gone
        .record
        .is_expired(crate::storage::WallClock::now().unix_millis()));
    assert!(gone.record.will.is_some(), "with the will it owes");
    assert_eq!(replicas.session(1, "live").await.unwrap().queue.len(), 1);
    // Adopted: its will published, it leaves the copy.
    replicas.forget(1, "gone").await;
    let held = replicas.holding(1, ids(&["live", "gone"])).await.unwrap();
    assert_eq!(held, ["live"]);
}
