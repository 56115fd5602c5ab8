//! Measurements in a child process: a test re-runs its own test binary on
//! itself (so other tests' allocations stay out of its figures), the child
//! samples its resident set while it works and prints one `RESULT k=v …`
//! line, and the parent reads the figures from it.
//!
//! Shared by the memory-bound tests of pagestore and of the root package
//! (included there with `#[path]`), which measure the same way.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Field `name` of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in KiB; 0 when
/// it cannot be read.
pub fn status_kib(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Runs `f` while a thread samples VmRSS every 5 ms; returns `f`'s result,
/// the RSS before it and the peak seen, in KiB.
pub fn peak_rss<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let baseline = status_kib("VmRSS:");
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, baseline, peak.load(Ordering::Relaxed))
}

/// True in the child that runs `test` (`marker` names it).
pub fn is_child(marker: &str, test: &str) -> bool {
    std::env::var(marker).as_deref() == Ok(test)
}

/// Runs test `test` of this binary in a child with `marker=test` and `env`
/// set; asserts it succeeded and returns its `RESULT` line.
pub fn run_child(test: &str, marker: &str, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(marker, test);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("no RESULT line in\n{stdout}"))
}

/// Both sides of a measured test: in the child that runs `test` (see
/// [`is_child`]) runs `child` and returns `None`; in the parent runs that
/// child with `env` and returns its `RESULT` line.
pub fn in_child(
    test: &str,
    marker: &str,
    env: &[(&str, String)],
    child: impl FnOnce(),
) -> Option<String> {
    if is_child(marker, test) {
        child();
        return None;
    }
    Some(run_child(test, marker, env))
}

/// Figure `name` of a `RESULT` line.
pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}
