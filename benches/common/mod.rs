//! Shared setup of the benchmarks: the targets compared (plain SQLite, and
//! fdbvfs on each backend configuration) and the 100k-row fixture.
//!
//! fdbvfs runs on an embedded store **in a temporary directory** (not in
//! memory): every commit is made durable (fsync) by the embedded store, as
//! plain SQLite's commits reach its WAL file, so the durability cost is part
//! of both sides of the comparison. (SQLite with `synchronous=NORMAL` in WAL
//! mode does not fsync at every commit, only at checkpoints: it is the
//! *less* durable side.)
#![allow(dead_code)]

/// The tests' support module (the fixture's rows).
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use fdbvfs::{Faults, Store};
use rusqlite::Connection;

/// Rows of the fixture table `t(id INTEGER PRIMARY KEY, v INT, pad BLOB)`.
pub const ROWS: i64 = 100_000;
/// Bytes of `pad` per row (rows of ~120 bytes: ~12 MB, ~3,000 pages).
pub const PAD: usize = 100;

/// Injected latency per store round trip of the "rt0.5ms" configuration.
pub const ROUND_TRIP: Duration = Duration::from_micros(500);

/// What a benchmark runs against.
#[derive(Clone)]
pub enum Target {
    /// Plain SQLite on a local file, WAL, synchronous=NORMAL.
    Sqlite { path: std::path::PathBuf },
    /// fdbvfs on `store`, with `faults` injected while the benchmark runs
    /// (embedded backends only).
    Fdbvfs {
        label: String,
        store: Store,
        faults: Option<Faults>,
    },
}

impl Target {
    /// Short label: `sqlite`, `fdbvfs-rt0ms`, `fdbvfs-rt0.5ms`, `fdbvfs-fdb`.
    pub fn label(&self) -> String {
        match self {
            Target::Sqlite { .. } => "sqlite".into(),
            Target::Fdbvfs { label, .. } => label.clone(),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Target::Sqlite { .. })
    }

    /// Applies this target's injected faults (call before measuring).
    pub fn prepare(&self) {
        if let Target::Fdbvfs {
            store,
            faults: Some(f),
            ..
        } = self
        {
            store.set_faults(*f).expect("set faults");
        }
    }

    /// Removes injected faults (fixture building runs at full speed).
    pub fn unprepare(&self) {
        if let Target::Fdbvfs {
            store,
            faults: Some(_),
            ..
        } = self
        {
            store.set_faults(Faults::default()).expect("set faults");
        }
    }

    /// A new connection to database `name`.
    pub fn open(&self, name: &str) -> Connection {
        match self {
            Target::Sqlite { path } => {
                let c = Connection::open(path.join(format!("{name}.db"))).expect("open sqlite");
                c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
                    .expect("pragmas");
                c.busy_timeout(Duration::from_secs(30))
                    .expect("busy timeout");
                c
            }
            Target::Fdbvfs { store, .. } => store.open(name).expect("open fdbvfs"),
        }
    }

    /// Empties every cache the next read could be served from: fdbvfs's
    /// process-wide page cache (and its views: the next BEGIN reloads them
    /// from the store). For plain SQLite a cold read is one on a fresh
    /// connection (SQLite's page cache empty; the OS page cache stays warm).
    pub fn make_cold(&self) {
        if let Target::Fdbvfs { store, .. } = self {
            store.page_store().cache().clear();
        }
    }

    /// The store's page cache budget (fdbvfs).
    pub fn cache_bytes(&self) -> Option<u64> {
        match self {
            Target::Fdbvfs { store, .. } => Some(store.page_store().stats().cache.capacity),
            Target::Sqlite { .. } => None,
        }
    }
}

/// Every target: plain SQLite in `dir/sqlite`, fdbvfs on an embedded store
/// in `dir/fdbvfs` at 0 latency and at 0.5 ms per round trip, and with
/// feature `fdb` and `FDB_CLUSTER_FILE` set, fdbvfs on that cluster.
pub fn targets(dir: &Path) -> Vec<Target> {
    let sqlite = dir.join("sqlite");
    std::fs::create_dir_all(&sqlite).expect("mkdir");
    let store = Store::embedded(dir.join("fdbvfs")).expect("embedded store");
    let mut out = vec![
        Target::Sqlite { path: sqlite },
        Target::Fdbvfs {
            label: "fdbvfs-rt0ms".into(),
            store: store.clone(),
            faults: Some(Faults::default()),
        },
        Target::Fdbvfs {
            label: "fdbvfs-rt0.5ms".into(),
            store,
            faults: Some(Faults {
                latency: ROUND_TRIP,
                ..Faults::default()
            }),
        },
    ];
    if let Some(t) = fdb_target() {
        out.push(t);
    }
    out
}

#[cfg(feature = "fdb")]
pub fn fdb_target() -> Option<Target> {
    let cluster = std::env::var_os("FDB_CLUSTER_FILE").filter(|c| !c.is_empty())?;
    let store = Store::builder()
        .cluster_file(std::path::PathBuf::from(cluster))
        .prefix("fvbench")
        .build()
        .expect("fdb store");
    Some(Target::Fdbvfs {
        label: "fdbvfs-fdb".into(),
        store,
        faults: None,
    })
}

#[cfg(not(feature = "fdb"))]
pub fn fdb_target() -> Option<Target> {
    None
}

/// Creates `t` with `ROWS` rows in database `name` (in transactions of
/// 5,000 rows) and returns a connection to it.
pub fn fixture(target: &Target, name: &str) -> Connection {
    target.unprepare();
    let conn = target.open(name);
    conn.execute_batch(
        "DROP TABLE IF EXISTS t; CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)",
    )
    .expect("create");
    support::insert_rows(&conn, 1, ROWS, PAD, 5_000);
    conn
}

/// A small fast PRNG (xorshift64*), so benchmarks do not measure `rand`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A row id in 1..=ROWS.
    pub fn row(&mut self) -> i64 {
        (self.next() % ROWS as u64) as i64 + 1
    }
}

/// True when `e` is SQLITE_BUSY (a conflict: roll back and re-run).
pub fn is_busy(e: &rusqlite::Error) -> bool {
    fdbvfs::is_busy(e)
}

/// The process's resident set now and at its peak, in bytes (Linux).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Where benchmarks write their CSV files: `target/criterion` (next to
/// criterion's own reports), or `$CARGO_TARGET_DIR/criterion`.
pub fn out_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = target.join("criterion");
    std::fs::create_dir_all(&d).expect("mkdir target/criterion");
    d
}

/// True when `--quick` was passed (`cargo bench -- --quick`).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}
