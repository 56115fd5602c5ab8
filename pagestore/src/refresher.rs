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
//! nothing is wanted or the store is gone: it holds the store weakly, so it
//! never keeps a store (or its directory lock) alive.

#![warn(clippy::too_many_lines)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::database::Database;
use crate::ids::DbId;
use crate::kv::Version;
use crate::store::{PageStore, StoreCore};
use crate::sync::{lock, wait_timeout};

/// Interest in a database lapses this long after its last bounded BEGIN.
pub(crate) const IDLE: Duration = Duration::from_secs(2);

/// The shortest pause between two refreshes of one database.
const MIN_PERIOD: Duration = Duration::from_micros(500);

/// What the thread needs to rebuild a [`Database`] handle without holding
/// the store.
#[derive(Clone)]
struct Wanted {
    name: Arc<str>,
    ancestors: Vec<(DbId, Version)>,
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
    /// Notes that a connection began on `db` with staleness `bound`; starts
    /// the thread if it is not running.
    pub(crate) fn want(&self, db: &Database, bound: Duration) {
        // `self` is `db.store.inner.refresher`: the thread gets that Arc.
        let period = (bound / 2).max(MIN_PERIOD);
        let now = Instant::now();
        let until = now + IDLE;
        let mut i = lock(&self.interest);
        let mut sooner = false;
        let w = i.wanted.entry(db.id).or_insert_with(|| {
            sooner = true;
            Wanted {
                name: db.name.clone(),
                ancestors: db.layers.iter().skip(1).map(|l| (l.id, l.cap)).collect(),
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
            i.running = spawn(
                db.store.inner.refresher.clone(),
                Arc::downgrade(&db.store.inner),
            );
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
fn spawn(refresher: Arc<Refresher>, store: Weak<StoreCore>) -> bool {
    let r = std::thread::Builder::new()
        .name("fdbvfs-refresh".into())
        .spawn(move || run(&refresher, &store));
    if let Err(e) = &r {
        warn!(error = %e, "cannot start the view refresher; bounded-staleness reads fall back to strict BEGINs");
    }
    r.is_ok()
}

/// The thread: refreshes what is due, then sleeps without holding the
/// store, until nothing is wanted or the store is gone.
fn run(refresher: &Refresher, store: &Weak<StoreCore>) {
    loop {
        let Some((due, sleep)) = refresher.due() else {
            return;
        };
        let Some(inner) = store.upgrade() else {
            return;
        };
        let ps = PageStore { inner };
        for (id, w) in due {
            if planted!("plant::ignore_staleness_bound") {
                continue;
            }
            let db = Database::new(ps.clone(), &w.name, id, &w.ancestors);
            if db.view_age() < w.period {
                continue;
            }
            if let Err(e) = db.start() {
                debug!(database = %w.name, error = %e, "view refresh failed");
            }
        }
        drop(ps);
        refresher.pause(sleep);
    }
}
