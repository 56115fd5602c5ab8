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
        let e = t.commit().unwrap_err();
        assert_eq!(e.code, KvError::COMMIT_UNKNOWN_RESULT);
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
    f.set_read_version(now + 3_600_000_000);
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
