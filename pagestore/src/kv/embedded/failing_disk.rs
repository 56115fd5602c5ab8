//! Test builds only: the in-memory store's disk, whose syncs can be made to
//! fail, so that tests see what a failed fsync does to a group of commits
//! (none of them may be acknowledged).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::StorageBackend;

/// An in-memory redb backend whose `sync_data` fails while asked to.
#[derive(Clone, Debug)]
pub(crate) struct FailingDisk {
    inner: Arc<InMemoryBackend>,
    fail_syncs: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
}

impl FailingDisk {
    pub(crate) fn new(inner: InMemoryBackend) -> Self {
        FailingDisk {
            inner: Arc::new(inner),
            fail_syncs: Arc::default(),
            syncs: Arc::default(),
        }
    }

    /// Makes every sync fail (`true`) or succeed again.
    pub(crate) fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Syncs asked for so far (failed ones included).
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

impl StorageBackend for FailingDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
}
