//! Subscriptions indexed by topic filter: literal children plus dedicated `+` and `#`
//! slots per level, so a match walks only the branches the topic can reach.
//! A plain `&mut self` structure; the broker puts the locking around it.
//!
//! Each node holds the plain subscriptions whose filter ends there (one value per key)
//! and the `$share` groups whose inner filter ends there (one group per name, so a group
//! is identified by its name and filter together, as in MQTT 5, 4.8.2).

use std::fmt;
use std::hash::Hash;
use std::str::Split;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::level_tree::{self, LevelNode};
use super::small_map::SmallMap;

/// Subscribers of one `$share/{group}/{filter}` group; one member receives each message.
pub struct SharedGroup<K, V> {
    pub name: String,
    pub members: Vec<(K, V)>,
    cursor: AtomicUsize,
}

impl<K, V> SharedGroup<K, V> {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            members: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next member in round-robin order, or `None` if the group is empty.
    ///
    /// The cursor is atomic so that picking works through the `&self` a match hands out;
    /// concurrent pickers each get a turn, in some order.
    pub fn pick_round_robin(&self) -> Option<&(K, V)> {
        let count = self.members.len();
        if count == 0 {
            return None;
        }
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.members.get(turn % count)
    }
}

impl<K: Eq, V> SharedGroup<K, V> {
    /// Adds `key` or replaces its value, keeping its place in the rotation.
    fn upsert(&mut self, key: K, value: V) -> Option<V> {
        match self.members.iter_mut().find(|(member, _)| *member == key) {
            Some((_, existing)) => Some(std::mem::replace(existing, value)),
            None => {
                self.members.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others so the rotation stays fair.
    fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.members.iter().position(|(member, _)| member == key)?;
        Some(self.members.remove(index).1)
    }
}

impl<K: fmt::Debug, V> fmt::Debug for SharedGroup<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedGroup")
            .field("name", &self.name)
            .field(
                "members",
                &self.members.iter().map(|(key, _)| key).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One match of a topic against the trie.
pub enum Match<'a, K, V> {
    /// A plain subscription.
    Direct(&'a K, &'a V),
    /// A shared subscription group whose filter matches: deliver to one member.
    Shared(&'a SharedGroup<K, V>),
}

/// One filter level. Wildcards live in their own slots rather than under the keys `+`
/// and `#`, so a match never hashes a wildcard and never confuses one with a literal.
///
/// A fleet's devices each subscribe to topics of their own, so most nodes are leaves
/// with one subscriber: the maps are `SmallMap`s (16 bytes, one entry allocated at its
/// size) rather than `HashMap`s (48 bytes, four buckets for the first entry), which
/// took a few hundred bytes per subscribed device.
struct Node<K, V> {
    literal: SmallMap<Box<str>, Node<K, V>>,
    subscribers: SmallMap<K, V>,
    /// The wildcard children and shared groups, boxed together: few nodes have any, and
    /// a node's size is paid once per device where every device subscribes to a topic of
    /// its own (a level with thousands of children keeps them inline in its hash table,
    /// whose buckets are sized by the node: 40 bytes, where three maps and three boxes
    /// took 72).
    rare: Option<Box<Rare<K, V>>>,
}

/// What a node holds only under wildcard filters or shared subscriptions.
struct Rare<K, V> {
    plus: Option<Node<K, V>>,
    hash: Option<Node<K, V>>,
    shared: Option<SharedGroups<K, V>>,
}

/// A node's shared subscription groups, by share name.
type SharedGroups<K, V> = SmallMap<Box<str>, SharedGroup<K, V>>;

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Self {
            literal: SmallMap::default(),
            subscribers: SmallMap::default(),
            rare: None,
        }
    }

    fn plus(&self) -> Option<&Self> {
        self.rare.as_deref()?.plus.as_ref()
    }

    fn hash(&self) -> Option<&Self> {
        self.rare.as_deref()?.hash.as_ref()
    }

    fn shared(&self) -> Option<&SharedGroups<K, V>> {
        self.rare.as_deref()?.shared.as_ref()
    }

    fn rare_mut(&mut self) -> &mut Rare<K, V> {
        self.rare.get_or_insert_with(|| {
            Box::new(Rare {
                plus: None,
                hash: None,
                shared: None,
            })
        })
    }

    /// Drops the box of rare parts once nothing is left in it.
    fn tidy_rare(&mut self) {
        if self
            .rare
            .as_deref()
            .is_some_and(|rare| rare.plus.is_none() && rare.hash.is_none() && rare.shared.is_none())
        {
            self.rare = None;
        }
    }
}

impl<K: Eq + Hash, V> Node<K, V> {
    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            "+" => self.rare_mut().plus.get_or_insert_with(Node::new),
            "#" => self.rare_mut().hash.get_or_insert_with(Node::new),
            _ => self
                .literal
                .get_or_insert_with(level, || Box::from(level), Node::new),
        }
    }

    /// Reports every subscription whose filter ends at this node.
    fn visit_here<'a>(&'a self, visit: &mut impl FnMut(Match<'a, K, V>)) {
        for (key, value) in self.subscribers.iter() {
            visit(Match::Direct(key, value));
        }
        if let Some(shared) = self.shared() {
            for group in shared.values() {
                visit(Match::Shared(group));
            }
        }
    }

    /// Follows the remaining topic `levels` from this node (whose own level is already
    /// consumed). Where both a literal child and `+` match, the `+` branch is parked in
    /// `pending`; a single-path walk allocates nothing.
    fn walk<'a, 't>(
        &'a self,
        mut levels: Split<'t, char>,
        pending: &mut Vec<(&'a Self, Split<'t, char>)>,
        visit: &mut impl FnMut(Match<'a, K, V>),
    ) {
        let mut node = self;
        loop {
            // `x/#` matches everything below `x` and `x` itself.
            if let Some(hash) = node.hash() {
                hash.visit_here(visit);
            }
            let Some(level) = levels.next() else {
                node.visit_here(visit);
                return;
            };
            match (node.literal.get(level), node.plus()) {
                (Some(literal), Some(plus)) => {
                    pending.push((plus, levels.clone()));
                    node = literal;
                }
                (Some(next), None) | (None, Some(next)) => node = next,
                (None, None) => return,
            }
        }
    }
}

