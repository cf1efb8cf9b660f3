//! Raft's network over the node-to-node link (`super::link`): openraft's RPCs and
//! proposals forwarded to the leader, as JSON requests and responses.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::config::NodeId;
use super::link::Links;
use super::state::{Command, CommandResult};
use super::types::{ProposeError, TypeConfig};

/// A request on the link.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the leader to commit.
    Propose(Command),
    /// Membership changes for the leader to carry out.
    AddNode {
        id: NodeId,
        addr: String,
    },
    RemoveNode {
        id: NodeId,
    },
    /// The session the asking node took with `epoch` (`ownership`).
    Handover {
        client_id: String,
        epoch: u64,
    },
    /// The asking node holds that session durably: the old owner deletes its copy.
    HandoverDone {
        client_id: String,
        epoch: u64,
    },
    /// Messages for a session that moved to the asked node (`super::relay`).
    Relay {
        client_id: String,
        messages: Vec<super::relay::RelayedMessage>,
        /// The asked node's claim that moved the session there (0 from a node that
        /// does not say).
        #[serde(default)]
        epoch: u64,
        /// The relay's last batch: it ended after these messages.
        #[serde(default)]
        last: bool,
    },
    /// Store operations of the asking node's persistent sessions, for the asked node's
    /// copy (`super::replication`).
    Replicate(super::replication::Batch),
    /// The asked node's copy of `origin`'s session of `client_id` (failover: `origin`
    /// is unreachable).
    ReplicaSession {
        origin: NodeId,
        client_id: String,
    },
    /// The asking node took that session over durably: the copy goes.
    ReplicaForget {
        origin: NodeId,
        client_id: String,
    },
    /// The QoS 1/2 messages the asked node forwarded to `dead` (unreachable) that it
    /// did not acknowledge (`super::forward_ack`): a session of `dead` was taken over
    /// from a backup, which cannot have them.
    PendingFor {
        dead: NodeId,
    },
    /// A message the asking node forwarded to another node that could not keep it for
    /// these sessions, which moved to the asked node (`super::forward_ack`,
    /// `hand_to_new_owners`): stored for them unless they have it. `FORWARD` body,
    /// base64; answered `Relayed`.
    MovedCopy {
        client_ids: Vec<String>,
        message: String,
    },
}

/// What the previous owner answers to `Request::Handover`.
#[derive(Debug, Serialize, Deserialize)]
pub enum HandoverAnswer {
    /// It has not applied the claim yet: ask again.
    NotApplied,
    /// It held no such session.
    Nothing,
    Session(Box<super::handover::SessionDump>),
}

/// The answer to a `Request`, variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<CommandResult, ProposeError>),
    Membership(Result<(), String>),
    Handover(HandoverAnswer),
    HandoverDone,
    /// Whether the relayed messages are stored (or had nowhere to go).
    Relayed(bool),
    /// The batch is durable in the copy, or why not.
    Replicated(Result<(), String>),
    /// `FORWARD` bodies (`super::forward`), base64.
    Pending(Vec<String>),
    /// The request could not be decoded.
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

/// Creates the per-peer clients openraft asks for.
#[derive(Clone)]
pub struct NetworkFactory {
    pub links: Arc<Links>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.links.ensure_peer(target, &node.addr);
        PeerClient {
            links: self.links.clone(),
            target,
        }
    }
}

pub struct PeerClient {
    links: Arc<Links>,
    target: NodeId,
}

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> RpcResult<Response, E> {
        let body = serde_json::to_vec(request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let answer = self
            .links
            .request(self.target, &body, timeout)
            .await
            .map_err(|error| RPCError::Unreachable(Unreachable::new(&LinkError(error))))?;
        serde_json::from_slice(&answer)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))
    }

    fn unexpected<E: std::error::Error>(
        &self,
        response: Response,
    ) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&LinkError(format!(
            "node {} answered {response:?}",
            self.target
        ))))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await?
        {
            Response::AppendEntries(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await?
        {
            Response::InstallSnapshot(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await? {
            Response::Vote(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}

/// Sends `command` to `leader` and waits for its result.
pub async fn propose_remote(
    links: &Links,
    leader: NodeId,
    command: Command,
    timeout: Duration,
) -> Result<CommandResult, ProposeError> {
    let body = serde_json::to_vec(&Request::Propose(command))
        .map_err(|error| ProposeError::Failed(error.to_string()))?;
    let answer = links
        .request(leader, &body, timeout)
        .await
        .map_err(ProposeError::Failed)?;
    match serde_json::from_slice(&answer) {
        Ok(Response::Propose(result)) => result,
        Ok(other) => Err(ProposeError::Failed(format!("unexpected answer {other:?}"))),
        Err(error) => Err(ProposeError::Failed(error.to_string())),
    }
}
