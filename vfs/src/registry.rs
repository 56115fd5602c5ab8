//! Which store a connection uses.
//!
//! The VFS is process-global, but each connection must reach a specific
//! store. URI parameters of the main database select it:
//!
//! * `store=<id>`: a store registered by the Rust API ([`register_store`]);
//! * `dir=<path>`: an embedded store in that directory, opened once per
//!   process and shared by every connection naming it;
//! * `cluster=<cluster file>`: a FoundationDB cluster;
//! * none of these: the default store.
//!
//! This crate sees only [`PageStore`]s: which backend a `dir=` or
//! `cluster=` store is, and which store is the default, are decided by the
//! layer above (the `fdbvfs` crate), which installs its [`Backends`] here.
//! The registry keeps what was opened, once per process.
//!
//! Admin operations: `admin=0` refuses, for the connection, the PRAGMAs
//! that act beyond its own data (`fdb_fork`, `fdb_restore`, setting
//! `fdb_retention` or `fdb_cache_size`) and attaching a database of another
//! store; a connection in SQLite's defensive mode
//! (`SQLITE_DBCONFIG_DEFENSIVE`) gets the same whatever `admin=` says (see
//! `MainFile::admin_refused`).
//!
//! # Idle stores
//!
//! A `dir=` store (or the default one) that no connection has used for
//! [`idle_store_timeout`] (default [`DEFAULT_IDLE_STORE`], 5 min;
//! `FDBVFS_IDLE_STORE_SECS`, 0 never) is released: its registry entry and
//! page store (page cache) go, and the next connection naming it opens it
//! again. Stores of the Rust API (`store=`) live as long as their `Store`.
//!
//! Time travel (read-only connections): `version=<n>` opens the database as
//! of store version `n`; `at=<time>` as of the last version committed at or
//! before an RFC 3339 time (`at=2026-11-21T10:00:00Z`; see [`crate::at`] for
//! every form, `at=v:<n>` included). Give at most one of them.
//!
//! # fork()
//!
//! Open stores are cached per process. In a forked child the cache is the
//! parent's: it is forgotten (leaked, never dropped) on the child's first
//! call, and stores are opened anew. Handles the parent opened (and SQLite
//! connections holding them) fail in the child with an error naming both
//! processes. See `pagestore::kv::process`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use pagestore::kv::process;
use pagestore::kv::Version;
use pagestore::{sync, PageStore};
use tracing::{info, warn};

use crate::at::At;
use crate::error::{Error, Result};

/// Where a store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// Registered by id.
    Registered(u64),
    /// Embedded, in a directory.
    Dir(PathBuf),
    /// FoundationDB, by cluster file.
    Cluster(String),
    /// Not named: whichever store [`Backends::default_spec`] says.
    Default,
}

/// What the layer that picks backends (the `fdbvfs` crate) provides: the
/// meaning of `dir=`, `cluster=` and of a URI that names no store.
pub trait Backends: Send + Sync {
    /// The store a URI naming none uses (a `Dir` or a `Cluster`).
    fn default_spec(&self) -> StoreSpec;
    /// Opens the store `spec` names: a `Dir` (given canonical) or a
    /// `Cluster`. The registry calls it once per store and process; the
    /// error says why, for a message naming the store.
    fn open(&self, spec: &StoreSpec) -> std::result::Result<PageStore, String>;
}

/// Parsed URI parameters of a main database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenParams {
    /// The store.
    pub spec: StoreSpec,
    /// Time travel: read-only as of this point (`version=` or `at=`).
    pub at: Option<At>,
    /// `admin=` (default on): off refuses admin operations for the
    /// connection (see the module docs).
    pub admin: bool,
    /// `staleness=` (default strict): see [`pagestore::Staleness`].
    pub staleness: pagestore::Staleness,
    /// `keep_cache=` (default on): SQLite keeps its page cache across
    /// transactions when nothing changed in between.
    pub keep_cache: bool,
}

/// URI parameters SQLite defines itself; it passes them on to the VFS.
const SQLITE_PARAMS: &[&str] = &["vfs", "mode", "cache", "psow", "nolock", "immutable"];

