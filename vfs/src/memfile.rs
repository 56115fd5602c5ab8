//! Journals and temporary files: in memory while small, spilled to an
//! unnamed private temp file past a threshold, refused past a limit.
//!
//! The store commits atomically, so a rollback journal never has to survive
//! a crash: it only serves ROLLBACK and statement rollback inside one
//! connection. Each open handle has its own buffer, nothing is shared by
//! name, and `xAccess` reports no journal as existing, so SQLite never takes
//! another connection's journal for a hot one and never "recovers" from it.
//!
//! # Bounded memory ([`TempLimits`])
//!
//! * All journals and temp files of the process together keep at most
//!   `memory_bytes` in memory (default [`DEFAULT_MEMORY_BYTES`], 64 MiB;
//!   `FDBVFS_TEMP_MEMORY_BYTES`); a file that would take them past it (or
//!   that cannot get memory) moves its content to a temp file in `dir`
//!   (default the system temp directory; `FDBVFS_TEMP_DIR`). The
//!   file has no name from the start (`O_TMPFILE`, or created 0600 and
//!   unlinked at once), so no other user can open it and nothing is left
//!   behind on close, at exit, or after a `kill -9`.
//! * A file never grows past `max_bytes` (default [`DEFAULT_MAX_BYTES`],
//!   32 GiB; `FDBVFS_TEMP_MAX_BYTES`): the write fails with `SQLITE_FULL`,
//!   as does a full temp directory. Memory is reserved with `try_reserve`,
//!   so a failed allocation is an error (or a spill), never an abort.
//!
//! The limits are read from the environment at first use and can be set
//! for the whole process with [`set_temp_limits`]; a file keeps the limits
//! in force when it was opened.
//!
//! # Spare buffers
//!
//! SQLite opens and deletes the rollback journal at every write
//! transaction (`journal_mode=DELETE`): growing a new buffer each time
//! (reallocations, zero-filling) cost a one-row insert ~18k instructions.
//! A closed file's buffer is kept for the next one instead: at most
//! [`SPARE_BUFFERS`] of at most [`SPARE_BUFFER_BYTES`] each, empty, and
//! outside the budget while spare (charged again when taken), so
//! [`temp_memory_bytes`] still counts only open files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use pagestore::sync;

/// Default in-memory bytes of all journals and temp files of the process
/// together; past it files spill to disk.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// Default largest journal or temp file (in memory or spilled).
pub const DEFAULT_MAX_BYTES: u64 = 32 << 30;

/// Largest file whatever the settings (guards against absurd offsets from
/// a broken caller).
pub const MAX_MEM_FILE: u64 = 1 << 40;

/// Where journals and temp files live and how large they may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempLimits {
    /// Bytes all journals and temp files of the process keep in memory
    /// together; a file that would take them past it spills to disk.
    pub memory_bytes: u64,
    /// Bytes a file may hold at most; a write past it is `SQLITE_FULL`.
    pub max_bytes: u64,
    /// Directory of spilled files; `None` is the system temp directory.
    pub dir: Option<PathBuf>,
}

impl Default for TempLimits {
    fn default() -> Self {
        TempLimits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            dir: None,
        }
    }
}

impl TempLimits {
    /// The defaults, overridden by `FDBVFS_TEMP_MEMORY_BYTES`,
    /// `FDBVFS_TEMP_MAX_BYTES` and `FDBVFS_TEMP_DIR` where set and valid.
    pub fn from_env() -> Self {
        let num = |name: &str| {
            let v = std::env::var(name).ok()?;
            match v.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(variable = name, value = %v, "not a byte count; default used");
                    None
                }
            }
        };
        let d = TempLimits::default();
        TempLimits {
            memory_bytes: num("FDBVFS_TEMP_MEMORY_BYTES").unwrap_or(d.memory_bytes),
            max_bytes: num("FDBVFS_TEMP_MAX_BYTES").unwrap_or(d.max_bytes),
            dir: std::env::var_os("FDBVFS_TEMP_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

static LIMITS: RwLock<Option<TempLimits>> = RwLock::new(None);

/// Closed files' buffers kept for reuse (see the module docs).
pub const SPARE_BUFFERS: usize = 4;
/// Largest capacity kept as a spare buffer.
pub const SPARE_BUFFER_BYTES: usize = 256 << 10;

static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Keeps `data` (emptied) for the next file when it is small enough and
/// room is left.
fn keep_spare(mut data: Vec<u8>) {
    if data.capacity() == 0 || data.capacity() > SPARE_BUFFER_BYTES {
        return;
    }
    let mut spare = sync::lock(&SPARE);
    if spare.len() < SPARE_BUFFERS {
        data.clear();
        spare.push(data);
    }
}

/// A spare buffer charged to the budget `limit` (None when there is none,
/// or it does not fit).
fn take_spare(limit: u64) -> Option<Vec<u8>> {
    let data = sync::lock(&SPARE).pop()?;
    charge(data.capacity() as u64, limit).then_some(data)
}

/// Bytes of memory held by all journals and temp files (their buffers'
/// capacity).
static IN_MEMORY: AtomicU64 = AtomicU64::new(0);

/// Bytes of memory all journals and temp files hold now.
pub fn temp_memory_bytes() -> u64 {
    IN_MEMORY.load(Ordering::Relaxed)
}

/// Takes `n` bytes of the process budget `limit`; false when they would
/// take it past.
fn charge(n: u64, limit: u64) -> bool {
    IN_MEMORY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(n).filter(|t| *t <= limit)
        })
        .is_ok()
}

