//! Telemetry for operators: every metric name the broker exports, the recording helpers,
//! and the Prometheus rendering behind the `/metrics` endpoint ([`endpoint`]).
//!
//! The broker counts in exactly one place, `crate::broker::Stats` (relaxed atomics on the
//! hot path). At each scrape those counters are copied into a Prometheus recorder of the
//! `metrics-exporter-prometheus` crate (`Counter::absolute`), the gauges are sampled from
//! the live state, and the recorder renders the text format. Values are therefore exact
//! at the moment of the scrape, and the `$SYS` topics read the same counters.
//!
//! The recorder is owned by the broker, not installed globally: several brokers in one
//! process (tests) keep separate numbers. Histograms (storage write and sync latency) are
//! recorded directly into it through [`StorageMetrics`], which a store may clone.
//!
//! No metric carries a client identifier: a fleet has thousands, and every label value
//! is a time series in Prometheus. Labels are small closed sets (QoS, reason).

pub mod endpoint;

use std::time::{Duration, Instant};

use metrics::{Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::broker::{Broker, Dropped, Refusal, StatsSnapshot};

/// Every exported metric name, in one place. Counters end in `_total`.
pub mod names {
    pub const BUILD_INFO: &str = "fleetmq_build_info";
    pub const UPTIME_SECONDS: &str = "fleetmq_uptime_seconds";
    pub const CONNECTIONS_CURRENT: &str = "fleetmq_connections_current";
    pub const CONNECTIONS_PARKED: &str = "fleetmq_connections_parked";
    pub const CONNECTIONS_TOTAL: &str = "fleetmq_connections_total";
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "fleetmq_connections_refused_total";
    pub const AUTH_FAILURES_TOTAL: &str = "fleetmq_auth_failures_total";
    pub const SESSIONS: &str = "fleetmq_sessions";
    pub const SUBSCRIPTIONS: &str = "fleetmq_subscriptions";
    pub const RETAINED_MESSAGES: &str = "fleetmq_retained_messages";
    pub const PACKETS_RECEIVED_TOTAL: &str = "fleetmq_packets_received_total";
    pub const PACKETS_SENT_TOTAL: &str = "fleetmq_packets_sent_total";
    pub const MESSAGES_RECEIVED_TOTAL: &str = "fleetmq_messages_received_total";
    pub const MESSAGES_SENT_TOTAL: &str = "fleetmq_messages_sent_total";
    pub const BYTES_RECEIVED_TOTAL: &str = "fleetmq_bytes_received_total";
    pub const BYTES_SENT_TOTAL: &str = "fleetmq_bytes_sent_total";
    pub const MESSAGES_DROPPED_TOTAL: &str = "fleetmq_messages_dropped_total";
    pub const MESSAGES_UNROUTED_TOTAL: &str = "fleetmq_messages_unrouted_total";
    pub const QUEUED_MESSAGES: &str = "fleetmq_queued_messages";
    pub const QUEUED_BYTES: &str = "fleetmq_queued_bytes";
    pub const INFLIGHT_MESSAGES: &str = "fleetmq_inflight_messages";
    pub const TAKEOVERS_TOTAL: &str = "fleetmq_takeovers_total";
    pub const SLOW_CONSUMERS_TOTAL: &str = "fleetmq_slow_consumers_total";
    pub const PUBLISHERS_PAUSED_TOTAL: &str = "fleetmq_publishers_paused_total";
    pub const KEEP_ALIVE_TIMEOUTS_TOTAL: &str = "fleetmq_keep_alive_timeouts_total";
    pub const PROTOCOL_VIOLATIONS_TOTAL: &str = "fleetmq_protocol_violations_total";
    pub const WILLS_PUBLISHED_TOTAL: &str = "fleetmq_wills_published_total";
    pub const SESSIONS_EXPIRED_TOTAL: &str = "fleetmq_sessions_expired_total";
    pub const STORAGE_WRITE_SECONDS: &str = "fleetmq_storage_write_seconds";
    pub const STORAGE_SYNC_SECONDS: &str = "fleetmq_storage_sync_seconds";
    pub const STORAGE_ERRORS_TOTAL: &str = "fleetmq_storage_errors_total";
    pub const STORAGE_MEMTABLE_BYTES: &str = "fleetmq_storage_memtable_bytes";
    pub const STORAGE_BLOCK_CACHE_BYTES: &str = "fleetmq_storage_block_cache_bytes";
    pub const BRIDGE_UP: &str = "fleetmq_bridge_up";
    pub const BRIDGE_RECONNECTS_TOTAL: &str = "fleetmq_bridge_reconnects_total";
    pub const BRIDGE_OUTBOX_MESSAGES: &str = "fleetmq_bridge_outbox_messages";
    pub const BRIDGE_OUTBOX_BYTES: &str = "fleetmq_bridge_outbox_bytes";
    pub const BRIDGE_MESSAGES_SENT_TOTAL: &str = "fleetmq_bridge_messages_sent_total";
    pub const BRIDGE_MESSAGES_ACKNOWLEDGED_TOTAL: &str =
        "fleetmq_bridge_messages_acknowledged_total";
    pub const BRIDGE_MESSAGES_RECEIVED_TOTAL: &str = "fleetmq_bridge_messages_received_total";
    pub const BRIDGE_MESSAGES_DROPPED_TOTAL: &str = "fleetmq_bridge_messages_dropped_total";
    pub const BRIDGE_ROUND_TRIP_SECONDS: &str = "fleetmq_bridge_round_trip_seconds";

    /// Every name above, for checks that a dashboard or alert uses real metrics.
    pub const ALL: [&str; 42] = [
        BUILD_INFO,
        UPTIME_SECONDS,
        CONNECTIONS_CURRENT,
        CONNECTIONS_PARKED,
        CONNECTIONS_TOTAL,
        CONNECTIONS_REFUSED_TOTAL,
        AUTH_FAILURES_TOTAL,
        SESSIONS,
        SUBSCRIPTIONS,
        RETAINED_MESSAGES,
        PACKETS_RECEIVED_TOTAL,
        PACKETS_SENT_TOTAL,
        MESSAGES_RECEIVED_TOTAL,
        MESSAGES_SENT_TOTAL,
        BYTES_RECEIVED_TOTAL,
        BYTES_SENT_TOTAL,
        MESSAGES_DROPPED_TOTAL,
        MESSAGES_UNROUTED_TOTAL,
        QUEUED_MESSAGES,
        QUEUED_BYTES,
        INFLIGHT_MESSAGES,
        TAKEOVERS_TOTAL,
        SLOW_CONSUMERS_TOTAL,
        PUBLISHERS_PAUSED_TOTAL,
        KEEP_ALIVE_TIMEOUTS_TOTAL,
        PROTOCOL_VIOLATIONS_TOTAL,
        WILLS_PUBLISHED_TOTAL,
        SESSIONS_EXPIRED_TOTAL,
        STORAGE_WRITE_SECONDS,
        STORAGE_SYNC_SECONDS,
        STORAGE_ERRORS_TOTAL,
        STORAGE_MEMTABLE_BYTES,
        STORAGE_BLOCK_CACHE_BYTES,
        BRIDGE_UP,
        BRIDGE_RECONNECTS_TOTAL,
        BRIDGE_OUTBOX_MESSAGES,
        BRIDGE_OUTBOX_BYTES,
        BRIDGE_MESSAGES_SENT_TOTAL,
        BRIDGE_MESSAGES_ACKNOWLEDGED_TOTAL,
        BRIDGE_MESSAGES_RECEIVED_TOTAL,
        BRIDGE_MESSAGES_DROPPED_TOTAL,
        BRIDGE_ROUND_TRIP_SECONDS,
    ];
}

use names::*;

/// Upper bounds of the storage latency buckets, in seconds: from a page-cache write
/// (tens of microseconds) to an fsync on a worn SD card (around a second).
const STORAGE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// Records storage latency; cheap to clone and to call from any thread.
#[derive(Clone)]
pub struct StorageMetrics {
    write: Histogram,
    sync: Histogram,
}

impl StorageMetrics {
    /// Time the store took to record one state change.
    pub fn record_write(&self, elapsed: Duration) {
        self.write.record(elapsed.as_secs_f64());
    }

    /// Time one durable sync (fsync of the write-ahead log) took.
    pub fn record_sync(&self, elapsed: Duration) {
        self.sync.record(elapsed.as_secs_f64());
    }
}

/// The gauges, sampled from the live state at scrape or `$SYS` time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sessions_online: u64,
    pub sessions_offline: u64,
    pub subscriptions: u64,
    pub retained_messages: u64,
    pub queued_messages: u64,
    pub queued_bytes: u64,
    pub inflight_messages: u64,
}

