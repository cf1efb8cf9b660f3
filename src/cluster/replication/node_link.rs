//! Replication on a running cluster node: the `ReplicaLink` over the node's link and
//! consensus, the backup's answers to replication requests, and the failover read of a
//! dead owner's session from one of its in-sync backups.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::super::config::NodeId;
use super::super::handover::SessionDump;
use super::super::network::{HandoverAnswer, Request, Response};
use super::super::node::ClusterNode;
use super::super::state::Command;
use super::{backups_of, Batch, BoxFuture, ReplicaLink};

/// The owner's view of its backups through the running node.
pub(in crate::cluster) struct NodeLink {
    pub(in crate::cluster) node: Weak<ClusterNode>,
}

impl ReplicaLink for NodeLink {
    fn backups(&self) -> Vec<NodeId> {
        self.node
            .upgrade()
            .map_or_else(Vec::new, |node| node.backups_of(node.node_id()))
    }

    fn in_sync(&self, backup: NodeId) -> bool {
        self.node.upgrade().is_some_and(|node| {
            node.with_state(|state| state.replica_in_sync(node.node_id(), backup))
        })
    }

    fn reachable(&self, backup: NodeId) -> bool {
        self.node.upgrade().is_some_and(|node| {
            node.links()
                .peer(backup)
                .is_some_and(|peer| peer.is_connected())
        })
    }

    fn replicate(
        &self,
        backup: NodeId,
        batch: Batch,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let node = self.node.upgrade().ok_or("the node stopped")?;
            let body = serde_json::to_vec(&Request::Replicate(batch))
                .map_err(|error| error.to_string())?;
            let answer = node.links().request(backup, &body, timeout).await?;
            match serde_json::from_slice(&answer) {
                Ok(Response::Replicated(result)) => result,
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
    }

    fn moved_from_a_copy(
        &self,
        client_ids: Vec<String>,
        mark: u64,
    ) -> BoxFuture<'_, Result<Vec<(String, NodeId)>, String>> {
        Box::pin(async move {
            match self.node.upgrade() {
                Some(node) => Ok(node.moved_from_a_copy(&client_ids, mark).await),
                // Stopping: nobody is acknowledged any more; refuse to be safe.
                None => Err("the node stops".into()),
            }
        })
    }

    fn handover_mark(&self) -> u64 {
        self.node
            .upgrade()
            .map_or(0, |node| node.confirmed_handovers.mark())
    }

    fn set_in_sync(&self, backup: NodeId, in_sync: bool) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let node = self.node.upgrade().ok_or("the node stopped")?;
            let command = Command::ReplicaSync {
                origin: node.node_id(),
                backup,
                in_sync,
            };
            let result = node
                .propose(command)
                .await
                .map_err(|error| error.to_string())?;
            // Applied here too before anyone acts on it (`in_sync` reads the state here).
            node.raft()
                .wait(Some(Duration::from_secs(3)))
                .metrics(
                    |metrics| metrics.last_applied.map_or(0, |id| id.index) >= result.log_index,
                    "replica state applied",
                )
                .await
                .map_err(|error| error.to_string())?;
            Ok(())
        })
    }
}

impl ClusterNode {
    /// `origin`'s backups as the applied membership makes them.
    pub(in crate::cluster) fn backups_of(&self, origin: NodeId) -> Vec<NodeId> {
        let factor = self.replication_factor;
        self.with_state(|state| {
            backups_of(origin, state.membership.membership().voter_ids(), factor)
        })
    }

    /// A batch of `origin`'s stream for this node's copy.
    pub(in crate::cluster) async fn apply_replicated(
        &self,
        origin: NodeId,
        batch: Batch,
    ) -> Result<(), String> {
        match &self.replicas {
            Some(replicas) => replicas.apply(origin, batch).await,
            None => Err("this node keeps no replicas (replication_factor = 1)".into()),
        }
    }

    /// This node's copy of `origin`'s session of `client_id`.
    pub(in crate::cluster) async fn replica_session(
        &self,
        origin: NodeId,
        client_id: &str,
    ) -> HandoverAnswer {
        let Some(replicas) = &self.replicas else {
            return HandoverAnswer::Nothing;
        };
        match replicas.session(origin, client_id).await {
            Some(session) => {
                let mut dump = SessionDump::from_session(&session);
                dump.also_held(replicas.recently_completed(origin, client_id));
                HandoverAnswer::Session(Box::new(dump))
            }
            None => HandoverAnswer::Nothing,
        }
    }

    pub(in crate::cluster) async fn replica_forget(&self, origin: NodeId, client_id: &str) {
        if let Some(replicas) = &self.replicas {
            replicas.forget(origin, client_id).await;
        }
    }

    /// Failover: `previous` owned `client_id`'s session and is unreachable. The session
    /// as one of its in-sync backups holds it (this node, or another); `None` when no
    /// in-sync backup answers, `Some(None)` when one answered that it holds none.
    pub(in crate::cluster) async fn fetch_from_replica(
        &self,
        previous: NodeId,
        client_id: &str,
        timeout: Duration,
    ) -> Option<(Option<SessionDump>, NodeId)> {
        let in_sync: Vec<NodeId> = self
            .backups_of(previous)
            .into_iter()
            .filter(|backup| self.with_state(|state| state.replica_in_sync(previous, *backup)))
            .collect();
        for backup in in_sync {
            let answer = if backup == self.node_id() {
                self.replica_session(previous, client_id).await
            } else {
                let request = Request::ReplicaSession {
                    origin: previous,
                    client_id: client_id.to_string(),
                };
                let Ok(body) = serde_json::to_vec(&request) else {
                    continue;
                };
                match self.links().request(backup, &body, timeout).await {
                    Ok(answer) => match serde_json::from_slice(&answer) {
                        Ok(Response::Handover(answer)) => answer,
                        _ => continue,
                    },
                    Err(_) => continue,
                }
            };
            return match answer {
                HandoverAnswer::Session(dump) => Some((Some(*dump), backup)),
                _ => Some((None, backup)),
            };
        }
        None
    }

    /// The session taken over from `backup`'s copy is durable here: the copy goes.
    pub(in crate::cluster) async fn forget_replica(
        &self,
        backup: NodeId,
        previous: NodeId,
        client_id: &str,
        timeout: Duration,
    ) {
        if backup == self.node_id() {
            self.replica_forget(previous, client_id).await;
            return;
        }
        let request = Request::ReplicaForget {
            origin: previous,
            client_id: client_id.to_string(),
        };
        if let Ok(body) = serde_json::to_vec(&request) {
            // Best effort: a copy left behind is replaced by the origin's next resync.
            let _ = self.links().request(backup, &body, timeout).await;
        }
    }
}

/// Starts replication on `node` (owner side) when `replicator` is set.
pub(in crate::cluster) fn attach(node: &Arc<ClusterNode>, replicator: &Arc<super::Replicator>) {
    replicator.attach(Arc::new(NodeLink {
        node: Arc::downgrade(node),
    }));
}
