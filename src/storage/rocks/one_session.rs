//! Reading one stored session without loading the rest of the database: its record by
//! key, its subscriptions, queue, inflight messages and incoming QoS 2 ids by the client
//! id's key prefix, and the bodies of its messages by id. What a cluster failover reads
//! from a backup's copy (`crate::cluster::replication::replica`): the cost follows the
//! session's size, not the copy's.
//!
//! The caller keeps writes to the same session out meanwhile (the copy's stream lock);
//! a RocksDB snapshot makes the read consistent across column families anyway.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, DB};

use crate::storage::codec::{self, DecodeError};
use crate::storage::ledger::{Inflight, Ledger, LoadError};
use crate::storage::record::RestoredSession;
use crate::storage::StoreError;

use super::{INCOMING, INFLIGHT, MESSAGES, QUEUE, SESSIONS, SUBSCRIPTIONS};

/// A record's key (past the client id's prefix) and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Whether `db` holds a session record for `client_id` (nothing else is read).
pub(super) fn has_session(db: &DB, path: &Path, client_id: &str) -> Result<bool, StoreError> {
    let family = db.cf_handle(SESSIONS).ok_or_else(|| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("column family {SESSIONS}: missing"),
    })?;
    db.get_pinned_cf(family, client_id.as_bytes())
        .map(|record| record.is_some())
        .map_err(|error| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("column family {SESSIONS}, session \"{client_id}\": {error}"),
        })
}

