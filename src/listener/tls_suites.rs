//! The cipher suites a TLS listener offers, and in which order it picks them
//! (`cipher_preference`): rustls's ring suites, with TLS 1.3's ChaCha20-Poly1305 in a
//! compact form.
//!
//! Every connection holds two record keys (one per direction) for as long as it lives,
//! parked or not. ring's `LessSafeKey` is sized for its largest algorithm, AES-GCM's
//! round keys and GHASH table (544 bytes), whichever algorithm it holds, so with ring's
//! suites a connection keeps about 1,100 bytes of keys even when it negotiated
//! ChaCha20-Poly1305, whose key is 32 bytes. `CompactChaCha20` keeps only those 32
//! bytes and the IV (a 44-byte box per direction instead of 560) and builds ring's key
//! on the stack for each record, which for ChaCha20 is a copy of the 32 bytes, nothing
//! to expand, unlike AES (measured: 60 to 100 ns per record, BENCHMARKS.md). The record protection itself is ring's ChaCha20-Poly1305, and
//! everything around it (framing, sequence numbers, nonces from rustls's `Nonce`, key
//! updates, alerts) stays rustls's: this is a cipher for rustls's record layer, the
//! interface custom crypto providers implement, not a record layer of its own.
//!
//! `cipher_preference = "chacha20"` (the default) picks ChaCha20-Poly1305 for every
//! TLS 1.3 client that offers it, whatever its own order (as Mosquitto, with OpenSSL's
//! server preference, picks its own first choice); `"client"` follows the client's order
//! (rustls and OpenSSL clients put AES-GCM first), for throughput where the memory of
//! idle connections does not matter. TLS 1.2 keeps ring's suites (no compact form): with
//! `"chacha20"` a TLS 1.2 client gets the first of ring's that it offers (AES-GCM).

use std::sync::{Arc, LazyLock};

use ring::aead;
use rustls::crypto::cipher::{
    make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::crypto::CryptoProvider;
use rustls::{
    CipherSuite, CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion,
    SupportedCipherSuite, Tls13CipherSuite,
};

use crate::config::CipherPreference;

const CHACHA20_KEY_LEN: usize = 32;

/// TLS 1.3's ChaCha20-Poly1305 suite as ring's provider defines it, with the compact
/// record cipher.
static COMPACT_CHACHA20_SUITE: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    let ring_suite = ring_chacha20_suite();
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            hash_provider: ring_suite.common.hash_provider,
            confidentiality_limit: ring_suite.common.confidentiality_limit,
        },
        hkdf_provider: ring_suite.hkdf_provider,
        aead_alg: &CompactChaCha20,
        // Listeners speak TCP only.
        quic: None,
    }
});

fn ring_chacha20_suite() -> &'static Tls13CipherSuite {
    match rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256 {
        SupportedCipherSuite::Tls13(suite) => suite,
        SupportedCipherSuite::Tls12(_) => unreachable!("a TLS 1.3 suite"),
    }
}

/// The crypto provider of a listener: ring's, its TLS 1.3 ChaCha20-Poly1305 replaced
/// by the compact one, ordered for `preference`. Returns it with rustls's
/// `ignore_client_order`.
pub fn provider(preference: CipherPreference) -> (CryptoProvider, bool) {
    let mut provider = rustls::crypto::ring::default_provider();
    let compact = SupportedCipherSuite::Tls13(&COMPACT_CHACHA20_SUITE);
    provider
        .cipher_suites
        .retain(|suite| suite.suite() != CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    match preference {
        CipherPreference::Chacha20 => {
            provider.cipher_suites.insert(0, compact);
            (provider, true)
        }
        CipherPreference::Client => {
            // After the other TLS 1.3 suites, where ring's provider has it.
            let tls13 = provider
                .cipher_suites
                .iter()
                .take_while(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)))
                .count();
            provider.cipher_suites.insert(tls13, compact);
            (provider, false)
        }
    }
}

/// `Arc` of `provider(preference)`, for the builders that take one.
pub fn provider_arc(preference: CipherPreference) -> (Arc<CryptoProvider>, bool) {
    let (provider, ignore_client_order) = provider(preference);
    (Arc::new(provider), ignore_client_order)
}

/// ChaCha20-Poly1305 for TLS 1.3 records, keeping the key's 32 bytes only.
struct CompactChaCha20;

impl Tls13AeadAlgorithm for CompactChaCha20 {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(ChaCha20Encrypter(RecordKey::new(&key, iv)))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(ChaCha20Decrypter(RecordKey::new(&key, iv)))
    }

    fn key_len(&self) -> usize {
        CHACHA20_KEY_LEN
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }

    fn fips(&self) -> bool {
        false
    }
}

/// One direction's key and IV.
struct RecordKey {
    key: [u8; CHACHA20_KEY_LEN],
    iv: Iv,
}

impl RecordKey {
    fn new(key: &AeadKey, iv: Iv) -> RecordKey {
        let mut bytes = [0u8; CHACHA20_KEY_LEN];
        // rustls derives exactly `key_len()` bytes.
        bytes.copy_from_slice(&key.as_ref()[..CHACHA20_KEY_LEN]);
        RecordKey { key: bytes, iv }
    }

    /// ring's key for one record. For ChaCha20 this copies the 32 bytes: there is no
    /// schedule to compute.
    fn ring_key(&self) -> Option<aead::LessSafeKey> {
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &self.key)
            .ok()
            .map(aead::LessSafeKey::new)
    }

    fn nonce(&self, seq: u64) -> aead::Nonce {
        aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0)
    }
}