impl Gauges {
    /// Walks every session, locking one at a time (never the registry and a session
    /// together), so the cost is one short lock per session per scrape.
    pub fn sample(broker: &Broker) -> Gauges {
        let mut gauges = Gauges {
            retained_messages: broker.retained_count() as u64,
            ..Gauges::default()
        };
        for handle in broker.sessions() {
            if handle.is_connected() {
                gauges.sessions_online += 1;
            } else {
                gauges.sessions_offline += 1;
            }
            let session = handle.lock();
            gauges.subscriptions += session.subscriptions().count() as u64;
            gauges.queued_messages += session.queued_len() as u64;
            gauges.queued_bytes += session.queued_bytes() as u64;
            gauges.inflight_messages += session.inflight_len() as u64;
        }
        gauges
    }
}

/// The broker's metrics recorder and its start time (for uptime).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: Instant,
    storage: StorageMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Prefix("fleetmq_storage_".to_string()),
            &STORAGE_BUCKETS,
        ) {
            Ok(builder) => builder,
            // Only an empty bucket list is refused; ours is constant and non-empty.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let storage = metrics::with_local_recorder(&recorder, || {
            describe();
            StorageMetrics {
                write: metrics::histogram!(STORAGE_WRITE_SECONDS),
                sync: metrics::histogram!(STORAGE_SYNC_SECONDS),
            }
        });
        Metrics {
            recorder,
            handle,
            started: Instant::now(),
            storage,
        }
    }

    /// The latency recorder to hand to a store.
    pub fn storage(&self) -> &StorageMetrics {
        &self.storage
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The Prometheus text exposition of `broker`'s metrics, exact as of this call.
    pub fn render(&self, broker: &Broker) -> String {
        let stats = broker.stats().snapshot();
        let gauges = Gauges::sample(broker);
        let uptime = self.uptime();
        let store = broker.store().stats();
        let bridges: Vec<_> = broker
            .bridge_stats()
            .iter()
            .map(|bridge| bridge.status(broker))
            .collect();
        metrics::with_local_recorder(&self.recorder, || {
            record_snapshot(&stats, &gauges, uptime);
            metrics::counter!(STORAGE_ERRORS_TOTAL).absolute(store.write_errors + store.refused);
            metrics::gauge!(STORAGE_MEMTABLE_BYTES).set(store.rocks_memory.memtables as f64);
            metrics::gauge!(STORAGE_BLOCK_CACHE_BYTES).set(store.rocks_memory.block_cache as f64);
            for bridge in &bridges {
                record_bridge(bridge);
            }
        });
        let mut text = self.handle.render();
        text.push_str(&broker.cluster_metrics());
        text
    }
}

