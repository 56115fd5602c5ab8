//! Puts relaxed commits on disk soon after they are acknowledged.
//!
//! A relaxed commit (SQLite's `synchronous` OFF or NORMAL) is acknowledged
//! when it is visible, before redb has synced it: redb keeps such a commit
//! in memory and writes its commit record with the next durable commit. A
//! store whose writers are all relaxed would otherwise leave its commits off
//! disk until it is closed; this makes one durable commit at most
//! [`FLUSH_DELAY`] after the first relaxed commit not yet on disk. Any
//! durable commit (a `synchronous=FULL` writer's) does the same at once, and
//! a clean close does it last.
//!
//! One thread per directory store, started by the first relaxed commit and
//! gone once nothing is left to flush.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tracing::warn;

use crate::sync::{lock, wait_timeout};

/// Longest time a relaxed commit stays acknowledged but off disk while the
/// process runs: what a kill of the process (or a crash of the machine) can
/// lose of relaxed commits.
pub const FLUSH_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    /// When the oldest relaxed commit not yet on disk became visible.
    dirty_since: Option<Instant>,
    /// The flushing thread is running.
    running: bool,
    /// The store is closing: the thread stops, the close flushes.
    closing: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The flusher of one directory store.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    db: Arc<Database>,
    location: String,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub(crate) fn new(db: Arc<Database>, location: String) -> Self {
        Flusher {
            shared: Arc::default(),
            db,
            location,
            thread: Mutex::new(None),
        }
    }

    /// A relaxed commit became visible without a sync: a durable commit
    /// follows within [`FLUSH_DELAY`].
    pub(crate) fn relaxed(&self) {
        let mut s = lock(&self.shared.state);
        s.dirty_since.get_or_insert_with(Instant::now);
        if s.running || s.closing {
            return;
        }
        s.running = true;
        drop(s);
        let (shared, db, location) = (self.shared.clone(), self.db.clone(), self.location.clone());
        let spawned = std::thread::Builder::new()
            .name("pagestore-flush".into())
            .spawn(move || run(&shared, &db, &location));
        let mut thread = lock(&self.thread);
        match spawned {
            Ok(h) => {
                // The previous thread has stopped running; wait until it is
                // gone, so that no thread outlives the store's database.
                if let Some(old) = thread.replace(h) {
                    let _ = old.join();
                }
            }
            Err(e) => {
                drop(thread);
                warn!(location = %self.location, error = %e, "cannot start the flush thread; flushing now");
                lock(&self.shared.state).running = false;
                self.flush_now();
            }
        }
    }

    /// A durable commit put every earlier commit on disk.
    pub(crate) fn durable(&self) {
        lock(&self.shared.state).dirty_since = None;
    }

    /// The store closes: stops the thread and puts what is left on disk.
    pub(crate) fn close(&self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
        self.flush_now();
    }

    fn flush_now(&self) {
        let dirty = lock(&self.shared.state).dirty_since.take().is_some();
        if dirty {
            if let Err(e) = flush(&self.db) {
                warn!(location = %self.location, error = %e, "cannot flush relaxed commits");
            }
        }
    }
}

/// The flush thread: waits until the oldest relaxed commit off disk is
/// [`FLUSH_DELAY`] old, flushes, and stops when nothing is left.
fn run(shared: &Shared, db: &Database, location: &str) {
    loop {
        let mut s = lock(&shared.state);
        loop {
            let due = match s.dirty_since {
                Some(t) if !s.closing => t + FLUSH_DELAY,
                _ => {
                    s.running = false;
                    return;
                }
            };
            let now = Instant::now();
            if now >= due {
                break;
            }
            s = wait_timeout(&shared.wake, s, due - now);
        }
        s.dirty_since = None;
        drop(s);
        if let Err(e) = flush(db) {
            warn!(location, error = %e, "cannot flush relaxed commits; retrying");
            lock(&shared.state)
                .dirty_since
                .get_or_insert_with(Instant::now);
        }
    }
}

/// One durable redb commit without data: puts every commit before it on
/// disk.
fn flush(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}
