//! The storage suite: every operation, then restore, for both backends. Each check runs
//! after `reopen`, which for RocksDB means from disk.

use fleetmq::protocol::QoS;
use fleetmq::storage::{InflightState, SessionRecord, StoreOp, EXPIRY_NEVER};

use crate::common::*;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $( #[test] fn $name() { super::$name(crate::common::memory()) } )*
        }
        #[cfg(feature = "rocksdb")]
        mod rocks_store {
            $( #[test] fn $name() { super::$name(crate::common::rocks()) } )*
        }
    };
}

suite!(
    sessions_are_stored_replaced_and_removed,
    subscriptions_follow_their_session,
    retained_messages_are_set_replaced_and_cleared,
    a_body_is_stored_once_and_deleted_with_its_last_reference,
    queue_and_inflight_keep_their_order_and_states,
    incoming_qos2_ids_are_kept_until_released,
    nothing_is_kept_for_clients_without_a_stored_session,
    an_accepted_message_id_already_stored_adds_references_only,
    restore_applies_session_expiry_counting_time_spent_down,
    restore_drops_expired_queued_and_retained_messages_but_not_inflight,
    message_ids_stay_above_every_stored_id,
);

fn sessions_are_stored_replaced_and_removed(mut backend: Box<dyn Backend>) {
    let with_will = SessionRecord {
        will: Some(will()),
        disconnected_at: Some(1_700_000_000_000),
        ..session("truck-1", 3600)
    };
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(with_will.clone()),
            StoreOp::PutSession(session("truck-2", EXPIRY_NEVER)),
            StoreOp::PutSession(session("gone", 60)),
        ],
    );
    apply(
        backend.store(),
        vec![StoreOp::RemoveSession {
            client_id: id("gone"),
        }],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    let records: Vec<_> = state.sessions.iter().map(|s| s.record.clone()).collect();
    // truck-2 was connected when the store was last written: it counts as disconnected
    // at the restore time.
    let truck_2 = SessionRecord {
        disconnected_at: Some(0),
        ..session("truck-2", EXPIRY_NEVER)
    };
    assert_eq!(
        records,
        vec![with_will.clone(), truck_2],
        "{}",
        backend.name()
    );

    let replaced = SessionRecord {
        will: None,
        ..with_will
    };
    apply(backend.store(), vec![StoreOp::PutSession(replaced.clone())]);
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert_eq!(state.sessions[0].record, replaced);
}

