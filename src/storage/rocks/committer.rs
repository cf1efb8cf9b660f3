//! The writer thread's side of the RocksDB store: turning operations into one
//! `WriteBatch`, and scanning the database into a ledger (at open, at restore, and to
//! repair the index after a failed write).

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::session::SubscriptionEntry;
use crate::storage::codec::{self, DecodeError, QueueValue};
use crate::storage::ledger::{Inflight, Ledger, LoadError, Mutations};
use crate::storage::record::{
    MessageId, RestoredState, SessionRecord, StoreOp, StoredMessage, UnixMillis,
};
use crate::storage::writer::Committer;
use crate::storage::StoreError;

use super::{INCOMING, INFLIGHT, MESSAGES, QUEUE, RETAINED, SESSIONS, SUBSCRIPTIONS};

/// The column family handles, borrowed from the database for one batch.
struct Families<'a> {
    sessions: &'a ColumnFamily,
    subscriptions: &'a ColumnFamily,
    retained: &'a ColumnFamily,
    messages: &'a ColumnFamily,
    queue: &'a ColumnFamily,
    inflight: &'a ColumnFamily,
    incoming: &'a ColumnFamily,
}

impl<'a> Families<'a> {
    fn new(db: &'a DB, path: &Path) -> Result<Families<'a>, StoreError> {
        let get = |name: &str| {
            db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("column family {name} is missing"),
            })
        };
        Ok(Families {
            sessions: get(SESSIONS)?,
            subscriptions: get(SUBSCRIPTIONS)?,
            retained: get(RETAINED)?,
            messages: get(MESSAGES)?,
            queue: get(QUEUE)?,
            inflight: get(INFLIGHT)?,
            incoming: get(INCOMING)?,
        })
    }
}

/// Collects a ledger's changes into a `WriteBatch`.
struct BatchMutations<'a> {
    batch: WriteBatch,
    families: Families<'a>,
}

impl Mutations for BatchMutations<'_> {
    fn put_session(&mut self, record: &SessionRecord) {
        let value = codec::encode_session(record);
        self.batch
            .put_cf(self.families.sessions, record.client_id.as_bytes(), value);
    }
    fn delete_session(&mut self, client_id: &str) {
        self.batch
            .delete_cf(self.families.sessions, client_id.as_bytes());
    }
    fn put_subscription(&mut self, client_id: &str, filter: &str, entry: &SubscriptionEntry) {
        let key = codec::subscription_key(client_id, filter);
        let value = codec::encode_subscription(entry);
        self.batch.put_cf(self.families.subscriptions, key, value);
    }
    fn delete_subscription(&mut self, client_id: &str, filter: &str) {
        let key = codec::subscription_key(client_id, filter);
        self.batch.delete_cf(self.families.subscriptions, key);
    }
    fn put_retained(&mut self, message: &StoredMessage) {
        let value = codec::encode_message(message);
        self.batch
            .put_cf(self.families.retained, message.topic.as_bytes(), value);
    }
    fn delete_retained(&mut self, topic: &str) {
        self.batch
            .delete_cf(self.families.retained, topic.as_bytes());
    }
    fn put_body(&mut self, message_id: MessageId, message: &StoredMessage) {
        let value = codec::encode_message(message);
        self.batch.put_cf(
            self.families.messages,
            codec::message_key(message_id),
            value,
        );
    }
    fn delete_body(&mut self, message_id: MessageId) {
        self.batch
            .delete_cf(self.families.messages, codec::message_key(message_id));
    }
    fn put_queued(&mut self, client_id: &str, sequence: u64, value: &QueueValue) {
        let key = codec::sequence_key(client_id, sequence);
        self.batch
            .put_cf(self.families.queue, key, codec::encode_queued(value));
    }
    fn delete_queued(&mut self, client_id: &str, sequence: u64) {
        let key = codec::sequence_key(client_id, sequence);
        self.batch.delete_cf(self.families.queue, key);
    }
    fn put_inflight(&mut self, client_id: &str, sequence: u64, inflight: &Inflight) {
        let key = codec::sequence_key(client_id, sequence);
        let value = codec::encode_inflight(&inflight.value, inflight.packet_id, inflight.state);
        self.batch.put_cf(self.families.inflight, key, value);
    }
    fn delete_inflight(&mut self, client_id: &str, sequence: u64) {
        let key = codec::sequence_key(client_id, sequence);
        self.batch.delete_cf(self.families.inflight, key);
    }
    fn put_incoming(
        &mut self,
        client_id: &str,
        packet_id: u16,
        cluster_id: Option<crate::message::ClusterMessageId>,
    ) {
        let key = codec::incoming_key(client_id, packet_id);
        self.batch.put_cf(
            self.families.incoming,
            key,
            codec::encode_incoming(cluster_id),
        );
    }
    fn delete_incoming(&mut self, client_id: &str, packet_id: u16) {
        let key = codec::incoming_key(client_id, packet_id);
        self.batch.delete_cf(self.families.incoming, key);
    }
}

