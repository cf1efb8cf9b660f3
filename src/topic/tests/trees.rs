//! Behaviour of the trees beyond the rule table: replacement, removal and pruning,
//! shared-group rotation, and topics deep enough to break a recursive walk.

use std::collections::BTreeSet;

use super::{retained_matches, subscribe, trie_matches};
use crate::topic::{Match, RetainedTree, SharedGroup, SubscriptionTrie};

fn only_group<'a>(
    trie: &'a SubscriptionTrie<u32, String>,
    topic: &str,
) -> &'a SharedGroup<u32, String> {
    let mut groups = Vec::new();
    trie.for_each_match(topic, |found| {
        if let Match::Shared(group) = found {
            groups.push(group);
        }
    });
    assert_eq!(groups.len(), 1, "expected one group for {topic}");
    groups[0]
}

#[test]
fn round_robin_yields_each_member_in_turn() {
    let mut trie = SubscriptionTrie::new();
    for key in [10, 20, 30] {
        subscribe(&mut trie, "$share/workers/jobs/+", key);
    }
    let group = only_group(&trie, "jobs/build");
    assert_eq!(group.name, "workers");
    let picks: Vec<u32> = (0..7)
        .map(|_| group.pick_round_robin().map(|(key, _)| *key))
        .collect::<Option<_>>()
        .unwrap_or_default();
    assert_eq!(picks, [10, 20, 30, 10, 20, 30, 10]);
}

#[test]
fn resubscribing_a_group_member_replaces_it_in_place() {
    let mut trie = SubscriptionTrie::new();
    assert_eq!(trie.insert("a", Some("g"), 1, "first".to_owned()), None);
    assert_eq!(trie.insert("a", Some("g"), 2, "second".to_owned()), None);
    assert_eq!(
        trie.insert("a", Some("g"), 1, "again".to_owned()),
        Some("first".to_owned())
    );
    assert_eq!(trie.len(), 2);
    let members: Vec<_> = only_group(&trie, "a")
        .members
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    assert_eq!(members, [(1, "again"), (2, "second")]);
}

#[test]
fn same_group_name_on_two_filters_is_two_groups() {
    let mut trie = SubscriptionTrie::new();
    subscribe(&mut trie, "$share/g/a/+", 1);
    subscribe(&mut trie, "$share/g/a/#", 2);
    subscribe(&mut trie, "$share/h/a/+", 3);
    let found = trie_matches(&trie, "a/b");
    let expected: BTreeSet<_> = [
        (Some("g".to_owned()), None, "a/+".to_owned()),
        (Some("g".to_owned()), None, "a/#".to_owned()),
        (Some("h".to_owned()), None, "a/+".to_owned()),
    ]
    .into();
    assert_eq!(found, expected);
}

#[test]
fn plain_and_shared_subscriptions_are_independent() {
    let mut trie = SubscriptionTrie::new();
    assert_eq!(trie.insert("a", None, 1, "plain".to_owned()), None);
    assert_eq!(trie.insert("a", Some("g"), 1, "shared".to_owned()), None);
    assert_eq!(trie.len(), 2);
    assert_eq!(trie.remove("a", Some("g"), &1), Some("shared".to_owned()));
    assert_eq!(trie.remove("a", Some("g"), &1), None);
    assert_eq!(trie.remove("a", None, &1), Some("plain".to_owned()));
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 0);
}

#[test]
fn plain_insert_replaces_and_remove_prunes() {
    let mut trie = SubscriptionTrie::new();
    assert_eq!(trie.insert("a/b/c", None, 1, "v1".to_owned()), None);
    assert_eq!(
        trie.insert("a/b/c", None, 1, "v2".to_owned()),
        Some("v1".to_owned())
    );
    assert_eq!(trie.insert("a/+/#", None, 1, "w".to_owned()), None);
    assert_eq!(trie.len(), 2);
    // a, b, c, +, #
    assert_eq!(trie.node_count(), 5);
    assert_eq!(trie.remove("a/b/c", None, &2), None);
    assert_eq!(trie.remove("a/b", None, &1), None);
    assert_eq!(trie.remove("x/y", None, &1), None);
    assert_eq!(trie.node_count(), 5);
    assert_eq!(trie.remove("a/b/c", None, &1), Some("v2".to_owned()));
    // `a` stays: it still leads to `a/+/#`.
    assert_eq!(trie.node_count(), 3);
    assert_eq!(trie.remove("a/+/#", None, &1), Some("w".to_owned()));
    assert_eq!(trie.node_count(), 0);
    assert!(trie.is_empty());
}

