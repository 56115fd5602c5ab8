//! Version allocation: read versions (GRV) and commit versions, both in
//! microseconds of the injected clock.
//!
//! # Invariants other code relies on
//!
//! * Read versions handed out never decrease.
//! * Commit *versions* never decrease, and (version, batch order) — the
//!   commit's [`crate::kv::Versionstamp`] — strictly increases: byte order
//!   of versionstamps is commit order.
//! * Every commit version is above every read version handed out before
//!   the commit chose it, so a read at `rv` sees exactly the commits with
//!   versions `<= rv`, and none is ever added at or below `rv` later.
//!
//! # Batches
//!
//! FoundationDB gives every commit of a proxy batch the same version; only
//! the versionstamp's 2-byte batch order tells them apart. A commit here may
//! *join* the previous commit's version (`begin_commit(.., join = true)`)
//! as long as that version is still open: no read version at or above it
//! has been handed out (nor accepted by `set_read_version`), and no commit
//! failed at it. A read version handed out while a joining commit is in
//! flight waits for it, so a batch is only ever seen whole, and a client
//! whose earlier commit in the batch was acknowledged never reads below it.
//!
//! Commits are serialised in groups (see `group`): the versions of one
//! group are *in flight* together (chosen, being written to disk in one
//! write, not yet visible) and become visible together. A read version
//! handed out while a group is in flight is just below its first version.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kv::{KvError, KvResult, Version};

#[derive(Debug, Default)]
struct State {
    /// The newest visible commit.
    committed: Version,
    /// Batch order of the newest visible commit within `committed`.
    order: u16,
    /// The highest version handed out as a read version (or a commit
    /// version that was given up). A batch at `committed` is open while
    /// `floor < committed`.
    floor: Version,
    /// The last commit chosen but not yet visible: (version, batch order).
    in_flight: Option<(Version, u16)>,
    /// The first commit of the group in flight (`in_flight` is its last).
    in_flight_from: Option<(Version, u16)>,
}

