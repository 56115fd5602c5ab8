//! The history checker (issue 10, "the machinery") and the multi-process
//! fault workload it checks.
//!
//! * `checker_*`: the checker proves itself on hand-made histories: each
//!   planted anomaly (lost update, write skew, duplicate, missing
//!   acknowledged write, G0, G1a, G1b, G1c, real-time violation, …) is
//!   reported, and clean histories (serial, concurrent, with unknown
//!   outcomes) are not.
//! * `mixed_workload_all_faults`: 60 s of list-append transactions from
//!   several OS processes (Rust API workers, and a Python worker through
//!   the loadable extension) on one shared embedded store, with injected
//!   conflicts, unknown results, latency, background GC at retention 0,
//!   large transactions, ATTACH groups, forks, restores, drops, kills and
//!   restarts (the shared-mode owner included) and kills at failpoints;
//!   asserts that the checker finds nothing.
//! * `planted_*`: the same workload, shorter, with one planted protocol
//!   bug switched on; asserts that the checker finds it.
//!
//! Worker processes re-run this test binary (the ignored test
//! `history_child`, selected by an environment variable). The workload
//! lives in `history_check/workload.rs`, shared with `examples/soak.rs`.
//! See docs/testing.md.

mod support;
use support::{in_ci, newest_source};

#[path = "history_check/checker.rs"]
#[allow(dead_code)]
mod checker;
#[path = "history_check/workload.rs"]
#[allow(dead_code)]
mod workload;

use checker::{append as a, check, read as r, History, Kind, Outcome, Txn};

fn ok(id: &str, t0: u64, t1: u64, ops: Vec<checker::Op>) -> Txn {
    Txn::ok(id, t0, t1, ops)
}

fn history(txns: Vec<Txn>) -> History {
    History {
        txns,
        ..History::default()
    }
}

fn assert_clean(h: &History) {
    let rep = check(h);
    assert!(
        rep.anomalies.is_empty(),
        "false positives: {:#?}",
        rep.anomalies
    );
}

fn assert_finds(h: &History, kind: Kind) {
    let rep = check(h);
    assert!(rep.has(kind), "expected {kind}, got {:#?}", rep.anomalies);
    for a in &rep.anomalies {
        eprintln!("found (as expected): {a}");
    }
}

/// A serial history with a final state: nothing to report.
#[test]
fn checker_clean_serial_history() {
    let mut h = history(vec![
        ok("T1", 0, 10, vec![r("d/x", &[]), a("d/x", 1), a("d/y", 2)]),
        ok(
            "T2",
            20,
            30,
            vec![r("d/x", &[1]), r("d/y", &[2]), a("d/x", 3)],
        ),
        ok(
            "T3",
            40,
            50,
            vec![r("d/x", &[1, 3]), a("d/y", 4), a("d/y", 5)],
        ),
        ok("T4", 60, 70, vec![r("d/y", &[2, 4, 5])]),
    ]);
    h.final_state.insert("d/x".into(), vec![1, 3]);
    h.final_state.insert("d/y".into(), vec![2, 4, 5]);
    h.final_dbs.insert("d".into());
    assert_clean(&h);
    let rep = check(&h);
    assert!(rep.dependency_edges >= 4, "{rep:?}");
    assert_eq!(rep.keys, 2);
}

/// Concurrent but serializable, with failed and unknown transactions whose
/// effects are (respectively) absent and either present or absent.
#[test]
fn checker_clean_concurrent_history_with_unknowns() {
    let mut h = history(vec![
        ok("T1", 0, 100, vec![r("d/x", &[]), a("d/x", 1)]),
        ok("T2", 50, 150, vec![r("d/y", &[]), a("d/y", 2)]),
        Txn {
            id: "F".into(),
            outcome: Outcome::Fail,
            invoke_ns: 60,
            complete_ns: Some(70),
            ops: vec![r("d/x", &[]), a("d/x", 99)],
        },
        // Unknown and landed (seen later), unknown and not landed.
        Txn {
            id: "U1".into(),
            outcome: Outcome::Unknown,
            invoke_ns: 160,
            complete_ns: None,
            ops: vec![a("d/x", 7)],
        },
        Txn {
            id: "U2".into(),
            outcome: Outcome::Unknown,
            invoke_ns: 160,
            complete_ns: None,
            ops: vec![a("d/y", 8)],
        },
        ok("T3", 200, 300, vec![r("d/x", &[1, 7]), r("d/y", &[2])]),
    ]);
    h.final_state.insert("d/x".into(), vec![1, 7]);
    h.final_state.insert("d/y".into(), vec![2]);
    h.final_dbs.insert("d".into());
    assert_clean(&h);
}

