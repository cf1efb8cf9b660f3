//! Broker configuration: the TOML file, its defaults and its validation.
//!
//! Every struct denies unknown keys so a typo is an error that names the key, never a
//! silently ignored setting. Defaults come from `crate::limits`, and `config/fleetmq.toml`
//! (embedded here as [`DEFAULT_CONFIG_TOML`]) documents each of them; a test checks that
//! parsing that file gives exactly `Config::default()`.
//!
//! Loading and error reporting (file, line and key of each problem) live in `load`, the
//! range and cross-field checks in `validate`.

mod admin;
mod bridge;
mod load;
mod security;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use admin::{read_token, AdminConfig};
pub use bridge::{
    split_host_port, BridgeConfig, BridgeProtocol, BridgeTlsConfig, BridgeTopic, Direction,
    OutboxConfig, WhenFull,
};
pub use load::{ConfigError, Problem};
pub use security::{AuthConfig, CertIdentity, CipherPreference, ClientAuth, TlsConfig};

/// The annotated default configuration, as shipped in `config/fleetmq.toml`.
/// `fleetmq print-default-config` prints it.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/fleetmq.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Each listener serves MQTT 3.1, 3.1.1 and 5.0 on one port.
    pub listeners: Vec<ListenerConfig>,
    pub limits: LimitsConfig,
    pub sessions: SessionsConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// The operator's HTTP API, `fleetmq ctl` and the dashboard.
    pub admin: AdminConfig,
    pub sys: SysConfig,
    pub shutdown: ShutdownConfig,
    /// Password and ACL files.
    pub auth: AuthConfig,
    /// Connections to remote brokers (`[[bridges]]`); none by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<BridgeConfig>,
    /// Cluster membership (`crate::cluster`); absent on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS (needs `[listeners.tls]`).
    Tls,
    /// MQTT over WebSocket (subprotocol `mqtt`), for browser clients.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// Address and port, e.g. "127.0.0.1:1883" or "0.0.0.0:1883". Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Admit clients that present no credentials. A listener named in a configuration
    /// file refuses them unless this says `true` (Mosquitto 2's rule); a listener made
    /// without a file (the built-in default, `--bind`) admits them only when `bind` is a
    /// loopback address (and, behind the PROXY protocol, the client's own address too).
    #[serde(
        default = "security::anonymous_refused",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_anonymous: Option<bool>,
    /// Open connections on this listener; default `limits.max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// New connections per second on this listener, checked before any TLS handshake;
    /// default `limits.max_connection_rate`. 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_rate: Option<u32>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load
    /// balancer, whose client address then stands for the connection's everywhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// Addresses or CIDR blocks (`10.0.0.0/8`, `::1/128`) of the balancers allowed to
    /// send the header; any other source is refused. Required with `proxy_protocol`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_protocol_trusted: Vec<String>,
    /// HTTP path of a `ws`/`wss` listener; default "/mqtt".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Certificates of a `tls`/`wss` listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest packet accepted from a client, in bytes (announced to MQTT 5 clients).
    pub max_packet_size: u32,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Largest keep alive accepted. A MQTT 5 client asking for more (or for 0) is given
    /// this value (Server Keep Alive); a 3.x client asking for more is refused, as
    /// Mosquitto does. 0 here means no maximum.
    pub max_keep_alive_secs: u16,
    /// Outgoing QoS 1/2 messages in flight per client (3.x; MQTT 5 also caps it at the
    /// client's Receive Maximum).
    pub max_inflight_messages: u16,
    /// Incoming QoS 1/2 messages a client may have unacknowledged (MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    /// Messages waiting per session (offline, or beyond the inflight window).
    pub max_queued_messages: usize,
    /// Bytes waiting per session.
    pub max_queued_bytes: usize,
    /// Retained messages waiting for one session after its SUBSCRIBE (apart from the
    /// queue).
    pub max_retained_backlog: usize,
    /// Milliseconds a publisher may be held back by a subscriber that cannot take its
    /// messages, and a subscriber may stay at `max_outbox_bytes` before it is a slow
    /// consumer. 0: no waiting (messages are dropped, slow consumers cut at once).
    pub slow_consumer_timeout_ms: u64,
    /// Milliseconds without traffic after which a TCP or TLS connection is parked (kept
    /// as its socket in a parking table, without a task); 0: never parked.
    pub park_after_ms: u64,
    /// Topic aliases a MQTT 5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Bytes of encoded packets buffered for one connection before it is a slow consumer.
    pub max_outbox_bytes: usize,
    /// Open client connections, all listeners together.
    pub max_connections: u32,
    /// New connections per second per listener (a listener may set its own); 0: no limit.
    pub max_connection_rate: u32,
    /// PUBLISH packets per second one client may send; 0: no limit.
    pub max_publish_rate: u32,
    /// Subscriptions one session may hold.
    pub max_subscriptions: u32,
    /// Levels (`/`-separated parts) of a topic name or filter.
    pub max_topic_levels: u16,
    /// Bytes of a topic name or filter.
    pub max_topic_length: u16,
    /// Bytes of a client identifier.
    pub max_client_id_length: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Seconds a 3.x persistent session (clean session = false) lives after its client
    /// disconnects. 0 means never expire, as Mosquitto does by default.
    pub persistent_session_expiry_secs: u32,
    /// Upper bound on the Session Expiry Interval a MQTT 5 client may ask for.
    pub max_session_expiry_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Keep durable state in RocksDB under `data_dir`; `false` keeps it in memory only.
    pub persistence: bool,
    /// When a write counts as durable (and QoS 1/2 publishes are acknowledged).
    pub sync: crate::storage::SyncMode,
    /// Directory for durable state.
    pub data_dir: PathBuf,
    /// MiB of RocksDB memtables, for every database of the node together (its store,
    /// the cluster's Raft log, the copies it keeps as a backup).
    pub write_buffer_mb: u32,
    /// MiB of RocksDB's block cache, shared the same way.
    pub block_cache_mb: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "fleetmq=debug"; RUST_LOG overrides it.
    pub level: String,
    /// How each log line is written to standard error.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (journald adds its own timestamps).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The Prometheus endpoint (`/metrics`, and `/health`), on its own listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Address and port of the HTTP listener. Loopback by default.
    pub bind: SocketAddr,
}

