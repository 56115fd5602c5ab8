//! [`Store`]: a backend plus options; opens databases by name as
//! `rusqlite::Connection`s through the `fdb` VFS.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use pagestore::clock::{Clock, SystemClock};
use pagestore::kv::embedded::{EmbeddedOptions, Faults};
use pagestore::kv::Version;
use pagestore::{GcReport, PageStore, Staleness, StoreOptions};
use rusqlite::{Connection, OpenFlags};
use tracing::{info, warn};
use vfs::registry;
use vfs::At;

use crate::backend::{self, Backend, StoreHandle};
use crate::error::{Error, Result};

/// Builds a [`Store`].
///
/// ```
/// # fn main() -> Result<(), fdbvfs::Error> {
/// let store = fdbvfs::Store::builder().in_memory().cache_bytes(64 << 20).build()?;
/// let conn = store.open("orders")?;
/// # Ok(()) }
/// ```
pub struct StoreBuilder {
    backend: Backend,
    cache_bytes: Option<u64>,
    faults: Faults,
    prefix: Option<Vec<u8>>,
    clock: Option<Arc<dyn Clock>>,
    gc_interval: Option<Duration>,
    admin: bool,
    staleness: Staleness,
    keep_cache: bool,
}

/// What every clone of a [`Store`] shares; unregistered from the VFS with
/// the last one.
struct Shared {
    id: u64,
    handle: StoreHandle,
    description: String,
    /// Dropped with the last clone of the store: stops the background GC
    /// thread (its `recv_timeout` sees the channel close).
    _gc_stop: Option<mpsc::Sender<()>>,
    /// [`StoreBuilder::admin`].
    admin: bool,
    /// [`StoreBuilder::staleness`].
    staleness: Staleness,
    /// [`StoreBuilder::keep_cache`].
    keep_cache: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        registry::unregister_store(self.id);
    }
}

/// A store of databases: an embedded directory, memory (tests), or a
/// FoundationDB cluster (feature `fdb`). Cheap to clone.
///
/// ```
/// # fn main() -> Result<(), fdbvfs::Error> {
/// let dir = tempfile::tempdir().map_err(|e| fdbvfs::Error::Config(e.to_string()))?;
/// let store = fdbvfs::Store::embedded(dir.path())?;
/// let conn = store.open("orders")?;
/// conn.execute_batch("CREATE TABLE o(id INTEGER PRIMARY KEY, what TEXT)")?;
/// assert_eq!(store.list()?, vec!["orders".to_string()]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.inner.id)
            .field("backend", &self.inner.description)
            .finish()
    }
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            backend: Backend::from_env(),
            cache_bytes: None,
            faults: Faults::default(),
            prefix: None,
            clock: None,
            gc_interval: None,
            admin: true,
            staleness: Staleness::Strict,
            keep_cache: true,
        }
    }
}

