//! Which store a command works on: `--dir` (embedded) or, with the `fdb`
//! feature, `--cluster-file`; neither, the default store
//! (`fdbvfs::backend`).

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

impl StoreArgs {
    /// Opens the store these arguments name, else the default store.
    pub fn open(&self) -> Result<Store, Error> {
        #[cfg(feature = "fdb")]
        if let Some(path) = &self.cluster_file {
            return Store::builder().cluster_file(path).build();
        }
        match &self.dir {
            Some(d) => Store::embedded(d),
            None => Store::builder().build(),
        }
    }
}