fn refund(n: u64) {
    let _ = IN_MEMORY.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        Some(held.saturating_sub(n))
    });
}

/// The limits in force for files opened from now on.
pub fn temp_limits() -> TempLimits {
    if let Some(l) = sync::read(&LIMITS).as_ref() {
        return l.clone();
    }
    let mut w = sync::write(&LIMITS);
    w.get_or_insert_with(TempLimits::from_env).clone()
}

/// Sets the limits for files opened from now on, in the whole process.
pub fn set_temp_limits(limits: TempLimits) {
    *sync::write(&LIMITS) = Some(limits);
}

/// Why a journal or temp file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// Past the size limit, or no room left (memory and temp directory):
    /// `SQLITE_FULL`.
    #[error("{0}")]
    Full(String),
    /// A bad request or an I/O error of the spill file.
    #[error("{0}")]
    Io(String),
}

impl MemError {
    /// Whether SQLite should hear `SQLITE_FULL`.
    pub fn is_full(&self) -> bool {
        matches!(self, MemError::Full(_))
    }
}

#[derive(Debug)]
enum Body {
    Mem(Vec<u8>),
    Disk(File),
}

/// A journal or temporary file.
#[derive(Debug)]
pub struct MemFile {
    body: Body,
    size: u64,
    limits: TempLimits,
    /// Bytes of the process budget this file holds.
    charged: u64,
}

impl Default for MemFile {
    fn default() -> Self {
        MemFile::with_limits(temp_limits())
    }
}

impl MemFile {
    /// An empty file under `limits`.
    pub fn with_limits(limits: TempLimits) -> Self {
        MemFile {
            body: Body::Mem(Vec::new()),
            size: 0,
            limits,
            charged: 0,
        }
    }

    /// Whether the content lives in a temp file.
    pub fn is_spilled(&self) -> bool {
        matches!(self.body, Body::Disk(_))
    }

    fn max(&self) -> u64 {
        self.limits.max_bytes.min(MAX_MEM_FILE)
    }

    fn too_large(&self, what: &str, end: u64) -> MemError {
        MemError::Full(format!(
            "{what} of a journal or temp file to {end} bytes, past its limit of {} bytes (FDBVFS_TEMP_MAX_BYTES)",
            self.max()
        ))
    }

    /// Moves the content to an unnamed temp file.
    fn spill(&mut self) -> Result<(), MemError> {
        let Body::Mem(data) = &self.body else {
            return Ok(());
        };
        let dir = temp_dir(&self.limits);
        let file = tempfile::tempfile_in(&dir).map_err(|e| disk_error(&dir, "create", &e))?;
        file.write_all_at(data, 0)
            .map_err(|e| disk_error(&dir, "write", &e))?;
        tracing::debug!(bytes = self.size, dir = %dir.display(), "journal or temp file spilled to disk");
        self.set_body(Body::Disk(file));
        Ok(())
    }

    /// Replaces the content, giving its memory back to the budget (and
    /// a small buffer to the spares).
    fn set_body(&mut self, body: Body) {
        if let Body::Mem(data) = std::mem::replace(&mut self.body, body) {
            keep_spare(data);
        }
        refund(std::mem::take(&mut self.charged));
    }

