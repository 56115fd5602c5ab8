//! Which store a command works on: `--dir` (embedded) or, with the `fdb`
//! feature, `--cluster-file`.

use std::path::PathBuf;

use clap::Args;
use fdbvfs::{Error, Store};

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store (created if missing).
    #[arg(
        long,
        global = true,
        env = "FDBVFS_DIR",
        default_value = "./fdbvfs-data"
    )]
    pub dir: PathBuf,
    /// FoundationDB cluster file; when given, the store is that cluster and
    /// `--dir` is not used.
    #[cfg(feature = "fdb")]
    #[arg(long, global = true, env = "FDB_CLUSTER_FILE")]
    pub cluster_file: Option<PathBuf>,
}

impl StoreArgs {
    /// Opens the store these arguments name.
    pub fn open(&self) -> Result<Store, Error> {
        #[cfg(feature = "fdb")]
        if let Some(path) = &self.cluster_file {
            return Store::builder().cluster_file(path.clone()).build();
        }
        Store::embedded(&self.dir)
    }
}
