//! Rewriting a file that a service reads: the files `fleetmq passwd` and
//! `fleetmq gen-certs` write.
//!
//! The new contents go to a temporary file in the same directory, which is synced and
//! renamed over the old one, so a broker reloading at the same moment reads either the
//! old or the new file, never half of one. A file that already existed keeps its owner,
//! group and mode: an administrator who made the password file `root:fleetmq` mode 0640
//! so that the `fleetmq` service user can read it finds it that way after every change.
//! A new file gets the mode the caller asks for (its owner is whoever runs the command).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a new password file: the owner writes, the group (the service's) reads.
pub const PASSWORD_FILE_MODE: u32 = 0o640;
/// Mode of a new private key: the owner only.
pub const PRIVATE_KEY_MODE: u32 = 0o600;
/// Mode of a new certificate: public.
pub const CERTIFICATE_MODE: u32 = 0o644;

/// Writes `contents` to `path` in one step (temporary file and rename). An existing
/// file's owner, group and permission bits are kept; a new file gets `new_mode`.
///
/// Fails, leaving the old file as it was, if the owner cannot be kept (only root may
/// give a file to another user).
pub fn replace(path: &Path, contents: &[u8], new_mode: u32) -> io::Result<()> {
    let existing = match std::fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let temporary = temporary_path(path)?;
    let result = write_new(&temporary, contents, existing.as_ref(), new_mode)
        .and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// `.<name>.<pid>.tmp` beside `path`: the same file system, so the rename is atomic.
fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        )
    })?;
    Ok(path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn write_new(
    temporary: &Path,
    contents: &[u8],
    existing: Option<&std::fs::Metadata>,
    new_mode: u32,
) -> io::Result<()> {
    // Created readable by its owner only until the final mode is set, whatever the umask.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temporary)?;
    let mode = match existing {
        Some(old) => {
            keep_owner(&file, old)?;
            old.mode() & 0o7777
        }
        None => new_mode,
    };
    // After the owner: changing the owner may clear set-id bits.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

fn keep_owner(file: &File, old: &std::fs::Metadata) -> io::Result<()> {
    let new = file.metadata()?;
    if new.uid() == old.uid() && new.gid() == old.gid() {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "cannot keep the file's owner {}:{} ({error}); run as root or as the owner",
                old.uid(),
                old.gid()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_file_gets_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        replace(&path, b"one", PASSWORD_FILE_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o604)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        replace(&path, b"new", PRIVATE_KEY_MODE).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o604);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
