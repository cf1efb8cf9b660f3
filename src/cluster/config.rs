//! The `[cluster]` table: which node this is, where the node-to-node link listens, the
//! initial members, TLS for the link, and the link's bounds. Present only on cluster
//! members; a node without it is a single broker and nothing of `crate::cluster` runs.
//!
//! Validation (`problems`) is called from `crate::config::validate` so that `fleetmq
//! check-config` reports cluster mistakes with the rest, each naming its key.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// A node's identity in the cluster: stable for the life of its data directory.
pub type NodeId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id (>= 1), unique in the cluster, listed in `peers`.
    pub node_id: NodeId,
    /// `HOST:PORT` the node-to-node link listens on.
    pub bind: SocketAddr,
    /// The initial members as `"ID@HOST:PORT"`, this node included; the same list on
    /// every node.
    pub peers: Vec<String>,
    /// This node joins a running cluster (`fleetmq cluster add-node` on a member): it
    /// never forms a new one from `peers`.
    #[serde(default)]
    pub join: bool,
    /// Bytes of forwarded messages waiting for one peer's link before new ones are
    /// dropped (and counted).
    #[serde(default = "default_link_buffer_bytes")]
    pub link_buffer_bytes: usize,
    /// Milliseconds between leader heartbeats; elections start after 3 to 6 of them
    /// without one.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Log entries between two snapshots of the replicated state; entries before a
    /// snapshot are purged, and a node further behind receives the snapshot.
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// Milliseconds a node link may receive nothing (idle links carry a ping every
    /// heartbeat) before it is closed and redialled. Default: 10 heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_timeout_ms: Option<u64>,
    /// Milliseconds a QoS 1/2 message forwarded to another node may wait for that
    /// node's acknowledgement (its copies durable there) before its publisher is told it
    /// failed (MQTT 5: 0x80, MQTT 3: disconnected) and sends it again.
    #[serde(default = "default_forward_ack_timeout_ms")]
    pub forward_ack_timeout_ms: u64,
    /// Nodes holding each persistent session's durable state: its owner and the next
    /// `replication_factor - 1` voters after it in id order (capped at the number of
    /// voters). 1 turns replication off.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// Bytes of replicated operations waiting for one backup's acknowledgement beyond
    /// which the backup is taken out of sync (through consensus) and resynced, instead
    /// of holding more (`super::replication`).
    #[serde(default = "default_replication_queue_bytes")]
    pub replication_queue_bytes: usize,
    /// TLS on the node links, with the listeners' settings: `cert`/`key` (presented in
    /// both directions), `ca` (which node certificates are trusted; required), and
    /// `client_auth = "require"` for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::config::TlsConfig>,
}

fn default_link_buffer_bytes() -> usize {
    crate::limits::DEFAULT_CLUSTER_LINK_BUFFER_BYTES
}

fn default_replication_queue_bytes() -> usize {
    crate::limits::DEFAULT_CLUSTER_REPLICATION_QUEUE_BYTES
}

fn default_heartbeat_ms() -> u64 {
    crate::limits::DEFAULT_CLUSTER_HEARTBEAT_MS
}

fn default_forward_ack_timeout_ms() -> u64 {
    crate::limits::DEFAULT_CLUSTER_FORWARD_ACK_TIMEOUT_MS
}

fn default_snapshot_entries() -> u64 {
    crate::limits::DEFAULT_CLUSTER_SNAPSHOT_ENTRIES
}

impl ClusterConfig {
    /// `link_timeout_ms`, or its default of `LINK_TIMEOUT_HEARTBEATS` heartbeats.
    pub fn link_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.link_timeout_ms.unwrap_or(
                self.heartbeat_ms * crate::limits::DEFAULT_CLUSTER_LINK_TIMEOUT_HEARTBEATS,
            ),
        )
    }
}

fn default_replication_factor() -> usize {
    crate::limits::DEFAULT_CLUSTER_REPLICATION_FACTOR
}

/// One entry of `peers`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    /// `HOST:PORT` as written (a host name is resolved when connecting).
    pub addr: String,
}

