//! The `$SYS/broker/...` topics: the broker's own numbers, published as retained QoS 0
//! messages every `sys.interval_secs` (and once at start), under Mosquitto's names so
//! existing dashboards and `mosquitto_sub -t '$SYS/#' -v` keep working.
//!
//! Values come from the same counters as the Prometheus endpoint (`crate::broker::Stats`
//! and `crate::metrics::Gauges`). They are published with `Broker::publish_system`: kept
//! in the retained tree in memory only, never stored, and not counted as client traffic.
//! Wildcards at the first level never match `$` topics, so only a client that subscribes
//! to `$SYS/...` explicitly receives them; who may do so is the access control's call.
//!
//! Clients may not publish to `$SYS` ([`is_broker_topic`]): such a PUBLISH is discarded
//! and counted as dropped (`acl_denied`). MQTT 5 clients get PUBACK 0x87 (Not authorized)
//! for QoS 1; QoS 0 and 3.x clients are not told, as Mosquitto does; QoS 2 completes its
//! normal flow so the packet identifier is released on both sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::broker::{Broker, StatsSnapshot};
use crate::message::Message;
use crate::metrics::Gauges;
use crate::protocol::{PublishProperties, QoS};

/// Prefix of every topic the broker publishes itself.
pub const SYS_PREFIX: &str = "$SYS/";

/// How often a disabled publisher (`sys.interval_secs = 0`) checks whether a reload
/// enabled it.
const DISABLED_RECHECK: Duration = Duration::from_secs(1);

/// Load averages over 1, 5 and 15 minutes, as Mosquitto's `load/.../1min` topics.
const LOAD_WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// Whether `topic` is reserved for the broker: clients may not publish there.
pub fn is_broker_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with(SYS_PREFIX)
}

