//! The cipher suites a TLS listener offers, and in which order it picks them
//! (`cipher_preference`): rustls's ring suites, TLS 1.3's and TLS 1.2's AES-GCM with
//! record keys a parked connection keeps small.
//!
//! Every connection holds two record keys (one per direction) for as long as it lives,
//! parked or not. ring's `LessSafeKey` is sized for its largest algorithm, AES-GCM's
//! round keys and GHASH table (544 bytes), whichever algorithm it holds: with ring's
//! suites a connection keeps about 1,100 bytes of keys. Here a ChaCha20-Poly1305 key
//! keeps its 32 bytes and the IV (a 44-byte box per direction instead of 560) and builds
//! ring's key on the stack for each record (a copy of the 32 bytes, nothing to expand:
//! 60 to 100 ns per record); an AES-GCM key keeps its bytes, and its stream keeps ring's
//! expansion of them only while the connection is not parked (`tls_keys`), in TLS 1.3
//! and in TLS 1.2 (whose
//! AES-GCM records carry an explicit nonce, built as rustls's ring suite builds it, so
//! that the records are the same). The record protection itself is
//! ring's, and everything around it (framing, sequence numbers, nonces from rustls's
//! `Nonce`, key updates, alerts) stays rustls's: this is a cipher for rustls's record
//! layer, the interface custom crypto providers implement, not a record layer of its own.
//!
//! `cipher_preference = "aes"` (the default) picks in the broker's order, AES-256-GCM
//! first, whatever the client's order, as Mosquitto (OpenSSL's server preference) does;
//! `"chacha20"` puts ChaCha20-Poly1305 first (a parked connection about 160 bytes
//! smaller, large records several times slower); `"client"` follows the client's order.
//! TLS 1.2 keeps ring's order unless `"client"` (AES-256-GCM first), and ring's
//! ChaCha20-Poly1305 suites with their AES-GCM-sized keys (no compact form: TLS 1.2
//! clients are few, and ring's order gives them AES-GCM when they offer it).

use std::sync::{Arc, LazyLock};

use ring::aead;
use rustls::crypto::cipher::{
    make_tls12_aad, make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv,
    KeyBlockShape, MessageDecrypter, MessageEncrypter, Nonce, OutboundOpaqueMessage,
    OutboundPlainMessage, PrefixedPayload, Tls12AeadAlgorithm, Tls13AeadAlgorithm,
    UnsupportedOperationError,
};
use rustls::crypto::CryptoProvider;
use rustls::{
    CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion,
    SupportedCipherSuite, Tls12CipherSuite, Tls13CipherSuite,
};

use rustls::crypto::ring::cipher_suite as ring_suites;

use super::tls_keys::LazyKey;
use crate::config::CipherPreference;

const CHACHA20_KEY_LEN: usize = 32;

/// TLS 1.3's ChaCha20-Poly1305 suite as ring's provider defines it, with the compact
/// record cipher.
static COMPACT_CHACHA20_SUITE: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    compact_suite(
        ring_suite(&ring_suites::TLS13_CHACHA20_POLY1305_SHA256),
        &CompactChaCha20,
    )
});

/// TLS 1.3's AES-GCM suites as ring's provider defines them, with keys expanded on use
/// and released when the connection parks.
static LAZY_AES_256_SUITE: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    compact_suite(
        ring_suite(&ring_suites::TLS13_AES_256_GCM_SHA384),
        &LAZY_AES_256_GCM,
    )
});
static LAZY_AES_128_SUITE: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    compact_suite(
        ring_suite(&ring_suites::TLS13_AES_128_GCM_SHA256),
        &LAZY_AES_128_GCM,
    )
});

static LAZY_AES_256_GCM: LazyAesGcm = LazyAesGcm {
    algorithm: &aead::AES_256_GCM,
    secrets: |key, iv| ConnectionTrafficSecrets::Aes256Gcm { key, iv },
};
static LAZY_AES_128_GCM: LazyAesGcm = LazyAesGcm {
    algorithm: &aead::AES_128_GCM,
    secrets: |key, iv| ConnectionTrafficSecrets::Aes128Gcm { key, iv },
};

