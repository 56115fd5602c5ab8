//! The commit pipeline: serialised, checks the 5 s window and read-write
//! conflicts against recent commits, injects faults, substitutes
//! versionstamps, writes redb durably and publishes the new version.

use tracing::debug;

use super::atomic;
use super::faults::UnknownOutcome;
use super::ranges::{normalize, single_key_range, KeyRange};
use super::writes::Mutation;
use super::{lock, write, Inner};
use crate::kv::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE, MVCC_WINDOW_MICROS};
use crate::kv::{CommitInfo, KvError, KvResult, MutationType, Version, Versionstamp};

/// What a transaction sends to commit.
pub(crate) struct CommitRequest {
    /// Needed when there are read-conflict ranges.
    pub(crate) read_version: Option<Version>,
    pub(crate) reads: Vec<KeyRange>,
    pub(crate) explicit_writes: Vec<KeyRange>,
    pub(crate) mutations: Vec<Mutation>,
    pub(crate) size: usize,
}

/// FDB's key and value limits over buffered mutations (2102 / 2103).
pub(crate) fn check_mutation_sizes(mutations: &[Mutation]) -> KvResult<()> {
    let key_err = |n: usize| {
        Err(KvError::new(
            KvError::KEY_TOO_LARGE,
            format!("key of {n} bytes (limit {MAX_KEY_SIZE})"),
        ))
    };
    let value_err = |n: usize| {
        Err(KvError::new(
            KvError::VALUE_TOO_LARGE,
            format!("value of {n} bytes (limit {MAX_VALUE_SIZE})"),
        ))
    };
    for m in mutations {
        let (key_len, value_len) = match m {
            Mutation::Set(k, v) => (k.len(), v.len()),
            Mutation::Clear(k) => (k.len(), 0),
            Mutation::ClearRange(..) => continue,
            Mutation::Atomic(k, p, MutationType::SetVersionstampedKey) => {
                (atomic::substituted_len(k), p.len())
            }
            Mutation::Atomic(k, p, MutationType::SetVersionstampedValue) => {
                (k.len(), atomic::substituted_len(p))
            }
            Mutation::Atomic(k, p, _) => (k.len(), p.len()),
        };
        if key_len > MAX_KEY_SIZE {
            return key_err(key_len);
        }
        if value_len > MAX_VALUE_SIZE {
            return value_err(value_len);
        }
    }
    Ok(())
}

/// Replaces versionstamp ops by the `Set`s they stand for.
fn resolve(mutations: Vec<Mutation>, stamp: &Versionstamp) -> KvResult<Vec<Mutation>> {
    mutations
        .into_iter()
        .map(|m| match m {
            Mutation::Atomic(k, p, MutationType::SetVersionstampedKey) => {
                Ok(Mutation::Set(atomic::substitute(&k, stamp)?, p))
            }
            Mutation::Atomic(k, p, MutationType::SetVersionstampedValue) => {
                Ok(Mutation::Set(k, atomic::substitute(&p, stamp)?))
            }
            other => Ok(other),
        })
        .collect()
}

/// The write-conflict ranges of resolved mutations plus explicit ones.
fn write_ranges(mutations: &[Mutation], explicit: Vec<KeyRange>) -> Vec<KeyRange> {
    let mut out = explicit;
    for m in mutations {
        match m {
            Mutation::Set(k, _) | Mutation::Clear(k) | Mutation::Atomic(k, _, _) => {
                out.push(single_key_range(k))
            }
            Mutation::ClearRange(b, e) => out.push((b.clone(), e.clone())),
        }
    }
    normalize(out)
}

fn written_bytes(mutations: &[Mutation]) -> u64 {
    mutations
        .iter()
        .map(|m| match m {
            Mutation::Set(k, v) | Mutation::Atomic(k, v, _) => k.len() + v.len(),
            Mutation::Clear(k) => k.len(),
            Mutation::ClearRange(b, e) => b.len() + e.len(),
        } as u64)
        .sum()
}

fn not_committed(message: String) -> KvError {
    KvError::new(KvError::NOT_COMMITTED, message)
}

