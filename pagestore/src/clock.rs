//! Time sources. The embedded backend's MVCC window, the time index and GC
//! all read time through [`Clock`] so tests can move time forward without
//! sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in microseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in microseconds since the Unix epoch.
    fn now_micros(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// A clock that follows the system clock plus an offset that tests advance,
/// so "10 seconds later" costs no waiting.
///
/// ```
/// use pagestore::clock::{Clock, ManualClock};
/// let c = ManualClock::new();
/// let t0 = c.now_micros();
/// c.advance_secs(10);
/// assert!(c.now_micros() >= t0 + 10_000_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_micros: AtomicI64,
}

impl ManualClock {
    /// A clock that starts at the system time.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock::default())
    }

    /// Moves time forward.
    pub fn advance_micros(&self, micros: u64) {
        self.offset_micros
            .fetch_add(micros.min(i64::MAX as u64) as i64, Ordering::SeqCst);
    }

    /// Moves time backwards (a writer whose clock runs behind).
    pub fn rewind_micros(&self, micros: u64) {
        self.offset_micros
            .fetch_sub(micros.min(i64::MAX as u64) as i64, Ordering::SeqCst);
    }

    /// Moves time forward by whole seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance_micros(secs * 1_000_000);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        SystemClock
            .now_micros()
            .saturating_add_signed(self.offset_micros.load(Ordering::SeqCst))
    }
}
