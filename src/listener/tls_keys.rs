//! AES-GCM record keys whose schedule a parked connection does not keep.
//!
//! ring's AES-GCM key (round keys and GHASH table, 544 bytes) is what makes a record key
//! large, and a connection holds two for as long as it lives. A `LazyKey` keeps the key's
//! bytes and expands them on first use; `KeyRegistry::release` drops the expansion when
//! the connection parks, and the next record after unparking expands them again
//! (100 to 200 ns per key, once per direction per wake-up).
//!
//! rustls creates a connection's record keys itself (at the end of the handshake, on a
//! key update) and gives no handle on them, so they are found this way: each key
//! created on a thread is noted in that thread's list, and the TLS stream, which runs
//! every rustls call synchronously on one thread, takes the list into its own registry
//! after each call (`listener::tls_stream`). A key noted by one connection and taken by
//! another (impossible while every call is followed by a take) would only be released
//! at the wrong moment and expanded again: nothing depends on it but memory.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ring::aead;

/// The longest AES key (AES-256).
const MAX_KEY_LEN: usize = 32;
/// Keys noted on a thread and not yet taken by a stream beyond which the oldest are
/// forgotten (they then stay expanded while their connection is parked).
const MAX_NOTED: usize = 64;

thread_local! {
    static NOTED: RefCell<Vec<Weak<LazyKey>>> = const { RefCell::new(Vec::new()) };
}

/// One direction's AES-GCM key: its bytes, and ring's expansion while in use.
pub(crate) struct LazyKey {
    bytes: [u8; MAX_KEY_LEN],
    len: u8,
    algorithm: &'static aead::Algorithm,
    expanded: Mutex<Option<Box<aead::LessSafeKey>>>,
}

impl LazyKey {
    /// A key of `algorithm` (AES-128-GCM or AES-256-GCM) from `bytes`, noted on this
    /// thread for the stream that runs the rustls call creating it.
    pub(crate) fn new(algorithm: &'static aead::Algorithm, bytes: &[u8]) -> Arc<LazyKey> {
        let len = bytes.len().min(MAX_KEY_LEN);
        let mut stored = [0u8; MAX_KEY_LEN];
        stored[..len].copy_from_slice(&bytes[..len]);
        let key = Arc::new(LazyKey {
            bytes: stored,
            len: len as u8,
            algorithm,
            expanded: Mutex::new(None),
        });
        NOTED.with_borrow_mut(|noted| {
            if noted.len() >= MAX_NOTED {
                noted.remove(0);
            }
            noted.push(Arc::downgrade(&key));
        });
        key
    }

    /// Runs `use_key` with ring's key, expanding it first if it is not.
    pub(crate) fn with<R>(&self, use_key: impl FnOnce(&aead::LessSafeKey) -> R) -> Option<R> {
        let mut expanded = self.expanded.lock().unwrap_or_else(PoisonError::into_inner);
        if expanded.is_none() {
            let unbound =
                aead::UnboundKey::new(self.algorithm, &self.bytes[..usize::from(self.len)]).ok()?;
            *expanded = Some(Box::new(aead::LessSafeKey::new(unbound)));
        }
        expanded.as_deref().map(use_key)
    }

    /// Drops the expansion; the next record expands the key again.
    fn release(&self) {
        let dropped = self
            .expanded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(dropped);
    }
}

impl Drop for LazyKey {
    fn drop(&mut self) {
        // Not left in freed memory (ring's own keys are not cleared; rustls's are).
        self.bytes.fill(0);
        std::hint::black_box(&mut self.bytes);
    }
}

/// The lazily expanded keys of one TLS connection (none for ChaCha20-Poly1305, whose
/// keys are small as they are).
#[derive(Default)]
pub(crate) struct KeyRegistry {
    keys: Vec<Weak<LazyKey>>,
}

impl KeyRegistry {
    /// Takes the keys created on this thread since the last take: the connection's own,
    /// as every rustls call of a stream is followed by one. Forgets keys rustls dropped
    /// (replaced by a key update).
    pub(crate) fn collect(&mut self) {
        NOTED.with_borrow_mut(|noted| {
            if noted.is_empty() {
                return;
            }
            self.keys.retain(|key| key.strong_count() > 0);
            self.keys.append(noted);
        });
    }

    /// Drops the expansion of every key of the connection: it is being parked.
    pub(crate) fn release(&mut self) {
        self.collect();
        self.keys.retain(|key| match key.upgrade() {
            Some(key) => {
                key.release();
                true
            }
            None => false,
        });
        self.keys.shrink_to_fit();
    }

    #[cfg(test)]
    fn expanded(&self) -> usize {
        self.keys
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|key| {
                key.expanded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_expands_on_use_and_is_released_with_its_registry() {
        let mut registry = KeyRegistry::default();
        let key = LazyKey::new(&aead::AES_256_GCM, &[3u8; 32]);
        let other = LazyKey::new(&aead::AES_128_GCM, &[4u8; 16]);
        registry.collect();
        assert_eq!(registry.keys.len(), 2);
        assert_eq!(registry.expanded(), 0);

        let seal = |key: &LazyKey| {
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
        };
        let sealed = seal(&key);
        seal(&other);
        assert_eq!(registry.expanded(), 2);
        registry.release();
        assert_eq!(registry.expanded(), 0);
        // Expanded again, the same key.
        assert_eq!(seal(&key), sealed);

        // Keys rustls dropped are forgotten at the next take.
        drop(other);
        let _replacement = LazyKey::new(&aead::AES_128_GCM, &[5u8; 16]);
        registry.collect();
        assert_eq!(registry.keys.len(), 2);
    }

    #[test]
    fn a_thread_notes_a_bounded_number_of_keys() {
        let keys: Vec<_> = (0..MAX_NOTED + 10)
            .map(|_| LazyKey::new(&aead::AES_128_GCM, &[1u8; 16]))
            .collect();
        let mut registry = KeyRegistry::default();
        registry.collect();
        assert_eq!(registry.keys.len(), MAX_NOTED);
        drop(keys);
    }
}
