//! Which large commits this process is indexing right now, so that a
//! second thread of the process waits for the first instead of writing the
//! same page index alongside it.
//!
//! Why: a large commit's page index is written after the commit, by the
//! committer, and also by any BEGIN (the view refresher's included) that
//! sees its marker first: each must not return before the index is whole.
//! Within one process two of them used to write every chunk twice (the
//! refresher doubled the index writes of most large commits under a
//! staleness bound). Across processes they still may (the store's marker
//! keeps that correct, see `upload::materialize`).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::sync::{lock, wait};

/// How an indexing by another thread ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Done,
    Failed,
}

#[derive(Debug)]
struct Slot {
    outcome: Mutex<Outcome>,
    ended: Condvar,
}

/// The large commits being indexed by this process, by marker key.
#[derive(Debug, Default)]
pub(crate) struct Indexing {
    running: Mutex<HashMap<Vec<u8>, Arc<Slot>>>,
}

/// What the caller of [`Indexing::claim`] does.
pub(crate) enum Claim<'a> {
    /// Index it; the guard tells waiters how it ended when dropped.
    Mine(Guard<'a>),
    /// Another thread of this process indexed it meanwhile.
    Done,
}

/// Held while indexing one commit.
pub(crate) struct Guard<'a> {
    indexing: &'a Indexing,
    marker: Vec<u8>,
    slot: Arc<Slot>,
    done: bool,
}

impl Guard<'_> {
    /// The index is whole (its marker cleared).
    pub(crate) fn succeeded(mut self) {
        self.done = true;
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        lock(&self.indexing.running).remove(&self.marker);
        *lock(&self.slot.outcome) = if self.done {
            Outcome::Done
        } else {
            Outcome::Failed
        };
        self.slot.ended.notify_all();
    }
}

impl Indexing {
    /// Claims the indexing of the commit whose marker is `marker`: at once
    /// when no thread of this process is at it, else after that thread
    /// ended (done, or failed: then this caller takes it over).
    pub(crate) fn claim(&self, marker: &[u8]) -> Claim<'_> {
        loop {
            let other = {
                let mut running = lock(&self.running);
                match running.get(marker) {
                    Some(s) => s.clone(),
                    None => {
                        let slot = Arc::new(Slot {
                            outcome: Mutex::new(Outcome::Running),
                            ended: Condvar::new(),
                        });
                        running.insert(marker.to_vec(), slot.clone());
                        return Claim::Mine(Guard {
                            indexing: self,
                            marker: marker.to_vec(),
                            slot,
                            done: false,
                        });
                    }
                }
            };
            let mut outcome = lock(&other.outcome);
            while *outcome == Outcome::Running {
                outcome = wait(&other.ended, outcome);
            }
            if *outcome == Outcome::Done {
                return Claim::Done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_second_claim_waits_and_sees_it_done() {
        let ix = Arc::new(Indexing::default());
        let Claim::Mine(g) = ix.claim(b"m") else {
            panic!("first claim")
        };
        let writes = Arc::new(AtomicU32::new(0));
        let (ix2, w2) = (ix.clone(), writes.clone());
        let t = std::thread::spawn(move || match ix2.claim(b"m") {
            Claim::Mine(g) => {
                w2.fetch_add(1, Ordering::SeqCst);
                g.succeeded();
            }
            Claim::Done => {}
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        writes.fetch_add(1, Ordering::SeqCst);
        g.succeeded();
        t.join().unwrap();
        assert_eq!(writes.load(Ordering::SeqCst), 1, "indexed once");
        assert!(matches!(ix.claim(b"m"), Claim::Mine(_)), "free again");
    }

    #[test]
    fn a_failed_indexing_is_taken_over() {
        let ix = Arc::new(Indexing::default());
        let Claim::Mine(g) = ix.claim(b"m") else {
            panic!("first claim")
        };
        let ix2 = ix.clone();
        let t = std::thread::spawn(move || matches!(ix2.claim(b"m"), Claim::Mine(_)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(g); // failed
        assert!(t.join().unwrap(), "the waiter indexes it itself");
    }
}
