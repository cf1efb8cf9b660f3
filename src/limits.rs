//! Every default and limit of the broker, in one place. Each is finite.

/// Default listener when no configuration is given: loopback only, as Mosquitto 2 does.
pub const DEFAULT_BIND: &str = "127.0.0.1:1883";
/// 1 MiB: far above typical telemetry, small enough that one client cannot exhaust memory.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_KEEP_ALIVE_SECS: u16 = 65535;
pub const DEFAULT_MAX_INFLIGHT_MESSAGES: u16 = 32;
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 64;
/// Mosquitto's max_queued_messages default.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Mosquitto's max_topic_alias default.
pub const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 10;
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_PERSISTENT_SESSION_EXPIRY_SECS: u32 = 0;
pub const DEFAULT_MAX_SESSION_EXPIRY_SECS: u32 = u32::MAX;
pub const DEFAULT_DATA_DIR: &str = "data";
pub const DEFAULT_LOG_LEVEL: &str = "info";
