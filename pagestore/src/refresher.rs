//! The background refresher: one thread per process and store that keeps
//! this process's view of each database confirmed fresh while connections
//! with a staleness bound use it, so that their BEGIN costs no round trip
//! (see `staleness.rs`).
//!
//! A connection that begins with a bound registers the database here
//! ([`Refresher::want`]); the thread then moves the view forward (one
//! strict start: a read version and the change-log read) whenever its
//! confirmation is older than half the smallest bound asked. Interest
//! lapses after [`IDLE`] without a bounded BEGIN, and the thread ends when
//! nothing is wanted or the store is gone: what it calls holds the store
//! weakly, so it never keeps a store (or its directory lock) alive. It
//! knows databases only as ids and the function that refreshes one
//! (`Database::refresher_fn`), so it depends on neither.

#![warn(clippy::too_many_lines)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::ids::DbId;
use crate::sync::{lock, wait_timeout};

/// Interest in a database lapses this long after its last bounded BEGIN.
pub(crate) const IDLE: Duration = Duration::from_secs(2);

/// The shortest pause between two refreshes of one database.
const MIN_PERIOD: Duration = Duration::from_micros(500);

/// Refreshes one database's view when it is older than the period given;
/// false when the store is gone (the interest is then dropped).
pub(crate) type RefreshFn = Arc<dyn Fn(Duration) -> bool + Send + Sync>;

#[derive(Clone)]
struct Wanted {
    refresh: RefreshFn,
    /// Half the smallest bound asked while the interest lasted.
    period: Duration,
    until: Instant,
}

#[derive(Default)]
struct Interest {
    wanted: HashMap<DbId, Wanted>,
    running: bool,
}

/// The refresher of one store.
#[derive(Default)]
pub(crate) struct Refresher {
    interest: Mutex<Interest>,
    wake: Condvar,
}

impl Refresher {
    /// Notes that a connection began on database `id` with staleness
    /// `bound`; `refresh` (called only the first time) makes its refresh
    /// function. Starts the thread if it is not running.
    pub(crate) fn want(
        self: &Arc<Self>,
        id: DbId,
        bound: Duration,
        refresh: impl FnOnce() -> RefreshFn,
    ) {
        let period = (bound / 2).max(MIN_PERIOD);
        let now = Instant::now();
        let until = now + IDLE;
        let mut i = lock(&self.interest);
        let mut sooner = false;
        let w = i.wanted.entry(id).or_insert_with(|| {
            sooner = true;
            Wanted {
                refresh: refresh(),
                period,
                until,
            }
        });
        if w.until < now || period < w.period {
            sooner |= period < w.period;
            w.period = period;
        }
        w.until = until;
        if !i.running {
            i.running = spawn(self.clone());
        }
        drop(i);
        // Only a new or shorter period changes the thread's schedule.
        if sooner {
            self.wake.notify_one();
        }
    }

    /// Forgets `id` (dropped).
    pub(crate) fn forget(&self, id: DbId) {
        lock(&self.interest).wanted.remove(&id);
    }

    /// What to refresh now, and how long to sleep after; `None` when
    /// nothing is wanted any more (the thread then ends).
    fn due(&self) -> Option<(Vec<(DbId, Wanted)>, Duration)> {
        let mut i = lock(&self.interest);
        let now = Instant::now();
        i.wanted.retain(|_, w| w.until > now);
        if i.wanted.is_empty() {
            i.running = false;
            return None;
        }
        let sleep = i.wanted.values().map(|w| w.period).min().unwrap_or(IDLE);
        let all = i.wanted.iter().map(|(id, w)| (*id, w.clone())).collect();
        Some((all, sleep))
    }

    /// Sleeps up to `d`, or until a new interest arrives.
    fn pause(&self, d: Duration) {
        let i = lock(&self.interest);
        drop(wait_timeout(&self.wake, i, d));
    }
}

/// Starts the thread; false when the OS refuses one (bounded BEGINs then
/// fall back to strict ones as their view ages).
fn spawn(refresher: Arc<Refresher>) -> bool {
    let r = std::thread::Builder::new()
        .name("fdbvfs-refresh".into())
        .spawn(move || run(&refresher));
    if let Err(e) = &r {
        warn!(error = %e, "cannot start the view refresher; bounded-staleness reads fall back to strict BEGINs");
    }
    r.is_ok()
}

/// The thread: refreshes what is due, then sleeps, until nothing is
/// wanted.
fn run(refresher: &Refresher) {
    while let Some((due, sleep)) = refresher.due() {
        for (id, w) in due {
            if planted!("plant::ignore_staleness_bound") {
                continue;
            }
            if !(w.refresh)(w.period) {
                refresher.forget(id);
            }
        }
        refresher.pause(sleep);
    }
}