/// The `$SYS/broker/...` topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between two publications of the `$SYS` topics; 0 disables them.
    pub interval_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds clients get to receive their DISCONNECT and close on SIGTERM/SIGINT
    /// before the broker closes what is left and exits.
    pub grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig {
                // Loopback only, so anonymous clients are safe to admit; spelled out so
                // that the shipped file, which names this listener, means the same.
                allow_anonymous: Some(true),
                ..ListenerConfig::tcp(
                    crate::limits::DEFAULT_BIND
                        .parse()
                        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1883))),
                )
            }],
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            sys: SysConfig::default(),
            shutdown: ShutdownConfig::default(),
            auth: AuthConfig::default(),
            bridges: Vec::new(),
            cluster: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        use crate::limits::*;
        LimitsConfig {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            max_keep_alive_secs: DEFAULT_MAX_KEEP_ALIVE_SECS,
            max_inflight_messages: DEFAULT_MAX_INFLIGHT_MESSAGES,
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_retained_backlog: DEFAULT_MAX_RETAINED_BACKLOG,
            slow_consumer_timeout_ms: DEFAULT_SLOW_CONSUMER_TIMEOUT_MS,
            park_after_ms: DEFAULT_PARK_AFTER_MS,
            topic_alias_maximum: DEFAULT_TOPIC_ALIAS_MAXIMUM,
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connection_rate: DEFAULT_MAX_CONNECTION_RATE,
            max_publish_rate: DEFAULT_MAX_PUBLISH_RATE,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_topic_levels: DEFAULT_MAX_TOPIC_LEVELS,
            max_topic_length: DEFAULT_MAX_TOPIC_LENGTH,
            max_client_id_length: DEFAULT_MAX_CLIENT_ID_LENGTH,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            persistent_session_expiry_secs: crate::limits::DEFAULT_PERSISTENT_SESSION_EXPIRY_SECS,
            max_session_expiry_secs: crate::limits::DEFAULT_MAX_SESSION_EXPIRY_SECS,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            persistence: true,
            sync: crate::storage::SyncMode::Batch,
            data_dir: PathBuf::from(crate::limits::DEFAULT_DATA_DIR),
            write_buffer_mb: crate::storage::defaults::WRITE_BUFFER_MB,
            block_cache_mb: crate::storage::defaults::BLOCK_CACHE_MB,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: crate::limits::DEFAULT_LOG_LEVEL.to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bind: crate::limits::DEFAULT_METRICS_BIND
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9883))),
        }
    }
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval_secs: crate::limits::DEFAULT_SYS_INTERVAL_SECS,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_secs: crate::limits::DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_is_exactly_the_defaults() {
        let parsed = Config::from_toml_str(DEFAULT_CONFIG_TOML, "config/fleetmq.toml");
        assert_eq!(parsed.ok(), Some(Config::default()));
    }

    /// Equality of the parsed file with the defaults would also hold if the file left a
    /// key out; comparing the raw tables proves it spells out every key.
    #[test]
    fn shipped_config_file_spells_out_every_key() {
        let shipped: toml::Table = DEFAULT_CONFIG_TOML.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(shipped, defaults);
    }

    /// The rates are off by default; the file recommends values for device fleets.
    #[test]
    fn shipped_config_file_recommends_the_device_rates() {
        use crate::limits::{RECOMMENDED_DEVICE_CONNECTION_RATE, RECOMMENDED_DEVICE_PUBLISH_RATE};
        let defaults = Config::default();
        assert_eq!(defaults.limits.max_publish_rate, 0);
        assert_eq!(defaults.limits.max_connection_rate, 0);
        for recommended in [
            format!("Recommended where devices connect: {RECOMMENDED_DEVICE_CONNECTION_RATE}."),
            format!(
                "Recommended where every client is a device: {RECOMMENDED_DEVICE_PUBLISH_RATE}."
            ),
        ] {
            assert!(DEFAULT_CONFIG_TOML.contains(&recommended), "{recommended}");
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let parsed = Config::from_toml_str("", "empty.toml");
        assert_eq!(parsed.ok(), Some(Config::default()));
    }

    #[test]
    fn defaults_listen_on_loopback_1883_only() {
        let config = Config::default();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].kind, ListenerKind::Tcp);
        assert_eq!(
            config.listeners[0].bind,
            SocketAddr::from(([127, 0, 0, 1], 1883))
        );
    }

    #[test]
    fn defaults_pass_validation() {
        assert_eq!(Config::default().problems(), Vec::new());
    }
}