/// TLS 1.2's AES-GCM suites as ring's provider defines them, with keys expanded on use
/// and released when the connection parks.
static LAZY_TLS12_ECDSA_AES_256: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    lazy_tls12_suite(
        &ring_suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        &LAZY_AES_256_GCM,
    )
});
static LAZY_TLS12_ECDSA_AES_128: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    lazy_tls12_suite(
        &ring_suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        &LAZY_AES_128_GCM,
    )
});
static LAZY_TLS12_RSA_AES_256: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    lazy_tls12_suite(
        &ring_suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        &LAZY_AES_256_GCM,
    )
});
static LAZY_TLS12_RSA_AES_128: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    lazy_tls12_suite(
        &ring_suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        &LAZY_AES_128_GCM,
    )
});

/// The lazily keyed replacement of one of ring's TLS 1.2 suites, if it is AES-GCM.
fn lazy_tls12(suite: &Tls12CipherSuite) -> Option<&'static Tls12CipherSuite> {
    use rustls::CipherSuite as Id;
    let lazy: &'static LazyLock<Tls12CipherSuite> = match suite.common.suite {
        Id::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => &LAZY_TLS12_ECDSA_AES_256,
        Id::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => &LAZY_TLS12_ECDSA_AES_128,
        Id::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => &LAZY_TLS12_RSA_AES_256,
        Id::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => &LAZY_TLS12_RSA_AES_128,
        _ => return None,
    };
    Some(LazyLock::force(lazy))
}

/// `ring_suite` (a TLS 1.2 suite of ring's provider) with `aead` as its record cipher.
fn lazy_tls12_suite(
    ring_suite: &SupportedCipherSuite,
    aead: &'static dyn Tls12AeadAlgorithm,
) -> Tls12CipherSuite {
    let SupportedCipherSuite::Tls12(ring_suite) = *ring_suite else {
        unreachable!("a TLS 1.2 suite")
    };
    Tls12CipherSuite {
        common: CipherSuiteCommon {
            suite: ring_suite.common.suite,
            hash_provider: ring_suite.common.hash_provider,
            confidentiality_limit: ring_suite.common.confidentiality_limit,
        },
        prf_provider: ring_suite.prf_provider,
        kx: ring_suite.kx,
        sign: ring_suite.sign,
        aead_alg: aead,
    }
}

fn ring_suite(suite: &SupportedCipherSuite) -> &'static Tls13CipherSuite {
    match *suite {
        SupportedCipherSuite::Tls13(suite) => suite,
        SupportedCipherSuite::Tls12(_) => unreachable!("a TLS 1.3 suite"),
    }
}

/// `ring_suite` with `aead` as its record cipher.
fn compact_suite(
    ring_suite: &'static Tls13CipherSuite,
    aead: &'static dyn Tls13AeadAlgorithm,
) -> Tls13CipherSuite {
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: ring_suite.common.suite,
            hash_provider: ring_suite.common.hash_provider,
            confidentiality_limit: ring_suite.common.confidentiality_limit,
        },
        hkdf_provider: ring_suite.hkdf_provider,
        aead_alg: aead,
        // Listeners speak TCP only.
        quic: None,
    }
}

/// The crypto provider of a listener: ring's, its TLS 1.3 suites and TLS 1.2 AES-GCM
/// suites replaced by ours, the TLS 1.3 ones ordered for `preference`. Returns it with rustls's
/// `ignore_client_order`.
pub fn provider(preference: CipherPreference) -> (CryptoProvider, bool) {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|suite| matches!(suite, SupportedCipherSuite::Tls12(_)));
    // TLS 1.2's AES-GCM suites with lazily expanded keys, in ring's order.
    for suite in &mut provider.cipher_suites {
        if let SupportedCipherSuite::Tls12(ring) = *suite {
            if let Some(lazy) = lazy_tls12(ring) {
                *suite = SupportedCipherSuite::Tls12(lazy);
            }
        }
    }
    let chacha20 = SupportedCipherSuite::Tls13(&COMPACT_CHACHA20_SUITE);
    let aes_256 = SupportedCipherSuite::Tls13(&LAZY_AES_256_SUITE);
    let aes_128 = SupportedCipherSuite::Tls13(&LAZY_AES_128_SUITE);
    let (tls13, ignore_client_order) = match preference {
        // ring's order.
        CipherPreference::Aes => ([aes_256, aes_128, chacha20], true),
        CipherPreference::Chacha20 => ([chacha20, aes_256, aes_128], true),
        CipherPreference::Client => ([aes_256, aes_128, chacha20], false),
    };
    provider.cipher_suites.splice(0..0, tls13);
    (provider, ignore_client_order)
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
        Box::new(RecordEncrypter(ChaCha20Key::new(&key), iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordDecrypter(ChaCha20Key::new(&key), iv))
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

/// AES-GCM for TLS 1.3 records, its key schedule expanded on use and released when the
/// connection parks (`tls_keys`).
struct LazyAesGcm {
    algorithm: &'static aead::Algorithm,
    secrets: fn(AeadKey, Iv) -> ConnectionTrafficSecrets,
}

impl LazyAesGcm {
    /// The key's bytes: rustls derives exactly `key_len()` of them.
    fn key_bytes<'a>(&self, key: &'a AeadKey) -> &'a [u8] {
        let bytes = key.as_ref();
        bytes.get(..self.algorithm.key_len()).unwrap_or(bytes)
    }
}