impl StoreBuilder {
    /// An embedded store in `dir` (created if missing). A directory is
    /// opened once per process: a second store on the same directory shares
    /// the first one's backend (and its options).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.backend = Backend::Dir(dir.into());
        self
    }

    /// An embedded store in memory (tests; gone with the process).
    pub fn in_memory(mut self) -> Self {
        self.backend = Backend::Memory;
        self
    }

    /// A FoundationDB cluster, by cluster file.
    #[cfg(feature = "fdb")]
    pub fn cluster_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.backend = Backend::Cluster(path.into());
        self
    }

    /// Byte budget of the process-wide page cache (default 256 MiB).
    pub fn cache_bytes(mut self, n: u64) -> Self {
        self.cache_bytes = Some(n);
        self
    }

    /// Faults the embedded backend injects (spurious conflicts, unknown
    /// commit results, latency per round trip).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Key prefix of this deployment inside the backend (default `fv`).
    pub fn prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Time source (tests move time forward with
    /// [`pagestore::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs garbage collection of old versions ([`Store::gc`] over every
    /// database) in one background thread every `interval`, for
    /// long-lived processes. A pass removes only versions older than each
    /// database's retention window that no fork needs, in small store
    /// transactions, never blocking readers or writers; errors are logged
    /// (`tracing`, target `fdbvfs`) and the next pass tries again. The
    /// thread stops when the last clone of the [`Store`] is dropped (a
    /// pass in progress finishes first). Several processes may run it on
    /// one store: GC passes are idempotent and resumable.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// use std::time::Duration;
    /// let store = fdbvfs::Store::builder()
    ///     .in_memory()
    ///     .gc_interval(Duration::from_secs(600))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn gc_interval(mut self, interval: Duration) -> Self {
        self.gc_interval = Some(interval);
        self
    }

    /// Whether SQL on this store's connections may run admin operations
    /// (default true). Off, every connection [`Store::open`] gives is
    /// opened with `admin=0`: `PRAGMA fdb_fork`, `fdb_restore`, setting
    /// `fdb_retention` or `fdb_cache_size`, and attaching a database of
    /// another store are refused (the Rust API's own [`Store::fork`],
    /// [`Store::restore`]… still work). A connection the host put in
    /// SQLite's defensive mode gets the same whatever this says.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// let store = fdbvfs::Store::builder().in_memory().admin(false).build()?;
    /// let conn = store.open("t")?;
    /// assert!(conn.execute_batch("PRAGMA fdb_retention = 0").is_err());
    /// # Ok(()) }
    /// ```
    pub fn admin(mut self, allowed: bool) -> Self {
        self.admin = allowed;
        self
    }

    /// The staleness bound of every connection [`Store::open`] gives
    /// (default [`Staleness::Strict`]; a connection can change its own with
    /// `PRAGMA fdb_staleness`). Under a bound, a transaction may start at a
    /// snapshot confirmed to be the latest at most that long ago, with no
    /// store round trip; it never reads older than what its connection saw
    /// or what this process committed, and writes stay serializable.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// use std::time::Duration;
    /// let bound = fdbvfs::Staleness::from_duration(Duration::from_millis(10)).unwrap();
    /// let store = fdbvfs::Store::builder().in_memory().staleness(bound).build()?;
    /// let conn = store.open("t")?;
    /// let s: String = conn.query_row("PRAGMA fdb_staleness", [], |r| r.get(0))?;
    /// assert_eq!(s, "10ms");
    /// # Ok(()) }
    /// ```
    pub fn staleness(mut self, s: Staleness) -> Self {
        self.staleness = s;
        self
    }

    /// Whether SQLite keeps its page cache across transactions of every
    /// connection [`Store::open`] gives when nothing was committed in
    /// between (default on; the URI parameter `keep_cache=`). Off, every
    /// transaction starts with an empty SQLite cache (pages then come from
    /// the store's page cache): fewer assumed reads to validate at commit,
    /// so a little fewer conflicts between writers, at the cost of reads.
    ///
    /// ```
    /// # fn main() -> fdbvfs::Result<()> {
    /// let store = fdbvfs::Store::builder().in_memory().keep_cache(false).build()?;
    /// assert!(store.uri("t").contains("keep_cache=0"));
    /// store.open("t")?.execute_batch("CREATE TABLE t(x)")?;
    /// # Ok(()) }
    /// ```
    pub fn keep_cache(mut self, keep: bool) -> Self {
        self.keep_cache = keep;
        self
    }

    fn store_options(&self) -> StoreOptions {
        let mut o = StoreOptions::default();
        if let Some(n) = self.cache_bytes {
            o.cache_bytes = n;
        }
        if let Some(p) = &self.prefix {
            o.prefix = p.clone();
        }
        if let Some(c) = &self.clock {
            o.clock = c.clone();
        }
        o
    }

    fn embedded_options(&self, dir: Option<&Path>) -> EmbeddedOptions {
        let clock: Arc<dyn Clock> = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let o = match dir {
            Some(d) => EmbeddedOptions::dir(d),
            None => EmbeddedOptions::in_memory(),
        };
        o.with_clock(clock).with_faults(self.faults)
    }

    /// Opens the store.
    pub fn build(self) -> Result<Store> {
        let handle = self
            .backend
            .open(|dir| (self.embedded_options(dir), self.store_options()))?;
        // A directory opened before keeps its options; faults asked for
        // here still apply (where this process owns the store).
        if let (Backend::Dir(_), Some(kv)) = (&self.backend, &handle.embedded) {
            if self.faults != Faults::default() {
                kv.set_faults(self.faults);
            }
        }
        let description = self.backend.description();
        let gc_stop = match self.gc_interval {
            Some(every) => Some(spawn_gc(handle.pages.clone(), every)?),
            None => None,
        };
        let id = registry::register_store(handle.pages.clone());
        Ok(Store {
            inner: Arc::new(Shared {
                id,
                handle,
                description,
                _gc_stop: gc_stop,
                admin: self.admin,
                staleness: self.staleness,
                keep_cache: self.keep_cache,
            }),
        })
    }
}

