//! Rule tables: the matching rules of MQTT 3.1.1/5.0 section 4.7 with Mosquitto's
//! reading of the open points, run through `matches`, the subscription trie and the
//! retained tree, plus validation tables for names and filters.

use super::super::{
    has_wildcard, matches, parse_shared, validate_topic_filter, validate_topic_name, TopicError,
    MAX_TOPIC_BYTES,
};
use super::{retained_matches, subscribe, trie_matches};
use crate::topic::{RetainedTree, SubscriptionTrie};

/// (topic, filter, matches)
const MATCH_RULES: &[(&str, &str, bool)] = &[
    // Literal levels.
    ("foo/bar", "foo/bar", true),
    ("foo/bar", "foo/baz", false),
    ("foo/bar", "foo", false),
    ("foo", "foo/bar", false),
    ("foo/bar", "Foo/Bar", false),
    ("foo/bar/baz", "foo/bar", false),
    // `+` takes exactly one level, which may be empty.
    ("foo/bar", "foo/+", true),
    ("foo/bar", "+/bar", true),
    ("foo/bar", "+/+", true),
    ("foo/bar/baz", "foo/+/baz", true),
    ("foo/bar/baz", "foo/+", false),
    ("foo", "foo/+", false),
    ("foo/", "foo/+", true),
    ("foo//bar", "foo/+/bar", true),
    ("/foo", "+/foo", true),
    ("/foo", "+", false),
    ("/foo", "+/+", true),
    ("/foo", "/+", true),
    ("foo", "+", true),
    ("foo/bar", "+", false),
    ("/", "+/+", true),
    ("/", "+", false),
    ("foo/bar/baz", "+/+/+", true),
    ("foo/bar/baz", "+/+", false),
    // `#` takes the remaining levels, none included.
    ("foo/bar", "#", true),
    ("foo", "#", true),
    ("/", "#", true),
    ("/foo", "#", true),
    ("foo/bar", "foo/#", true),
    ("foo", "foo/#", true),
    ("foo/", "foo/#", true),
    ("foo/bar/baz", "foo/#", true),
    ("foobar", "foo/#", false),
    ("fo", "foo/#", false),
    ("foo/bar", "foo/bar/#", true),
    ("foo/bar/baz", "foo/+/#", true),
    ("foo", "foo/+/#", false),
    ("foo/bar", "+/#", true),
    ("foo", "+/#", true),
    ("foo/bar", "bar/#", false),
    // Spec 4.7.1 examples.
    ("sport/tennis/player1", "sport/tennis/player1/#", true),
    (
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/#",
        true,
    ),
    (
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player1/#",
        true,
    ),
    ("sport", "sport/#", true),
    ("sport/tennis/player1", "sport/tennis/+", true),
    ("sport/tennis/player1/ranking", "sport/tennis/+", false),
    ("sport", "sport/+", false),
    ("sport/", "sport/+", true),
    ("/finance", "+/+", true),
    ("/finance", "/+", true),
    ("/finance", "+", false),
    // Empty levels are levels.
    ("a//b", "a/b", false),
    ("a//b", "a//b", true),
    ("a//b", "a/+/b", true),
    ("a/b/", "a/b", false),
    ("a/b/", "a/b/", true),
    // `$` topics: no first-level wildcard reaches them (4.7.2).
    ("$SYS/broker/uptime", "#", false),
    ("$SYS/broker/uptime", "+/broker/uptime", false),
    ("$SYS/broker/uptime", "+/#", false),
    ("$SYS", "+", false),
    ("$SYS", "#", false),
    ("$SYS/broker/uptime", "$SYS/#", true),
    ("$SYS/broker/uptime", "$SYS/+/uptime", true),
    ("$SYS/broker/uptime", "$SYS/broker/uptime", true),
    ("$SYS", "$SYS/#", true),
    ("$foo/bar", "$foo/bar", true),
    ("$foo/bar", "$foo/+", true),
    // `$` only counts as the first character of the topic.
    ("foo/$bar", "foo/+", true),
    ("foo/$bar", "#", true),
    ("foo/$bar", "+/$bar", true),
    ("a$/b", "+/b", true),
];

#[test]
fn rule_table_through_matches() {
    for &(topic, filter, expected) in MATCH_RULES {
        assert_eq!(matches(topic, filter), expected, "{topic} vs {filter}");
    }
}

#[test]
fn rule_table_through_subscription_trie() {
    // All filters in one trie, so each case also checks that no other filter leaks in.
    let mut trie = SubscriptionTrie::new();
    for (key, &(_, filter, _)) in (0u32..).zip(MATCH_RULES) {
        subscribe(&mut trie, filter, key);
    }
    for &(topic, filter, expected) in MATCH_RULES {
        let found = trie_matches(&trie, topic)
            .into_iter()
            .any(|(_, _, matched)| matched == filter);
        assert_eq!(found, expected, "{topic} vs {filter}");
    }
}

#[test]
fn rule_table_through_shared_groups() {
    let mut trie = SubscriptionTrie::new();
    for (key, &(_, filter, _)) in (0u32..).zip(MATCH_RULES) {
        subscribe(&mut trie, &format!("$share/group/{filter}"), key);
    }
    for &(topic, filter, expected) in MATCH_RULES {
        let found = trie_matches(&trie, topic)
            .into_iter()
            .any(|(group, _, matched)| group.as_deref() == Some("group") && matched == filter);
        assert_eq!(found, expected, "{topic} vs $share/group/{filter}");
    }
}

