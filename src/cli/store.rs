//! Which store a command works on: `--dir` (embedded) or, with the `fdb`
//! feature, `--cluster-file`.

use std::path::PathBuf;

use clap::Args;
use fdbvfs::{Error, Store};

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store, created if missing [default:
    /// $FDBVFS_DIR, else ./fdbvfs-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// FoundationDB cluster file; when given, the store is that cluster and
    /// --dir is not used [default: $FDB_CLUSTER_FILE]
    #[cfg(feature = "fdb")]
    #[arg(long, global = true, value_name = "PATH")]
    pub cluster_file: Option<PathBuf>,
}

/// The directory used when neither `--dir` nor `FDBVFS_DIR` names one.
pub const DEFAULT_DIR: &str = "./fdbvfs-data";

/// An environment variable's value, when set and not empty (an empty
/// variable counts as unset, as in the library).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl StoreArgs {
    /// Opens the store these arguments name.
    pub fn open(&self) -> Result<Store, Error> {
        #[cfg(feature = "fdb")]
        if let Some(path) = self
            .cluster_file
            .clone()
            .or_else(|| env_path("FDB_CLUSTER_FILE"))
        {
            return Store::builder().cluster_file(path).build();
        }
        Store::embedded(self.dir())
    }

    /// The embedded store's directory: `--dir`, else `$FDBVFS_DIR`, else
    /// [`DEFAULT_DIR`].
    pub fn dir(&self) -> PathBuf {
        self.dir
            .clone()
            .or_else(|| env_path("FDBVFS_DIR"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }
}
