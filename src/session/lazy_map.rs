//! A hash map allocated by its first insert.
//!
//! Every session holds a few maps that most clients never fill (incoming QoS 2 packet
//! ids, topic aliases, packet ids in flight towards a client that subscribes at QoS 0
//! only). An empty
//! `HashMap` is 48 bytes inline; this is 8 until something is inserted.

use std::collections::HashMap;
use std::hash::Hash;

/// (The box is the point: 8 bytes inline while empty, against an empty map's 48.)
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(super) struct LazyMap<K, V>(Option<Box<HashMap<K, V>>>);

impl<K, V> Default for LazyMap<K, V> {
    fn default() -> Self {
        LazyMap(None)
    }
}

impl<K: Eq + Hash, V> LazyMap<K, V> {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.0.as_ref()?.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.0.as_mut()?.get_mut(key)
    }

    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The previous value, as `HashMap::insert`.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0.get_or_insert_with(Box::default).insert(key, value)
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        self.0.as_mut()?.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_and_allocates_on_first_insert() {
        let mut map: LazyMap<u16, u64> = LazyMap::default();
        assert!(map.0.is_none());
        assert_eq!(map.len(), 0);
        assert_eq!(map.remove(&1), None);
        assert!(!map.contains_key(&1));
        assert!(map.0.is_none(), "reads and removals allocate nothing");
        assert_eq!(map.insert(1, 10), None);
        assert_eq!(map.insert(1, 11), Some(10));
        assert_eq!(map.insert(2, 20), None);
        assert_eq!(map.get(&1), Some(&11));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove(&1), Some(11));
        assert!(!map.contains_key(&1));
        assert_eq!(map.len(), 1);
        assert_eq!(std::mem::size_of::<LazyMap<u16, u64>>(), 8);
    }
}
