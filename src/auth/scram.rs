//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced authentication method.
//!
//! CONNECT (or AUTH 0x19 for re-authentication) carries client-first-message; the
//! broker answers AUTH 0x18 with server-first-message; the client's AUTH 0x18 carries
//! client-final-message with its proof; the broker ends with server-final-message (in
//! CONNACK, or AUTH 0x00 after re-authentication). The broker only ever holds StoredKey
//! and ServerKey, never the password. No channel binding.
//!
//! An unknown user (or one whose entry has no SCRAM credentials) gets the same exchange
//! as a known one, failing only at the proof, so the answers do not reveal who exists:
//! its salt, StoredKey and ServerKey are derived from the user name with a secret drawn
//! at random when the process starts (`UNKNOWN_USER_SECRET`), so every attempt for the
//! same name gets the same salt, as a known user does, and its iteration count is the
//! one most of the file's SCRAM entries use.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

use super::password::{PasswordFile, ScramCredentials, SALT_LEN};
use super::{Authenticator, Exchange, Step};

/// The method name clients put in Authentication Method.
pub const METHOD: &str = "SCRAM-SHA-256";
/// Longest SCRAM message accepted; real ones are around 100 bytes.
const MAX_MESSAGE: usize = 1024;

/// The key from which unknown users' credentials are derived: random, drawn once per
/// process. A secret kept on disk would make the answers stable across restarts too; a
/// random one needs no file to protect and only lets someone who compares answers from
/// before and after a restart tell an unknown name (its salt changed) from a user's.
static UNKNOWN_USER_SECRET: OnceLock<Option<hmac::Key>> = OnceLock::new();

/// The credentials an unknown user is challenged with: fixed for the name (while the
/// process runs) and shaped like a real entry's (16-byte salt, `iterations`), but with
/// keys no password derives. `None` only if the system random generator failed.
fn unknown_user_credentials(username: &str, iterations: u32) -> Option<ScramCredentials> {
    let secret = UNKNOWN_USER_SECRET.get_or_init(|| {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
        Some(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    });
    let secret = secret.as_ref()?;
    let derive = |label: &[u8]| {
        let mut context = hmac::Context::with_key(secret);
        context.update(label);
        context.update(username.as_bytes());
        context.sign().as_ref().to_vec()
    };
    let mut salt = derive(b"salt\0");
    salt.truncate(SALT_LEN);
    Some(ScramCredentials {
        iterations,
        salt,
        stored_key: derive(b"stored-key\0"),
        server_key: derive(b"server-key\0"),
    })
}

/// The SCRAM-SHA-256 authenticator over the current password file.
pub struct Scram {
    passwords: Arc<PasswordFile>,
}

impl Scram {
    pub fn new(passwords: Arc<PasswordFile>) -> Scram {
        Scram { passwords }
    }
}

impl Authenticator for Scram {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self) -> Box<dyn Exchange> {
        Box::new(ScramExchange {
            passwords: self.passwords.clone(),
            state: State::Initial,
        })
    }
}

enum State {
    Initial,
    /// server-first sent; waiting for client-final.
    Challenged {
        username: String,
        /// An unknown user's are made up (`unknown_user_credentials`): the exchange
        /// runs on the same way and fails at the proof, so it does not reveal which users
        /// exist.
        credentials: ScramCredentials,
        known: bool,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Done,
}

struct ScramExchange {
    passwords: Arc<PasswordFile>,
    state: State,
}

impl Exchange for ScramExchange {
    fn step(&mut self, data: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Initial => self.first(data).unwrap_or(Step::Failure),
            State::Challenged {
                username,
                credentials,
                known,
                nonce,
                client_first_bare,
                server_first,
            } => final_step(
                data,
                &username,
                &credentials,
                &nonce,
                &client_first_bare,
                &server_first,
            )
            .filter(|_| known)
            .unwrap_or(Step::Failure),
            State::Done => Step::Failure,
        }
    }
}

