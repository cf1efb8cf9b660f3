//! Reloading the configuration on SIGHUP: what changed, what now applies, what waits for
//! a restart.
//!
//! The new file has already been read and validated (a bad file never gets here: the
//! caller logs why and keeps running on the old one). Then:
//! - `limits.*`, `sessions.*`, `sys.interval_secs` and `shutdown.grace_secs` apply to
//!   connections and sessions created from now on (`Broker::replace_config`); connected
//!   clients keep the terms they were given in CONNACK.
//! - Parts registered with `Broker::add_reloadable` re-read their own state under the
//!   keys they claim: the log filter (`log.level`), and, from the security layer, the
//!   password and ACL files and the TLS certificates. A part that fails keeps its old
//!   state and says why.
//! - Any other change (listeners, storage, metrics endpoint, admin API, log format) needs a
//!   restart;
//!   the running values are kept, so every later reload reports it again until then.

use crate::broker::Broker;
use crate::config::Config;

/// A part of the broker that re-reads its own state when the configuration is reloaded.
pub trait Reloadable: Send + Sync {
    /// What it is, for the log: "log filter", "password file"...
    fn name(&self) -> &str;
    /// Dotted keys (or key prefixes ending in '.') whose changes it applies, e.g.
    /// `["log.level"]` or `["auth."]`.
    fn keys(&self) -> &[&str];
    /// Re-reads under `config`. On error the part keeps its previous state.
    fn reload(&self, config: &Config) -> anyhow::Result<()>;
}

/// Keys the broker itself applies to new connections and sessions.
const APPLIED_BY_BROKER: [&str; 4] = [
    "limits.",
    "sessions.",
    "sys.interval_secs",
    "shutdown.grace_secs",
];

/// One changed key, with both values as TOML text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}

/// The outcome of one reload.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub applied: Vec<Change>,
    pub needs_restart: Vec<Change>,
    /// `(part, error)` of every reloadable part that failed and kept its old state.
    pub failures: Vec<(String, String)>,
}

impl ReloadReport {
    /// Writes the report to the log, one line per change.
    pub fn log(&self) {
        if self.applied.is_empty() && self.needs_restart.is_empty() {
            tracing::info!("configuration reloaded: nothing changed");
        }
        for change in &self.applied {
            tracing::info!(key = %change.key, old = %change.old, new = %change.new, "configuration change applied");
        }
        for change in &self.needs_restart {
            tracing::warn!(key = %change.key, old = %change.old, new = %change.new, "configuration change needs a restart; still running with the old value");
        }
        for (part, error) in &self.failures {
            tracing::error!(part = %part, %error, "reload failed; keeping the previous state");
        }
    }
}

/// Applies `new` to the running broker and reports what changed.
pub fn reload(broker: &Broker, mut new: Config) -> ReloadReport {
    let old = broker.config();
    let parts = broker.reloadables();
    let mut report = ReloadReport::default();
    let mut failed_keys: Vec<&str> = Vec::new();
    for part in &parts {
        if let Err(error) = part.reload(&new) {
            report
                .failures
                .push((part.name().to_string(), format!("{error:#}")));
            failed_keys.extend(part.keys());
        }
    }
    for change in changes(&old, &new) {
        let claimed = |prefixes: &[&str]| prefixes.iter().any(|p| claims(p, &change.key));
        let by_part = parts.iter().any(|part| claimed(part.keys()));
        if (claimed(&APPLIED_BY_BROKER) || by_part) && !claimed(&failed_keys) {
            report.applied.push(change);
        } else if !claimed(&failed_keys) {
            report.needs_restart.push(change);
        }
    }
    // What only a restart applies keeps its running value.
    new.listeners = old.listeners.clone();
    new.storage = old.storage.clone();
    new.metrics = old.metrics.clone();
    new.admin = old.admin.clone();
    new.log.format = old.log.format;
    broker.replace_config(new);
    report
}

fn claims(prefix: &str, key: &str) -> bool {
    if prefix.ends_with('.') {
        key.starts_with(prefix)
    } else {
        key == prefix
    }
}

/// Every key whose value differs, as dotted paths over the TOML form of the
/// configurations. Arrays (the listeners) compare as one value.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let (Ok(old), Ok(new)) = (toml::Table::try_from(old), toml::Table::try_from(new)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    diff_tables("", &old, &new, &mut found);
    found
}

fn diff_tables(prefix: &str, old: &toml::Table, new: &toml::Table, found: &mut Vec<Change>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = format!("{prefix}{key}");
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                diff_tables(&format!("{path}."), a, b, found)
            }
            (a, b) if a != b => found.push(Change {
                key: path,
                old: a.map_or_else(|| "(unset)".to_string(), ToString::to_string),
                new: b.map_or_else(|| "(unset)".to_string(), ToString::to_string),
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use std::sync::Arc;

    /// A reloadable that records what it was given, for tests of the reload order.
    struct Probe {
        keys: Vec<&'static str>,
        fail: bool,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl Reloadable for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn keys(&self) -> &[&str] {
            &self.keys
        }
        fn reload(&self, config: &Config) -> anyhow::Result<()> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(config.log.level.clone());
            }
            anyhow::ensure!(!self.fail, "file is broken");
            Ok(())
        }
    }

    fn broker() -> Arc<Broker> {
        Broker::new(Config::default(), Arc::new(MemoryStore::new()))
    }

    #[test]
    fn changes_are_dotted_keys_with_both_values() {
        let old = Config::default();
        let mut new = Config::default();
        new.limits.max_queued_messages = 5;
        new.listeners[0].bind = "0.0.0.0:1883".parse().unwrap();
        let found = changes(&old, &new);
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(text[0], "limits.max_queued_messages: 1000 -> 5");
        assert!(text[1].starts_with("listeners: "), "{text:?}");
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn limits_apply_and_listeners_wait_for_a_restart() {
        let broker = broker();
        let mut new = Config::default();
        new.limits.max_inflight_messages = 7;
        new.metrics.bind = "127.0.0.1:9999".parse().unwrap();
        let report = reload(&broker, new.clone());
        let keys = |changes: &[Change]| changes.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&report.applied), ["limits.max_inflight_messages"]);
        assert_eq!(keys(&report.needs_restart), ["metrics.bind"]);
        assert_eq!(broker.config().limits.max_inflight_messages, 7);
        assert_eq!(broker.config().metrics.bind, Config::default().metrics.bind);
        // Still pending at the next reload of the same file.
        let again = reload(&broker, new);
        assert!(again.applied.is_empty());
        assert_eq!(keys(&again.needs_restart), ["metrics.bind"]);
    }

    #[test]
    fn registered_parts_apply_their_keys_or_report_their_failure() {
        let broker = broker();
        let probe = Arc::new(Probe {
            keys: vec!["log.level"],
            fail: false,
            seen: Default::default(),
        });
        broker.add_reloadable(probe.clone());
        let mut new = Config::default();
        new.log.level = "debug".into();
        let report = reload(&broker, new.clone());
        assert_eq!(report.applied.len(), 1);
        assert_eq!(*probe.seen.lock().unwrap(), ["debug"]);

        let broken = Arc::new(Probe {
            keys: vec!["log."],
            fail: true,
            seen: Default::default(),
        });
        broker.add_reloadable(broken);
        new.log.level = "trace".into();
        let report = reload(&broker, new);
        assert!(report.applied.is_empty() && report.needs_restart.is_empty());
        assert_eq!(
            report.failures,
            [("probe".to_string(), "file is broken".to_string())]
        );
    }
}
