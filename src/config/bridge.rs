//! Configuration of bridges (`[[bridges]]`): named connections to remote brokers that
//! forward matching topics out, in, or both ways, with a durable outbox.
//!
//! The keys follow Mosquitto's `connection` options one by one where they exist
//! (`deploy/README.md` has the table). The defaults live in `crate::limits`; the checks
//! here report every problem with its key (`bridges[0].topics[1].qos`) so the loader
//! can name the file and line.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::at_least_one;
use super::{Config, Problem};
use crate::limits::{
    DEFAULT_BRIDGE_KEEP_ALIVE_SECS, DEFAULT_BRIDGE_MAX_INFLIGHT, DEFAULT_BRIDGE_RECONNECT_MAX_MS,
    DEFAULT_BRIDGE_RECONNECT_MIN_MS, DEFAULT_BRIDGE_SESSION_EXPIRY_SECS, DEFAULT_OUTBOX_MAX_BYTES,
    DEFAULT_OUTBOX_MAX_MESSAGES, MAX_BRIDGE_NAME_LENGTH,
};
use crate::protocol::QoS;

/// One bridge: a client connection from this broker to a remote broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique name; it names the local session (`$bridge/<name>`), the metrics label and
    /// the `$SYS/broker/bridges/<name>/...` topics. Letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Remote brokers as `HOST:PORT`, tried in order (Mosquitto's `address`/`addresses`).
    pub addresses: Vec<String>,
    /// Start each reconnect with the address after the last one tried, instead of the
    /// first (Mosquitto's `round_robin`).
    #[serde(default)]
    pub round_robin: bool,
    #[serde(default)]
    pub protocol: BridgeProtocol,
    /// Client identifier on the remote broker; default `fleetmq-bridge-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Keep alive towards the remote; a link silent for 1.5 times this is cut.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// Start a new session on the remote at every connect. Off by default: a kept
    /// session is what makes QoS 2 exactly once across reconnects.
    #[serde(default)]
    pub clean_start: bool,
    /// Session Expiry Interval asked of a MQTT 5 remote (ignored for 3.1.1).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
    /// First pause before reconnecting; each failure doubles it up to
    /// `reconnect_max_ms`, and a random part of up to half is added (jitter).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// MQTT 3.1.1 only: connect with protocol level 0x84, Mosquitto's bridge flag, so a
    /// Mosquitto remote does not send our own messages back (`try_private`). Off by
    /// default: brokers other than Mosquitto refuse that level.
    #[serde(default)]
    pub try_private: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BridgeTlsConfig>,
    #[serde(default)]
    pub topics: Vec<BridgeTopic>,
    #[serde(default)]
    pub outbox: OutboxConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    #[default]
    Mqttv311,
    Mqttv5,
}

/// TLS towards the remote (`[bridges.tls]`): the CA the remote's certificate must chain
/// to, and the client certificate and key when the remote asks for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTlsConfig {
    /// PEM file with the CA certificates the remote's certificate must chain to.
    pub ca: PathBuf,
    /// PEM file with our client certificate (and intermediates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Name checked against the remote's certificate; default the address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
    Both,
}

impl Direction {
    pub fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// A topic rule, Mosquitto's `topic <filter> <direction> <qos> <local> <remote>`: the
/// local topic is `local_prefix + topic`, the remote one `remote_prefix + topic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    pub filter: String,
    pub direction: Direction,
    /// Subscription QoS on the side messages come from (0, 1 or 2).
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub local_prefix: String,
    #[serde(default)]
    pub remote_prefix: String,
    /// Pass the RETAIN flag through (Retain As Published); off: forward as not retained.
    #[serde(default = "default_true")]
    pub retain: bool,
}

impl BridgeTopic {
    pub fn qos(&self) -> QoS {
        QoS::from_u8(self.qos).unwrap_or(QoS::AtLeastOnce)
    }

    /// The filter subscribed to on the local broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.filter)
    }

    /// The filter subscribed to on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.filter)
    }
}

/// What the outbox does when a new message does not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The new message is not kept (what Mosquitto does with a full queue).
    #[default]
    Refuse,
    /// The oldest waiting messages are dropped to make room.
    DropOldest,
}

