//! Range and cross-field checks on a parsed configuration.
//!
//! Types already bound most values (a `u16` cannot exceed 65535); these checks catch the
//! values that parse but cannot work: no listener, two listeners on one port, a queue
//! that cannot hold a single maximum-size packet. All problems are returned at once so
//! an operator fixes a file in one pass.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Config, Problem};
use crate::limits::{
    MAX_CONNECT_TIMEOUT_SECS, MAX_MAX_PACKET_SIZE, MAX_PARK_AFTER_MS, MAX_SHUTDOWN_GRACE_SECS,
    MAX_SLOW_CONSUMER_TIMEOUT_MS, MAX_SYS_INTERVAL_SECS, MIN_MAX_PACKET_SIZE,
};

impl Config {
    /// Every rule this configuration breaks, in file order; empty when it is valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_listeners(&mut problems);
        self.check_limits(&mut problems);
        self.check_sessions(&mut problems);
        self.check_security(&mut problems);
        self.check_storage_and_log(&mut problems);
        self.check_operations(&mut problems);
        self.check_admin(&mut problems);
        self.check_bridges(&mut problems);
        if let Some(cluster) = &self.cluster {
            problems.extend(cluster.problems());
        }
        problems
    }

    fn check_listeners(&self, problems: &mut Vec<Problem>) {
        if self.listeners.is_empty() {
            problems.push(Problem::new(
                "listeners",
                "at least one listener is required, e.g. [[listeners]] type = \"tcp\" bind = \"127.0.0.1:1883\"",
            ));
        }
        // Port 0 asks the OS for a free port, so two such listeners never collide.
        let mut first_use: HashMap<SocketAddr, usize> = HashMap::new();
        for (index, listener) in self.listeners.iter().enumerate() {
            let bind = listener.bind;
            if bind.port() == 0 {
                continue;
            }
            if let Some(first) = first_use.get(&bind) {
                problems.push(Problem::new(
                    format!("listeners[{index}].bind"),
                    format!("{bind} is already used by listeners[{first}]"),
                ));
                continue;
            }
            // A wildcard address takes the port on every interface of its family, so
            // it collides with any specific address on the same port.
            let overlap = first_use.iter().find(|(other, _)| {
                other.port() == bind.port()
                    && other.is_ipv4() == bind.is_ipv4()
                    && (other.ip().is_unspecified() || bind.ip().is_unspecified())
            });
            if let Some((other, first)) = overlap {
                problems.push(Problem::new(
                    format!("listeners[{index}].bind"),
                    format!("{bind} overlaps {other} of listeners[{first}] (same port)"),
                ));
                continue;
            }
            first_use.insert(bind, index);
        }
    }

    fn check_limits(&self, problems: &mut Vec<Problem>) {
        let limits = &self.limits;
        if !(MIN_MAX_PACKET_SIZE..=MAX_MAX_PACKET_SIZE).contains(&limits.max_packet_size) {
            problems.push(Problem::new(
                "limits.max_packet_size",
                format!(
                    "{} bytes is out of range; allowed: {MIN_MAX_PACKET_SIZE} to {MAX_MAX_PACKET_SIZE} bytes",
                    limits.max_packet_size
                ),
            ));
        }
        if !(1..=MAX_CONNECT_TIMEOUT_SECS).contains(&limits.connect_timeout_secs) {
            problems.push(Problem::new(
                "limits.connect_timeout_secs",
                format!(
                    "{} seconds is out of range; allowed: 1 to {MAX_CONNECT_TIMEOUT_SECS} seconds",
                    limits.connect_timeout_secs
                ),
            ));
        }
        at_least_one(
            problems,
            "limits.max_inflight_messages",
            limits.max_inflight_messages.into(),
        );
        at_least_one(
            problems,
            "limits.receive_maximum",
            limits.receive_maximum.into(),
        );
        at_least_one(
            problems,
            "limits.max_queued_messages",
            limits.max_queued_messages,
        );
        at_least_one(
            problems,
            "limits.max_retained_backlog",
            limits.max_retained_backlog,
        );
        if limits.slow_consumer_timeout_ms > MAX_SLOW_CONSUMER_TIMEOUT_MS {
            problems.push(Problem::new(
                "limits.slow_consumer_timeout_ms",
                format!(
                    "{} milliseconds is out of range; allowed: 0 to {MAX_SLOW_CONSUMER_TIMEOUT_MS} milliseconds",
                    limits.slow_consumer_timeout_ms
                ),
            ));
        }
        if limits.park_after_ms > MAX_PARK_AFTER_MS {
            problems.push(Problem::new(
                "limits.park_after_ms",
                format!(
                    "{} milliseconds is out of range; allowed: 0 to {MAX_PARK_AFTER_MS} milliseconds",
                    limits.park_after_ms
                ),
            ));
        }
        // No byte limit needs to hold a maximum-size packet: an empty queue takes one
        // message whatever its size, and a drain always takes at least one packet.
        at_least_one(problems, "limits.max_queued_bytes", limits.max_queued_bytes);
        at_least_one(problems, "limits.max_outbox_bytes", limits.max_outbox_bytes);
    }

    fn check_sessions(&self, problems: &mut Vec<Problem>) {
        let sessions = &self.sessions;
        // 0 means "never expires" and is governed by the queue limits, not this bound.
        if sessions.persistent_session_expiry_secs > sessions.max_session_expiry_secs {
            problems.push(Problem::new(
                "sessions.persistent_session_expiry_secs",
                format!(
                    "{} seconds exceeds sessions.max_session_expiry_secs ({})",
                    sessions.persistent_session_expiry_secs, sessions.max_session_expiry_secs
                ),
            ));
        }
    }

    fn check_storage_and_log(&self, problems: &mut Vec<Problem>) {
        if self.storage.data_dir.as_os_str().is_empty() {
            problems.push(Problem::new(
                "storage.data_dir",
                "must not be empty; use \".\" for the working directory",
            ));
        }
        // Below 1 MiB nearly every write would flush a memtable; above 64 GiB is a typo
        // (the budget is for all memtables of the node together).
        if !(1..=65_536).contains(&self.storage.write_buffer_mb) {
            problems.push(Problem::new(
                "storage.write_buffer_mb",
                format!(
                    "{} is out of range: between 1 and 65536 MiB",
                    self.storage.write_buffer_mb
                ),
            ));
        }
        if self.storage.block_cache_mb > 65_536 {
            problems.push(Problem::new(
                "storage.block_cache_mb",
                format!(
                    "{} is out of range: between 0 and 65536 MiB",
                    self.storage.block_cache_mb
                ),
            ));
        }
        let level = self.log.level.trim();
        if level.is_empty() {
            problems.push(Problem::new(
                "log.level",
                "must not be empty; use \"off\" to disable logging",
            ));
        } else if let Err(err) = tracing_subscriber::EnvFilter::try_new(level) {
            problems.push(Problem::new(
                "log.level",
                format!(
                    "'{level}' is not a log filter ({err}); use a level (error, warn, info, debug, trace) or directives like \"info,fleetmq=debug\""
                ),
            ));
        }
    }
}

