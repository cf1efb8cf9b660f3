//! Rule tables and property tests for topic validation, matching and the two trees.

mod properties;
mod rules;
mod trees;

use std::collections::BTreeSet;

use super::{parse_shared, Match, RetainedTree, SubscriptionTrie};

/// Filters (as subscribed, `$share` included) of `trie` whose subscription or group
/// matches `topic`, with the key for a plain subscription; each value is its filter.
/// Panics if anything is reported twice.
fn trie_matches(
    trie: &SubscriptionTrie<u32, String>,
    topic: &str,
) -> BTreeSet<(Option<String>, Option<u32>, String)> {
    let mut seen = BTreeSet::new();
    trie.for_each_match(topic, |found| {
        let entry = match found {
            Match::Direct(key, filter) => (None, Some(*key), filter.clone()),
            Match::Shared(group) => {
                let filter = group.members.first().map(|(_, filter)| filter.clone());
                (Some(group.name.clone()), None, filter.unwrap_or_default())
            }
        };
        assert!(
            seen.insert(entry.clone()),
            "{entry:?} reported twice for {topic}"
        );
    });
    seen
}

/// Values of `tree` matching `filter`; panics if one is reported twice.
fn retained_matches(tree: &RetainedTree<String>, filter: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tree.for_each_matching(filter, |topic| {
        assert!(
            seen.insert(topic.clone()),
            "{topic} reported twice for {filter}"
        );
    });
    seen
}

/// Inserts a filter as a broker would: split from its `$share` prefix first.
fn subscribe(trie: &mut SubscriptionTrie<u32, String>, filter: &str, key: u32) -> Option<String> {
    match parse_shared(filter) {
        Ok(Some((group, plain))) => trie.insert(plain, Some(group), key, plain.to_owned()),
        _ => trie.insert(filter, None, key, filter.to_owned()),
    }
}
