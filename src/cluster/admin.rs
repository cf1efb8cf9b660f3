//! Cluster administration: `status`, `add-node`, `remove-node`.
//!
//! The admin API serves these on the admin listener (`crate::admin`, behind its token):
//! `GET /api/v1/cluster` -> `ClusterStatus`, `POST /api/v1/cluster/nodes` with
//! `{"node": "ID@HOST:PORT"}`, `DELETE /api/v1/cluster/nodes/ID`. `fleetmq cluster ...`
//! (`super::command`) is the command-line side and prints `render_table`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{parse_peer, NodeId};
use super::node::ClusterNode;

/// A membership change waits for the new member to catch up, within the 30 s the
/// command line waits for an answer.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// "Leader", "Follower", "Candidate" or "Learner".
    pub role: String,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last log index this node's latest snapshot covers.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// This node has a live link to it (always true for itself).
    pub reachable: bool,
    /// Seen from the leader: the last log index the member holds, and how far behind
    /// the leader's log it is. `None` elsewhere.
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
    pub link_connects: u64,
    pub link_dropped_frames: u64,
}

/// `GET /api/v1/cluster`.
pub fn status(node: &ClusterNode) -> ClusterStatus {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = metrics.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let link = node.links().peer(*id);
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id).cloned())
                .map(|log_id| log_id.map_or(0, |log_id| log_id.index));
            MemberStatus {
                id: *id,
                addr: member.addr.clone(),
                voter: voters.contains(id),
                reachable: *id == node.node_id() || link.as_ref().is_some_and(|l| l.is_connected()),
                matched_index: matched,
                lag: matched.map(|matched| last.unwrap_or(0).saturating_sub(matched)),
                link_connects: link
                    .as_ref()
                    .map_or(0, |l| l.stats.connects.load(Ordering::Relaxed)),
                link_dropped_frames: link
                    .as_ref()
                    .map_or(0, |l| l.stats.dropped_frames.load(Ordering::Relaxed)),
            }
        })
        .collect();
    ClusterStatus {
        node_id: node.node_id(),
        // Effective: a leader cut off from the majority reports none.
        leader: node.leader(),
        term: metrics.current_term,
        role: format!("{:?}", metrics.state),
        last_log_index: last,
        applied_index: metrics.last_applied.map(|log_id| log_id.index),
        snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
        members,
    }
}

/// `POST /api/v1/cluster/nodes`: adds `node` ("ID@HOST:PORT") once it caught up.
pub async fn add_node(node: &ClusterNode, member: &str) -> Result<String, String> {
    let peer = parse_peer(member)?;
    tokio::time::timeout(CHANGE_TIMEOUT, node.add_node(peer.id, peer.addr.clone()))
        .await
        .map_err(|_| {
            format!(
                "node {} did not catch up within {CHANGE_TIMEOUT:?}",
                peer.id
            )
        })??;
    Ok(format!("node {} ({}) is a member", peer.id, peer.addr))
}

/// `DELETE /api/v1/cluster/nodes/ID`.
pub async fn remove_node(node: &ClusterNode, id: NodeId) -> Result<String, String> {
    tokio::time::timeout(CHANGE_TIMEOUT, node.remove_node(id))
        .await
        .map_err(|_| format!("the change did not commit within {CHANGE_TIMEOUT:?}"))??;
    Ok(format!("node {id} is no longer a member"))
}

impl crate::admin::ClusterAdmin for ClusterNode {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(status(self)).unwrap_or_else(|error| {
            serde_json::json!({ "error": format!("cluster status not serialisable: {error}") })
        })
    }

    fn add_node(&self, node: String) -> crate::admin::Change<'_> {
        Box::pin(async move { add_node(self, &node).await })
    }

    fn remove_node(&self, id: u64) -> crate::admin::Change<'_> {
        Box::pin(remove_node(self, id))
    }
}

/// `status` as the table `fleetmq cluster status` prints.
pub fn render_table(status: &ClusterStatus) -> String {
    let mut out = format!(
        "node {}  role {}  leader {}  term {}  last log {}  applied {}\n",
        status.node_id,
        status.role,
        status
            .leader
            .map_or("none".to_string(), |id| id.to_string()),
        status.term,
        status
            .last_log_index
            .map_or("-".to_string(), |i| i.to_string()),
        status
            .applied_index
            .map_or("-".to_string(), |i| i.to_string()),
    );
    out.push_str(&format!(
        "{:<6} {:<24} {:<8} {:<10} {:<8} {:<8} {:<9}\n",
        "ID", "ADDRESS", "ROLE", "REACHABLE", "MATCHED", "LAG", "RECONNECTS"
    ));
    for member in &status.members {
        let role = if Some(member.id) == status.leader {
            "leader"
        } else if member.voter {
            "voter"
        } else {
            "learner"
        };
        out.push_str(&format!(
            "{:<6} {:<24} {:<8} {:<10} {:<8} {:<8} {:<9}\n",
            member.id,
            member.addr,
            role,
            if member.reachable { "yes" } else { "no" },
            member
                .matched_index
                .map_or("-".to_string(), |i| i.to_string()),
            member.lag.map_or("-".to_string(), |i| i.to_string()),
            member.link_connects.saturating_sub(1),
        ));
    }
    out
}