fn record_snapshot(stats: &StatsSnapshot, gauges: &Gauges, uptime: Duration) {
    use metrics::{counter, gauge};
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(UPTIME_SECONDS).set(uptime.as_secs_f64());
    gauge!(CONNECTIONS_CURRENT).set(stats.connections_open() as f64);
    gauge!(CONNECTIONS_PARKED).set(stats.connections_parked as f64);
    counter!(CONNECTIONS_TOTAL).absolute(stats.connections_accepted);
    for refusal in Refusal::ALL {
        counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => refusal.label())
            .absolute(stats.refused(refusal));
    }
    counter!(AUTH_FAILURES_TOTAL).absolute(stats.auth_failures());
    gauge!(SESSIONS, "state" => "online").set(gauges.sessions_online as f64);
    gauge!(SESSIONS, "state" => "offline").set(gauges.sessions_offline as f64);
    gauge!(SUBSCRIPTIONS).set(gauges.subscriptions as f64);
    gauge!(RETAINED_MESSAGES).set(gauges.retained_messages as f64);
    counter!(PACKETS_RECEIVED_TOTAL).absolute(stats.packets_received);
    counter!(PACKETS_SENT_TOTAL).absolute(stats.packets_sent);
    for (qos, label) in ["0", "1", "2"].into_iter().enumerate() {
        counter!(MESSAGES_RECEIVED_TOTAL, "qos" => label).absolute(stats.messages_received[qos]);
        counter!(MESSAGES_SENT_TOTAL, "qos" => label).absolute(stats.messages_sent[qos]);
    }
    counter!(BYTES_RECEIVED_TOTAL).absolute(stats.bytes_received);
    counter!(BYTES_SENT_TOTAL).absolute(stats.bytes_sent);
    for reason in Dropped::ALL {
        counter!(MESSAGES_DROPPED_TOTAL, "reason" => reason.label())
            .absolute(stats.dropped(reason));
    }
    counter!(MESSAGES_UNROUTED_TOTAL).absolute(stats.messages_unrouted);
    gauge!(QUEUED_MESSAGES).set(gauges.queued_messages as f64);
    gauge!(QUEUED_BYTES).set(gauges.queued_bytes as f64);
    gauge!(INFLIGHT_MESSAGES).set(gauges.inflight_messages as f64);
    counter!(TAKEOVERS_TOTAL).absolute(stats.takeovers);
    counter!(SLOW_CONSUMERS_TOTAL).absolute(stats.slow_consumers);
    counter!(PUBLISHERS_PAUSED_TOTAL).absolute(stats.publishers_paused);
    counter!(KEEP_ALIVE_TIMEOUTS_TOTAL).absolute(stats.keep_alive_timeouts);
    counter!(PROTOCOL_VIOLATIONS_TOTAL).absolute(stats.protocol_violations);
    counter!(WILLS_PUBLISHED_TOTAL).absolute(stats.wills_published);
    counter!(SESSIONS_EXPIRED_TOTAL).absolute(stats.sessions_expired);
}