impl<K, V> LevelNode for Node<K, V> {
    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus(),
            "#" => self.hash(),
            _ => self.literal.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.rare.as_deref_mut()?.plus.as_mut(),
            "#" => self.rare.as_deref_mut()?.hash.as_mut(),
            _ => self.literal.get_mut(level),
        }
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        match level {
            "+" | "#" => {
                let rare = self.rare.as_deref_mut()?;
                let child = if level == "+" {
                    rare.plus.take()
                } else {
                    rare.hash.take()
                };
                self.tidy_rare();
                child
            }
            _ => self.literal.remove(level),
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.plus().is_some()) + usize::from(self.hash().is_some())
    }

    fn children(&self) -> impl Iterator<Item = &Self> {
        self.literal.values().chain(self.plus()).chain(self.hash())
    }

    fn drain_children(&mut self, out: &mut Vec<Self>) {
        out.extend(self.literal.drain_values());
        if let Some(rare) = self.rare.as_deref_mut() {
            out.extend(rare.plus.take());
            out.extend(rare.hash.take());
            self.tidy_rare();
        }
    }

    fn holds_nothing(&self) -> bool {
        self.subscribers.is_empty() && self.shared().is_none()
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        level_tree::dismantle(self);
    }
}

pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    /// Plain subscriptions plus shared-group members.
    len: usize,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds or replaces `key`'s subscription to `filter` (a plain filter, already split
    /// from its `$share` prefix; `group` is the share name). Returns the replaced value.
    ///
    /// `filter` should have passed `validate_topic_filter`; an invalid one is stored but
    /// matches nothing useful (levels after a `#` are never reached).
    pub fn insert(&mut self, filter: &str, group: Option<&str>, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let replaced = match group {
            None => node.subscribers.insert(key, value),
            Some(name) => node
                .rare_mut()
                .shared
                .get_or_insert_with(SmallMap::default)
                .get_or_insert_with(name, || Box::from(name), || SharedGroup::new(name))
                .upsert(key, value),
        };
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes `key`'s subscription to `filter`; prunes nodes left empty.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, key: &K) -> Option<V> {
        let node = level_tree::descend_mut(&mut self.root, filter)?;
        let removed = match group {
            None => node.subscribers.remove(key)?,
            Some(name) => {
                let groups = node.rare.as_deref_mut()?.shared.as_mut()?;
                let shared = groups.get_mut(name)?;
                let removed = shared.remove(key)?;
                if shared.members.is_empty() {
                    groups.remove(name);
                    if groups.is_empty() {
                        if let Some(rare) = node.rare.as_deref_mut() {
                            rare.shared = None;
                        }
                        node.tidy_rare();
                    }
                }
                removed
            }
        };
        self.len -= 1;
        level_tree::prune(&mut self.root, filter);
        Some(removed)
    }

    /// Calls `visit` once for every plain subscription and every shared group whose
    /// filter matches `topic`. Filters starting with a wildcard never match `$` topics.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut visit: impl FnMut(Match<'a, K, V>)) {
        let mut levels = topic.split('/');
        let Some(first) = levels.next() else {
            return;
        };
        let mut pending = Vec::new();
        let root = &self.root;
        if let Some(literal) = root.literal.get(first) {
            literal.walk(levels.clone(), &mut pending, &mut visit);
        }
        // MQTT 4.7.2: the root's wildcard slots are closed to `$SYS/...` and the like.
        if !first.starts_with('$') {
            if let Some(hash) = root.hash() {
                hash.visit_here(&mut visit);
            }
            if let Some(plus) = root.plus() {
                plus.walk(levels, &mut pending, &mut visit);
            }
        }
        while let Some((node, rest)) = pending.pop() {
            node.walk(rest, &mut pending, &mut visit);
        }
    }

    /// Number of subscriptions (plain plus shared members).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of filter levels stored (the root not counted): zero once every
    /// subscription is removed. Walks the whole trie; meant for tests and diagnostics.
    pub fn node_count(&self) -> usize {
        level_tree::count_nodes(&self.root) - 1
    }
}

#[cfg(test)]
mod size_tests {
    use super::Node;

    /// A device subscribed to a topic of its own holds one node, inline in its parent
    /// level's table: its size is part of what every idle device costs (BENCHMARKS.md).
    #[test]
    fn a_node_stays_small() {
        assert!(
            std::mem::size_of::<Node<u64, u64>>() <= 40,
            "a trie node is {} bytes",
            std::mem::size_of::<Node<u64, u64>>()
        );
    }
}
