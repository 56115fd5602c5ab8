//! Who may open a store directory: its owner, and no one else.
//!
//! A store directory holds the whole store (`data.redb`), its lock
//! (`LOCK`) and, in shared mode, the socket other processes use (`kv.sock`).
//! Anyone who can read the files can copy every row; anyone who can write
//! the directory can plant a socket (a fake store) or take the store over
//! when its owner exits. So, whatever the umask:
//!
//! * the directory is created `0700` and its files `0600`, set explicitly
//!   (a umask of 000 would otherwise leave them open to everyone);
//! * an existing directory must belong to this process's effective uid, and
//!   so must the store's files in it; otherwise opening fails with a message
//!   that says how to fix it (`chown`);
//! * an existing directory writable by group or others is refused unless
//!   it is empty (nothing in it can have been planted yet: it is tightened
//!   to `0700`, which is what a `mkdir -p` under umask 000 produces);
//! * the store's files are tightened to `0600`, and a directory merely
//!   readable by others that holds nothing else (a store made by an older
//!   version under umask 022) to `0700`; a readable directory that holds
//!   other things too (`dir=.`) is left as it is, its store files private.
//!
//! The socket server also checks the uid of every peer, and clients the
//! uid of the server (`kv::remote`), so a socket reachable by mistake still
//! serves no one else. The trust model is documented in the README.

use std::path::Path;

use crate::kv::{KvError, KvResult};

/// Mode of a store directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of the files in a store directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// The files a store directory holds (the redb file, the lock, the
/// shared-mode socket): only these are checked and made private.
const STORE_FILES: [&str; 3] = ["data.redb", "LOCK", "kv.sock"];

/// Whether `dir` holds nothing but a store's files.
#[cfg(unix)]
fn only_store_files(dir: &Path) -> KvResult<bool> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io_error(format!("cannot list store directory {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| io_error(format!("cannot list store directory {}", dir.display()), e))?;
        if !STORE_FILES.iter().any(|f| entry.file_name() == *f) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The effective uid of this process.
#[cfg(unix)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn refuse(message: String) -> KvError {
    KvError::new(KvError::IO_ERROR, message)
}

fn io_error(what: String, e: std::io::Error) -> KvError {
    KvError::new(KvError::IO_ERROR, format!("{what}: {e}"))
}

/// Creates `dir` (mode 0700) if needed and checks that this process's user
/// owns it and alone can change it (see the module documentation).
#[cfg(unix)]
pub(crate) fn prepare_dir(dir: &Path) -> KvResult<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

    let shown = dir.display();
    let created = match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Parents missing: create them as `mkdir -p` would (with the
            // umask: they are not ours to restrict), then the store itself.
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_error(format!("cannot create store directory {shown}"), e))?;
            }
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => {
                    return Err(io_error(
                        format!("cannot create store directory {shown}"),
                        e,
                    ))
                }
            }
        }
        Err(e) => {
            return Err(io_error(
                format!("cannot create store directory {shown}"),
                e,
            ))
        }
    };
    let meta = std::fs::metadata(dir)
        .map_err(|e| io_error(format!("cannot read store directory {shown}"), e))?;
    if !meta.is_dir() {
        return Err(refuse(format!(
            "store directory {shown} exists and is not a directory"
        )));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(refuse(format!(
            "store directory {shown} belongs to uid {}, not to this process's uid {me}: \
             only its owner may open a store (another user could read or replace it); \
             run as uid {}, or, if you trust its contents, `chown -R {me} {shown}`, \
             or choose another directory",
            meta.uid(),
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    let set_mode = |mode: u32| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            io_error(
                format!("cannot set the permissions of store directory {shown}"),
                e,
            )
        })
    };
    if created {
        // Explicitly: the umask may have taken bits away, never added any,
        // but a umask such as 0277 would leave the owner without access.
        set_mode(DIR_MODE)?;
    } else if mode & 0o022 != 0 {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| io_error(format!("cannot list store directory {shown}"), e))?
            .next()
            .is_none();
        if !empty {
            return Err(refuse(format!(
                "store directory {shown} is writable by other users (mode {mode:04o}): \
                 any of them could have replaced its files or planted a fake store socket; \
                 check its contents, then `chmod 700 {shown}`"
            )));
        }
        // Empty (just made by `mkdir -p` under a permissive umask): nothing
        // to distrust yet. Entries planted meanwhile are caught below.
        set_mode(DIR_MODE)?;
        tracing::info!(dir = %shown, old_mode = format!("{mode:04o}"), "store directory made private (0700)");
    } else if mode & 0o077 != 0 && only_store_files(dir)? {
        // A store made by an older version under umask 022. A directory
        // holding other things too (`dir=.`) is not ours to restrict: the
        // store's own files are made private below, which is what counts.
        set_mode(DIR_MODE)?;
        tracing::info!(dir = %shown, old_mode = format!("{mode:04o}"), "store directory made private (0700)");
    }
    // No one else can add entries now: check the store's own.
    for name in STORE_FILES {
        let path = dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(format!("cannot read {}", path.display()), e)),
        };
        if meta.uid() != me {
            return Err(refuse(format!(
                "{} belongs to uid {}, not to this process's uid {me}: another user put it \
                 in the store directory; remove it if you do not know where it came from \
                 (or `chown {me} {}` if you trust it)",
                path.display(),
                meta.uid(),
                path.display()
            )));
        }
        if meta.mode() & 0o077 != 0 && !meta.file_type().is_symlink() {
            private_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn prepare_dir(dir: &Path) -> KvResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        io_error(
            format!("cannot create store directory {}", dir.display()),
            e,
        )
    })
}

