//! Every default and every hard bound of the broker, in one place.
//!
//! Each default is finite: a client can never make the broker allocate without limit,
//! and an operator who changes nothing gets a broker that is safe on a small machine.
//! `config/fleetmq.toml` repeats these values with the same explanations; a test checks
//! that the two agree, so change both together.

// ---------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------

/// Default listener when no configuration is given: loopback only, as Mosquitto 2 does,
/// so a broker started without thinking is not open to the network. 1883 is the
/// IANA-registered MQTT port.
pub const DEFAULT_BIND: &str = "127.0.0.1:1883";

/// 10,000 open connections, all listeners together: a large fleet per broker process
/// while staying well below the usual 65,536 file-descriptor limit of a service.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

/// 0: no limit on new connections per second, as in Mosquitto and EMQX, so a test
/// client or a fleet reconnecting after an outage is never refused. An operator turns
/// it on per listener or for all (`RECOMMENDED_DEVICE_CONNECTION_RATE`); a flood of
/// handshakes, the expensive part of TLS, is then cut before it reaches the handshake.
pub const DEFAULT_MAX_CONNECTION_RATE: u32 = 0;

/// The connection rate `config/fleetmq.toml` and deploy/README.md recommend for a
/// listener that faces a device fleet: a fleet of 10,000 reconnecting after an outage
/// gets in within a minute, a flood of handshakes is cut.
pub const RECOMMENDED_DEVICE_CONNECTION_RATE: u32 = 200;

/// Path of WebSocket listeners, the one MQTT.js and Paho JS examples use.
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

// ---------------------------------------------------------------------------------------
// Packets and connections
// ---------------------------------------------------------------------------------------

/// 268,435,455 bytes, the protocol's largest packet, as Mosquitto's default: whatever a
/// client may send to Mosquitto it may send here. Buffers grow only to the packets that
/// actually arrive; an operator who knows the fleet's largest message lowers it (the
/// codec then rejects a larger packet from its fixed header, before buffering the body).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = MAX_MAX_PACKET_SIZE;

/// Smallest `max_packet_size` accepted. Below this an ordinary CONNECT (client id,
/// username, password, a will) no longer fits, and MQTT 5 clients could not receive the
/// properties the broker must send.
pub const MIN_MAX_PACKET_SIZE: u32 = 128;

/// Largest `max_packet_size` accepted: 268,435,455 bytes (256 MiB - 1) is the largest
/// Remaining Length the MQTT variable byte integer can encode.
pub const MAX_MAX_PACKET_SIZE: u32 = 268_435_455;

/// A new connection must send CONNECT within 10 seconds, as rumqttd and Mosquitto's
/// defaults roughly do: long enough for a device on a slow cellular link, short enough
/// that idle sockets opened by scanners do not pile up.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

/// Largest `connect_timeout_secs` accepted. A longer deadline only keeps unauthenticated
/// sockets open, and a bound keeps the deadline arithmetic far from overflow.
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 3600;

/// 65535 is the largest keep alive MQTT can express, so by default the broker accepts
/// whatever the client asks for, like Mosquitto's `max_keepalive 65535`.
pub const DEFAULT_MAX_KEEP_ALIVE_SECS: u16 = 65535;

/// 4 MiB of encoded packets may wait for one slow socket; a client that stays there
/// (`DEFAULT_SLOW_CONSUMER_TIMEOUT_MS`) while messages wait is a slow consumer: four
/// maximum-size packets, or thousands of telemetry messages.
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 4 * 1024 * 1024;

/// 0: no limit on PUBLISH packets per second per client, as in Mosquitto and EMQX, so a
/// load test or a bulk upload is never cut off. Backpressure (`slow_consumer_timeout_ms`)
/// already keeps a fast publisher from outrunning its subscribers. An operator turns it
/// on for device-facing brokers (`RECOMMENDED_DEVICE_PUBLISH_RATE`).
pub const DEFAULT_MAX_PUBLISH_RATE: u32 = 0;

