//! A session's own list of its subscriptions (filter to options), sized for the usual
//! device: one to a few filters.
//!
//! A `HashMap` allocates a table of at least four buckets for its first entry (about
//! 200 bytes here, for one subscription), and its `RandomState` adds 16 bytes to every
//! session. Up to `LINEAR_MAX` filters live in a vector grown one entry at a time and are
//! searched linearly (a few string comparisons, at SUBSCRIBE and UNSUBSCRIBE only, never
//! per message); beyond that, in a boxed map. The router's index of subscriptions is
//! `crate::topic::SubscriptionTrie`; this list only answers UNSUBSCRIBE, restores routes
//! and removes them when the session ends.

use std::collections::HashMap;

use bytestring::ByteString;

use super::SubscriptionEntry;

/// Filters kept in a vector; one more moves them into a map.
const LINEAR_MAX: usize = 16;

/// (The map is boxed so that the set stays the size of a vector, 24 bytes.)
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(crate) enum SubscriptionSet {
    Few(Vec<(ByteString, SubscriptionEntry)>),
    Many(Box<HashMap<ByteString, SubscriptionEntry>>),
}

impl Default for SubscriptionSet {
    fn default() -> Self {
        SubscriptionSet::Few(Vec::new())
    }
}

impl SubscriptionSet {
    pub(crate) fn get(&self, filter: &str) -> Option<&SubscriptionEntry> {
        match self {
            SubscriptionSet::Few(few) => few
                .iter()
                .find(|(known, _)| &**known == filter)
                .map(|(_, entry)| entry),
            SubscriptionSet::Many(many) => many.get(filter),
        }
    }

    pub(crate) fn contains_key(&self, filter: &str) -> bool {
        self.get(filter).is_some()
    }

    /// Adds or replaces; returns the entry replaced.
    pub(crate) fn insert(
        &mut self,
        filter: ByteString,
        entry: SubscriptionEntry,
    ) -> Option<SubscriptionEntry> {
        match self {
            SubscriptionSet::Few(few) => {
                if let Some((_, known)) = few.iter_mut().find(|(known, _)| *known == filter) {
                    return Some(std::mem::replace(known, entry));
                }
                if few.len() < LINEAR_MAX {
                    // One at a time: most sessions never hold more than one or two.
                    few.reserve_exact(1);
                    few.push((filter, entry));
                    return None;
                }
                let mut many: HashMap<_, _> = std::mem::take(few).into_iter().collect();
                many.insert(filter, entry);
                *self = SubscriptionSet::Many(Box::new(many));
                None
            }
            SubscriptionSet::Many(many) => many.insert(filter, entry),
        }
    }

    /// Removes; returns the entry removed.
    pub(crate) fn remove(&mut self, filter: &str) -> Option<SubscriptionEntry> {
        match self {
            SubscriptionSet::Few(few) => {
                let index = few.iter().position(|(known, _)| &**known == filter)?;
                let (_, entry) = few.swap_remove(index);
                if few.is_empty() {
                    *few = Vec::new();
                }
                Some(entry)
            }
            SubscriptionSet::Many(many) => many.remove(filter),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ByteString, &SubscriptionEntry)> {
        let (few, many) = match self {
            SubscriptionSet::Few(few) => (Some(few.iter().map(|(k, v)| (k, v))), None),
            SubscriptionSet::Many(many) => (None, Some(many.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl FromIterator<(ByteString, SubscriptionEntry)> for SubscriptionSet {
    fn from_iter<I: IntoIterator<Item = (ByteString, SubscriptionEntry)>>(iter: I) -> Self {
        let mut set = SubscriptionSet::default();
        for (filter, entry) in iter {
            set.insert(filter, entry);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};

    fn entry(qos: QoS) -> SubscriptionEntry {
        SubscriptionEntry {
            options: SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
            subscription_id: None,
        }
    }

    #[test]
    fn one_subscription_takes_one_entry() {
        let mut set = SubscriptionSet::default();
        assert_eq!(set.insert("a/b".into(), entry(QoS::AtLeastOnce)), None);
        match &set {
            SubscriptionSet::Few(few) => assert_eq!(few.capacity(), 1),
            SubscriptionSet::Many(_) => panic!("one filter in a map"),
        }
        assert_eq!(set.get("a/b"), Some(&entry(QoS::AtLeastOnce)));
    }

    #[test]
    fn behaves_as_a_map_below_and_above_the_linear_limit() {
        let mut set = SubscriptionSet::default();
        let mut model = HashMap::new();
        for round in 0..3 {
            for i in 0..(2 * LINEAR_MAX) {
                let filter = ByteString::from(format!("f/{i}"));
                let qos = if (i + round) % 2 == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::ExactlyOnce
                };
                assert_eq!(
                    set.insert(filter.clone(), entry(qos)),
                    model.insert(filter, entry(qos))
                );
            }
            for i in (0..(2 * LINEAR_MAX)).step_by(3) {
                let filter = format!("f/{i}");
                assert_eq!(set.remove(&filter), model.remove(filter.as_str()));
                assert_eq!(set.remove(&filter), None);
            }
            assert_eq!(set.iter().count(), model.len());
            let mut listed: Vec<_> = set.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(listed, expected);
        }
        assert!(matches!(set, SubscriptionSet::Many(_)));
    }

    #[test]
    fn removing_the_last_filter_frees_the_list() {
        let mut set: SubscriptionSet = [(ByteString::from("x"), entry(QoS::AtMostOnce))]
            .into_iter()
            .collect();
        assert!(set.remove("x").is_some());
        assert_eq!(set.iter().count(), 0);
        match &set {
            SubscriptionSet::Few(few) => assert_eq!(few.capacity(), 0),
            SubscriptionSet::Many(_) => panic!("empty set in a map"),
        }
    }
}
