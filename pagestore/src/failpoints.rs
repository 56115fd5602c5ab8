//! Named failpoints in the protocols (commit, large upload, GC, restore,
//! drop), compiled in only with the test-only `failpoints` feature.
//!
//! A test pauses, fails or kills a process exactly at one step and checks
//! what other processes see (`fail::cfg(name, actions)` or the `FAILPOINTS`
//! environment variable with `fail::FailScenario::setup()`). Actions are
//! the `fail` crate's own (`sleep(ms)`, `pause`, `panic`, `N%`, `N*`, …);
//! `return` makes the step fail with [`crate::Error::Injected`], and
//! `return(abort)` aborts the process on the spot, like a `kill -9` there.
//!
//! | name | the step |
//! |---|---|
//! | `begin::after_read_version` | BEGIN has its read version, has not read the change log |
//! | `commit::before` | a page commit is about to be sent to the store |
//! | `commit::after` | the store acknowledged the commit; the process has not updated its cache or finished a large commit's page index |
//! | `upload::after_chunk` | one chunk of a large transaction's pages was uploaded |
//! | `materialize::after_chunk` | one chunk of a large commit's page index was written |
//! | `gc::after_horizon` | GC published its horizon, removed nothing yet |
//! | `gc::after_pages` | GC removed page versions, not yet change-log records |
//! | `restore::before_commit` | a restore computed its pages, has not committed |
//! | `drop::before` | a drop is about to commit |
//! | `begin::caught_up` | a BEGIN read the change log, has not applied it to the view |
//! | `finish::saw_marker` | a reader saw a large commit's marker, has not read its change-log record to finish the index |
//!
//! **Planted bugs** (`planted!`): failpoints that, when set to `return`,
//! switch on a known protocol bug, so that tests can prove the history
//! checker sees it:
//! `plant::skip_read_conflicts` (commits carry no read-conflict ranges),
//! `plant::skip_horizon_check` (GC's horizon is ignored by commits and
//! change-log readers), `plant::unknown_as_conflict` (after an unknown
//! result, report a conflict without finding out whether the first attempt
//! landed), `plant::ignore_staleness_bound` (a bounded-staleness BEGIN
//! starts at the process's view however old it is).

/// What `return(arg)` at failpoint `name` does: abort the process, or fail
/// the step.
#[cfg(feature = "failpoints")]
pub(crate) fn injected(name: &str, arg: Option<&str>) -> crate::Error {
    if arg == Some("abort") {
        tracing::warn!(failpoint = name, "aborting the process at a failpoint");
        std::process::abort();
    }
    crate::Error::Injected(name.to_string())
}

/// A failpoint in a function returning `crate::Result<_>`.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |arg: Option<String>| Err(
            $crate::failpoints::injected($name, arg.as_deref()).into()
        ));
    };
}

/// True when the planted bug `name` is switched on (never without the
/// `failpoints` feature).
macro_rules! planted {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let on = fail::eval($name, |_| ()).is_some();
        #[cfg(not(feature = "failpoints"))]
        let on = false;
        on
    }};
}
