//! Broker counters: plain atomics bumped on the hot path, read as a snapshot.
//!
//! This is the one place the broker counts: connections (opened, closed, refused by
//! reason), packets, messages and bytes in each direction, every message the broker does
//! not deliver by reason, and the connection events an operator watches (takeovers, slow
//! consumers, violations). Drops and refusals are also logged, rate-limited. The Prometheus endpoint (`crate::metrics`) and the `$SYS`
//! topics (`crate::sys_topics`) both read `snapshot()`; nothing here allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::log_throttle::LogThrottle;
use crate::protocol::{reason, QoS};
use crate::session::DropReason;

/// Why a connection was refused before it had a session: either the CONNECT exchange
/// failed, or the broker answered CONNACK with a failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No CONNECT within `limits.connect_timeout_secs`.
    Timeout,
    /// The client closed the socket before sending CONNECT.
    Closed,
    /// The first packet was not a valid CONNECT.
    Malformed,
    UnsupportedProtocol,
    ClientIdInvalid,
    BadCredentials,
    NotAuthorized,
    /// Closed at accept: the listener's connection rate was exceeded.
    ConnectionRate,
    /// Closed at accept: the listener's or the broker's connection limit was reached.
    ConnectionLimit,
    /// The TLS handshake or WebSocket upgrade failed or timed out.
    TransportHandshake,
    /// A PROXY protocol listener got no valid header in time (missing, malformed,
    /// truncated).
    ProxyHeader,
    /// Closed at accept: a PROXY protocol listener's peer is not a trusted balancer.
    UntrustedProxy,
    /// Any other CONNACK failure reason (server busy, banned, quota...).
    Other,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Refusal::Timeout,
        Refusal::Closed,
        Refusal::Malformed,
        Refusal::UnsupportedProtocol,
        Refusal::ClientIdInvalid,
        Refusal::BadCredentials,
        Refusal::NotAuthorized,
        Refusal::ConnectionRate,
        Refusal::ConnectionLimit,
        Refusal::TransportHandshake,
        Refusal::ProxyHeader,
        Refusal::UntrustedProxy,
        Refusal::Other,
    ];

    /// The refusal a CONNACK reason code (MQTT 5 numbering) stands for.
    pub fn from_reason_code(code: u8) -> Refusal {
        match code {
            reason::UNSUPPORTED_PROTOCOL_VERSION => Refusal::UnsupportedProtocol,
            reason::CLIENT_IDENTIFIER_NOT_VALID => Refusal::ClientIdInvalid,
            reason::BAD_USER_NAME_OR_PASSWORD | reason::BAD_AUTHENTICATION_METHOD => {
                Refusal::BadCredentials
            }
            reason::NOT_AUTHORIZED => Refusal::NotAuthorized,
            _ => Refusal::Other,
        }
    }

    /// The label value in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Timeout => "connect_timeout",
            Refusal::Closed => "closed_before_connect",
            Refusal::Malformed => "malformed_connect",
            Refusal::UnsupportedProtocol => "unsupported_protocol",
            Refusal::ClientIdInvalid => "client_id_invalid",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::ConnectionRate => "connection_rate",
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::TransportHandshake => "transport_handshake",
            Refusal::ProxyHeader => "proxy_header",
            Refusal::UntrustedProxy => "untrusted_proxy",
            Refusal::Other => "other",
        }
    }

    /// Whether this refusal is a failed authentication or authorisation.
    pub fn is_auth_failure(self) -> bool {
        matches!(self, Refusal::BadCredentials | Refusal::NotAuthorized)
    }
}

/// Why a message was not delivered, as counted (the session's reasons plus those the
/// broker and connection decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    QueueFull,
    Expired,
    OfflineQos0,
    TooLarge,
    /// Refused by access control (including PUBLISH to `$SYS`).
    AclDenied,
    /// QoS 0 messages lost in the write buffer of a client cut off as a slow consumer.
    SlowConsumer,
    /// Refused because the client published above its rate limit (MQTT 5 0x97).
    RateLimited,
    /// Retained messages matched at SUBSCRIBE beyond `limits.max_retained_backlog`.
    RetainedBacklogFull,
    /// Second copies of messages a session already had, dropped while it moves between
    /// cluster nodes.
    Duplicate,
}

impl Dropped {
    pub const ALL: [Dropped; 9] = [
        Dropped::QueueFull,
        Dropped::Expired,
        Dropped::OfflineQos0,
        Dropped::TooLarge,
        Dropped::AclDenied,
        Dropped::SlowConsumer,
        Dropped::RateLimited,
        Dropped::RetainedBacklogFull,
        Dropped::Duplicate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::Expired => "expired",
            Dropped::OfflineQos0 => "offline_qos0",
            Dropped::TooLarge => "too_large",
            Dropped::AclDenied => "acl_denied",
            Dropped::SlowConsumer => "slow_consumer",
            Dropped::RateLimited => "rate_limited",
            Dropped::RetainedBacklogFull => "retained_backlog_full",
            Dropped::Duplicate => "duplicate",
        }
    }
}