impl Tls13AeadAlgorithm for LazyAesGcm {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(RecordEncrypter(
            LazyKey::new(self.algorithm, self.key_bytes(&key)),
            iv,
        ))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(RecordDecrypter(
            LazyKey::new(self.algorithm, self.key_bytes(&key)),
            iv,
        ))
    }

    fn key_len(&self) -> usize {
        self.algorithm.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok((self.secrets)(key, iv))
    }

    fn fips(&self) -> bool {
        false
    }
}

/// TLS 1.2's AES-GCM (RFC 5288): a 4-byte salt from the key block and an 8-byte explicit
/// nonce sent before each record's ciphertext; the nonce is built as rustls's ring suite
/// builds it (the key block's 8 further bytes XORed with the sequence number), so that
/// records are the same as with ring's suite.
impl Tls12AeadAlgorithm for LazyAesGcm {
    fn encrypter(&self, key: AeadKey, iv: &[u8], extra: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Tls12GcmEncrypter(
            LazyKey::new(self.algorithm, self.key_bytes(&key)),
            tls12_gcm_iv(iv, extra),
        ))
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        let mut salt = [0u8; TLS12_GCM_SALT_LEN];
        // rustls hands over exactly `fixed_iv_len` bytes.
        let len = iv.len().min(TLS12_GCM_SALT_LEN);
        salt[..len].copy_from_slice(&iv[..len]);
        Box::new(Tls12GcmDecrypter(
            LazyKey::new(self.algorithm, self.key_bytes(&key)),
            salt,
        ))
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: self.algorithm.key_len(),
            fixed_iv_len: TLS12_GCM_SALT_LEN,
            explicit_nonce_len: TLS12_GCM_EXPLICIT_LEN,
        }
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: &[u8],
        explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok((self.secrets)(key, tls12_gcm_iv(iv, explicit)))
    }

    fn fips(&self) -> bool {
        false
    }
}

const TLS12_GCM_SALT_LEN: usize = 4;
const TLS12_GCM_EXPLICIT_LEN: usize = 8;
const GCM_TAG_LEN: usize = 16;
/// The largest plaintext a TLS record may carry (RFC 5246, 6.2.1).
const MAX_FRAGMENT_LEN: usize = 16_384;

/// The salt followed by the key block's explicit part: the starting point XORed with
/// each record's sequence number (rustls's `Nonce`).
fn tls12_gcm_iv(salt: &[u8], explicit: &[u8]) -> Iv {
    let mut iv = [0u8; 12];
    for (to, from) in iv.iter_mut().zip(
        salt.iter()
            .take(TLS12_GCM_SALT_LEN)
            .chain(explicit.iter().take(TLS12_GCM_EXPLICIT_LEN)),
    ) {
        *to = *from;
    }
    Iv::new(iv)
}

struct Tls12GcmEncrypter(LazyKey, Iv);

struct Tls12GcmDecrypter(LazyKey, [u8; TLS12_GCM_SALT_LEN]);