/// Starts the background GC thread; it runs until the returned sender is
/// dropped.
fn spawn_gc(pages: PageStore, every: Duration) -> Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("fdbvfs-gc".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => match pages.gc(false) {
                    Ok(reports) => {
                        let versions: u64 = reports.iter().map(|r| r.page_versions).sum();
                        let bytes: u64 = reports.iter().map(|r| r.page_bytes).sum();
                        info!(
                            databases = reports.len(),
                            page_versions = versions,
                            bytes,
                            "background gc pass"
                        );
                    }
                    Err(e) => {
                        warn!(error = %e, "background gc pass failed; retrying next interval")
                    }
                },
                // The store was dropped (or, never, a message).
                _ => return,
            }
        })
        .map_err(|e| Error::Config(format!("cannot start the background GC thread: {e}")))?;
    Ok(stop)
}

/// Percent-encodes a database name for the path part of a `file:` URI.
fn uri_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Store {
    /// A builder (default: the default store of the environment, see
    /// [`crate::backend`]).
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// An embedded store in `dir`.
    pub fn embedded(dir: impl AsRef<Path>) -> Result<Store> {
        Store::builder().dir(dir.as_ref()).build()
    }

    /// An embedded store in memory (tests).
    pub fn in_memory() -> Result<Store> {
        Store::builder().in_memory().build()
    }

    /// The page store (counters, cache, direct access).
    pub fn page_store(&self) -> &PageStore {
        &self.inner.handle.pages
    }

    /// Replaces the injected faults (embedded backends only).
    pub fn set_faults(&self, faults: Faults) -> Result<()> {
        match &self.inner.handle.embedded {
            Some(kv) => {
                kv.set_faults(faults);
                Ok(())
            }
            None => Err(Error::Config(
                "fault injection needs the embedded backend".into(),
            )),
        }
    }

    /// The `file:` URI that opens `name` in this store through the `fdb`
    /// VFS (valid in this process only: it names the store by id).
    pub fn uri(&self, name: &str) -> String {
        let admin = if self.inner.admin { "" } else { "&admin=0" };
        let staleness = match self.inner.staleness {
            Staleness::Strict => String::new(),
            s => format!("&staleness={s}"),
        };
        let keep_cache = if self.inner.keep_cache {
            ""
        } else {
            "&keep_cache=0"
        };
        format!(
            "file:{}?vfs=fdb&store={}{admin}{staleness}{keep_cache}",
            uri_escape(name),
            self.inner.id
        )
    }

    /// Opens database `name`, creating it on first use.
    ///
    /// The connection uses `journal_mode=DELETE` (SQLite's default; the
    /// journal lives in memory in the VFS and only serves rollback: commits
    /// are atomic in the store). DELETE rather than MEMORY because with
    /// several fdb databases attached, SQLite then commits a transaction
    /// that writes more than one of them through a super-journal, which the
    /// VFS turns into one atomic store commit; with MEMORY (or OFF) journals
    /// each database would commit on its own. A 5 s busy timeout
    /// (for transient store errors when a transaction begins; conflicts at
    /// commit are reported at once as `SQLITE_BUSY_SNAPSHOT`).
    pub fn open(&self, name: &str) -> Result<Connection> {
        let conn = self.open_flags(
            name,
            None,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA journal_mode=DELETE;")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Opens database `name` read-only as it was at `at` (time travel): a
    /// store version ([`At::Version`], as `PRAGMA fdb_version` reports
    /// it), or a wall-clock time ([`At::Time`]: the last version committed
    /// at or before it). Writes fail with `SQLITE_READONLY`;
    /// `PRAGMA fdb_version` tells the version read. Fails (naming the
    /// reason) for a point in the future, before the database existed, or
    /// older than its retention window.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// use fdbvfs::At;
    /// let store = fdbvfs::Store::in_memory()?;
    /// let conn = store.open("t")?;
    /// conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    /// let v: i64 = conn.query_row("PRAGMA fdb_version", [], |r| r.get::<_, String>(0))?
    ///     .parse().unwrap_or(0);
    /// let before = std::time::SystemTime::now();
    /// conn.execute("INSERT INTO t VALUES (2)", [])?;
    /// let old = store.open_at("t", At::Version(fdbvfs::Version::new(v as u64)))?;
    /// let n: i64 = old.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// let old = store.open_at("t", At::Time(before))?;
    /// let n: i64 = old.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// # Ok(()) }
    /// ```
    pub fn open_at(&self, name: &str, at: At) -> Result<Connection> {
        self.open_flags(
            name,
            Some(at),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    /// The store version `at` names in database `name` (a time resolved
    /// through the time index: the last version committed at or before it).
    pub fn version_at(&self, name: &str, at: At) -> Result<Version> {
        let db = self.page_store().open(name)?;
        Ok(at.resolve(&db)?)
    }

    /// Creates database `dst` as a fork of `src` as it was at `at` (default:
    /// its latest version): a new, writable database that starts with that
    /// content and shares the unchanged pages (copy-on-write), in one small
    /// store commit whatever the size of `src`. Writes to either never show
    /// in the other; forks of forks work; `src` may be dropped while forks
    /// still read from it. Returns the version of `src` the fork starts from.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// let store = fdbvfs::Store::in_memory()?;
    /// store.open("prod")?.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    /// store.fork("prod", "staging", None)?;
    /// store.open("staging")?.execute("INSERT INTO t VALUES (2)", [])?;
    /// let n: i64 = store.open("prod")?.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// # Ok(()) }
    /// ```
    pub fn fork(&self, src: &str, dst: &str, at: Option<At>) -> Result<Version> {
        pagestore::validate_name(dst)?;
        let pages = self.page_store();
        let version = match at {
            Some(a) => Some(a.resolve(&pages.open(src)?)?),
            None => None,
        };
        let db = pages.fork(src, dst, version)?;
        Ok(db.fork_origin().map(|(_, v)| v).unwrap_or_default())
    }

    /// Makes the current state of `name` equal to its state at `at`, as one
    /// new commit (history is kept: restoring to the returned version minus
    /// one undoes it). Work is proportional to the pages changed since
    /// `at`. Concurrent writers see an ordinary commit; when the restore
    /// itself conflicts with one it is re-run, up to 10 attempts in all (as
    /// `PRAGMA fdb_restore`). Returns the commit version.
    ///
    /// ```
    /// # fn main() -> Result<(), fdbvfs::Error> {
    /// use fdbvfs::At;
    /// let store = fdbvfs::Store::in_memory()?;
    /// let conn = store.open("t")?;
    /// conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    /// let good: String = conn.query_row("PRAGMA fdb_version", [], |r| r.get(0))?;
    /// conn.execute("DELETE FROM t", [])?; // oops
    /// let good = good.parse::<fdbvfs::Version>().unwrap_or_default();
    /// let undo = store.restore("t", At::Version(good))?;
    /// let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 1);
    /// store.restore("t", At::Version(undo.before(1)))?; // undo the restore
    /// let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    /// assert_eq!(n, 0);
    /// # Ok(()) }
    /// ```
    pub fn restore(&self, name: &str, at: At) -> Result<Version> {
        let db = self.page_store().open(name)?;
        let version = at.resolve(&db)?;
        Ok(db.restore_retrying(version)?.version)
    }

    /// How long old versions of `name` stay readable (default 7 days).
    pub fn retention(&self, name: &str) -> Result<Duration> {
        Ok(self.page_store().open(name)?.retention()?)
    }

    /// Sets how long old versions of `name` stay readable (time travel,
    /// forks and restores reach back that far); zero keeps only the latest
    /// version. GC removes what falls out of the window.
    pub fn set_retention(&self, name: &str, retention: Duration) -> Result<()> {
        Ok(self.page_store().open(name)?.set_retention(retention)?)
    }

    /// Garbage-collects old versions of database `name`, or of every
    /// database (dropped ones that forks still read included) when `None`:
    /// removes page versions, content, change-log and time-index entries
    /// that no reader within the retention window and no fork can reach.
    /// Online, in small store transactions. With `dry_run`, only counts.
    /// One report per database.
    pub fn gc(&self, name: Option<&str>, dry_run: bool) -> Result<Vec<GcReport>> {
        Ok(match name {
            Some(n) => vec![self.page_store().open(n)?.gc(dry_run)?],
            None => self.page_store().gc(dry_run)?,
        })
    }

    fn open_flags(&self, name: &str, at: Option<At>, flags: OpenFlags) -> Result<Connection> {
        pagestore::validate_name(name).map_err(|e| Error::Open {
            name: name.to_string(),
            message: e.to_string(),
            source: None,
        })?;
        vfs::register_linked().map_err(Error::Config)?;
        // See `pagestore::kv::process`: the FDB network stops first at exit.
        pagestore::kv::process::enlist_thread();
        backend::install();
        let mut uri = self.uri(name);
        match at {
            Some(At::Version(v)) => uri.push_str(&format!("&version={v}")),
            // RFC 3339 with microseconds: digits, `-`, `:`, `.`, `T`, `Z`
            // need no escaping in a URI.
            Some(t @ At::Time(_)) => uri.push_str(&format!("&at={t}")),
            None => {}
        }
        let _ = vfs::take_last_error();
        Connection::open_with_flags(&uri, flags).map_err(|e| match vfs::take_last_error() {
            Some(message) => Error::Open {
                name: name.to_string(),
                message,
                source: Some(e),
            },
            None => Error::Sqlite(e),
        })
    }

    /// Names of all databases.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .page_store()
            .list()?
            .into_iter()
            .map(|d| d.name)
            .collect())
    }

    /// Drops database `name` and all its versions; false when there was none.
    pub fn drop_database(&self, name: &str) -> Result<bool> {
        Ok(self.page_store().drop_database(name)?)
    }

    /// This process's counters (page cache, store round trips by kind,
    /// commits, conflicts, unknown results), without a round trip;
    /// [`crate::Metrics::to_prometheus`] renders them for a scraper.
    pub fn metrics(&self) -> crate::Metrics {
        crate::Metrics {
            stats: self.page_store().stats(),
        }
    }
}

/// Opens database `name` in the default store of the environment (see
/// [`crate::backend`]: with the `fdb` feature and `FDB_CLUSTER_FILE` set,
/// that cluster; otherwise the embedded store in `FDBVFS_DIR`, default
/// `./fdbvfs-data`). The store is opened once per process.
pub fn open(name: &str) -> Result<Connection> {
    static DEFAULT: OnceLock<Store> = OnceLock::new();
    if let Some(s) = DEFAULT.get() {
        return s.open(name);
    }
    let store = Store::builder().build()?;
    let store = DEFAULT.get_or_init(|| store);
    store.open(name)
}

#[cfg(test)]
mod tests {
    use super::uri_escape;

    #[test]
    fn escapes_names() {
        assert_eq!(uri_escape("orders"), "orders");
        assert_eq!(uri_escape("a b?c&d#%/"), "a%20b%3Fc%26d%23%25%2F");
    }
}
