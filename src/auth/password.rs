//! The password file: `username:hash` lines, compatible with `mosquitto_passwd`.
//!
//! Three hash formats are read:
//! - `$7$<iterations>$<b64 salt>$<b64 hash>`: PBKDF2-HMAC-SHA512 (mosquitto 2's default);
//! - `$6$<b64 salt>$<b64 hash>`: SHA-512 of password then salt (older mosquitto);
//! - `$scram-sha-256$<iterations>$<b64 salt>$<b64 StoredKey>$<b64 ServerKey>`: our own
//!   entries (RFC 5802 salted credentials), which verify plain passwords and also serve
//!   SCRAM-SHA-256 enhanced authentication without the broker knowing the password.
//!
//! Every comparison of secrets is constant time, and an unknown user costs the same key
//! derivation as a known one, so timing reveals neither.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use subtle::ConstantTimeEq;

/// Iterations for new `$scram-sha-256$` entries: about a few milliseconds per check,
/// above RFC 7677's minimum of 4096.
pub const DEFAULT_ITERATIONS: u32 = 10_000;
/// Upper bound on iterations read from a file, so a corrupt entry cannot stall the
/// broker for minutes per CONNECT.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length of new entries, and of the salts SCRAM makes up for unknown users.
pub const SALT_LEN: usize = 16;

/// Why a password file was rejected. Never contains hash material.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("{path}: cannot read the password file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Line { line: usize, message: &'static str },
}

/// SCRAM-SHA-256 salted credentials of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Pbkdf2Sha512 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Scram(ScramCredentials),
}

/// A parsed password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    /// What an unknown user's password is checked against: an entry of the kind, iteration
    /// count and salt length most of the file's entries have, so checking an unknown user
    /// costs what checking a known one does, whatever hash the file uses.
    decoy: Hash,
    /// The iteration count most `$scram-sha-256$` entries use (`DEFAULT_ITERATIONS` when
    /// there are none): what SCRAM tells an unknown user.
    scram_iterations: u32,
}

impl Default for PasswordFile {
    fn default() -> PasswordFile {
        PasswordFile {
            users: HashMap::new(),
            decoy: default_decoy(),
            scram_iterations: DEFAULT_ITERATIONS,
        }
    }
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PasswordFile::parse(&text)
    }

    /// Parses the text of a password file. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut users = HashMap::new();
        let mut costs = CostCount::default();
        let mut scram_iterations = CostCount::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message| PasswordFileError::Line {
                line: index + 1,
                message,
            };
            let (user, hash) = line.split_once(':').ok_or(fail("expected username:hash"))?;
            if user.is_empty() {
                return Err(fail("empty username"));
            }
            let hash = parse_hash(hash).map_err(fail)?;
            costs.add(decoy_like(&hash));
            if let Hash::Scram(credentials) = &hash {
                scram_iterations.add(credentials.iterations);
            }
            users.insert(user.to_string(), hash);
        }
        Ok(PasswordFile {
            users,
            decoy: costs.most_common().unwrap_or_else(default_decoy),
            scram_iterations: scram_iterations.most_common().unwrap_or(DEFAULT_ITERATIONS),
        })
    }

    /// The iteration count SCRAM-SHA-256 announces for a user without SCRAM credentials,
    /// so that the answer looks like a known user's.
    pub fn scram_iterations(&self) -> u32 {
        self.scram_iterations
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `username`'s. Unknown users take as long as known ones.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => verify_hash(hash, password),
            None => {
                // Same work as a real check, then refuse.
                let _ = verify_hash(&self.decoy, password);
                false
            }
        }
    }

    /// The SCRAM credentials of `username`, if its entry has them.
    pub fn scram(&self, username: &str) -> Option<&ScramCredentials> {
        match self.users.get(username)? {
            Hash::Scram(credentials) => Some(credentials),
            _ => None,
        }
    }
}

fn parse_hash(text: &str) -> Result<Hash, &'static str> {
    let fields: Vec<&str> = text.split('$').collect();
    let decode = |field: &str| BASE64.decode(field).map_err(|_| "invalid base64 in hash");
    let iterations = |field: &str| -> Result<u32, &'static str> {
        match field.parse::<u32>() {
            Ok(n) if (1..=MAX_ITERATIONS).contains(&n) => Ok(n),
            _ => Err("invalid iteration count"),
        }
    };
    match fields.as_slice() {
        ["", "6", salt, hash] => Ok(Hash::Sha512 {
            salt: decode(salt)?,
            hash: expect_len(decode(hash)?, 64)?,
        }),
        ["", "7", rounds, salt, hash] => Ok(Hash::Pbkdf2Sha512 {
            iterations: NonZeroU32::new(iterations(rounds)?).ok_or("invalid iteration count")?,
            salt: decode(salt)?,
            hash: expect_len(decode(hash)?, 64)?,
        }),
        ["", "scram-sha-256", rounds, salt, stored, server] => Ok(Hash::Scram(ScramCredentials {
            iterations: iterations(rounds)?,
            salt: decode(salt)?,
            stored_key: expect_len(decode(stored)?, 32)?,
            server_key: expect_len(decode(server)?, 32)?,
        })),
        _ => Err("unknown hash format (expected $6$, $7$ or $scram-sha-256$)"),
    }
}

