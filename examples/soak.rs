//! The history-check soak: the multi-process list-append workload of
//! `tests/history_check.rs` with every fault on, for as long as asked,
//! then the history checker over everything that happened.
//!
//! ```sh
//! cargo run --release --example soak -- --seconds 600
//! cargo run --release --example soak -- --seconds 30 --plant plant::skip_read_conflicts
//! ```
//!
//! Prints the run's figures and every anomaly; exits 1 when there is one.
//! Options: `--seconds N` (default 60), `--workers N` Rust worker
//! processes (default 3), `--threads N` per worker (default 3),
//! `--python N` Python workers through the loadable extension (default 1;
//! needs `target/release/libfdbvfs.so`: `cargo build --release` first),
//! `--plant NAME` (switch a planted bug on), `--seed N`, `--logs DIR`
//! (children's stderr). `HISTORY_CHECK_KEEP=1` keeps the store and the
//! histories. See docs/testing.md.

#[path = "../tests/history_check/checker.rs"]
#[allow(dead_code)]
mod checker;
#[path = "../tests/history_check/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::path::PathBuf;

fn main() {
    // Worker processes are this binary re-run with a role in the
    // environment.
    if workload::child_main() {
        return;
    }
    let mut cfg = workload::Config::all_faults(60, workload::Launcher::Example);
    let mut args = std::env::args().skip(1);
    let mut lib = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(2).map(|p| p.join("libfdbvfs.so")));
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let num = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad number {v}")))
        };
        match a.as_str() {
            "--seconds" => cfg.seconds = num(val()),
            "--workers" => cfg.rust_workers = num(val()).max(1) as usize,
            "--threads" => cfg.threads = num(val()).max(1) as usize,
            "--python" => cfg.python_workers = num(val()) as usize,
            "--seed" => cfg.seed = num(val()),
            "--logs" => cfg.log_dir = Some(PathBuf::from(val())),
            "--plant" => {
                let p = val();
                let name: &'static str = match p.as_str() {
                    "plant::skip_read_conflicts" => "plant::skip_read_conflicts",
                    "plant::skip_horizon_check" => "plant::skip_horizon_check",
                    "plant::unknown_as_conflict" => "plant::unknown_as_conflict",
                    // The planted runs' sharpened workload, without a bug.
                    "none" => "",
                    _ => usage(&format!("unknown planted bug {p}")),
                };
                let seconds = cfg.seconds;
                let mut planted =
                    workload::Config::planted(name, seconds, workload::Launcher::Example);
                if name.is_empty() {
                    planted.plant = None;
                }
                cfg = workload::Config {
                    seed: cfg.seed,
                    log_dir: cfg.log_dir.clone(),
                    ..planted
                };
            }
            "--lib" => lib = Some(PathBuf::from(val())),
            "--idle-ms" => cfg.idle = std::time::Duration::from_millis(num(val())),
            "--gc-ms" => cfg.gc_every = std::time::Duration::from_millis(num(val())),
            "--chained" => cfg.chained_percent = num(val()),
            "--groups" => cfg.group_percent = num(val()),
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if let Some(d) = &cfg.log_dir {
        let _ = std::fs::create_dir_all(d);
    }
    if cfg.python_workers > 0 && !lib.as_ref().is_some_and(|l| l.is_file()) {
        eprintln!("no libfdbvfs.so next to the example (cargo build --release): no Python worker");
    }
    eprintln!("soak: {} s, seed {}", cfg.seconds, cfg.seed);
    let r = workload::run(&cfg, lib.filter(|l| l.is_file()));
    println!("{}", r.figures);
    for a in &r.anomalies {
        println!("ANOMALY {a}");
    }
    if !r.anomalies.is_empty() {
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("soak: {msg}");
    }
    eprintln!(
        "usage: soak [--seconds N] [--workers N] [--threads N] [--python N] [--plant NAME] [--seed N] [--logs DIR] [--lib PATH]"
    );
    std::process::exit(2);
}
