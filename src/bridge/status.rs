//! What each bridge counts, and the snapshot operators see: link state, reconnects,
//! outbox depth and bytes, messages sent / acknowledged / received / dropped by reason,
//! and the last round-trip time. The metrics endpoint, the `$SYS` topics and
//! `Bridges::status` all read these counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::broker::log_throttle::LogThrottle;
use crate::broker::Broker;
use crate::session::OutboxDrops;

/// Counters of one bridge (relaxed atomics: each is read on its own).
#[derive(Debug, Default)]
pub struct BridgeStats {
    pub name: String,
    /// The local session holding the outbox.
    pub local_client_id: String,
    pub connected: AtomicBool,
    /// The address of the remote the link is (or was last) up to, index into the list.
    pub address_index: AtomicU64,
    /// Links established after the first.
    pub reconnects: AtomicU64,
    /// A link was up at least once (the next one is a reconnect).
    pub ever_up: AtomicBool,
    pub link_failures: AtomicU64,
    /// Messages forwarded to the remote (PUBLISH sent, redeliveries included).
    pub sent: AtomicU64,
    /// QoS 1/2 messages the remote acknowledged (PUBACK, PUBCOMP): out of the outbox.
    pub acknowledged: AtomicU64,
    /// Messages received from the remote and published locally.
    pub received: AtomicU64,
    /// Messages no topic rule maps (after a rule was removed).
    pub dropped_no_rule: AtomicU64,
    /// Messages the remote refused (MQTT 5 PUBACK/PUBREC reason >= 0x80).
    pub dropped_remote_refused: AtomicU64,
    /// The outbox's own drops (full, expired, QoS 0 while down, too large).
    pub outbox_drops: Arc<OutboxDrops>,
    /// Last measured PUBLISH-to-acknowledgement time, microseconds.
    pub round_trip_micros: AtomicU64,
    /// Thins out the log of failed connection attempts while the remote stays away.
    pub connect_failure_log: LogThrottle,
}

impl BridgeStats {
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The snapshot of this bridge now; outbox depth is read from its local session.
    pub fn status(&self, broker: &Broker) -> BridgeStatus {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (outbox_messages, outbox_bytes, outbox_inflight) = broker
            .session(&self.local_client_id)
            .map(|handle| {
                let session = handle.lock();
                (
                    session.queued_len() as u64,
                    session.queued_bytes() as u64,
                    session.inflight_len() as u64,
                )
            })
            .unwrap_or_default();
        let drops = &self.outbox_drops;
        BridgeStatus {
            name: self.name.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            reconnects: load(&self.reconnects),
            link_failures: load(&self.link_failures),
            outbox_messages,
            outbox_bytes,
            outbox_inflight,
            sent: load(&self.sent),
            acknowledged: load(&self.acknowledged),
            received: load(&self.received),
            dropped: DroppedCounts {
                outbox_full: load(&drops.refused),
                evicted: load(&drops.evicted),
                expired: load(&drops.expired),
                qos0_link_down: load(&drops.offline_qos0),
                too_large: load(&drops.too_large),
                no_rule: load(&self.dropped_no_rule),
                remote_refused: load(&self.dropped_remote_refused),
            },
            round_trip_ms: load(&self.round_trip_micros) as f64 / 1000.0,
        }
    }
}

/// One bridge as operators see it (JSON for the admin API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgeStatus {
    pub name: String,
    pub connected: bool,
    pub reconnects: u64,
    pub link_failures: u64,
    /// Messages waiting in the outbox (not yet sent).
    pub outbox_messages: u64,
    pub outbox_bytes: u64,
    /// Messages sent and not yet acknowledged by the remote.
    pub outbox_inflight: u64,
    pub sent: u64,
    pub acknowledged: u64,
    pub received: u64,
    pub dropped: DroppedCounts,
    pub round_trip_ms: f64,
}

impl BridgeStatus {
    /// The `$SYS/broker/bridges/<name>/...` topics (after `$SYS/broker/`) and values.
    pub fn sys_values(&self) -> Vec<(String, String)> {
        let base = format!("bridges/{}", self.name);
        let dropped: u64 = self
            .dropped
            .by_reason()
            .iter()
            .map(|(_, count)| count)
            .sum();
        vec![
            (
                format!("{base}/state"),
                u8::from(self.connected).to_string(),
            ),
            (format!("{base}/reconnects"), self.reconnects.to_string()),
            (
                format!("{base}/outbox/messages"),
                (self.outbox_messages + self.outbox_inflight).to_string(),
            ),
            (
                format!("{base}/outbox/bytes"),
                self.outbox_bytes.to_string(),
            ),
            (format!("{base}/messages/sent"), self.sent.to_string()),
            (
                format!("{base}/messages/acknowledged"),
                self.acknowledged.to_string(),
            ),
            (
                format!("{base}/messages/received"),
                self.received.to_string(),
            ),
            (format!("{base}/messages/dropped"), dropped.to_string()),
            (
                format!("{base}/round_trip_ms"),
                format!("{:.3}", self.round_trip_ms),
            ),
        ]
    }
}

/// Messages a bridge dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DroppedCounts {
    pub outbox_full: u64,
    pub evicted: u64,
    pub expired: u64,
    pub qos0_link_down: u64,
    pub too_large: u64,
    pub no_rule: u64,
    pub remote_refused: u64,
}

impl DroppedCounts {
    /// `(reason label, count)` for metrics and `$SYS`.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("outbox_full", self.outbox_full),
            ("evicted", self.evicted),
            ("expired", self.expired),
            ("qos0_link_down", self.qos0_link_down),
            ("too_large", self.too_large),
            ("no_rule", self.no_rule),
            ("remote_refused", self.remote_refused),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_topics_name_the_bridge_and_sum_the_drops() {
        let status = BridgeStatus {
            name: "cloud".into(),
            connected: true,
            reconnects: 2,
            link_failures: 3,
            outbox_messages: 10,
            outbox_bytes: 1000,
            outbox_inflight: 5,
            sent: 40,
            acknowledged: 30,
            received: 7,
            dropped: DroppedCounts {
                outbox_full: 1,
                evicted: 2,
                expired: 0,
                qos0_link_down: 3,
                too_large: 0,
                no_rule: 0,
                remote_refused: 1,
            },
            round_trip_ms: 1.5,
        };
        let values = status.sys_values();
        let value = |topic: &str| {
            values
                .iter()
                .find(|(name, _)| name == topic)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(value("bridges/cloud/state"), Some("1"));
        assert_eq!(value("bridges/cloud/outbox/messages"), Some("15"));
        assert_eq!(value("bridges/cloud/messages/dropped"), Some("7"));
        assert_eq!(value("bridges/cloud/messages/acknowledged"), Some("30"));
        // Serialisable for the admin API (TOML here: no JSON crate in the library).
        let text = toml::to_string(&status).unwrap_or_default();
        assert!(text.contains("outbox_full = 1"), "{text}");
    }
}
