//! The FoundationDB backend (feature `fdb`): [`FdbKv`] implements
//! [`Kv`](crate::kv::Kv) on a real cluster through the `foundationdb` crate
//! (`fdb-7_3`, API version 730).
//!
//! Each trait method maps to one FDB client call; see
//! `docs/running-on-fdb.md` for the full list with its error handling.
//!
//! # Blocking on FDB futures
//!
//! The trait is synchronous because its callers are SQLite VFS callbacks,
//! which are plain blocking C functions (see [`crate::kv`]). The FDB client
//! runs all network I/O on its own thread (`fdb-network`, started once per
//! process by [`network`]) and completes futures there, waking whoever
//! waits. So `futures::executor::block_on` on the calling thread just parks
//! that thread until the network thread has the answer: no runtime is
//! needed, nothing is polled in a loop, and many threads may block at once.
//! The one rule is to never block inside an FDB callback (we register none),
//! and callers inside an async runtime should treat these calls as blocking.
//! Where FDB gains from concurrency, [`KvTxn::get_batch`] issues all reads
//! first and blocks once (`try_join_all`), so a batch is one round trip.
//!
//! # Short transactions
//!
//! An FDB transaction cannot live longer than FDB's 5 s MVCC window: reads
//! and commits after that fail with 1007 (`transaction_too_old`). pagestore
//! keeps snapshots in its keys, so its store transactions are short (one
//! BEGIN's worth of reads, or one commit). The per-transaction
//! [`FdbOptions::timeout`] (default 5 s, FDB's `timeout` option) bounds every
//! transaction, so an unreachable or stuck cluster gives 1031
//! (`transaction_timed_out`) naming the cluster file instead of hanging. On
//! a read that error says the transaction can be retried (nothing was
//! written; the VFS reports it as SQLITE_BUSY, extended `BUSY_TIMEOUT`); a
//! commit that times out becomes 1021 (`commit_unknown_result`), since the
//! commit may still be applied.
//!
//! # Process lifecycle
//!
//! Exit and fork() are handled by [`network`]: the network stops before
//! libfdb_c's exit-time destructors run (the cause of issue 14's SIGSEGV
//! at exit), calls in flight drain first, and a forked child never uses the
//! parent's network.
//!
//! # Key prefixes
//!
//! Database isolation (one key prefix per database) is done above this layer
//! by pagestore; this backend reads and writes raw keys.
//! [`FdbKv::clear_prefix`] helps tests clean up.

mod network;
mod txn;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use foundationdb::options::TransactionOption;
use foundationdb::{Database, FdbError};

use crate::kv::counters::Counters;
use crate::kv::{strinc, Kv, KvError, KvMetrics, KvResult, KvTxn};

pub use network::{shutdown, DRAIN_LIMIT};

/// Default per-transaction timeout: FDB's 5 s transaction lifetime.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable FDB reads for its cluster file.
pub const CLUSTER_FILE_ENV: &str = "FDB_CLUSTER_FILE";

/// How to open an FDB store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbOptions {
    /// Cluster file. `None`: `$FDB_CLUSTER_FILE` if set and non-empty, else
    /// FDB's default (`./fdb.cluster`, then `/etc/foundationdb/fdb.cluster`
    /// on Linux).
    pub cluster_file: Option<PathBuf>,
    /// FDB's `timeout` transaction option: every transaction is cancelled
    /// with 1031 (`transaction_timed_out`) this long after it began. Also
    /// bounds the reachability check in [`FdbKv::open`]. Zero disables it
    /// (an unreachable cluster then blocks forever); default 5 s.
    ///
    /// (There is no `retry_limit`: FDB's option only bounds its `on_error`
    /// loop, and this backend never calls `on_error` — pagestore retries by
    /// starting a new transaction, after its own backoff, according to
    /// [`KvError::is_retryable`]; `on_error` would reset the transaction
    /// and drop the writes pagestore buffered in it.)
    pub timeout: Duration,
}

