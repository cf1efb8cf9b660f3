//! Both backends behind one interface (with a reopen that really reopens RocksDB from
//! disk), and builders for records.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use fleetmq::protocol::{
    ProtocolVersion, PublishProperties, QoS, RetainHandling, SubscriptionOptions, Will,
    WillProperties,
};
use fleetmq::session::SubscriptionEntry;
use fleetmq::storage::{
    MemoryStore, QueuedDelivery, SessionRecord, Store, StoreOp, StoredMessage, UnixMillis,
};

/// A store under test. `reopen` drops and reopens a RocksDB store, so what is checked
/// afterwards comes from disk; the memory store has nothing to reopen.
pub trait Backend {
    fn store(&self) -> &dyn Store;
    fn reopen(&mut self);
    fn name(&self) -> &'static str;
}

pub struct MemoryBackend(MemoryStore);

impl Backend for MemoryBackend {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    fn reopen(&mut self) {}
    fn name(&self) -> &'static str {
        "memory"
    }
}

pub fn memory() -> Box<dyn Backend> {
    Box::new(MemoryBackend(MemoryStore::new()))
}

/// Submits and waits for durability.
pub fn apply(store: &dyn Store, ops: Vec<StoreOp>) {
    store.submit(ops).wait().unwrap();
}

pub fn session(client_id: &str, expiry_interval: u32) -> SessionRecord {
    SessionRecord {
        client_id: client_id.into(),
        protocol: ProtocolVersion::V5,
        expiry_interval,
        will: None,
        disconnected_at: None,
    }
}

pub fn will() -> Will {
    Will {
        topic: "fleet/status".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(30),
            message_expiry_interval: Some(300),
            content_type: Some("text/plain".into()),
            user_properties: vec![("site".into(), "berlin".into())],
            ..WillProperties::default()
        },
    }
}

pub fn message(topic: &str, payload: &str) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        },
        expires_at: None,
        cluster_id: None,
    })
}

pub fn expiring(topic: &str, expires_at: UnixMillis) -> Arc<StoredMessage> {
    let mut stored = (*message(topic, "expiring")).clone();
    stored.expires_at = Some(expires_at);
    Arc::new(stored)
}

pub fn delivery(client_id: &str, qos: QoS) -> QueuedDelivery {
    QueuedDelivery {
        client_id: client_id.into(),
        qos,
        retain: false,
        subscription_ids: vec![3],
    }
}

pub fn accept(message_id: u64, message: &Arc<StoredMessage>, clients: &[&str]) -> StoreOp {
    StoreOp::Accept {
        message_id,
        message: message.clone(),
        deliveries: clients
            .iter()
            .map(|client| delivery(client, QoS::AtLeastOnce))
            .collect(),
    }
}

pub fn subscription(qos: QoS, subscription_id: Option<u32>) -> SubscriptionEntry {
    SubscriptionEntry {
        options: SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        },
        subscription_id,
    }
}

pub fn id(client_id: &str) -> ByteString {
    client_id.into()
}

/// The RocksDB backend, built with the `rocksdb` feature.
#[cfg(feature = "rocksdb")]
mod rocks_backend {
    use fleetmq::storage::{RocksOptions, RocksStore, Store, SyncMode};
    use tempfile::TempDir;

    use super::Backend;

    pub struct RocksBackend {
        pub dir: TempDir,
        pub store: Option<RocksStore>,
        pub options: RocksOptions,
    }

    impl RocksBackend {
        pub fn new(sync: SyncMode) -> RocksBackend {
            let dir = tempfile::tempdir().unwrap();
            let options = RocksOptions {
                sync,
                ..RocksOptions::default()
            };
            let store = RocksStore::open(dir.path().join("db"), options.clone()).unwrap();
            RocksBackend {
                dir,
                store: Some(store),
                options,
            }
        }

        pub fn path(&self) -> std::path::PathBuf {
            self.dir.path().join("db")
        }
    }

    impl Backend for RocksBackend {
        fn store(&self) -> &dyn Store {
            self.store.as_ref().unwrap()
        }
        fn reopen(&mut self) {
            drop(self.store.take());
            self.store = Some(RocksStore::open(self.path(), self.options.clone()).unwrap());
        }
        fn name(&self) -> &'static str {
            "rocksdb"
        }
    }

    pub fn rocks() -> Box<dyn Backend> {
        Box::new(RocksBackend::new(SyncMode::Batch))
    }
}

#[cfg(feature = "rocksdb")]
pub use rocks_backend::*;
