//! Which backend a store is, and which store is the default.
//!
//! The one place that turns a choice of store (a directory, memory, a
//! FoundationDB cluster, or none: the default) into a [`StoreHandle`]. The
//! Rust API ([`crate::Store`]), the CLI and the loadable extension all come
//! through here; the VFS only ever sees the resulting `PageStore`s, through
//! the [`vfs::Backends`] this module installs (see [`install`]).
//!
//! # The default store
//!
//! When nothing names a store (a URI without `store=`, `dir=` or
//! `cluster=`; the CLI without `--dir` or `--cluster-file`;
//! [`crate::Store::builder`] without `dir`, `in_memory` or `cluster_file`;
//! [`crate::open`]), the store is, in this order:
//!
//! 1. in builds with the `fdb` feature, the cluster in `FDB_CLUSTER_FILE`
//!    when it is set and not empty;
//! 2. the embedded store in `FDBVFS_DIR` when it is set and not empty;
//! 3. the embedded store in `./fdbvfs-data`.
//!
//! A store named explicitly always wins over the environment.
//!
//! # Embedded directories
//!
//! A directory is opened once per process (the VFS registry keeps it, and
//! releases it when idle): the first process to open it owns it and serves
//! it on `<dir>/kv.sock`; later processes (another sqlite3 shell, the bank
//! test's workers) connect to that socket (`pagestore::kv::remote`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::{process, remote};
use pagestore::{PageStore, StoreOptions};
use vfs::StoreSpec;

use crate::error::{Error, Result};

/// Environment variable naming the default embedded store directory.
pub const DIR_ENV: &str = "FDBVFS_DIR";
/// Environment variable naming the default FoundationDB cluster file
/// (builds with the `fdb` feature).
pub const CLUSTER_ENV: &str = "FDB_CLUSTER_FILE";
/// The embedded store directory when nothing else names a store.
pub const DEFAULT_DIR: &str = "./fdbvfs-data";

/// Which backend a store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, in a directory (shared by the processes that open it).
    Dir(PathBuf),
    /// Embedded, in memory (tests; gone with the process).
    Memory,
    /// FoundationDB, by cluster file.
    #[cfg(feature = "fdb")]
    Cluster(PathBuf),
}

/// An environment variable's value, when set and not empty (an empty
/// variable counts as unset).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Backend {
    /// The default store (see the module docs).
    pub fn from_env() -> Backend {
        #[cfg(feature = "fdb")]
        if let Some(c) = env_path(CLUSTER_ENV) {
            return Backend::Cluster(c);
        }
        Backend::Dir(env_path(DIR_ENV).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)))
    }

    /// What this backend is, for messages.
    pub fn description(&self) -> String {
        match self {
            Backend::Dir(d) => format!("embedded in {}", d.display()),
            Backend::Memory => "embedded in memory".to_string(),
            #[cfg(feature = "fdb")]
            Backend::Cluster(c) => format!("fdb cluster {}", c.display()),
        }
    }

    /// Opens the store. `options` gives the options of a first open (the
    /// embedded store's directory, canonical, when there is one); a
    /// directory this process has open already is shared, with its options.
    pub fn open(
        &self,
        options: impl FnOnce(Option<&Path>) -> (EmbeddedOptions, StoreOptions),
    ) -> Result<StoreHandle> {
        match self {
            Backend::Dir(d) => open_dir(d, |canon| options(Some(canon))),
            Backend::Memory => {
                let (eopts, sopts) = options(None);
                let kv = EmbeddedKv::open(eopts).map_err(pagestore::Error::from)?;
                Ok(StoreHandle {
                    pages: PageStore::new(kv.clone(), sopts),
                    embedded: Some(kv),
                })
            }
            #[cfg(feature = "fdb")]
            Backend::Cluster(c) => {
                let (_, sopts) = options(None);
                Ok(StoreHandle {
                    pages: open_cluster(c, sopts)?,
                    embedded: None,
                })
            }
        }
    }
}

