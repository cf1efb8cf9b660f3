//! A fleetmq cluster: nodes that act as one broker, their shared state kept by the
//! openraft consensus engine.
//!
//! - `config`: the `[cluster]` table and its validation.
//! - `admin`, `command`: `fleetmq cluster status | add-node | remove-node`.
//! - `types`: openraft's type configuration and `Consensus`, our small trait over it.
//! - `state`: the replicated state machine's data and rules (routes, retained, owners).
//! - `storage`: the Raft log, vote and snapshots in the node's RocksDB.
//! - `link`: the node-to-node connections (one per pair, framed, bounded, reconnecting,
//!   closed when the peer falls silent).
//! - `link_tls`: TLS on the links, reloaded on SIGHUP.
//! - `network`: Raft RPCs and proposals over the link.
//! - `forward`: the cluster route table and forwarded PUBLISHes.
//! - `forward_ack`: QoS 1/2 forwards acknowledged once durable on the receiving node,
//!   their timeouts and their rerouting when a peer is down.
//! - `node`: a running node: consensus, proposals, the broker hook.
//! - `ownership`: session claims, the hand-over of a moved session, release.
//! - `handover`: a session on the link (`SessionDump`).
//! - `relay`: messages for a session that moved away, relayed to its new node, and
//!   (`relay/inbound.rs`) the new node's hold of its other deliveries behind that relay.
//! - `retained`: retained changes waiting for their commit, and the acknowledgements
//!   waiting for them.
//! - `replication`: persistent sessions copied to backup nodes, and failover from them.
//! - `adoption`: a dead node's sessions adopted by its backup (wills, expiry).

#[cfg(feature = "rocksdb")]
pub mod admin;
#[cfg(feature = "rocksdb")]
pub mod adoption;
pub mod command;
pub mod config;
pub mod forward;
#[cfg(feature = "rocksdb")]
mod forward_ack;
#[cfg(feature = "rocksdb")]
pub mod handover;
#[cfg(feature = "rocksdb")]
pub mod link;
#[cfg(feature = "rocksdb")]
pub mod link_tls;
#[cfg(feature = "rocksdb")]
pub mod metrics;
#[cfg(feature = "rocksdb")]
pub mod network;
#[cfg(feature = "rocksdb")]
pub mod node;
#[cfg(feature = "rocksdb")]
mod ownership;
#[cfg(feature = "rocksdb")]
mod relay;
#[cfg(feature = "rocksdb")]
pub mod replication;
#[cfg(feature = "rocksdb")]
mod retained;
pub mod state;
#[cfg(feature = "rocksdb")]
pub mod storage;
#[cfg(feature = "rocksdb")]
pub mod types;

pub use config::{ClusterConfig, NodeId};
#[cfg(feature = "rocksdb")]
pub use node::ClusterNode;

/// A started cluster membership (its administration is on the admin API).
#[cfg(feature = "rocksdb")]
pub struct Running {
    pub node: std::sync::Arc<ClusterNode>,
}

#[cfg(feature = "rocksdb")]
impl Running {
    /// Starts this node's cluster membership over the broker's RocksDB.
    pub async fn start(
        config: &ClusterConfig,
        database: Option<std::sync::Arc<rocksdb::DB>>,
        broker: &std::sync::Arc<crate::broker::Broker>,
        replication: Option<replication::Replication>,
    ) -> anyhow::Result<Running> {
        let Some(database) = database else {
            anyhow::bail!(
                "a cluster node keeps its Raft log in RocksDB: set storage.persistence = true"
            );
        };
        let node = node::start(config, database, broker, replication).await?;
        Ok(Running { node })
    }

    /// Stops the links and consensus.
    pub async fn stop(&self) {
        self.node.links().begin_shutdown();
        let _ = self.node.raft().shutdown().await;
    }
}

/// Without RocksDB there is no Raft log, hence no cluster.
#[cfg(not(feature = "rocksdb"))]
pub struct Running;

#[cfg(not(feature = "rocksdb"))]
impl Running {
    pub async fn start(
        _: &ClusterConfig,
        _: Option<()>,
        _: &std::sync::Arc<crate::broker::Broker>,
        _: Option<()>,
    ) -> anyhow::Result<Running> {
        anyhow::bail!("this build has no RocksDB (built without the `rocksdb` feature), which a cluster node needs")
    }

    pub async fn stop(&self) {}
}