#[test]
fn pruning_keeps_nodes_that_still_hold_subscriptions() {
    let mut trie = SubscriptionTrie::new();
    subscribe(&mut trie, "a", 1);
    subscribe(&mut trie, "a/b/c", 1);
    assert_eq!(trie.remove("a/b/c", None, &1), Some("a/b/c".to_owned()));
    assert_eq!(trie.node_count(), 1);
    assert_eq!(trie_matches(&trie, "a").len(), 1);
}

#[test]
fn retained_insert_get_remove_prunes() {
    let mut tree = RetainedTree::new();
    assert!(tree.is_empty());
    assert_eq!(tree.insert("a/b", "1".to_owned()), None);
    assert_eq!(tree.insert("a/b", "2".to_owned()), Some("1".to_owned()));
    assert_eq!(tree.insert("a", "3".to_owned()), None);
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.get("a/b").map(String::as_str), Some("2"));
    assert_eq!(tree.get("a/b/c"), None);
    assert_eq!(tree.get("b"), None);
    assert_eq!(tree.remove("a/b/c"), None);
    assert_eq!(tree.remove("a/b"), Some("2".to_owned()));
    assert_eq!(tree.node_count(), 1);
    assert_eq!(tree.remove("a"), Some("3".to_owned()));
    assert_eq!(tree.remove("a"), None);
    assert_eq!(tree.node_count(), 0);
    assert!(tree.is_empty());
}

#[test]
fn retained_wildcards_walk_only_reachable_branches() {
    let mut tree = RetainedTree::new();
    for topic in ["$SYS/uptime", "a", "a/b", "a/b/c", "a/c", "b"] {
        tree.insert(topic, topic.to_owned());
    }
    let set = |items: &[&str]| {
        items
            .iter()
            .map(|item| item.to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        retained_matches(&tree, "#"),
        set(&["a", "a/b", "a/b/c", "a/c", "b"])
    );
    assert_eq!(
        retained_matches(&tree, "a/#"),
        set(&["a", "a/b", "a/b/c", "a/c"])
    );
    assert_eq!(retained_matches(&tree, "a/+"), set(&["a/b", "a/c"]));
    assert_eq!(retained_matches(&tree, "+"), set(&["a", "b"]));
    assert_eq!(retained_matches(&tree, "$SYS/#"), set(&["$SYS/uptime"]));
    assert_eq!(retained_matches(&tree, "a/#/c"), set(&[]));
}

/// 32,768 levels: the most a 65,535-byte topic can have. A recursive walk or drop
/// would overflow a small stack; run on one to prove none happens.
#[test]
fn deepest_topics_do_not_exhaust_the_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let topic = "/".repeat(32_767);
            let filter = format!("{}#", "+/".repeat(32_767));
            let mut trie = SubscriptionTrie::new();
            trie.insert(&topic, None, 1u32, ());
            trie.insert(&filter, None, 2u32, ());
            let mut count = 0;
            // Both match: the filter's `#` takes the topic's last level.
            trie.for_each_match(&topic, |_| count += 1);
            assert_eq!(count, 2);
            trie.for_each_match(&format!("{topic}/x"), |_| count += 1);
            assert_eq!(count, 3);
            assert_eq!(trie.remove(&topic, None, &1), Some(()));
            drop(trie);

            let mut tree = RetainedTree::new();
            tree.insert(&topic, ());
            let mut found = 0;
            tree.for_each_matching(&filter, |_| found += 1);
            tree.for_each_matching("#", |_| found += 1);
            assert_eq!(found, 2);
            drop(tree);
        });
    let joined = handle.map(|thread| thread.join());
    assert!(matches!(joined, Ok(Ok(()))), "deep walk failed");
}