impl Inner {
    /// One commit round trip.
    pub(crate) fn commit(&self, req: CommitRequest) -> KvResult<CommitInfo> {
        self.faults.commit_round_trip_latency();
        self.counters.commit();
        // Serialises commits; also guards the recent-writes history.
        let mut recent = lock(&self.recent);
        let now = self.clock.now_micros();
        let cutoff = now.saturating_sub(MVCC_WINDOW_MICROS);
        recent.prune(cutoff);
        write(&self.history).prune(cutoff);

        let reads = normalize(req.reads);
        if let (Some(rv), false) = (req.read_version, reads.is_empty()) {
            if now.saturating_sub(rv) > MVCC_WINDOW_MICROS || recent.is_beyond_horizon(rv) {
                return Err(KvError::new(
                    KvError::TRANSACTION_TOO_OLD,
                    format!(
                        "commit of a transaction whose read version {rv} is {:.3} s old",
                        now.saturating_sub(rv) as f64 / 1e6
                    ),
                ));
            }
            if let Some(v) = recent.first_conflict(rv, &reads) {
                self.counters.conflict();
                debug!(
                    op = "commit",
                    read_version = rv,
                    conflict_with = v,
                    "kv conflict"
                );
                return Err(not_committed(format!(
                    "a key read at version {rv} was written by the commit at version {v}"
                )));
            }
        }
        if self.faults.spurious_conflict() {
            self.counters.conflict();
            debug!(op = "commit", "injected conflict");
            return Err(not_committed("injected conflict (fault injection)".into()));
        }
        let unknown = self.faults.unknown_result();

        let version = self.versions.begin_commit(now);
        let stamp = Versionstamp::new(version, 0);
        let mutations = match resolve(req.mutations, &stamp) {
            Ok(m) => m,
            Err(e) => {
                self.versions.finish_commit(version, false);
                return Err(e);
            }
        };
        if unknown == Some(UnknownOutcome::Dropped) {
            self.versions.finish_commit(version, false);
            self.counters.unknown_result();
            debug!(
                op = "commit",
                version,
                applied = false,
                "injected unknown result"
            );
            return Err(unknown_result());
        }
        let writes = write_ranges(&mutations, req.explicit_writes);
        let applied = self.durable.commit(version, &mutations, |before| {
            write(&self.history).record(version, before);
        });
        if let Err(e) = applied {
            write(&self.history).forget(version);
            self.versions.finish_commit(version, false);
            return Err(e);
        }
        recent.record(version, writes);
        self.versions.finish_commit(version, true);
        let (history_commits, history_bytes) = write(&self.history).stats();
        let recent_commits = recent.len();
        drop(recent);

        let bytes = written_bytes(&mutations);
        self.counters.committed(req.size as u64, bytes);
        debug!(
            op = "commit",
            version,
            mutations = mutations.len(),
            bytes,
            size = req.size,
            history_commits,
            history_bytes,
            recent_commits,
            "kv round trip"
        );
        if unknown == Some(UnknownOutcome::Applied) {
            self.counters.unknown_result();
            return Err(unknown_result());
        }
        Ok(CommitInfo {
            version,
            versionstamp: Some(stamp),
        })
    }
}

fn unknown_result() -> KvError {
    KvError::new(
        KvError::COMMIT_UNKNOWN_RESULT,
        "injected commit_unknown_result (fault injection): the commit may or may not be applied",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versionstamped_ops_become_sets() {
        let mut key = b"k".to_vec();
        key.extend_from_slice(&[0xff; 10]);
        key.extend_from_slice(&1u32.to_le_bytes());
        let mut value = [0xffu8; 10].to_vec();
        value.extend_from_slice(b"tail");
        value.extend_from_slice(&0u32.to_le_bytes());
        let stamp = Versionstamp::new(42, 0);
        let out = resolve(
            vec![
                Mutation::Atomic(key, b"v".to_vec(), MutationType::SetVersionstampedKey),
                Mutation::Atomic(b"x".to_vec(), value, MutationType::SetVersionstampedValue),
            ],
            &stamp,
        )
        .unwrap();
        let mut want_key = b"k".to_vec();
        want_key.extend_from_slice(&stamp.0);
        let mut want_value = stamp.0.to_vec();
        want_value.extend_from_slice(b"tail");
        assert_eq!(
            out,
            vec![
                Mutation::Set(want_key, b"v".to_vec()),
                Mutation::Set(b"x".to_vec(), want_value)
            ]
        );
    }

    #[test]
    fn sizes_are_checked_per_mutation() {
        let big_key = vec![0u8; MAX_KEY_SIZE + 1];
        let big_value = vec![0u8; MAX_VALUE_SIZE + 1];
        let err = check_mutation_sizes(&[Mutation::Set(big_key.clone(), vec![])]).unwrap_err();
        assert_eq!(err.code, 2102);
        let err = check_mutation_sizes(&[Mutation::Set(b"k".to_vec(), big_value)]).unwrap_err();
        assert_eq!(err.code, 2103);
        // A clear range may span any keys.
        check_mutation_sizes(&[Mutation::ClearRange(vec![], big_key)]).unwrap();
    }

    #[test]
    fn write_ranges_merge() {
        let r = write_ranges(
            &[
                Mutation::Set(b"a".to_vec(), vec![]),
                Mutation::ClearRange(b"a".to_vec(), b"c".to_vec()),
            ],
            vec![(b"x".to_vec(), b"y".to_vec())],
        );
        assert_eq!(
            r,
            vec![
                (b"a".to_vec(), b"c".to_vec()),
                (b"x".to_vec(), b"y".to_vec())
            ]
        );
    }
}
