//! Embedded-backend specifics: fault injection, exact round-trip counters,
//! many threads, versions across reopen, MVCC history under load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::clock::ManualClock;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, Faults};
use pagestore::kv::{Kv, KvError, MutationType, RangeOption};

fn mem() -> Arc<EmbeddedKv> {
    EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap()
}

fn put(kv: &EmbeddedKv, key: &[u8], value: &[u8]) {
    let mut t = kv.begin().unwrap();
    t.set(key, value);
    t.commit().unwrap();
}

fn get(kv: &EmbeddedKv, key: &[u8]) -> Option<Vec<u8>> {
    kv.begin().unwrap().get(key, true).unwrap()
}

#[test]
fn injected_conflicts_fail_every_write_commit_and_apply_nothing() {
    let kv = mem();
    kv.set_faults(Faults {
        conflict_probability: 1.0,
        ..Faults::default()
    });
    assert_eq!(kv.faults().conflict_probability, 1.0);
    for i in 0..20u8 {
        let mut t = kv.begin().unwrap();
        t.set(&[i], b"x");
        let e = t.commit().unwrap_err();
        assert_eq!(e.code, KvError::NOT_COMMITTED);
        assert!(e.is_retryable_not_committed());
    }
    // Read-only commits are not affected.
    let mut t = kv.begin().unwrap();
    t.get(b"a", false).unwrap();
    t.commit().unwrap();
    let m = kv.metrics();
    assert_eq!((m.commits, m.conflicts, m.bytes_written), (20, 20, 0));
    kv.set_faults(Faults::default());
    for i in 0..20u8 {
        assert_eq!(get(&kv, &[i]), None, "a failed commit applied its write");
    }
}

#[test]
fn injected_unknown_results_apply_all_or_nothing() {
    let kv = mem();
    kv.set_faults(Faults {
        unknown_result_probability: 1.0,
        ..Faults::default()
    });
    let (mut applied, mut dropped) = (0, 0);
    for i in 0..200u32 {
        let key_a = format!("a{i}");
        let key_b = format!("b{i}");
        let mut t = kv.begin().unwrap();
        t.set(key_a.as_bytes(), b"1");
        t.atomic_op(key_b.as_bytes(), &1u64.to_le_bytes(), MutationType::Add);
        let e = commit_unknown(t);
        assert!(e.is_maybe_committed());
        match (get(&kv, key_a.as_bytes()), get(&kv, key_b.as_bytes())) {
            (Some(_), Some(_)) => applied += 1,
            (None, None) => dropped += 1,
            other => panic!("commit half applied: {other:?}"),
        }
    }
    assert!(
        applied > 0 && dropped > 0,
        "applied {applied}, dropped {dropped}"
    );
    assert_eq!(kv.metrics().unknown_results, 200);
}

#[test]
fn latency_is_added_to_each_round_trip() {
    let latency = Duration::from_millis(20);
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_faults(Faults {
        latency,
        ..Faults::default()
    }))
    .unwrap();
    let start = Instant::now();
    let mut t = kv.begin().unwrap();
    t.get(b"k", false).unwrap(); // GRV + read
    t.set(b"k", b"v");
    t.commit().unwrap(); // commit
    assert!(start.elapsed() >= latency * 3, "{:?}", start.elapsed());
    assert_eq!(kv.metrics().round_trips(), 3);
}

#[test]
fn counters_count_round_trips_exactly() {
    let kv = mem();
    let mut t = kv.begin().unwrap();
    assert_eq!(kv.metrics().round_trips(), 0, "begin is free");
    t.get(b"a", false).unwrap();
    t.set(b"a", b"12345");
    // Served from the write buffer: no round trip.
    assert_eq!(t.get(b"a", false).unwrap(), Some(b"12345".to_vec()));
    t.commit().unwrap();
    let m = kv.metrics();
    assert_eq!((m.read_versions, m.reads, m.commits), (1, 1, 1));
    assert_eq!(m.bytes_written, 6);
    assert!(m.max_commit_bytes >= 6);
    // A blind write is one round trip; a range read is one.
    let m0 = kv.metrics();
    put(&kv, b"b", b"xy");
    let mut t = kv.begin().unwrap();
    let r = t
        .get_range(&RangeOption::new(b"a".to_vec(), b"z".to_vec()), false)
        .unwrap();
    assert_eq!(r.kvs.len(), 2);
    let m = kv.metrics().since(&m0);
    assert_eq!((m.read_versions, m.reads, m.commits), (1, 1, 1));
    assert_eq!(m.bytes_read, 7);
    // A conflict is a counted commit.
    let mut t = kv.begin().unwrap();
    t.get(b"a", false).unwrap();
    put(&kv, b"a", b"changed");
    t.set(b"c", b"x");
    assert!(t.commit().unwrap_err().is_conflict());
    assert_eq!(kv.metrics().conflicts, 1);
}

