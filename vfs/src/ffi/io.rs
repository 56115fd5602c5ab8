//! The I/O methods SQLite calls on an open file.
//!
//! Three kinds of file sit behind a handle: the main database file
//! ([`MainFile`]), super-journals ([`SuperJournal`], shared by name) and
//! journals and temp files ([`MemFile`]). Each implements one safe trait,
//! [`VfsFile`]; one generic `extern "C"` trampoline per method does the
//! pointer work for every kind, catches unwinds, and reports errors in one
//! place ([`super::report`]). A kind gets its own method table
//! ([`VfsFile::METHODS`]), so no call ever matches on the kind.

#![warn(clippy::too_many_lines)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::{guard, report, VfsCtx};
use crate::api::Api;
use crate::error::{Error, Op, Result};
use crate::file::group::SuperJournal;
use crate::lock::Level;
use crate::memfile::MemFile;

/// One kind of file, as SQLite's I/O methods see it. Only `name`, `read`,
/// `write`, `truncate` and `size` are needed by every kind; the rest
/// default to what journals and temp files do (nothing to sync or lock).
pub(crate) trait VfsFile: Sized + 'static {
    /// The kind's method table (see [`io_methods`]).
    const METHODS: &'static ffi::sqlite3_io_methods;

    /// The name its errors are reported under.
    fn name(&self) -> &str;

    /// xRead: fills `buf` from file offset `offset`. False for a short read
    /// (the rest of `buf` zero-filled).
    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool>;

    /// xWrite.
    fn write(&mut self, buf: &[u8], offset: u64) -> Result<()>;

    /// xTruncate.
    fn truncate(&mut self, size: u64) -> Result<()>;

    /// xFileSize.
    fn size(&mut self) -> Result<u64>;

    /// xSync.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    /// xLock.
    fn lock(&mut self, _level: Level) -> Result<()> {
        Ok(())
    }

    /// xUnlock.
    fn unlock(&mut self, _level: Level) -> Result<()> {
        Ok(())
    }

    /// xCheckReservedLock.
    fn reserved_elsewhere(&self) -> bool {
        false
    }

    /// xFileControl, decoded; returns SQLite's code.
    fn file_control(&mut self, _api: &Api, _request: FileControl) -> Result<c_int> {
        Ok(ffi::SQLITE_NOTFOUND)
    }
}

/// The method table of kind `F`: every entry is a trampoline for `F`.
/// Version 1: no shared memory (so no WAL) and no memory mapping.
pub(crate) const fn io_methods<F: VfsFile>() -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: 1,
        xClose: Some(x_close::<F>),
        xRead: Some(x_read::<F>),
        xWrite: Some(x_write::<F>),
        xTruncate: Some(x_truncate::<F>),
        xSync: Some(x_sync::<F>),
        xFileSize: Some(x_file_size::<F>),
        xLock: Some(x_lock::<F>),
        xUnlock: Some(x_unlock::<F>),
        xCheckReservedLock: Some(x_check_reserved_lock::<F>),
        xFileControl: Some(x_file_control::<F>),
        xSectorSize: Some(x_sector_size),
        xDeviceCharacteristics: Some(x_device_characteristics),
        xShmMap: None,
        xShmLock: None,
        xShmBarrier: None,
        xShmUnmap: None,
        xFetch: None,
        xUnfetch: None,
    }
}

/// Our `sqlite3_file` subclass: SQLite allocates `szOsFile` bytes for it.
#[repr(C)]
pub(crate) struct Handle {
    base: ffi::sqlite3_file,
    /// A `Box<F>` of the kind whose [`VfsFile::METHODS`] `base` points to.
    file: *mut c_void,
    ctx: *const VfsCtx,
}

/// Clears the handle SQLite gave `xOpen`, so that a failed open is never
/// closed (a null `pMethods` tells SQLite not to call xClose).
///
/// # Safety
/// `f` points to `szOsFile` writable bytes (`size_of::<Handle>()`).
pub(crate) unsafe fn clear(f: *mut ffi::sqlite3_file) {
    let h = f.cast::<Handle>();
    // SAFETY: the caller's contract: `h` is a writable `Handle`.
    unsafe {
        (*h).base.pMethods = ptr::null();
        (*h).file = ptr::null_mut();
        (*h).ctx = ptr::null();
    }
}

/// Fills the handle with `file`; SQLite calls `F`'s methods from now on.
///
/// # Safety
/// As [`clear`]; `ctx` lives as long as the registration (for ever).
pub(crate) unsafe fn install<F: VfsFile>(f: *mut ffi::sqlite3_file, file: Box<F>, ctx: &VfsCtx) {
    let h = f.cast::<Handle>();
    let boxed = Box::into_raw(file).cast::<c_void>();
    // SAFETY: the caller's contract: `h` is a writable `Handle`.
    unsafe {
        (*h).file = boxed;
        (*h).ctx = ctx;
        (*h).base.pMethods = F::METHODS;
    }
}

