//! Property tests: the trees against the naive `matches` and a map model, on a small
//! alphabet of levels (`$SYS` and empty levels included) so that collisions, `$` topics
//! and wildcard overlaps are common.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::retained_matches;
use crate::topic::{matches, validate_topic_filter, Match, RetainedTree, SubscriptionTrie};

/// A valid topic name (one empty level alone would be the empty name).
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "$SYS", ""]), 1..=4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic name", |topic| !topic.is_empty())
}

/// A valid plain filter: literal and `+` levels, optionally ending in `#`.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "$SYS", "", "+"]);
    (prop::collection::vec(level, 0..=3), any::<bool>()).prop_map(|(mut levels, hash)| {
        // No levels, or one empty level, would be the empty filter.
        if hash || matches!(levels[..], [] | [""]) {
            levels.push("#");
        }
        levels.join("/")
    })
}

fn group() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["g", "h"]).prop_map(str::to_owned))
}

/// (group, filter, key)
type SubscriptionId = (Option<String>, String, u32);

#[derive(Debug, Clone)]
enum Op {
    Subscribe(SubscriptionId, u32),
    Unsubscribe(SubscriptionId),
}

fn subscription() -> impl Strategy<Value = SubscriptionId> {
    (group(), filter(), 0u32..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (subscription(), any::<u32>()).prop_map(|(id, value)| Op::Subscribe(id, value)),
        subscription().prop_map(Op::Unsubscribe),
    ]
}

/// Everything one topic reaches, keyed by (group, filter): plain subscriptions are
/// listed with group `None`, one key set per entry.
type Reached = BTreeMap<(Option<String>, String), BTreeSet<u32>>;

/// What the trie reports for `topic`; values are `(filter, payload)`.
fn reached_by_trie(trie: &SubscriptionTrie<u32, (String, u32)>, topic: &str) -> Reached {
    let mut reached = Reached::new();
    let mut shared_seen = BTreeSet::new();
    trie.for_each_match(topic, |found| match found {
        Match::Direct(key, (filter, _)) => {
            let keys = reached.entry((None, filter.clone())).or_default();
            assert!(keys.insert(*key), "{key} via {filter} reported twice");
        }
        Match::Shared(group) => {
            assert!(
                !group.members.is_empty(),
                "empty group {} reported",
                group.name
            );
            let filter = group.members[0].1 .0.clone();
            let id = (Some(group.name.clone()), filter);
            assert!(
                shared_seen.insert(id.clone()),
                "group {id:?} reported twice"
            );
            for (key, (member_filter, _)) in &group.members {
                assert_eq!(member_filter, &id.1, "group mixes filters");
                reached.entry(id.clone()).or_default().insert(*key);
            }
        }
    });
    reached
}

/// What the naive matcher says `topic` reaches among the modelled subscriptions.
fn reached_by_model(model: &HashMap<SubscriptionId, u32>, topic: &str) -> Reached {
    let mut reached = Reached::new();
    for (group, filter, key) in model.keys() {
        if matches(topic, filter) {
            let id = (group.clone(), filter.clone());
            reached.entry(id).or_default().insert(*key);
        }
    }
    reached
}

/// Distinct non-empty level prefixes of `paths`: the nodes a pruned tree must hold.
fn expected_nodes<'a>(paths: impl Iterator<Item = &'a String>) -> usize {
    let mut prefixes = BTreeSet::new();
    for path in paths {
        let levels: Vec<&str> = path.split('/').collect();
        for depth in 1..=levels.len() {
            prefixes.insert(levels[..depth].join("/"));
        }
    }
    prefixes.len()
}

