//! RocksDB specifics: the schema version, corrupt and locked databases are clear errors
//! naming the path, and message bodies on disk match the references.

use fleetmq::storage::{
    RocksOptions, RocksStore, StoreError, StoreOp, EXPIRY_NEVER, SCHEMA_VERSION,
};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::common::*;

const FAMILIES: [&str; 8] = [
    "meta",
    "sessions",
    "subscriptions",
    "retained",
    "messages",
    "queue",
    "inflight",
    "incoming",
];

/// Opens the database directly, as a tool inspecting or damaging it would.
fn raw(path: &std::path::Path) -> DB {
    let descriptors = FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    DB::open_cf_descriptors(&Options::default(), path, descriptors).unwrap()
}

fn count(db: &DB, family: &str) -> usize {
    let family = db.cf_handle(family).unwrap();
    db.iterator_cf(family, rocksdb::IteratorMode::Start).count()
}

fn open_error(path: &std::path::Path) -> StoreError {
    match RocksStore::open(path, RocksOptions::default()) {
        Ok(_) => panic!("opening {} should fail", path.display()),
        Err(error) => error,
    }
}

#[test]
fn bodies_on_disk_are_written_once_and_deleted_with_the_last_reference() {
    let mut backend = RocksBackend::new(fleetmq::storage::SyncMode::Batch);
    let clients: Vec<String> = (0..50).map(|n| format!("sensor-{n}")).collect();
    let names: Vec<&str> = clients.iter().map(String::as_str).collect();
    let mut ops: Vec<StoreOp> = names
        .iter()
        .map(|c| StoreOp::PutSession(session(c, EXPIRY_NEVER)))
        .collect();
    ops.push(accept(1, &message("fleet/ota", "firmware"), &names));
    apply(backend.store(), ops);
    drop(backend.store.take());
    {
        let db = raw(&backend.path());
        assert_eq!(count(&db, "messages"), 1);
        assert_eq!(count(&db, "queue"), 50);
    }
    backend.reopen();
    let removals = names
        .iter()
        .map(|c| StoreOp::RemoveSession { client_id: id(c) })
        .collect();
    apply(backend.store(), removals);
    drop(backend.store.take());
    let db = raw(&backend.path());
    assert_eq!(count(&db, "messages"), 0);
    assert_eq!(count(&db, "queue"), 0);
    assert_eq!(count(&db, "sessions"), 0);
}

#[test]
fn a_newer_schema_version_is_refused_with_the_path() {
    let backend = RocksBackend::new(fleetmq::storage::SyncMode::Batch);
    let path = backend.path();
    drop(backend.store);
    {
        let db = raw(&path);
        let meta = db.cf_handle("meta").unwrap();
        assert_eq!(
            db.get_cf(meta, b"schema_version").unwrap().unwrap(),
            SCHEMA_VERSION.to_be_bytes()
        );
        db.put_cf(meta, b"schema_version", (SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
    }
    let error = open_error(&path);
    assert!(
        matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{error}"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_corrupt_record_is_an_error_naming_the_column_family_and_key() {
    let backend = RocksBackend::new(fleetmq::storage::SyncMode::Batch);
    apply(
        backend.store(),
        vec![StoreOp::PutSession(session("truck-9", EXPIRY_NEVER))],
    );
    let path = backend.path();
    drop(backend.store);
    {
        let db = raw(&path);
        let sessions = db.cf_handle("sessions").unwrap();
        db.put_cf(sessions, b"truck-9", [1, 5, 0xFF]).unwrap();
    }
    let error = open_error(&path);
    let text = error.to_string();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("sessions") && text.contains("truck-9"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_dangling_reference_is_an_error_not_a_silent_loss() {
    let backend = RocksBackend::new(fleetmq::storage::SyncMode::Batch);
    apply(
        backend.store(),
        vec![
            StoreOp::PutSession(session("c", EXPIRY_NEVER)),
            accept(1, &message("t", "x"), &["c"]),
        ],
    );
    let path = backend.path();
    drop(backend.store);
    {
        let db = raw(&path);
        let messages = db.cf_handle("messages").unwrap();
        db.delete_cf(messages, 1u64.to_be_bytes()).unwrap();
    }
    let text = open_error(&path).to_string();
    assert!(
        text.contains("queue") && text.contains("not stored"),
        "{text}"
    );
}

#[test]
fn data_without_a_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let descriptors =
            FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir.path(), descriptors).unwrap();
        let retained = db.cf_handle("retained").unwrap();
        db.put_cf(retained, b"a", b"b").unwrap();
    }
    let text = open_error(dir.path()).to_string();
    assert!(text.contains("no schema version"), "{text}");
}

#[test]
fn a_database_in_use_is_locked() {
    let backend = RocksBackend::new(fleetmq::storage::SyncMode::Batch);
    let error = open_error(&backend.path());
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert!(error
        .to_string()
        .contains(&backend.path().display().to_string()));
}

#[test]
fn a_path_that_is_a_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let error = open_error(&file);
    assert!(matches!(error, StoreError::Open { .. }), "{error}");
}
