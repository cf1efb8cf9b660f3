//! The cluster under `/api/v1/cluster` (only on a node with `[cluster]`): its status as a
//! section (`GET cluster`, also on the dashboard), and membership changes
//! (`POST cluster/nodes` with `{"node": "ID@HOST:PORT"}`, `DELETE cluster/nodes/ID`).
//! `fleetmq cluster status | add-node | remove-node` is the command-line side. The
//! handlers behind [`ClusterAdmin`] live with the cluster (`crate::cluster::admin`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{json_body, AdminContext, StatusProvider};
use crate::http::{Request, Response};

/// A membership change's future: the change's message, or why it failed.
pub type Change<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// What the admin API asks of a cluster node.
pub trait ClusterAdmin: Send + Sync {
    /// Members, leader, term, each member's reachability and replication lag.
    fn status(&self) -> serde_json::Value;
    /// Adds the node `"ID@HOST:PORT"` (started with `[cluster] join = true`) as a voter,
    /// once it has caught up.
    fn add_node(&self, node: String) -> Change<'_>;
    /// Removes the member `id`.
    fn remove_node(&self, id: u64) -> Change<'_>;
}

/// The cluster's status as the `cluster` section.
pub struct ClusterSection(pub Arc<dyn ClusterAdmin>);

impl StatusProvider for ClusterSection {
    fn name(&self) -> &str {
        "cluster"
    }

    fn status(&self) -> serde_json::Value {
        self.0.status()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNode {
    node: String,
}

/// `POST cluster/nodes`.
pub(super) async fn add_node(context: &AdminContext, request: &Request) -> Response {
    let Some(cluster) = &context.cluster else {
        return not_a_cluster();
    };
    let body: AddNode = match json_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    changed(cluster.add_node(body.node).await)
}

/// `DELETE cluster/nodes/ID`.
pub(super) async fn remove_node(context: &AdminContext, id: &str) -> Response {
    let Some(cluster) = &context.cluster else {
        return not_a_cluster();
    };
    let Ok(id) = id.parse::<u64>() else {
        return Response::error(400, "bad_request", &format!("{id:?} is not a node id"));
    };
    changed(cluster.remove_node(id).await)
}

fn changed(result: Result<String, String>) -> Response {
    match result {
        Ok(message) => Response::json(200, &json!({ "ok": true, "message": message })),
        Err(message) => Response::error(409, "membership_change_failed", &message),
    }
}

fn not_a_cluster() -> Response {
    Response::error(
        404,
        "not_configured",
        "this broker is not a cluster node (no [cluster] table)",
    )
}