proptest! {
    #[test]
    fn generated_filters_are_valid(filter in filter(), group in group()) {
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
        if let Some(group) = group {
            prop_assert_eq!(validate_topic_filter(&format!("$share/{group}/{filter}")), Ok(()));
        }
    }

    /// The trie reports exactly what the naive matcher finds among the inserted
    /// subscriptions, each plain subscription and each group once.
    #[test]
    fn trie_agrees_with_naive_matcher(
        subscriptions in prop::collection::vec(subscription(), 1..30),
        topics in prop::collection::vec(topic(), 1..12),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model = HashMap::new();
        for (index, (group, filter, key)) in (0u32..).zip(&subscriptions) {
            trie.insert(filter, group.as_deref(), *key, (filter.clone(), index));
            model.insert((group.clone(), filter.clone(), *key), index);
        }
        prop_assert_eq!(trie.len(), model.len());
        for topic in &topics {
            prop_assert_eq!(reached_by_trie(&trie, topic), reached_by_model(&model, topic), "topic {}", topic);
        }
    }

    /// Subscribe/unsubscribe sequences against a map: same replaced and removed values,
    /// same length, same matches, a node set pruned to exactly what the filters need, and
    /// nothing left once everything is removed.
    #[test]
    fn trie_follows_map_model(
        ops in prop::collection::vec(op(), 1..60),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model: HashMap<SubscriptionId, u32> = HashMap::new();
        for op in &ops {
            match op {
                Op::Subscribe(id, value) => {
                    let (group, filter, key) = id;
                    let replaced = trie.insert(filter, group.as_deref(), *key, (filter.clone(), *value));
                    prop_assert_eq!(replaced.map(|(_, old)| old), model.insert(id.clone(), *value));
                }
                Op::Unsubscribe(id) => {
                    let (group, filter, key) = id;
                    let removed = trie.remove(filter, group.as_deref(), key);
                    prop_assert_eq!(removed.map(|(_, old)| old), model.remove(id));
                }
            }
            prop_assert_eq!(trie.len(), model.len());
            prop_assert_eq!(trie.node_count(), expected_nodes(model.keys().map(|(_, filter, _)| filter)));
        }
        for topic in &topics {
            prop_assert_eq!(reached_by_trie(&trie, topic), reached_by_model(&model, topic), "topic {}", topic);
        }
        for ((group, filter, key), value) in model.drain() {
            prop_assert_eq!(trie.remove(&filter, group.as_deref(), &key).map(|(_, old)| old), Some(value));
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 0);
        for topic in &topics {
            prop_assert!(reached_by_trie(&trie, topic).is_empty());
        }
    }

    /// The retained tree reports exactly the stored topics the naive matcher accepts.
    #[test]
    fn retained_tree_agrees_with_naive_matcher(
        topics in prop::collection::vec(topic(), 1..30),
        filters in prop::collection::vec(filter(), 1..12),
    ) {
        let mut tree = RetainedTree::new();
        for topic in &topics {
            tree.insert(topic, topic.clone());
        }
        let stored: BTreeSet<String> = topics.iter().cloned().collect();
        prop_assert_eq!(tree.len(), stored.len());
        for filter in &filters {
            let expected: BTreeSet<String> =
                stored.iter().filter(|topic| matches(topic, filter)).cloned().collect();
            prop_assert_eq!(retained_matches(&tree, filter), expected, "filter {}", filter);
        }
    }

    /// Store/clear sequences against a map, with pruning checked after every step.
    #[test]
    fn retained_tree_follows_map_model(
        ops in prop::collection::vec((topic(), prop::option::of(any::<u32>())), 1..60),
    ) {
        let mut tree = RetainedTree::new();
        let mut model: HashMap<String, u32> = HashMap::new();
        for (topic, value) in &ops {
            match value {
                Some(value) => prop_assert_eq!(tree.insert(topic, *value), model.insert(topic.clone(), *value)),
                None => prop_assert_eq!(tree.remove(topic), model.remove(topic)),
            }
            prop_assert_eq!(tree.len(), model.len());
            prop_assert_eq!(tree.node_count(), expected_nodes(model.keys()));
            prop_assert_eq!(tree.get(topic), model.get(topic));
        }
        for (topic, value) in model.drain() {
            prop_assert_eq!(tree.remove(&topic), Some(value));
        }
        prop_assert!(tree.is_empty());
        prop_assert_eq!(tree.node_count(), 0);
    }
}