impl OpenParams {
    /// Parses URI parameters; unknown ones are an error naming them.
    pub fn parse(params: &[(String, String)]) -> Result<OpenParams> {
        let mut unknown = Vec::new();
        let (mut store, mut dir, mut cluster, mut version, mut at) = (None, None, None, None, None);
        let mut admin = true;
        let mut staleness = pagestore::Staleness::Strict;
        let mut keep_cache = true;
        for (k, v) in params {
            let bad = |why: &str| Error::BadParam {
                name: k.clone(),
                value: v.clone(),
                why: why.to_string(),
            };
            match k.as_str() {
                "store" => store = Some(v.parse::<u64>().map_err(|_| bad("not a store id"))?),
                "dir" if v.is_empty() => return Err(bad("empty directory")),
                "dir" => dir = Some(PathBuf::from(v)),
                "cluster" if v.is_empty() => return Err(bad("empty cluster file path")),
                "cluster" => cluster = Some(v.clone()),
                "version" => {
                    version = Some(
                        v.parse::<Version>()
                            .map_err(|_| bad("not a version number"))?,
                    )
                }
                "at" => at = Some(v.parse::<At>().map_err(|e| bad(&e.0))?),
                "admin" => {
                    admin = match v.to_ascii_lowercase().as_str() {
                        "1" | "on" | "true" | "yes" => true,
                        "0" | "off" | "false" | "no" => false,
                        _ => return Err(bad("admin takes 0 or 1")),
                    }
                }
                "staleness" => staleness = v.parse().map_err(|e| bad(&format!("{e}")))?,
                "keep_cache" => {
                    keep_cache = match v.to_ascii_lowercase().as_str() {
                        "1" | "on" | "true" | "yes" => true,
                        "0" | "off" | "false" | "no" => false,
                        _ => return Err(bad("keep_cache takes 0 or 1")),
                    }
                }
                k if SQLITE_PARAMS.contains(&k) => {}
                k => unknown.push(k.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::UnknownParams(unknown));
        }
        let chosen = [store.is_some(), dir.is_some(), cluster.is_some()];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err(Error::BadParam {
                name: "store/dir/cluster".into(),
                value: String::new(),
                why: "give at most one of store=, dir= and cluster=".into(),
            });
        }
        let at = match (version, at) {
            (Some(_), Some(_)) => {
                return Err(Error::BadParam {
                    name: "version/at".into(),
                    value: String::new(),
                    why: "give at most one of version= and at=".into(),
                })
            }
            (Some(v), None) => Some(At::Version(v)),
            (None, a) => a,
        };
        let spec = match (store, dir, cluster) {
            (Some(id), _, _) => StoreSpec::Registered(id),
            (_, Some(d), _) => StoreSpec::Dir(d),
            (_, _, Some(c)) => StoreSpec::Cluster(c),
            _ => StoreSpec::Default,
        };
        Ok(OpenParams {
            spec,
            at,
            admin,
            staleness,
            keep_cache,
        })
    }
}

#[derive(Default)]
struct Registry {
    /// The process the handles below belong to (0 before the first use).
    pid: u32,
    /// Ids registered by the parent before this process was forked, with
    /// the parent's pid: their `Store` objects are the parent's.
    inherited: HashMap<u64, u32>,
    next_id: u64,
    by_id: HashMap<u64, PageStore>,
    by_dir: HashMap<PathBuf, PageStore>,
    by_cluster: HashMap<String, PageStore>,
    /// When each `by_dir` store was first seen unused (idle release).
    idle_since: HashMap<PathBuf, Instant>,
}