/// One bridge's metrics, labelled with its name (a handful of configured bridges, so the
/// label stays a small set).
fn record_bridge(status: &crate::bridge::BridgeStatus) {
    use metrics::{counter, gauge};
    let name = status.name.clone();
    gauge!(BRIDGE_UP, "bridge" => name.clone()).set(if status.connected { 1.0 } else { 0.0 });
    counter!(BRIDGE_RECONNECTS_TOTAL, "bridge" => name.clone()).absolute(status.reconnects);
    gauge!(BRIDGE_OUTBOX_MESSAGES, "bridge" => name.clone())
        .set((status.outbox_messages + status.outbox_inflight) as f64);
    gauge!(BRIDGE_OUTBOX_BYTES, "bridge" => name.clone()).set(status.outbox_bytes as f64);
    counter!(BRIDGE_MESSAGES_SENT_TOTAL, "bridge" => name.clone()).absolute(status.sent);
    counter!(BRIDGE_MESSAGES_ACKNOWLEDGED_TOTAL, "bridge" => name.clone())
        .absolute(status.acknowledged);
    counter!(BRIDGE_MESSAGES_RECEIVED_TOTAL, "bridge" => name.clone()).absolute(status.received);
    for (reason, count) in status.dropped.by_reason() {
        counter!(BRIDGE_MESSAGES_DROPPED_TOTAL, "bridge" => name.clone(), "reason" => reason)
            .absolute(count);
    }
    gauge!(BRIDGE_ROUND_TRIP_SECONDS, "bridge" => name).set(status.round_trip_ms / 1000.0);
}