/// An unknown transaction may land after its client gave up: a read that
/// began after the give-up but does not see it is fine.
#[test]
fn checker_unknown_may_land_late() {
    let h = history(vec![
        Txn {
            id: "U".into(),
            outcome: Outcome::Unknown,
            invoke_ns: 0,
            complete_ns: None,
            ops: vec![a("d/x", 1)],
        },
        ok("R1", 100, 110, vec![r("d/x", &[])]),
        ok("R2", 200, 210, vec![r("d/x", &[1])]),
    ]);
    assert_clean(&h);
}

#[test]
fn checker_finds_lost_update() {
    // Both read x = [1] and appended: one overwrote the other's version.
    let h = history(vec![
        ok("T0", 0, 5, vec![a("d/x", 1)]),
        ok("T1", 10, 100, vec![r("d/x", &[1]), a("d/x", 2)]),
        ok("T2", 10, 100, vec![r("d/x", &[1]), a("d/x", 3)]),
        ok("T3", 200, 210, vec![r("d/x", &[1, 3])]),
    ]);
    assert_finds(&h, Kind::LostUpdate);
}

#[test]
fn checker_finds_write_skew() {
    // Each read both keys empty and appended to a different one.
    let h = history(vec![
        ok(
            "T1",
            0,
            100,
            vec![r("d/x", &[]), r("d/y", &[]), a("d/x", 1)],
        ),
        ok(
            "T2",
            0,
            100,
            vec![r("d/x", &[]), r("d/y", &[]), a("d/y", 2)],
        ),
        ok("T3", 200, 210, vec![r("d/x", &[1]), r("d/y", &[2])]),
    ]);
    assert_finds(&h, Kind::G2Item);
    assert!(!check(&h).has(Kind::LostUpdate));
}

#[test]
fn checker_finds_read_skew_g_single() {
    // T2 sees T1's append to x but not its append to y.
    let h = history(vec![
        ok("T1", 0, 100, vec![a("d/x", 1), a("d/y", 2)]),
        ok("T2", 0, 100, vec![r("d/x", &[1]), r("d/y", &[])]),
        ok("T3", 200, 210, vec![r("d/y", &[2])]),
    ]);
    assert_finds(&h, Kind::GSingle);
}

#[test]
fn checker_finds_duplicate() {
    // T1's append shows twice: applied twice (e.g. a commit retried after
    // an unknown result, without fencing the first attempt).
    let h = history(vec![
        ok("T1", 0, 10, vec![r("d/x", &[]), a("d/x", 1)]),
        ok("T2", 20, 30, vec![r("d/x", &[1, 1])]),
    ]);
    assert_finds(&h, Kind::Duplicate);
}

#[test]
fn checker_finds_missing_acknowledged_write() {
    let mut h = history(vec![
        ok("T1", 0, 10, vec![a("d/x", 1)]),
        ok("T2", 20, 30, vec![a("d/x", 2)]),
    ]);
    h.final_state.insert("d/x".into(), vec![1]);
    h.final_dbs.insert("d".into());
    assert_finds(&h, Kind::MissingAck);
    // Exempt when a restore of "d" completed after T2 was invoked.
    h.exempt_before_ns.insert("d".into(), 25);
    assert!(!check(&h).has(Kind::MissingAck));
}

