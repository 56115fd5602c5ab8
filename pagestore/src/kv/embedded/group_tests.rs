//! Group commit (see `group`): members resolved as serial commits, one
//! redb write and one sync per group, none acknowledged when the write
//! fails, relaxed groups without a sync, one commit counted per member.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::CommitRequest;
use super::conflict_ranges::single_key_range;
use super::writes::Mutation;
use super::{EmbeddedKv, EmbeddedOptions};
use crate::kv::{Durability, Kv, KvError, Version};
use crate::sync::lock;

fn store() -> Arc<EmbeddedKv> {
    EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap()
}

fn syncs(kv: &EmbeddedKv) -> u64 {
    kv.store.durable.disk.as_ref().unwrap().syncs()
}

/// A commit that sets `key` to `value`, having read `reads` at `rv`.
fn req(rv: Version, reads: &[&[u8]], key: &[u8], value: &[u8]) -> CommitRequest {
    CommitRequest {
        read_version: Some(rv),
        reads: reads.iter().map(|k| single_key_range(k)).collect(),
        explicit_writes: Vec::new(),
        mutations: vec![Mutation::Set(key.to_vec(), value.to_vec())],
        size: key.len() + value.len(),
        durability: Durability::Full,
    }
}

fn get(kv: &EmbeddedKv, key: &[u8]) -> Option<Vec<u8>> {
    kv.begin().unwrap().get(key, false).unwrap()
}

#[test]
fn a_member_conflicting_with_an_earlier_one_of_its_group_is_refused() {
    let kv = store();
    let rv = kv.store.get_read_version();
    // Both read "k" at rv; the first writes it. Serially the second would
    // conflict with the first: in one group too.
    let out = kv.store.commit_group(vec![
        req(rv, &[b"k"], b"k", b"1"),
        req(rv, &[b"k"], b"other", b"2"),
        // Reads nothing the first two wrote: commits.
        req(rv, &[b"x"], b"y", b"3"),
    ]);
    let v1 = out[0].as_ref().unwrap().version;
    let e = out[1].as_ref().unwrap_err();
    assert_eq!(e.code, KvError::NOT_COMMITTED, "{e}");
    assert!(e.message.contains(&v1.to_string()), "{e}");
    let v3 = out[2].as_ref().unwrap().version;
    assert!(v3 > v1);
    assert_eq!(get(&kv, b"k"), Some(b"1".to_vec()));
    assert_eq!(get(&kv, b"other"), None);
    assert_eq!(get(&kv, b"y"), Some(b"3".to_vec()));
    assert_eq!(kv.committed_version(), v3);
}

#[test]
fn each_member_gets_its_own_version_and_reads_see_each() {
    let kv = store();
    let rv = kv.store.get_read_version();
    let out = kv
        .store
        .commit_group(vec![req(rv, &[], b"k", b"1"), req(rv, &[], b"k", b"2")]);
    let (a, b) = (out[0].clone().unwrap(), out[1].clone().unwrap());
    assert!(b.versionstamp > a.versionstamp);
    // A reader at the first member's version sees it, not the second.
    let mut t = kv.begin().unwrap();
    t.set_read_version(a.version);
    if a.version < b.version {
        assert_eq!(t.get(b"k", false).unwrap(), Some(b"1".to_vec()));
    }
    assert_eq!(get(&kv, b"k"), Some(b"2".to_vec()));
}

#[test]
fn a_failed_sync_acknowledges_no_member_of_the_group() {
    let kv = store();
    let rv = kv.store.get_read_version();
    let before = kv.committed_version();
    kv.store.durable.disk.as_ref().unwrap().fail_syncs(true);
    let out = kv
        .store
        .commit_group(vec![req(rv, &[], b"a", b"1"), req(rv, &[], b"b", b"2")]);
    kv.store.durable.disk.as_ref().unwrap().fail_syncs(false);
    for r in &out {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.code, KvError::IO_ERROR, "{e}");
    }
    assert_eq!(kv.committed_version(), before);
    // Nothing of the group is visible at any read version handed out now.
    let mut t = kv.begin().unwrap();
    for k in [b"a", b"b"] {
        match t.get(k, false) {
            Ok(v) => assert_eq!(v, None),
            // redb refuses to go on after a failed sync: not visible either.
            Err(e) => assert_eq!(e.code, KvError::IO_ERROR, "{e}"),
        }
    }
}

