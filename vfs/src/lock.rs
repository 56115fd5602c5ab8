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
//! One enum, [`State`], is the file's phase and the data of that phase.
//! The decisions live here as a pure function over it ([`next`]), generic
//! over the transaction and group types so they are tested without SQLite
//! or a store; the main file (`file/`) carries out the store work the
//! returned [`Action`] asks for.

#![warn(clippy::too_many_lines)]

use std::ffi::c_int;
use std::fmt;

use libsqlite3_sys as ffi;
use pagestore::kv::{Version, Versionstamp};

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

/// What a doomed file expects of SQLite: a rollback, which writes the
/// original pages back from the journal and then syncs. Anything else (a
/// sync that restored nothing, as a retried COMMIT sends; pages with new
/// content) would be SQLite committing a transaction whose commit failed,
/// and fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// Nothing restored yet: a sync now is not a rollback's.
    Expected,
    /// The rollback restored pages (or cut the file back): its sync is
    /// accepted.
    Seen,
    /// Not checked: the transaction did commit, but SQLite rolls back
    /// because another store of the same SQL transaction failed; its
    /// restoring writes (the pre-commit pages) are dropped.
    Unchecked,
}

/// Where the file's store transaction is, with the data of that phase.
///
/// `T` is the store transaction (`pagestore::Transaction`), `G` the
/// multi-database group a prepared transaction waits in; tests use plain
/// values for both.
#[derive(PartialEq, Eq)]
pub enum State<T, G> {
    /// No lock, no store transaction.
    Idle,
    /// SHARED: a store transaction at a snapshot; SQLite reads.
    Shared(T),
    /// RESERVED or above: SQLite may write pages into the transaction.
    Reserved(T),
    /// Committed at `version` (`versionstamp`: its place within the
    /// version's batch); SQLite still holds a lock (statements reading on,
    /// or commit phase two). `reader` serves reads SQLite still makes in
    /// the same lock hold (opened lazily at `version`).
    Committed {
        /// The commit's version (its snapshot for a commit without writes).
        version: Version,
        /// The commit's versionstamp (None without writes).
        versionstamp: Option<Versionstamp>,
        /// Reads after the commit, opened at `version` on first use.
        reader: Option<T>,
    },
    /// The commit failed; SQLite is rolling back. Writes are dropped; reads
    /// come from `reader` at `snapshot`. Nothing of it is ever acknowledged
    /// as committed (see [`Restore`]).
    Doomed {
        /// What the rollback restores (the transaction's snapshot, or
        /// the commit version when it committed but SQLite rolls back).
        snapshot: Version,
        /// Reads during the rollback, opened at `snapshot` on first use.
        reader: Option<T>,
        /// What the rollback did so far.
        restore: Restore,
    },
    /// Commit phase one of a multi-database transaction is done: the
    /// transaction waits in `group` (member `id`) for the super-journal's
    /// deletion, which commits every member in one store commit (see
    /// `file/group.rs`). Rollback I/O (writes, a sync without the
    /// super-journal, an unlock) before that aborts the whole group.
    Prepared {
        /// The transaction's snapshot.
        snapshot: Version,
        /// The super-journal's group.
        group: G,
        /// This file's ticket in the group.
        id: u64,
    },
}

impl<T, G> State<T, G> {
    /// The phase's name (logs).
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Shared(_) => "Shared",
            State::Reserved(_) => "Reserved",
            State::Committed { .. } => "Committed",
            State::Doomed { .. } => "Doomed",
            State::Prepared { .. } => "Prepared",
        }
    }

    /// The open store transaction (SHARED or RESERVED), if any.
    pub fn active(&self) -> Option<&T> {
        match self {
            State::Shared(t) | State::Reserved(t) => Some(t),
            _ => None,
        }
    }

    /// Mutable [`State::active`].
    pub fn active_mut(&mut self) -> Option<&mut T> {
        match self {
            State::Shared(t) | State::Reserved(t) => Some(t),
            _ => None,
        }
    }

    /// True when prepared into a multi-database group.
    pub fn is_prepared(&self) -> bool {
        matches!(self, State::Prepared { .. })
    }
}

/// The phase and its versions, never the transaction's contents.
impl<T, G> fmt::Debug for State<T, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Committed { version, .. } => write!(f, "Committed {{ version: {version} }}"),
            State::Doomed {
                snapshot, restore, ..
            } => write!(f, "Doomed {{ snapshot: {snapshot}, restore: {restore:?} }}"),
            State::Prepared { snapshot, id, .. } => {
                write!(f, "Prepared {{ snapshot: {snapshot}, id: {id} }}")
            }
            s => f.write_str(s.name()),
        }
    }
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