impl Registry {
    /// In a forked child: forgets (leaks, never drops) the parent's open
    /// stores, so that this process opens its own (see
    /// `pagestore::kv::process`).
    fn forget_parent(&mut self, parent: u32) {
        for id in self.by_id.keys() {
            self.inherited.insert(*id, parent);
        }
        process::leak(std::mem::take(&mut self.by_id));
        process::leak(std::mem::take(&mut self.by_dir));
        process::leak(std::mem::take(&mut self.by_cluster));
        self.idle_since.clear();
        info!(
            parent,
            "process forked: stores opened by the parent are opened anew in this process"
        );
    }
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn reg() -> std::sync::MutexGuard<'static, Registry> {
    let mut r = sync::lock(registry());
    let pid = process::pid();
    if r.pid != pid {
        if r.pid != 0 {
            let parent = r.pid;
            r.forget_parent(parent);
        }
        r.pid = pid;
    }
    r
}

fn backends_slot() -> &'static RwLock<Option<Arc<dyn Backends>>> {
    static B: OnceLock<RwLock<Option<Arc<dyn Backends>>>> = OnceLock::new();
    B.get_or_init(Default::default)
}

/// Installs the backends that open `dir=`, `cluster=` and default stores
/// (the `fdbvfs` crate does, before the VFS serves its first open).
pub fn set_backends(backends: Arc<dyn Backends>) {
    *sync::write(backends_slot()) = Some(backends);
}

/// The installed backends, or an error naming `what` could not be opened.
fn backends(what: &str) -> Result<Arc<dyn Backends>> {
    sync::read(backends_slot())
        .clone()
        .ok_or_else(|| Error::StoreOpen {
            what: what.to_string(),
            why: "no store backends are installed: open stores through the fdbvfs crate \
                  (its Store API, CLI or loadable extension)"
                .into(),
        })
}

/// Default time after which a `dir=` store no connection uses is released.
pub const DEFAULT_IDLE_STORE: Duration = Duration::from_secs(300);

/// Idle timeout in ms; `u64::MAX` before it is read from the environment,
/// 0 for never.
static IDLE_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// After how long a `dir=` store no connection uses is released (`None`:
/// never). From `FDBVFS_IDLE_STORE_SECS` (0: never), else
/// [`DEFAULT_IDLE_STORE`], unless [`set_idle_store_timeout`] said.
pub fn idle_store_timeout() -> Option<Duration> {
    let mut ms = IDLE_MS.load(Ordering::Relaxed);
    if ms == u64::MAX {
        ms = match std::env::var("FDBVFS_IDLE_STORE_SECS") {
            Ok(v) => match v.trim().parse::<f64>() {
                Ok(secs) if secs >= 0.0 && secs.is_finite() => (secs * 1000.0) as u64,
                _ => {
                    warn!(value = %v, "FDBVFS_IDLE_STORE_SECS is not a number of seconds; default used");
                    DEFAULT_IDLE_STORE.as_millis() as u64
                }
            },
            Err(_) => DEFAULT_IDLE_STORE.as_millis() as u64,
        };
        IDLE_MS.store(ms, Ordering::Relaxed);
    }
    (ms != 0).then(|| Duration::from_millis(ms))
}

/// Sets the idle timeout of `dir=` stores (`None`: never released).
pub fn set_idle_store_timeout(timeout: Option<Duration>) {
    let ms = timeout.map_or(0, |d| (d.as_millis() as u64).clamp(1, u64::MAX - 1));
    IDLE_MS.store(ms, Ordering::Relaxed);
}

/// The `dir=` stores open in this process (canonical directories).
pub fn open_dirs() -> Vec<PathBuf> {
    reg().by_dir.keys().cloned().collect()
}

/// Takes out of the registry the `dir=` stores no connection has used for
/// the idle timeout; the caller drops them outside the registry lock.
fn take_idle(r: &mut Registry, now: Instant) -> Vec<PageStore> {
    let Some(timeout) = idle_store_timeout() else {
        return Vec::new();
    };
    let mut released = Vec::new();
    let dirs: Vec<PathBuf> = r.by_dir.keys().cloned().collect();
    for dir in dirs {
        // Only the registry's handle left: no file, database or
        // connection holds the store.
        let unused = r.by_dir.get(&dir).is_some_and(|h| h.handle_count() == 1);
        if !unused {
            r.idle_since.remove(&dir);
            continue;
        }
        let since = *r.idle_since.entry(dir.clone()).or_insert(now);
        if now.duration_since(since) >= timeout {
            r.idle_since.remove(&dir);
            if let Some(h) = r.by_dir.remove(&dir) {
                info!(dir = %dir.display(), idle = ?timeout, "released an idle embedded store");
                released.push(h);
            }
        }
    }
    released
}

