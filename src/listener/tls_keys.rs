//! AES-GCM record keys whose schedule a parked connection does not keep.
//!
//! ring's AES-GCM key (round keys and GHASH table, 544 bytes) is what makes a record key
//! large, and a connection holds two for as long as it lives. A `LazyKey` keeps only the
//! key's bytes and a number that no other key has; ring's expansion of it lives in the
//! `KeyRegistry` of the connection's TLS stream, made by the first record that needs
//! it, and dropped with the registry when the connection parks (a parked connection
//! keeps no registry). The next record after unparking expands the key again (100 to
//! 200 ns per key, once per direction per wake-up).
//!
//! rustls creates a connection's record keys itself and calls them with no handle on
//! the connection they belong to, so the registry is reached through the thread: the TLS
//! stream runs every rustls call synchronously on one thread, and moves its registry
//! into that thread's slot for the call (`KeyRegistry::run`, a move of three words and
//! back). A record finds its key's expansion there by the key's number: nothing is
//! locked, reference-counted or shared. The expansion is always the key's own (found by a number
//! no other key has, or made from the key's bytes), whichever registry holds it; a
//! record sealed or opened outside any stream's call (tests, a caller that does not
//! go through `run`) expands the key for that record alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead;

/// The longest AES key (AES-256).
const MAX_KEY_LEN: usize = 32;
/// Expansions one registry holds at most, the oldest dropped first. A connection uses two
/// keys at a time; a key replaced by a key update drops its own expansion.
const MAX_EXPANDED: usize = 4;

/// The number of the next key created.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Expansions by key number.
type Expansions = Vec<(u64, aead::LessSafeKey)>;

thread_local! {
    /// The registry of the stream whose rustls call runs on this thread, for the call.
    static ACTIVE: Cell<Option<Expansions>> = const { Cell::new(None) };
}

/// One direction's AES-GCM key: its bytes, expanded where it is used.
pub(crate) struct LazyKey {
    bytes: [u8; MAX_KEY_LEN],
    number: u64,
    len: u8,
    aes_256: bool,
}

impl LazyKey {
    /// A key of `algorithm` (AES-128-GCM or AES-256-GCM) from `bytes`.
    pub(crate) fn new(algorithm: &'static aead::Algorithm, bytes: &[u8]) -> LazyKey {
        let len = bytes.len().min(MAX_KEY_LEN);
        let mut stored = [0u8; MAX_KEY_LEN];
        stored[..len].copy_from_slice(&bytes[..len]);
        LazyKey {
            bytes: stored,
            number: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            len: len as u8,
            aes_256: algorithm == &aead::AES_256_GCM,
        }
    }

    /// ring's key, expanded from the bytes; none if they do not fit the algorithm.
    fn expand(&self) -> Option<aead::LessSafeKey> {
        let algorithm = if self.aes_256 {
            &aead::AES_256_GCM
        } else {
            &aead::AES_128_GCM
        };
        let unbound =
            aead::UnboundKey::new(algorithm, &self.bytes[..usize::from(self.len)]).ok()?;
        Some(aead::LessSafeKey::new(unbound))
    }

    /// Runs `use_key` with ring's key: the expansion in the registry of the call under
    /// way on this thread, made there first if it is not; without one, an expansion for
    /// this use alone.
    pub(crate) fn with<R>(&self, use_key: impl FnOnce(&aead::LessSafeKey) -> R) -> Option<R> {
        let Some(mut expansions) = ACTIVE.try_with(Cell::take).ok().flatten() else {
            return self.expand().map(|key| use_key(&key));
        };
        let at = match expansions
            .iter()
            .position(|(number, _)| *number == self.number)
        {
            Some(at) => Some(at),
            None => self.expand().map(|key| {
                if expansions.len() >= MAX_EXPANDED {
                    expansions.remove(0);
                }
                // Room for this one only (a vector would take four at first): an
                // expansion is 560 bytes, and a connection has two.
                expansions.reserve_exact(1);
                expansions.push((self.number, key));
                expansions.len() - 1
            }),
        };
        let result = at.map(|at| use_key(&expansions[at].1));
        // (Only gone while the thread exits.)
        let _ = ACTIVE.try_with(|active| active.set(Some(expansions)));
        result
    }
}

impl Drop for LazyKey {
    fn drop(&mut self) {
        // A key replaced by a key update is dropped during its stream's call: its
        // expansion goes with it.
        let _ = ACTIVE.try_with(|active| {
            if let Some(mut expansions) = active.take() {
                expansions.retain(|(number, _)| *number != self.number);
                active.set(Some(expansions));
            }
        });
        // Not left in freed memory (ring's own keys are not cleared; rustls's are).
        self.bytes.fill(0);
        std::hint::black_box(&mut self.bytes);
    }
}

/// The expansions of one TLS connection's AES-GCM keys (none for ChaCha20-Poly1305,
/// whose keys are small as they are), dropped with it when the connection parks.
#[derive(Default)]
pub(crate) struct KeyRegistry {
    expansions: Expansions,
}

impl KeyRegistry {
    /// Runs `call`, a rustls call of this registry's connection, with the registry where
    /// the connection's keys find it.
    pub(crate) fn run<R>(&mut self, call: impl FnOnce() -> R) -> R {
        let mine = std::mem::take(&mut self.expansions);
        // Nothing else is active on a thread between two calls; whatever is goes back
        // afterwards.
        let before = ACTIVE.try_with(|active| active.replace(Some(mine)));
        let result = call();
        if let Ok(Some(mine)) = ACTIVE.try_with(|active| active.replace(before.ok().flatten())) {
            self.expansions = mine;
        }
        result
    }