impl From<DropReason> for Dropped {
    fn from(reason: DropReason) -> Dropped {
        match reason {
            DropReason::QueueFull => Dropped::QueueFull,
            DropReason::Expired => Dropped::Expired,
            DropReason::OfflineQos0 => Dropped::OfflineQos0,
            DropReason::TooLargeForClient => Dropped::TooLarge,
            DropReason::RetainedBacklogFull => Dropped::RetainedBacklogFull,
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Sockets accepted by a listener.
    pub connections_accepted: AtomicU64,
    /// Sockets closed, whatever the reason (refused ones included), so accepted minus
    /// closed is the number open now.
    pub connections_closed: AtomicU64,
    /// Open connections parked now (idle, kept as their socket without a task); part of
    /// the open ones.
    pub connections_parked: AtomicU64,
    connections_refused: [AtomicU64; Refusal::ALL.len()],
    pub takeovers: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub keep_alive_timeouts: AtomicU64,
    pub protocol_violations: AtomicU64,
    /// Times a publisher's connection stopped reading because a subscriber's queue was
    /// nearly full (backpressure).
    pub publishers_paused: AtomicU64,
    /// MQTT packets of any type, decoded from clients / encoded for them.
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Application messages published (by clients and wills), by QoS.
    messages_received: [AtomicU64; 3],
    /// PUBLISH packets sent to clients (redeliveries included), by QoS.
    messages_sent: [AtomicU64; 3],
    /// One per (message, session) delivery handed to a session queue.
    pub messages_enqueued: AtomicU64,
    /// Published messages that matched no subscription.
    pub messages_unrouted: AtomicU64,
    pub wills_published: AtomicU64,
    pub sessions_expired: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
    /// Acknowledgements withheld (or sent as failures) because a store write failed.
    pub storage_errors: AtomicU64,
    drop_logs: [LogThrottle; Dropped::ALL.len()],
    refusal_logs: [LogThrottle; Refusal::ALL.len()],
    storage_error_log: LogThrottle,
}

/// A point-in-time copy of `Stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub connections_parked: u64,
    /// Indexed like `Refusal::ALL`.
    pub connections_refused: [u64; Refusal::ALL.len()],
    pub takeovers: u64,
    pub slow_consumers: u64,
    pub keep_alive_timeouts: u64,
    pub protocol_violations: u64,
    pub publishers_paused: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Indexed by QoS level.
    pub messages_received: [u64; 3],
    pub messages_sent: [u64; 3],
    pub messages_enqueued: u64,
    pub messages_unrouted: u64,
    pub wills_published: u64,
    pub sessions_expired: u64,
    /// Indexed like `Dropped::ALL`.
    pub dropped: [u64; Dropped::ALL.len()],
    pub storage_errors: u64,
}

impl StatsSnapshot {
    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.connections_refused[refusal as usize]
    }

    pub fn refused_total(&self) -> u64 {
        self.connections_refused.iter().sum()
    }

    pub fn auth_failures(&self) -> u64 {
        Refusal::ALL
            .iter()
            .filter(|refusal| refusal.is_auth_failure())
            .map(|refusal| self.refused(*refusal))
            .sum()
    }

    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped[reason as usize]
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub fn messages_received_total(&self) -> u64 {
        self.messages_received.iter().sum()
    }

    pub fn messages_sent_total(&self) -> u64 {
        self.messages_sent.iter().sum()
    }

    /// Sockets open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_accepted
            .saturating_sub(self.connections_closed)
    }
}