    /// Makes the in-memory buffer `len` bytes long, zero-filled, within
    /// the process budget; spills when past it or when memory cannot be
    /// had.
    fn grow(&mut self, len: u64) -> Result<(), MemError> {
        self.reserve(len)?;
        if let Body::Mem(data) = &mut self.body {
            data.resize(len as usize, 0);
        }
        Ok(())
    }

    /// Room for `len` bytes in the in-memory buffer (its length
    /// unchanged), within the process budget; spills when past it or when
    /// memory cannot be had.
    fn reserve(&mut self, len: u64) -> Result<(), MemError> {
        let limit = self.limits.memory_bytes;
        if let Body::Mem(data) = &mut self.body {
            let len = len as usize;
            if data.capacity() == 0 {
                if let Some(spare) = take_spare(limit) {
                    self.charged = spare.capacity() as u64;
                    *data = spare;
                }
            }
            if len <= data.capacity() {
                return Ok(());
            }
            // Doubling keeps appends amortised; the budget is charged for
            // the whole capacity.
            let cap = len.max(data.capacity().saturating_mul(2)).max(4096);
            let cap = if cap as u64 > limit { len } else { cap };
            let extra = (cap - data.capacity()) as u64;
            if charge(extra, limit) {
                if data.try_reserve_exact(cap - data.len()).is_ok() {
                    self.charged += extra;
                    return Ok(());
                }
                refund(extra);
                tracing::debug!(
                    bytes = len,
                    "no memory for a journal or temp file: spilling"
                );
            }
            self.spill()?;
        }
        Ok(())
    }

    /// Reads into `buf` from `offset`; returns the bytes read (the rest of
    /// `buf` is zero-filled, as SQLite requires for short reads).
    pub fn try_read(&self, buf: &mut [u8], offset: u64) -> Result<usize, MemError> {
        let start = offset.min(self.size);
        let n = ((self.size - start) as usize).min(buf.len());
        match &self.body {
            Body::Mem(data) => {
                let start = start as usize;
                buf[..n].copy_from_slice(&data[start..start + n]);
            }
            Body::Disk(f) => f
                .read_exact_at(&mut buf[..n], start)
                .map_err(|e| MemError::Io(format!("read of a spilled temp file: {e}")))?,
        }
        buf[n..].fill(0);
        Ok(n)
    }

