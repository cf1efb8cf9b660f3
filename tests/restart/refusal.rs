//! A database the broker cannot trust or cannot have is a refusal to start, never an
//! empty start: a corrupt database, one written by a newer schema version, one another
//! broker holds. Each exits with a non-zero status and an error naming the data
//! directory, and leaves the data as it was.

use std::path::Path;

use fleetmq::protocol::{Packet, QoS};
use fleetmq::storage::SCHEMA_VERSION;
use rocksdb::{Options, DB};

use crate::client::{publish, Client, Identity, Inbox, V5};
use crate::common::{Node, Settings};

const TOPIC: &str = "restart/refusal";

/// A node with a persistent session subscribed to `TOPIC` and one message queued for it.
async fn node_with_state() -> (Node, Identity) {
    let mut node = Node::new(Settings::default());
    let broker = node.start().await;
    let identity = Identity::persistent("refusal-sub", V5);
    let mut client = Client::connect_expecting(broker.addr, &identity, false).await;
    client.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    client.disconnect().await;
    let mut publisher =
        Client::connect_expecting(broker.addr, &Identity::clean("refusal-pub", V5), false).await;
    publisher
        .publish_acknowledged(publish(TOPIC, QoS::AtLeastOnce, 0, "kept"))
        .await;
    publisher.disconnect().await;
    broker.terminate().await;
    (node, identity)
}

/// Writes `version` as the schema version, as a newer build would have, directly with
/// RocksDB; returns the version stored before.
fn write_schema_version(database: &Path, version: u32) -> Option<u32> {
    let families = DB::list_cf(&Options::default(), database).unwrap();
    let db = DB::open_cf(&Options::default(), database, &families).unwrap();
    let meta = db.cf_handle("meta").expect("column family meta");
    let before = db
        .get_cf(meta, b"schema_version")
        .unwrap()
        .map(|bytes| u32::from_be_bytes(bytes.as_slice().try_into().unwrap()));
    db.put_cf(meta, b"schema_version", version.to_be_bytes())
        .unwrap();
    before
}

fn assert_names_data_dir(node: &Node, log: &str) {
    let path = node.data_dir.display().to_string();
    assert!(
        log.contains(&path),
        "the error names the data directory {path}:\n{log}"
    );
}

#[tokio::test]
async fn a_corrupt_database_is_refused() {
    let (mut node, _) = node_with_state().await;
    let database = node.database_dir();
    let mut overwritten = Vec::new();
    for entry in std::fs::read_dir(&database).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().is_some_and(|name| name != "LOCK") {
            let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
            std::fs::write(&path, &garbage).unwrap();
            overwritten.push((path, garbage));
        }
    }
    assert!(
        overwritten
            .iter()
            .any(|(path, _)| path.ends_with("CURRENT")),
        "{overwritten:?}"
    );
    let (_, log) = node.start_refused().await;
    assert_names_data_dir(&node, &log);
    // Refused, not repaired or replaced: the damaged files are still there.
    let current = database.join("CURRENT");
    let (_, garbage) = overwritten
        .iter()
        .find(|(path, _)| *path == current)
        .unwrap();
    assert_eq!(&std::fs::read(&current).unwrap(), garbage);
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_and_the_data_kept() {
    let (mut node, identity) = node_with_state().await;
    let database = node.database_dir();
    assert_eq!(
        write_schema_version(&database, SCHEMA_VERSION + 1),
        Some(SCHEMA_VERSION),
        "the broker stores its schema version"
    );
    let (_, log) = node.start_refused().await;
    assert_names_data_dir(&node, &log);
    assert!(log.contains("schema version"), "{log}");
    assert!(log.contains(&(SCHEMA_VERSION + 1).to_string()), "{log}");

    // Back to this build's version: everything is still there.
    write_schema_version(&database, SCHEMA_VERSION);
    let broker = node.start().await;
    let mut client = Client::connect_expecting(broker.addr, &identity, true).await;
    let mut inbox = Inbox::new();
    inbox.receive_through(&mut client, TOPIC, b"kept").await;
    client.disconnect().await;
    broker.terminate().await;
}

#[tokio::test]
async fn a_database_in_use_by_another_broker_is_refused() {
    let (mut node, identity) = node_with_state().await;
    let first = node.start().await;
    let (_, log) = node.start_refused().await;
    assert_names_data_dir(&node, &log);
    assert!(log.to_lowercase().contains("lock"), "{log}");

    // The first broker is unaffected.
    let mut client = Client::connect_expecting(first.addr, &identity, true).await;
    let mut inbox = Inbox::new();
    inbox.receive_through(&mut client, TOPIC, b"kept").await;
    client.send(&Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    client.disconnect().await;
    first.terminate().await;

    // Once it stopped, the lock is free.
    let broker = node.start().await;
    let client = Client::connect_expecting(broker.addr, &identity, true).await;
    client.disconnect().await;
    broker.terminate().await;
}
