//! `Registry`: the sessions of this node by client id.
//!
//! Every session, connected or not, has one entry, so an entry's size is part of what
//! every idle device costs. A map from a client id to its handle spends a 40-byte bucket
//! on a copy of the id the handle already holds; this set keeps only the handle (an
//! 8-byte bucket) and finds it by the handle's own client id.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytestring::ByteString;

use super::SessionHandle;

#[derive(Debug, Default)]
pub struct Registry {
    sessions: HashSet<ByClientId>,
}

/// A handle, hashed and compared by its client id.
#[derive(Debug)]
struct ByClientId(Arc<SessionHandle>);

impl Borrow<str> for ByClientId {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl Hash for ByClientId {
    // As `str` hashes: lookups by `&str` must find the entry.
    fn hash<H: Hasher>(&self, state: &mut H) {
        <Self as Borrow<str>>::borrow(self).hash(state);
    }
}

impl PartialEq for ByClientId {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for ByClientId {}

impl Registry {
    /// Registers `handle` under `client_id` (which is the handle's own), replacing and
    /// returning the handle registered under it before.
    pub fn insert(
        &mut self,
        client_id: ByteString,
        handle: Arc<SessionHandle>,
    ) -> Option<Arc<SessionHandle>> {
        debug_assert_eq!(client_id, handle.client_id);
        self.sessions
            .replace(ByClientId(handle))
            .map(|replaced| replaced.0)
    }

    pub fn get(&self, client_id: &str) -> Option<&Arc<SessionHandle>> {
        self.sessions.get(client_id).map(|entry| &entry.0)
    }

    pub fn contains_key(&self, client_id: &str) -> bool {
        self.sessions.contains(client_id)
    }

    pub fn remove(&mut self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.sessions.take(client_id).map(|entry| entry.0)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        self.sessions.iter().map(|entry| &entry.0)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionLimits;

    fn handle(key: u64, client_id: &str) -> Arc<SessionHandle> {
        let limits = SessionLimits {
            max_inflight: 32,
            receive_maximum: 32,
            max_queued_messages: 10,
            max_queued_bytes: 1000,
            max_retained_backlog: 10,
            topic_alias_maximum: 0,
            outbox: None,
        };
        Arc::new(SessionHandle::new(key, ByteString::from(client_id), limits))
    }

    #[test]
    fn sessions_are_found_replaced_and_removed_by_client_id() {
        let mut registry = Registry::default();
        assert!(registry.is_empty());
        assert!(registry.insert("a".into(), handle(1, "a")).is_none());
        assert!(registry.insert("b".into(), handle(2, "b")).is_none());
        assert_eq!(registry.get("a").map(|found| found.key), Some(1));
        assert!(registry.contains_key("b"));
        assert!(!registry.contains_key("c"));
        let replaced = registry.insert("a".into(), handle(3, "a"));
        assert_eq!(replaced.map(|old| old.key), Some(1));
        assert_eq!(registry.get("a").map(|found| found.key), Some(3));
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.remove("b").map(|old| old.key), Some(2));
        assert!(registry.remove("b").is_none());
        let mut keys: Vec<u64> = registry.values().map(|found| found.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![3]);
    }

    /// One pointer per session: the entry's size is paid by every idle device.
    #[test]
    fn an_entry_is_one_pointer() {
        assert_eq!(std::mem::size_of::<ByClientId>(), 8);
    }
}