/// The publish rate `config/fleetmq.toml` and deploy/README.md recommend where every
/// client is a device: two orders of magnitude above a chatty sensor, low enough that
/// one compromised device cannot monopolise the broker's fan-out.
pub const RECOMMENDED_DEVICE_PUBLISH_RATE: u32 = 1000;

/// 100,000 subscriptions per session. Mosquitto has no such limit; this one is far above
/// what an application subscribes to (a gateway subscribing per device included) and
/// still bounds the routes one client can add to the shared index (about 200 bytes each).
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 100_000;

/// 65,535 levels per topic name or filter: no limit beyond the protocol's (a topic of
/// 65,535 bytes has at most 32,768 levels), as in Mosquitto. Matching and ACL checks
/// walk levels iteratively, so depth costs time in proportion, never stack.
pub const DEFAULT_MAX_TOPIC_LEVELS: u16 = u16::MAX;

/// 65,535 bytes per topic name or filter, the protocol's largest, as in Mosquitto.
pub const DEFAULT_MAX_TOPIC_LENGTH: u16 = u16::MAX;

/// 65,535 bytes per client identifier, the protocol's largest string, as in Mosquitto:
/// identifiers built from long prefixes, certificates or URLs are accepted.
pub const DEFAULT_MAX_CLIENT_ID_LENGTH: u16 = u16::MAX;

// ---------------------------------------------------------------------------------------
// Flow control and queues
// ---------------------------------------------------------------------------------------

/// 32 unacknowledged outgoing QoS 1/2 messages per client: enough to fill a
/// high-latency link, small enough that a reconnecting client is not flooded with
/// retransmissions. MQTT 5 clients also cap it with their Receive Maximum.
pub const DEFAULT_MAX_INFLIGHT_MESSAGES: u16 = 32;

/// 64 incoming QoS 1/2 messages a client may have unacknowledged (our MQTT 5 Receive
/// Maximum). Each one in QoS 2 costs a stored packet id until PUBREL.
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 64;

/// 1000 messages waiting per session, Mosquitto's `max_queued_messages` default: a
/// device offline for minutes keeps its backlog; one offline for days does not grow
/// without end.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;

/// 16 MiB waiting per session: the bound that holds when messages are large and few
/// (Mosquitto has none by default). A message larger than this still gets into an empty
/// queue, so the largest packet a client may publish is delayed, never undeliverable,
/// and a session holds at most this plus one message.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// 1,000,000 retained messages owed to one session after its SUBSCRIBE. They wait apart
/// from the queue above (a new `#` subscriber gets every retained message, as with
/// Mosquitto), as references to messages the retained store holds anyway: about 8 bytes
/// each, so 8 MB for a subscriber that matched a million topics.
pub const DEFAULT_MAX_RETAINED_BACKLOG: usize = 1_000_000;

/// 1 second: how long the broker waits for a subscriber that falls behind. A publisher
/// whose message finds a subscriber's queue nearly full is not read for at most this long
/// (TCP flow control then slows it down), instead of losing the messages; a subscriber
/// whose outbox stays full this long while messages wait is disconnected. Long enough to
/// ride out a burst, short enough that one stuck subscriber costs others little.
pub const DEFAULT_SLOW_CONSUMER_TIMEOUT_MS: u64 = 1000;

/// Largest `slow_consumer_timeout_ms` accepted: a minute. Longer only lets one stuck
/// subscriber hold up its publishers longer.
pub const MAX_SLOW_CONSUMER_TIMEOUT_MS: u64 = 60_000;

/// 0.1 seconds: a plain-TCP or TLS connection with nothing to read, write, deliver or
/// wait for this long (checked lazily: parked 0.1 to 0.2 s after its last event; a new
/// connection is checked every 10 ms at first, so that a device is parked right after
/// its CONNECT and SUBSCRIBE) is parked, its socket kept in a parking table of its
/// listener without a task, timers or buffers, until the client sends, a message
/// arrives for it or its keep alive expires. Short, because memory freed by parking is
/// reused by the connections that come next: a fleet connecting at thousands per second
/// is parked as it arrives instead of peaking at every connection's full size. A park
/// and an unpark cost a few microseconds (four epoll changes, a task), nothing for a
/// device that talks every few seconds; a client in steady conversation is never idle
/// that long.
pub const DEFAULT_PARK_AFTER_MS: u64 = 100;

