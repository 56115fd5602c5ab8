//! The per-file lock state machine.
//!
//! SQLite's lock levels (NONE < SHARED < RESERVED < PENDING < EXCLUSIVE)
//! drive the store transaction of a main-database file:
//!
//! * NONE → SHARED begins a store transaction: its snapshot is what every
//!   read until the lock is dropped sees (one consistent snapshot).
//! * RESERVED and EXCLUSIVE never block and never talk to the store: other
//!   processes cannot see them. Commits are optimistic; conflicts surface at
//!   commit.
//! * The commit happens when SQLite syncs the database file after writing
//!   its pages (commit phase one): at `SQLITE_FCNTL_SYNC`, which
//!   `sqlite3PagerSync` sends right before `xSync` and also with
//!   `synchronous=OFF` (no `xSync` then), its error failing phase one like
//!   an `xSync` error would; at `xSync` when no `SQLITE_FCNTL_SYNC` came;
//!   as a last resort at `SQLITE_FCNTL_COMMIT_PHASETWO`. A failed commit dooms the
//!   transaction: SQLite rolls back from its journal, the VFS drops those
//!   restoring writes, and nothing was written to the store. A doomed
//!   transaction never acknowledges a commit: a sync that is not the end
//!   of that rollback (it restored nothing: a retried COMMIT), new page
//!   content, and commit phase two all fail.
//! * Dropping to NONE ends the store transaction.
//! * A transaction that wrote several databases of one connection commits
//!   through SQLite's super-journal: each file's `xSync` (announced with
//!   the super-journal's name) only *prepares* (Prepared), and deleting the
//!   super-journal commits them all in one store commit (`file/group.rs`).
//! * A file of a connection (`SQLITE_FCNTL_PDB`) taking SHARED while
//!   another file of that connection holds a transaction begins at that
//!   transaction's snapshot: one snapshot per SQL transaction.
//!
//! The decisions live here as a pure function so they can be tested
//! without SQLite or a store; `file.rs` carries them out.

use std::ffi::c_int;

use libsqlite3_sys as ffi;

/// SQLite's lock levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// SQLITE_LOCK_NONE.
    None,
    /// SQLITE_LOCK_SHARED.
    Shared,
    /// SQLITE_LOCK_RESERVED.
    Reserved,
    /// SQLITE_LOCK_PENDING.
    Pending,
    /// SQLITE_LOCK_EXCLUSIVE.
    Exclusive,
}

impl Level {
    /// From SQLite's constant.
    pub fn from_c(level: c_int) -> Option<Level> {
        Some(match level {
            ffi::SQLITE_LOCK_NONE => Level::None,
            ffi::SQLITE_LOCK_SHARED => Level::Shared,
            ffi::SQLITE_LOCK_RESERVED => Level::Reserved,
            ffi::SQLITE_LOCK_PENDING => Level::Pending,
            ffi::SQLITE_LOCK_EXCLUSIVE => Level::Exclusive,
            _ => return None,
        })
    }
}

/// Where the file's store transaction is (the data each phase carries lives
/// in `file.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No lock, no store transaction.
    Idle,
    /// SHARED: a store transaction at a snapshot; SQLite reads.
    Shared,
    /// RESERVED or above: SQLite may write pages into the transaction.
    Reserved,
    /// The transaction committed; SQLite still holds a lock (statements
    /// reading on, or commit phase two).
    Committed,
    /// The commit failed with a conflict; SQLite is rolling back.
    Doomed,
    /// Phase one of a multi-database commit is over: the transaction waits
    /// for the super-journal's deletion, which commits every database of
    /// the transaction in one store commit (see `file/group.rs`). Rollback
    /// I/O (writes, a sync without the super-journal, an unlock) before
    /// that aborts the whole group.
    Prepared,
}

/// What SQLite asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// xLock(level).
    Lock(Level),
    /// xUnlock(level).
    Unlock(Level),
    /// xSync; `wants_commit` says whether the pages written form a commit
    /// (page 1 written with a new change counter, or the size changed),
    /// rather than a rollback restoring the originals.
    Sync {
        /// See above.
        wants_commit: bool,
    },
    /// xSync announced (SQLITE_FCNTL_SYNC) with a super-journal of this
    /// VFS: the end of commit phase one of a multi-database transaction.
    GroupSync {
        /// See above.
        wants_commit: bool,
    },
    /// SQLITE_FCNTL_COMMIT_PHASETWO (same meaning of `wants_commit`).
    PhaseTwo {
        /// See above.
        wants_commit: bool,
    },
}

/// What the file must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing but recording the new phase.
    Nothing,
    /// Begin a store transaction (a new snapshot).
    Begin,
    /// Begin a write transaction that continues the SQLite lock hold after
    /// an earlier commit or rollback: SQLite's cache still holds pages of
    /// that state, so the new transaction must start from it or refuse.
    BeginChained,
    /// Commit the store transaction (on failure the phase becomes Doomed).
    Commit,
    /// Hand the store transaction to the super-journal's group (on failure
    /// the phase becomes Doomed).
    Prepare,
    /// End (roll back / drop) whatever transaction there is.
    End,
    /// A sync of a doomed transaction: fine as the end of SQLite's rollback
    /// (it wrote the original pages back first); a sync that restored
    /// nothing is a retried commit, and fails.
    DoomedSync,
    /// Commit phase two of a doomed transaction: SQLite believes it
    /// committed what failed. Fails.
    Refuse,
}