    /// [`MemFile::try_read`], with an I/O error read as nothing (for
    /// super-journals, which are small and never spill).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> usize {
        self.try_read(buf, offset).unwrap_or_else(|_| {
            buf.fill(0);
            0
        })
    }

    /// Writes `buf` at `offset`, growing the file (zero-filled) as needed.
    pub fn try_write(&mut self, buf: &[u8], offset: u64) -> Result<(), MemError> {
        let end = match offset.checked_add(buf.len() as u64) {
            Some(e) if e <= self.max() => e,
            other => return Err(self.too_large("write", other.unwrap_or(u64::MAX))),
        };
        if end > self.size {
            self.reserve(end)?;
        }
        match &mut self.body {
            Body::Mem(data) => {
                // Appends (the journal's writes) extend the buffer without
                // zero-filling it first.
                let (offset, end) = (offset as usize, end as usize);
                if offset > data.len() {
                    data.resize(offset, 0);
                }
                let over = end.min(data.len()).saturating_sub(offset);
                data[offset..offset + over].copy_from_slice(&buf[..over]);
                data.extend_from_slice(&buf[over..]);
            }
            Body::Disk(f) => f
                .write_all_at(buf, offset)
                .map_err(|e| disk_error(&temp_dir(&self.limits), "write", &e))?,
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Truncates (or extends with zeros) to `size`.
    pub fn try_truncate(&mut self, size: u64) -> Result<(), MemError> {
        if size > self.max() {
            return Err(self.too_large("truncation", size));
        }
        if size == 0 {
            // Give memory and disk back after a journal is reset
            // (journal_mode=TRUNCATE); the next use starts in memory.
            self.set_body(Body::Mem(Vec::new()));
            self.size = 0;
            return Ok(());
        }
        match &mut self.body {
            Body::Mem(data) if size <= data.len() as u64 => data.truncate(size as usize),
            Body::Mem(_) => self.grow(size)?,
            Body::Disk(_) => {}
        }
        if let Body::Disk(f) = &self.body {
            f.set_len(size)
                .map_err(|e| MemError::Io(format!("truncation of a spilled temp file: {e}")))?;
        }
        self.size = size;
        Ok(())
    }

    /// Current size.
    pub fn size(&self) -> u64 {
        self.size
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        match &self.body {
            Body::Mem(data) => data.capacity(),
            Body::Disk(_) => 0,
        }
    }
}

fn temp_dir(l: &TempLimits) -> PathBuf {
    l.dir.clone().unwrap_or_else(std::env::temp_dir)
}

impl Drop for MemFile {
    fn drop(&mut self) {
        if let Body::Mem(data) = &mut self.body {
            keep_spare(std::mem::take(data));
        }
        refund(std::mem::take(&mut self.charged));
    }
}

/// A failure of the spill file: no space is `SQLITE_FULL`, the rest I/O.
fn disk_error(dir: &std::path::Path, what: &str, e: &std::io::Error) -> MemError {
    let msg = format!(
        "cannot {what} a journal or temp file spilled to {} (FDBVFS_TEMP_DIR): {e}",
        dir.display()
    );
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => MemError::Full(msg),
        _ => MemError::Io(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(spill: u64, max: u64) -> TempLimits {
        TempLimits {
            memory_bytes: spill,
            max_bytes: max,
            dir: None,
        }
    }

    #[test]
    fn read_write_truncate() {
        let mut f = MemFile::with_limits(TempLimits::default());
        assert!(f.try_write(b"abc", 5).is_ok());
        assert_eq!(f.size(), 8);
        let mut b = [9u8; 10];
        assert_eq!(f.read(&mut b, 4), 4);
        assert_eq!(b, [0, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.read(&mut b, 100), 0);
        assert!(f.try_truncate(6).is_ok());
        assert_eq!(f.size(), 6);
        assert!(f.try_write(b"x", u64::MAX).is_err_and(|e| e.is_full()));
        assert!(f.try_truncate(u64::MAX).is_err_and(|e| e.is_full()));
    }

    #[test]
    fn spills_past_the_threshold_and_reads_back() {
        let mut f = MemFile::with_limits(limits(16, 1 << 20));
        // (Other tests' files share the budget: this one may spill early.)
        f.try_write(b"0123456789", 0).unwrap();
        f.try_write(b"abcdefghij", 10).unwrap();
        assert!(f.is_spilled());
        let mut b = [9u8; 24];
        assert_eq!(f.try_read(&mut b, 0).unwrap(), 20);
        assert_eq!(&b[..20], b"0123456789abcdefghij");
        assert_eq!(&b[20..], &[0; 4]);
        // Growth by truncation reads as zeros; shrinking cuts.
        f.try_truncate(30).unwrap();
        assert_eq!(f.try_read(&mut b, 18).unwrap(), 12);
        assert_eq!(&b[..12], b"ij\0\0\0\0\0\0\0\0\0\0");
        f.try_truncate(5).unwrap();
        assert_eq!(f.size(), 5);
        assert_eq!(f.try_read(&mut b, 0).unwrap(), 5);
        // Reset: back in memory.
        f.try_truncate(0).unwrap();
        assert!(!f.is_spilled());
    }

    #[test]
    fn memory_is_charged_and_given_back() {
        let mut f = MemFile::with_limits(limits(u64::MAX, 1 << 30));
        f.try_write(&[1; 100_000], 0).unwrap();
        assert!(f.charged >= 100_000);
        assert!(temp_memory_bytes() >= f.charged);
        f.try_truncate(0).unwrap();
        assert_eq!(f.charged, 0);
        f.try_write(&[1; 10], 0).unwrap();
        drop(f);
    }

    #[test]
    fn a_reused_buffer_reads_as_written_and_zeros() {
        // A closed file's buffer (full of 0xAA) is likely the next one's
        // spare: gaps and extensions must still read as zeros.
        for _ in 0..3 {
            let mut f = MemFile::with_limits(limits(u64::MAX, 1 << 30));
            f.try_write(&[0xAA; 100_000], 0).unwrap();
            drop(f);
            let mut g = MemFile::with_limits(limits(u64::MAX, 1 << 30));
            g.try_write(b"xy", 50_000).unwrap();
            let mut b = vec![9u8; 50_010];
            assert_eq!(g.read(&mut b, 0), 50_002);
            assert!(b[..50_000].iter().all(|&x| x == 0));
            assert_eq!(&b[50_000..50_002], b"xy");
            // An overwrite straddling the end, then growth by truncation.
            g.try_write(b"abc", 50_001).unwrap();
            g.try_truncate(60_000).unwrap();
            let mut b = vec![9u8; 10_000];
            assert_eq!(g.read(&mut b, 50_000), 10_000);
            assert_eq!(&b[..4], b"xabc");
            assert!(b[4..].iter().all(|&x| x == 0));
            // Shrink, then append past the old end.
            g.try_truncate(3).unwrap();
            g.try_write(b"z", 5).unwrap();
            let mut b = [9u8; 6];
            assert_eq!(g.read(&mut b, 0), 6);
            assert_eq!(b, [0, 0, 0, 0, 0, b'z']);
        }
        // Spare buffers are outside the budget: a file holds only its own.
        let f = MemFile::with_limits(limits(u64::MAX, 1 << 30));
        assert_eq!(f.charged, 0);
    }

    #[test]
    fn spare_buffers_are_bounded_and_charged_when_taken() {
        let mut f = MemFile::with_limits(limits(u64::MAX, 1 << 30));
        f.try_write(&[1; 10], 0).unwrap();
        assert!(f.charged >= 10);
        assert_eq!(f.charged, f.capacity() as u64);
        // Too large to be kept.
        let mut big = MemFile::with_limits(limits(u64::MAX, 1 << 30));
        big.try_write(&[1; SPARE_BUFFER_BYTES + 1], 0).unwrap();
        drop(big);
        for _ in 0..2 * SPARE_BUFFERS {
            keep_spare(Vec::with_capacity(16));
        }
        let spare = sync::lock(&SPARE);
        assert!(spare.len() <= SPARE_BUFFERS);
        assert!(spare
            .iter()
            .all(|b| b.is_empty() && b.capacity() <= SPARE_BUFFER_BYTES));
    }

    #[test]
    fn past_the_limit_is_full() {
        let mut f = MemFile::with_limits(limits(8, 32));
        f.try_write(&[1; 32], 0).unwrap();
        let e = f.try_write(&[1], 32).unwrap_err();
        assert!(e.is_full(), "{e}");
        assert!(e.to_string().contains("FDBVFS_TEMP_MAX_BYTES"), "{e}");
        assert!(f.try_truncate(33).unwrap_err().is_full());
        assert_eq!(f.size(), 32);
    }

    #[test]
    fn an_unusable_temp_dir_is_an_error_not_a_crash() {
        let mut f = MemFile::with_limits(TempLimits {
            dir: Some("/nonexistent/fdbvfs-temp".into()),
            ..limits(4, 1 << 20)
        });
        let e = f.try_write(b"abcdefgh", 0).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/fdbvfs-temp"), "{e}");
        assert!(!e.is_full());
        // Nothing was written, and the file is still usable.
        assert_eq!(f.size(), 0);
        let mut b = [7u8; 3];
        assert_eq!(f.try_read(&mut b, 0).unwrap(), 0);
        assert_eq!(b, [0; 3]);
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;

    /// Random writes, truncations and reads against a plain Vec, files
    /// dropped and reopened (their buffers reused as spares).
    #[test]
    fn a_memfile_behaves_like_a_vec() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut f = MemFile::with_limits(TempLimits::default());
            let mut model: Vec<u8> = Vec::new();
            for step in 0..60 {
                match rnd(4) {
                    0 | 1 => {
                        let off = rnd(20_000);
                        let len = rnd(5_000) as usize;
                        let byte = (step % 250 + 1) as u8;
                        let buf = vec![byte; len];
                        f.try_write(&buf, off).unwrap();
                        let end = off as usize + len;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&buf);
                    }
                    2 => {
                        let size = rnd(25_000);
                        f.try_truncate(size).unwrap();
                        if size == 0 {
                            model.clear();
                        } else {
                            model.resize(size as usize, 0);
                        }
                    }
                    _ => {
                        let off = rnd(26_000);
                        let mut got = vec![7u8; rnd(6_000) as usize];
                        let n = f.try_read(&mut got, off).unwrap();
                        let start = (off as usize).min(model.len());
                        let want_n = (model.len() - start).min(got.len());
                        assert_eq!(n, want_n);
                        assert_eq!(&got[..n], &model[start..start + n]);
                        assert!(got[n..].iter().all(|&b| b == 0));
                    }
                }
                assert_eq!(f.size(), model.len() as u64);
            }
        }
    }
}
