//! The KV contract suite on the embedded backend, in memory and on disk,
//! with a manual clock so the 5 s window costs no waiting.

use std::sync::Arc;

use pagestore::clock::ManualClock;
mod contract;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::Kv;

#[test]
fn contract_in_memory() {
    let clock = ManualClock::new();
    let make = || -> Arc<dyn Kv> {
        EmbeddedKv::open(EmbeddedOptions::in_memory().with_clock(clock.clone())).unwrap()
    };
    let advance = |secs: u64| clock.advance_secs(secs);
    contract::run_all(&make, Some(&advance));
}

#[test]
fn contract_on_disk() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let make = || -> Arc<dyn Kv> {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = root.path().join(format!("store{i}"));
        EmbeddedKv::open(EmbeddedOptions::dir(dir).with_clock(clock.clone())).unwrap()
    };
    let advance = |secs: u64| clock.advance_secs(secs);
    contract::run_all(&make, Some(&advance));
}

#[test]
fn contract_on_one_shared_store() {
    // Properties use their own key prefixes: they also hold on one store.
    let kv: Arc<dyn Kv> = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    for (i, (name, property)) in contract::PROPERTIES.iter().enumerate() {
        let prefix = format!("shared/{i}/{name}/");
        property(kv.as_ref(), prefix.as_bytes());
    }
}

// --- Where the embedded backend and FoundationDB 7.3 differ ---
//
// Each test below shows the embedded backend's behaviour where FDB's is
// different or cannot be reproduced, and says what FDB does. Everything
// else in `pagestore::kv::contract` holds on both. Not testable here:
// FDB chooses its batches itself (commits reaching a commit proxy
// together), so no property can force two commits into one version on a
// real cluster; the embedded backend's batches
// (`Faults::batch_join_probability`) are tested in embedded_backend.rs.

use pagestore::kv::embedded::{Faults, LateDelivery};
use pagestore::kv::{KvError, MutationType};

/// FDB's client answers a re-read of a key the transaction already read
/// from its read-your-writes cache, even after the 5 s window; the
/// embedded backend asks the store and fails with 1007. (Hence
/// `fdb_transactions_too_old_after_the_window` is ignored on FDB.) Code
/// that works here therefore also works on FDB; the converse need not
/// hold only for re-reads, which are never needed for correctness.
#[test]
fn difference_rereads_after_the_window_fail_here() {
    let clock = ManualClock::new();
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_clock(clock.clone())).unwrap();
    let mut t = kv.begin().unwrap();
    assert_eq!(t.get(b"k", false).unwrap(), None);
    clock.advance_secs(6);
    let e = t.get(b"k", false).unwrap_err();
    assert_eq!(e.code, KvError::TRANSACTION_TOO_OLD, "{e}");
}

/// FDB's C client fences a `commit_unknown_result` before reporting it
/// (`tryCommit` commits a dummy transaction conflicting with the original
/// unless `causal_write_risky` is set), so on FDB a *reported* 1021 cannot
/// land afterwards; what can is a commit that ended in
/// `transaction_timed_out` (1031) or `cluster_version_changed` (1039),
/// which the fdb backend reports as 1021, and a shared-mode commit whose
/// answer was lost. The embedded backend's held commits
/// (`Faults::late_unknown_probability`) model those: they may land after
/// any 1021 it reports. No contract property can force either on a real
/// cluster.
#[test]
fn difference_any_injected_1021_may_land_late_here() {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_faults(Faults {
        late_unknown_probability: 1.0,
        late_delivery: LateDelivery::Manual,
        ..Faults::default()
    }))
    .unwrap();
    let mut t = kv.begin().unwrap();
    t.atomic_op(b"n", &1u64.to_le_bytes(), MutationType::Add);
    assert_eq!(t.commit().unwrap_err().code, KvError::COMMIT_UNKNOWN_RESULT);
    assert_eq!(kv.begin().unwrap().get(b"n", true).unwrap(), None);
    assert_eq!(kv.deliver_late_commits().applied, 1);
    assert_eq!(
        kv.begin().unwrap().get(b"n", true).unwrap(),
        Some(1u64.to_le_bytes().to_vec())
    );
}