/// The store work a transition needs. The state [`next`] returns is the
/// one this work starts from; the work replaces it with its outcome.
#[derive(PartialEq, Eq)]
pub enum Action<T, G> {
    /// Nothing: the returned state is the new one.
    Nothing,
    /// Begin a store transaction (a new snapshot): `Idle` becomes
    /// `Shared`.
    Begin,
    /// Begin a write transaction that continues the SQLite lock hold after
    /// an earlier commit or rollback (`Committed`/`Doomed` becomes
    /// `Reserved`): SQLite's cache still holds pages of that state, so the
    /// new transaction must start from it or refuse.
    BeginChained,
    /// Commit the `Reserved` transaction: `Committed`, or `Doomed` on
    /// failure.
    Commit,
    /// Hand the `Reserved` transaction to the super-journal's group:
    /// `Prepared`, or `Doomed` on failure.
    Prepare,
    /// The state left behind is over (the returned state is `Idle`): roll
    /// back its transaction or abort its group, remember its version.
    End(State<T, G>),
    /// A sync of a doomed transaction that restored nothing: a retried
    /// commit, refused (SQLite must roll back).
    RefuseSync,
    /// Commit phase two of a doomed transaction: SQLite believes it
    /// committed what failed. Refused.
    RefusePhaseTwo,
}

impl<T, G> Action<T, G> {
    /// The action's name (logs).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Nothing => "Nothing",
            Action::Begin => "Begin",
            Action::BeginChained => "BeginChained",
            Action::Commit => "Commit",
            Action::Prepare => "Prepare",
            Action::End(_) => "End",
            Action::RefuseSync => "RefuseSync",
            Action::RefusePhaseTwo => "RefusePhaseTwo",
        }
    }
}

impl<T, G> fmt::Debug for Action<T, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::End(s) => write!(f, "End({s:?})"),
            a => f.write_str(a.name()),
        }
    }
}

