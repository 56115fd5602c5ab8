//! History through SQL, the Rust API and the CLI (issue 6): time travel
//! by time and version, forks, restore, retention and GC.
//!
//! Time is a [`ManualClock`] moved forward by the tests (1 s per commit),
//! so "50 seconds of history" costs no waiting.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fdbvfs::{At, Store, Version};
use pagestore::clock::{Clock, ManualClock};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use support::{assert_integrity, scalar, scalar_with};

type Rows = Vec<(i64, String)>;

/// An in-memory store on a clock the test moves.
fn clocked_store() -> (Store, Arc<ManualClock>) {
    clocked_store_with(Store::builder())
}

/// [`clocked_store`] that also collects garbage every `interval`.
fn clocked_store_collecting_every(interval: Duration) -> (Store, Arc<ManualClock>) {
    clocked_store_with(Store::builder().gc_interval(interval))
}

fn clocked_store_with(builder: fdbvfs::StoreBuilder) -> (Store, Arc<ManualClock>) {
    support::init_tracing();
    let clock = ManualClock::new();
    let store = builder
        .in_memory()
        .clock(clock.clone())
        .build()
        .unwrap_or_else(|e| panic!("store: {e}"));
    (store, clock)
}

fn rows(c: &Connection) -> rusqlite::Result<Rows> {
    let mut s = c.prepare("SELECT k, v FROM kv ORDER BY k")?;
    let r = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Rows>>();
    r
}

fn version(c: &Connection) -> rusqlite::Result<Version> {
    let v: String = scalar(c, "PRAGMA fdb_version");
    Ok(v.parse()
        .unwrap_or_else(|e| panic!("fdb_version {v:?}: {e}")))
}

fn time_of(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

/// RFC 3339 text for `at=`, computed independently of `fdbvfs::At`.
fn rfc3339(micros: u64) -> String {
    humantime::format_rfc3339_micros(time_of(micros)).to_string()
}

/// Opens `name` read-only through a URI with `at=<RFC 3339>`.
fn open_uri_at(store: &Store, name: &str, micros: u64) -> rusqlite::Result<Connection> {
    let uri = format!("{}&at={}", store.uri(name), rfc3339(micros));
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
}

fn code(e: &rusqlite::Error) -> Option<ErrorCode> {
    e.sqlite_error_code()
}

/// One random change to `kv` (insert, update or delete) and a step
/// marker (so that every step is a commit), in one transaction.
fn mutate(c: &Connection, rng: &mut StdRng, i: u64) -> rusqlite::Result<()> {
    let k = rng.random_range(0..20i64);
    let tx = c.unchecked_transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO kv VALUES (-1, ?1)",
        [format!("step {i}")],
    )?;
    match rng.random_range(0..3) {
        0 => c.execute(
            "INSERT OR REPLACE INTO kv VALUES (?1, ?2)",
            (k, format!("v{i}")),
        )?,
        1 => c.execute("UPDATE kv SET v = v || ?1 WHERE k >= 0", [format!("+{i}")])?,
        _ => c.execute("DELETE FROM kv WHERE k = ?1", [k])?,
    };
    tx.commit()
}

struct History {
    /// After commit i: (clock time, commit version, contents).
    states: Vec<(u64, Version, Rows)>,
}

