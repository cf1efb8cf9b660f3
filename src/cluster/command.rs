//! `fleetmq cluster status | add-node | remove-node`: the command-line side of the
//! cluster administration endpoint (`super::admin`) of the local node.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
    /// The node's configuration file; its `[cluster] admin_bind` is the endpoint asked.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The node's administration endpoint (overrides the configuration's).
    #[arg(long, value_name = "ADDR:PORT", global = true)]
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum ClusterAction {
    /// Members, leader, term, each member's reachability and replication lag.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a node (started with `[cluster] join = true`) as a voting member.
    AddNode {
        /// The node as ID@HOST:PORT (its cluster link address).
        node: String,
    },
    /// Remove a member.
    RemoveNode {
        /// The node's id.
        id: u64,
    },
}

impl ClusterArgs {
    /// The endpoint to ask: `--admin`, else the configuration's, else the default.
    pub fn endpoint(&self) -> anyhow::Result<SocketAddr> {
        if let Some(admin) = self.admin {
            return Ok(admin);
        }
        if let Some(path) = &self.config {
            let config = crate::config::Config::from_file(path)?;
            let cluster = config
                .cluster
                .ok_or_else(|| anyhow::anyhow!("{} has no [cluster] table", path.display()))?;
            return Ok(cluster.admin_bind);
        }
        Ok(SocketAddr::from((
            [127, 0, 0, 1],
            crate::limits::DEFAULT_CLUSTER_ADMIN_PORT,
        )))
    }
}

/// Runs the command; returns what to print, or an error for a refused request.
#[cfg(feature = "rocksdb")]
pub fn run(args: &ClusterArgs) -> anyhow::Result<String> {
    use super::admin;
    let endpoint = args.endpoint()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (method, path, body) = match &args.action {
        ClusterAction::Status { .. } => ("GET", "/api/v1/cluster/status".to_string(), None),
        ClusterAction::AddNode { node } => (
            "POST",
            "/api/v1/cluster/nodes".to_string(),
            Some(serde_json::to_string(&admin::AddNodeRequest {
                node: node.clone(),
            })?),
        ),
        ClusterAction::RemoveNode { id } => ("DELETE", format!("/api/v1/cluster/nodes/{id}"), None),
    };
    let (code, body) = runtime.block_on(admin::client(endpoint, method, &path, body))?;
    match &args.action {
        ClusterAction::Status { json } => {
            anyhow::ensure!(code == 200, "{endpoint} answered {code}: {body}");
            if *json {
                Ok(format!("{body}\n"))
            } else {
                let status: admin::ClusterStatus = serde_json::from_str(&body)?;
                Ok(admin::render_table(&status))
            }
        }
        _ => {
            let result: admin::AdminResult = serde_json::from_str(&body)
                .map_err(|_| anyhow::anyhow!("{endpoint} answered {code}: {body}"))?;
            anyhow::ensure!(result.ok, "{}", result.message);
            Ok(format!("{}\n", result.message))
        }
    }
}