impl MessageEncrypter for Tls12GcmEncrypter {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        let nonce = Nonce::new(&self.1, seq).0;
        let aad = aead::Aad::from(make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len()));
        payload.extend_from_slice(&nonce[TLS12_GCM_SALT_LEN..]);
        payload.extend_from_chunks(&msg.payload);
        let tag = self
            .0
            .with(|key| {
                key.seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aad,
                    &mut payload.as_mut()[TLS12_GCM_EXPLICIT_LEN..],
                )
            })
            .ok_or(Error::EncryptError)?
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(tag.as_ref());
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + TLS12_GCM_EXPLICIT_LEN + GCM_TAG_LEN
    }
}

impl MessageDecrypter for Tls12GcmDecrypter {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &msg.payload;
        if payload.len() < TLS12_GCM_EXPLICIT_LEN + GCM_TAG_LEN {
            return Err(Error::DecryptError);
        }
        let mut nonce = [0u8; 12];
        nonce[..TLS12_GCM_SALT_LEN].copy_from_slice(&self.1);
        nonce[TLS12_GCM_SALT_LEN..].copy_from_slice(&payload[..TLS12_GCM_EXPLICIT_LEN]);
        let aad = aead::Aad::from(make_tls12_aad(
            seq,
            msg.typ,
            msg.version,
            payload.len() - TLS12_GCM_EXPLICIT_LEN - GCM_TAG_LEN,
        ));
        let payload = &mut msg.payload;
        let plain_len = self
            .0
            .with(|key| {
                key.open_within(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aad,
                    payload,
                    TLS12_GCM_EXPLICIT_LEN..,
                )
                .map(|plain| plain.len())
            })
            .ok_or(Error::DecryptError)?
            .map_err(|_| Error::DecryptError)?;
        if plain_len > MAX_FRAGMENT_LEN {
            return Err(Error::PeerSentOversizedRecord);
        }
        payload.truncate(plain_len);
        Ok(msg.into_plain_message())
    }
}

/// Where a record cipher finds ring's key for one record.
trait RecordKey: Send + Sync {
    fn with<R>(&self, use_key: impl FnOnce(&aead::LessSafeKey) -> R) -> Option<R>;
    fn tag_len(&self) -> usize;
}

/// A ChaCha20 key: its 32 bytes, ring's key built on the stack for each record (a copy
/// of the 32 bytes: there is no schedule to compute).
struct ChaCha20Key([u8; CHACHA20_KEY_LEN]);

impl ChaCha20Key {
    fn new(key: &AeadKey) -> ChaCha20Key {
        let mut bytes = [0u8; CHACHA20_KEY_LEN];
        // rustls derives exactly `key_len()` bytes.
        bytes.copy_from_slice(&key.as_ref()[..CHACHA20_KEY_LEN]);
        ChaCha20Key(bytes)
    }
}

impl RecordKey for ChaCha20Key {
    fn with<R>(&self, use_key: impl FnOnce(&aead::LessSafeKey) -> R) -> Option<R> {
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &self.0).ok()?;
        Some(use_key(&aead::LessSafeKey::new(unbound)))
    }

    fn tag_len(&self) -> usize {
        aead::CHACHA20_POLY1305.tag_len()
    }
}

