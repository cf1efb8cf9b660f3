//! RocksDB specifics: the schema version, corrupt and locked databases are clear errors
//! naming the path, and message bodies on disk match the references.

use fleetmq::storage::{
    RocksMemory, RocksOptions, RocksStore, Store, StoreError, StoreOp, EXPIRY_NEVER, MIB,
    SCHEMA_VERSION,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WaitForCompactOptions, DB};

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

/// Bytes in the memtables of every family of `store`'s database, as RocksDB reports them
/// (mutable and immutable ones not flushed yet): independent of the budget's own count.
fn memtable_bytes(store: &RocksStore) -> u64 {
    let db = store.database();
    FAMILIES
        .iter()
        .map(|name| {
            let family = db.cf_handle(name).unwrap();
            db.property_int_value_cf(family, "rocksdb.cur-size-all-mem-tables")
                .unwrap()
                .unwrap()
        })
        .sum()
}

/// Waits until the flushes the writes scheduled are done (RocksDB's own wait, bounded).
fn wait_for_flushes(store: &RocksStore) {
    let mut options = WaitForCompactOptions::default();
    options.set_timeout(60_000_000);
    store.database().wait_for_compact(&options).unwrap();
}

/// Every database opened with one `RocksMemory` shares its memtable budget. Four stores
/// get 1.5 MiB of messages each, 6 MiB together against a budget of 4 MiB: no family
/// alone reaches its own limit (the budget, 4 MiB), so only the shared budget makes them
/// flush. Nothing written is lost to the flushes, and reopening reads the flushed files
/// through the shared block cache, which stays within its capacity.
#[test]
fn databases_sharing_a_memory_budget_flush_to_stay_within_it() {
    const STORES: usize = 4;
    const ROUNDS: usize = 12;
    const MESSAGES_PER_ROUND: usize = 8;
    let budget = 4 * MIB;
    let memory = RocksMemory::new(budget, MIB);
    let options = RocksOptions {
        memory: memory.clone(),
        ..RocksOptions::default()
    };
    let dirs: Vec<_> = (0..STORES).map(|_| tempfile::tempdir().unwrap()).collect();
    let open_all = |options: &RocksOptions| -> Vec<RocksStore> {
        dirs.iter()
            .map(|dir| RocksStore::open(dir.path(), options.clone()).unwrap())
            .collect()
    };
    let stores = open_all(&options);
    for store in &stores {
        apply(
            store,
            vec![StoreOp::PutSession(session("sink", EXPIRY_NEVER))],
        );
    }
    let payload = "x".repeat(16 * 1024);
    let mut message_id = 0;
    for _ in 0..ROUNDS {
        for store in &stores {
            let ops = (0..MESSAGES_PER_ROUND)
                .map(|_| {
                    message_id += 1;
                    accept(message_id, &message("fleet/telemetry", &payload), &["sink"])
                })
                .collect();
            apply(store, ops);
        }
    }
    stores.iter().for_each(wait_for_flushes);
    // The budget is a target RocksDB checks as each write lands, counting memory in arena
    // blocks of an eighth of it: the memtables end a few blocks over it at most (3.5 to
    // 4.6 MiB here; 10 MiB without the shared budget).
    let bound = budget as u64 * 3 / 2;
    let held: u64 = stores.iter().map(memtable_bytes).sum();
    assert!(
        held <= bound,
        "{held} bytes in memtables after 6 MiB written, budget {budget}"
    );
    // What the budget counts (the metric) is what the databases hold.
    let counted = memory.usage().memtables;
    assert!(
        counted >= held && counted <= bound,
        "the budget counts {counted} bytes, the databases hold {held}"
    );
    drop(stores);

    let cache = 256 * 1024;
    let reopened = RocksOptions {
        memory: RocksMemory::new(budget, cache),
        ..RocksOptions::default()
    };
    let stores = open_all(&reopened);
    // Opening read every record, most of them from the flushed files.
    let cached = reopened.memory.usage().block_cache;
    assert!(
        cached > 0 && cached <= cache as u64,
        "{cached} bytes in a block cache of {cache}"
    );
    for store in &stores {
        let state = store.restore(0).unwrap();
        assert_eq!(state.sessions.len(), 1);
        assert_eq!(state.sessions[0].queue.len(), ROUNDS * MESSAGES_PER_ROUND);
    }
}