#[test]
fn rule_table_through_retained_tree() {
    let mut tree = RetainedTree::new();
    for &(topic, _, _) in MATCH_RULES {
        tree.insert(topic, topic.to_owned());
    }
    for &(topic, filter, expected) in MATCH_RULES {
        let found = retained_matches(&tree, filter).contains(topic);
        assert_eq!(found, expected, "{topic} vs {filter}");
    }
}

#[test]
fn topic_name_table() {
    let long_ok = "a".repeat(MAX_TOPIC_BYTES);
    let too_long = "a".repeat(MAX_TOPIC_BYTES + 1);
    let cases: &[(&str, Result<(), TopicError>)] = &[
        ("a", Ok(())),
        ("a/b/c", Ok(())),
        ("/", Ok(())),
        ("//", Ok(())),
        ("/a", Ok(())),
        ("a/", Ok(())),
        (" ", Ok(())),
        ("$SYS/broker", Ok(())),
        ("$share/g/a", Ok(())),
        ("caf\u{e9}/\u{1f600}", Ok(())),
        (&long_ok, Ok(())),
        ("", Err(TopicError::Empty)),
        ("+", Err(TopicError::WildcardInName)),
        ("#", Err(TopicError::WildcardInName)),
        ("a/+/b", Err(TopicError::WildcardInName)),
        ("a/#", Err(TopicError::WildcardInName)),
        ("a+", Err(TopicError::WildcardInName)),
        ("a#b", Err(TopicError::WildcardInName)),
        ("a\0b", Err(TopicError::NullCharacter)),
        (&too_long, Err(TopicError::TooLong)),
    ];
    for (name, expected) in cases {
        assert_eq!(&validate_topic_name(name), expected, "{name:.40}");
    }
}

#[test]
fn topic_filter_table() {
    use TopicError::*;
    let long_ok = "a".repeat(MAX_TOPIC_BYTES);
    let too_long = format!("{long_ok}/#");
    let cases: &[(&str, Result<(), TopicError>)] = &[
        ("a", Ok(())),
        ("a/b", Ok(())),
        ("#", Ok(())),
        ("+", Ok(())),
        ("/", Ok(())),
        ("a/#", Ok(())),
        ("a/+", Ok(())),
        ("+/+/+", Ok(())),
        ("+/#", Ok(())),
        ("a//#", Ok(())),
        ("/#", Ok(())),
        ("a/+/b/#", Ok(())),
        ("$SYS/#", Ok(())),
        ("$share", Err(InvalidShared("missing share name"))),
        ("$sharefoo/a", Ok(())),
        ("$shared/+", Ok(())),
        ("a/$share/g/b", Ok(())),
        (&long_ok, Ok(())),
        ("", Err(Empty)),
        (&too_long, Err(TooLong)),
        ("a\0/#", Err(NullCharacter)),
        ("a/#/b", Err(MisplacedMultiLevelWildcard)),
        ("#/a", Err(MisplacedMultiLevelWildcard)),
        ("#/", Err(MisplacedMultiLevelWildcard)),
        ("a#", Err(MisplacedMultiLevelWildcard)),
        ("a/b#", Err(MisplacedMultiLevelWildcard)),
        ("##", Err(MisplacedMultiLevelWildcard)),
        ("a+", Err(MisplacedSingleLevelWildcard)),
        ("a/+b", Err(MisplacedSingleLevelWildcard)),
        ("++", Err(MisplacedSingleLevelWildcard)),
        ("a/b+/c", Err(MisplacedSingleLevelWildcard)),
        // Shared subscriptions (MQTT 5, 4.8.2).
        ("$share/g/a", Ok(())),
        ("$share/g/#", Ok(())),
        ("$share/g/+/a", Ok(())),
        ("$share/g//", Ok(())),
        ("$share/g/$SYS/#", Ok(())),
        ("$share/g/a/#/b", Err(MisplacedMultiLevelWildcard)),
        ("$share/g/a+", Err(MisplacedSingleLevelWildcard)),
        (
            "$share/",
            Err(InvalidShared("missing topic filter after share name")),
        ),
        (
            "$share/g",
            Err(InvalidShared("missing topic filter after share name")),
        ),
        (
            "$share/g/",
            Err(InvalidShared("empty topic filter after share name")),
        ),
        ("$share//a", Err(InvalidShared("empty share name"))),
        (
            "$share/+/a",
            Err(InvalidShared("share name contains a wildcard")),
        ),
        (
            "$share/#/a",
            Err(InvalidShared("share name contains a wildcard")),
        ),
        (
            "$share/g+/a",
            Err(InvalidShared("share name contains a wildcard")),
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(&validate_topic_filter(filter), expected, "{filter:.40}");
    }
}

#[test]
fn parse_shared_splits_group_and_filter() {
    assert_eq!(parse_shared("a/b"), Ok(None));
    assert_eq!(parse_shared("$sharex/a"), Ok(None));
    assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
    assert_eq!(parse_shared("$share/g/#"), Ok(Some(("g", "#"))));
    assert_eq!(parse_shared("$share/g//"), Ok(Some(("g", "/"))));
    assert!(parse_shared("$share/g").is_err());
    assert!(parse_shared("$share//a").is_err());
}

#[test]
fn has_wildcard_spots_either_wildcard() {
    assert!(has_wildcard("a/+"));
    assert!(has_wildcard("#"));
    assert!(!has_wildcard("a/b"));
}
