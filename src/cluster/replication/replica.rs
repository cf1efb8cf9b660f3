//! The backup's side: one RocksDB store per origin node under
//! `<data_dir>/replicas/<origin id>` (the layout of a node's own store; only the session
//! tables are used), written in the order the origin sent, and read when the origin is
//! down and one of its sessions is claimed elsewhere (failover).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::storage::{
    RestoredSession, RestoredState, RocksOptions, RocksStore, Store, StoreOp, SyncMode, WallClock,
};

use super::super::config::NodeId;
use super::{lock, Batch};

/// The copy of one origin's sessions.
struct Replica {
    store: Arc<RocksStore>,
    /// The origin's current stream (`Batch::generation`); held while a batch is written,
    /// so batches of one origin are applied one after the other.
    generation: tokio::sync::Mutex<u64>,
}

/// Everything `replica` holds, read off the runtime's threads.
async fn restore_copy(replica: &Replica) -> Result<RestoredState, String> {
    let store = replica.store.clone();
    tokio::task::spawn_blocking(move || store.restore(WallClock::now().unix_millis()))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())
}

/// This node's copies of other nodes' sessions.
pub struct Replicas {
    dir: PathBuf,
    sync: SyncMode,
    open: Mutex<HashMap<NodeId, Arc<Replica>>>,
    /// Held while a copy is opened: RocksDB refuses a second open of one database.
    opening: tokio::sync::Mutex<()>,
}

impl Replicas {
    /// Copies under `data_dir/replicas`, written with the node's `[storage] sync`.
    pub fn new(data_dir: &std::path::Path, sync: SyncMode) -> Replicas {
        Replicas {
            dir: data_dir.join("replicas"),
            sync,
            open: Mutex::default(),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    async fn replica(&self, origin: NodeId) -> Result<Arc<Replica>, String> {
        if let Some(replica) = lock(&self.open).get(&origin) {
            return Ok(replica.clone());
        }
        let _opening = self.opening.lock().await;
        if let Some(replica) = lock(&self.open).get(&origin) {
            return Ok(replica.clone());
        }
        let path = self.dir.join(origin.to_string());
        let options = RocksOptions {
            sync: self.sync,
            ..RocksOptions::default()
        };
        let store = tokio::task::spawn_blocking(move || RocksStore::open(path, options))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        let replica = Arc::new(Replica {
            store: Arc::new(store),
            generation: tokio::sync::Mutex::new(0),
        });
        lock(&self.open).insert(origin, replica.clone());
        Ok(replica)
    }

    /// Applies one batch of `origin`'s stream; `Ok` once durable.
    pub async fn apply(&self, origin: NodeId, batch: Batch) -> Result<(), String> {
        let replica = self.replica(origin).await?;
        let mut generation = replica.generation.lock().await;
        let mut ops = Vec::with_capacity(batch.ops.len());
        if batch.reset {
            let held = restore_copy(&replica).await?;
            ops.extend(
                held.sessions
                    .into_iter()
                    .map(|session| StoreOp::RemoveSession {
                        client_id: session.record.client_id,
                    }),
            );
            *generation = batch.generation;
        } else if batch.generation != *generation {
            return Err("a batch of an earlier stream: resync first".into());
        }
        for op in batch.ops {
            ops.push(op.decode().ok_or("an operation did not decode")?);
        }
        if ops.is_empty() {
            return Ok(());
        }
        replica
            .store
            .submit(ops)
            .await
            .map_err(|error| error.to_string())
    }

    /// The copy of `client_id`'s session that `origin` replicated here, if any: that
    /// session alone is read (a failover costs the session's size, not the copy's).
    pub async fn session(&self, origin: NodeId, client_id: &str) -> Option<RestoredSession> {
        let replica = self.replica(origin).await.ok()?;
        // No batch of the origin is written meanwhile.
        let _stream = replica.generation.lock().await;
        let store = replica.store.clone();
        let client_id = client_id.to_string();
        let read = tokio::task::spawn_blocking(move || store.read_session(&client_id)).await;
        match read {
            Ok(Ok(session)) => session,
            Ok(Err(error)) => {
                tracing::warn!(origin, %error, "a session of a backup copy could not be read");
                None
            }
            Err(_) => None,
        }
    }

    /// Those of `client_ids` whose session `origin`'s copy holds (an adoption's
    /// candidates): only their records are looked up, and nothing leaves the copy (a
    /// session that expired there stays, with the will it owes, until it is adopted).
    pub async fn holding(
        &self,
        origin: NodeId,
        client_ids: Vec<String>,
    ) -> Result<Vec<String>, String> {
        let replica = self.replica(origin).await?;
        let _stream = replica.generation.lock().await;
        let store = replica.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut held = Vec::new();
            for client_id in client_ids {
                if store
                    .has_session(&client_id)
                    .map_err(|error| error.to_string())?
                {
                    held.push(client_id);
                }
            }
            Ok(held)
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// The session moved on from a failover: its copy goes.
    pub async fn forget(&self, origin: NodeId, client_id: &str) {
        let Ok(replica) = self.replica(origin).await else {
            return;
        };
        let _stream = replica.generation.lock().await;
        let _ = replica
            .store
            .submit(vec![StoreOp::RemoveSession {
                client_id: client_id.into(),
            }])
            .await;
    }
}