fn expect_len(bytes: Vec<u8>, len: usize) -> Result<Vec<u8>, &'static str> {
    if bytes.len() == len {
        Ok(bytes)
    } else {
        Err("hash has the wrong length")
    }
}

fn verify_hash(hash: &Hash, password: &[u8]) -> bool {
    match hash {
        Hash::Sha512 { salt, hash } => {
            let mut context = digest::Context::new(&digest::SHA512);
            context.update(password);
            context.update(salt);
            bool::from(context.finish().as_ref().ct_eq(hash))
        }
        Hash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        } => pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA512,
            *iterations,
            salt,
            password,
            hash,
        )
        .is_ok(),
        Hash::Scram(credentials) => {
            let derived =
                ScramCredentials::derive(password, &credentials.salt, credentials.iterations);
            bool::from(derived.stored_key.ct_eq(&credentials.stored_key))
        }
    }
}

/// What an unknown user is checked against in a file without entries: an entry as
/// `fleetmq passwd` writes it.
fn default_decoy() -> Hash {
    decoy_like(&Hash::Scram(ScramCredentials {
        iterations: DEFAULT_ITERATIONS,
        salt: vec![0; SALT_LEN],
        stored_key: vec![0; 32],
        server_key: vec![0; 32],
    }))
}

/// An entry that costs what `hash` costs to check (same kind, iterations and salt
/// length) and that no password matches in practice (all-zero hash).
fn decoy_like(hash: &Hash) -> Hash {
    match hash {
        Hash::Sha512 { salt, hash } => Hash::Sha512 {
            salt: vec![0; salt.len()],
            hash: vec![0; hash.len()],
        },
        Hash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        } => Hash::Pbkdf2Sha512 {
            iterations: *iterations,
            salt: vec![0; salt.len()],
            hash: vec![0; hash.len()],
        },
        Hash::Scram(credentials) => Hash::Scram(ScramCredentials {
            iterations: credentials.iterations,
            salt: vec![0; credentials.salt.len()],
            stored_key: vec![0; credentials.stored_key.len()],
            server_key: vec![0; credentials.server_key.len()],
        }),
    }
}

/// Counts equal values, to find the most common one (the first seen wins a tie, so the
/// result depends only on the file). A file has few distinct kinds of entry, so a list
/// is enough.
struct CostCount<T> {
    seen: Vec<(T, usize)>,
}

impl<T> Default for CostCount<T> {
    fn default() -> Self {
        CostCount { seen: Vec::new() }
    }
}

impl<T: PartialEq> CostCount<T> {
    fn add(&mut self, value: T) {
        match self.seen.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, count)) => *count += 1,
            None => self.seen.push((value, 1)),
        }
    }

    fn most_common(self) -> Option<T> {
        let mut best: Option<(T, usize)> = None;
        for (value, count) in self.seen {
            if best.as_ref().is_none_or(|(_, most)| count > *most) {
                best = Some((value, count));
            }
        }
        best.map(|(value, _)| value)
    }
}

impl ScramCredentials {
    /// RFC 5802: SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i);
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramCredentials {
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            password,
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        ScramCredentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: stored_key.as_ref().to_vec(),
            server_key: server_key.as_ref().to_vec(),
        }
    }
}

/// A new `$scram-sha-256$` hash for `password` with a fresh random salt.
pub fn new_entry_hash(
    password: &[u8],
    iterations: u32,
) -> Result<String, ring::error::Unspecified> {
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new().fill(&mut salt)?;
    let credentials = ScramCredentials::derive(password, &salt, iterations);
    Ok(format!(
        "$scram-sha-256${}${}${}${}",
        credentials.iterations,
        BASE64.encode(&credentials.salt),
        BASE64.encode(&credentials.stored_key),
        BASE64.encode(&credentials.server_key)
    ))
}