impl ScramExchange {
    fn first(&mut self, data: &[u8]) -> Option<Step> {
        let text = message(data)?;
        // gs2-header: "n,," (no channel binding) or "y,," (client could but we do not).
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))?;
        let mut username = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            if let Some(name) = attribute.strip_prefix("n=") {
                username = Some(unescape(name)?);
            } else if let Some(nonce) = attribute.strip_prefix("r=") {
                client_nonce = Some(nonce);
            } else if attribute.starts_with("m=") {
                // Mandatory extensions are not supported (RFC 5802 5.1).
                return None;
            }
        }
        let username = username.filter(|name| !name.is_empty())?;
        let client_nonce = client_nonce.filter(|nonce| printable(nonce))?;
        let mut random = [0u8; 18];
        ring::rand::SystemRandom::new().fill(&mut random).ok()?;
        let nonce = format!("{client_nonce}{}", BASE64.encode(random));
        let (credentials, known) = match self.passwords.scram(&username) {
            Some(credentials) => (credentials.clone(), true),
            None => (
                unknown_user_credentials(&username, self.passwords.scram_iterations())?,
                false,
            ),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credentials.salt),
            credentials.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::Challenged {
            username,
            credentials,
            known,
            nonce,
            client_first_bare: bare.to_string(),
            server_first,
        };
        Some(Step::Continue(reply))
    }
}