pub(super) struct RocksCommitter {
    db: std::sync::Arc<DB>,
    path: PathBuf,
    /// The ledger without bodies: what is stored, to translate operations into keys.
    index: Ledger,
    /// Set after a failed write, which may have left the index ahead of the disk; the
    /// index is then rebuilt from the disk before the next write.
    index_stale: bool,
}

impl RocksCommitter {
    /// Scans the database into an index, deleting unreferenced bodies.
    pub(super) fn load(
        db: std::sync::Arc<DB>,
        path: PathBuf,
    ) -> Result<RocksCommitter, StoreError> {
        let mut committer = RocksCommitter {
            db,
            path,
            index: Ledger::new(false),
            index_stale: false,
        };
        committer.index = committer.load_ledger(false, true, |_| Vec::new())?;
        Ok(committer)
    }

    pub(super) fn max_message_id(&self) -> Option<MessageId> {
        self.index.max_message_id()
    }

    /// Scans everything into a ledger, then writes, in one batch, the deletion of
    /// unreferenced bodies and the operations `follow_up` derives from the scanned state.
    fn load_ledger(
        &self,
        keep_bodies: bool,
        sync: bool,
        follow_up: impl FnOnce(&Ledger) -> Vec<StoreOp>,
    ) -> Result<Ledger, StoreError> {
        let families = Families::new(&self.db, &self.path)?;
        let mut ledger = scan(&self.db, &self.path, &families, keep_bodies)?;
        let mut out = BatchMutations {
            batch: WriteBatch::default(),
            families,
        };
        ledger.finish_load(&mut out);
        for op in &follow_up(&ledger) {
            ledger.apply(op, &mut out);
        }
        if !out.batch.is_empty() {
            self.write(out.batch, sync)?;
        }
        Ok(ledger)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db
            .write_opt(batch, &options)
            .map_err(|error| StoreError::Io(format!("writing to {}: {error}", self.path.display())))
    }
}