/// Sets `path` (a file or socket of a store directory) to mode 0600.
#[cfg(unix)]
pub(crate) fn private_file(path: &Path) -> KvResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)).map_err(|e| {
        io_error(
            format!("cannot set the permissions of {}", path.display()),
            e,
        )
    })
}

#[cfg(not(unix))]
pub(crate) fn private_file(_path: &Path) -> KvResult<()> {
    Ok(())
}

/// Creates `path` mode 0600 if it does not exist (so that a library that
/// creates it with the umask's mode finds it already private), and sets
/// it to 0600 explicitly.
pub(crate) fn create_private_file(path: &Path) -> KvResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
        .open(path)
        .map_err(|e| io_error(format!("cannot create {}", path.display()), e))?;
    private_file(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn new_directory_is_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b/store");
        prepare_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn readable_directory_is_tightened_writable_one_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("store");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("data.redb"), b"x").unwrap();
        std::fs::set_permissions(dir.join("data.redb"), PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o755)).unwrap();
        prepare_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("data.redb")), 0o600);

        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir).unwrap_err();
        assert!(err.message.contains("writable by other users"), "{err}");
        assert!(err.message.contains("chmod 700"), "{err}");
        assert_eq!(mode(&dir), 0o777, "left as found");

        // A readable directory with other things in it is left alone; the
        // store's files are still made private.
        let general = base.path().join("project");
        std::fs::create_dir(&general).unwrap();
        std::fs::write(general.join("notes.txt"), b"x").unwrap();
        std::fs::set_permissions(general.join("notes.txt"), PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(general.join("LOCK"), b"").unwrap();
        std::fs::set_permissions(general.join("LOCK"), PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&general, PermissionsExt::from_mode(0o755)).unwrap();
        prepare_dir(&general).unwrap();
        assert_eq!(mode(&general), 0o755);
        assert_eq!(mode(&general.join("notes.txt")), 0o644);
        assert_eq!(mode(&general.join("LOCK")), 0o600);

        // Empty and world-writable (mkdir -p under umask 000): tightened.
        let empty = base.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::set_permissions(&empty, PermissionsExt::from_mode(0o777)).unwrap();
        prepare_dir(&empty).unwrap();
        assert_eq!(mode(&empty), 0o700);
        assert_eq!(std::fs::metadata(&empty).unwrap().uid(), euid());
    }
}
