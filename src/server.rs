//! Starting and stopping the broker: opens the store and restores the broker's state
//! from it, loads the security files, binds the listeners (`crate::listener` runs their
//! accept loops and hands each connection to `crate::connection`), and reloads
//! certificates, passwords and ACLs on request. Shutdown flushes the store last.
//!
//! Each listener's accept loop owns the tasks of the connections it accepted, so
//! shutdown can wait for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::auth::Security;
use crate::bridge::{BridgeStats, Bridges};
use crate::broker::Broker;
use crate::config::Config;
use crate::config::StorageConfig;
use crate::listener::{ConnectionCounter, Listener, TlsTerminator};
use crate::metrics::{Metrics, StorageMetrics};
use crate::storage::{MemoryStore, Store, WallClock};

/// A running broker. Dropping it does not stop the broker; call `shutdown`.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    broker: Arc<Broker>,
    accept_loops: Vec<JoinHandle<()>>,
    scheduler: JoinHandle<()>,
    sys_topics: JoinHandle<()>,
    files: Arc<SecurityFiles>,
    connections: Arc<ConnectionCounter>,
    bridges: Arc<Bridges>,
    cluster: Option<crate::cluster::Running>,
}

/// The files the broker re-reads on reload without a restart: the password and ACL
/// files, and each TLS listener's certificates. Shared with the admin API's reload.
pub struct SecurityFiles {
    security: Arc<Security>,
    tls: Vec<(SocketAddr, Arc<TlsTerminator>)>,
}

impl SecurityFiles {
    /// Reads certificates, keys, CA files, the password file and the ACL file again.
    /// Connected clients stay connected. A file that fails to load keeps the version in
    /// force; each failure is logged and returned as a message.
    pub fn reload(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .security
            .reload()
            .into_iter()
            .map(|error| error.to_string())
            .collect();
        for (addr, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(%addr, "TLS certificates reloaded"),
                Err(error) => {
                    tracing::error!(%addr, %error, "TLS reload failed; keeping the previous certificates");
                    errors.push(format!("listener {addr}: {error}"));
                }
            }
        }
        errors
    }
}

impl ServerHandle {
    /// The bound address of the first listener (useful with port 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        // `start` refuses a configuration without listeners, so there is a first one.
        self.addrs[0]
    }

    /// The bound address of every listener, in config order.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The shared broker state (statistics, sessions), for operators and tests.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The bridges to remote brokers (status, for operators and tests).
    pub fn bridges(&self) -> &Arc<Bridges> {
        &self.bridges
    }

    /// The cluster's administration (status, membership changes), on a cluster node.
    pub fn cluster_admin(&self) -> Option<Arc<dyn crate::admin::ClusterAdmin>> {
        #[cfg(feature = "rocksdb")]
        return self
            .cluster
            .as_ref()
            .map(|running| running.node.clone() as Arc<dyn crate::admin::ClusterAdmin>);
        #[cfg(not(feature = "rocksdb"))]
        return None;
    }

    /// Whether every task of the broker still runs and its registry can be locked (a
    /// deadlock would block this call, which stops the systemd watchdog pings).
    pub fn is_healthy(&self) -> bool {
        let _ = self.broker.session_count();
        !self.scheduler.is_finished()
            && !self.sys_topics.is_finished()
            && self.accept_loops.iter().all(|task| !task.is_finished())
    }

    /// This node's cluster membership (`[cluster]`), if any.
    #[cfg(feature = "rocksdb")]
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterNode>> {
        self.cluster.as_ref().map(|running| &running.node)
    }

    /// Open client connections, all listeners together.
    pub fn open_connections(&self) -> u32 {
        self.connections.open()
    }

    /// Reads certificates, keys, CA files, the password file and the ACL file again
    /// (SIGHUP); see `SecurityFiles::reload`.
    pub fn reload(&self) -> Vec<String> {
        self.files.reload()
    }

    /// The files `reload` re-reads, for the admin API's reload.
    pub fn security_files(&self) -> Arc<SecurityFiles> {
        self.files.clone()
    }

    /// Stops accepting, disconnects clients (MQTT 5: DISCONNECT 0x8B), waits for the
    /// connection tasks to end, and flushes the store, so that everything the sessions
    /// recorded on the way out is on disk.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.broker.begin_shutdown();
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        let _ = self.scheduler.await;
        let _ = self.sys_topics.await;
        self.bridges.stopped().await;
        self.broker.flush_store().await;
    }
}

