//! The cluster's Prometheus metrics, appended to the broker's `/metrics` on cluster
//! nodes (absent on a single node).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::node::ClusterNode;

fn metric(out: &mut String, kind: &str, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn one(value: u64) -> Vec<(String, f64)> {
    vec![(String::new(), value as f64)]
}

/// The owner's side of replication: the latency from a submission to each backup's
/// acknowledgement, the bytes waiting per backup, the sessions with fewer copies than
/// the replication factor, and backups taken out of sync at the queue's byte bound.
fn replication_metrics(
    out: &mut String,
    node: &ClusterNode,
    replicator: &super::replication::Replicator,
) {
    let (buckets, count, sum) = replicator.latency.snapshot();
    let name = "fleetmq_cluster_replication_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a replicated write's submission on this node (the owner) to a backup's acknowledgement that it is durable there"
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, cumulative) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
    let queues: Vec<(String, f64)> = replicator
        .queue_bytes()
        .into_iter()
        .map(|(backup, bytes)| (format!("{{backup=\"{backup}\"}}"), bytes as f64))
        .collect();
    metric(
        out,
        "gauge",
        "fleetmq_cluster_replication_queue_bytes",
        "Bytes of replicated operations waiting for the backup's acknowledgement (bounded by cluster.replication_queue_bytes)",
        &queues,
    );
    let me = node.node_id();
    let backups = node.backups_of(me);
    // The factor is capped at the number of voters: fewer backups than asked for is
    // the configuration, not a loss of copies.
    let complete = node.with_state(|state| {
        backups
            .iter()
            .all(|backup| state.replica_in_sync(me, *backup))
    });
    let under = if complete {
        0
    } else {
        replicator.persistent_sessions() as u64
    };
    metric(
        out,
        "gauge",
        "fleetmq_cluster_sessions_under_replicated",
        "Persistent sessions owned here while one of this node's backups is out of sync (fewer copies than cluster.replication_factor until its resync); the sum over the nodes is the cluster's",
        &one(under),
    );
    metric(
        out,
        "counter",
        "fleetmq_cluster_replication_overflows_total",
        "Times a backup fell cluster.replication_queue_bytes behind and was taken out of sync (then resynced) instead of holding more",
        &one(replicator.overflows()),
    );
}

