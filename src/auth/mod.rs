//! Who may connect and what they may do: the password file, the ACL file, MQTT 5
//! enhanced authentication, and the decision at CONNECT.
//!
//! [`Security`] holds the current password file and ACL behind locks that are only
//! swapped, never edited: `reload` reads both files again and keeps the old version of
//! a file that fails to load (logging why), so a typo never locks every device out.
//! Connections read the current version on every check.
//!
//! With an ACL file, reading is checked for every delivered message (`read_gate`), as
//! Mosquitto does; a SUBSCRIBE is refused only for a filter no rule could ever let read.
//!
//! The decision at CONNECT, in order: a client certificate identity (when the listener
//! uses one) is the username without a password; a username with a password file must
//! match its entry; otherwise the client is anonymous and admitted only where the
//! listener allows it.

pub mod acl;
pub mod passwd_tool;
pub mod password;
pub mod read_gate;
pub mod scram;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::AuthConfig;
use crate::protocol::reason;

pub use acl::{Acl, Want};
pub use password::PasswordFile;
pub use read_gate::ReadGate;

/// One step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this Authentication Data in AUTH 0x18 and wait for the client's answer.
    Continue(Vec<u8>),
    /// Authenticated as `username`; `data` goes to the client in the final packet.
    Success { username: String, data: Vec<u8> },
    /// Refused.
    Failure,
}

/// An enhanced authentication method (MQTT 5 Authentication Method).
pub trait Authenticator: Send + Sync {
    fn method(&self) -> &str;
    /// A new exchange; its first `step` gets the data of CONNECT (or of AUTH 0x19).
    fn start(&self) -> Box<dyn Exchange>;
}

/// One exchange in progress, fed the client's Authentication Data.
pub trait Exchange: Send {
    fn step(&mut self, data: &[u8]) -> Step;
}

/// Why a security file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("password file {path}: {source}")]
    Passwords {
        path: String,
        #[source]
        source: password::PasswordFileError,
    },
    #[error("ACL file {path}: {source}")]
    Acl {
        path: String,
        #[source]
        source: acl::AclFileError,
    },
}

/// The password file and ACL in force, reloadable.
pub struct Security {
    config: AuthConfig,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    acl: RwLock<Option<Arc<Acl>>>,
    /// Bumped after each ACL (re)load, so per-session read decisions (`ReadGate`) know
    /// theirs are out of date.
    acl_generation: AtomicU64,
}

/// What a client presented at CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// The identity of a verified client certificate, when the listener uses it.
    pub certificate_identity: Option<&'a str>,
    pub allow_anonymous: bool,
    pub v5: bool,
}

impl Security {
    /// Loads the configured files; any error is fatal at start-up.
    pub fn load(config: &AuthConfig) -> Result<Security, SecurityError> {
        let security = Security {
            config: config.clone(),
            passwords: RwLock::new(None),
            acl: RwLock::new(None),
            acl_generation: AtomicU64::new(0),
        };
        if let Some(path) = &config.password_file {
            *write(&security.passwords) = Some(Arc::new(load_passwords(path)?));
        }
        if let Some(path) = &config.acl_file {
            *write(&security.acl) = Some(Arc::new(load_acl(path)?));
            security.acl_generation.store(1, Ordering::Release);
        }
        Ok(security)
    }

    /// Reads the password and ACL files again. A file that fails to load keeps the
    /// version in force; the errors are logged and returned.
    pub fn reload(&self) -> Vec<SecurityError> {
        let mut errors = Vec::new();
        if let Some(path) = &self.config.password_file {
            match load_passwords(path) {
                Ok(file) => {
                    tracing::info!(path = %path.display(), users = file.len(), "password file reloaded");
                    *write(&self.passwords) = Some(Arc::new(file));
                }
                Err(error) => errors.push(error),
            }
        }
        if let Some(path) = &self.config.acl_file {
            match load_acl(path) {
                Ok(acl) => {
                    tracing::info!(path = %path.display(), "ACL file reloaded");
                    *write(&self.acl) = Some(Arc::new(acl));
                    // After the swap: whoever sees the new generation finds the new ACL.
                    self.acl_generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => errors.push(error),
            }
        }
        for error in &errors {
            tracing::error!(%error, "reload failed; keeping the previous version");
        }
        errors
    }

    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        read(&self.passwords).clone()
    }

    pub fn acl(&self) -> Option<Arc<Acl>> {
        read(&self.acl).clone()
    }

    /// Whether an ACL file is configured, so each delivery must be checked for read
    /// access. Without one the delivery path does no ACL work at all.
    pub fn checks_reads(&self) -> bool {
        self.config.acl_file.is_some()
    }

    /// Changes whenever a new ACL is put in force.
    pub fn acl_generation(&self) -> u64 {
        self.acl_generation.load(Ordering::Acquire)
    }

    /// The enhanced authentication method `method`, if the broker offers it. SCRAM
    /// needs a password file.
    pub fn authenticator(&self, method: &str) -> Option<Box<dyn Authenticator>> {
        match method {
            scram::METHOD => self
                .passwords()
                .map(|passwords| Box::new(scram::Scram::new(passwords)) as Box<dyn Authenticator>),
            _ => None,
        }
    }

