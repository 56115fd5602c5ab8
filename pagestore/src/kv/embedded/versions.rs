//! Version allocation: read versions (GRV) and commit versions, both in
//! microseconds of the injected clock and strictly increasing.
//!
//! Commits are serialised, so at most one commit version is *in flight*
//! (chosen, being written to disk, not yet visible). A read version handed
//! out while a commit is in flight is just below that commit's version, and
//! every commit version is above every read version handed out so far
//! (`floor`): a read at version `rv` therefore sees exactly the commits with
//! versions `<= rv`, and none is ever added below it later.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::kv::{KvError, KvResult, Version};

#[derive(Debug, Default)]
struct State {
    /// The newest visible commit.
    committed: Version,
    /// The highest version handed out as a read version (or a commit
    /// version that was given up).
    floor: Version,
    /// A commit chosen but not yet visible.
    in_flight: Option<Version>,
}

/// The version authority of one store.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    state: Mutex<State>,
    visible: Condvar,
}

/// How long a read at a version of an in-flight commit waits for it.
const FUTURE_WAIT: Duration = Duration::from_secs(1);

impl Versions {
    /// Starts from the last committed version found on disk.
    pub(crate) fn new(committed: Version) -> Self {
        Versions {
            state: Mutex::new(State {
                committed,
                floor: committed,
                in_flight: None,
            }),
            visible: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest visible commit version.
    pub(crate) fn committed(&self) -> Version {
        self.lock().committed
    }

    /// A fresh read version (GRV): the current time, or just below the
    /// in-flight commit, never below an earlier read version.
    pub(crate) fn read_version(&self, now: Version) -> Version {
        let mut s = self.lock();
        let rv = match s.in_flight {
            Some(v) => v - 1,
            None => now.max(s.committed).max(s.floor),
        };
        s.floor = s.floor.max(rv);
        rv
    }

    /// Accepts a read version set by the caller: versions the store has
    /// reached (committed, handed out, or passed by the clock) are fine;
    /// a version of an in-flight commit waits for it; anything beyond is
    /// `future_version` (1009).
    pub(crate) fn accept_read_version(&self, version: Version, now: Version) -> KvResult<()> {
        let deadline = Instant::now() + FUTURE_WAIT;
        let mut s = self.lock();
        loop {
            if version > now.max(s.committed).max(s.floor) {
                return Err(KvError::new(
                    KvError::FUTURE_VERSION,
                    format!(
                        "read version {version} is ahead of the store (latest {})",
                        s.committed.max(s.floor)
                    ),
                ));
            }
            match s.in_flight {
                Some(v) if version >= v => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(KvError::new(
                            KvError::FUTURE_VERSION,
                            format!("read version {version} waits for commit {v}"),
                        ));
                    }
                    s = match self.visible.wait_timeout(s, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                _ => {
                    s.floor = s.floor.max(version);
                    return Ok(());
                }
            }
        }
    }

    /// Chooses the version of the next commit: `max(last + 1, now)`, above
    /// every read version handed out. Callers serialise commits.
    pub(crate) fn begin_commit(&self, now: Version) -> Version {
        let mut s = self.lock();
        let v = now.max(s.committed + 1).max(s.floor + 1);
        s.in_flight = Some(v);
        v
    }

    /// Ends the in-flight commit: visible when `applied`, otherwise its
    /// version is never used again.
    pub(crate) fn finish_commit(&self, version: Version, applied: bool) {
        let mut s = self.lock();
        s.in_flight = None;
        if applied {
            s.committed = s.committed.max(version);
        } else {
            s.floor = s.floor.max(version);
        }
        drop(s);
        self.visible.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_stay_above_reads() {
        let v = Versions::new(100);
        assert_eq!(v.read_version(50), 100);
        assert_eq!(v.read_version(200), 200);
        // Clock went backwards: still above every read version.
        let c = v.begin_commit(150);
        assert_eq!(c, 201);
        // While in flight, reads see just below it.
        assert_eq!(v.read_version(300), 200);
        v.finish_commit(c, true);
        assert_eq!(v.committed(), 201);
        assert_eq!(v.begin_commit(0), 202);
        v.finish_commit(202, false);
        assert_eq!(v.committed(), 201);
        assert_eq!(v.begin_commit(0), 203);
    }

    #[test]
    fn set_read_version_in_the_future_fails() {
        let v = Versions::new(100);
        assert!(v.accept_read_version(90, 95).is_ok());
        assert!(v.accept_read_version(120, 130).is_ok());
        // The accepted version raises the floor: the next commit is above it.
        assert_eq!(v.begin_commit(0), 121);
        v.finish_commit(121, true);
        assert_eq!(v.accept_read_version(10_000, 130).unwrap_err().code, 1009);
    }
}