#[test]
fn many_threads_increment_one_counter_serializably() {
    let kv = mem();
    let threads = 8;
    let per_thread = 50;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let kv = kv.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    loop {
                        let mut t = kv.begin().unwrap();
                        let n = t
                            .get(b"counter", false)
                            .unwrap()
                            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
                            .unwrap_or(0);
                        t.set(b"counter", &(n + 1).to_le_bytes());
                        match t.commit() {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n = u64::from_le_bytes(get(&kv, b"counter").unwrap().try_into().unwrap());
    assert_eq!(n, (threads * per_thread) as u64);
}

#[test]
fn old_read_versions_see_old_values_under_many_commits() {
    let kv = mem();
    put(&kv, b"k", &0u64.to_le_bytes());
    let mut readers = Vec::new();
    for i in 1..=50u64 {
        let mut t = kv.begin().unwrap();
        t.read_version().unwrap();
        readers.push((i - 1, t));
        put(&kv, b"k", &i.to_le_bytes());
        put(&kv, format!("n{i:03}").as_bytes(), b"x");
    }
    for (want, mut t) in readers {
        assert_eq!(
            t.get(b"k", true).unwrap(),
            Some(want.to_le_bytes().to_vec())
        );
        let r = t
            .get_range(&RangeOption::new(b"n".to_vec(), b"o".to_vec()), true)
            .unwrap();
        assert_eq!(r.kvs.len() as u64, want, "range at an old version");
    }
}

#[test]
fn versions_increase_across_reopen_and_data_persists() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    // Versions far ahead of the system clock, as after a clock step back.
    clock.advance_secs(3600);
    let last = {
        let kv =
            EmbeddedKv::open(EmbeddedOptions::dir(dir.path()).with_clock(clock.clone())).unwrap();
        let mut t = kv.begin().unwrap();
        t.set(b"k", b"v");
        t.commit().unwrap().version
    };
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
    assert_eq!(kv.committed_version(), last);
    assert_eq!(get(&kv, b"k"), Some(b"v".to_vec()));
    let mut t = kv.begin().unwrap();
    assert!(t.read_version().unwrap() >= last);
    t.set(b"k", b"w");
    assert!(t.commit().unwrap().version > last);
}

#[test]
fn second_open_of_a_directory_names_dir_and_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
    let e = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap_err();
    assert_eq!(e.code, KvError::OPERATION_FAILED);
    assert!(e.message.contains(&dir.path().display().to_string()), "{e}");
    assert!(
        e.message.contains(&format!("pid={}", std::process::id())),
        "{e}"
    );
}

#[test]
fn future_read_version_is_1009() {
    let kv = mem();
    let mut t = kv.begin().unwrap();
    let now = t.read_version().unwrap();
    let mut f = kv.begin().unwrap();
    f.set_read_version(now.after(3_600_000_000));
    assert_eq!(
        f.get(b"k", false).unwrap_err().code,
        KvError::FUTURE_VERSION
    );
}

#[test]
fn blind_write_with_old_read_version_commits_like_fdb() {
    // FDB checks the 5 s window at commit only for transactions with
    // read-conflict ranges.
    let clock = ManualClock::new();
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_clock(clock.clone())).unwrap();
    let mut t = kv.begin().unwrap();
    t.read_version().unwrap();
    clock.advance_secs(10);
    t.set(b"k", b"v");
    t.commit().unwrap();
    assert_eq!(get(&kv, b"k"), Some(b"v".to_vec()));
}

// --- FoundationDB behaviours the backend models (issue 10) ---

