//! The one retry runner, in the style of FoundationDB's `run`: an attempt
//! closure, a predicate saying which errors are worth another attempt, a
//! hook run before each retry, and one backoff policy ([`Backoff`]).
//!
//! Every loop that re-runs a store transaction (or a whole SQL
//! transaction above the engine) goes through [`run`], so there is one
//! formula for delays: the `n`-th retry waits `min(initial · 2ⁿ⁻¹, max)`,
//! of which a fraction `jitter` is drawn at random.

use std::time::Duration;

/// How often and how long to wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry; doubles with each further retry.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Most retries after the first attempt (attempts in all: `limit + 1`).
    pub limit: u32,
    /// Fraction of each delay drawn at random, in `0.0..=1.0`: 0 waits
    /// exactly the delay, 0.5 waits between half of it and all of it, so
    /// that colliding writers spread out.
    pub jitter: f64,
}

impl Backoff {
    /// `limit` retries waiting `initial`, doubled each time up to `max`,
    /// without jitter.
    pub const fn new(initial: Duration, max: Duration, limit: u32) -> Self {
        Backoff {
            initial,
            max,
            limit,
            jitter: 0.0,
        }
    }

    /// `limit` retries without waiting (a retry that needs only a fresh
    /// read version, not time for others to finish).
    pub const fn immediate(limit: u32) -> Self {
        Backoff::new(Duration::ZERO, Duration::ZERO, limit)
    }

    /// The store's internal transactions: 2, 4, 8 … ms, at most 100 ms,
    /// like FDB's `on_error`.
    pub const fn store(limit: u32) -> Self {
        Backoff::new(Duration::from_millis(2), Duration::from_millis(100), limit)
    }

    /// The same policy with a fraction `jitter` of each delay drawn at
    /// random.
    pub const fn with_jitter(self, jitter: f64) -> Self {
        Backoff { jitter, ..self }
    }

    /// The delay before retry `retry` (1 for the first retry), jitter
    /// not applied.
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Sleeps before retry `retry`, with jitter.
    pub fn sleep(&self, retry: u32) {
        let delay = self.delay(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let delay = if jitter > 0.0 {
            delay.mul_f64(1.0 - jitter * rand::random::<f64>())
        } else {
            delay
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Whether to wait before the next attempt (a retry hook's answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Wait as the policy says.
    Backoff,
    /// Retry at once (e.g. after a read version grew too old: waiting
    /// cannot help).
    Skip,
}

/// An attempt's error, and whether it came from the attempt's setup (such
/// as beginning a store transaction), which callers may want never retried,
/// or from its body.
#[derive(Debug)]
pub enum Failed<E> {
    /// Setting the attempt up failed.
    Setup(E),
    /// The attempt itself failed.
    Body(E),
}

impl<E> Failed<E> {
    /// The error of the attempt's body, if it failed there.
    pub fn body(&self) -> Option<&E> {
        match self {
            Failed::Setup(_) => None,
            Failed::Body(e) => Some(e),
        }
    }

    /// The error, wherever it came from.
    pub fn into_inner(self) -> E {
        match self {
            Failed::Setup(e) | Failed::Body(e) => e,
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error `retryable` does
/// not accept, or `policy.limit` retries are used up; returns the last
/// outcome. `attempt` gets the attempt number (0 for the first) and must be
/// safe to run again after a retryable error. Before each retry,
/// `on_retry(error, retry)` runs (retry 1 is the first), for logging,
/// counters or state the next attempt reads, and says whether to wait.
///
/// ```
/// use pagestore::retry::{run, Backoff, Pause};
/// use std::time::Duration;
/// let policy = Backoff::new(Duration::ZERO, Duration::ZERO, 3);
/// let mut calls = 0;
/// let out: Result<u32, &str> = run(
///     &policy,
///     |e: &&str| *e == "busy",
///     |_, _| Pause::Backoff,
///     |n| {
///         calls += 1;
///         if n < 2 { Err("busy") } else { Ok(n) }
///     },
/// );
/// assert_eq!((out, calls), (Ok(2), 3));
/// ```
pub fn run<T, E>(
    policy: &Backoff,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32) -> Pause,
    mut attempt: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, E> {
    let mut retries = 0u32;
    loop {
        match attempt(retries) {
            Err(e) if retries < policy.limit && retryable(&e) => {
                retries += 1;
                if on_retry(&e, retries) == Pause::Backoff {
                    policy.sleep(retries);
                }
            }
            out => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::store(20);
        let ms: Vec<u128> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [2, 4, 8, 16, 32, 64, 100, 100, 100]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn stops_at_the_limit_and_on_other_errors() {
        let policy = Backoff::immediate(2);
        // (error every attempt fails with, attempts run): a retryable one
        // runs the limit out, another stops at once.
        for (err, want_calls) in [(1, 3), (2, 1)] {
            let mut calls = 0;
            let out: Result<(), i32> = run(
                &policy,
                |e| *e == 1,
                |_, _| Pause::Skip,
                |_| {
                    calls += 1;
                    Err(err)
                },
            );
            assert_eq!((out, calls), (Err(err), want_calls));
        }
    }
}