/// Parses `"ID@HOST:PORT"`.
pub fn parse_peer(text: &str) -> Result<Peer, String> {
    let (id, addr) = text
        .split_once('@')
        .ok_or_else(|| format!("'{text}' is not ID@HOST:PORT"))?;
    let id: NodeId = id
        .trim()
        .parse()
        .map_err(|_| format!("'{text}': the id '{id}' is not a number"))?;
    if id == 0 {
        return Err(format!("'{text}': node ids start at 1"));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{text}': '{addr}' has no :PORT"))?;
    if host.is_empty() {
        return Err(format!("'{text}': the host is empty"));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => {}
        _ => return Err(format!("'{text}': '{port}' is not a port (1 to 65535)")),
    }
    Ok(Peer {
        id,
        addr: addr.to_string(),
    })
}

impl ClusterConfig {
    /// The parsed `peers`, skipping entries that do not parse (`problems` reports them).
    pub fn members(&self) -> Vec<Peer> {
        self.peers
            .iter()
            .filter_map(|text| parse_peer(text).ok())
            .collect()
    }

    /// Every rule the table breaks, keys prefixed with `cluster.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.node_id == 0 {
            problems.push(Problem::new("cluster.node_id", "node ids start at 1"));
        }
        if self.peers.is_empty() {
            problems.push(Problem::new(
                "cluster.peers",
                "list every initial member as \"ID@HOST:PORT\", this node included",
            ));
        }
        let mut ids: HashMap<NodeId, usize> = HashMap::new();
        let mut addrs: HashMap<String, usize> = HashMap::new();
        for (index, text) in self.peers.iter().enumerate() {
            let key = format!("cluster.peers[{index}]");
            match parse_peer(text) {
                Err(message) => problems.push(Problem::new(key, message)),
                Ok(peer) => {
                    if let Some(first) = ids.insert(peer.id, index) {
                        problems.push(Problem::new(
                            key.clone(),
                            format!(
                                "node id {} is already used by cluster.peers[{first}]",
                                peer.id
                            ),
                        ));
                    }
                    if let Some(first) = addrs.insert(peer.addr.clone(), index) {
                        problems.push(Problem::new(
                            key,
                            format!("{} is already used by cluster.peers[{first}]", peer.addr),
                        ));
                    }
                }
            }
        }
        if self.node_id != 0 && !self.peers.is_empty() && !ids.contains_key(&self.node_id) {
            problems.push(Problem::new(
                "cluster.peers",
                format!(
                    "this node (cluster.node_id = {}) is not listed; every node lists all initial members, itself included",
                    self.node_id
                ),
            ));
        }
        if self.link_buffer_bytes < 64 * 1024 {
            problems.push(Problem::new(
                "cluster.link_buffer_bytes",
                format!("{} is too small; minimum: 65536", self.link_buffer_bytes),
            ));
        }
        if !(10..=10_000).contains(&self.heartbeat_ms) {
            problems.push(Problem::new(
                "cluster.heartbeat_ms",
                format!(
                    "{} is out of range; allowed: 10 to 10000 milliseconds",
                    self.heartbeat_ms
                ),
            ));
        }
        if !(10..=1_000_000).contains(&self.snapshot_entries) {
            problems.push(Problem::new(
                "cluster.snapshot_entries",
                format!(
                    "{} is out of range; allowed: 10 to 1000000 entries",
                    self.snapshot_entries
                ),
            ));
        }
        if let Some(timeout) = self.link_timeout_ms {
            let least = self.heartbeat_ms.saturating_mul(3);
            if timeout < least || timeout > 600_000 {
                problems.push(Problem::new(
                    "cluster.link_timeout_ms",
                    format!(
                        "{timeout} is out of range; allowed: 3 heartbeats (3 x cluster.heartbeat_ms = {least}) to 600000 milliseconds"
                    ),
                ));
            }
        }
        if !(100..=600_000).contains(&self.forward_ack_timeout_ms) {
            problems.push(Problem::new(
                "cluster.forward_ack_timeout_ms",
                format!(
                    "{} is out of range; allowed: 100 to 600000 milliseconds",
                    self.forward_ack_timeout_ms
                ),
            ));
        }
        if !(1..=crate::limits::MAX_CLUSTER_REPLICATION_FACTOR).contains(&self.replication_factor) {
            problems.push(Problem::new(
                "cluster.replication_factor",
                format!(
                    "{} is out of range; allowed: 1 (no replication) to {}",
                    self.replication_factor,
                    crate::limits::MAX_CLUSTER_REPLICATION_FACTOR
                ),
            ));
        }
        if self.replication_queue_bytes < 64 * 1024 {
            problems.push(Problem::new(
                "cluster.replication_queue_bytes",
                format!(
                    "{} is too small; minimum: 65536",
                    self.replication_queue_bytes
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.ca.is_none() {
                problems.push(Problem::new(
                    "cluster.tls.ca",
                    "required: the CA that node certificates chain to (nodes verify each other)",
                ));
            }
            if tls.identity.is_some() {
                problems.push(Problem::new(
                    "cluster.tls.identity",
                    "not used on node links; remove it",
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: NodeId, peers: &[&str]) -> ClusterConfig {
        ClusterConfig {
            node_id,
            bind: "127.0.0.1:7001".parse().unwrap(),
            peers: peers.iter().map(|peer| peer.to_string()).collect(),
            join: false,
            link_buffer_bytes: default_link_buffer_bytes(),
            heartbeat_ms: default_heartbeat_ms(),
            snapshot_entries: default_snapshot_entries(),
            link_timeout_ms: None,
            forward_ack_timeout_ms: default_forward_ack_timeout_ms(),
            replication_factor: default_replication_factor(),
            replication_queue_bytes: default_replication_queue_bytes(),
            tls: None,
        }
    }

    fn keys(config: &ClusterConfig) -> Vec<String> {
        config.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn a_full_peer_list_with_this_node_is_valid() {
        let c = config(2, &["1@10.0.0.1:7001", "2@10.0.0.2:7001", "3@node3:7001"]);
        assert!(c.problems().is_empty());
        assert_eq!(c.members().len(), 3);
        assert_eq!(c.members()[2].addr, "node3:7001");
    }

    #[test]
    fn own_id_missing_duplicates_and_malformed_entries_are_each_reported() {
        let c = config(
            4,
            &["1@a:1", "1@b:2", "2@a:1", "x@c:3", "3@nohost", "5@h:0"],
        );
        let keys = keys(&c);
        assert!(keys.contains(&"cluster.peers[1]".to_string()), "{keys:?}");
        assert!(keys.contains(&"cluster.peers[2]".to_string()), "{keys:?}");
        assert!(keys.contains(&"cluster.peers[3]".to_string()), "{keys:?}");
        assert!(keys.contains(&"cluster.peers[4]".to_string()), "{keys:?}");
        assert!(keys.contains(&"cluster.peers[5]".to_string()), "{keys:?}");
        assert!(keys.contains(&"cluster.peers".to_string()), "{keys:?}");
    }

    #[test]
    fn the_link_timeout_defaults_to_ten_heartbeats_and_is_at_least_three() {
        let mut c = config(1, &["1@a:1"]);
        assert_eq!(c.link_timeout(), std::time::Duration::from_millis(1000));
        c.heartbeat_ms = 200;
        assert_eq!(c.link_timeout(), std::time::Duration::from_millis(2000));
        c.link_timeout_ms = Some(599);
        assert_eq!(keys(&c), vec!["cluster.link_timeout_ms"]);
        c.link_timeout_ms = Some(600);
        assert!(c.problems().is_empty());
        c.link_timeout_ms = Some(600_001);
        assert_eq!(keys(&c), vec!["cluster.link_timeout_ms"]);
    }

    #[test]
    fn the_forward_ack_timeout_is_checked() {
        let mut c = config(1, &["1@a:1"]);
        assert_eq!(c.forward_ack_timeout_ms, 5_000);
        c.forward_ack_timeout_ms = 99;
        assert_eq!(keys(&c), vec!["cluster.forward_ack_timeout_ms"]);
        c.forward_ack_timeout_ms = 100;
        assert!(c.problems().is_empty());
        c.forward_ack_timeout_ms = 600_001;
        assert_eq!(keys(&c), vec!["cluster.forward_ack_timeout_ms"]);
    }

    #[test]
    fn node_id_zero_and_empty_peers_are_problems() {
        let keys = keys(&config(0, &[]));
        assert_eq!(keys, vec!["cluster.node_id", "cluster.peers"]);
    }

    #[test]
    fn a_replication_queue_below_64_kib_is_a_problem() {
        let mut c = config(1, &["1@127.0.0.1:7001"]);
        c.replication_queue_bytes = 65_535;
        assert_eq!(keys(&c), vec!["cluster.replication_queue_bytes"]);
        c.replication_queue_bytes = 65_536;
        assert!(keys(&c).is_empty());
    }

    #[test]
    fn a_replication_factor_of_zero_or_beyond_the_maximum_is_a_problem() {
        let mut c = config(1, &["1@a:1"]);
        c.replication_factor = 0;
        assert_eq!(keys(&c), vec!["cluster.replication_factor"]);
        c.replication_factor = crate::limits::MAX_CLUSTER_REPLICATION_FACTOR + 1;
        assert_eq!(keys(&c), vec!["cluster.replication_factor"]);
        c.replication_factor = 1;
        assert!(keys(&c).is_empty());
    }
}
