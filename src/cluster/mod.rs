//! A fleetmq cluster: nodes that act as one broker, their shared state kept by the
//! openraft consensus engine.
//!
//! - `config`: the `[cluster]` table and its validation.
//! - `types`: openraft's type configuration and `Consensus`, our small trait over it.
//! - `state`: the replicated state machine's data and rules (routes, retained, owners).
//! - `storage`: the Raft log, vote and snapshots in the node's RocksDB.
//! - `link`: the node-to-node connections (one per pair, framed, bounded, reconnecting).
//! - `network`: Raft RPCs and proposals over the link.

pub mod config;
pub mod link;
pub mod network;
pub mod state;
pub mod storage;
pub mod types;

pub use config::{ClusterConfig, NodeId};
