//! Topic names and filters: validation, shared-subscription syntax, and the two topic
//! trees the broker routes with (subscriptions by filter, retained messages by name).

pub mod retained_tree;
pub mod subscription_trie;

pub use retained_tree::RetainedTree;
pub use subscription_trie::{Match, SharedGroup, SubscriptionTrie};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic name contains a wildcard")]
    WildcardInName,
    #[error("'#' must be the last level of a topic filter and stand alone in its level")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must stand alone in its level")]
    MisplacedSingleLevelWildcard,
    #[error("topic contains U+0000")]
    NullCharacter,
    #[error("topic exceeds 65535 bytes")]
    TooLong,
    #[error("invalid shared subscription: {0}")]
    InvalidShared(&'static str),
}

/// Checks a PUBLISH topic name (spec 4.7): non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let _ = name;
    todo!("topic")
}

/// Checks a SUBSCRIBE/UNSUBSCRIBE topic filter, including `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    let _ = filter;
    todo!("topic")
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`; `Ok(None)` for a plain filter.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let _ = filter;
    todo!("topic")
}

/// True if the filter contains `+` or `#`.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// The reference matcher: does `topic` match `filter`? Straightforward and slow; the tries
/// are property-tested against it.
pub fn matches(topic: &str, filter: &str) -> bool {
    let _ = (topic, filter);
    todo!("topic")
}