use pagestore::kv::embedded::{LateDelivery, LateOutcome, ModelCounts};
use pagestore::kv::{CommitInfo, KvTxn, Versionstamp, INCOMPLETE_VERSIONSTAMP};

fn with_faults(faults: Faults) -> Arc<EmbeddedKv> {
    EmbeddedKv::open(EmbeddedOptions::in_memory().with_faults(faults)).unwrap()
}

/// Always joins the open batch.
fn batching() -> Faults {
    Faults {
        batch_join_probability: 1.0,
        ..Faults::default()
    }
}

/// `prefix` + placeholder + `suffix` + offset: a SetVersionstampedKey key.
/// Faults under which every commit's result is unknown (1021) and the
/// commit is held, to land later as `delivery` says.
fn held(delivery: LateDelivery) -> Faults {
    Faults {
        late_unknown_probability: 1.0,
        late_delivery: delivery,
        ..Faults::default()
    }
}

/// Commits `t`, whose result must be unknown (1021); returns the error.
fn commit_unknown(t: Box<dyn KvTxn>) -> KvError {
    let e = t.commit().unwrap_err();
    assert_eq!(e.code, KvError::COMMIT_UNKNOWN_RESULT);
    e
}

fn stamped_key(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
    key.extend_from_slice(suffix);
    key.extend_from_slice(&(prefix.len() as u32).to_le_bytes());
    key
}

/// A blind commit (no read version asked) of one versionstamped log key.
fn blind_log(kv: &EmbeddedKv, tag: u8) -> CommitInfo {
    let mut t = kv.begin().unwrap();
    t.atomic_op(
        &stamped_key(b"log/", &[tag]),
        &[tag],
        MutationType::SetVersionstampedKey,
    );
    t.commit().unwrap()
}

fn u64_at(kv: &EmbeddedKv, key: &[u8]) -> u64 {
    get(kv, key).map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
}

/// Reads `key` (serializable) and writes it + 1: not idempotent.
fn increment(t: &mut Box<dyn KvTxn>, key: &[u8]) {
    let n = t
        .get(key, false)
        .unwrap()
        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
    t.set(key, &(n + 1).to_le_bytes());
}

#[test]
fn commits_of_one_batch_share_a_version_and_order_by_versionstamp() {
    let kv = with_faults(batching());
    let infos: Vec<CommitInfo> = (0..3).map(|i| blind_log(&kv, i)).collect();
    let v = infos[0].version;
    for (i, info) in infos.iter().enumerate() {
        assert_eq!(
            info.version, v,
            "commit {i} did not join the batch: {infos:?}"
        );
        assert_eq!(
            info.versionstamp,
            Some(Versionstamp::new(v, i as u16)),
            "batch order of commit {i}"
        );
    }
    // Byte order of the versionstamped keys is commit order.
    let mut t = kv.begin().unwrap();
    let rv = t.read_version().unwrap();
    assert!(rv >= v, "read version {rv} below the batch {v}");
    let rows = t
        .get_range(&RangeOption::new(b"log/".to_vec(), b"log0".to_vec()), false)
        .unwrap()
        .kvs;
    let values: Vec<Vec<u8>> = rows.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, vec![vec![0], vec![1], vec![2]]);
    // The read version closed the batch: the next commit has a new version.
    let next = blind_log(&kv, 3);
    assert!(
        next.version > rv,
        "{next:?} joined a batch a reader observed"
    );
    assert_eq!(next.versionstamp.map(|s| s.order()), Some(0));
    assert_eq!(kv.model_counts().batch_joins, 2);
    // Without the fault, versions are distinct.
    let plain = mem();
    let a = blind_log(&plain, 0);
    let b = blind_log(&plain, 1);
    assert!(b.version > a.version);
}