impl Drop for RecordKey {
    fn drop(&mut self) {
        // Not left in freed memory (ring's own keys are not cleared; rustls's are).
        self.key.fill(0);
        std::hint::black_box(&mut self.key);
    }
}

struct ChaCha20Encrypter(RecordKey);

struct ChaCha20Decrypter(RecordKey);

impl MessageEncrypter for ChaCha20Encrypter {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        // TLS 1.3's inner plaintext: the data, then its real content type.
        payload.extend_from_slice(&[u8::from(msg.typ)]);
        let key = self.0.ring_key().ok_or(Error::EncryptError)?;
        key.seal_in_place_append_tag(
            self.0.nonce(seq),
            aead::Aad::from(make_tls13_aad(total_len)),
            &mut payload,
        )
        .map_err(|_| Error::EncryptError)?;
        // Every TLS 1.3 record is sent as application data under version 1.2 (RFC 8446,
        // 5.1).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + aead::CHACHA20_POLY1305.tag_len()
    }
}

impl MessageDecrypter for ChaCha20Decrypter {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < aead::CHACHA20_POLY1305.tag_len() {
            return Err(Error::DecryptError);
        }
        let key = self.0.ring_key().ok_or(Error::DecryptError)?;
        let plain_len = key
            .open_in_place(
                self.0.nonce(seq),
                aead::Aad::from(make_tls13_aad(payload.len())),
                payload,
            )
            .map_err(|_| Error::DecryptError)?
            .len();
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls13_order(preference: CipherPreference) -> Vec<CipherSuite> {
        provider(preference)
            .0
            .cipher_suites
            .iter()
            .filter(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)))
            .map(SupportedCipherSuite::suite)
            .collect()
    }

    #[test]
    fn chacha20_first_and_server_order_by_default() {
        assert_eq!(CipherPreference::default(), CipherPreference::Chacha20);
        assert!(provider(CipherPreference::Chacha20).1);
        assert_eq!(
            tls13_order(CipherPreference::Chacha20),
            [
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
            ]
        );
    }

    #[test]
    fn client_preference_keeps_rings_order() {
        assert!(!provider(CipherPreference::Client).1);
        assert_eq!(
            tls13_order(CipherPreference::Client),
            [
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        // TLS 1.2 unchanged, after TLS 1.3.
        let ring = rustls::crypto::ring::default_provider();
        let ours = provider(CipherPreference::Client).0;
        assert_eq!(ring.cipher_suites.len(), ours.cipher_suites.len());
    }

    /// The compact cipher's records are ring's: what one seals, ring's own
    /// ChaCha20-Poly1305 decrypter of rustls's ring provider opens, and the reverse.
    #[test]
    fn records_interoperate_with_rings_suite() {
        let key_bytes = [7u8; 32];
        let iv = [9u8; 12];
        let ring_aead = ring_chacha20_suite().aead_alg;
        let mut ours = CompactChaCha20.encrypter(AeadKey::from(key_bytes), Iv::new(iv));
        let mut theirs = ring_aead.decrypter(AeadKey::from(key_bytes), Iv::new(iv));
        for (seq, text) in [(0u64, &b"first"[..]), (1, b""), (u64::MAX - 1, b"last")] {
            let plain = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_3,
                payload: text.into(),
            };
            let mut sealed = ours.encrypt(plain, seq).unwrap().encode();
            let opened = theirs
                .decrypt(
                    InboundOpaqueMessage::new(
                        ContentType::ApplicationData,
                        ProtocolVersion::TLSv1_2,
                        &mut sealed[5..],
                    ),
                    seq,
                )
                .unwrap();
            assert_eq!(opened.payload, text);
            assert_eq!(opened.typ, ContentType::ApplicationData);
        }

        let mut ours = CompactChaCha20.decrypter(AeadKey::from(key_bytes), Iv::new(iv));
        let mut theirs = ring_aead.encrypter(AeadKey::from(key_bytes), Iv::new(iv));
        let plain = OutboundPlainMessage {
            typ: ContentType::Handshake,
            version: ProtocolVersion::TLSv1_3,
            payload: (&b"key update"[..]).into(),
        };
        let mut sealed = theirs.encrypt(plain, 5).unwrap().encode();
        let mut tampered = sealed.clone();
        let opened = ours
            .decrypt(
                InboundOpaqueMessage::new(
                    ContentType::ApplicationData,
                    ProtocolVersion::TLSv1_2,
                    &mut sealed[5..],
                ),
                5,
            )
            .unwrap();
        assert_eq!(opened.payload, b"key update");
        assert_eq!(opened.typ, ContentType::Handshake);
        // A changed byte, or the wrong sequence number, does not open.
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let open = |bytes: &mut [u8], seq| {
            CompactChaCha20
                .decrypter(AeadKey::from(key_bytes), Iv::new(iv))
                .decrypt(
                    InboundOpaqueMessage::new(
                        ContentType::ApplicationData,
                        ProtocolVersion::TLSv1_2,
                        bytes,
                    ),
                    seq,
                )
                .is_err()
        };
        assert!(open(&mut tampered[5..], 5));
        let mut sealed = theirs
            .encrypt(
                OutboundPlainMessage {
                    typ: ContentType::ApplicationData,
                    version: ProtocolVersion::TLSv1_3,
                    payload: (&b"x"[..]).into(),
                },
                6,
            )
            .unwrap()
            .encode();
        assert!(open(&mut sealed[5..], 7));
    }

    #[test]
    fn a_record_key_is_small() {
        assert!(std::mem::size_of::<ChaCha20Encrypter>() <= 48);
        assert!(std::mem::size_of::<ChaCha20Decrypter>() <= 48);
    }
}
