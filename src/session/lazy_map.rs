//! A hash map allocated by its first insert.
//!
//! Every session holds a few maps that most clients never fill (incoming QoS 2 packet
//! ids, topic aliases, packet ids in flight towards a client that subscribes at QoS 0
//! only). An empty
//! `HashMap` is 48 bytes inline; this is 8 until something is inserted.
//!
//! Keys a client chooses (its packet ids, its topic aliases) are hashed with the
//! standard library's keyed SipHash; packet ids the broker itself allocates, looked up
//! for every QoS 1/2 message sent and acknowledged, with `OwnPacketIds`, a
//! multiplication: nobody outside can pick them to collide.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// (The box is the point: 8 bytes inline while empty, against an empty map's 48.)
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(super) struct LazyMap<K, V, S = RandomState>(Option<Box<HashMap<K, V, S>>>);

impl<K, V, S> Default for LazyMap<K, V, S> {
    fn default() -> Self {
        LazyMap(None)
    }
}

/// Hashes packet ids the broker allocated (from 1 upwards): Fibonacci hashing, whose
/// high bits (hashbrown's control bytes) and low bits (its bucket index) both spread
/// consecutive ids.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u16(u16::from(byte));
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The hasher of maps keyed by packet ids the broker allocated.
pub(super) type OwnPacketIds = BuildHasherDefault<PacketIdHasher>;

impl<K: Eq + Hash, V, S: BuildHasher + Default> LazyMap<K, V, S> {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|map| map.iter())
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

    #[test]
    fn own_packet_ids_spread_over_the_buckets() {
        let mut map: LazyMap<u16, u64, OwnPacketIds> = LazyMap::default();
        for id in 1..=u16::MAX {
            map.insert(id, u64::from(id));
        }
        for id in (1..=u16::MAX).step_by(2) {
            assert_eq!(map.remove(&id), Some(u64::from(id)));
        }
        assert_eq!(map.len(), usize::from(u16::MAX / 2));
        assert_eq!(map.get(&2), Some(&2));
        assert!(!map.contains_key(&3));
        // Consecutive ids differ in the high bits too (hashbrown's control bytes).
        let top = |id: u16| {
            let mut hasher = PacketIdHasher::default();
            hasher.write_u16(id);
            hasher.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (1..=256).map(top).collect();
        assert!(
            distinct.len() > 64,
            "{} of 128 control values",
            distinct.len()
        );
    }
}
