//! Outgoing topic aliases (MQTT 5): which alias stands for which topic towards the client.
//!
//! The client's Topic Alias Maximum bounds the cache. The first PUBLISH of a topic assigns
//! a free alias and carries topic and alias; later ones carry the alias and an empty topic.
//! When every alias is taken, the least recently used one is reassigned (the PUBLISH then
//! carries the new topic with the reused alias, which the spec allows at any time).
//! Aliases live per connection, so the cache is reset on every attach.

use std::collections::{BTreeMap, HashMap};

use bytestring::ByteString;

/// How a PUBLISH to one topic uses the alias cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasPlan {
    /// No alias: send the topic name only.
    None,
    /// The topic already has this alias: send an empty topic with it.
    Existing(u16),
    /// Assign this alias to the topic: send topic and alias.
    Assign(u16),
}

impl AliasPlan {
    /// The Topic Alias the PUBLISH carries.
    pub(crate) fn alias(self) -> Option<u16> {
        match self {
            AliasPlan::None => None,
            AliasPlan::Existing(alias) | AliasPlan::Assign(alias) => Some(alias),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct OutgoingAliases {
    /// The client's Topic Alias Maximum; 0 disables aliases.
    maximum: u16,
    /// Allocated by the first alias: every session holds this struct, and most clients
    /// never get an alias.
    cache: Option<Box<Cache>>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Topic to (alias, last use).
    by_topic: HashMap<ByteString, (u16, u64)>,
    /// Last use to topic, oldest first: the eviction order.
    by_use: BTreeMap<u64, ByteString>,
    /// A counter standing in for time; increases on every use.
    clock: u64,
}

impl OutgoingAliases {
    /// Forgets every alias and sets the maximum the client allows from now on.
    pub(crate) fn reset(&mut self, maximum: u16) {
        self.maximum = maximum;
        self.cache = None;
    }

    /// Decides how to send `topic` without changing the cache, so a PUBLISH that turns
    /// out too large for the client does not leave an alias the client never learnt.
    pub(crate) fn plan(&self, topic: &str) -> AliasPlan {
        if self.maximum == 0 {
            return AliasPlan::None;
        }
        let Some(cache) = &self.cache else {
            return AliasPlan::Assign(1);
        };
        if let Some((alias, _)) = cache.by_topic.get(topic) {
            return AliasPlan::Existing(*alias);
        }
        let used = cache.by_topic.len();
        if used < usize::from(self.maximum) {
            // Aliases are handed out 1, 2, 3... and never freed before a reset, so the
            // next free one is the count plus one (fits: used < maximum <= u16::MAX).
            return AliasPlan::Assign(u16::try_from(used + 1).unwrap_or(self.maximum));
        }
        match cache
            .by_use
            .first_key_value()
            .and_then(|(_, oldest)| cache.by_topic.get(oldest))
        {
            Some((alias, _)) => AliasPlan::Assign(*alias),
            None => AliasPlan::None,
        }
    }

    /// Records that `topic` was sent as `plan` said.
    pub(crate) fn commit(&mut self, topic: &ByteString, plan: AliasPlan) {
        let alias = match plan {
            AliasPlan::None => return,
            AliasPlan::Existing(alias) | AliasPlan::Assign(alias) => alias,
        };
        let cache = self.cache.get_or_insert_with(Box::default);
        cache.clock += 1;
        if let Some((_, last_use)) = cache.by_topic.get(topic) {
            cache.by_use.remove(last_use);
        } else if cache.by_topic.len() >= usize::from(self.maximum) {
            // The plan reassigns the least recently used alias: its old topic loses it.
            if let Some((_, evicted)) = cache.by_use.pop_first() {
                cache.by_topic.remove(&evicted);
            }
        }
        cache.by_topic.insert(topic.clone(), (alias, cache.clock));
        cache.by_use.insert(cache.clock, topic.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(aliases: &mut OutgoingAliases, topic: &str) -> AliasPlan {
        let topic = ByteString::from(topic);
        let plan = aliases.plan(&topic);
        aliases.commit(&topic, plan);
        plan
    }

    #[test]
    fn disabled_cache_never_aliases() {
        let mut aliases = OutgoingAliases::default();
        assert_eq!(send(&mut aliases, "a"), AliasPlan::None);
        assert_eq!(send(&mut aliases, "a"), AliasPlan::None);
        assert!(aliases.cache.is_none());
    }

    #[test]
    fn plan_alone_changes_nothing() {
        let mut aliases = OutgoingAliases::default();
        aliases.reset(1);
        assert_eq!(aliases.plan("a"), AliasPlan::Assign(1));
        assert_eq!(aliases.plan("a"), AliasPlan::Assign(1));
        send(&mut aliases, "a");
        // Planning another topic with the cache full leaves "a" where it is.
        assert_eq!(aliases.plan("b"), AliasPlan::Assign(1));
        assert_eq!(aliases.plan("a"), AliasPlan::Existing(1));
    }

    #[test]
    fn least_recently_used_alias_is_reassigned() {
        let mut aliases = OutgoingAliases::default();
        aliases.reset(3);
        assert_eq!(send(&mut aliases, "a"), AliasPlan::Assign(1));
        assert_eq!(send(&mut aliases, "b"), AliasPlan::Assign(2));
        assert_eq!(send(&mut aliases, "c"), AliasPlan::Assign(3));
        assert_eq!(send(&mut aliases, "a"), AliasPlan::Existing(1));
        // "b" is the oldest now.
        assert_eq!(send(&mut aliases, "d"), AliasPlan::Assign(2));
        assert_eq!(
            aliases.plan("b"),
            AliasPlan::Assign(3),
            "\"c\" is the oldest next"
        );
        let cache = aliases.cache.as_ref().unwrap();
        assert_eq!(cache.by_topic.len(), 3);
        assert_eq!(cache.by_use.len(), 3);
    }

    #[test]
    fn reset_forgets_every_alias() {
        let mut aliases = OutgoingAliases::default();
        aliases.reset(2);
        send(&mut aliases, "a");
        aliases.reset(2);
        assert_eq!(send(&mut aliases, "b"), AliasPlan::Assign(1));
    }
}