/// The metrics of `node` in the Prometheus text format.
pub fn render(node: &ClusterNode) -> String {
    let metrics = node.raft().metrics().borrow().clone();
    let stats = &node.stats;
    let mut out = String::new();
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_node_id",
        "This node's id",
        &one(node.node_id()),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_term",
        "The current Raft term",
        &one(metrics.current_term),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_leader",
        "The id of the leader this node follows (0: none known)",
        &one(metrics.current_leader.unwrap_or(0)),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_is_leader",
        "1 on the leader",
        &one(u64::from(metrics.current_leader == Some(node.node_id()))),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_last_log_index",
        "Index of the last entry in this node's Raft log",
        &one(metrics.last_log_index.unwrap_or(0)),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_applied_index",
        "Index of the last committed entry applied on this node",
        &one(metrics.last_applied.map_or(0, |id| id.index)),
    );
    let last = metrics.last_log_index.unwrap_or(0);
    let lag: Vec<(String, f64)> = metrics
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != node.node_id())
        .map(|(id, matched)| {
            let matched = matched.map_or(0, |log_id| log_id.index);
            (
                format!("{{peer=\"{id}\"}}"),
                last.saturating_sub(matched) as f64,
            )
        })
        .collect();
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_replication_lag",
        "Entries each follower is behind the leader's log (on the leader only)",
        &lag,
    );
    let peers = node.links().peers();
    let per_peer = |value: &dyn Fn(&super::link::PeerLink) -> u64| -> Vec<(String, f64)> {
        peers
            .iter()
            .map(|peer| (format!("{{peer=\"{}\"}}", peer.id), value(peer) as f64))
            .collect()
    };
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_link_up",
        "1 while the link to the peer is connected",
        &per_peer(&|peer| u64::from(peer.is_connected())),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_link_connects_total",
        "Connections established to the peer (reconnects are this minus 1)",
        &per_peer(&|peer| peer.stats.connects.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_link_dropped_frames_total",
        "Frames for the peer dropped: link down or its buffer full",
        &per_peer(&|peer| peer.stats.dropped_frames.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_link_timeouts_total",
        "Connections to the peer closed because it sent nothing for cluster.link_timeout_ms",
        &per_peer(&|peer| peer.stats.timeouts.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_link_outbox_bytes",
        "Bytes waiting in the peer's outbox (frames beyond cluster.link_buffer_bytes are dropped)",
        &per_peer(&|peer| peer.outbox_bytes() as u64),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_link_paused_publishes_total",
        "QoS 1/2 PUBLISHes whose acknowledgement waited for the peer's outbox to drain (publishers paused by the link)",
        &per_peer(&|peer| peer.stats.paused_publishes.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_link_pause_timeouts_total",
        "Pauses of publishers that outlasted limits.slow_consumer_timeout_ms (they went on without waiting)",
        &per_peer(&|peer| peer.stats.pause_timeouts.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_forwards_unacked",
        "QoS 1/2 messages forwarded to the peer and not acknowledged yet (their publishers' acknowledgements wait)",
        &per_peer(&|peer| peer.unacked_forwards() as u64),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_acked_total",
        "QoS 1/2 messages the peer acknowledged once its copies were durable",
        &per_peer(&|peer| peer.stats.acked_forwards.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_resent_total",
        "Unacknowledged QoS 1/2 messages sent to the peer again on a new connection",
        &per_peer(&|peer| peer.stats.resent_forwards.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_rerouted_total",
        "Copies of messages kept for the peer while it was down, sent to the nodes that took over its routes",
        &per_peer(&|peer| peer.stats.rerouted_forwards.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_moved_total",
        "QoS 1/2 messages the peer could not keep for sessions that moved away from it, handed to the sessions' new nodes instead",
        &per_peer(&|peer| peer.stats.moved_forwards.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_timed_out_total",
        "QoS 1/2 messages the peer did not acknowledge within cluster.forward_ack_timeout_ms (their publishers were not acknowledged)",
        &per_peer(&|peer| peer.stats.timed_out_forwards.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_forwards_unacked_refused_total",
        "QoS 1/2 messages refused because too many already waited for the peer's acknowledgement (their publishers were not acknowledged)",
        &per_peer(&|peer| peer.stats.unacked_refused.load(Ordering::Relaxed)),
    );
    let out_of_sync = node.with_state(|state| {
        state
            .out_of_sync
            .values()
            .map(|backups| backups.len() as u64)
            .sum::<u64>()
    });
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_replicas_out_of_sync",
        "Backups (of any node) the cluster state counts out of sync: their sessions are under-replicated until a resync",
        &one(out_of_sync),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_backups_in_sync",
        "This node's backups that hold an up-to-date copy of its persistent sessions and receive every change",
        &one(node.replicator.as_ref().map_or(0, |replicator| replicator.backups_in_sync())),
    );
    metric(
        &mut out,
        "counter",
        "fleetmq_cluster_replication_refused_total",
        "New messages refused because a backup lagged too far behind (more than 65536 operations waiting)",
        &one(node.replicator.as_ref().map_or(0, |replicator| replicator.refused())),
    );
    metric(
        &mut out,
        "gauge",
        "fleetmq_cluster_relay_holds_open",
        "Sessions moved here whose other deliveries wait behind their old node's relay",
        &one(node.relay_holds_open()),
    );
    if let Some(replicator) = &node.replicator {
        replication_metrics(&mut out, node, replicator);
    }
    let counters = [
        ("fleetmq_cluster_forwarded_messages_total", "PUBLISHes forwarded to other nodes", &stats.forwarded_messages),
        ("fleetmq_cluster_forwarded_bytes_total", "Bytes of forwarded PUBLISH frames", &stats.forwarded_bytes),
        ("fleetmq_cluster_forward_dropped_total", "PUBLISHes not forwarded: link down or buffer full", &stats.forward_dropped),
        ("fleetmq_cluster_received_messages_total", "PUBLISHes other nodes forwarded to this one", &stats.received_messages),
        ("fleetmq_cluster_ownership_moves_total", "Sessions that moved between nodes (claimed here from another owner, or taken from here)", &stats.ownership_moves),
        ("fleetmq_cluster_handover_dropped_total", "Sessions handed over to another node that never took them (the new node started them fresh); deleted here", &stats.handover_dropped),
        ("fleetmq_cluster_handover_moves_total", "Sessions taken over whole from another node (moved here with their messages)", &stats.handover_moves),
        ("fleetmq_cluster_relayed_messages_total", "Messages relayed to the new node of a session that moved away", &stats.relayed_messages),
        ("fleetmq_cluster_relay_holds_expired_total", "Sessions moved here whose deliveries waiting behind the old node's relay were released without its end (bound passed or node unreachable)", &stats.relay_holds_expired),
        ("fleetmq_cluster_relay_dropped_total", "Messages for a session that moved away not relayed (relay buffer full, or the new node never stored the session)", &stats.relay_dropped),
        ("fleetmq_cluster_handover_messages_total", "Queued and in-flight messages that came with sessions taken over from another node", &stats.handover_messages),
        ("fleetmq_cluster_proposals_failed_total", "Changes that did not commit (no leader, timeout)", &stats.proposals_failed),
        ("fleetmq_cluster_failovers_total", "Sessions taken over from a backup of their unreachable previous owner (by a reconnecting client or adopted)", &stats.failovers),
        ("fleetmq_cluster_adopted_sessions_total", "Sessions this node adopted from its copy because their node stayed unreachable for cluster.link_timeout_ms", &stats.adopted),
        ("fleetmq_cluster_retained_dropped_total", "Retained messages not replicated: too many waiting", &stats.retained_dropped),
        ("fleetmq_cluster_forwards_dropped_catching_up_total", "Forwarded messages beyond what a restarted node holds until it caught up with the cluster (not acknowledged: their publishers send them again)", &stats.forwards_dropped_catching_up),
    ];
    for (name, help, counter) in counters {
        metric(
            &mut out,
            "counter",
            name,
            help,
            &one(counter.load(Ordering::Relaxed)),
        );
    }
    out
}
