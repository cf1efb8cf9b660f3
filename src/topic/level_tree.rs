//! Walks shared by the subscription trie and the retained tree: descending a `/`-separated
//! path, pruning the chain of nodes a removal leaves empty, counting nodes and dropping
//! a tree.
//!
//! Everything here is iterative. A 65,535-byte topic can have 32,768 levels, so a
//! recursive walk (or the compiler's recursive drop of nested maps) could overflow a
//! task's stack on input any client controls.

/// A node of a tree keyed by topic levels.
pub(super) trait LevelNode: Sized {
    /// The child reached through `level`, which may be a wildcard slot.
    fn child(&self, level: &str) -> Option<&Self>;
    fn child_mut(&mut self, level: &str) -> Option<&mut Self>;
    /// Detaches the child reached through `level`.
    fn take_child(&mut self, level: &str) -> Option<Self>;
    fn child_count(&self) -> usize;
    fn children(&self) -> impl Iterator<Item = &Self>;
    /// Moves every child into `out`, leaving this node childless.
    fn drain_children(&mut self, out: &mut Vec<Self>);
    /// True when the node stores nothing itself (its children aside).
    fn holds_nothing(&self) -> bool;
}

/// The node at `path` below `root`, if it exists.
pub(super) fn descend<'n, N: LevelNode>(root: &'n N, path: &str) -> Option<&'n N> {
    let mut node = root;
    for level in path.split('/') {
        node = node.child(level)?;
    }
    Some(node)
}

pub(super) fn descend_mut<'n, N: LevelNode>(root: &'n mut N, path: &str) -> Option<&'n mut N> {
    let mut node = root;
    for level in path.split('/') {
        node = node.child_mut(level)?;
    }
    Some(node)
}

/// After something was removed from the node at `path`, detaches the longest chain of
/// nodes ending there that now hold nothing and lead nowhere else. The root stays.
pub(super) fn prune<N: LevelNode>(root: &mut N, path: &str) {
    // First pass, read-only: find the depth where the trailing empty chain starts.
    let mut cut: Option<usize> = None;
    let mut node = &*root;
    let mut levels = path.split('/').peekable();
    let mut depth = 0;
    while let Some(level) = levels.next() {
        let Some(child) = node.child(level) else {
            return;
        };
        let children_allowed = if levels.peek().is_some() { 1 } else { 0 };
        if child.holds_nothing() && child.child_count() == children_allowed {
            cut.get_or_insert(depth);
        } else {
            cut = None;
        }
        node = child;
        depth += 1;
    }
    let Some(cut) = cut else {
        return;
    };
    // Second pass: detach the chain at its top. Dropping it is iterative (see `dismantle`).
    let mut parent = root;
    let mut levels = path.split('/');
    for _ in 0..cut {
        let Some(next) = levels.next().and_then(|level| parent.child_mut(level)) else {
            return;
        };
        parent = next;
    }
    if let Some(level) = levels.next() {
        drop(parent.take_child(level));
    }
}

/// Number of nodes in the tree, `root` included.
pub(super) fn count_nodes<N: LevelNode>(root: &N) -> usize {
    let mut count = 0;
    let mut pending = vec![root];
    while let Some(node) = pending.pop() {
        count += 1;
        pending.extend(node.children());
    }
    count
}

/// Empties `node`'s subtree without recursion; called from the nodes' `Drop`, so each
/// detached node is already childless when it is dropped.
pub(super) fn dismantle<N: LevelNode>(node: &mut N) {
    let mut pending = Vec::new();
    node.drain_children(&mut pending);
    while let Some(mut detached) = pending.pop() {
        detached.drain_children(&mut pending);
    }
}