impl Config {
    fn check_operations(&self, problems: &mut Vec<Problem>) {
        let metrics = self.metrics.bind;
        if self.metrics.enabled && metrics.port() != 0 {
            let clash = self.listeners.iter().position(|listener| {
                listener.bind.port() == metrics.port()
                    && (listener.bind.ip() == metrics.ip()
                        || listener.bind.ip().is_unspecified()
                        || metrics.ip().is_unspecified())
            });
            if let Some(index) = clash {
                problems.push(Problem::new(
                    "metrics.bind",
                    format!("{metrics} is already used by listeners[{index}]"),
                ));
            }
        }
        if self.sys.interval_secs > MAX_SYS_INTERVAL_SECS {
            problems.push(Problem::new(
                "sys.interval_secs",
                format!(
                    "{} seconds is out of range; allowed: 0 (disabled) to {MAX_SYS_INTERVAL_SECS} seconds",
                    self.sys.interval_secs
                ),
            ));
        }
        if !(1..=MAX_SHUTDOWN_GRACE_SECS).contains(&self.shutdown.grace_secs) {
            problems.push(Problem::new(
                "shutdown.grace_secs",
                format!(
                    "{} seconds is out of range; allowed: 1 to {MAX_SHUTDOWN_GRACE_SECS} seconds",
                    self.shutdown.grace_secs
                ),
            ));
        }
    }
}