fn subscriptions_follow_their_session(mut backend: Box<dyn Backend>) {
    let store = backend.store();
    apply(
        store,
        vec![
            StoreOp::PutSession(session("c1", EXPIRY_NEVER)),
            StoreOp::AddSubscription {
                client_id: id("c1"),
                filter: "fleet/+/gps".into(),
                entry: subscription(QoS::AtLeastOnce, Some(7)),
            },
            StoreOp::AddSubscription {
                client_id: id("c1"),
                filter: "$share/g/fleet/#".into(),
                entry: subscription(QoS::ExactlyOnce, None),
            },
            StoreOp::AddSubscription {
                client_id: id("c1"),
                filter: "alerts".into(),
                entry: subscription(QoS::AtMostOnce, None),
            },
            // Replaces the options of an existing filter.
            StoreOp::AddSubscription {
                client_id: id("c1"),
                filter: "fleet/+/gps".into(),
                entry: subscription(QoS::ExactlyOnce, Some(9)),
            },
            StoreOp::RemoveSubscription {
                client_id: id("c1"),
                filter: "alerts".into(),
            },
        ],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert_eq!(
        state.sessions[0].subscriptions,
        vec![
            (
                "$share/g/fleet/#".into(),
                subscription(QoS::ExactlyOnce, None)
            ),
            (
                "fleet/+/gps".into(),
                subscription(QoS::ExactlyOnce, Some(9))
            ),
        ]
    );
    // Removing the session removes its subscriptions; a new session starts empty.
    apply(
        backend.store(),
        vec![
            StoreOp::RemoveSession {
                client_id: id("c1"),
            },
            StoreOp::PutSession(session("c1", EXPIRY_NEVER)),
        ],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert!(state.sessions[0].subscriptions.is_empty());
}

fn retained_messages_are_set_replaced_and_cleared(mut backend: Box<dyn Backend>) {
    let first = message("a/b", "1");
    let second = message("a/b", "2");
    let other = message("a/c", "3");
    apply(
        backend.store(),
        vec![
            StoreOp::SetRetained(first),
            StoreOp::SetRetained(other.clone()),
            StoreOp::SetRetained(second.clone()),
            StoreOp::SetRetained(message("x", "4")),
            StoreOp::ClearRetained { topic: "x".into() },
            StoreOp::ClearRetained {
                topic: "never-set".into(),
            },
        ],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert_eq!(state.retained, vec![second, other]);
}

fn a_body_is_stored_once_and_deleted_with_its_last_reference(mut backend: Box<dyn Backend>) {
    let clients = ["a", "b", "c"];
    let body = message("fleet/cmd", "reboot");
    let mut ops: Vec<StoreOp> = clients
        .iter()
        .map(|client| StoreOp::PutSession(session(client, EXPIRY_NEVER)))
        .collect();
    ops.push(accept(1, &body, &clients));
    apply(backend.store(), ops);
    assert_eq!(backend.store().stats().message_bodies, 1);
    backend.reopen();
    assert_eq!(backend.store().stats().message_bodies, 1);
    let state = backend.store().restore(0).unwrap();
    for restored in &state.sessions {
        assert_eq!(restored.queue.len(), 1);
        assert_eq!(restored.queue[0].message, body);
        assert_eq!(restored.queue[0].message_id, 1);
    }

    apply(
        backend.store(),
        vec![StoreOp::DropQueued {
            client_id: id("a"),
            message_id: 1,
        }],
    );
    apply(
        backend.store(),
        vec![StoreOp::MarkInflight {
            client_id: id("b"),
            message_id: 1,
            packet_id: 5,
            state: InflightState::AwaitingPubAck,
        }],
    );
    apply(
        backend.store(),
        vec![StoreOp::CompleteInflight {
            client_id: id("b"),
            packet_id: 5,
        }],
    );
    backend.reopen();
    assert_eq!(
        backend.store().stats().message_bodies,
        1,
        "c still holds it"
    );
    apply(
        backend.store(),
        vec![StoreOp::RemoveSession { client_id: id("c") }],
    );
    assert_eq!(backend.store().stats().message_bodies, 0);
    backend.reopen();
    assert_eq!(backend.store().stats().message_bodies, 0);
}

fn queue_and_inflight_keep_their_order_and_states(mut backend: Box<dyn Backend>) {
    let mut ops = vec![StoreOp::PutSession(session("c", EXPIRY_NEVER))];
    for number in 1..=5 {
        ops.push(accept(number, &message("t", &number.to_string()), &["c"]));
    }
    apply(backend.store(), ops);
    let mark = |message_id, packet_id, state| StoreOp::MarkInflight {
        client_id: id("c"),
        message_id,
        packet_id,
        state,
    };
    apply(
        backend.store(),
        vec![
            mark(1, 10, InflightState::AwaitingPubAck),
            mark(2, 11, InflightState::AwaitingPubRec),
            mark(3, 12, InflightState::AwaitingPubRec),
            StoreOp::AdvanceInflight {
                client_id: id("c"),
                packet_id: 12,
                state: InflightState::AwaitingPubComp,
            },
            StoreOp::CompleteInflight {
                client_id: id("c"),
                packet_id: 10,
            },
            // Unknown packet ids and messages change nothing.
            StoreOp::CompleteInflight {
                client_id: id("c"),
                packet_id: 99,
            },
            mark(42, 13, InflightState::AwaitingPubAck),
        ],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    let session = &state.sessions[0];
    let queued: Vec<_> = session.queue.iter().map(|d| d.message_id).collect();
    assert_eq!(queued, vec![4, 5]);
    let inflight: Vec<_> = session
        .inflight
        .iter()
        .map(|i| (i.delivery.message_id, i.packet_id, i.state))
        .collect();
    assert_eq!(
        inflight,
        vec![
            (2, 11, InflightState::AwaitingPubRec),
            (3, 12, InflightState::AwaitingPubComp),
        ]
    );
    assert_eq!(session.inflight[0].delivery.message.payload, "2".as_bytes());
    assert_eq!(session.queue[0].subscription_ids, vec![3]);
    assert_eq!(backend.store().stats().message_bodies, 4);
}

fn cluster_id(sequence: u64) -> fleetmq::message::ClusterMessageId {
    fleetmq::message::ClusterMessageId { node: 2, sequence }
}

fn in_cluster(packet_id: u16, sequence: u64) -> StoreOp {
    StoreOp::IncomingInCluster {
        client_id: id("c"),
        packet_id,
        cluster_id: cluster_id(sequence),
    }
}

fn incoming_qos2_ids_are_kept_until_released(mut backend: Box<dyn Backend>) {
    let add = |packet_id| StoreOp::AddIncomingQos2 {
        client_id: id("c"),
        packet_id,
    };
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(session("c", EXPIRY_NEVER)),
            add(65535),
            add(1),
            add(300),
            add(1),
            StoreOp::RemoveIncomingQos2 {
                client_id: id("c"),
                packet_id: 300,
            },
            // A cluster node records the id each message went under.
            in_cluster(65535, 7),
            in_cluster(300, 8),
            in_cluster(2, 9),
        ],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert_eq!(state.sessions[0].incoming_qos2, vec![1, 65535]);
    assert_eq!(
        state.sessions[0].incoming_ids,
        vec![(65535, cluster_id(7))],
        "kept with its packet id, never without one"
    );
    apply(
        backend.store(),
        vec![StoreOp::RemoveIncomingQos2 {
            client_id: id("c"),
            packet_id: 65535,
        }],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert!(state.sessions[0].incoming_ids.is_empty());
}

fn nothing_is_kept_for_clients_without_a_stored_session(mut backend: Box<dyn Backend>) {
    apply(
        backend.store(),
        vec![
            StoreOp::AddSubscription {
                client_id: id("ghost"),
                filter: "a".into(),
                entry: subscription(QoS::AtLeastOnce, None),
            },
            accept(1, &message("a", "x"), &["ghost"]),
            StoreOp::AddIncomingQos2 {
                client_id: id("ghost"),
                packet_id: 1,
            },
        ],
    );
    assert_eq!(backend.store().stats().message_bodies, 0);
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert!(state.sessions.is_empty());
    assert_eq!(backend.store().stats().message_bodies, 0);
}

fn an_accepted_message_id_already_stored_adds_references_only(mut backend: Box<dyn Backend>) {
    let original = message("t", "original");
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(session("a", EXPIRY_NEVER)),
            StoreOp::PutSession(session("b", EXPIRY_NEVER)),
            accept(7, &original, &["a"]),
        ],
    );
    apply(
        backend.store(),
        vec![accept(7, &message("t", "other"), &["b"])],
    );
    backend.reopen();
    let state = backend.store().restore(0).unwrap();
    assert_eq!(state.sessions[1].queue[0].message, original);
    assert_eq!(backend.store().stats().message_bodies, 1);
}

fn restore_applies_session_expiry_counting_time_spent_down(mut backend: Box<dyn Backend>) {
    let down_at = 1_700_000_000_000;
    let short = SessionRecord {
        disconnected_at: Some(down_at),
        will: Some(will()),
        ..session("short", 10)
    };
    let long = SessionRecord {
        disconnected_at: Some(down_at),
        ..session("long", 3600)
    };
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(short.clone()),
            StoreOp::PutSession(long.clone()),
            StoreOp::PutSession(session("was-connected", 10)),
            accept(1, &message("t", "x"), &["short", "long"]),
        ],
    );
    backend.reopen();
    let state = backend.store().restore(down_at + 9_999).unwrap();
    assert_eq!(state.sessions.len(), 3);
    assert!(state.expired_sessions.is_empty());

    backend.reopen();
    let state = backend.store().restore(down_at + 10_000).unwrap();
    let live: Vec<_> = state
        .sessions
        .iter()
        .map(|s| s.record.client_id.clone())
        .collect();
    assert_eq!(live, vec![id("long"), id("was-connected")]);
    assert_eq!(state.expired_sessions, vec![short]);
    // The connected session's clock started at the first restore.
    assert_eq!(
        state.sessions[1].record.disconnected_at,
        Some(down_at + 9_999)
    );
    assert_eq!(backend.store().stats().message_bodies, 1);

    backend.reopen();
    let state = backend.store().restore(down_at + 9_999 + 10_000).unwrap();
    assert_eq!(state.sessions.len(), 1);
    assert_eq!(state.expired_sessions[0].client_id, "was-connected");
}

