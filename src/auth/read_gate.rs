//! Read access per delivered message, as Mosquitto checks it: a message reaches a
//! subscriber only if the ACL lets that client read the message's topic, whatever filter
//! matched it. Each session has a [`ReadGate`]; the router asks it for every target of a
//! message, only when an ACL file is configured.
//!
//! Keeping that cheap: the client's rules are compiled once (own rules plus substituted
//! patterns, `SessionRules`) and kept with the ACL version they came from; decisions are
//! remembered in a small direct-mapped cache (64 topics of up to 256 bytes, so at most
//! about 18 KB per session), so a subscriber that keeps getting the same topics pays one
//! hash and one string comparison per message. A reload (SIGHUP) bumps the ACL version:
//! the next message recompiles the rules and empties the cache, so a revoked topic stops
//! reaching existing subscriptions at once.
//!
//! A gate knows whose access it checks from the connection that attached (its
//! username). A session restored after a restart has no connection yet, and nothing
//! recorded says who its client authenticated as: until the client reconnects its gate
//! lets messages through, as the subscription was granted to an authenticated client.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Mutex, PoisonError};

use super::acl::{SessionRules, Want};
use super::Security;

/// Topics remembered per session.
const CACHE_SLOTS: usize = 64;

/// Longer topics are decided every time rather than kept.
const CACHED_TOPIC_MAX: usize = 256;

/// One session's read access; see the module header.
#[derive(Debug, Default)]
pub struct ReadGate {
    /// `None` until a client attached (a restored session): everything passes.
    state: Mutex<Option<Box<GateState>>>,
}

#[derive(Debug)]
struct GateState {
    /// The client's username; `None` for an anonymous client.
    username: Option<Box<str>>,
    /// The ACL version `rules` and `cache` belong to; 0 before the first message.
    generation: u64,
    rules: SessionRules,
    cache: DecisionCache,
}

impl ReadGate {
    /// The client that attached: its username decides from now on.
    pub fn set_reader(&self, username: Option<&str>) {
        let mut state = self.lock();
        let unchanged = state
            .as_ref()
            .is_some_and(|state| state.username.as_deref() == username);
        if !unchanged {
            *state = Some(Box::new(GateState {
                username: username.map(Box::from),
                generation: 0,
                rules: SessionRules::default(),
                cache: DecisionCache::default(),
            }));
        }
    }

    /// Whether the message published to `topic` may be delivered to the session of
    /// `client_id`, under the ACL `security` holds.
    pub fn allows(&self, security: &Security, client_id: &str, topic: &str) -> bool {
        let mut guard = self.lock();
        let Some(state) = guard.as_mut() else {
            return true;
        };
        let generation = security.acl_generation();
        if state.generation != generation {
            state.rules = match security.acl() {
                Some(acl) => acl.session_rules(state.username.as_deref(), client_id),
                None => SessionRules::default(),
            };
            state.cache.clear();
            state.generation = generation;
        }
        if let Some(decided) = state.cache.get(topic) {
            return decided;
        }
        let decided = state.rules.allows(Want::Read, topic);
        state.cache.put(topic, decided);
        decided
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<GateState>>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decisions by topic, direct-mapped: a topic has one slot, and a newer topic with the
/// same slot replaces it. Allocated on first use.
#[derive(Debug, Default)]
struct DecisionCache {
    slots: Vec<Option<(Box<str>, bool)>>,
}

impl DecisionCache {
    fn slot(topic: &str) -> usize {
        // A fixed-key hash: a client choosing colliding topics only makes its own
        // decisions miss the cache.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(topic);
        (hash as usize) % CACHE_SLOTS
    }

    fn get(&self, topic: &str) -> Option<bool> {
        match self.slots.get(Self::slot(topic))? {
            Some((cached, decided)) if **cached == *topic => Some(*decided),
            _ => None,
        }
    }

    fn put(&mut self, topic: &str, decided: bool) {
        if topic.len() > CACHED_TOPIC_MAX {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize(CACHE_SLOTS, None);
        }
        self.slots[Self::slot(topic)] = Some((Box::from(topic), decided));
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    fn security(dir: &tempfile::TempDir, acl: &str) -> Security {
        let path = dir.path().join("acl");
        std::fs::write(&path, acl).unwrap();
        Security::load(&AuthConfig {
            acl_file: Some(path),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_gate_checks_the_reader_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let security = security(
            &dir,
            "topic read public/#\nuser alice\ntopic read alice/#\n",
        );
        let gate = ReadGate::default();
        // No reader yet (a restored session): nothing is held back.
        assert!(gate.allows(&security, "c", "alice/x"));
        gate.set_reader(None);
        assert!(gate.allows(&security, "c", "public/x"));
        assert!(!gate.allows(&security, "c", "alice/x"));
        gate.set_reader(Some("alice"));
        assert!(gate.allows(&security, "c", "alice/x"));
        assert!(!gate.allows(&security, "c", "public/x"));
    }

    #[test]
    fn a_reload_revokes_cached_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let security = security(&dir, "topic readwrite #\n");
        let gate = ReadGate::default();
        gate.set_reader(None);
        assert!(gate.allows(&security, "c", "secret/x"));
        assert!(gate.allows(&security, "c", "secret/x"), "from the cache");
        std::fs::write(
            dir.path().join("acl"),
            "topic readwrite #\ntopic deny secret/#\n",
        )
        .unwrap();
        assert!(security.reload().is_empty());
        assert!(!gate.allows(&security, "c", "secret/x"));
        assert!(gate.allows(&security, "c", "open/x"));
    }

    #[test]
    fn the_cache_is_bounded_and_long_topics_are_not_kept() {
        let mut cache = DecisionCache::default();
        for n in 0..10_000 {
            cache.put(&format!("t/{n}"), n % 2 == 0);
        }
        assert_eq!(cache.slots.len(), CACHE_SLOTS);
        let long = "x".repeat(CACHED_TOPIC_MAX + 1);
        cache.clear();
        cache.put(&long, true);
        assert_eq!(cache.get(&long), None);
        cache.put("short", false);
        assert_eq!(cache.get("short"), Some(false));
    }
}