fn final_step(
    data: &[u8],
    username: &str,
    credentials: &ScramCredentials,
    nonce: &str,
    client_first_bare: &str,
    server_first: &str,
) -> Option<Step> {
    let text = message(data)?;
    let (without_proof, proof) = text.rsplit_once(",p=")?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes.next()?.strip_prefix("c=")?;
    // "biws" is base64("n,,"); "eSws" is base64("y,,").
    if channel_binding != "biws" && channel_binding != "eSws" {
        return None;
    }
    if attributes.next()?.strip_prefix("r=")? != nonce {
        return None;
    }
    let proof = BASE64.decode(proof).ok()?;
    if proof.len() != credentials.stored_key.len() {
        return None;
    }
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let stored = hmac::Key::new(hmac::HMAC_SHA256, &credentials.stored_key);
    let client_signature = hmac::sign(&stored, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(client_signature.as_ref())
        .map(|(p, s)| p ^ s)
        .collect();
    let computed = digest::digest(&digest::SHA256, &client_key);
    if !bool::from(computed.as_ref().ct_eq(&credentials.stored_key)) {
        return None;
    }
    let server = hmac::Key::new(hmac::HMAC_SHA256, &credentials.server_key);
    let server_signature = hmac::sign(&server, auth_message.as_bytes());
    Some(Step::Success {
        username: username.to_string(),
        data: format!("v={}", BASE64.encode(server_signature.as_ref())).into_bytes(),
    })
}

fn message(data: &[u8]) -> Option<&str> {
    if data.len() > MAX_MESSAGE {
        return None;
    }
    std::str::from_utf8(data).ok()
}

fn printable(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// saslname: "=2C" is ',' and "=3D" is '='; any other '=' is malformed.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The client side of SCRAM-SHA-256, for tests and tools.
pub mod client {
    use super::*;

    /// client-first-message for `username` with `nonce`.
    pub fn first(username: &str, nonce: &str) -> String {
        format!(
            "n,,n={},r={nonce}",
            username.replace('=', "=3D").replace(',', "=2C")
        )
    }

    /// client-final-message answering `server_first`, and the server-final-message the
    /// server must send back. `None` if `server_first` is malformed.
    pub fn finish(
        client_first: &str,
        server_first: &str,
        password: &str,
    ) -> Option<(String, String)> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            if let Some(value) = attribute.strip_prefix("r=") {
                nonce = Some(value);
            } else if let Some(value) = attribute.strip_prefix("s=") {
                salt = BASE64.decode(value).ok();
            } else if let Some(value) = attribute.strip_prefix("i=") {
                iterations = value.parse().ok();
            }
        }
        let credentials = ScramCredentials::derive(password.as_bytes(), &salt?, iterations?);
        let without_proof = format!("c=biws,r={}", nonce?);
        let bare = client_first.strip_prefix("n,,")?;
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let stored = hmac::Key::new(hmac::HMAC_SHA256, &credentials.stored_key);
        let signature = hmac::sign(&stored, auth_message.as_bytes());
        // ClientKey = HMAC(SaltedPassword, "Client Key") is recomputed from the password.
        let rounds = std::num::NonZeroU32::new(credentials.iterations)?;
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            &credentials.salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server = hmac::Key::new(hmac::HMAC_SHA256, &credentials.server_key);
        let expected = hmac::sign(&server, auth_message.as_bytes());
        Some((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(expected.as_ref())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::new_entry_hash;

    fn scram() -> Scram {
        let line = format!("user,=1:{}", new_entry_hash(b"pencil", 4096).unwrap());
        Scram::new(Arc::new(PasswordFile::parse(&line).unwrap()))
    }

    fn run(password: &str, username: &str) -> Step {
        let scram = scram();
        let mut exchange = scram.start();
        let first = client::first(username, "rOprNGfwEbeRWgbNEkqO");
        let Step::Continue(server_first) = exchange.step(first.as_bytes()) else {
            return Step::Failure;
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let (client_final, _) = client::finish(&first, &server_first, password).unwrap();
        exchange.step(client_final.as_bytes())
    }

    #[test]
    fn the_right_password_succeeds_with_the_server_signature() {
        let scram = scram();
        let mut exchange = scram.start();
        let first = client::first("user,=1", "nonce123");
        let Step::Continue(server_first) = exchange.step(first.as_bytes()) else {
            panic!("expected a challenge");
        };
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=nonce123"));
        let (client_final, expected) = client::finish(&first, &server_first, "pencil").unwrap();
        match exchange.step(client_final.as_bytes()) {
            Step::Success { username, data } => {
                assert_eq!(username, "user,=1");
                assert_eq!(data, expected.into_bytes());
            }
            _ => panic!("expected success"),
        }
        assert!(matches!(exchange.step(b"again"), Step::Failure));
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_at_the_proof() {
        assert!(matches!(run("wrong", "user,=1"), Step::Failure));
        assert!(matches!(run("pencil", "nobody"), Step::Failure));
    }

    /// The salt and iteration count of the server-first-message for `username`, and the
    /// server nonce's length.
    fn challenge(scram: &Scram, username: &str) -> (String, String, usize) {
        let mut exchange = scram.start();
        let first = client::first(username, "clientnonce");
        let Step::Continue(server_first) = exchange.step(first.as_bytes()) else {
            panic!("{username}: expected a challenge");
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let [nonce, salt, iterations] =
            <[&str; 3]>::try_from(server_first.split(',').collect::<Vec<_>>())
                .unwrap_or_else(|_| panic!("three attributes: {server_first}"));
        (salt.to_string(), iterations.to_string(), nonce.len())
    }

    #[test]
    fn an_unknown_users_challenge_is_stable_and_shaped_like_a_known_users() {
        let scram = scram();
        let known = challenge(&scram, "user,=1");
        let unknown = challenge(&scram, "nobody");
        // The same answer every time, for a known user as for an unknown one.
        for _ in 0..3 {
            assert_eq!(challenge(&scram, "user,=1"), known);
            assert_eq!(challenge(&scram, "nobody"), unknown);
        }
        // Shaped alike: salt length, iterations, nonce length.
        let salt_len = |salt: &str| {
            BASE64
                .decode(salt.strip_prefix("s=").unwrap())
                .unwrap()
                .len()
        };
        assert_eq!(salt_len(&unknown.0), salt_len(&known.0));
        assert_eq!(unknown.1, known.1);
        assert_eq!(unknown.1, "i=4096");
        assert_eq!(unknown.2, known.2);
        // Each unknown name has its own salt, and a new password file (a reload) does
        // not change it.
        assert_ne!(challenge(&scram, "somebody").0, unknown.0);
        assert_eq!(challenge(&self::scram(), "nobody"), unknown);
    }

    #[test]
    fn malformed_messages_fail() {
        for first in [
            "",
            "p=tls,,n=u,r=x",
            "n,,r=x",
            "n,,n=u",
            "n,,n=u=ZZ,r=x",
            "n,,m=ext,n=u,r=x",
        ] {
            let mut exchange = scram().start();
            assert!(
                matches!(exchange.step(first.as_bytes()), Step::Failure),
                "{first}"
            );
        }
        let mut exchange = scram().start();
        let first = client::first("user,=1", "n1");
        assert!(matches!(exchange.step(first.as_bytes()), Step::Continue(_)));
        assert!(matches!(
            exchange.step(b"c=biws,r=other,p=AAAA"),
            Step::Failure
        ));
    }
}