/// The next phase and the action to take for `event` in `phase`.
pub fn next(phase: Phase, event: Event) -> (Phase, Action) {
    use Action as A;
    use Phase as P;
    match (phase, event) {
        (_, Event::Unlock(Level::None)) => (P::Idle, A::End),
        (P::Idle, Event::Lock(_)) => (P::Shared, A::Begin),
        (P::Idle, _) => (P::Idle, A::Nothing),
        (P::Shared, Event::Lock(l)) if l >= Level::Reserved => (P::Reserved, A::Nothing),
        (P::Committed | P::Doomed, Event::Lock(l)) if l >= Level::Reserved => {
            (P::Reserved, A::BeginChained)
        }
        (P::Reserved, Event::Sync { wants_commit: true })
        | (P::Reserved, Event::PhaseTwo { wants_commit: true }) => (P::Committed, A::Commit),
        (P::Reserved, Event::GroupSync { wants_commit: true }) => (P::Prepared, A::Prepare),
        // After a failed commit SQLite must roll back: nothing of the
        // transaction is ever acknowledged as committed.
        (P::Doomed, Event::Sync { .. } | Event::GroupSync { .. }) => (P::Doomed, A::DoomedSync),
        (P::Doomed, Event::PhaseTwo { .. }) => (P::Doomed, A::Refuse),
        // Dropping to SHARED after writing without a commit is the end of a
        // rollback: the restored pages equal the snapshot, so the
        // transaction simply reads on.
        (P::Reserved, Event::Unlock(Level::Shared)) => (P::Shared, A::Nothing),
        (p, _) => (p, A::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Phase as P;

    #[test]
    fn read_transaction() {
        assert_eq!(
            next(P::Idle, Event::Lock(Level::Shared)),
            (P::Shared, A::Begin)
        );
        assert_eq!(
            next(P::Shared, Event::Lock(Level::Shared)),
            (P::Shared, A::Nothing)
        );
        assert_eq!(
            next(P::Shared, Event::Unlock(Level::None)),
            (P::Idle, A::End)
        );
    }

    #[test]
    fn write_transaction_commits_at_sync() {
        let (p, a) = next(P::Shared, Event::Lock(Level::Reserved));
        assert_eq!((p, a), (P::Reserved, A::Nothing));
        let (p, _) = next(p, Event::Lock(Level::Exclusive));
        assert_eq!(p, P::Reserved);
        // A sync that does not carry a commit (rollback restoring pages).
        assert_eq!(
            next(
                p,
                Event::Sync {
                    wants_commit: false
                }
            ),
            (P::Reserved, A::Nothing)
        );
        let (p, a) = next(p, Event::Sync { wants_commit: true });
        assert_eq!((p, a), (P::Committed, A::Commit));
        // Phase two after a commit at sync does nothing more.
        assert_eq!(
            next(p, Event::PhaseTwo { wants_commit: true }),
            (P::Committed, A::Nothing)
        );
        assert_eq!(
            next(p, Event::Unlock(Level::Shared)),
            (P::Committed, A::Nothing)
        );
        assert_eq!(next(p, Event::Unlock(Level::None)), (P::Idle, A::End));
    }

    #[test]
    fn synchronous_off_commits_at_phase_two() {
        let p = P::Reserved;
        assert_eq!(
            next(p, Event::PhaseTwo { wants_commit: true }),
            (P::Committed, A::Commit)
        );
    }

    #[test]
    fn rollback_keeps_reading() {
        assert_eq!(
            next(P::Reserved, Event::Unlock(Level::Shared)),
            (P::Shared, A::Nothing)
        );
        // The file accepts the rollback's sync only after restores.
        assert_eq!(
            next(
                P::Doomed,
                Event::Sync {
                    wants_commit: false
                }
            ),
            (P::Doomed, A::DoomedSync)
        );
        assert_eq!(
            next(P::Doomed, Event::PhaseTwo { wants_commit: true }),
            (P::Doomed, A::Refuse)
        );
        assert_eq!(
            next(P::Doomed, Event::Unlock(Level::None)),
            (P::Idle, A::End)
        );
    }

    #[test]
    fn writing_again_in_the_same_hold_is_chained() {
        assert_eq!(
            next(P::Committed, Event::Lock(Level::Reserved)),
            (P::Reserved, A::BeginChained)
        );
        assert_eq!(
            next(P::Doomed, Event::Lock(Level::Reserved)),
            (P::Reserved, A::BeginChained)
        );
    }

    #[test]
    fn multi_database_commit_prepares_then_waits() {
        assert_eq!(
            next(P::Reserved, Event::GroupSync { wants_commit: true }),
            (P::Prepared, A::Prepare)
        );
        assert_eq!(
            next(
                P::Reserved,
                Event::GroupSync {
                    wants_commit: false
                }
            ),
            (P::Reserved, A::Nothing)
        );
        // Prepared waits: the group's outcome moves the file on (file.rs).
        assert_eq!(
            next(P::Prepared, Event::PhaseTwo { wants_commit: true }),
            (P::Prepared, A::Nothing)
        );
        assert_eq!(
            next(P::Prepared, Event::Unlock(Level::None)),
            (P::Idle, A::End)
        );
    }

    #[test]
    fn levels_from_c() {
        assert_eq!(
            Level::from_c(ffi::SQLITE_LOCK_EXCLUSIVE),
            Some(Level::Exclusive)
        );
        assert_eq!(Level::from_c(99), None);
    }
}