/// Spawns a task that runs as long as the broker does; if it ends, `/health` names it.
fn spawn_watched(
    broker: &Arc<Broker>,
    what: String,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let broker = broker.clone();
    tokio::spawn(async move {
        task.await;
        if !broker.is_shutting_down() {
            tracing::error!("{what} stopped");
        }
        broker.health().task_stopped(what);
    })
}

/// Opens the store `config` asks for: RocksDB under `data_dir`, or memory.
/// The RocksDB database behind the store, for the cluster's Raft column families.
#[cfg(feature = "rocksdb")]
type Database = Option<Arc<rocksdb::DB>>;
#[cfg(not(feature = "rocksdb"))]
type Database = Option<()>;

/// RocksDB's memory budgets (`[storage] write_buffer_mb`, `block_cache_mb`), shared by
/// every database the node opens: its store and the backup copies of replication.
#[cfg(feature = "rocksdb")]
type StorageMemory = crate::storage::RocksMemory;
#[cfg(not(feature = "rocksdb"))]
type StorageMemory = ();

#[cfg(feature = "rocksdb")]
fn storage_memory(config: &StorageConfig) -> StorageMemory {
    use crate::storage::{RocksMemory, MIB};
    // Saturating: 65,536 MiB does not fit a 32-bit gateway's address space.
    let bytes = |mib: u32| (mib as usize).saturating_mul(MIB);
    RocksMemory::new(bytes(config.write_buffer_mb), bytes(config.block_cache_mb))
}

#[cfg(not(feature = "rocksdb"))]
fn storage_memory(_: &StorageConfig) -> StorageMemory {}

fn open_store(
    config: &StorageConfig,
    memory: StorageMemory,
    latency: StorageMetrics,
    cluster: bool,
) -> anyhow::Result<(Arc<dyn Store>, Database)> {
    if !config.persistence {
        tracing::warn!("persistence is off: sessions, queued and retained messages live in memory only and a restart loses them");
        return Ok((Arc::new(MemoryStore::new()), None));
    }
    open_rocks(config, memory, latency, cluster)
}

#[cfg(feature = "rocksdb")]
fn open_rocks(
    config: &StorageConfig,
    memory: StorageMemory,
    latency: StorageMetrics,
    cluster: bool,
) -> anyhow::Result<(Arc<dyn Store>, Database)> {
    use crate::storage::{RocksOptions, RocksStore};
    let options = RocksOptions {
        sync: config.sync,
        raft_families: cluster,
        memory,
        ..RocksOptions::default()
    };
    let store = RocksStore::open_with_metrics(&config.data_dir, options, Some(latency))?;
    tracing::info!(path = %config.data_dir.display(), sync = ?config.sync, "storage opened");
    let database = store.database();
    Ok((Arc::new(store), Some(database)))
}

#[cfg(not(feature = "rocksdb"))]
fn open_rocks(
    _: &StorageConfig,
    _: StorageMemory,
    _: StorageMetrics,
    _: bool,
) -> anyhow::Result<(Arc<dyn Store>, Database)> {
    anyhow::bail!("this build has no durable store (built without the `rocksdb` feature); set storage.persistence = false")
}

/// Opens the store and builds the broker from what it holds. Blocking work (opening and
/// reading the database) runs off the async executor.
/// What `restore_broker` hands to `start`: the broker, the bridges prepared with their
/// outboxes' limits, and the database (a cluster node keeps its Raft state in it).
type Restored = (
    Arc<Broker>,
    HashMap<String, Arc<BridgeStats>>,
    Database,
    Option<Replication>,
);

/// Replication of a cluster node's persistent sessions (`[cluster] replication_factor`).
#[cfg(feature = "rocksdb")]
type Replication = crate::cluster::replication::Replication;
#[cfg(not(feature = "rocksdb"))]
type Replication = ();