/// The file and registration behind `f`, when it is open.
///
/// # Safety
/// `f` is null or a handle `xOpen` filled in, with `F`'s methods (they
/// are the only ones that call this with `F`).
unsafe fn handle<'a, F: VfsFile>(f: *mut ffi::sqlite3_file) -> Option<(&'a mut F, &'a VfsCtx)> {
    if f.is_null() {
        return None;
    }
    let h = f.cast::<Handle>();
    // SAFETY: SQLite passes back the handle xOpen filled in.
    let (file, ctx) = unsafe { ((*h).file.cast::<F>(), (*h).ctx) };
    if file.is_null() || ctx.is_null() {
        return None;
    }
    // SAFETY: both were created by `install` and live until xClose; SQLite
    // never calls one file's methods concurrently.
    unsafe { Some((&mut *file, &*ctx)) }
}

/// What an I/O method returns when it cannot run.
#[derive(Clone, Copy)]
struct Fallback {
    /// The handle is closed or null.
    no_file: c_int,
    /// The body panicked.
    panic: c_int,
}

impl Fallback {
    const fn same(code: c_int) -> Fallback {
        Fallback {
            no_file: code,
            panic: code,
        }
    }
}

/// THE prologue of every I/O method: resolves the handle, runs `body`
/// under `catch_unwind`, and reports its error as one of `op`.
///
/// # Safety
/// As [`handle`].
unsafe fn with_file<F: VfsFile>(
    f: *mut ffi::sqlite3_file,
    entry: &'static str,
    op: Op,
    fallback: Fallback,
    body: impl FnOnce(&mut F, &VfsCtx) -> Result<c_int>,
) -> c_int {
    guard(entry, fallback.panic, || {
        // SAFETY: the caller's contract.
        let Some((file, ctx)) = (unsafe { handle::<F>(f) }) else {
            return fallback.no_file;
        };
        match body(file, ctx) {
            Ok(rc) => rc,
            Err(e) => report(Some(ctx), &e, op, file.name()),
        }
    })
}