impl Stats {
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    /// Takes one from a gauge kept with `incr`.
    pub fn decr(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a message the broker did not deliver.
    /// Counts a message not delivered, and logs it (rate-limited: see `LogThrottle`).
    pub fn dropped(&self, reason: impl Into<Dropped>) {
        self.dropped_many(reason.into(), 1);
    }

    pub fn dropped_many(&self, reason: Dropped, count: u64) {
        Stats::add(&self.dropped[reason as usize], count);
        let Some(since_last) = self.drop_logs[reason as usize].occurred(Instant::now()) else {
            return;
        };
        let total = self.dropped[reason as usize].load(Ordering::Relaxed);
        let label = reason.label();
        match reason {
            // Normal operation in small numbers; worth a look only in bulk.
            Dropped::Expired | Dropped::OfflineQos0 | Dropped::AclDenied => {
                tracing::info!(reason = label, since_last, total, "messages not delivered")
            }
            _ => tracing::warn!(reason = label, since_last, total, "messages dropped"),
        }
    }

    /// Counts a failed storage write an acknowledgement waited for, and logs it
    /// (rate-limited: a full disk fails every write).
    pub fn storage_failed(&self, error: &crate::storage::StoreError) {
        Stats::incr(&self.storage_errors);
        if let Some(count) = self.storage_error_log.occurred(Instant::now()) {
            tracing::error!(%error, count, "storage write failed; the publish is not acknowledged");
        }
    }

    /// Counts a refused connection, and logs it (rate-limited: see `LogThrottle`).
    pub fn refused(&self, refusal: Refusal) {
        Stats::incr(&self.connections_refused[refusal as usize]);
        if let Some(since_last) = self.refusal_logs[refusal as usize].occurred(Instant::now()) {
            let total = self.connections_refused[refusal as usize].load(Ordering::Relaxed);
            tracing::info!(
                reason = refusal.label(),
                since_last,
                total,
                "connections refused"
            );
        }
    }

    pub fn message_received(&self, qos: QoS) {
        Stats::incr(&self.messages_received[qos as usize]);
    }

    pub fn message_sent(&self, qos: QoS) {
        Stats::incr(&self.messages_sent[qos as usize]);
    }

    /// Counts the PUBLISH packets of one drain, by QoS; a counter that gains nothing is
    /// not touched.
    pub fn messages_sent(&self, by_qos: [u64; 3]) {
        for (counter, sent) in self.messages_sent.iter().zip(by_qos) {
            if sent > 0 {
                Stats::add(counter, sent);
            }
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_closed: get(&self.connections_closed),
            connections_parked: get(&self.connections_parked),
            connections_refused: self.connections_refused.each_ref().map(get),
            takeovers: get(&self.takeovers),
            slow_consumers: get(&self.slow_consumers),
            keep_alive_timeouts: get(&self.keep_alive_timeouts),
            protocol_violations: get(&self.protocol_violations),
            publishers_paused: get(&self.publishers_paused),
            packets_received: get(&self.packets_received),
            packets_sent: get(&self.packets_sent),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            messages_received: self.messages_received.each_ref().map(get),
            messages_sent: self.messages_sent.each_ref().map(get),
            messages_enqueued: get(&self.messages_enqueued),
            messages_unrouted: get(&self.messages_unrouted),
            wills_published: get(&self.wills_published),
            sessions_expired: get(&self.sessions_expired),
            dropped: self.dropped.each_ref().map(get),
            storage_errors: get(&self.storage_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason() {
        let stats = Stats::default();
        stats.dropped(DropReason::QueueFull);
        stats.dropped(DropReason::QueueFull);
        stats.dropped(DropReason::Expired);
        stats.dropped(DropReason::OfflineQos0);
        stats.dropped(Dropped::AclDenied);
        stats.dropped_many(Dropped::SlowConsumer, 3);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.dropped(Dropped::QueueFull), 2);
        assert_eq!(snapshot.dropped(Dropped::Expired), 1);
        assert_eq!(snapshot.dropped(Dropped::OfflineQos0), 1);
        assert_eq!(snapshot.dropped(Dropped::TooLarge), 0);
        assert_eq!(snapshot.dropped(Dropped::AclDenied), 1);
        assert_eq!(snapshot.dropped(Dropped::SlowConsumer), 3);
        assert_eq!(snapshot.dropped_total(), 8);
    }

    #[test]
    fn refusals_map_connack_codes_and_count_auth_failures() {
        let stats = Stats::default();
        for code in [
            reason::BAD_USER_NAME_OR_PASSWORD,
            reason::NOT_AUTHORIZED,
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            reason::SERVER_UNAVAILABLE,
        ] {
            stats.refused(Refusal::from_reason_code(code));
        }
        stats.refused(Refusal::Timeout);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.refused(Refusal::BadCredentials), 1);
        assert_eq!(snapshot.refused(Refusal::NotAuthorized), 1);
        assert_eq!(snapshot.refused(Refusal::ClientIdInvalid), 1);
        assert_eq!(snapshot.refused(Refusal::Other), 1);
        assert_eq!(snapshot.refused(Refusal::Timeout), 1);
        assert_eq!(snapshot.refused_total(), 5);
        assert_eq!(snapshot.auth_failures(), 2);
    }

    #[test]
    fn messages_are_counted_by_qos() {
        let stats = Stats::default();
        stats.message_received(QoS::AtMostOnce);
        stats.message_received(QoS::ExactlyOnce);
        stats.message_sent(QoS::AtLeastOnce);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.messages_received, [1, 0, 1]);
        assert_eq!(snapshot.messages_sent, [0, 1, 0]);
        assert_eq!(snapshot.messages_received_total(), 2);
    }
}