async fn restore_broker(config: Config) -> anyhow::Result<Restored> {
    let metrics = Metrics::new();
    let latency = metrics.storage().clone();
    let storage = config.storage.clone();
    let cluster_config = config.cluster.clone();
    let (store, database, state, replication) = tokio::task::spawn_blocking(move || {
        let memory = storage_memory(&storage);
        let (store, database) =
            open_store(&storage, memory.clone(), latency, cluster_config.is_some())?;
        let (store, replication) = replicate(store, cluster_config.as_ref(), &storage, memory);
        let state = store.restore(WallClock::now().unix_millis())?;
        anyhow::Ok((store, database, state, replication))
    })
    .await
    .context("the storage task failed")??;
    let broker = Broker::with_metrics(config.clone(), store, metrics);
    // Bridges' outboxes are restored with their own limits.
    let bridges = Bridges::prepare(&broker, &config);
    if config.cluster.is_some() {
        // A backup may have adopted this node's sessions while it was down: their wills
        // wait until the node caught up with the cluster (`cluster::adoption`).
        broker.hold_wills();
    }
    let restored = broker.restore(state);
    tracing::info!(
        sessions = restored.sessions,
        subscriptions = restored.subscriptions,
        queued = restored.queued_messages,
        inflight = restored.inflight_messages,
        retained = restored.retained_messages,
        wills_published = restored.wills_published,
        "state restored"
    );
    Ok((broker, bridges, database, replication))
}

/// A cluster node's store, wrapped for replication when it is on (with RocksDB only).
#[cfg(feature = "rocksdb")]
fn replicate(
    store: Arc<dyn Store>,
    cluster: Option<&crate::cluster::ClusterConfig>,
    storage: &StorageConfig,
    memory: StorageMemory,
) -> (Arc<dyn Store>, Option<Replication>) {
    match cluster {
        Some(cluster) if storage.persistence => {
            crate::cluster::replication::Replication::wrap(store, cluster, storage, memory)
        }
        _ => (store, None),
    }
}

#[cfg(not(feature = "rocksdb"))]
fn replicate(
    store: Arc<dyn Store>,
    _: Option<&crate::cluster::ClusterConfig>,
    _: &StorageConfig,
    _: StorageMemory,
) -> (Arc<dyn Store>, Option<Replication>) {
    (store, None)
}

/// Restores the broker's state from its store, then binds every listener and starts
/// serving. Returns once the listeners accept.
pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
    anyhow::ensure!(!config.listeners.is_empty(), "no listener configured");
    let security =
        Arc::new(Security::load(&config.auth).context("cannot load the security files")?);
    let (broker, prepared_bridges, database, replication) = restore_broker(config.clone()).await?;
    broker.check_reads_with(security.clone());
    let cluster = match &config.cluster {
        Some(cluster) => {
            Some(crate::cluster::Running::start(cluster, database, &broker, replication).await?)
        }
        None => None,
    };
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        listeners
            .push(Listener::bind(listener, security.clone(), config.limits.max_connections).await?);
    }
    let addrs = listeners
        .iter()
        .map(|listener| listener.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot read a listener's bound address")?;
    let tls = listeners
        .iter()
        .zip(&addrs)
        .filter_map(|(listener, addr)| listener.tls().map(|tls| (*addr, tls)))
        .collect();
    let connections = ConnectionCounter::new(config.limits.max_connections);
    let kinds: Vec<_> = config
        .listeners
        .iter()
        .map(|listener| listener.kind)
        .collect();

    let scheduler = spawn_watched(
        &broker,
        "the session scheduler".to_string(),
        broker.clone().run_scheduler(),
    );
    // Before the listeners accept: the bridges' outboxes collect from the first publish.
    let bridges = Bridges::start(broker.clone(), &config, prepared_bridges).await;
    broker.add_reloadable(bridges.clone());
    let sys_topics = spawn_watched(
        &broker,
        "the $SYS publisher".to_string(),
        crate::sys_topics::run(broker.clone()),
    );
    let accept_loops = listeners
        .into_iter()
        .zip(addrs.iter().zip(kinds))
        .map(|(listener, (addr, kind))| {
            tracing::info!(%addr, transport = ?kind, "listening");
            spawn_watched(
                &broker,
                format!("listener {addr}"),
                listener.run(broker.clone(), connections.clone()),
            )
        })
        .collect();
    // Restored and listening: `/ready` may say so.
    broker.health().mark_ready();
    Ok(ServerHandle {
        addrs,
        broker,
        accept_loops,
        scheduler,
        sys_topics,
        files: Arc::new(SecurityFiles { security, tls }),
        connections,
        bridges,
        cluster,
    })
}