/// Publishes the `$SYS` topics until the broker shuts down.
pub async fn run(broker: Arc<Broker>) {
    let mut shutdown = broker.shutdown_signal();
    let mut publisher = Publisher::new(broker.stats().snapshot(), Instant::now());
    loop {
        let interval = broker.config().sys.interval_secs;
        let wait = if interval == 0 {
            DISABLED_RECHECK
        } else {
            publisher.publish(&broker, Instant::now());
            Duration::from_secs(interval)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
    }
}

/// The `(topic, value)` pairs of one publication and the load averages between them.
struct Publisher {
    previous: StatsSnapshot,
    previous_at: Instant,
    /// Per counter of `load_inputs`, the averages of `LOAD_WINDOWS`, per minute.
    loads: Vec<[f64; 3]>,
}

impl Publisher {
    fn new(stats: StatsSnapshot, now: Instant) -> Publisher {
        Publisher {
            previous: stats,
            previous_at: now,
            loads: vec![[0.0; 3]; load_inputs(&stats).len()],
        }
    }

    fn publish(&mut self, broker: &Broker, now: Instant) {
        let stats = broker.stats().snapshot();
        let gauges = Gauges::sample(broker);
        let mut values = values(&stats, &gauges, broker.metrics().uptime());
        for bridge in broker.bridge_stats() {
            values.extend(bridge.status(broker).sys_values());
        }
        let elapsed = now
            .saturating_duration_since(self.previous_at)
            .as_secs_f64();
        if elapsed > 0.0 {
            self.update_loads(&stats, elapsed);
            self.previous = stats;
            self.previous_at = now;
        }
        for ((name, _), loads) in load_inputs(&stats).iter().zip(&self.loads) {
            for ((window, _), load) in LOAD_WINDOWS.iter().zip(loads) {
                values.push((format!("load/{name}/{window}"), format!("{load:.2}")));
            }
        }
        for (topic, value) in values {
            let message = Message {
                topic: ByteString::from(format!("{SYS_PREFIX}broker/{topic}")),
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: None,
                cluster_id: Default::default(),
            };
            broker.publish_system(&Arc::new(message));
        }
    }

    /// Exponentially weighted averages of each counter's rate per minute, as Mosquitto
    /// computes them: each window decays by e^(-elapsed/window).
    fn update_loads(&mut self, stats: &StatsSnapshot, elapsed: f64) {
        let now = load_inputs(stats);
        let before = load_inputs(&self.previous);
        for ((current, previous), loads) in now.iter().zip(&before).zip(&mut self.loads) {
            let delta = current.1.saturating_sub(previous.1) as f64;
            let per_minute = delta * 60.0 / elapsed;
            for ((_, window), load) in LOAD_WINDOWS.iter().zip(loads.iter_mut()) {
                let decay = (-elapsed / window).exp();
                *load = *load * decay + per_minute * (1.0 - decay);
            }
        }
    }
}

/// The counters with load averages, under their Mosquitto names.
fn load_inputs(stats: &StatsSnapshot) -> [(&'static str, u64); 7] {
    [
        ("messages/received", stats.packets_received),
        ("messages/sent", stats.packets_sent),
        ("publish/received", stats.messages_received_total()),
        ("publish/sent", stats.messages_sent_total()),
        ("bytes/received", stats.bytes_received),
        ("bytes/sent", stats.bytes_sent),
        ("connections", stats.connections_accepted),
    ]
}

/// Every `$SYS/broker/...` topic but the load averages, with its payload.
fn values(stats: &StatsSnapshot, gauges: &Gauges, uptime: Duration) -> Vec<(String, String)> {
    let sessions = gauges.sessions_online + gauges.sessions_offline;
    [
        (
            "version",
            format!("fleetmq version {}", env!("CARGO_PKG_VERSION")),
        ),
        ("uptime", format!("{} seconds", uptime.as_secs())),
        ("clients/connected", gauges.sessions_online.to_string()),
        ("clients/disconnected", gauges.sessions_offline.to_string()),
        ("clients/total", sessions.to_string()),
        ("clients/expired", stats.sessions_expired.to_string()),
        ("messages/received", stats.packets_received.to_string()),
        ("messages/sent", stats.packets_sent.to_string()),
        (
            "publish/messages/received",
            stats.messages_received_total().to_string(),
        ),
        (
            "publish/messages/sent",
            stats.messages_sent_total().to_string(),
        ),
        (
            "publish/messages/dropped",
            stats.dropped_total().to_string(),
        ),
        ("bytes/received", stats.bytes_received.to_string()),
        ("bytes/sent", stats.bytes_sent.to_string()),
        ("subscriptions/count", gauges.subscriptions.to_string()),
        (
            "retained messages/count",
            gauges.retained_messages.to_string(),
        ),
        ("store/messages/count", gauges.queued_messages.to_string()),
        ("store/messages/bytes", gauges.queued_bytes.to_string()),
    ]
    .into_iter()
    .map(|(topic, value)| (topic.to_string(), value))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::MemoryStore;

    #[test]
    fn only_sys_topics_are_reserved() {
        assert!(is_broker_topic("$SYS"));
        assert!(is_broker_topic("$SYS/broker/uptime"));
        assert!(!is_broker_topic("$SYSTEM/x"));
        assert!(!is_broker_topic("sys/$SYS"));
        assert!(!is_broker_topic("$share/g/t"));
    }

    #[test]
    fn a_publication_retains_every_topic_without_counting_it_as_traffic() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let start = Instant::now();
        let mut publisher = Publisher::new(broker.stats().snapshot(), start);
        publisher.publish(&broker, start + Duration::from_secs(10));
        // 17 plain values and 7 counters with 3 load averages each.
        assert_eq!(broker.retained_count(), 17 + 7 * 3);
        let snapshot = broker.stats().snapshot();
        assert_eq!(snapshot.messages_received_total(), 0);
        assert_eq!(snapshot.messages_unrouted, 0);
    }

    #[test]
    fn load_averages_decay_towards_the_rate_per_minute() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new()));
        let start = Instant::now();
        let mut publisher = Publisher::new(broker.stats().snapshot(), start);
        let mut stats = broker.stats().snapshot();
        stats.connections_accepted = 10;
        publisher.update_loads(&stats, 60.0);
        let connections = publisher.loads[6];
        // 10 connections in 60 s: 10 per minute; the 1-minute average moves 1 - 1/e of
        // the way there, the longer windows less.
        let expected = 10.0 * (1.0 - (-1.0f64).exp());
        assert!((connections[0] - expected).abs() < 1e-9, "{connections:?}");
        assert!(connections[1] < connections[0] && connections[2] < connections[1]);
    }
}