/// Writes 50 versions, 1 s apart.
fn write_history(store: &Store, clock: &ManualClock, name: &str, n: u64) -> History {
    let c = store.open(name).unwrap_or_else(|e| panic!("open: {e}"));
    c.execute_batch("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = StdRng::seed_from_u64(6);
    let mut states = Vec::new();
    for i in 0..n {
        clock.advance_secs(1);
        mutate(&c, &mut rng, i).unwrap_or_else(|e| panic!("{e}"));
        let v = version(&c).unwrap_or_else(|e| panic!("{e}"));
        states.push((
            clock.now_micros(),
            v,
            rows(&c).unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    // Times up to 1 s after the last commit are in the past now.
    clock.advance_secs(1);
    History { states }
}

#[test]
fn time_travel_by_time_answers_the_exact_contents_at_50_versions() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store();
    let name = support::name("tt");
    let h = write_history(&store, &clock, &name, 50);
    let mut rng = StdRng::seed_from_u64(60);
    for _ in 0..10 {
        let k = rng.random_range(0..50usize);
        let (t, v, ref want) = h.states[k];
        // Between commit k and commit k+1 (they are 1 s apart).
        let at = t + rng.random_range(0..900_000);
        let by_uri = open_uri_at(&store, &name, at)?;
        assert_eq!(&rows(&by_uri)?, want, "URI at={} (commit {k})", rfc3339(at));
        assert_eq!(version(&by_uri)?, v, "fdb_version of at={}", rfc3339(at));
        let by_api = store.open_at(&name, At::Time(time_of(at)))?;
        assert_eq!(&rows(&by_api)?, want);
        assert_eq!(version(&by_api)?, v);
        let by_version = store.open_at(&name, At::Version(v))?;
        assert_eq!(&rows(&by_version)?, want);
        assert_eq!(store.version_at(&name, At::Time(time_of(at)))?, v);
        // Read-only, with SQLITE_READONLY.
        let e = by_uri
            .execute("INSERT INTO kv VALUES (100, 'x')", [])
            .err()
            .unwrap_or_else(|| panic!("a time-travel write succeeded"));
        assert_eq!(code(&e), Some(ErrorCode::ReadOnly), "{e}");
        let e = by_api.execute("DELETE FROM kv", []).err();
        assert_eq!(e.as_ref().and_then(code), Some(ErrorCode::ReadOnly));
    }
    // The present is unchanged by all that.
    let now = store.open(&name)?;
    assert_eq!(rows(&now)?, h.states[49].2);
    Ok(())
}

#[test]
fn time_travel_outside_the_history_is_refused_clearly() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store();
    let name = support::name("tt-out");
    let h = write_history(&store, &clock, &name, 3);
    let created = h.states[0].0 - 2_000_000;
    let err = |at: At| {
        store
            .open_at(&name, at)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("open at {at} succeeded"))
    };
    let e = err(At::Time(time_of(created - 10_000_000)));
    assert!(e.contains("did not exist"), "{e}");
    let e = err(At::Time(time_of(clock.now_micros() + 3_600_000_000)));
    assert!(e.contains("in the future"), "{e}");
    let e = err(At::Version(Version::new(u64::MAX / 2)));
    assert!(e.contains("in the future"), "{e}");
    // A bad at= names the parameter and the accepted forms.
    let uri = format!("{}&at=yesterday", store.uri(&name));
    let e = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .err();
    assert!(e.is_some());
    let msg = vfs::take_last_error().unwrap_or_default();
    assert!(msg.contains("at=") && msg.contains("RFC 3339"), "{msg}");
    Ok(())
}

fn count_and_sum(c: &Connection, table: &str) -> rusqlite::Result<(i64, i64)> {
    c.query_row(
        &format!("SELECT count(*), coalesce(sum(length(b)), 0) FROM {table}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

#[test]
fn fork_of_100_mb_costs_the_same_round_trips_as_fork_of_an_empty_database(
) -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let (big, empty) = (support::name("big"), support::name("empty"));
    store
        .open(&empty)?
        .execute_batch("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")?;
    let c = store.open(&big)?;
    c.execute_batch("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")?;
    // 100 MB in 10 commits of 10 MB.
    for chunk in 0..10 {
        c.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO blobs(id, b) SELECT ?1 * 100 + i, randomblob(100000) FROM n",
            [chunk],
        )?;
    }
    let want = count_and_sum(&c, "blobs")?;
    assert_eq!(want, (1000, 100_000_000));
    let cost = |src: &str, dst: &str| -> Result<u64, fdbvfs::Error> {
        let before = store.page_store().kv().metrics().round_trips();
        store.fork(src, dst, None)?;
        Ok(store.page_store().kv().metrics().round_trips() - before)
    };
    let big_fork = support::name("big-fork");
    let (empty_cost, big_cost) = (
        cost(&empty, &support::name("empty-fork"))?,
        cost(&big, &big_fork)?,
    );
    assert_eq!(
        big_cost, empty_cost,
        "round trips of a fork of 100 MB vs of an empty database"
    );
    assert!(big_cost <= 16, "{big_cost} round trips for a fork");
    // And the fork has it all.
    let f = store.open(&big_fork)?;
    assert_eq!(count_and_sum(&f, "blobs")?, want);
    assert_integrity(&f);
    Ok(())
}

#[test]
fn forks_are_isolated_both_ways_forks_of_forks_and_forks_at_a_time() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store();
    let src = support::name("src");
    let h = write_history(&store, &clock, &src, 10);
    let latest = h.states[9].2.clone();

    // Fork now; write both sides.
    let a = support::name("fork-a");
    let at_v = store.fork(&src, &a, None)?;
    // The latest version (the store's version moves on without commits).
    assert!(at_v >= h.states[9].1);
    let (cs, ca) = (store.open(&src)?, store.open(&a)?);
    assert_eq!(rows(&ca)?, latest);
    ca.execute("INSERT OR REPLACE INTO kv VALUES (1000, 'only in a')", [])?;
    cs.execute("INSERT OR REPLACE INTO kv VALUES (2000, 'only in src')", [])?;
    let has = |c: &Connection, k: i64| -> bool {
        scalar_with::<i64>(c, "SELECT count(*) FROM kv WHERE k = ?1", [k]) == 1
    };
    assert!(
        has(&ca, 1000) && !has(&ca, 2000),
        "fork sees its own write only"
    );
    assert!(
        has(&cs, 2000) && !has(&cs, 1000),
        "source sees its own write only"
    );

    // A fork of the fork (through the pragma), isolated from both.
    let b = support::name("fork-b");
    let pinned: String = scalar(&ca, &format!("PRAGMA fdb_fork = '{b}'"));
    let cb = store.open(&b)?;
    assert!(has(&cb, 1000) && !has(&cb, 2000));
    assert_eq!(version(&ca)?.to_string(), pinned);
    cb.execute("DELETE FROM kv", [])?;
    assert!(has(&ca, 1000), "the fork's fork wrote into its origin");
    assert_eq!(rows(&cb)?, vec![]);

    // Fork at a time (Rust API) and from a time-travel connection (pragma).
    let (t3, v3, ref rows3) = h.states[3];
    let c = support::name("fork-at-time");
    assert_eq!(
        store.fork(&src, &c, Some(At::Time(time_of(t3 + 500_000))))?,
        v3
    );
    let cc = store.open(&c)?;
    assert_eq!(&rows(&cc)?, rows3);
    cc.execute("INSERT INTO kv VALUES (3000, 'c')", [])?;
    let old = store.open_at(&src, At::Time(time_of(t3 + 1)))?;
    let d = support::name("fork-of-the-past");
    let got: String = scalar(&old, &format!("PRAGMA fdb_fork = '{d}'"));
    assert_eq!(got, v3.to_string());
    assert_eq!(&rows(&store.open(&d)?)?, rows3);
    // At a time after it was made but before its first commit, a fork is
    // its origin's state at the fork version.
    clock.advance_secs(1);
    let now = time_of(clock.now_micros());
    assert_eq!(&rows(&store.open_at(&d, At::Time(now))?)?, rows3);
    assert_eq!(store.version_at(&d, At::Time(now))?, v3);

    // A fork outlives its dropped origin.
    assert!(store.drop_database(&src)?);
    assert!(has(&ca, 1000));
    assert_eq!(rows(&store.open(&d)?)?, *rows3);
    assert_integrity(&cc);
    Ok(())
}

#[test]
fn restore_and_undo_through_the_api_and_the_pragma() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store();
    let name = support::name("restore");
    let h = write_history(&store, &clock, &name, 20);
    let c = store.open(&name)?;
    let (t5, v5, ref rows5) = h.states[5];
    let latest = h.states[19].2.clone();

    let r = store.restore(&name, At::Time(time_of(t5 + 1)))?;
    assert_eq!(&rows(&c)?, rows5);
    // History is kept: at= before the restore still sees the latest state.
    assert_eq!(
        rows(&store.open_at(&name, At::Version(r.before(1)))?)?,
        latest
    );
    // Undo.
    let u = store.restore(&name, At::Version(r.before(1)))?;
    assert!(u > r);
    assert_eq!(rows(&c)?, latest);

    // The pragma, on an ordinary connection.
    clock.advance_secs(1);
    let got: String = scalar(&c, &format!("PRAGMA fdb_restore = 'v:{v5}'"));
    assert_eq!(version(&c)?.to_string(), got, "fdb_version after a restore");
    assert_eq!(&rows(&c)?, rows5);
    // Refused inside a transaction and on a time-travel connection.
    c.execute_batch("BEGIN; SELECT count(*) FROM kv;")?;
    let e = c
        .query_row(&format!("PRAGMA fdb_restore = 'v:{v5}'"), [], |r| {
            r.get::<_, String>(0)
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("inside a transaction"), "{e}");
    c.execute_batch("ROLLBACK")?;
    let old = store.open_at(&name, At::Version(v5))?;
    let e = old
        .query_row(&format!("PRAGMA fdb_restore = 'v:{v5}'"), [], |r| {
            r.get::<_, String>(0)
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("time-travel"), "{e}");
    assert_integrity(&c);
    Ok(())
}

const ACCOUNTS: i64 = 20;
const INITIAL: i64 = 1_000;

fn bank_setup(store: &Store, name: &str) -> Result<(), fdbvfs::Error> {
    let c = store.open(name)?;
    c.execute_batch("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")?;
    c.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO accounts SELECT i, ?2 FROM n",
        [ACCOUNTS, INITIAL],
    )?;
    Ok(())
}

fn total(c: &Connection) -> i64 {
    scalar(c, "SELECT sum(balance) FROM accounts")
}

/// `threads` workers doing `transfers` random transfers each, through
/// `fdbvfs::retry`; returns the handles.
fn bank_workers(
    store: &Store,
    name: &str,
    threads: u64,
    transfers: usize,
) -> Vec<thread::JoinHandle<Result<(), fdbvfs::Error>>> {
    (0..threads)
        .map(|w| {
            let (store, name) = (store.clone(), name.to_string());
            thread::spawn(move || -> Result<(), fdbvfs::Error> {
                let mut c = store.open(&name)?;
                let mut rng = StdRng::seed_from_u64(w);
                for _ in 0..transfers {
                    let (a, b) = (
                        rng.random_range(1..=ACCOUNTS),
                        rng.random_range(1..=ACCOUNTS),
                    );
                    let amount = rng.random_range(1..50i64);
                    fdbvfs::retry(&mut c, |tx| {
                        tx.execute(
                            "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2",
                            (amount, a),
                        )?;
                        tx.execute(
                            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
                            (amount, b),
                        )
                    })?;
                    thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            })
        })
        .collect()
}

fn join_all(handles: Vec<thread::JoinHandle<Result<(), fdbvfs::Error>>>) {
    for h in handles {
        match h.join() {
            Ok(r) => r.unwrap_or_else(|e| panic!("worker: {e}")),
            Err(_) => panic!("worker panicked"),
        }
    }
}

#[test]
fn restore_under_a_concurrent_bank_workload_keeps_the_invariant() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = support::name("bank-restore");
    bank_setup(&store, &name)?;
    let reader = store.open(&name)?;
    let mut checkpoints = vec![version(&reader)?];
    let workers = bank_workers(&store, &name, 4, 150);
    let mut restores = 0;
    for round in 0..4 {
        thread::sleep(Duration::from_millis(60));
        checkpoints.push(version(&store.open(&name)?)?);
        // Back to an earlier checkpoint: an ordinary commit that
        // conflicts with (and is retried against) the transfers.
        let target = checkpoints[round % checkpoints.len()];
        let mut done = false;
        for _ in 0..20 {
            match store.restore(&name, At::Version(target)) {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(fdbvfs::Error::Vfs(e)) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        assert!(done, "restore kept conflicting");
        restores += 1;
        // Every state anyone can see is a bank state.
        assert_eq!(total(&store.open(&name)?), ACCOUNTS * INITIAL);
    }
    join_all(workers);
    assert_eq!(restores, 4);
    let c = store.open(&name)?;
    assert_eq!(total(&c), ACCOUNTS * INITIAL);
    assert_integrity(&c);
    Ok(())
}

#[test]
fn gc_with_a_one_second_retention_keeps_the_window_and_forks() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store();
    let name = support::name("gc");
    let c = store.open(&name)?;
    c.execute_batch("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut states: Vec<(u64, Version, Rows)> = Vec::new();
    // 30 commits 1 s apart, then 10 commits 0.1 s apart: the last second
    // holds 10 versions.
    for i in 0..40u64 {
        if i < 30 {
            clock.advance_secs(1);
        } else {
            clock.advance_micros(100_000);
        }
        mutate(&c, &mut rng, i)?;
        states.push((clock.now_micros(), version(&c)?, rows(&c)?));
    }
    // A fork made at commit 10, with its own write.
    let fork = support::name("gc-fork");
    store.fork(&name, &fork, Some(At::Version(states[10].1)))?;
    let cf = store.open(&fork)?;
    cf.execute("INSERT OR REPLACE INTO kv VALUES (500, 'fork')", [])?;
    let fork_rows = rows(&cf)?;

    store.set_retention(&name, Duration::from_secs(1))?;
    let r: String = scalar(&c, "PRAGMA fdb_retention");
    assert_eq!(r, "1");
    clock.advance_micros(50_000);
    let window_start = clock.now_micros() - 1_000_000;

    let before = support::keys::count_keys(store.page_store());
    let dry = store.gc(Some(&name), true)?;
    assert_eq!(
        support::keys::count_keys(store.page_store()),
        before,
        "a dry run removes nothing"
    );
    let report = store.gc(Some(&name), false)?;
    let after = support::keys::count_keys(store.page_store());
    assert_eq!(report.len(), 1);
    assert!(report[0].page_versions > 0, "{report:?}");
    assert_eq!(dry[0].page_versions, report[0].page_versions);
    assert_eq!(
        before - after,
        (report[0].page_versions + report[0].metadata_keys) as usize - 1,
        "keys removed = what GC reported, less the horizon it published ({report:?})"
    );
    assert!(report[0].fork_pins.contains(&states[10].1));

    // Every time inside the window answers exactly.
    let mut checked = 0;
    for (i, (t, v, want)) in states.iter().enumerate() {
        let next = states.get(i + 1).map_or(clock.now_micros(), |s| s.0);
        // Times in [t, next) map to commit i; check one inside the window.
        let at = (*t).max(window_start);
        if at >= next {
            continue;
        }
        let old = open_uri_at(&store, &name, at)?;
        assert_eq!(&rows(&old)?, want, "at={} (commit {i})", rfc3339(at));
        assert_eq!(version(&old)?, *v);
        checked += 1;
    }
    assert!(checked >= 10, "{checked} times checked in the window");
    // Older than the window: a clear refusal.
    let e = store
        .open_at(&name, At::Version(states[2].1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("retention window"), "{e}");
    // The fork still reads its own and its origin's pages.
    assert_eq!(rows(&store.open(&fork)?)?, fork_rows);
    assert_integrity(&cf);
    assert_eq!(rows(&c)?, states[39].2);
    Ok(())
}

#[test]
fn gc_running_with_a_bank_workload_changes_nothing_visible() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store_collecting_every(Duration::from_millis(5));
    let name = support::name("bank-gc");
    bank_setup(&store, &name)?;
    store.set_retention(&name, Duration::from_secs(1))?;
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let removed = Arc::new(AtomicU64::new(0));
    // Time runs 10x fast, and explicit GC passes run besides the background ones.
    let ticker = {
        let (clock, stop, store, passes, removed) = (
            clock.clone(),
            stop.clone(),
            store.clone(),
            passes.clone(),
            removed.clone(),
        );
        thread::spawn(move || -> Result<(), fdbvfs::Error> {
            while !stop.load(Ordering::Relaxed) {
                clock.advance_micros(20_000);
                let freed: u64 = store.gc(None, false)?.iter().map(|r| r.page_versions).sum();
                passes.fetch_add(1, Ordering::Relaxed);
                removed.fetch_add(freed, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    // A reader checks the invariant all along.
    let checker = {
        let (store, name, stop) = (store.clone(), name.clone(), stop.clone());
        thread::spawn(move || -> Result<u64, fdbvfs::Error> {
            let c = store.open(&name)?;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(total(&c), ACCOUNTS * INITIAL);
                n += 1;
            }
            Ok(n)
        })
    };
    join_all(bank_workers(&store, &name, 4, 150));
    stop.store(true, Ordering::Relaxed);
    let checks = match checker.join() {
        Ok(r) => r?,
        Err(_) => panic!("checker panicked"),
    };
    match ticker.join() {
        Ok(r) => r?,
        Err(_) => panic!("ticker panicked"),
    }
    assert!(checks > 0 && passes.load(Ordering::Relaxed) > 0);
    assert!(
        removed.load(Ordering::Relaxed) > 0,
        "GC removed old versions while the transfers ran"
    );
    let c = store.open(&name)?;
    assert_eq!(total(&c), ACCOUNTS * INITIAL);
    assert_integrity(&c);
    // GC did remove old versions.
    let r = store.gc(Some(&name), true)?;
    assert!(r[0].horizon > Version::ZERO, "{r:?}");
    Ok(())
}

#[test]
fn background_gc_runs_every_interval_and_stops_with_the_store() -> Result<(), fdbvfs::Error> {
    let (store, clock) = clocked_store_collecting_every(Duration::from_millis(10));
    let name = support::name("bg-gc");
    let h = write_history(&store, &clock, &name, 10);
    store.set_retention(&name, Duration::from_secs(1))?;
    clock.advance_secs(5);
    // The background thread collects everything outside the window.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = store.gc(Some(&name), true)?;
        if r[0].horizon > Version::ZERO && r[0].page_versions == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background GC: {r:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rows(&store.open(&name)?)?, h.states[9].2);
    // The thread holds only a weak link: dropping the store stops it (it
    // would otherwise keep the page store, and so its backend, alive).
    let weak = Arc::downgrade(store.page_store().kv());
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the GC thread outlived its store"
        );
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fdbvfs"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running fdbvfs: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_sql_at_fork_restore_retention_gc() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = tmp.path();
    let ok = |args: &[&str]| -> String {
        let (ok, out, err) = cli(d, args);
        assert!(ok, "fdbvfs {args:?}: {err}");
        out
    };
    ok(&["sql", "demo", "CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
    let t = rfc3339(pagestore::clock::SystemClock.now_micros());
    thread::sleep(Duration::from_millis(20));
    ok(&["sql", "demo", "INSERT INTO t VALUES (2)"]);

    let out = ok(&["sql", "demo", "--at", &t, "SELECT count(*) AS n FROM t"]);
    assert_eq!(out, " n\n---\n 1\n(1 row)\n");
    let (okw, _, err) = cli(d, &["sql", "demo", "--at", &t, "INSERT INTO t VALUES (3)"]);
    assert!(
        !okw && err.contains("read-only") && err.contains("fdbvfs fork"),
        "{err}"
    );
    let (okb, _, err) = cli(d, &["sql", "demo", "--at", "12", "SELECT 1"]);
    assert!(!okb && err.contains("v:12"), "{err}");

    let out = ok(&["fork", "demo", "copy", "--at", &t]);
    assert!(out.starts_with("forked \"demo\" at version "), "{out}");
    assert_eq!(
        ok(&["sql", "copy", "SELECT count(*) AS n FROM t"]),
        " n\n---\n 1\n(1 row)\n"
    );

    let out = ok(&["restore", "demo", "--at", &t]);
    assert!(out.starts_with("restored \"demo\" to version "), "{out}");
    assert_eq!(
        ok(&["sql", "demo", "SELECT count(*) AS n FROM t"]),
        " n\n---\n 1\n(1 row)\n"
    );
    // The printed undo command works.
    let undo = out
        .split("undo with: ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("{out}"));
    let words: Vec<&str> = undo.split_whitespace().skip(1).collect();
    ok(&words);
    assert_eq!(
        ok(&["sql", "demo", "SELECT count(*) AS n FROM t"]),
        " n\n---\n 2\n(1 row)\n"
    );

    assert_eq!(
        ok(&["retention", "demo"]),
        "retention of \"demo\": 604800 s (7days)\n"
    );
    assert_eq!(
        ok(&["retention", "demo", "1h"]),
        "retention of \"demo\": 3600 s (1h)\n"
    );

    let out = ok(&["gc", "--dry-run"]);
    let header = out.lines().next().unwrap_or_default();
    for col in [
        "database",
        "horizon",
        "fork_pins",
        "page_versions",
        "page_bytes",
        "metadata_keys",
    ] {
        assert!(header.contains(col), "{out}");
    }
    assert!(out.contains(" demo ") && out.contains(" copy "), "{out}");
    assert!(
        out.contains("(2 rows)") && out.contains("dry run: would free"),
        "{out}"
    );
    let out = ok(&["gc", "demo"]);
    assert!(out.contains("(1 row)") && out.contains("freed "), "{out}");
    let (okg, _, err) = cli(d, &["gc", "nosuch"]);
    assert!(
        !okg && err.contains("no database named \"nosuch\""),
        "{err}"
    );
}
