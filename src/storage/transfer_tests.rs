//! A session written as `RestoredSession::to_ops` comes back from `restore` as it was,
//! in both backends: the hand-over of a session to another node relies on it.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::protocol::{ProtocolVersion, QoS, SubscriptionOptions, Will, WillProperties};
use crate::session::SubscriptionEntry;

const NOW: UnixMillis = 1_800_000_000_000;

fn delivery(message_id: MessageId, payload: &'static [u8], qos: QoS) -> RestoredDelivery {
    RestoredDelivery {
        message_id,
        message: Arc::new(StoredMessage {
            topic: "t/1".into(),
            payload: Bytes::from_static(payload),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: Some(NOW + 3_600_000),
            cluster_id: None,
        }),
        qos,
        retain: message_id.is_multiple_of(2),
        subscription_ids: vec![7],
    }
}

fn session() -> RestoredSession {
    let entry = |qos| SubscriptionEntry {
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
        subscription_id: Some(7),
    };
    RestoredSession {
        record: SessionRecord {
            client_id: "mover".into(),
            protocol: ProtocolVersion::V5,
            expiry_interval: 3600,
            will: Some(Will {
                topic: "wills/mover".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties {
                    will_delay_interval: Some(30),
                    ..WillProperties::default()
                },
            }),
            disconnected_at: Some(NOW - 1000),
        },
        subscriptions: vec![
            ("a/#".into(), entry(QoS::AtLeastOnce)),
            ("t/+".into(), entry(QoS::ExactlyOnce)),
        ],
        inflight: vec![
            RestoredInflight {
                delivery: delivery(11, b"first", QoS::ExactlyOnce),
                packet_id: 40,
                state: InflightState::AwaitingPubComp,
            },
            RestoredInflight {
                delivery: delivery(12, b"second", QoS::AtLeastOnce),
                packet_id: 41,
                state: InflightState::AwaitingPubAck,
            },
            RestoredInflight {
                delivery: delivery(13, b"third", QoS::ExactlyOnce),
                packet_id: 2,
                state: InflightState::AwaitingPubRec,
            },
        ],
        queue: vec![
            delivery(14, b"fourth", QoS::AtLeastOnce),
            delivery(15, b"fifth", QoS::ExactlyOnce),
        ],
        incoming_qos2: vec![3, 9, 300],
        incoming_ids: vec![(
            9,
            crate::message::ClusterMessageId {
                node: 2,
                sequence: 17,
            },
        )],
    }
}

fn round_trip(store: &dyn Store) {
    let session = session();
    // A stale copy is replaced, not merged.
    let mut stale = session.clone();
    stale.queue = vec![delivery(99, b"stale", QoS::AtLeastOnce)];
    store.submit(stale.to_ops()).wait().unwrap();
    store.submit(session.to_ops()).wait().unwrap();
    let restored = store.restore(NOW).unwrap();
    assert_eq!(restored.sessions, vec![session]);
}

#[test]
fn a_session_written_as_operations_is_restored_unchanged_from_memory() {
    round_trip(&MemoryStore::new());
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_session_written_as_operations_is_restored_unchanged_from_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    round_trip(&store);
}

#[test]
fn qos0_deliveries_are_not_written() {
    let mut session = session();
    session
        .queue
        .push(delivery(0, b"volatile", QoS::AtMostOnce));
    let accepts = session
        .to_ops()
        .iter()
        .filter(|op| matches!(op, StoreOp::Accept { .. }))
        .count();
    assert_eq!(accepts, 5);
}