/// Largest `park_after_ms` accepted: a minute; an idle connection that is not parked
/// only costs memory.
pub const MAX_PARK_AFTER_MS: u64 = 60_000;

/// 10 topic aliases per MQTT 5 client, Mosquitto's `max_topic_alias` default: enough for
/// a device that publishes to a handful of topics, and a small table per connection.
pub const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 10;

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// 0: a 3.x persistent session (clean session = false) never expires, as in Mosquitto by
/// default. Its queue stays bounded by the queue limits above.
pub const DEFAULT_PERSISTENT_SESSION_EXPIRY_SECS: u32 = 0;

/// 4294967295 (0xFFFFFFFF, "never expires" in MQTT 5): by default the broker grants
/// every Session Expiry Interval a client asks for.
pub const DEFAULT_MAX_SESSION_EXPIRY_SECS: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------
// Storage and logging
// ---------------------------------------------------------------------------------------

/// Durable state goes to `data/`, relative to the working directory, so a broker run
/// from a checkout keeps its files next to it (the directory is git-ignored).
pub const DEFAULT_DATA_DIR: &str = "data";

/// `info` logs start-up, the bound listeners, shutdown and warnings, and nothing per
/// message, so the log of a busy broker stays readable.
pub const DEFAULT_LOG_LEVEL: &str = "info";

// ---------------------------------------------------------------------------------------
// Operations: metrics, $SYS topics, shutdown
// ---------------------------------------------------------------------------------------

/// The Prometheus endpoint listens on loopback only, like the MQTT listener: metrics
/// reveal client counts and traffic, so exposing them is an explicit choice. 9883 echoes
/// MQTT's 1883 and is not registered to a common exporter.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9883";

/// The admin API listens on loopback only, next to the metrics port: it can kick clients
/// and publish, so reaching it from the network needs a token (`admin.token_file`).
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9884";

/// Longest bearer token read from `admin.token_file`.
pub const ADMIN_MAX_TOKEN_LENGTH: usize = 4096;

/// Admin requests served at once; more connections are closed unanswered, so the API
/// cannot take tasks or memory from the MQTT side.
pub const ADMIN_MAX_CONCURRENT_REQUESTS: usize = 16;

/// Largest admin request head (request line and headers): a browser's is a few KiB.
pub const ADMIN_MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Largest admin request body: a publish carries at most one MQTT payload of the
/// default `max_packet_size` (1 MiB), base64 grows it by a third.
pub const ADMIN_MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// Most items one page of a list answers (clients, subscriptions, retained messages).
pub const ADMIN_MAX_PAGE_SIZE: usize = 1000;

/// Items a list answers when the request names no `limit`.
pub const ADMIN_DEFAULT_PAGE_SIZE: usize = 100;

/// 16 MiB of forwarded messages may wait for one peer: about a second of a busy link,
/// enough to ride out a short stall without holding unbounded memory for a dead peer.
pub const DEFAULT_CLUSTER_LINK_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// 100 ms between Raft heartbeats: an election after 300 to 600 ms of silence, quick
/// enough for a takeover and slow enough for a loaded machine not to elect spuriously.
pub const DEFAULT_CLUSTER_HEARTBEAT_MS: u64 = 100;

/// A node link silent for 10 heartbeats (1 s by default) is closed and redialled: idle
/// links carry a ping every heartbeat, so only a peer that stopped answering (a
/// black-holed network, a frozen process) stays silent that long, while a loaded machine
/// missing a few heartbeats does not flap its links.
pub const DEFAULT_CLUSTER_LINK_TIMEOUT_HEARTBEATS: u64 = 10;