impl Default for FdbOptions {
    fn default() -> Self {
        FdbOptions {
            cluster_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl FdbOptions {
    /// Uses `path` as the cluster file.
    pub fn cluster_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cluster_file = Some(path.into());
        self
    }

    /// Sets the per-transaction timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cluster file to pass to FDB (`None` = FDB's default) and a
    /// description of it for messages.
    fn resolve_cluster_file(&self) -> (Option<PathBuf>, String) {
        if let Some(p) = &self.cluster_file {
            return (Some(p.clone()), p.display().to_string());
        }
        match std::env::var_os(CLUSTER_FILE_ENV) {
            Some(v) if !v.is_empty() => {
                let p = PathBuf::from(v);
                let d = format!("{} (from {CLUSTER_FILE_ENV})", p.display());
                (Some(p), d)
            }
            _ => (
                None,
                format!(
                    "FDB default (./fdb.cluster or {})",
                    foundationdb::default_config_path()
                ),
            ),
        }
    }
}

/// What a store and its transactions share.
pub(crate) struct Shared {
    /// Released only while the network runs in this process: after the
    /// stop (or in a forked child) destroying the handle would call into
    /// libfdb_c with no network behind it, so it is leaked instead.
    db: network::Guarded<Arc<Database>>,
    /// The cluster file, for messages.
    pub(crate) cluster: String,
    pub(crate) timeout: Duration,
    pub(crate) counters: Counters,
}

impl Shared {
    /// The one conversion from an FDB error to a [`KvError`]: FDB's code is
    /// kept (so retry classes work as on FDB), the message says what was
    /// being done and on which cluster; a timeout says how long we waited.
    pub(crate) fn error(&self, op: &str, err: FdbError) -> KvError {
        convert_error(op, err, &self.cluster, self.timeout)
    }

    /// A new FDB transaction with our options applied.
    fn create_trx(&self) -> KvResult<foundationdb::Transaction> {
        crate::kv::process::enlist_thread();
        let _gate = network::enter()?;
        let trx = self
            .db
            .create_trx()
            .map_err(|e| self.error("create transaction", e))?;
        if !self.timeout.is_zero() {
            // Sub-millisecond timeouts round up: 0 would disable it.
            let ms = i32::try_from(self.timeout.as_millis().max(1)).unwrap_or(i32::MAX);
            trx.set_option(TransactionOption::Timeout(ms))
                .map_err(|e| self.error("set timeout option", e))?;
        }
        Ok(trx)
    }
}

/// See [`Shared::error`].
pub(crate) fn convert_error(op: &str, err: FdbError, cluster: &str, timeout: Duration) -> KvError {
    let code = err.code();
    let message = if code == KvError::TRANSACTION_TIMED_OUT && op != "commit" {
        // A read (or read version) that timed out changed nothing: the
        // VFS reports it as SQLITE_BUSY (extended BUSY_TIMEOUT), which
        // applications re-run. A commit that timed out is reported as 1021
        // by the commit path instead.
        format!(
            "{op}: no answer from FoundationDB within {timeout:?} (cluster file {cluster}); \
             is the cluster running and reachable? Nothing was written: the transaction can \
             be retried. (fdb: {})",
            err.message()
        )
    } else if code == KvError::TRANSACTION_TIMED_OUT {
        format!(
            "{op}: no answer from FoundationDB within {timeout:?} (cluster file {cluster}) \
             (fdb: {})",
            err.message()
        )
    } else {
        format!("{op}: {} (cluster file {cluster})", err.message())
    };
    KvError::new(code, message)
}

/// A store on a FoundationDB cluster.
pub struct FdbKv {
    shared: Arc<Shared>,
    options: FdbOptions,
}

impl std::fmt::Debug for FdbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbKv")
            .field("cluster", &self.shared.cluster)
            .field("options", &self.options)
            .finish()
    }
}

impl FdbKv {
    /// Opens a store on the cluster named by `opts`: boots the FDB client
    /// network on first use in the process, reuses the database handle of
    /// an already opened cluster file, and checks that the cluster answers
    /// (one read-version request, not counted in [`Kv::metrics`]). An
    /// unreachable cluster fails with 1031 naming the cluster file after
    /// `opts.timeout`.
    pub fn open(opts: FdbOptions) -> KvResult<Arc<FdbKv>> {
        let (cluster_file, cluster) = opts.resolve_cluster_file();
        let _span = tracing::debug_span!("fdb_open", cluster = %cluster).entered();
        let db = network::database(cluster_file.as_deref(), &cluster)?;
        let shared = Arc::new(Shared {
            db: network::Guarded::new(db),
            cluster,
            timeout: opts.timeout,
            counters: Counters::default(),
        });
        let kv = FdbKv {
            shared,
            options: opts,
        };
        kv.check_reachable()?;
        Ok(Arc::new(kv))
    }

    /// Opens with the default options (cluster file from `FDB_CLUSTER_FILE`
    /// or FDB's default, 5 s timeout).
    pub fn open_default() -> KvResult<Arc<FdbKv>> {
        Self::open(FdbOptions::default())
    }

    fn check_reachable(&self) -> KvResult<()> {
        let gate = network::enter()?;
        let trx = self.shared.create_trx()?;
        let version = futures::executor::block_on(trx.get_read_version())
            .map_err(|e| self.shared.error("connecting (get read version)", e));
        drop(trx);
        drop(gate);
        let version = version?;
        // libfdb_c has just built its connection state: keep the network's
        // stop ahead of the exit handlers that came with it.
        network::connected();
        tracing::debug!(version, "FoundationDB cluster reachable");
        Ok(())
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &FdbOptions {
        &self.options
    }

    /// The cluster file in use, as shown in error messages.
    pub fn cluster_description(&self) -> &str {
        &self.shared.cluster
    }

    /// Clears every key starting with `prefix` in one transaction (one
    /// `clear_range`, so it is small whatever the range holds). For test
    /// cleanup; an empty prefix clears the whole user keyspace.
    pub fn clear_prefix(&self, prefix: &[u8]) -> KvResult<()> {
        let end = strinc(prefix).unwrap_or_else(|| vec![0xff]);
        let mut txn = self.begin()?;
        txn.clear_range(prefix, &end);
        txn.commit().map(|_| ())
    }
}

impl Kv for FdbKv {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        let trx = self.shared.create_trx()?;
        Ok(Box::new(txn::FdbTxn::new(trx, self.shared.clone())))
    }

    fn metrics(&self) -> KvMetrics {
        self.shared.counters.snapshot()
    }

    fn backend_name(&self) -> &'static str {
        "fdb"
    }
}