    /// How many keys are expanded.
    #[cfg(test)]
    pub(crate) fn expanded(&self) -> usize {
        self.expansions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &LazyKey) -> Vec<u8> {
        let mut data = b"record".to_vec();
        key.with(|ring_key| {
            ring_key.seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::empty(),
                &mut data,
            )
        })
        .expect("a valid key")
        .expect("sealed");
        data
    }

    /// The same record sealed by ring's own key.
    fn sealed_by_ring(algorithm: &'static aead::Algorithm, bytes: &[u8]) -> Vec<u8> {
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(algorithm, bytes).unwrap());
        let mut data = b"record".to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::empty(),
            &mut data,
        )
        .unwrap();
        data
    }

    #[test]
    fn a_key_expands_on_use_in_its_registry_and_is_released_with_it() {
        let mut registry = KeyRegistry::default();
        let key = LazyKey::new(&aead::AES_256_GCM, &[3u8; 32]);
        let other = LazyKey::new(&aead::AES_128_GCM, &[4u8; 16]);
        assert_eq!(registry.expanded(), 0);

        let (sealed, other_sealed) = registry.run(|| (seal(&key), seal(&other)));
        assert_eq!(sealed, sealed_by_ring(&aead::AES_256_GCM, &[3u8; 32]));
        assert_eq!(other_sealed, sealed_by_ring(&aead::AES_128_GCM, &[4u8; 16]));
        assert_eq!(registry.expanded(), 2);
        assert_eq!(registry.expansions.capacity(), 2);
        // Used again: the same expansions.
        assert_eq!(registry.run(|| seal(&key)), sealed);
        assert_eq!(registry.expanded(), 2);

        // Parked: the registry goes, and a new one comes with the next call.
        drop(registry);
        let mut registry = KeyRegistry::default();
        assert_eq!(registry.expanded(), 0);
        // Expanded again, the same key.
        assert_eq!(registry.run(|| seal(&key)), sealed);
        assert_eq!(registry.expanded(), 1);

        // A key dropped during a call (replaced by a key update) drops its expansion.
        registry.run(|| seal(&other));
        assert_eq!(registry.expanded(), 2);
        registry.run(|| drop(other));
        assert_eq!(registry.expanded(), 1);
        assert_eq!(registry.run(|| seal(&key)), sealed);
    }

    #[test]
    fn a_key_used_outside_a_registry_is_expanded_for_that_use_alone() {
        let key = LazyKey::new(&aead::AES_256_GCM, &[6u8; 32]);
        assert_eq!(seal(&key), sealed_by_ring(&aead::AES_256_GCM, &[6u8; 32]));
        // Nothing was left on the thread for the next call.
        let mut registry = KeyRegistry::default();
        registry.run(|| ());
        assert_eq!(registry.expanded(), 0);
        assert!(ACTIVE.with(Cell::take).is_none());
    }

    #[test]
    fn each_key_finds_its_own_expansion_in_any_registry() {
        // Two connections' keys with different bytes, used under each other's registries
        // (which streams never do): each record is sealed with its own key.
        let mut first = KeyRegistry::default();
        let mut second = KeyRegistry::default();
        let a = LazyKey::new(&aead::AES_256_GCM, &[1u8; 32]);
        let b = LazyKey::new(&aead::AES_256_GCM, &[2u8; 32]);
        let a_sealed = sealed_by_ring(&aead::AES_256_GCM, &[1u8; 32]);
        let b_sealed = sealed_by_ring(&aead::AES_256_GCM, &[2u8; 32]);
        assert_eq!(first.run(|| seal(&a)), a_sealed);
        assert_eq!(first.run(|| seal(&b)), b_sealed);
        assert_eq!(second.run(|| seal(&b)), b_sealed);
        assert_eq!(second.run(|| seal(&a)), a_sealed);
        assert_eq!((first.expanded(), second.expanded()), (2, 2));
        // A key whose bytes do not fit its algorithm is refused, not used.
        let bad = LazyKey::new(&aead::AES_256_GCM, &[1u8; 16]);
        assert!(first.run(|| bad.with(|_| ())).is_none());
        assert_eq!(first.expanded(), 2);
    }

    #[test]
    fn a_registry_holds_a_bounded_number_of_expansions() {
        let mut registry = KeyRegistry::default();
        let keys: Vec<_> = (0..MAX_EXPANDED as u8 + 3)
            .map(|i| LazyKey::new(&aead::AES_128_GCM, &[i; 16]))
            .collect();
        for key in &keys {
            registry.run(|| seal(key));
        }
        assert_eq!(registry.expanded(), MAX_EXPANDED);
        // The oldest went; the newest are there.
        let last = keys.last().expect("keys");
        assert!(registry
            .expansions
            .iter()
            .any(|(number, _)| *number == last.number));
        assert!(!registry
            .expansions
            .iter()
            .any(|(number, _)| *number == keys[0].number));
    }

    #[test]
    fn a_lazy_key_is_small() {
        assert!(std::mem::size_of::<LazyKey>() <= 48);
    }
}