/// `text` with `username`'s line replaced by `username:hash` (appended if absent).
/// Other lines, comments included, are kept as they are.
pub fn set_user(text: &str, username: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + hash.len() + username.len() + 2);
    let mut replaced = false;
    for line in text.lines() {
        if line_user(line) == Some(username) {
            if !replaced {
                out.push_str(&format!("{username}:{hash}\n"));
                replaced = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("{username}:{hash}\n"));
    }
    out
}

/// `text` without `username`'s line; `None` if the user was not there.
pub fn delete_user(text: &str, username: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line_user(line) == Some(username) {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    found.then_some(out)
}

fn line_user(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `mosquitto_passwd -b file alice secret` (mosquitto 2.0).
    const MOSQUITTO_7: &str = "alice:$7$101$CzGVGuW1DqyfG0Ln$X7YbtOceq4J5/KSVprj50r0IHlfvgsgVEtRSNFWCWgehvD9m16iWmU065VJGOQEvA0NGM94mXfT1gXfhUieTaw==";

    #[test]
    fn our_entries_verify_and_carry_scram_credentials() {
        let hash = new_entry_hash(b"pw", 4096).unwrap();
        let file = PasswordFile::parse(&format!("# users\nbob:{hash}\n")).unwrap();
        assert!(file.verify("bob", b"pw"));
        assert!(!file.verify("bob", b"pw2"));
        assert!(!file.verify("nobody", b"pw"));
        assert_eq!(file.scram("bob").map(|c| c.iterations), Some(4096));
    }

    #[test]
    fn sha512_entries_verify() {
        let salt = b"0123456789ab";
        let mut context = digest::Context::new(&digest::SHA512);
        context.update(b"secret");
        context.update(salt);
        let line = format!(
            "carol:$6${}${}",
            BASE64.encode(salt),
            BASE64.encode(context.finish().as_ref())
        );
        let file = PasswordFile::parse(&line).unwrap();
        assert!(file.verify("carol", b"secret"));
        assert!(!file.verify("carol", b"Secret"));
        assert!(file.scram("carol").is_none());
    }

    #[test]
    fn a_pbkdf2_entry_of_mosquitto_passwd_verifies() {
        let file = PasswordFile::parse(MOSQUITTO_7).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"wrong"));
    }

    #[test]
    fn an_unknown_user_is_checked_against_the_files_most_common_kind_of_hash() {
        // A mosquitto file ($7$, 101 iterations) and one of our entries: the decoy is a
        // $7$ of 101 iterations, not our SCRAM default of 10,000.
        let ours = new_entry_hash(b"pw", 5000).unwrap();
        let text = format!(
            "{MOSQUITTO_7}\nbob:{ours}\n{}",
            MOSQUITTO_7.replace("alice", "carl")
        );
        let file = PasswordFile::parse(&text).unwrap();
        let alice = &file.users["alice"];
        assert_eq!(file.decoy, decoy_like(alice));
        assert!(matches!(
            file.decoy,
            Hash::Pbkdf2Sha512 { iterations, .. } if iterations.get() == 101
        ));
        assert!(!file.verify("nobody", b"secret"));
        // SCRAM answers unknown users with the iterations of the SCRAM entries.
        assert_eq!(file.scram_iterations(), 5000);
        assert_eq!(
            PasswordFile::parse("").unwrap().scram_iterations(),
            DEFAULT_ITERATIONS
        );
        assert_eq!(PasswordFile::parse("").unwrap().decoy, default_decoy());
    }

    #[test]
    fn malformed_lines_name_their_line_and_no_hash_material() {
        for text in [
            "nocolon",
            ":$6$AAAA$AAAA",
            "u:$5$x$y",
            "u:$7$abc$AAAA$AAAA",
            "u:$7$0$AAAA$AAAA",
            "u:$6$!!!$AAAA",
            "u:$6$AAAA$AAAA",
        ] {
            let err = PasswordFile::parse(&format!("\n{text}")).unwrap_err();
            assert!(err.to_string().starts_with("line 2:"), "{text}: {err}");
            assert!(!err.to_string().contains("AAAA"));
        }
    }

    #[test]
    fn set_and_delete_keep_other_lines() {
        let text = "# comment\na:$6$x$y\nb:$6$x$y\n";
        let updated = set_user(text, "a", "H");
        assert_eq!(updated, "# comment\na:H\nb:$6$x$y\n");
        assert_eq!(set_user(text, "c", "H"), format!("{text}c:H\n"));
        assert_eq!(
            delete_user(text, "b").as_deref(),
            Some("# comment\na:$6$x$y\n")
        );
        assert_eq!(delete_user(text, "zz"), None);
    }
}