unsafe extern "C" fn x_close<F: VfsFile>(f: *mut ffi::sqlite3_file) -> c_int {
    guard("xClose", ffi::SQLITE_IOERR_CLOSE, || {
        if f.is_null() {
            return ffi::SQLITE_OK;
        }
        let h = f.cast::<Handle>();
        // SAFETY: the box was created by `install` with this `F`; xClose is
        // called once, and the handle is cleared so nothing uses it after.
        unsafe {
            let file = (*h).file.cast::<F>();
            (*h).file = ptr::null_mut();
            (*h).base.pMethods = ptr::null();
            if !file.is_null() {
                drop(Box::from_raw(file));
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read<F: VfsFile>(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_READ;
    let body = |file: &mut F, _: &VfsCtx| {
        let (Ok(len), Ok(off)) = (usize::try_from(amt), u64::try_from(off)) else {
            return Ok(CODE);
        };
        if buf.is_null() {
            return Ok(CODE);
        }
        // SAFETY: SQLite gives amt writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        Ok(match file.read(buf, off)? {
            true => ffi::SQLITE_OK,
            false => ffi::SQLITE_IOERR_SHORT_READ,
        })
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xRead", Op::Read, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_write<F: VfsFile>(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_WRITE;
    let body = |file: &mut F, _: &VfsCtx| {
        let (Ok(len), Ok(off)) = (usize::try_from(amt), u64::try_from(off)) else {
            return Ok(CODE);
        };
        if buf.is_null() {
            return Ok(CODE);
        }
        // SAFETY: SQLite gives amt readable bytes.
        let buf = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        file.write(buf, off).map(|()| ffi::SQLITE_OK)
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xWrite", Op::Write, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_truncate<F: VfsFile>(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_TRUNCATE;
    let body = |file: &mut F, _: &VfsCtx| match u64::try_from(size) {
        Ok(size) => file.truncate(size).map(|()| ffi::SQLITE_OK),
        Err(_) => Ok(CODE),
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xTruncate", Op::Truncate, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_sync<F: VfsFile>(f: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    let fallback = Fallback::same(ffi::SQLITE_IOERR_FSYNC);
    let body = |file: &mut F, _: &VfsCtx| file.sync().map(|()| ffi::SQLITE_OK);
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xSync", Op::Sync, fallback, body) }
}

unsafe extern "C" fn x_file_size<F: VfsFile>(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_FSTAT;
    let body = |file: &mut F, _: &VfsCtx| {
        if out.is_null() {
            return Ok(CODE);
        }
        let size = file.size()?;
        // SAFETY: a valid out pointer.
        unsafe { *out = i64::try_from(size).unwrap_or(i64::MAX) };
        Ok(ffi::SQLITE_OK)
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xFileSize", Op::FileSize, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_lock<F: VfsFile>(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_LOCK;
    let body = |file: &mut F, _: &VfsCtx| match Level::from_c(level) {
        Some(level) => file.lock(level).map(|()| ffi::SQLITE_OK),
        None => Ok(CODE),
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xLock", Op::Lock, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_unlock<F: VfsFile>(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_UNLOCK;
    let body = |file: &mut F, _: &VfsCtx| match Level::from_c(level) {
        Some(level) => file.unlock(level).map(|()| ffi::SQLITE_OK),
        None => Ok(CODE),
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xUnlock", Op::Unlock, Fallback::same(CODE), body) }
}

unsafe extern "C" fn x_check_reserved_lock<F: VfsFile>(
    f: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    const CODE: c_int = ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
    let body = |file: &mut F, _: &VfsCtx| {
        if !out.is_null() {
            // SAFETY: a valid out pointer.
            unsafe { *out = c_int::from(file.reserved_elsewhere()) };
        }
        Ok(ffi::SQLITE_OK)
    };
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe {
        with_file(
            f,
            "xCheckReservedLock",
            Op::Lock,
            Fallback::same(CODE),
            body,
        )
    }
}

unsafe extern "C" fn x_file_control<F: VfsFile>(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let fallback = Fallback {
        no_file: ffi::SQLITE_NOTFOUND,
        panic: ffi::SQLITE_IOERR,
    };
    let body = |file: &mut F, ctx: &VfsCtx| {
        // SAFETY: SQLite passes `arg` as documented for `op`.
        let request = unsafe { FileControl::decode(op, arg) };
        file.file_control(&ctx.api, request)
    };
    let errors_as = FileControl::op(op);
    // SAFETY: SQLite calls F's methods with a handle of F.
    unsafe { with_file(f, "xFileControl", errors_as, fallback, body) }
}

unsafe extern "C" fn x_sector_size(_: *mut ffi::sqlite3_file) -> c_int {
    // With POWERSAFE_OVERWRITE SQLite treats the sector as 512 bytes anyway;
    // say so, so journals are never padded to a larger sector.
    512
}

/// What we promise about writes:
/// * SAFE_APPEND and SEQUENTIAL: journals are in memory, so a write that
///   extends them cannot leave garbage and writes happen in order; SQLite
///   then skips journal-header syncs it needs on real disks.
/// * POWERSAFE_OVERWRITE: a write never damages bytes outside its range.
/// * Not ATOMIC*/BATCH_ATOMIC: page writes become durable only at commit,
///   which is what SQLite's rollback journal assumes anyway; batch-atomic
///   writes would need SQLITE_ENABLE_BATCH_ATOMIC_WRITE, which neither the
///   bundled SQLite nor Debian's shell is built with.
unsafe extern "C" fn x_device_characteristics(_: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_SAFE_APPEND
        | ffi::SQLITE_IOCAP_SEQUENTIAL
        | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

/// A string slot SQLite hands over for an answer (`char**`): the PRAGMA
/// result, the VFS name.
pub(crate) struct AnswerSlot(*mut *mut c_char);

impl AnswerSlot {
    /// Puts `s` (allocated with SQLite's allocator, which frees it) in the slot.
    pub fn set(&self, api: &Api, s: &str) {
        let p = api.alloc_cstr(s);
        // SAFETY: built only by `FileControl::decode` from a non-null slot
        // SQLite passed for this call.
        unsafe { *self.0 = p };
    }
}

/// A PRAGMA SQLite hands to the file (`SQLITE_FCNTL_PRAGMA`).
pub(crate) struct PragmaRequest {
    /// The PRAGMA's name.
    pub name: String,
    /// Its argument (`PRAGMA name = value`).
    pub value: Option<String>,
    /// Where the answer or the error message goes.
    pub answer: AnswerSlot,
}

/// An `xFileControl` request, decoded from its raw argument.
pub(crate) enum FileControl {
    /// `SQLITE_FCNTL_PRAGMA`.
    Pragma(PragmaRequest),
    /// `SQLITE_FCNTL_PDB`: the connection (`sqlite3*`) that opened the
    /// file (a hint: SQLite ignores the code).
    Connection(Option<usize>),
    /// `SQLITE_FCNTL_SYNC`, with the super-journal of a multi-database
    /// commit.
    Sync(Option<String>),
    /// `SQLITE_FCNTL_COMMIT_PHASETWO`.
    CommitPhaseTwo,
    /// `SQLITE_FCNTL_VFSNAME`.
    VfsName(Option<AnswerSlot>),
    /// Anything else (`SQLITE_NOTFOUND`).
    Other,
}

impl FileControl {
    /// Decodes `op` and its argument.
    ///
    /// # Safety
    /// `arg` is what SQLite passes with `op` (null or valid for it).
    unsafe fn decode(op: c_int, arg: *mut c_void) -> FileControl {
        match op {
            // SAFETY: the caller's contract.
            ffi::SQLITE_FCNTL_PRAGMA => unsafe { Self::decode_pragma(arg) },
            ffi::SQLITE_FCNTL_PDB if !arg.is_null() => {
                // SAFETY: `sqlite3**` (btree.c, sqlite3BtreeOpen).
                let conn = unsafe { *arg.cast::<*mut ffi::sqlite3>() };
                FileControl::Connection((!conn.is_null()).then_some(conn as usize))
            }
            ffi::SQLITE_FCNTL_PDB => FileControl::Connection(None),
            // The super-journal's name, NULL for a single-database commit
            // (pager.c, sqlite3PagerSync).
            ffi::SQLITE_FCNTL_SYNC if !arg.is_null() => {
                // SAFETY: a NUL-terminated name.
                FileControl::Sync(Some(unsafe { c_string(arg.cast()) }))
            }
            ffi::SQLITE_FCNTL_SYNC => FileControl::Sync(None),
            ffi::SQLITE_FCNTL_COMMIT_PHASETWO => FileControl::CommitPhaseTwo,
            ffi::SQLITE_FCNTL_VFSNAME => {
                FileControl::VfsName((!arg.is_null()).then(|| AnswerSlot(arg.cast())))
            }
            _ => FileControl::Other,
        }
    }

    /// `arg` is `char*[3]`: result slot, name, argument (may be null).
    ///
    /// # Safety
    /// As [`FileControl::decode`].
    unsafe fn decode_pragma(arg: *mut c_void) -> FileControl {
        if arg.is_null() {
            return FileControl::Other;
        }
        let slots = arg.cast::<*mut c_char>();
        // SAFETY: SQLite passes three slots.
        let (name, value) = unsafe { (*slots.add(1), *slots.add(2)) };
        if name.is_null() {
            return FileControl::Other;
        }
        // SAFETY: NUL-terminated strings of SQLite's.
        let (name, value) =
            unsafe { (c_string(name), (!value.is_null()).then(|| c_string(value))) };
        FileControl::Pragma(PragmaRequest {
            name,
            value,
            answer: AnswerSlot(slots),
        })
    }

    /// The method whose SQLite code the errors of file control `op` take:
    /// the commit point and phase two have their own.
    fn op(op: c_int) -> Op {
        match op {
            ffi::SQLITE_FCNTL_SYNC => Op::Sync,
            ffi::SQLITE_FCNTL_COMMIT_PHASETWO => Op::PhaseTwo,
            _ => Op::FileControl,
        }
    }
}

/// A NUL-terminated C string, lossily as UTF-8.
///
/// # Safety
/// `p` is a valid NUL-terminated string.
unsafe fn c_string(p: *const c_char) -> String {
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- the kinds

impl VfsFile for MemFile {
    const METHODS: &'static ffi::sqlite3_io_methods = &MEM_METHODS;

    fn name(&self) -> &str {
        "(journal)"
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool> {
        Ok(self.try_read(buf, offset)? == buf.len())
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        Ok(self.try_write(buf, offset)?)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        Ok(self.try_truncate(size)?)
    }

    fn size(&mut self) -> Result<u64> {
        Ok(MemFile::size(self))
    }
}

static MEM_METHODS: ffi::sqlite3_io_methods = io_methods::<MemFile>();

/// A super-journal handle (its bytes are shared by name, so
/// `pager_delsuper` reads back what `vdbeCommit` wrote).
pub(crate) struct SuperFile(pub Arc<SuperJournal>);

impl VfsFile for SuperFile {
    const METHODS: &'static ffi::sqlite3_io_methods = &SUPER_METHODS;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool> {
        Ok(self.0.read(buf, offset) == buf.len())
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.0.write(buf, offset).map_err(Error::SuperJournal)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        self.0.truncate(size).map_err(Error::SuperJournal)
    }

    fn size(&mut self) -> Result<u64> {
        Ok(self.0.size())
    }
}

static SUPER_METHODS: ffi::sqlite3_io_methods = io_methods::<SuperFile>();
