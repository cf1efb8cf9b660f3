//! Topic names and filters: validation, shared-subscription syntax, and the two topic
//! trees the broker routes with (subscriptions by filter, retained messages by name).

mod level_tree;
pub mod retained_tree;
pub mod small_map;
pub mod subscription_trie;
#[cfg(test)]
mod tests;

pub use retained_tree::RetainedTree;
pub use small_map::SmallMap;
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

/// Longest topic name or filter, in bytes: the length prefix of an MQTT UTF-8 string.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// The first level of a shared subscription filter (MQTT 5, 4.8.2).
const SHARE_PREFIX_LEVEL: &str = "$share";

/// Checks a PUBLISH topic name (spec 4.7): non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a SUBSCRIBE/UNSUBSCRIBE topic filter, including `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let plain = match parse_shared(filter)? {
        Some((_, plain)) => plain,
        None => filter,
    };
    validate_plain_filter(plain)
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`; `Ok(None)` for a plain filter.
///
/// A filter is shared when its first level is exactly `$share` (as in Mosquitto), so
/// `$share` alone and `$share/group` are errors while `$shared/x` is an ordinary filter.
/// This checks the share syntax only; `validate_topic_filter` also checks the inner filter.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let rest = match filter.strip_prefix(SHARE_PREFIX_LEVEL) {
        Some("") => return Err(TopicError::InvalidShared("missing share name")),
        Some(rest) => match rest.strip_prefix('/') {
            Some(rest) => rest,
            // `$sharefoo/...`: the first level is not `$share`.
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    let Some((group, plain)) = rest.split_once('/') else {
        return Err(TopicError::InvalidShared(
            "missing topic filter after share name",
        ));
    };
    if group.is_empty() {
        return Err(TopicError::InvalidShared("empty share name"));
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::InvalidShared("share name contains a wildcard"));
    }
    if plain.is_empty() {
        return Err(TopicError::InvalidShared(
            "empty topic filter after share name",
        ));
    }
    Ok(Some((group, plain)))
}

/// True if the filter contains `+` or `#`.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// The reference matcher: does `topic` match `filter`? Straightforward and slow; the tries
/// are property-tested against it.
///
/// `filter` is a plain filter (no `$share` prefix). A `#` that is not the last level never
/// matches, so invalid filters match nothing rather than something surprising.
pub fn matches(topic: &str, filter: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    // MQTT 4.7.2: wildcards in the first level never match topics starting with `$`.
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    while let Some(filter_level) = filter_levels.next() {
        if filter_level == "#" {
            return filter_levels.next().is_none();
        }
        match topic_levels.next() {
            Some(topic_level) if filter_level == "+" || filter_level == topic_level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// True if the first level of `filter` is `+` or `#`.
fn starts_with_wildcard(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("+" | "#"))
}

/// Checks shared by names and filters: non-empty, bounded, no U+0000 (spec 1.5.4).
fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    if topic.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Wildcard placement in a filter without its `$share` prefix (spec 4.7.1).
fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::MisplacedMultiLevelWildcard),
            "#" | "+" => {}
            _ if level.contains('#') => return Err(TopicError::MisplacedMultiLevelWildcard),
            _ if level.contains('+') => return Err(TopicError::MisplacedSingleLevelWildcard),
            _ => {}
        }
    }
    Ok(())
}