/// An open store: its pages, and the embedded backend when this process
/// holds it (fault injection in tests and benches).
#[derive(Clone, Debug)]
pub struct StoreHandle {
    /// The page store.
    pub pages: PageStore,
    /// The embedded backend, when this process owns it: an in-memory store,
    /// or a directory this process serves (clients of another process's
    /// directory share the owner's faults).
    pub embedded: Option<Arc<EmbeddedKv>>,
}

/// Opens (once per process) the embedded store in `dir`: later calls with
/// the same directory share it. `options` builds the options of a first
/// open from the canonical directory.
pub fn open_dir(
    dir: &Path,
    options: impl FnOnce(&Path) -> (EmbeddedOptions, StoreOptions),
) -> Result<StoreHandle> {
    let pages = vfs::registry::open_dir(dir, |canon| {
        let (eopts, sopts) = options(canon);
        open_embedded_dir(canon, eopts, sopts)
    })?;
    Ok(StoreHandle {
        pages,
        // Runtime fault changes (`Store::set_faults`) reach the store only
        // in the process that owns the directory.
        embedded: remote::owned(dir),
    })
}

/// Opens the embedded store in the canonical directory `canon` in shared
/// mode: its owner if no live process holds it, else a client of the one
/// that does.
fn open_embedded_dir(
    canon: &Path,
    eopts: EmbeddedOptions,
    sopts: StoreOptions,
) -> std::result::Result<PageStore, String> {
    let kv = remote::open_shared(EmbeddedOptions {
        dir: Some(canon.to_path_buf()),
        ..eopts
    })
    .map_err(|e| e.to_string())?;
    // A forked child must never use this handle (nor a connection holding
    // it): it fails there, naming both processes, and the child re-opens.
    let kv = process::ProcessBound::wrap(kv, format!("store directory {}", canon.display()));
    process::close_in_forked_children(canon);
    Ok(PageStore::new(kv, sopts))
}

/// Opens the FoundationDB cluster of cluster file `path`.
#[cfg(feature = "fdb")]
fn open_cluster(path: &Path, sopts: StoreOptions) -> Result<PageStore, pagestore::Error> {
    use pagestore::kv::fdb::{FdbKv, FdbOptions};
    let kv = FdbKv::open(FdbOptions::default().cluster_file(path))?;
    Ok(PageStore::new(kv, sopts))
}

/// The backends of URIs that name a store by place, or none.
struct UriBackends;

impl vfs::Backends for UriBackends {
    fn default_spec(&self) -> StoreSpec {
        match Backend::from_env() {
            #[cfg(feature = "fdb")]
            Backend::Cluster(c) => StoreSpec::Cluster(c.to_string_lossy().into_owned()),
            Backend::Dir(d) => StoreSpec::Dir(d),
            // Never the default; kept total for the compiler.
            Backend::Memory => StoreSpec::Dir(PathBuf::from(DEFAULT_DIR)),
        }
    }

    fn open(&self, spec: &StoreSpec) -> std::result::Result<PageStore, String> {
        match spec {
            StoreSpec::Dir(canon) => {
                open_embedded_dir(canon, EmbeddedOptions::in_memory(), StoreOptions::default())
            }
            #[cfg(feature = "fdb")]
            StoreSpec::Cluster(c) => {
                open_cluster(Path::new(c), StoreOptions::default()).map_err(|e| e.to_string())
            }
            #[cfg(not(feature = "fdb"))]
            StoreSpec::Cluster(c) => {
                tracing::warn!(cluster = %c, "cluster= given but FoundationDB support is not built in");
                Err("this build of fdbvfs has no FoundationDB support (build with the `fdb` cargo feature)".into())
            }
            StoreSpec::Registered(_) | StoreSpec::Default => {
                Err(format!("{spec:?} is not a store place"))
            }
        }
    }
}

/// Installs this crate's backends in the VFS (once per process): URIs
/// naming `dir=`, `cluster=` or no store open them through this module.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| vfs::registry::set_backends(Arc::new(UriBackends)));
}

/// Registers the `fdb` VFS with the SQLite linked into this program
/// (rusqlite's bundled copy), with this crate's backends, so that
/// `file:NAME?vfs=fdb&dir=…` URIs work without a [`crate::Store`].
/// Idempotent.
pub fn register_linked() -> Result<()> {
    install();
    vfs::register_linked().map_err(Error::Config)
}
