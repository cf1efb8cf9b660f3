//! `SmallMap`: a map for the usual case of one or a few entries, that turns into a hash
//! map when it grows.
//!
//! A `HashMap` is 48 bytes inline and allocates at least four buckets for its first
//! entry. The subscription trie holds three per filter level and a session one list of
//! its filters; in a fleet most of them hold one entry (a device's own topic, its one
//! subscriber, its one filter), where a `HashMap` costs a few hundred bytes for what a
//! vector holds in one entry. Up to `LINEAR_MAX` entries live in a boxed slice resized
//! one entry at a time (a vector without spare capacity, whose 16 bytes rather than 24
//! are part of every trie node, inline in its parent's hash table) and are searched
//! linearly (a few comparisons, no hashing); beyond that, in a boxed `HashMap` (keyed
//! SipHash, as before). Only subscribing and unsubscribing resize; lookups, the
//! per-message work, are as before.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept in a vector; one more moves them into a map.
const LINEAR_MAX: usize = 16;

/// (The map is boxed so that the whole stays the size of a boxed slice, 16 bytes.)
#[allow(clippy::box_collection)]
#[derive(Debug, Clone)]
pub enum SmallMap<K, V> {
    Few(Box<[(K, V)]>),
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Box::default())
    }
}

/// Appends `item`, reallocating `slice` to hold exactly one more.
fn push_one<T>(slice: &mut Box<[T]>, item: T) {
    let mut items = std::mem::take(slice).into_vec();
    items.reserve_exact(1);
    items.push(item);
    *slice = items.into_boxed_slice();
}

/// Removes the item at `index` (the last one takes its place), reallocating `slice` to
/// hold exactly what is left.
fn swap_remove_one<T>(slice: &mut Box<[T]>, index: usize) -> T {
    let mut items = std::mem::take(slice).into_vec();
    let item = items.swap_remove(index);
    *slice = items.into_boxed_slice();
    item
}

impl<K, V> SmallMap<K, V> {
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Few(few) => few.len(),
            SmallMap::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(few) => few
                .iter()
                .find(|(known, _)| known.borrow() == key)
                .map(|(_, value)| value),
            SmallMap::Many(many) => many.get(key),
        }
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Few(few) => few
                .iter_mut()
                .find(|(known, _)| known.borrow() == key)
                .map(|(_, value)| value),
            SmallMap::Many(many) => many.get_mut(key),
        }
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Adds or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(known) = self.get_mut(&key) {
            return Some(std::mem::replace(known, value));
        }
        self.push_new(key, value);
        None
    }

    /// The value under `key`, inserting `make_key()` with `make()` if there is none.
    pub fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let SmallMap::Few(few) = self {
            if few.len() >= LINEAR_MAX && !few.iter().any(|(known, _)| known.borrow() == key) {
                let many: HashMap<K, V> = std::mem::take(few).into_vec().into_iter().collect();
                *self = SmallMap::Many(Box::new(many));
            }
        }
        match self {
            SmallMap::Few(few) => {
                let index = match few.iter().position(|(known, _)| known.borrow() == key) {
                    Some(index) => index,
                    None => {
                        push_one(few, (make_key(), make()));
                        few.len() - 1
                    }
                };
                &mut few[index].1
            }
            SmallMap::Many(many) => many.entry(make_key()).or_insert_with(make),
        }
    }

    /// Adds a key known to be absent.
    fn push_new(&mut self, key: K, value: V) {
        match self {
            SmallMap::Few(few) if few.len() < LINEAR_MAX => push_one(few, (key, value)),
            SmallMap::Few(few) => {
                let mut many: HashMap<K, V> = std::mem::take(few).into_vec().into_iter().collect();
                many.insert(key, value);
                *self = SmallMap::Many(Box::new(many));
            }
            SmallMap::Many(many) => {
                many.insert(key, value);
            }
        }
    }

    /// Removes; returns the value removed. An emptied map gives its memory back.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let removed = match self {
            SmallMap::Few(few) => {
                let index = few.iter().position(|(known, _)| known.borrow() == key)?;
                Some(swap_remove_one(few, index).1)
            }
            SmallMap::Many(many) => many.remove(key),
        };
        if self.is_empty() {
            *self = SmallMap::default();
        }
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            SmallMap::Few(few) => (Some(few.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Many(many) => (None, Some(many.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Takes every value out, leaving the map empty (and unallocated).
    pub fn drain_values(&mut self) -> impl Iterator<Item = V> {
        let (few, many) = match std::mem::take(self) {
            SmallMap::Few(few) => (Some(few.into_vec().into_iter().map(|(_, v)| v)), None),
            SmallMap::Many(many) => (None, Some(many.into_values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl<K: Eq + Hash, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = SmallMap::default();
        for (key, value) in iter {
            map.insert(key, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_takes_one_slot() {
        let mut map: SmallMap<Box<str>, u32> = SmallMap::default();
        assert_eq!(map.insert("a/b".into(), 1), None);
        match &map {
            SmallMap::Few(few) => assert_eq!(few.len(), 1),
            SmallMap::Many(_) => panic!("one entry in a hash map"),
        }
        assert_eq!(map.get("a/b"), Some(&1));
        assert_eq!(std::mem::size_of::<SmallMap<Box<str>, u32>>(), 16);
    }

    #[test]
    fn behaves_as_a_hash_map_below_and_above_the_linear_limit() {
        let mut map: SmallMap<String, usize> = SmallMap::default();
        let mut model = HashMap::new();
        for round in 0..3 {
            for i in 0..(2 * LINEAR_MAX + round) {
                let key = format!("k{i}");
                assert_eq!(
                    map.insert(key.clone(), i + round),
                    model.insert(key, i + round)
                );
                let key = format!("g{i}");
                let made = *map.get_or_insert_with(key.as_str(), || key.clone(), || i);
                assert_eq!(made, *model.entry(key).or_insert(i));
            }
            for i in (0..(2 * LINEAR_MAX)).step_by(3) {
                let key = format!("k{i}");
                assert_eq!(map.remove(key.as_str()), model.remove(&key));
                assert_eq!(map.remove(key.as_str()), None);
                assert!(!map.contains_key(key.as_str()));
            }
            assert_eq!(map.len(), model.len());
            let mut listed: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected);
        }
        assert!(matches!(map, SmallMap::Many(_)));
        let mut drained: Vec<usize> = map.drain_values().collect();
        let mut expected: Vec<usize> = model.into_values().collect();
        drained.sort();
        expected.sort();
        assert_eq!(drained, expected);
        assert!(map.is_empty());
    }

    #[test]
    fn removing_the_last_entry_frees_the_list() {
        let mut map: SmallMap<Box<str>, ()> = [(Box::from("x"), ())].into_iter().collect();
        assert!(map.remove("x").is_some());
        assert!(map.is_empty());
        match &map {
            SmallMap::Few(few) => assert!(few.is_empty()),
            SmallMap::Many(_) => panic!("empty map kept as a hash map"),
        }
    }
}