#[test]
fn checker_finds_g0_write_cycle() {
    // x's order says T1 < T2, y's says T2 < T1.
    let h = history(vec![
        ok("T1", 0, 100, vec![a("d/x", 1), a("d/y", 4)]),
        ok("T2", 0, 100, vec![a("d/x", 2), a("d/y", 3)]),
        ok("T3", 200, 210, vec![r("d/x", &[1, 2]), r("d/y", &[3, 4])]),
    ]);
    assert_finds(&h, Kind::G0);
}

#[test]
fn checker_finds_g1c_cycle() {
    // T1 reads T2's append, T2 reads T1's: circular information flow.
    let h = history(vec![
        ok("T1", 0, 100, vec![a("d/x", 1), r("d/y", &[2])]),
        ok("T2", 0, 100, vec![a("d/y", 2), r("d/x", &[1])]),
    ]);
    assert_finds(&h, Kind::G1c);
}

#[test]
fn checker_finds_aborted_read() {
    let h = history(vec![
        Txn {
            id: "F".into(),
            outcome: Outcome::Fail,
            invoke_ns: 0,
            complete_ns: Some(10),
            ops: vec![a("d/x", 1)],
        },
        ok("T", 20, 30, vec![r("d/x", &[1])]),
    ]);
    assert_finds(&h, Kind::G1a);
}

#[test]
fn checker_finds_intermediate_read() {
    let h = history(vec![
        ok("T1", 0, 10, vec![a("d/x", 1), a("d/x", 2)]),
        ok("T2", 20, 30, vec![r("d/x", &[1])]),
    ]);
    assert_finds(&h, Kind::G1b);
}

#[test]
fn checker_finds_real_time_violation() {
    // T2 began after T1 was acknowledged and did not see it: serializable
    // (T2 before T1) but not strictly.
    let h = history(vec![
        ok("T1", 0, 10, vec![a("d/x", 1)]),
        ok("T2", 20, 30, vec![r("d/x", &[])]),
        ok("T3", 40, 50, vec![r("d/x", &[1])]),
    ]);
    assert_finds(&h, Kind::RealTime);
    let rep = check(&h);
    assert_eq!(rep.kinds().len(), 1, "{:#?}", rep.anomalies);
}

#[test]
fn checker_allows_stale_reads_only_within_the_bound() {
    // T2 only reads and misses T1, acknowledged 10 ns before T2 began.
    let txns = vec![
        ok("T1", 0, 10, vec![a("d/x", 1)]),
        ok("T2", 20, 30, vec![r("d/x", &[])]),
        ok("T3", 40, 50, vec![r("d/x", &[1])]),
    ];
    let within = History {
        staleness_ns: 15,
        ..history(txns.clone())
    };
    assert_clean(&within);
    let beyond = History {
        staleness_ns: 5,
        ..history(txns)
    };
    assert_finds(&beyond, Kind::RealTime);
    // A transaction that writes keeps strict real time whatever the bound.
    let writer = History {
        staleness_ns: 15,
        ..history(vec![
            ok("T1", 0, 10, vec![a("d/x", 1)]),
            ok("T2", 20, 30, vec![r("d/x", &[]), a("d/y", 1)]),
            ok("T3", 40, 50, vec![r("d/x", &[1]), r("d/y", &[1])]),
        ])
    };
    assert_finds(&writer, Kind::RealTime);
}

#[test]
fn checker_finds_garbage_incompatible_and_internal() {
    let h = history(vec![
        ok("T1", 0, 10, vec![a("d/x", 1), a("d/x", 2)]),
        ok("T2", 20, 30, vec![r("d/x", &[2, 1])]),
        ok("T3", 20, 30, vec![r("d/x", &[1, 2])]),
        ok("T4", 40, 50, vec![r("d/y", &[42])]),
        ok("T5", 40, 50, vec![a("d/z", 5), r("d/z", &[])]),
    ]);
    let rep = check(&h);
    for k in [Kind::IncompatibleOrder, Kind::GarbageRead, Kind::Internal] {
        assert!(rep.has(k), "expected {k}: {:#?}", rep.anomalies);
    }
}

