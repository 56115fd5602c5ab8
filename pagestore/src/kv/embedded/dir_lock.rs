//! The exclusive lock on a store directory: `<dir>/LOCK`, held with an
//! advisory `flock` for the life of the store and naming its holder (pid,
//! host, start time), so that a second opener is told who has it.
//!
//! The lock is released by the kernel when the holder exits, even after a
//! kill -9, so a crashed process never leaves the store locked. A `flock`
//! belongs to the open file description, which a forked child shares: the
//! child closes its copy at fork time (`kv::process`), so the lock is free
//! as soon as the holder itself exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::kv::{KvError, KvResult};

/// Name of the lock file inside a store directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A held directory lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock, or says who holds it.
    pub(crate) fn acquire(dir: &Path) -> KvResult<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| {
            KvError::new(
                KvError::IO_ERROR,
                format!("cannot create store directory {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&path).map_err(|e| {
            KvError::new(
                KvError::IO_ERROR,
                format!("cannot open lock file {}: {e}", path.display()),
            )
        })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // Best effort: the holder may be rewriting it right now.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "an unidentified process"
                } else {
                    holder
                };
                return Err(KvError::new(
                    KvError::OPERATION_FAILED,
                    format!(
                        "store directory {} is in use by another store handle ({holder}); \
                         only one process may open it at a time",
                        dir.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(KvError::new(
                    KvError::IO_ERROR,
                    format!("cannot lock {}: {e}", path.display()),
                ))
            }
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = format!(
            "pid={} host={} started={started}\n",
            std::process::id(),
            host_name()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(info.as_bytes()))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            return Err(KvError::new(
                KvError::IO_ERROR,
                format!("cannot write lock file {}: {e}", path.display()),
            ));
        }
        // A forked child must not keep the lock (it is on the open file
        // description, which the child shares): it closes its copy of this
        // descriptor, and of the store's other files, at fork time.
        #[cfg(unix)]
        crate::kv::process::close_in_forked_children(dir);
        Ok(DirLock { _file: file, path })
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        assert!(held.path().ends_with(LOCK_FILE));
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.code, KvError::OPERATION_FAILED);
        assert!(err.message.contains(&dir.path().display().to_string()));
        assert!(err.message.contains(&format!("pid={}", std::process::id())));
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn uncreatable_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = DirLock::acquire(&file.join("sub")).unwrap_err();
        assert_eq!(err.code, KvError::IO_ERROR);
        assert!(err.message.contains("cannot create store directory"));
    }
}