/// HELP lines: what each metric means, as an operator reads it in Prometheus.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build"
    );
    describe_gauge!(
        UPTIME_SECONDS,
        Unit::Seconds,
        "Seconds since the broker started"
    );
    describe_gauge!(CONNECTIONS_CURRENT, "TCP connections open now");
    describe_gauge!(
        CONNECTIONS_PARKED,
        "Open connections parked now (idle, without a task; part of the open ones)"
    );
    describe_counter!(CONNECTIONS_TOTAL, "TCP connections accepted");
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections closed before a session was attached, by reason"
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Connections refused for bad credentials or missing authorisation"
    );
    describe_gauge!(
        SESSIONS,
        "Sessions held, by whether their client is connected"
    );
    describe_gauge!(SUBSCRIPTIONS, "Subscriptions of all sessions");
    describe_gauge!(RETAINED_MESSAGES, "Retained messages, $SYS ones included");
    describe_counter!(PACKETS_RECEIVED_TOTAL, "MQTT packets of any type received");
    describe_counter!(PACKETS_SENT_TOTAL, "MQTT packets of any type sent");
    describe_counter!(
        MESSAGES_RECEIVED_TOTAL,
        "Application messages published by clients and wills, by QoS"
    );
    describe_counter!(
        MESSAGES_SENT_TOTAL,
        "PUBLISH packets sent to subscribers (redeliveries included), by QoS"
    );
    describe_counter!(BYTES_RECEIVED_TOTAL, Unit::Bytes, "Bytes read from clients");
    describe_counter!(BYTES_SENT_TOTAL, Unit::Bytes, "Bytes written to clients");
    describe_counter!(
        MESSAGES_DROPPED_TOTAL,
        "Messages not delivered to a subscriber, by reason"
    );
    describe_counter!(
        MESSAGES_UNROUTED_TOTAL,
        "Published messages no subscription matched"
    );
    describe_gauge!(QUEUED_MESSAGES, "Messages waiting in session queues");
    describe_gauge!(
        QUEUED_BYTES,
        Unit::Bytes,
        "Bytes of messages waiting in session queues"
    );
    describe_gauge!(
        INFLIGHT_MESSAGES,
        "Outgoing QoS 1/2 messages awaiting acknowledgement"
    );
    describe_counter!(TAKEOVERS_TOTAL, "Sessions taken over by a new connection");
    describe_counter!(
        SLOW_CONSUMERS_TOTAL,
        "Clients disconnected for not reading fast enough"
    );
    describe_counter!(
        PUBLISHERS_PAUSED_TOTAL,
        "Times a publisher's connection stopped being read because a subscriber's queue was nearly full"
    );
    describe_counter!(
        KEEP_ALIVE_TIMEOUTS_TOTAL,
        "Clients disconnected by the keep-alive timer"
    );
    describe_counter!(
        PROTOCOL_VIOLATIONS_TOTAL,
        "Clients disconnected for a protocol violation"
    );
    describe_counter!(WILLS_PUBLISHED_TOTAL, "Will messages published");
    describe_counter!(
        SESSIONS_EXPIRED_TOTAL,
        "Offline sessions ended by their expiry interval"
    );
    describe_histogram!(
        STORAGE_WRITE_SECONDS,
        Unit::Seconds,
        "Time to record one state change in the store"
    );
    describe_histogram!(
        STORAGE_SYNC_SECONDS,
        Unit::Seconds,
        "Time of one durable sync of the store's write-ahead log"
    );
    describe_counter!(
        STORAGE_ERRORS_TOTAL,
        "Store writes that failed (I/O error, disk full) or were refused (writer overloaded); what waited for them was not acknowledged"
    );
    describe_gauge!(
        STORAGE_MEMTABLE_BYTES,
        Unit::Bytes,
        "RocksDB memtables of every database of the node, against storage.write_buffer_mb"
    );
    describe_gauge!(
        STORAGE_BLOCK_CACHE_BYTES,
        Unit::Bytes,
        "RocksDB's shared block cache, against storage.block_cache_mb"
    );
    describe_gauge!(
        BRIDGE_UP,
        "1 while the bridge's link to its remote broker is up"
    );
    describe_counter!(
        BRIDGE_RECONNECTS_TOTAL,
        "Bridge links established again after a failure"
    );
    describe_gauge!(
        BRIDGE_OUTBOX_MESSAGES,
        "Messages in the bridge's outbox: waiting, or sent and not yet acknowledged"
    );
    describe_gauge!(
        BRIDGE_OUTBOX_BYTES,
        Unit::Bytes,
        "Bytes of the messages waiting in the bridge's outbox"
    );
    describe_counter!(
        BRIDGE_MESSAGES_SENT_TOTAL,
        "PUBLISH packets the bridge sent to its remote (redeliveries included)"
    );
    describe_counter!(
        BRIDGE_MESSAGES_ACKNOWLEDGED_TOTAL,
        "QoS 1/2 messages the remote acknowledged (removed from the outbox)"
    );
    describe_counter!(
        BRIDGE_MESSAGES_RECEIVED_TOTAL,
        "Messages the bridge received from its remote and published locally"
    );
    describe_counter!(
        BRIDGE_MESSAGES_DROPPED_TOTAL,
        "Messages the bridge did not forward, by reason"
    );
    describe_gauge!(
        BRIDGE_ROUND_TRIP_SECONDS,
        Unit::Seconds,
        "Last time from sending a QoS 1/2 message to the remote's acknowledgement"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::protocol::QoS;
    use crate::storage::MemoryStore;
    use std::sync::Arc;

    #[test]
    fn render_shows_counters_with_labels_and_help() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        broker.stats().message_received(QoS::AtLeastOnce);
        broker.stats().refused(Refusal::BadCredentials);
        broker
            .metrics()
            .storage()
            .record_sync(Duration::from_millis(3));
        let text = broker.metrics().render(&broker);
        for line in [
            "fleetmq_messages_received_total{qos=\"1\"} 1",
            "fleetmq_messages_received_total{qos=\"0\"} 0",
            "fleetmq_connections_refused_total{reason=\"bad_credentials\"} 1",
            "fleetmq_auth_failures_total 1",
            "fleetmq_sessions{state=\"online\"} 0",
            "fleetmq_storage_sync_seconds_count 1",
            "fleetmq_storage_sync_seconds_bucket{le=\"0.005\"} 1",
            "fleetmq_storage_sync_seconds_bucket{le=\"0.0025\"} 0",
            "# HELP fleetmq_takeovers_total Sessions taken over by a new connection",
            "# TYPE fleetmq_takeovers_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(text.contains("fleetmq_build_info{version=\""), "{text}");
    }

    #[test]
    fn brokers_in_one_process_keep_separate_numbers() {
        let first = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let second = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        crate::broker::Stats::incr(&first.stats().takeovers);
        assert!(first
            .metrics()
            .render(&first)
            .contains("fleetmq_takeovers_total 1\n"));
        assert!(second
            .metrics()
            .render(&second)
            .contains("fleetmq_takeovers_total 0\n"));
    }
}