/// A larger random serial history (one transaction at a time, a model
/// state): no anomaly; then the same history with one read made stale
/// (a lost update's shape) is caught.
#[test]
fn checker_random_serial_histories() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        let mut txns = Vec::new();
        let mut next = 1u64;
        for t in 0..300u64 {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..5) {
                let key = format!("d/{}", rng.random_range(0..6));
                if rng.random_bool(0.5) {
                    ops.push(r(&key, state.get(&key).map(|v| &v[..]).unwrap_or(&[])));
                } else {
                    ops.push(a(&key, next));
                    state.entry(key).or_default().push(next);
                    next += 1;
                }
            }
            // Overlapping intervals that still respect the serial order's
            // real time (each starts before the previous one ends).
            txns.push(ok(&format!("T{t}"), t * 10, t * 10 + 15, ops));
        }
        let mut h = history(txns);
        h.final_state = state;
        h.final_dbs.insert("d".into());
        assert_clean(&h);
    }
}

/// Mutation test: in random serial histories, make one read stale (drop
/// the last element it saw, appended by a transaction that completed before
/// the reader began): the checker must always notice.
#[test]
fn checker_random_stale_reads_are_caught() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let mut caught = 0;
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut state: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        let mut writer_of: std::collections::HashMap<u64, usize> = Default::default();
        let mut txns = Vec::new();
        let mut next = 1u64;
        for t in 0..200usize {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let key = format!("d/{}", rng.random_range(0..4));
                if rng.random_bool(0.5) {
                    ops.push(r(&key, state.get(&key).map(|v| &v[..]).unwrap_or(&[])));
                } else {
                    ops.push(a(&key, next));
                    writer_of.insert(next, t);
                    state.entry(key).or_default().push(next);
                    next += 1;
                }
            }
            let t64 = t as u64;
            txns.push(ok(&format!("T{t}"), t64 * 10, t64 * 10 + 15, ops));
        }
        // A read (before any append of its own transaction) whose last
        // element was written at least two transactions earlier.
        let candidates: Vec<(usize, usize)> = txns
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                let mut own = false;
                let mut out = Vec::new();
                for (j, op) in t.ops.iter().enumerate() {
                    match op {
                        checker::Op::Append { .. } => own = true,
                        checker::Op::Read { values, .. } => {
                            if let Some(last) = values.last() {
                                if !own && writer_of[last] + 2 <= i {
                                    out.push((i, j));
                                }
                            }
                        }
                    }
                }
                out
            })
            .collect();
        let Some(&(i, j)) = candidates.get(rng.random_range(0..candidates.len().max(1))) else {
            continue;
        };
        if let checker::Op::Read { values, .. } = &mut txns[i].ops[j] {
            values.pop();
        }
        let rep = check(&history(txns));
        assert!(
            !rep.anomalies.is_empty(),
            "seed {seed}: a stale read went unnoticed"
        );
        caught += 1;
    }
    assert!(caught >= 30, "too few mutations tried: {caught}");
}

// ------------------------------------------------------------ the workload

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use workload::{Config, Launcher, RunResult};

const LAUNCHER: Launcher = Launcher::TestBinary {
    test: "history_child",
};

/// The child side (does nothing unless run by a workload test).
#[test]
#[ignore = "run by the workload tests as a child process"]
fn history_child() {
    workload::child_main();
}

/// `target/release/libfdbvfs.so` for the Python worker, built by
/// `cargo build --release --lib` unless it is newer than every source file
/// (as tests/extension.rs does); `None` (with a note) when it cannot be
/// built outside CI.
fn cdylib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.ancestors().nth(3)?.to_path_buf();
    let lib = target.join("release").join("libfdbvfs.so");
    let built = std::fs::metadata(&lib).and_then(|m| m.modified()).ok();
    if built.is_some_and(|b| newest_source().is_some_and(|s| s <= b)) {
        return Some(lib);
    }
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--lib", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && lib.is_file() => Some(lib),
        Ok(o) => {
            let msg = format!(
                "cargo build --release --lib failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(!in_ci(), "{msg}");
            eprintln!("no Python worker: {msg}");
            None
        }
        Err(e) => {
            assert!(!in_ci(), "running cargo: {e}");
            eprintln!("no Python worker: running cargo: {e}");
            None
        }
    }
}