/// A QoS 1/2 message forwarded to another node waits up to 5 s for that node's
/// acknowledgement: a failover (the link timeout of 1 s, an election, the session taken
/// from a backup and its routes committed) takes about 1 to 2 s on a loaded machine, and
/// the messages kept for a dead node go to its sessions' new node in that time.
pub const DEFAULT_CLUSTER_FORWARD_ACK_TIMEOUT_MS: u64 = 5_000;

/// A snapshot of the replicated state every 1,000 log entries: the state is small
/// (routes, retained messages, owners), so snapshots are cheap, and a restarted node
/// replays at most this many entries.
pub const DEFAULT_CLUSTER_SNAPSHOT_ENTRIES: u64 = 1_000;

/// Each persistent session on two nodes (its owner and one backup): the loss of any one
/// node loses nothing acknowledged, for one extra copy of every stored message.
pub const DEFAULT_CLUSTER_REPLICATION_FACTOR: usize = 2;

/// Most copies of a session: every copy is one more write a PUBACK waits for.
pub const MAX_CLUSTER_REPLICATION_FACTOR: usize = 7;

/// 64 MiB of replicated operations may wait for one backup: seconds of a busy owner's
/// persistent traffic, so a backup that only pauses catches up from the queue, while
/// one that lags further is taken out of sync and resynced (cheaper than holding more).
pub const DEFAULT_CLUSTER_REPLICATION_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// 10 seconds between `$SYS` publications, Mosquitto's `sys_interval` default.
pub const DEFAULT_SYS_INTERVAL_SECS: u64 = 10;

/// Largest `sys.interval_secs` accepted: a day. Longer makes the load averages
/// meaningless, and the bound keeps the timer arithmetic far from overflow.
pub const MAX_SYS_INTERVAL_SECS: u64 = 86_400;

/// 5 seconds for clients to receive their DISCONNECT and close on SIGTERM before the
/// broker closes the rest: well inside systemd's stop timeout (`TimeoutStopSec=30` in
/// the shipped unit), long enough for a client on a slow link to read one packet.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;

/// Largest `shutdown.grace_secs` accepted. The service manager must wait longer than
/// this before it kills the broker (`TimeoutStopSec`).
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 600;

// ---------------------------------------------------------------------------------------
// Bridges
// ---------------------------------------------------------------------------------------

/// Longest bridge name: it is part of the local session's client identifier, of metric
/// labels and of `$SYS` topics.
pub const MAX_BRIDGE_NAME_LENGTH: usize = 64;

/// 60 seconds, Mosquitto's `keepalive_interval` for bridges: a black-holed link is
/// noticed within 90 seconds without pinging a metered uplink often.
pub const DEFAULT_BRIDGE_KEEP_ALIVE_SECS: u16 = 60;

/// A week: the remote keeps the bridge's session (and with it QoS 2 exactly-once state
/// and in-bound messages) through any ordinary outage.
pub const DEFAULT_BRIDGE_SESSION_EXPIRY_SECS: u32 = 604_800;

/// Reconnect after 1 second at first, doubling per failure up to 30 seconds (Mosquitto's
/// `restart_timeout` backoff cap), plus up to half again at random so that many
/// gateways do not hammer a recovering remote in step.
pub const DEFAULT_BRIDGE_RECONNECT_MIN_MS: u64 = 1_000;
pub const DEFAULT_BRIDGE_RECONNECT_MAX_MS: u64 = 30_000;

/// 100,000 messages accepted for the remote and not yet acknowledged by it: hours of
/// ordinary gateway telemetry.
pub const DEFAULT_OUTBOX_MAX_MESSAGES: usize = 100_000;

/// 64 MiB of outbox: bounds the memory and disk a long outage can take.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 64 * 1024 * 1024;

/// 20 messages sent to the remote and not yet acknowledged: Mosquitto's
/// `max_inflight_messages` default. A MQTT 3.1.1 remote cannot announce its limit, and
/// Mosquitto acknowledges, then silently discards, QoS 2 messages beyond it; a MQTT 5
/// remote's Receive Maximum lowers it further.
pub const DEFAULT_BRIDGE_MAX_INFLIGHT: u16 = 20;