impl Committer for RocksCommitter {
    fn commit(&mut self, groups: &[Vec<StoreOp>], sync: bool) -> Result<(), StoreError> {
        if self.index_stale {
            self.index = self.load_ledger(false, sync, |_| Vec::new())?;
            self.index_stale = false;
        }
        let mut out = BatchMutations {
            batch: WriteBatch::default(),
            families: Families::new(&self.db, &self.path)?,
        };
        for op in groups.iter().flatten() {
            self.index.apply(op, &mut out);
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        let result = self.db.write_opt(out.batch, &options);
        result.map_err(|error| {
            self.index_stale = true;
            StoreError::Io(format!("writing to {}: {error}", self.path.display()))
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|error| {
            StoreError::Io(format!(
                "syncing the WAL of {}: {error}",
                self.path.display()
            ))
        })
    }

    fn restore(&mut self, now: UnixMillis) -> Result<RestoredState, StoreError> {
        // Expiry needs the bodies (message expiry), so this ledger keeps them for now.
        let mut expired = Vec::new();
        let mut full = self.load_ledger(true, true, |ledger| {
            let (ops, sessions) = ledger.expiry_ops(now);
            expired = sessions;
            ops
        })?;
        let mut state = full.snapshot();
        state.expired_sessions = expired;
        full.drop_bodies();
        self.index = full;
        self.index_stale = false;
        Ok(state)
    }

    fn body_count(&self) -> usize {
        self.index.body_count()
    }
}

/// Shows a key for an error message: printable ASCII as is, other bytes as `\xNN`.
fn display_key(key: &[u8]) -> String {
    const SHOWN: usize = 96;
    let mut shown: String = key
        .iter()
        .take(SHOWN)
        .map(|&byte| {
            if byte.is_ascii_graphic() || byte == b' ' {
                char::from(byte).to_string()
            } else {
                format!("\\x{byte:02x}")
            }
        })
        .collect();
    if key.len() > SHOWN {
        shown.push_str("...");
    }
    shown
}

/// Decodes one record (key, value) of a column family into the ledger being loaded.
type RecordHandler<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), DecodeError> + 'a;

/// Reads every record into a ledger. Any record that does not decode, or that breaks
/// the ledger's invariants, is an error naming the column family and key.
fn scan(
    db: &DB,
    path: &Path,
    families: &Families<'_>,
    keep_bodies: bool,
) -> Result<Ledger, StoreError> {
    let mut ledger = Ledger::new(keep_bodies);
    let each = |family: &ColumnFamily,
                name: &str,
                handle: &mut RecordHandler<'_>|
     -> Result<(), StoreError> {
        for item in db.iterator_cf(family, IteratorMode::Start) {
            let (key, value) = item.map_err(|error| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("reading column family {name}: {error}"),
            })?;
            handle(&key, &value).map_err(|error| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "column family {name}, key \"{}\": {error}",
                    display_key(&key)
                ),
            })?;
        }
        Ok(())
    };
    let invariant = |error: LoadError| {
        DecodeError(match error {
            LoadError::NoSession => "entry of a client id that has no session record",
            LoadError::NoBody => "entry refers to a message body that is not stored",
        })
    };
    each(families.messages, MESSAGES, &mut |key, value| {
        let message_id = codec::decode_u64_key(key)?;
        ledger.load_body(message_id, codec::decode_message(value)?);
        Ok(())
    })?;
    each(families.retained, RETAINED, &mut |key, value| {
        let message = codec::decode_message(value)?;
        if message.topic.as_bytes() != key {
            return Err(DecodeError("retained message topic differs from its key"));
        }
        ledger.load_retained(message);
        Ok(())
    })?;
    each(families.sessions, SESSIONS, &mut |key, value| {
        let client_id = codec::decode_string_key(key)?;
        ledger.load_session(codec::decode_session(client_id, value)?);
        Ok(())
    })?;
    each(families.subscriptions, SUBSCRIPTIONS, &mut |key, value| {
        let (client_id, filter) = codec::split_client_key(key)?;
        let filter = codec::decode_string_key(filter)?;
        let entry = codec::decode_subscription(value)?;
        ledger
            .load_subscription(&client_id, filter, entry)
            .map_err(invariant)
    })?;
    each(families.queue, QUEUE, &mut |key, value| {
        let (client_id, sequence) = codec::split_client_key(key)?;
        let sequence = codec::decode_u64_key(sequence)?;
        let value = codec::decode_queued(value)?;
        ledger
            .load_queued(&client_id, sequence, value)
            .map_err(invariant)
    })?;
    each(families.inflight, INFLIGHT, &mut |key, value| {
        let (client_id, sequence) = codec::split_client_key(key)?;
        let sequence = codec::decode_u64_key(sequence)?;
        let (value, packet_id, state) = codec::decode_inflight(value)?;
        let inflight = Inflight {
            value,
            packet_id,
            state,
        };
        ledger
            .load_inflight(&client_id, sequence, inflight)
            .map_err(invariant)
    })?;
    each(families.incoming, INCOMING, &mut |key, value| {
        let (client_id, packet_id) = codec::split_client_key(key)?;
        let packet_id = codec::decode_u16_key(packet_id)?;
        let cluster_id = codec::decode_incoming(value)?;
        ledger
            .load_incoming(&client_id, packet_id, cluster_id)
            .map_err(invariant)
    })?;
    Ok(ledger)
}