impl Drop for ChaCha20Key {
    fn drop(&mut self) {
        // Not left in freed memory (ring's own keys are not cleared; rustls's are).
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

impl RecordKey for LazyKey {
    fn with<R>(&self, use_key: impl FnOnce(&aead::LessSafeKey) -> R) -> Option<R> {
        LazyKey::with(self, use_key)
    }

    fn tag_len(&self) -> usize {
        aead::AES_128_GCM.tag_len()
    }
}

fn nonce(iv: &Iv, seq: u64) -> aead::Nonce {
    aead::Nonce::assume_unique_for_key(Nonce::new(iv, seq).0)
}

struct RecordEncrypter<K>(K, Iv);

struct RecordDecrypter<K>(K, Iv);

impl<K: RecordKey> MessageEncrypter for RecordEncrypter<K> {
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
        self.0
            .with(|key| {
                key.seal_in_place_append_tag(
                    nonce(&self.1, seq),
                    aead::Aad::from(make_tls13_aad(total_len)),
                    &mut payload,
                )
            })
            .ok_or(Error::EncryptError)?
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
        payload_len + 1 + self.0.tag_len()
    }
}

impl<K: RecordKey> MessageDecrypter for RecordDecrypter<K> {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < self.0.tag_len() {
            return Err(Error::DecryptError);
        }
        let aad = aead::Aad::from(make_tls13_aad(payload.len()));
        let plain_len = self
            .0
            .with(|key| {
                key.open_in_place(nonce(&self.1, seq), aad, payload)
                    .map(|plain| plain.len())
            })
            .ok_or(Error::DecryptError)?
            .map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

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
    fn aes_first_in_the_server_order_by_default() {
        assert_eq!(CipherPreference::default(), CipherPreference::Aes);
        assert!(provider(CipherPreference::Aes).1);
        assert_eq!(
            tls13_order(CipherPreference::Aes),
            [
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
    }

    #[test]
    fn chacha20_first_in_the_server_order() {
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

    fn record(typ: ContentType, payload: &[u8]) -> OutboundPlainMessage<'_> {
        OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_3,
            payload: payload.into(),
        }
    }

    /// Opens `sealed` (a whole record) with `decrypter`, or says why not.
    fn open(
        decrypter: &mut dyn MessageDecrypter,
        sealed: &mut [u8],
        seq: u64,
    ) -> Result<(ContentType, Vec<u8>), Error> {
        let opened = decrypter.decrypt(
            InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                &mut sealed[5..],
            ),
            seq,
        )?;
        Ok((opened.typ, opened.payload.to_vec()))
    }

    /// Our record cipher against ring's own, both ways: what one seals the other opens; a
    /// changed byte or the wrong sequence number does not open.
    fn interoperates(ours: &dyn Tls13AeadAlgorithm, theirs: &dyn Tls13AeadAlgorithm) {
        let key_len = ours.key_len();
        assert_eq!(key_len, theirs.key_len());
        // rustls's public constructor makes 32-byte keys only.
        assert_eq!(key_len, 32);
        let key = || AeadKey::from([7u8; 32]);
        let iv = || Iv::new([9u8; 12]);
        let mut our_encrypter = ours.encrypter(key(), iv());
        let mut their_decrypter = theirs.decrypter(key(), iv());
        for (seq, text) in [(0u64, &b"first"[..]), (1, b""), (u64::MAX - 1, b"last")] {
            let mut sealed = our_encrypter
                .encrypt(record(ContentType::ApplicationData, text), seq)
                .unwrap()
                .encode();
            assert_eq!(
                open(their_decrypter.as_mut(), &mut sealed, seq).unwrap(),
                (ContentType::ApplicationData, text.to_vec())
            );
        }

        let mut our_decrypter = ours.decrypter(key(), iv());
        let mut their_encrypter = theirs.encrypter(key(), iv());
        let sealed = their_encrypter
            .encrypt(record(ContentType::Handshake, b"key update"), 5)
            .unwrap()
            .encode();
        assert_eq!(
            open(our_decrypter.as_mut(), &mut sealed.clone(), 5).unwrap(),
            (ContentType::Handshake, b"key update".to_vec())
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open(ours.decrypter(key(), iv()).as_mut(), &mut tampered, 5).is_err());
        assert!(open(ours.decrypter(key(), iv()).as_mut(), &mut sealed.clone(), 6).is_err());
    }

