//! Cluster administration: `status`, `add-node`, `remove-node`.
//!
//! The handlers are plain functions from a request struct to a response struct (serde),
//! so an HTTP server of the broker's can mount them under `/api/v1/cluster`; until one
//! exists, `serve` answers them on `[cluster] admin_bind` (loopback only) with a
//! deliberately small HTTP/1.1 responder like the metrics endpoint's:
//!
//! - `GET /api/v1/cluster/status` -> `ClusterStatus`
//! - `POST /api/v1/cluster/nodes` with `AddNodeRequest` -> `AdminResult`
//! - `DELETE /api/v1/cluster/nodes/ID` -> `AdminResult`
//!
//! `fleetmq cluster ...` (`client`) is the command-line side.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::config::{parse_peer, NodeId};
use super::node::ClusterNode;

const MAX_REQUEST: usize = 16 * 1024;
/// Requests served at once; more are closed unanswered.
const MAX_CONCURRENT_REQUESTS: usize = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A membership change waits for the new member to catch up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// "Leader", "Follower", "Candidate" or "Learner".
    pub role: String,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddNodeRequest {
    /// `"ID@HOST:PORT"` of the node to add (started with `[cluster] join = true`).
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveNodeRequest {
    pub id: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResult {
    pub ok: bool,
    pub message: String,
}

impl AdminResult {
    fn from(result: Result<String, String>) -> AdminResult {
        match result {
            Ok(message) => AdminResult { ok: true, message },
            Err(message) => AdminResult { ok: false, message },
        }
    }
}

/// `GET /api/v1/cluster/status`.
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
        members,
    }
}

/// `POST /api/v1/cluster/nodes`.
pub async fn add_node(node: &ClusterNode, request: AddNodeRequest) -> AdminResult {
    let result = async {
        let peer = parse_peer(&request.node)?;
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
    .await;
    AdminResult::from(result)
}

/// `DELETE /api/v1/cluster/nodes/ID`.
pub async fn remove_node(node: &ClusterNode, request: RemoveNodeRequest) -> AdminResult {
    let result = async {
        tokio::time::timeout(CHANGE_TIMEOUT, node.remove_node(request.id))
            .await
            .map_err(|_| format!("the change did not commit within {CHANGE_TIMEOUT:?}"))??;
        Ok(format!("node {} is no longer a member", request.id))
    }
    .await;
    AdminResult::from(result)
}

/// Serves the handlers on `bind` until the task is aborted.
pub async fn serve(
    bind: SocketAddr,
    node: Arc<ClusterNode>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for cluster administration"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the admin address")?;
    tracing::info!(%addr, "listening (cluster administration)");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &node).await;
                drop(slot);
            });
        }
    });
    Ok((addr, task))
}

async fn answer(mut stream: TcpStream, node: &ClusterNode) -> std::io::Result<()> {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(request)) => request,
        _ => return Ok(()),
    };
    let (method, path, body) = request;
    let (status, json) = match (method.as_str(), path.as_str()) {
        ("GET", "/api/v1/cluster/status") => ("200 OK", to_json(&status(node))),
        ("POST", "/api/v1/cluster/nodes") => match serde_json::from_slice(&body) {
            Ok(request) => result_json(add_node(node, request).await),
            Err(error) => (
                "400 Bad Request",
                to_json(&AdminResult {
                    ok: false,
                    message: error.to_string(),
                }),
            ),
        },
        ("DELETE", path) if path.starts_with("/api/v1/cluster/nodes/") => {
            match path["/api/v1/cluster/nodes/".len()..].parse() {
                Ok(id) => result_json(remove_node(node, RemoveNodeRequest { id }).await),
                Err(_) => (
                    "400 Bad Request",
                    to_json(&AdminResult {
                        ok: false,
                        message: "not a node id".into(),
                    }),
                ),
            }
        }
        _ => (
            "404 Not Found",
            to_json(&AdminResult {
                ok: false,
                message: "not found".into(),
            }),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(json.as_bytes()).await?;
    stream.shutdown().await
}

fn result_json(result: AdminResult) -> (&'static str, String) {
    let status = if result.ok { "200 OK" } else { "409 Conflict" };
    (status, to_json(&result))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Reads one request: method, path and body (by Content-Length), bounded in size.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_REQUEST);
            while data.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    break;
                }
                data.extend_from_slice(&chunk[..read]);
            }
            let mut parts = head.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let body = data[end + 4..].iter().take(length).copied().collect();
            return Ok((method, path, body));
        }
        if data.len() > MAX_REQUEST {
            return Err(std::io::Error::other("request too large"));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::other("closed"));
        }
        data.extend_from_slice(&chunk[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The command-line side: one request to a node's admin endpoint; returns the status
/// code and the JSON body.
pub async fn client(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(admin))
        .await
        .map_err(|_| anyhow::anyhow!("{admin}: no answer"))?
        .with_context(|| format!("cannot reach the cluster administration endpoint at {admin} (is the node running with [cluster]?)"))?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        CHANGE_TIMEOUT + REQUEST_TIMEOUT,
        stream.read_to_end(&mut response),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{admin}: no answer in time"))??;
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{admin}: malformed answer"))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{admin}: malformed status line"))?;
    Ok((code, body.to_string()))
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
