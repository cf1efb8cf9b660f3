//! Subscriptions indexed by topic filter: literal children plus dedicated `+` and `#`
//! slots per level, so a match walks only the branches the topic can reach.
//! A plain `&mut self` structure; the broker puts the locking around it.

use std::hash::Hash;
use std::sync::atomic::AtomicUsize;

/// Subscribers of one `$share/{group}/{filter}` group; one member receives each message.
pub struct SharedGroup<K, V> {
    pub name: String,
    pub members: Vec<(K, V)>,
    cursor: AtomicUsize,
}

impl<K, V> SharedGroup<K, V> {
    /// The next member in round-robin order, or `None` if the group is empty.
    pub fn pick_round_robin(&self) -> Option<&(K, V)> {
        let _ = &self.cursor;
        todo!("topic")
    }
}

/// One match of a topic against the trie.
pub enum Match<'a, K, V> {
    /// A plain subscription.
    Direct(&'a K, &'a V),
    /// A shared subscription group whose filter matches: deliver to one member.
    Shared(&'a SharedGroup<K, V>),
}

pub struct SubscriptionTrie<K, V> {
    _marker: std::marker::PhantomData<(K, V)>,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        todo!("topic")
    }

    /// Adds or replaces `key`'s subscription to `filter` (a plain filter, already split
    /// from its `$share` prefix; `group` is the share name). Returns the replaced value.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, key: K, value: V) -> Option<V> {
        let _ = (filter, group, key, value);
        todo!("topic")
    }

    /// Removes `key`'s subscription to `filter`; prunes nodes left empty.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, key: &K) -> Option<V> {
        let _ = (filter, group, key);
        todo!("topic")
    }

    /// Calls `visit` once for every plain subscription and every shared group whose
    /// filter matches `topic`. Filters starting with a wildcard never match `$` topics.
    pub fn for_each_match<'a>(&'a self, topic: &str, visit: impl FnMut(Match<'a, K, V>)) {
        let _ = (topic, visit);
        todo!("topic")
    }

    /// Number of subscriptions (plain plus shared members).
    pub fn len(&self) -> usize {
        todo!("topic")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