#[test]
fn a_group_of_relaxed_commits_is_not_synced_and_a_full_one_is() {
    let kv = store();
    let rv = kv.store.get_read_version();
    let mut relaxed = req(rv, &[], b"a", b"1");
    relaxed.durability = Durability::Relaxed;
    let s0 = syncs(&kv);
    kv.store.commit_group(vec![relaxed]).remove(0).unwrap();
    assert_eq!(syncs(&kv), s0, "a relaxed commit synced");
    assert_eq!(kv.model_counts().relaxed_commits, 1);
    assert_eq!(get(&kv, b"a"), Some(b"1".to_vec()));
    // A group with one full member is synced (and carries the relaxed one).
    let mut relaxed = req(rv, &[], b"b", b"2");
    relaxed.durability = Durability::Relaxed;
    let out = kv
        .store
        .commit_group(vec![relaxed, req(rv, &[], b"c", b"3")]);
    assert!(out.iter().all(Result::is_ok));
    assert!(syncs(&kv) > s0, "a full commit was not synced");
    assert_eq!(kv.model_counts().relaxed_commits, 1);
}

/// Holds the commit lock while `n` threads commit: committer 0 first,
/// which leads a group of its own and waits for the lock, then the others,
/// released once all of them are queued behind it: they form one group.
fn commit_queued_behind_the_lock(
    kv: &Arc<EmbeddedKv>,
    n: usize,
    commit: impl Fn(usize) -> Result<(), KvError> + Send + Sync + 'static,
) -> Vec<Result<(), KvError>> {
    let commit = Arc::new(commit);
    let held = lock(&kv.store.recent);
    let spawn = |i: usize| {
        let commit = commit.clone();
        std::thread::spawn(move || commit(i))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait_until = |done: &dyn Fn() -> bool| {
        while !done() {
            assert!(Instant::now() < deadline, "committers never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut threads = vec![spawn(0)];
    wait_until(&|| kv.store.queue.leading());
    threads.extend((1..n).map(spawn));
    wait_until(&|| kv.store.queue.queued() == n - 1);
    drop(held);
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn commits_queued_behind_the_lock_share_one_sync_and_count_one_commit_each() {
    let kv = store();
    let n = 8;
    let m0 = kv.metrics();
    let s0 = syncs(&kv);
    let g0 = kv.model_counts().groups;
    let k2 = kv.clone();
    let out = commit_queued_behind_the_lock(&kv, n, move |i| {
        let mut t = k2.begin()?;
        t.get(format!("r{i}").as_bytes(), false)?;
        t.set(format!("k{i}").as_bytes(), b"v");
        t.commit().map(|_| ())
    });
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    let m = kv.metrics().since(&m0);
    assert_eq!(m.commits, n as u64);
    assert_eq!(m.conflicts, 0);
    assert_eq!(kv.model_counts().groups - g0, 2);
    // Two groups: the first committer alone, then the seven queued; each
    // group costs what one commit alone costs.
    let two_groups = syncs(&kv) - s0;
    let s1 = syncs(&kv);
    let mut t = kv.begin().unwrap();
    t.set(b"alone", b"v");
    t.commit().unwrap();
    let one = syncs(&kv) - s1;
    assert!(one > 0);
    assert_eq!(two_groups, 2 * one, "syncs for two groups");
    for i in 0..n {
        assert_eq!(get(&kv, format!("k{i}").as_bytes()), Some(b"v".to_vec()));
    }
}

#[test]
fn read_modify_writes_queued_in_one_group_conflict_as_if_serial() {
    let kv = store();
    let n = 6;
    let m0 = kv.metrics();
    let k2 = kv.clone();
    let rv = kv.store.get_read_version();
    let out = commit_queued_behind_the_lock(&kv, n, move |i| {
        let mut t = k2.begin()?;
        t.set_read_version(rv);
        if i == 0 {
            // Alone in its group, touching nothing the others read.
            t.set(b"unrelated", b"x");
            return t.commit().map(|_| ());
        }
        let c = t
            .get(b"count", false)?
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        t.set(b"count", &(c + 1).to_le_bytes());
        t.commit().map(|_| ())
    });
    // Committers 1.. read the same count at the same read version and are
    // all in one group: the first of them wins and every other conflicts
    // with it, as serial commits would.
    assert!(out[0].is_ok(), "{out:?}");
    let ok = out.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "{out:?}");
    for e in out.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code, KvError::NOT_COMMITTED, "{e}");
    }
    assert_eq!(get(&kv, b"count"), Some(1u64.to_le_bytes().to_vec()));
    let m = kv.metrics().since(&m0);
    assert_eq!(m.commits, n as u64);
    assert_eq!(m.conflicts, n as u64 - 2);
}