impl State {
    /// Whether an in-flight commit joins the visible batch: reading at its
    /// version now would see part of a batch.
    fn joining_in_flight(&self) -> bool {
        matches!(self.in_flight_from, Some((v, _)) if v <= self.committed)
    }
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
    /// Starts from the last committed version found on disk. The batch of
    /// that version is closed: a reopened store never joins it.
    pub(crate) fn new(committed: Version) -> Self {
        Versions {
            state: Mutex::new(State {
                committed,
                order: 0,
                floor: committed,
                in_flight: None,
                in_flight_from: None,
            }),
            visible: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn wait<'a>(&self, s: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        crate::sync::wait(&self.visible, s)
    }

    /// The newest visible commit version.
    pub(crate) fn committed(&self) -> Version {
        self.lock().committed
    }

    /// A fresh read version (GRV): the current time, or just below the
    /// in-flight commit, never below an earlier read version. Waits while a
    /// commit joining the visible batch is in flight (the batch is then
    /// closed: no later commit joins it).
    pub(crate) fn read_version(&self, now: Version) -> Version {
        let mut s = self.lock();
        while s.joining_in_flight() {
            s = self.wait(s);
        }
        let rv = match s.in_flight_from {
            Some((v, _)) => v.before(1),
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
            match s.in_flight_from {
                Some((v, _)) if version >= v => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(KvError::new(
                            KvError::FUTURE_VERSION,
                            format!("read version {version} waits for commit {v}"),
                        ));
                    }
                    s = crate::sync::wait_timeout(&self.visible, s, left);
                }
                _ => {
                    s.floor = s.floor.max(version);
                    return Ok(());
                }
            }
        }
    }

    /// Chooses the version and batch order of the next commit. With `join`
    /// and an open batch (see the module docs) it is the visible commit's
    /// version with the next batch order; otherwise a new version,
    /// `max(last + 1, now)`, above every read version handed out, with
    /// order 0. Callers serialise commits; a commit of a group in flight
    /// comes after the group's previous one (and may join its version).
    pub(crate) fn begin_commit(&self, now: Version, join: bool) -> (Version, u16) {
        let mut s = self.lock();
        let (last, order) = s.in_flight.unwrap_or((s.committed, s.order));
        let open = last > s.floor && order < u16::MAX;
        let chosen = if join && open {
            (last, order + 1)
        } else {
            (now.max(last.after(1)).max(s.floor.after(1)), 0)
        };
        s.in_flight = Some(chosen);
        s.in_flight_from.get_or_insert(chosen);
        chosen
    }

    /// A commit of the group in flight failed before it was written: its
    /// version is never used (which also closes its batch); the group goes
    /// on.
    pub(crate) fn give_up(&self, version: Version) {
        let mut s = self.lock();
        s.floor = s.floor.max(version);
    }

    /// Ends the group in flight: visible up to `last` (the last commit of
    /// the group that was written) when `Some`; every other version chosen
    /// is never used again.
    pub(crate) fn finish_group(&self, last: Option<(Version, u16)>) {
        let mut s = self.lock();
        s.in_flight_from = None;
        if let Some((chosen, _)) = s.in_flight.take() {
            if last.is_none_or(|(v, _)| v < chosen) {
                s.floor = s.floor.max(chosen);
            }
        }
        if let Some((version, order)) = last {
            if version > s.committed {
                s.committed = version;
                s.order = order;
            } else if version == s.committed {
                s.order = s.order.max(order);
            }
        }
        drop(s);
        self.visible.notify_all();
    }

    /// Ends the in-flight commit: visible when `applied`, otherwise its
    /// version is never used again (which also closes its batch).
    #[cfg(test)]
    pub(crate) fn finish_commit(&self, version: Version, applied: bool) {
        let order = match self.lock().in_flight {
            Some((v, o)) if v == version => o,
            _ => 0,
        };
        if !applied {
            self.give_up(version);
        }
        self.finish_group(applied.then_some((version, order)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(n: u64) -> Version {
        Version::new(n)
    }

    #[test]
    fn versions_increase_and_stay_above_reads() {
        let v = Versions::new(ver(100));
        assert_eq!(v.read_version(ver(50)), ver(100));
        assert_eq!(v.read_version(ver(200)), ver(200));
        // Clock went backwards: still above every read version.
        let (c, _) = v.begin_commit(ver(150), false);
        assert_eq!(c, ver(201));
        // While in flight, reads see just below it.
        assert_eq!(v.read_version(ver(300)), ver(200));
        v.finish_commit(c, true);
        assert_eq!(v.committed(), ver(201));
        assert_eq!(v.begin_commit(ver(0), false), (ver(202), 0));
        v.finish_commit(ver(202), false);
        assert_eq!(v.committed(), ver(201));
        assert_eq!(v.begin_commit(ver(0), false), (ver(203), 0));
    }

    #[test]
    fn set_read_version_in_the_future_fails() {
        let v = Versions::new(ver(100));
        assert!(v.accept_read_version(ver(90), ver(95)).is_ok());
        assert!(v.accept_read_version(ver(120), ver(130)).is_ok());
        // The accepted version raises the floor: the next commit is above it.
        assert_eq!(v.begin_commit(ver(0), false), (ver(121), 0));
        v.finish_commit(ver(121), true);
        assert_eq!(
            v.accept_read_version(ver(10_000), ver(130))
                .unwrap_err()
                .code,
            1009
        );
    }

    #[test]
    fn commits_join_an_open_batch_until_a_read_version_observes_it() {
        let v = Versions::new(ver(100));
        // A reopened store's last version is closed.
        assert_eq!(v.begin_commit(ver(0), true), (ver(101), 0));
        v.finish_commit(ver(101), true);
        assert_eq!(v.begin_commit(ver(0), true), (ver(101), 1));
        v.finish_commit(ver(101), true);
        assert_eq!(v.begin_commit(ver(0), true), (ver(101), 2));
        v.finish_commit(ver(101), true);
        // Not asked to join: a new version.
        assert_eq!(v.begin_commit(ver(0), false), (ver(102), 0));
        v.finish_commit(ver(102), true);
        // A read version at the batch closes it.
        assert_eq!(v.read_version(ver(0)), ver(102));
        assert_eq!(v.begin_commit(ver(0), true), (ver(103), 0));
        v.finish_commit(ver(103), true);
        // So does an accepted one, and a joining commit that failed.
        v.accept_read_version(ver(103), ver(0)).unwrap();
        assert_eq!(v.begin_commit(ver(0), true), (ver(104), 0));
        v.finish_commit(ver(104), true);
        assert_eq!(v.begin_commit(ver(0), true), (ver(104), 1));
        v.finish_commit(ver(104), false);
        assert_eq!(v.begin_commit(ver(0), true), (ver(105), 0));
        v.finish_commit(ver(105), true);
    }

    #[test]
    fn a_group_in_flight_is_invisible_until_it_ends_whole() {
        let v = Versions::new(ver(100));
        let a = v.begin_commit(ver(0), false);
        let b = v.begin_commit(ver(0), true);
        let c = v.begin_commit(ver(0), false);
        assert_eq!((a, b, c), ((ver(101), 0), (ver(101), 1), (ver(102), 0)));
        // Reads stay below the group's first version while it is in flight.
        assert_eq!(v.read_version(ver(500)), ver(100));
        // The last one failed before it was written: the group ends at b.
        v.give_up(ver(102));
        v.finish_group(Some(b));
        assert_eq!(v.committed(), ver(101));
        assert_eq!(v.begin_commit(ver(0), true), (ver(103), 0));
        // A group that failed as a whole: nothing visible, versions unused.
        v.finish_group(None);
        assert_eq!(v.committed(), ver(101));
        assert_eq!(v.begin_commit(ver(0), false), (ver(104), 0));
    }

    #[test]
    fn read_version_waits_for_a_joining_commit() {
        let v = std::sync::Arc::new(Versions::new(ver(100)));
        assert_eq!(v.begin_commit(ver(0), true), (ver(101), 0));
        v.finish_commit(ver(101), true);
        assert_eq!(v.begin_commit(ver(0), true), (ver(101), 1));
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || v.read_version(ver(0)))
        };
        // The reader cannot answer 100 (it would miss the first commit of
        // the batch) nor 101 (half a batch): it waits for the joiner.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished());
        v.finish_commit(ver(101), true);
        assert_eq!(reader.join().unwrap(), ver(101));
        assert_eq!(v.begin_commit(ver(0), true), (ver(102), 0));
    }
}