fn print(label: &str, r: &RunResult) {
    eprintln!("== {label}\n{}", r.figures);
    for a in r.anomalies.iter().take(30) {
        eprintln!("ANOMALY {a}");
    }
}

/// ≥ 60 s of the mixed workload, every fault on: no anomaly.
#[test]
fn mixed_workload_all_faults() {
    support::init_tracing();
    let cfg = Config::all_faults(60, LAUNCHER);
    let r = workload::run(&cfg, cdylib());
    print("mixed workload, all faults", &r);
    let f = &r.figures;
    assert!(
        r.anomalies.is_empty(),
        "{} anomalies (first: {})",
        r.anomalies.len(),
        r.anomalies[0]
    );
    // The workload did what it claims (else a clean result means little).
    assert!(f.txns_ok > 500, "too few transactions: {f:?}");
    assert!(f.txns_failed > 0 && f.busy_aborts > 0, "no aborts: {f:?}");
    assert!(f.kills > 0, "no kills: {f:?}");
    assert_eq!(
        f.crashes, 0,
        "workers failed by themselves: {:#?}",
        f.crash_notes
    );
    assert!(f.gc_passes > 0, "no GC: {f:?}");
    assert!(f.forks > 0 && f.restores > 0 && f.drops > 0, "{f:?}");
    assert!(f.large > 0 && f.groups > 0, "{f:?}");
    assert!(f.graph_txns > 500 && f.dependency_edges > 500, "{f:?}");
    if in_ci() {
        assert!(
            f.python_txns_ok > 0,
            "the Python worker committed nothing: {f:?}"
        );
    }
}

/// The mixed workload with every Rust worker's connections under a 5 ms
/// staleness bound: still no anomaly, read-only transactions allowed up to
/// 5 ms of staleness and nothing more.
#[test]
fn mixed_workload_bounded_staleness() {
    support::init_tracing();
    let mut cfg = Config::all_faults(20, LAUNCHER);
    cfg.staleness = std::time::Duration::from_millis(5);
    cfg.python_workers = 0;
    let r = workload::run(&cfg, None);
    print("mixed workload, staleness 5 ms", &r);
    assert!(
        r.anomalies.is_empty(),
        "{} anomalies (first: {})",
        r.anomalies.len(),
        r.anomalies[0]
    );
    let f = &r.figures;
    assert!(f.txns_ok > 200 && f.graph_txns > 200, "{f:?}");
}

fn planted(plant: &'static str, seconds: u64) -> RunResult {
    support::init_tracing();
    let cfg = Config::planted(plant, seconds, LAUNCHER);
    let r = workload::run(&cfg, None);
    print(&format!("planted bug {plant}"), &r);
    assert!(
        !r.anomalies.is_empty(),
        "the checker found nothing with {plant} switched on: {:?}",
        r.figures
    );
    r
}

/// Commits without read-conflict ranges: lost updates and write skew.
#[test]
fn planted_skip_read_conflicts_is_caught() {
    planted("plant::skip_read_conflicts", 15);
}

/// GC's horizon ignored: a transaction older than GC's horizon concludes
/// "no change" and overwrites a concurrent commit.
#[test]
fn planted_skip_horizon_check_is_caught() {
    planted("plant::skip_horizon_check", 20);
}

/// After an unknown result, a conflict reported without fencing the first
/// attempt: the application re-runs a transaction that had landed.
#[test]
fn planted_unknown_as_conflict_is_caught() {
    planted("plant::unknown_as_conflict", 15);
}

/// A bounded-staleness BEGIN that ignores its bound (and no refresher):
/// read-only transactions read snapshots older than the bound.
#[test]
fn planted_ignore_staleness_bound_is_caught() {
    planted("plant::ignore_staleness_bound", 15);
}