/// `client_id`'s session as stored in `db`, `None` when it has none.
pub(super) fn read_session(
    db: &DB,
    path: &Path,
    client_id: &str,
) -> Result<Option<RestoredSession>, StoreError> {
    let corrupt = |family: &str, detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("column family {family}, session \"{client_id}\": {detail}"),
    };
    let family = |name: &str| {
        db.cf_handle(name)
            .ok_or_else(|| corrupt(name, "missing column family".into()))
    };
    let snapshot = db.snapshot();
    let Some(record) = snapshot
        .get_cf(family(SESSIONS)?, client_id.as_bytes())
        .map_err(|error| corrupt(SESSIONS, error.to_string()))?
    else {
        return Ok(None);
    };
    let record = codec::decode_session(client_id.into(), &record)
        .map_err(|DecodeError(error)| corrupt(SESSIONS, error.into()))?;
    let mut ledger = Ledger::new(true);
    ledger.load_session(record);

    let prefix = codec::client_prefix(client_id);
    // Every (key suffix, value) of the session in one column family.
    let entries = |name: &str| -> Result<Vec<KeyValue>, StoreError> {
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        let mut entries = Vec::new();
        for item in snapshot.iterator_cf(family(name)?, mode) {
            let (key, value) = item.map_err(|error| corrupt(name, error.to_string()))?;
            let Some(suffix) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            entries.push((suffix.to_vec(), value.to_vec()));
        }
        Ok(entries)
    };
    let invariant = |name: &str, error: LoadError| {
        corrupt(
            name,
            match error {
                LoadError::NoSession => "entry without a session record".into(),
                LoadError::NoBody => "entry refers to a message body that is not stored".into(),
            },
        )
    };
    let decoded = |name: &'static str| move |DecodeError(error)| corrupt(name, error.into());

    for (filter, value) in entries(SUBSCRIPTIONS)? {
        let filter = codec::decode_string_key(&filter).map_err(decoded(SUBSCRIPTIONS))?;
        let entry = codec::decode_subscription(&value).map_err(decoded(SUBSCRIPTIONS))?;
        ledger
            .load_subscription(client_id, filter, entry)
            .map_err(|error| invariant(SUBSCRIPTIONS, error))?;
    }
    let mut queued = Vec::new();
    for (sequence, value) in entries(QUEUE)? {
        let sequence = codec::decode_u64_key(&sequence).map_err(decoded(QUEUE))?;
        queued.push((
            sequence,
            codec::decode_queued(&value).map_err(decoded(QUEUE))?,
        ));
    }
    let mut inflight = Vec::new();
    for (sequence, value) in entries(INFLIGHT)? {
        let sequence = codec::decode_u64_key(&sequence).map_err(decoded(INFLIGHT))?;
        let (value, packet_id, state) =
            codec::decode_inflight(&value).map_err(decoded(INFLIGHT))?;
        inflight.push((
            sequence,
            Inflight {
                value,
                packet_id,
                state,
            },
        ));
    }
    // The bodies first: loading a queue entry counts a reference to its body.
    let messages = family(MESSAGES)?;
    let ids: std::collections::BTreeSet<u64> = queued
        .iter()
        .map(|(_, value)| value.message_id)
        .chain(inflight.iter().map(|(_, entry)| entry.value.message_id))
        .collect();
    for message_id in ids {
        let body = snapshot
            .get_cf(messages, codec::message_key(message_id))
            .map_err(|error| corrupt(MESSAGES, error.to_string()))?;
        if let Some(body) = body {
            let body = codec::decode_message(&body).map_err(decoded(MESSAGES))?;
            ledger.load_body(message_id, body);
        }
    }
    for (sequence, value) in queued {
        ledger
            .load_queued(client_id, sequence, value)
            .map_err(|error| invariant(QUEUE, error))?;
    }
    for (sequence, entry) in inflight {
        ledger
            .load_inflight(client_id, sequence, entry)
            .map_err(|error| invariant(INFLIGHT, error))?;
    }
    for (packet_id, value) in entries(INCOMING)? {
        let packet_id = codec::decode_u16_key(&packet_id).map_err(decoded(INCOMING))?;
        let cluster_id = codec::decode_incoming(&value).map_err(decoded(INCOMING))?;
        ledger
            .load_incoming(client_id, packet_id, cluster_id)
            .map_err(|error| invariant(INCOMING, error))?;
    }
    Ok(ledger.snapshot().sessions.into_iter().next())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::protocol::{ProtocolVersion, QoS};
    use crate::session::SubscriptionEntry;
    use crate::storage::{
        InflightState, QueuedDelivery, RocksOptions, RocksStore, SessionRecord, Store, StoreOp,
        StoredMessage,
    };

    fn session_ops(client_id: &str, first_message: u64) -> Vec<StoreOp> {
        let message = |n: u64| {
            Arc::new(StoredMessage {
                topic: "t".into(),
                payload: Bytes::from(format!("{client_id}-{n}")),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
                expires_at: None,
                cluster_id: None,
            })
        };
        let mut ops = vec![
            StoreOp::PutSession(SessionRecord {
                client_id: client_id.into(),
                protocol: ProtocolVersion::V5,
                expiry_interval: 3600,
                will: None,
                disconnected_at: Some(1_000),
            }),
            StoreOp::AddSubscription {
                client_id: client_id.into(),
                filter: "t/#".into(),
                entry: SubscriptionEntry {
                    options: Default::default(),
                    subscription_id: Some(7),
                },
            },
            StoreOp::AddIncomingQos2 {
                client_id: client_id.into(),
                packet_id: 9,
            },
        ];
        for n in first_message..first_message + 3 {
            ops.push(StoreOp::Accept {
                message_id: n,
                message: message(n),
                deliveries: vec![QueuedDelivery {
                    client_id: client_id.into(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: vec![7],
                }],
            });
        }
        ops.push(StoreOp::MarkInflight {
            client_id: client_id.into(),
            message_id: first_message,
            packet_id: 1,
            state: InflightState::AwaitingPubAck,
        });
        ops
    }

    #[tokio::test]
    async fn one_session_reads_as_the_whole_restore_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
        // "a" is a prefix of "ab" as a string, not as a length-prefixed key.
        let mut ops = session_ops("a", 1);
        ops.extend(session_ops("ab", 10));
        store.submit(ops).await.unwrap();
        let restored = store.restore(0).unwrap();
        for client_id in ["a", "ab"] {
            let whole = restored
                .sessions
                .iter()
                .find(|session| &*session.record.client_id == client_id)
                .expect("restored");
            let alone = store.read_session(client_id).unwrap().expect("read alone");
            assert_eq!(&alone, whole, "{client_id}");
            assert_eq!(alone.inflight.len(), 1);
            assert_eq!(alone.queue.len(), 2);
        }
        assert_eq!(store.read_session("nobody").unwrap(), None);
        assert!(store.has_session("ab").unwrap());
        assert!(!store.has_session("nobody").unwrap());
    }
}
