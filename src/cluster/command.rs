//! `fleetmq cluster status | add-node | remove-node`: the cluster part of the local
//! node's admin API (`crate::admin`, `/api/v1/cluster`), from the command line. The
//! admin address and token come from the configuration file, as for `fleetmq ctl`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::ctl::{admin_endpoint, request};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
    /// The node's configuration file; its `[admin]` table says where the admin API is
    /// and which token it wants (default: /etc/fleetmq/fleetmq.toml when it exists).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Admin API URL, e.g. http://127.0.0.1:9884 (instead of the configuration's).
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,
    /// File holding the admin API's bearer token (instead of the configuration's).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) an https admin listener's certificate chains to.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
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

/// Runs the command; returns what to print, or an error for a refused request.
pub fn run(args: &ClusterArgs) -> anyhow::Result<String> {
    let endpoint = admin_endpoint(
        args.config.as_deref(),
        args.url.as_deref(),
        args.token_file.as_deref(),
        args.ca.clone(),
    )?;
    let (method, path, body) = match &args.action {
        ClusterAction::Status { .. } => ("GET", "/api/v1/cluster".to_string(), None),
        ClusterAction::AddNode { node } => (
            "POST",
            "/api/v1/cluster/nodes".to_string(),
            Some(json!({ "node": node }).to_string()),
        ),
        ClusterAction::RemoveNode { id } => ("DELETE", format!("/api/v1/cluster/nodes/{id}"), None),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(request(
        &endpoint,
        method,
        &path,
        body.as_deref().map(str::as_bytes),
    ))?;
    let text = String::from_utf8_lossy(&answer.body).to_string();
    let value: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "the admin API answered {} with a body that is not JSON",
            answer.status
        )
    })?;
    if !(200..300).contains(&answer.status) {
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"].as_str().unwrap_or("");
        anyhow::bail!("{} {code}: {message}", answer.status);
    }
    match &args.action {
        ClusterAction::Status { json: true } => Ok(format!("{text}\n")),
        ClusterAction::Status { json: false } => status_table(value),
        _ => Ok(format!("{}\n", value["message"].as_str().unwrap_or(""))),
    }
}

#[cfg(feature = "rocksdb")]
fn status_table(value: Value) -> anyhow::Result<String> {
    let status: super::admin::ClusterStatus =
        serde_json::from_value(value).context("the cluster status has an unexpected shape")?;
    Ok(super::admin::render_table(&status))
}

#[cfg(not(feature = "rocksdb"))]
fn status_table(value: Value) -> anyhow::Result<String> {
    Ok(format!("{value:#}\n"))
}
