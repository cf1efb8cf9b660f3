//! Retained messages indexed by topic name, so a SUBSCRIBE with a wildcard filter finds
//! its retained messages without scanning every retained topic.
//!
//! One node per topic level; a node holds the value retained under the topic that ends
//! there. Topic names contain no wildcards, so every child is a literal.

use std::collections::HashMap;
use std::fmt;
use std::str::Split;

use super::level_tree::{self, LevelNode};

struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    value: Option<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            value: None,
        }
    }
}

impl<V> LevelNode for Node<V> {
    fn child(&self, level: &str) -> Option<&Self> {
        self.children.get(level)
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        self.children.get_mut(level)
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        self.children.remove(level)
    }

    fn child_count(&self) -> usize {
        self.children.len()
    }

    fn children(&self) -> impl Iterator<Item = &Self> {
        self.children.values()
    }

    fn drain_children(&mut self, out: &mut Vec<Self>) {
        out.extend(self.children.drain().map(|(_, child)| child));
    }

    fn holds_nothing(&self) -> bool {
        self.value.is_none()
    }
}

impl<V> Drop for Node<V> {
    fn drop(&mut self) {
        level_tree::dismantle(self);
    }
}

pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> RetainedTree<V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Stores `value` under `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node
                .children
                .entry(Box::from(level))
                .or_insert_with(Node::new);
        }
        let replaced = node.value.replace(value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes the value under `topic`; prunes nodes left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let removed = level_tree::descend_mut(&mut self.root, topic)?
            .value
            .take()?;
        self.len -= 1;
        level_tree::prune(&mut self.root, topic);
        Some(removed)
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        level_tree::descend(&self.root, topic)?.value.as_ref()
    }

    /// Calls `visit` for every stored topic matching `filter` (a plain filter; `$` topics
    /// are not matched by a filter starting with a wildcard).
    ///
    /// Only the branches the filter can reach are walked: a literal level follows one
    /// child, `+` every child, `#` the whole subtree plus the node itself (`a/#` matches
    /// `a`). A `#` that is not the last level matches nothing, like `matches`.
    pub fn for_each_matching<'a>(&'a self, filter: &str, mut visit: impl FnMut(&'a V)) {
        // (node, filter levels still to match, whether the node is the root)
        let mut pending: Vec<(&'a Node<V>, Split<'_, char>, bool)> =
            vec![(&self.root, filter.split('/'), true)];
        let mut subtree: Vec<&'a Node<V>> = Vec::new();
        while let Some((node, mut levels, at_root)) = pending.pop() {
            // MQTT 4.7.2: a first-level wildcard does not reach `$SYS/...` and the like.
            let reachable = |key: &str| !(at_root && key.starts_with('$'));
            match levels.next() {
                None => visit_value(node, &mut visit),
                Some("#") => {
                    if levels.next().is_some() {
                        continue;
                    }
                    visit_value(node, &mut visit);
                    subtree.extend(
                        node.children
                            .iter()
                            .filter(|(key, _)| reachable(key))
                            .map(|(_, child)| child),
                    );
                    while let Some(below) = subtree.pop() {
                        visit_value(below, &mut visit);
                        subtree.extend(below.children.values());
                    }
                }
                Some("+") => {
                    for (key, child) in &node.children {
                        if reachable(key) {
                            pending.push((child, levels.clone(), false));
                        }
                    }
                }
                Some(level) => {
                    if let Some(child) = node.children.get(level) {
                        pending.push((child, levels, false));
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of topic levels stored (the root not counted): zero once every value is
    /// removed. Walks the whole tree; meant for tests and diagnostics.
    pub fn node_count(&self) -> usize {
        level_tree::count_nodes(&self.root) - 1
    }
}

fn visit_value<'a, V>(node: &'a Node<V>, visit: &mut impl FnMut(&'a V)) {
    if let Some(value) = &node.value {
        visit(value);
    }
}