#[test]
fn a_later_batch_member_conflicts_with_an_earlier_ones_writes() {
    let kv = with_faults(batching());
    put(&kv, b"k", b"0");
    put(&kv, b"j", b"0");
    // Both read before the batch.
    let mut reads_k = kv.begin().unwrap();
    reads_k.get(b"k", false).unwrap();
    let mut reads_j = kv.begin().unwrap();
    reads_j.get(b"j", false).unwrap();
    // First member of a new batch writes k.
    let mut w = kv.begin().unwrap();
    w.set(b"k", b"1");
    let first = w.commit().unwrap();
    // A member reading j joins the batch; one reading k conflicts with the
    // first member, although both would share its version.
    reads_j.set(b"out-j", b"x");
    let joined = reads_j.commit().unwrap();
    assert_eq!(joined.version, first.version);
    assert_eq!(joined.versionstamp.map(|s| s.order()), Some(1));
    reads_k.set(b"out-k", b"x");
    let e = reads_k.commit().unwrap_err();
    assert_eq!(e.code, KvError::NOT_COMMITTED, "{e}");
    assert_eq!(get(&kv, b"out-k"), None);
}

#[test]
fn a_read_version_never_splits_a_batch() {
    let kv = with_faults(batching());
    let first = blind_log(&kv, 0);
    // A version set explicitly at the batch closes it too.
    let mut at = kv.begin().unwrap();
    at.set_read_version(first.version);
    assert_eq!(at.get(b"log/", false).unwrap(), None);
    let second = blind_log(&kv, 1);
    assert!(second.version > first.version);
    // Reads at the first version see exactly the first commit.
    let mut old = kv.begin().unwrap();
    old.set_read_version(first.version);
    let rows = old
        .get_range(&RangeOption::new(b"log/".to_vec(), b"log0".to_vec()), true)
        .unwrap()
        .kvs;
    assert_eq!(rows.len(), 1);
    // Many threads: every read sees whole batches (a batch's keys all or
    // none), and a client always reads its own acknowledged commit.
    let kv2 = kv.clone();
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let kv = kv2.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let mut t = kv.begin().unwrap();
                    let key = [b'w', w, i];
                    t.set(&key, b"x");
                    t.atomic_op(b"count", &1u64.to_le_bytes(), MutationType::Add);
                    t.commit().unwrap();
                    // Read-your-commits: the acknowledged write is visible
                    // (checked now and then: each check closes the batch).
                    if i % 5 == 0 {
                        assert_eq!(
                            get(&kv, &key),
                            Some(b"x".to_vec()),
                            "own commit not visible"
                        );
                    }
                }
            })
        })
        .collect();
    for _ in 0..200 {
        let mut t = kv.begin().unwrap();
        let count = t
            .get(b"count", true)
            .unwrap()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        let rows = t
            .get_range(&RangeOption::new(b"w".to_vec(), b"x".to_vec()), true)
            .unwrap()
            .kvs;
        assert_eq!(rows.len() as u64, count, "a read saw part of a commit");
    }
    for h in writers {
        h.join().unwrap();
    }
    assert_eq!(u64_at(&kv, b"count"), 200);
    // How many joined depends on thread timing; the sequential tests above
    // pin the behaviour down.
    eprintln!("batch joins: {}", kv.model_counts().batch_joins);
}

#[test]
fn late_unknown_result_lands_before_the_retry_and_conflicts_with_it() {
    let kv = with_faults(held(LateDelivery::NextCommit));
    let mut first = kv.begin().unwrap();
    increment(&mut first, b"n");
    commit_unknown(first);
    assert_eq!(u64_at(&kv, b"n"), 0, "a held commit was applied at once");
    assert_eq!(kv.model_counts().late_pending, 1);
    kv.set_faults(Faults::default());
    // The retry starts, reads the old value...
    let mut retry = kv.begin().unwrap();
    increment(&mut retry, b"n");
    // ...and the first attempt lands when the retry's commit arrives: the
    // retry is told "conflict", though the first attempt committed.
    let e = retry.commit().unwrap_err();
    assert_eq!(e.code, KvError::NOT_COMMITTED, "{e}");
    assert_eq!(u64_at(&kv, b"n"), 1);
    let c = kv.model_counts();
    assert_eq!(
        (c.late_held, c.late_applied, c.late_refused, c.late_pending),
        (1, 1, 0, 0)
    );
    assert_eq!(kv.metrics().unknown_results, 1);
}

