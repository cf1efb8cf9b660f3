//! `fleetmq passwd`: adds, updates, deletes and verifies users of a password file,
//! keeping every other line (comments, mosquitto entries) as it was.
//!
//! The file is written to a temporary file beside it and renamed over it, so a broker
//! reloading at the same moment reads either the old or the new file, never half; an
//! existing file keeps its owner and mode, a new one is mode 0640
//! (`crate::file_replace`).

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};

use super::password::{delete_user, new_entry_hash, set_user, PasswordFile};

/// What the subcommand does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswdAction {
    Set { password: String, iterations: u32 },
    Delete,
    Verify { password: String },
}

/// Carries out `action` on `username` in `file`. `Verify` fails when the password is
/// wrong.
pub fn run(file: &Path, username: &str, action: PasswdAction) -> anyhow::Result<String> {
    if username.is_empty() || username.contains([':', '\n', '\r']) {
        bail!("a username must be non-empty and contain no ':' or line breaks");
    }
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", file.display())),
    };
    match action {
        PasswdAction::Set {
            password,
            iterations,
        } => {
            let hash = new_entry_hash(password.as_bytes(), iterations)
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            write_atomically(file, &set_user(&text, username, &hash))?;
            Ok(format!("{username}: password set"))
        }
        PasswdAction::Delete => match delete_user(&text, username) {
            Some(updated) => {
                write_atomically(file, &updated)?;
                Ok(format!("{username}: deleted"))
            }
            None => bail!("{username}: no such user in {}", file.display()),
        },
        PasswdAction::Verify { password } => {
            let passwords = PasswordFile::parse(&text)
                .with_context(|| format!("{} is not a valid password file", file.display()))?;
            if passwords.verify(username, password.as_bytes()) {
                Ok(format!("{username}: password OK"))
            } else {
                bail!("{username}: wrong password or unknown user")
            }
        }
    }
}

/// The first line of `input`, without its line break.
pub fn read_password(input: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    crate::file_replace::replace(
        file,
        text.as_bytes(),
        crate::file_replace::PASSWORD_FILE_MODE,
    )
    .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_verify_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let set = |password: &str| PasswdAction::Set {
            password: password.into(),
            iterations: 4096,
        };
        let verify = |password: &str| PasswdAction::Verify {
            password: password.into(),
        };
        run(&file, "alice", set("one")).unwrap();
        run(&file, "bob", set("two")).unwrap();
        assert!(run(&file, "alice", verify("one")).is_ok());
        assert!(run(&file, "alice", verify("two")).is_err());
        run(&file, "alice", set("three")).unwrap();
        assert!(run(&file, "alice", verify("three")).is_ok());
        assert!(run(&file, "bob", verify("two")).is_ok());
        run(&file, "bob", PasswdAction::Delete).unwrap();
        assert!(run(&file, "bob", verify("two")).is_err());
        assert!(run(&file, "bob", PasswdAction::Delete).is_err());
        assert!(run(&file, "a:b", set("x")).is_err());
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("alice:$scram-sha-256$4096$"));
    }

    #[test]
    fn the_password_is_the_first_input_line() {
        let mut input = std::io::Cursor::new(b"s3cret\r\nignored\n".to_vec());
        assert_eq!(read_password(&mut input).unwrap(), "s3cret");
        let mut empty = std::io::Cursor::new(b"\n".to_vec());
        assert!(read_password(&mut empty).is_err());
    }
}