pub(super) fn at_least_one(problems: &mut Vec<Problem>, key: &str, value: usize) {
    if value < 1 {
        problems.push(Problem::new(
            key,
            format!("{value} is too small; minimum: 1"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenerConfig, ListenerKind};

    fn keys(config: &Config) -> Vec<String> {
        config.problems().into_iter().map(|p| p.key).collect()
    }

    fn tcp(bind: &str) -> ListenerConfig {
        ListenerConfig::new(ListenerKind::Tcp, bind.parse().unwrap())
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(Config::default().problems().is_empty());
        assert!(Config::default().validate("defaults").is_ok());
    }

    #[test]
    fn no_listener_is_a_problem() {
        let mut config = Config::default();
        config.listeners.clear();
        assert_eq!(keys(&config), ["listeners"]);
    }

    #[test]
    fn duplicate_bind_addresses_are_reported_at_the_later_listener() {
        let config = Config {
            listeners: vec![
                tcp("127.0.0.1:1883"),
                tcp("127.0.0.1:1884"),
                tcp("127.0.0.1:1883"),
            ],
            ..Config::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "listeners[2].bind");
        assert_eq!(
            problems[0].message,
            "127.0.0.1:1883 is already used by listeners[0]"
        );
    }

    #[test]
    fn a_wildcard_address_overlaps_specific_ones_on_the_same_port() {
        let mut config = Config {
            listeners: vec![tcp("127.0.0.1:1883"), tcp("0.0.0.0:1883")],
            ..Config::default()
        };
        assert_eq!(keys(&config), ["listeners[1].bind"]);
        // Another port, or another address family, does not collide.
        config.listeners = vec![
            tcp("0.0.0.0:1883"),
            tcp("127.0.0.1:1884"),
            tcp("[::1]:1883"),
        ];
        assert!(keys(&config).is_empty());
    }

    #[test]
    fn port_zero_listeners_never_collide() {
        let config = Config {
            listeners: vec![tcp("127.0.0.1:0"), tcp("127.0.0.1:0")],
            ..Config::default()
        };
        assert!(keys(&config).is_empty());
    }

    #[test]
    fn max_packet_size_bounds_are_inclusive() {
        let mut config = Config::default();
        for (size, valid) in [
            (0, false),
            (MIN_MAX_PACKET_SIZE - 1, false),
            (MIN_MAX_PACKET_SIZE, true),
            (MAX_MAX_PACKET_SIZE, true),
            (MAX_MAX_PACKET_SIZE + 1, false),
        ] {
            config.limits.max_packet_size = size;
            assert_eq!(keys(&config).is_empty(), valid, "max_packet_size = {size}");
        }
    }

    #[test]
    fn connect_timeout_must_be_between_one_second_and_an_hour() {
        let mut config = Config::default();
        for (secs, valid) in [
            (0, false),
            (1, true),
            (MAX_CONNECT_TIMEOUT_SECS, true),
            (MAX_CONNECT_TIMEOUT_SECS + 1, false),
            (u64::MAX, false),
        ] {
            config.limits.connect_timeout_secs = secs;
            assert_eq!(
                keys(&config).is_empty(),
                valid,
                "connect_timeout_secs = {secs}"
            );
        }
    }

    #[test]
    fn zero_windows_and_queues_are_problems_all_reported_together() {
        let mut config = Config::default();
        config.limits.max_inflight_messages = 0;
        config.limits.receive_maximum = 0;
        config.limits.max_queued_messages = 0;
        config.limits.max_retained_backlog = 0;
        assert_eq!(
            keys(&config),
            [
                "limits.max_inflight_messages",
                "limits.receive_maximum",
                "limits.max_queued_messages",
                "limits.max_retained_backlog"
            ]
        );
    }

    #[test]
    fn slow_consumer_timeout_is_at_most_a_minute() {
        let mut config = Config::default();
        for (ms, valid) in [
            (0, true),
            (MAX_SLOW_CONSUMER_TIMEOUT_MS, true),
            (MAX_SLOW_CONSUMER_TIMEOUT_MS + 1, false),
            (u64::MAX, false),
        ] {
            config.limits.slow_consumer_timeout_ms = ms;
            assert_eq!(
                keys(&config).is_empty(),
                valid,
                "slow_consumer_timeout_ms = {ms}"
            );
        }
    }

    #[test]
    fn queue_and_outbox_may_be_smaller_than_the_largest_packet() {
        let mut config = Config::default();
        config.limits.max_packet_size = 4096;
        config.limits.max_queued_bytes = 1024;
        config.limits.max_outbox_bytes = 1024;
        assert!(keys(&config).is_empty());
    }

    #[test]
    fn persistent_session_expiry_is_capped_by_the_maximum() {
        let mut config = Config::default();
        config.sessions.max_session_expiry_secs = 3600;
        config.sessions.persistent_session_expiry_secs = 0;
        assert!(keys(&config).is_empty(), "0 (never) is always allowed");
        config.sessions.persistent_session_expiry_secs = 3600;
        assert!(keys(&config).is_empty());
        config.sessions.persistent_session_expiry_secs = 3601;
        assert_eq!(keys(&config), ["sessions.persistent_session_expiry_secs"]);
    }

    #[test]
    fn empty_data_dir_and_bad_log_filters_are_problems() {
        let mut config = Config::default();
        config.storage.data_dir = "".into();
        config.log.level = "  ".into();
        assert_eq!(keys(&config), ["storage.data_dir", "log.level"]);
        config.storage.data_dir = "/var/lib/fleetmq".into();
        config.log.level = "info,fleetmq=loud".into();
        assert_eq!(keys(&config), ["log.level"]);
        config.log.level = "warn,fleetmq=debug".into();
        assert!(keys(&config).is_empty());
    }

    #[test]
    fn rocksdb_memory_budgets_are_range_checked() {
        let mut config = Config::default();
        config.storage.write_buffer_mb = 0;
        config.storage.block_cache_mb = 65_537;
        assert_eq!(
            keys(&config),
            ["storage.write_buffer_mb", "storage.block_cache_mb"]
        );
        config.storage.write_buffer_mb = 1;
        config.storage.block_cache_mb = 0;
        assert!(
            keys(&config).is_empty(),
            "1 MiB of memtables, no block cache"
        );
        config.storage.write_buffer_mb = 65_536;
        config.storage.block_cache_mb = 65_536;
        assert!(keys(&config).is_empty());
        config.storage.write_buffer_mb = 65_537;
        assert_eq!(keys(&config), ["storage.write_buffer_mb"]);
    }

    #[test]
    fn operations_settings_are_range_checked_and_the_metrics_port_is_free() {
        let mut config = Config::default();
        config.metrics.bind = "0.0.0.0:1883".parse().unwrap();
        config.sys.interval_secs = MAX_SYS_INTERVAL_SECS + 1;
        config.shutdown.grace_secs = 0;
        assert_eq!(
            keys(&config),
            ["metrics.bind", "sys.interval_secs", "shutdown.grace_secs"]
        );
        config.metrics.enabled = false;
        config.sys.interval_secs = 0;
        config.shutdown.grace_secs = MAX_SHUTDOWN_GRACE_SECS;
        assert!(keys(&config).is_empty(), "{:?}", config.problems());
    }

    #[test]
    fn validate_names_the_origin_on_every_problem() {
        let mut config = Config {
            listeners: vec![tcp("127.0.0.1:1883"), tcp("127.0.0.1:1883")],
            ..Config::default()
        };
        config.limits.receive_maximum = 0;
        let err = config.validate("command line").unwrap_err();
        assert_eq!(
            err.to_string(),
            "command line: invalid configuration, 2 problems:\n  \
             command line: listeners[1].bind: 127.0.0.1:1883 is already used by listeners[0]\n  \
             command line: limits.receive_maximum: 0 is too small; minimum: 1"
        );
    }
}