fn restore_drops_expired_queued_and_retained_messages_but_not_inflight(
    mut backend: Box<dyn Backend>,
) {
    let now = 1_700_000_000_000;
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(session("c", EXPIRY_NEVER)),
            accept(1, &expiring("t", now), &["c"]),
            accept(2, &expiring("t", now + 1), &["c"]),
            accept(3, &expiring("t", now - 5), &["c"]),
            StoreOp::MarkInflight {
                client_id: id("c"),
                message_id: 1,
                packet_id: 1,
                state: InflightState::AwaitingPubAck,
            },
            StoreOp::SetRetained(expiring("r/old", now)),
            StoreOp::SetRetained(expiring("r/new", now + 1)),
        ],
    );
    backend.reopen();
    let state = backend.store().restore(now).unwrap();
    let session = &state.sessions[0];
    assert_eq!(session.inflight[0].delivery.message_id, 1);
    let queued: Vec<_> = session.queue.iter().map(|d| d.message_id).collect();
    assert_eq!(queued, vec![2]);
    let retained: Vec<_> = state.retained.iter().map(|m| m.topic.clone()).collect();
    assert_eq!(retained, vec![id("r/new")]);
    assert_eq!(backend.store().stats().message_bodies, 2);
}

fn message_ids_stay_above_every_stored_id(mut backend: Box<dyn Backend>) {
    let first = backend.store().next_message_id();
    assert!(first >= 1);
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(session("c", EXPIRY_NEVER)),
            accept(1000, &message("t", "x"), &["c"]),
        ],
    );
    assert!(backend.store().next_message_id() > 1000);
    backend.reopen();
    assert!(backend.store().next_message_id() > 1000);
}