    /// AES-128-GCM (16-byte keys) is checked by handshakes with rustls clients
    /// (`tests/tls_footprint.rs`).
    #[test]
    fn records_interoperate_with_rings_suites() {
        for (ours, theirs) in [
            (
                &COMPACT_CHACHA20_SUITE,
                &ring_suites::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (&LAZY_AES_256_SUITE, &ring_suites::TLS13_AES_256_GCM_SHA384),
        ] {
            assert_eq!(ours.common.suite, theirs.suite());
            interoperates(ours.aead_alg, ring_suite(theirs).aead_alg);
        }
    }

    /// Our TLS 1.2 AES-GCM records against ring's, both ways, from the same key block:
    /// the same explicit nonces, what one seals the other opens; a changed byte or the
    /// wrong sequence number does not open.
    #[test]
    fn tls12_records_interoperate_with_rings_suite() {
        let SupportedCipherSuite::Tls12(ring) =
            ring_suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        else {
            unreachable!()
        };
        let ours = LAZY_TLS12_ECDSA_AES_256.aead_alg;
        let theirs = ring.aead_alg;
        assert_eq!(ours.key_block_shape().enc_key_len, 32);
        assert_eq!(
            ours.key_block_shape().fixed_iv_len,
            theirs.key_block_shape().fixed_iv_len
        );
        assert_eq!(
            ours.key_block_shape().explicit_nonce_len,
            theirs.key_block_shape().explicit_nonce_len
        );
        let key = || AeadKey::from([7u8; 32]);
        let salt = [1u8, 2, 3, 4];
        let explicit = [5u8, 6, 7, 8, 9, 10, 11, 12];
        let open = |decrypter: &mut dyn MessageDecrypter, sealed: &mut [u8], seq| {
            decrypter
                .decrypt(
                    InboundOpaqueMessage::new(
                        ContentType::ApplicationData,
                        ProtocolVersion::TLSv1_2,
                        &mut sealed[5..],
                    ),
                    seq,
                )
                .map(|plain| plain.payload.to_vec())
        };
        let tls12 = |payload: &'static [u8]| OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: payload.into(),
        };
        for (seq, text) in [(0u64, &b"first"[..]), (1, b""), (u64::MAX - 1, b"last")] {
            let mut our_encrypter = ours.encrypter(key(), &salt, &explicit);
            let mut their_encrypter = theirs.encrypter(key(), &salt, &explicit);
            let mut ours_sealed = our_encrypter.encrypt(tls12(text), seq).unwrap().encode();
            let theirs_sealed = their_encrypter.encrypt(tls12(text), seq).unwrap().encode();
            assert_eq!(ours_sealed, theirs_sealed);
            let mut their_decrypter = theirs.decrypter(key(), &salt);
            assert_eq!(
                open(their_decrypter.as_mut(), &mut ours_sealed, seq).unwrap(),
                text
            );
            let mut our_decrypter = ours.decrypter(key(), &salt);
            assert_eq!(
                open(our_decrypter.as_mut(), &mut theirs_sealed.clone(), seq).unwrap(),
                text
            );
            let mut tampered = theirs_sealed.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert!(open(ours.decrypter(key(), &salt).as_mut(), &mut tampered, seq).is_err());
            assert!(open(
                ours.decrypter(key(), &salt).as_mut(),
                &mut theirs_sealed.clone(),
                seq ^ 1
            )
            .is_err());
        }
        // Too short for an explicit nonce and a tag.
        assert!(open(
            ours.decrypter(key(), &salt).as_mut(),
            &mut [23u8, 3, 3, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            0
        )
        .is_err());
    }

    #[test]
    fn tls12_aes_gcm_suites_are_replaced_in_rings_order() {
        for preference in [
            CipherPreference::Aes,
            CipherPreference::Chacha20,
            CipherPreference::Client,
        ] {
            let ours = provider(preference).0;
            let ring = rustls::crypto::ring::default_provider();
            let tls12 = |provider: &CryptoProvider| {
                provider
                    .cipher_suites
                    .iter()
                    .filter_map(|suite| match suite {
                        SupportedCipherSuite::Tls12(suite) => Some(*suite),
                        SupportedCipherSuite::Tls13(_) => None,
                    })
                    .collect::<Vec<_>>()
            };
            let (ours, ring) = (tls12(&ours), tls12(&ring));
            assert_eq!(
                ours.iter().map(|s| s.common.suite).collect::<Vec<_>>(),
                ring.iter().map(|s| s.common.suite).collect::<Vec<_>>()
            );
            for (ours, ring) in ours.iter().zip(&ring) {
                // Ours unless ChaCha20-Poly1305, which keeps ring's.
                let is_aes = lazy_tls12(ring).is_some();
                assert_eq!(
                    std::ptr::eq(*ours, *ring),
                    !is_aes,
                    "{:?}",
                    ring.common.suite
                );
            }
            assert_eq!(ours.iter().filter(|s| lazy_tls12(s).is_some()).count(), 4);
        }
    }

    #[test]
    fn a_record_key_is_small() {
        assert!(std::mem::size_of::<RecordEncrypter<ChaCha20Key>>() <= 48);
        assert!(std::mem::size_of::<RecordDecrypter<LazyKey>>() <= 64);
    }
}