#[test]
fn late_unknown_result_doubles_a_blind_retry() {
    // The hazard FDB documents: a non-idempotent retry after 1021.
    let kv = with_faults(held(LateDelivery::NextCommit));
    let mut first = kv.begin().unwrap();
    first.atomic_op(b"n", &1u64.to_le_bytes(), MutationType::Add);
    commit_unknown(first);
    kv.set_faults(Faults::default());
    let mut retry = kv.begin().unwrap();
    retry.atomic_op(b"n", &1u64.to_le_bytes(), MutationType::Add);
    let info = retry.commit().unwrap();
    assert_eq!(u64_at(&kv, b"n"), 2, "the late first attempt did not land");
    assert_eq!(kv.model_counts().late_applied, 1);
    assert!(info.version > pagestore::kv::Version::ZERO);
}

#[test]
fn late_commit_is_resolved_when_it_lands() {
    let kv = with_faults(held(LateDelivery::Manual));
    // Refused: a key it read changed after its read version.
    let mut t = kv.begin().unwrap();
    increment(&mut t, b"n");
    commit_unknown(t);
    kv.set_faults(Faults {
        late_delivery: LateDelivery::Manual,
        ..Faults::default()
    });
    put(&kv, b"n", &5u64.to_le_bytes());
    assert_eq!(
        kv.model_counts().late_pending,
        1,
        "delivered by a commit in manual mode"
    );
    assert_eq!(
        kv.deliver_late_commits(),
        LateOutcome {
            applied: 0,
            refused: 1
        }
    );
    assert_eq!(u64_at(&kv, b"n"), 5);
    // Applied: a new version above every read version handed out so far.
    kv.set_faults(held(LateDelivery::Manual));
    let mut t = kv.begin().unwrap();
    increment(&mut t, b"n");
    commit_unknown(t);
    let mut reader = kv.begin().unwrap();
    let rv = reader.read_version().unwrap();
    assert_eq!(
        kv.deliver_late_commits(),
        LateOutcome {
            applied: 1,
            refused: 0
        }
    );
    assert!(kv.committed_version() > rv);
    assert_eq!(
        reader.get(b"n", true).unwrap(),
        Some(5u64.to_le_bytes().to_vec())
    );
    assert_eq!(u64_at(&kv, b"n"), 6);
    assert_eq!(kv.deliver_late_commits(), LateOutcome::default());
    let c: ModelCounts = kv.model_counts();
    assert_eq!(
        (c.late_held, c.late_applied, c.late_refused, c.late_pending),
        (2, 1, 1, 0)
    );
}

#[test]
fn late_commit_is_refused_after_the_window() {
    let clock = ManualClock::new();
    let kv = EmbeddedKv::open(
        EmbeddedOptions::in_memory()
            .with_clock(clock.clone())
            .with_faults(held(LateDelivery::Manual)),
    )
    .unwrap();
    // One with reads (too old at its read version), one blind (held too
    // long): neither lands after 6 s.
    let mut reads = kv.begin().unwrap();
    increment(&mut reads, b"n");
    commit_unknown(reads);
    let mut blind = kv.begin().unwrap();
    blind.set(b"b", b"1");
    commit_unknown(blind);
    kv.set_faults(Faults::default());
    clock.advance_secs(6);
    // Delivered by the next commit (the default), 6 s later.
    put(&kv, b"other", b"x");
    let c = kv.model_counts();
    assert_eq!((c.late_applied, c.late_refused, c.late_pending), (0, 2, 0));
    assert_eq!(get(&kv, b"n"), None);
    assert_eq!(get(&kv, b"b"), None);
}

#[test]
fn random_late_delivery_lands_held_commits_at_some_later_commit() {
    let kv = with_faults(held(LateDelivery::Random));
    let mut t = kv.begin().unwrap();
    t.atomic_op(b"n", &1u64.to_le_bytes(), MutationType::Add);
    commit_unknown(t);
    kv.set_faults(Faults {
        late_delivery: LateDelivery::Random,
        ..Faults::default()
    });
    // Two chances of 1/2 per commit: left held after 50 commits with
    // probability 2^-100.
    for i in 0..50u8 {
        put(&kv, &[b'p', i], b"x");
    }
    let c = kv.model_counts();
    assert_eq!((c.late_applied, c.late_pending), (1, 0));
    assert_eq!(u64_at(&kv, b"n"), 1);
}