/// Bounds of the outbox: the messages accepted for the remote and not yet acknowledged
/// by it. QoS 0 messages are dropped first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub when_full: WhenFull,
    /// Messages sent to the remote and not yet acknowledged.
    pub max_inflight: u16,
    /// Messages per second forwarded at most (a cap on draining a backlog); absent: as
    /// fast as the link goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate_per_sec: Option<u32>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_messages: DEFAULT_OUTBOX_MAX_MESSAGES,
            max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            when_full: WhenFull::Refuse,
            max_inflight: DEFAULT_BRIDGE_MAX_INFLIGHT,
            max_rate_per_sec: None,
        }
    }
}

fn default_keep_alive() -> u16 {
    DEFAULT_BRIDGE_KEEP_ALIVE_SECS
}
fn default_session_expiry() -> u32 {
    DEFAULT_BRIDGE_SESSION_EXPIRY_SECS
}
fn default_reconnect_min() -> u64 {
    DEFAULT_BRIDGE_RECONNECT_MIN_MS
}
fn default_reconnect_max() -> u64 {
    DEFAULT_BRIDGE_RECONNECT_MAX_MS
}
fn default_qos() -> u8 {
    1
}
fn default_true() -> bool {
    true
}

impl BridgeConfig {
    /// The client identifier used on the remote broker.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("fleetmq-bridge-{}", self.name))
    }
}

impl Config {
    pub(super) fn check_bridges(&self, problems: &mut Vec<Problem>) {
        let mut names = HashSet::new();
        for (index, bridge) in self.bridges.iter().enumerate() {
            let key = format!("bridges[{index}]");
            let name_ok = !bridge.name.is_empty()
                && bridge.name.len() <= MAX_BRIDGE_NAME_LENGTH
                && bridge
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                problems.push(Problem::new(
                    format!("{key}.name"),
                    format!("'{}' is not a valid bridge name: 1 to {MAX_BRIDGE_NAME_LENGTH} letters, digits, '-', '_' or '.'", bridge.name),
                ));
            } else if !names.insert(bridge.name.as_str()) {
                problems.push(Problem::new(
                    format!("{key}.name"),
                    format!("bridge name '{}' is used twice", bridge.name),
                ));
            }
            if bridge.addresses.is_empty() {
                problems.push(Problem::new(
                    format!("{key}.addresses"),
                    "at least one remote address is required, e.g. addresses = [\"cloud.example.com:8883\"]",
                ));
            }
            for (position, address) in bridge.addresses.iter().enumerate() {
                if split_host_port(address).is_none() {
                    problems.push(Problem::new(
                        format!("{key}.addresses[{position}]"),
                        format!("'{address}' is not HOST:PORT"),
                    ));
                }
            }
            if let Some(client_id) = &bridge.client_id {
                if client_id.is_empty() || client_id.len() > 65_535 {
                    problems.push(Problem::new(
                        format!("{key}.client_id"),
                        "the remote client identifier must be 1 to 65535 bytes",
                    ));
                }
            }
            if bridge.password.is_some() && bridge.username.is_none() {
                problems.push(Problem::new(
                    format!("{key}.password"),
                    "a password needs a username",
                ));
            }
            at_least_one(
                problems,
                &format!("{key}.keep_alive_secs"),
                bridge.keep_alive_secs.into(),
            );
            if bridge.reconnect_min_ms == 0 || bridge.reconnect_min_ms > bridge.reconnect_max_ms {
                problems.push(Problem::new(
                    format!("{key}.reconnect_min_ms"),
                    format!(
                        "{} must be at least 1 and at most reconnect_max_ms ({})",
                        bridge.reconnect_min_ms, bridge.reconnect_max_ms
                    ),
                ));
            }
            if bridge.reconnect_max_ms > 3_600_000 {
                problems.push(Problem::new(
                    format!("{key}.reconnect_max_ms"),
                    format!(
                        "{} milliseconds is out of range; allowed: up to 3600000 (an hour)",
                        bridge.reconnect_max_ms
                    ),
                ));
            }
            if bridge.try_private && bridge.protocol == BridgeProtocol::Mqttv5 {
                problems.push(Problem::new(
                    format!("{key}.try_private"),
                    "try_private is the MQTT 3.1.1 bridge flag; MQTT 5 bridges use No Local",
                ));
            }
            if let Some(tls) = &bridge.tls {
                if tls.cert.is_some() != tls.key.is_some() {
                    problems.push(Problem::new(
                        format!("{key}.tls"),
                        "a client certificate needs both cert and key",
                    ));
                }
            }
            if bridge.topics.is_empty() {
                problems.push(Problem::new(
                    format!("{key}.topics"),
                    "a bridge needs at least one [[bridges.topics]] rule",
                ));
            }
            for (position, topic) in bridge.topics.iter().enumerate() {
                check_topic(problems, &format!("{key}.topics[{position}]"), topic);
            }
            let outbox = &bridge.outbox;
            at_least_one(
                problems,
                &format!("{key}.outbox.max_messages"),
                outbox.max_messages,
            );
            at_least_one(
                problems,
                &format!("{key}.outbox.max_inflight"),
                outbox.max_inflight.into(),
            );
            // An empty outbox takes one message larger than `max_bytes` (as a session's
            // queue does), so any packet the broker accepts can be forwarded.
            at_least_one(
                problems,
                &format!("{key}.outbox.max_bytes"),
                outbox.max_bytes,
            );
            if outbox.max_rate_per_sec == Some(0) {
                problems.push(Problem::new(
                    format!("{key}.outbox.max_rate_per_sec"),
                    "0 would never forward anything; leave it out for no cap",
                ));
            }
        }
    }
}

