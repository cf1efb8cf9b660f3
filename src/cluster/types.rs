//! The openraft type configuration of the cluster, and the small trait through which
//! the rest of the cluster code talks to consensus (`Consensus`), so that another Raft
//! library can replace openraft behind it.

use std::io::Cursor;

use super::config::NodeId;
use super::state::{Command, CommandResult};

openraft::declare_raft_types!(
    /// The cluster's Raft: our commands, `u64` node ids, the node's link address.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;

/// Why a proposal did not commit.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// No leader is known (this node is cut off from the majority, or an election runs).
    #[error("no leader: the cluster has no majority reachable from this node")]
    NoLeader,
    /// The leader could not be reached or answered with an error.
    #[error("the proposal failed: {0}")]
    Failed(String),
}

/// What the broker side needs from consensus.
pub trait Consensus: Send + Sync {
    /// Commits `command` (through the leader, wherever it is) and returns its result once
    /// applied on this node.
    fn propose(
        &self,
        command: Command,
    ) -> impl std::future::Future<Output = Result<CommandResult, ProposeError>> + Send;
    /// The current leader, if one is known.
    fn leader(&self) -> Option<NodeId>;
}
