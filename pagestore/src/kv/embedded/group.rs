//! Group commit: commits that arrive while another is being written wait
//! in a queue, and the next one to run takes everyone queued and commits
//! them together, in arrival order, in one redb write and one fsync.
//!
//! Why: the durable store syncs its disk once per redb commit (several
//! milliseconds here), under the commit lock; one commit per sync makes
//! concurrent writers queue behind the disk. FoundationDB's proxies batch
//! commits the same way. Each commit of a group is still resolved on its
//! own, exactly as if the commits ran one after the other (its own version
//! and versionstamp, conflicts with the commits before it in the group
//! included, its own injected faults): only the write to disk is shared.
//! See [`super::commit`] for what is done to each commit, and
//! [`StoreState::commit_group`] for the group as a whole.
//!
//! Leader and followers: a committer queues its request; when no group is
//! being committed it leads (takes the queue, up to [`MAX_GROUP_COMMITS`]
//! commits or [`MAX_GROUP_BYTES`] bytes, commits them, hands every result
//! back); otherwise it waits for its result, or for the leader to finish
//! and lead the next group itself.

#![warn(clippy::too_many_lines)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::commit::CommitRequest;
use super::StoreState;
use crate::kv::{CommitInfo, KvError, KvResult};
use crate::sync::{lock, wait};

/// Most commits in one group.
pub(crate) const MAX_GROUP_COMMITS: usize = 256;
/// Most bytes (transaction sizes, as counted against FDB's 10 MB limit) in
/// one group; a single larger commit still forms a group of its own.
pub(crate) const MAX_GROUP_BYTES: usize = 64 << 20;

/// A queued commit.
struct Queued {
    id: u64,
    req: CommitRequest,
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<Queued>,
    /// Results of committed requests, until their committer takes them.
    results: HashMap<u64, KvResult<CommitInfo>>,
    next_id: u64,
    /// A leader is committing a group.
    leading: bool,
}

/// The queue of commits waiting for the commit lock.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<QueueState>,
    done: Condvar,
}

impl CommitQueue {
    /// Commits queued and not yet taken by a leader (tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    /// A leader is committing a group (tests).
    #[cfg(test)]
    pub(crate) fn leading(&self) -> bool {
        lock(&self.state).leading
    }
}

impl QueueState {
    /// The oldest queued requests, as many as a group may hold.
    fn take_group(&mut self) -> Vec<Queued> {
        let mut bytes = 0usize;
        let mut group = Vec::new();
        while let Some(next) = self.waiting.front() {
            let full = group.len() >= MAX_GROUP_COMMITS
                || (!group.is_empty() && bytes + next.req.size > MAX_GROUP_BYTES);
            if full {
                break;
            }
            bytes += next.req.size;
            group.extend(self.waiting.pop_front());
        }
        group
    }
}

/// Hands a group's results back even when committing it panicked (every
/// member then hears 1021: it may or may not have landed).
struct Leading<'a> {
    queue: &'a CommitQueue,
    ids: Vec<u64>,
    results: Option<Vec<KvResult<CommitInfo>>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let results = self.results.take();
        let mut s = lock(&self.queue.state);
        match results {
            Some(r) => s.results.extend(self.ids.iter().copied().zip(r)),
            None => {
                let e = KvError::new(
                    KvError::COMMIT_UNKNOWN_RESULT,
                    "the commit of this transaction's group failed unexpectedly: it may or may not be applied",
                );
                s.results
                    .extend(self.ids.iter().map(|id| (*id, Err(e.clone()))));
            }
        }
        s.leading = false;
        drop(s);
        self.queue.done.notify_all();
    }
}

impl StoreState {
    /// Queues `req` for the next group commit and returns its result.
    pub(crate) fn commit_queued(&self, req: CommitRequest) -> KvResult<CommitInfo> {
        let mut s = lock(&self.queue.state);
        let id = s.next_id;
        s.next_id += 1;
        s.waiting.push_back(Queued { id, req });
        loop {
            if let Some(r) = s.results.remove(&id) {
                return r;
            }
            if s.leading {
                s = wait(&self.queue.done, s);
                continue;
            }
            s = self.lead(s);
        }
    }

    /// Commits the oldest queued requests as one group (the caller's own
    /// may be among them, or still queued when the group is full).
    fn lead<'a>(&'a self, mut s: MutexGuard<'a, QueueState>) -> MutexGuard<'a, QueueState> {
        let group = s.take_group();
        s.leading = true;
        drop(s);
        let (ids, reqs): (Vec<u64>, Vec<CommitRequest>) =
            group.into_iter().map(|q| (q.id, q.req)).unzip();
        let mut leading = Leading {
            queue: &self.queue,
            ids,
            results: None,
        };
        leading.results = Some(self.commit_group(reqs));
        drop(leading);
        lock(&self.queue.state)
    }
}