/// Starts (once per process, forked children included) the thread that
/// releases idle `dir=` stores.
fn ensure_idle_sweeper() {
    static SWEEPER_PID: AtomicU32 = AtomicU32::new(0);
    let Some(timeout) = idle_store_timeout() else {
        return;
    };
    let pid = process::pid();
    if SWEEPER_PID.swap(pid, Ordering::Relaxed) == pid {
        return;
    }
    let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let spawned = std::thread::Builder::new()
        .name("fdbvfs-idle-stores".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            // A forked child's copy of this thread does not exist; the
            // child starts its own.
            let released = {
                let mut r = reg();
                take_idle(&mut r, Instant::now())
            };
            drop(released);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the idle-store thread: idle stores are released at the next open only");
        SWEEPER_PID.store(0, Ordering::Relaxed);
    }
}

/// Registers a store for `store=<id>` and returns the id.
pub fn register_store(handle: PageStore) -> u64 {
    let mut r = reg();
    r.next_id += 1;
    let id = r.next_id;
    r.by_id.insert(id, handle);
    id
}

/// Forgets a registered store (open connections keep working).
pub fn unregister_store(id: u64) {
    reg().by_id.remove(&id);
}

/// Opens (once per process) the store in directory `dir`: later calls
/// with the same directory share it. `open` opens it the first time, given
/// the canonical directory (created if missing).
pub fn open_dir(
    dir: &Path,
    open: impl FnOnce(&Path) -> std::result::Result<PageStore, String>,
) -> Result<PageStore> {
    let fail = |why: String| Error::StoreOpen {
        what: format!("directory {}", dir.display()),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let canon = dir.canonicalize().map_err(|e| fail(e.to_string()))?;
    // Probe readability up front: a clear message beats one from deep in
    // the backend.
    std::fs::read_dir(&canon).map_err(|e| fail(format!("not readable: {e}")))?;
    ensure_idle_sweeper();
    let mut r = reg();
    let released = take_idle(&mut r, Instant::now());
    if let Some(h) = r.by_dir.get(&canon) {
        let h = h.clone();
        r.idle_since.remove(&canon);
        drop(r);
        drop(released);
        return Ok(h);
    }
    // Opened under the registry lock: two connections naming a new
    // directory at once share one store.
    let pages = open(&canon).map_err(fail)?;
    info!(dir = %canon.display(), "opened store directory");
    r.by_dir.insert(canon, pages.clone());
    Ok(pages)
}

/// The store a spec names.
pub fn resolve(spec: &StoreSpec) -> Result<PageStore> {
    match spec {
        StoreSpec::Registered(id) => {
            let r = reg();
            if let Some(parent) = r.inherited.get(id) {
                return Err(Error::StoreOpen {
                    what: format!("store={id}"),
                    why: format!(
                        "it belongs to a Store object of process {parent}, and this process ({}) \
                         is a fork() child of it: create the Store again in this process",
                        process::pid()
                    ),
                });
            }
            r.by_id.get(id).cloned().ok_or_else(|| Error::StoreOpen {
                what: format!("store={id}"),
                why: "no such registered store (it belongs to a Store object that was dropped, or to another process)".into(),
            })
        }
        StoreSpec::Dir(d) => {
            let b = backends(&format!("directory {}", d.display()))?;
            open_dir(d, |canon| b.open(&StoreSpec::Dir(canon.to_path_buf())))
        }
        StoreSpec::Cluster(c) => {
            if let Some(h) = reg().by_cluster.get(c) {
                return Ok(h.clone());
            }
            let what = format!("cluster file {c}");
            let pages = backends(&what)?
                .open(spec)
                .map_err(|why| Error::StoreOpen { what, why })?;
            reg().by_cluster.insert(c.clone(), pages.clone());
            Ok(pages)
        }
        StoreSpec::Default => match backends("the default store")?.default_spec() {
            s @ (StoreSpec::Dir(_) | StoreSpec::Cluster(_)) => resolve(&s),
            other => Err(Error::StoreOpen {
                what: "the default store".into(),
                why: format!("the default must be a directory or a cluster, not {other:?}"),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_known_params() {
        let o = OpenParams::parse(&p(&[("vfs", "fdb"), ("dir", "/tmp/x"), ("version", "42")]));
        let o = o.map_err(|e| e.to_string());
        assert_eq!(
            o,
            Ok(OpenParams {
                spec: StoreSpec::Dir("/tmp/x".into()),
                at: Some(At::Version(pagestore::kv::Version::new(42))),
                admin: true,
                staleness: pagestore::Staleness::Strict,
                keep_cache: true,
            })
        );
        let o = OpenParams::parse(&p(&[("admin", "0")])).map_err(|e| e.to_string());
        assert_eq!(o.map(|o| o.admin), Ok(false));
        let o = OpenParams::parse(&p(&[("keep_cache", "off")])).map_err(|e| e.to_string());
        assert_eq!(o.map(|o| o.keep_cache), Ok(false));
        assert!(OpenParams::parse(&p(&[("keep_cache", "sometimes")])).is_err());
        let o = OpenParams::parse(&p(&[("staleness", "10ms")])).map_err(|e| e.to_string());
        assert_eq!(o.map(|o| o.staleness.to_string()), Ok("10ms".to_string()));
        assert!(OpenParams::parse(&p(&[("staleness", "soon")])).is_err());
        assert!(OpenParams::parse(&p(&[("admin", "maybe")])).is_err());
        let o = OpenParams::parse(&p(&[("store", "3"), ("mode", "ro")])).map_err(|e| e.to_string());
        assert_eq!(o.map(|o| o.spec), Ok(StoreSpec::Registered(3)));
    }

    #[test]
    fn unknown_params_are_named() {
        let e = OpenParams::parse(&p(&[("vfs", "fdb"), ("bogus", "1"), ("other", "")]));
        let msg = e.map(|_| ()).map_err(|e| e.to_string());
        let msg = msg.err().unwrap_or_default();
        assert!(
            msg.contains("\"bogus\"") && msg.contains("\"other\""),
            "{msg}"
        );
    }

    #[test]
    fn at_times_and_versions() {
        let o = OpenParams::parse(&p(&[("at", "2026-11-21T10:00:00Z")])).map_err(|e| e.to_string());
        let want = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_255_200);
        assert_eq!(o.map(|o| o.at), Ok(Some(At::Time(want))));
        let o = OpenParams::parse(&p(&[("at", "v:5")])).map_err(|e| e.to_string());
        assert_eq!(
            o.map(|o| o.at),
            Ok(Some(At::Version(pagestore::kv::Version::new(5))))
        );
        let e = OpenParams::parse(&p(&[("at", "noon")]))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .err()
                .is_some_and(|m| m.contains("at=") && m.contains("RFC 3339")),
            "{e:?}"
        );
        assert!(OpenParams::parse(&p(&[("at", "v:5"), ("version", "5")])).is_err());
    }

    #[test]
    fn bad_values() {
        assert!(OpenParams::parse(&p(&[("version", "x")])).is_err());
        assert!(OpenParams::parse(&p(&[("store", "1"), ("dir", "/a")])).is_err());
        assert!(OpenParams::parse(&p(&[("dir", "")])).is_err());
    }

    #[test]
    fn no_params_is_the_default_store() {
        let o = OpenParams::parse(&p(&[("vfs", "fdb")])).map_err(|e| e.to_string());
        assert_eq!(o.map(|o| o.spec), Ok(StoreSpec::Default));
    }

    #[test]
    fn without_backends_a_cluster_is_clear() {
        let e = resolve(&StoreSpec::Cluster("/nonexistent/fdb.cluster".into()));
        let msg = e
            .map(|_| ())
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(msg.contains("fdbvfs crate"), "{msg}");
    }
}