fn check_topic(problems: &mut Vec<Problem>, key: &str, topic: &BridgeTopic) {
    if topic.qos > 2 {
        problems.push(Problem::new(
            format!("{key}.qos"),
            format!("{} is not a QoS; allowed: 0, 1, 2", topic.qos),
        ));
    }
    if crate::topic::validate_topic_filter(&topic.filter).is_err() {
        problems.push(Problem::new(
            format!("{key}.filter"),
            format!("'{}' is not a valid topic filter", topic.filter),
        ));
    } else if topic.filter.starts_with("$share/") {
        problems.push(Problem::new(
            format!("{key}.filter"),
            "a bridge cannot use a shared subscription",
        ));
    }
    for (name, prefix) in [
        ("local_prefix", &topic.local_prefix),
        ("remote_prefix", &topic.remote_prefix),
    ] {
        if prefix.contains(['+', '#', '\0']) {
            problems.push(Problem::new(
                format!("{key}.{name}"),
                format!("'{prefix}' may not contain '+', '#' or U+0000"),
            ));
        }
    }
}

/// `HOST:PORT` with a non-empty host and a port number; IPv6 hosts in brackets.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|port| *port != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(':') || host.contains(':') && address.starts_with('['))
        .then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_CONFIG_TOML;
    use super::*;

    /// The commented-out example of the shipped file, uncommented.
    fn shipped_example() -> String {
        let start = DEFAULT_CONFIG_TOML
            .find("# [[bridges]]")
            .expect("the shipped file has a bridge example");
        DEFAULT_CONFIG_TOML[start..]
            .lines()
            // Up to the next section of the file.
            .take_while(|line| !line.starts_with("# ====="))
            .filter_map(|line| line.strip_prefix("# ").or(line.strip_prefix("#")))
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_shipped_example_parses_and_is_valid() {
        let config = Config::from_toml_str(&shipped_example(), "example.toml")
            .unwrap_or_else(|error| panic!("{error}"));
        let bridge = &config.bridges[0];
        assert_eq!(bridge.name, "cloud");
        assert_eq!(bridge.addresses.len(), 2);
        assert_eq!(bridge.protocol, BridgeProtocol::Mqttv5);
        assert_eq!(bridge.topics.len(), 2);
        assert_eq!(bridge.topics[0].remote_filter(), "sites/42/telemetry/#");
        assert_eq!(bridge.outbox.max_rate_per_sec, Some(500));
        assert!(bridge.tls.is_some());
    }

    #[test]
    fn defaults_fill_everything_but_name_addresses_and_rules() {
        let text = "[[bridges]]\nname = \"b\"\naddresses = [\"127.0.0.1:1883\"]\n\
                    [[bridges.topics]]\nfilter = \"#\"\ndirection = \"both\"\n";
        let config = Config::from_toml_str(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let bridge = &config.bridges[0];
        assert_eq!(bridge.protocol, BridgeProtocol::Mqttv311);
        assert_eq!(bridge.keep_alive_secs, DEFAULT_BRIDGE_KEEP_ALIVE_SECS);
        assert_eq!(bridge.outbox, OutboxConfig::default());
        assert_eq!(bridge.topics[0].qos(), QoS::AtLeastOnce);
        assert!(bridge.topics[0].retain);
        assert_eq!(bridge.remote_client_id(), "fleetmq-bridge-b");
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_key() {
        let text = "\
[[bridges]]
name = \"a b\"
addresses = [\"nowhere\"]
reconnect_min_ms = 0
[bridges.outbox]
max_messages = 0
[[bridges.topics]]
filter = \"a/#/b\"
direction = \"out\"
qos = 3
remote_prefix = \"x/+/\"
";
        let error = match Config::from_toml_str(text, "bad.toml") {
            Ok(_) => panic!("an invalid bridge was accepted"),
            Err(error) => error.to_string(),
        };
        for expected in [
            "bad.toml:2:",
            "bridges[0].name",
            "bad.toml:3:",
            "bridges[0].addresses[0]",
            "bridges[0].reconnect_min_ms",
            "bridges[0].outbox.max_messages",
            "bridges[0].topics[0].filter",
            "bad.toml:10:",
            "bridges[0].topics[0].qos",
            "bridges[0].topics[0].remote_prefix",
        ] {
            assert!(error.contains(expected), "missing {expected} in:\n{error}");
        }
    }

    #[test]
    fn unknown_keys_and_directions_are_refused_by_name() {
        let text = "[[bridges]]\nname = \"b\"\naddresses = [\"h:1\"]\nclenasession = true\n";
        let error = Config::from_toml_str(text, "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("clenasession")),
            "{error:?}"
        );
        let text = "[[bridges]]\nname = \"b\"\naddresses = [\"h:1\"]\n\
                    [[bridges.topics]]\nfilter = \"#\"\ndirection = \"sideways\"\n";
        let error = Config::from_toml_str(text, "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("sideways")),
            "{error:?}"
        );
    }

    #[test]
    fn duplicate_names_and_missing_rules_are_problems() {
        let bridge = BridgeConfig {
            name: "b".into(),
            addresses: vec!["[::1]:1883".into()],
            round_robin: false,
            protocol: BridgeProtocol::Mqttv5,
            client_id: None,
            username: None,
            password: Some("p".into()),
            keep_alive_secs: 60,
            clean_start: false,
            session_expiry_secs: 60,
            reconnect_min_ms: 10,
            reconnect_max_ms: 100,
            try_private: true,
            tls: None,
            topics: Vec::new(),
            outbox: OutboxConfig::default(),
        };
        let config = Config {
            bridges: vec![bridge.clone(), bridge],
            ..Config::default()
        };
        let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
        for expected in [
            "bridges[0].password",
            "bridges[0].try_private",
            "bridges[0].topics",
            "bridges[1].name",
        ] {
            assert!(
                keys.iter().any(|key| key == expected),
                "{expected} not in {keys:?}"
            );
        }
        assert!(
            !keys.iter().any(|key| key.contains("addresses")),
            "{keys:?}"
        );
    }

    #[test]
    fn host_and_port_are_split_for_names_and_addresses() {
        assert_eq!(
            split_host_port("example.com:8883"),
            Some(("example.com", 8883))
        );
        assert_eq!(split_host_port("127.0.0.1:1"), Some(("127.0.0.1", 1)));
        assert_eq!(split_host_port("[::1]:1883"), Some(("::1", 1883)));
        assert_eq!(split_host_port("::1:1883"), None);
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port(":1883"), None);
    }
}