/// The next state and the store work to do for `event` in `state`.
pub fn next<T, G>(state: State<T, G>, event: Event) -> (State<T, G>, Action<T, G>) {
    use Action as A;
    use State as S;
    let writes = |l: Level| l >= Level::Reserved;
    match (state, event) {
        (s, Event::Unlock(Level::None)) => (S::Idle, A::End(s)),
        (S::Idle, Event::Lock(_)) => (S::Idle, A::Begin),
        (S::Shared(t), Event::Lock(l)) if writes(l) => (S::Reserved(t), A::Nothing),
        (s @ (S::Committed { .. } | S::Doomed { .. }), Event::Lock(l)) if writes(l) => {
            (s, A::BeginChained)
        }
        (
            S::Reserved(t),
            Event::Sync { wants_commit: true } | Event::PhaseTwo { wants_commit: true },
        ) => (S::Reserved(t), A::Commit),
        (S::Reserved(t), Event::GroupSync { wants_commit: true }) => (S::Reserved(t), A::Prepare),
        // After a failed commit SQLite must roll back: nothing of the
        // transaction is ever acknowledged as committed. Its sync is fine
        // as the end of that rollback (it wrote the original pages back
        // first); a sync that restored nothing is a retried commit.
        (
            s @ S::Doomed {
                restore: Restore::Expected,
                ..
            },
            Event::Sync { .. } | Event::GroupSync { .. },
        ) => (s, A::RefuseSync),
        (s @ S::Doomed { .. }, Event::PhaseTwo { .. }) => (s, A::RefusePhaseTwo),
        // Dropping to SHARED after writing without a commit is the end of a
        // rollback: the restored pages equal the snapshot, so the
        // transaction simply reads on.
        (S::Reserved(t), Event::Unlock(Level::Shared)) => (S::Shared(t), A::Nothing),
        (s, _) => (s, A::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose "transaction" is its snapshot and whose group is a
    /// name.
    type S = State<u64, &'static str>;
    type A = Action<u64, &'static str>;

    fn go(s: S, e: Event) -> (S, A) {
        next(s, e)
    }

    const SYNC: Event = Event::Sync { wants_commit: true };
    const SYNC_ROLLBACK: Event = Event::Sync {
        wants_commit: false,
    };
    const PHASE_TWO: Event = Event::PhaseTwo { wants_commit: true };

    fn committed() -> S {
        S::Committed {
            version: Version::new(9),
            versionstamp: None,
            reader: None,
        }
    }

    fn doomed(restore: Restore) -> S {
        S::Doomed {
            snapshot: Version::new(7),
            reader: Some(7),
            restore,
        }
    }

    #[test]
    fn read_transaction() {
        assert_eq!(go(S::Idle, Event::Lock(Level::Shared)), (S::Idle, A::Begin));
        assert_eq!(
            go(S::Shared(7), Event::Lock(Level::Shared)),
            (S::Shared(7), A::Nothing)
        );
        assert_eq!(
            go(S::Shared(7), Event::Unlock(Level::None)),
            (S::Idle, A::End(S::Shared(7)))
        );
        // Nothing to do without a lock.
        assert_eq!(go(S::Idle, SYNC), (S::Idle, A::Nothing));
        assert_eq!(
            go(S::Idle, Event::Unlock(Level::None)),
            (S::Idle, A::End(S::Idle))
        );
    }

    #[test]
    fn write_transaction_commits_at_sync() {
        let (s, a) = go(S::Shared(7), Event::Lock(Level::Reserved));
        assert_eq!((&s, &a), (&S::Reserved(7), &A::Nothing));
        let (s, _) = go(s, Event::Lock(Level::Exclusive));
        assert_eq!(s, S::Reserved(7));
        // A sync that does not carry a commit (rollback restoring pages).
        let (s, a) = go(s, SYNC_ROLLBACK);
        assert_eq!((&s, &a), (&S::Reserved(7), &A::Nothing));
        assert_eq!(go(s, SYNC), (S::Reserved(7), A::Commit));
        // Phase two after a commit at sync does nothing more.
        assert_eq!(go(committed(), PHASE_TWO), (committed(), A::Nothing));
        assert_eq!(
            go(committed(), Event::Unlock(Level::Shared)),
            (committed(), A::Nothing)
        );
        assert_eq!(
            go(committed(), Event::Unlock(Level::None)),
            (S::Idle, A::End(committed()))
        );
    }

    #[test]
    fn synchronous_off_commits_at_phase_two() {
        assert_eq!(go(S::Reserved(7), PHASE_TWO), (S::Reserved(7), A::Commit));
    }

    #[test]
    fn rollback_keeps_reading() {
        assert_eq!(
            go(S::Reserved(7), Event::Unlock(Level::Shared)),
            (S::Shared(7), A::Nothing)
        );
        // The file accepts the rollback's sync only after restores.
        assert_eq!(
            go(doomed(Restore::Expected), SYNC_ROLLBACK),
            (doomed(Restore::Expected), A::RefuseSync)
        );
        assert_eq!(
            go(doomed(Restore::Seen), SYNC_ROLLBACK),
            (doomed(Restore::Seen), A::Nothing)
        );
        assert_eq!(
            go(doomed(Restore::Unchecked), SYNC),
            (doomed(Restore::Unchecked), A::Nothing)
        );
        assert_eq!(
            go(
                doomed(Restore::Expected),
                Event::GroupSync { wants_commit: true }
            ),
            (doomed(Restore::Expected), A::RefuseSync)
        );
        for r in [Restore::Expected, Restore::Seen, Restore::Unchecked] {
            assert_eq!(go(doomed(r), PHASE_TWO), (doomed(r), A::RefusePhaseTwo));
        }
        assert_eq!(
            go(doomed(Restore::Seen), Event::Unlock(Level::None)),
            (S::Idle, A::End(doomed(Restore::Seen)))
        );
    }

    #[test]
    fn writing_again_in_the_same_hold_is_chained() {
        assert_eq!(
            go(committed(), Event::Lock(Level::Reserved)),
            (committed(), A::BeginChained)
        );
        assert_eq!(
            go(doomed(Restore::Seen), Event::Lock(Level::Reserved)),
            (doomed(Restore::Seen), A::BeginChained)
        );
        // Taking SHARED again does not begin anything.
        assert_eq!(
            go(committed(), Event::Lock(Level::Shared)),
            (committed(), A::Nothing)
        );
    }

    #[test]
    fn multi_database_commit_prepares_then_waits() {
        assert_eq!(
            go(S::Reserved(7), Event::GroupSync { wants_commit: true }),
            (S::Reserved(7), A::Prepare)
        );
        assert_eq!(
            go(
                S::Reserved(7),
                Event::GroupSync {
                    wants_commit: false
                }
            ),
            (S::Reserved(7), A::Nothing)
        );
        let prepared = || S::Prepared {
            snapshot: Version::new(7),
            group: "mj",
            id: 1,
        };
        // Prepared waits: the group's outcome moves the file on (file/).
        assert_eq!(go(prepared(), PHASE_TWO), (prepared(), A::Nothing));
        assert_eq!(
            go(prepared(), Event::Unlock(Level::None)),
            (S::Idle, A::End(prepared()))
        );
    }

    #[test]
    fn states_show_their_phase_not_their_transaction() {
        assert_eq!(format!("{:?}", S::Reserved(7)), "Reserved");
        assert_eq!(
            format!("{:?}", doomed(Restore::Seen)),
            "Doomed { snapshot: 7, restore: Seen }"
        );
        assert_eq!(
            format!("{:?}", A::End(committed())),
            "End(Committed { version: 9 })"
        );
        assert_eq!(S::Shared(7).active(), Some(&7));
        assert_eq!(committed().active(), None);
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