    /// The decision at CONNECT: `Ok(username)` (None: anonymous) or the reason code of
    /// the refusing CONNACK. Costs a key derivation when a password is checked: call it
    /// off the async runtime.
    pub fn admit(&self, credentials: Credentials<'_>) -> Result<Option<String>, u8> {
        // Mosquitto answers both bad passwords and refused anonymous clients with
        // "not authorised" (0x05) in MQTT 3.1.1; MQTT 5 distinguishes them.
        let bad_password = if credentials.v5 {
            reason::BAD_USER_NAME_OR_PASSWORD
        } else {
            reason::NOT_AUTHORIZED
        };
        if let Some(identity) = credentials.certificate_identity {
            return Ok(Some(identity.to_string()));
        }
        if let Some(username) = credentials.username {
            return match self.passwords() {
                Some(passwords) => {
                    let password = credentials.password.unwrap_or_default();
                    if passwords.verify(username, password) {
                        Ok(Some(username.to_string()))
                    } else {
                        Err(bad_password)
                    }
                }
                // Without a password file a username is only a name, as in Mosquitto:
                // the client counts as unauthenticated.
                None if credentials.allow_anonymous => Ok(Some(username.to_string())),
                None => Err(reason::NOT_AUTHORIZED),
            };
        }
        if credentials.allow_anonymous {
            Ok(None)
        } else {
            Err(reason::NOT_AUTHORIZED)
        }
    }

    /// Whether the client may publish to or subscribe to `topic`. Nobody publishes to a
    /// `$` topic; without an ACL file everything else is allowed.
    pub fn allows(&self, username: Option<&str>, client_id: &str, want: Want, topic: &str) -> bool {
        if want == Want::Publish && topic.starts_with('$') {
            return false;
        }
        match self.acl() {
            Some(acl) => acl.allows(username, client_id, want, topic),
            None => true,
        }
    }
}

fn load_passwords(path: &Path) -> Result<PasswordFile, SecurityError> {
    PasswordFile::load(path).map_err(|source| SecurityError::Passwords {
        path: path.display().to_string(),
        source,
    })
}

fn load_acl(path: &Path) -> Result<Acl, SecurityError> {
    Acl::load(path).map_err(|source| SecurityError::Acl {
        path: path.display().to_string(),
        source,
    })
}

fn read<T: Clone>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn credentials<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            username,
            password,
            certificate_identity: None,
            allow_anonymous: false,
            v5: true,
        }
    }

    fn security_with(passwords: &str, acl: &str) -> (Security, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("passwd");
        let acl_file = dir.path().join("acl");
        std::fs::write(&password_file, passwords).unwrap();
        std::fs::write(&acl_file, acl).unwrap();
        let config = AuthConfig {
            password_file: Some(password_file),
            acl_file: Some(acl_file),
        };
        (Security::load(&config).unwrap(), dir)
    }

    #[test]
    fn admission_follows_identity_password_then_anonymous() {
        let hash = password::new_entry_hash(b"pw", 1000).unwrap();
        let (security, _dir) = security_with(&format!("alice:{hash}\n"), "");
        assert_eq!(
            security.admit(credentials(Some("alice"), Some(b"pw"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            security.admit(credentials(Some("alice"), Some(b"no"))),
            Err(reason::BAD_USER_NAME_OR_PASSWORD)
        );
        let v3 = Credentials {
            v5: false,
            ..credentials(Some("bob"), Some(b"pw"))
        };
        assert_eq!(security.admit(v3), Err(reason::NOT_AUTHORIZED));
        assert_eq!(
            security.admit(credentials(None, None)),
            Err(reason::NOT_AUTHORIZED)
        );
        let anonymous = Credentials {
            allow_anonymous: true,
            ..credentials(None, None)
        };
        assert_eq!(security.admit(anonymous), Ok(None));
        let certified = Credentials {
            certificate_identity: Some("device-7"),
            ..credentials(None, None)
        };
        assert_eq!(security.admit(certified), Ok(Some("device-7".into())));
    }

    #[test]
    fn dollar_topics_are_never_published_and_no_acl_allows_the_rest() {
        let security = Security::load(&AuthConfig::default()).unwrap();
        assert!(!security.allows(None, "c", Want::Publish, "$SYS/broker/x"));
        assert!(!security.allows(None, "c", Want::Publish, "$anything"));
        assert!(security.allows(None, "c", Want::Publish, "a/b"));
        assert!(security.allows(None, "c", Want::Subscribe, "$SYS/#"));
    }

    #[test]
    fn a_bad_reload_keeps_the_previous_files() {
        let hash = password::new_entry_hash(b"pw", 1000).unwrap();
        let (security, dir) = security_with(&format!("alice:{hash}\n"), "topic read a/#\n");
        std::fs::File::create(dir.path().join("passwd"))
            .unwrap()
            .write_all(b"broken line\n")
            .unwrap();
        std::fs::write(dir.path().join("acl"), "topic read b/#\n").unwrap();
        let errors = security.reload();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("line 1"), "{}", errors[0]);
        assert!(security
            .admit(credentials(Some("alice"), Some(b"pw")))
            .is_ok());
        assert!(security.allows(None, "c", Want::Subscribe, "b/x"));
        assert!(!security.allows(None, "c", Want::Subscribe, "a/x"));
        assert_eq!(security.acl_generation(), 2);
    }
}
