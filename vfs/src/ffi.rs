//! The `extern "C"` entry points SQLite calls: the VFS object and the I/O
//! methods. Every entry point wraps its body in `catch_unwind` (a panic
//! crossing into C aborts the host process) and returns an SQLite error
//! code instead; errors are logged with `tracing` and, for the host to see,
//! with `sqlite3_log`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libsqlite3_sys as ffi;
use tracing::{error, warn};

use crate::api::Api;
use crate::error::{sqlite_code, Error, Op};
use crate::file::group::{self, SuperJournal};
use crate::file::{MainFile, PragmaOutcome};
use crate::lock::Level;
use crate::memfile::MemFile;
use crate::registry::{self, OpenParams};

/// The name the VFS registers under.
pub const VFS_NAME: &str = "fdb";

/// Longest path SQLite may hand us (names are at most 255 bytes; journals
/// add a suffix).
const MAX_PATHNAME: c_int = 1024;

/// Per-registration data, behind `sqlite3_vfs::pAppData`.
pub(crate) struct VfsCtx {
    pub api: Api,
    /// The VFS that was the default when we registered: `xDlOpen`,
    /// randomness, sleep and time are delegated to it.
    pub parent: *mut ffi::sqlite3_vfs,
}

enum FileKind {
    Main(Box<MainFile>),
    Mem(MemFile),
    /// A super-journal (multi-database commit): its bytes are shared by
    /// name, so `pager_delsuper` reads back what `vdbeCommit` wrote.
    Super(Arc<SuperJournal>),
}

/// Our `sqlite3_file` subclass: SQLite allocates `szOsFile` bytes for it.
#[repr(C)]
struct Handle {
    base: ffi::sqlite3_file,
    file: *mut FileKind,
    ctx: *const VfsCtx,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message of the last error an `xOpen` or commit on this thread
/// reported to SQLite, taken (rusqlite surfaces only SQLite's generic text
/// for open errors; the Rust API adds this one).
pub fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

fn set_last_error(msg: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(msg));
}

/// Panics caught at the boundary since the process started (tests assert 0).
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Number of panics caught at the SQLite boundary so far.
pub fn panics_caught() -> u64 {
    PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f`, turning a panic into `fallback`.
fn guard(what: &'static str, fallback: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(p) => {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(entry = what, panic = %msg, "panic caught at the SQLite boundary");
            fallback
        }
    }
}

/// Reports `err` (tracing, sqlite3_log, last error) and returns its code.
fn report(ctx: Option<&VfsCtx>, err: &Error, op: Op, name: &str) -> c_int {
    let code = sqlite_code(err, op);
    if err.is_conflict() {
        tracing::debug!(database = name, ?op, error = %err, code, "conflict reported to SQLite");
    } else {
        warn!(database = name, ?op, error = %err, code, "fdb VFS error");
    }
    let msg = format!("fdb VFS: database {name:?}: {err}");
    if let Some(ctx) = ctx {
        ctx.api.log_message(code, &msg);
    }
    set_last_error(msg);
    code
}

unsafe fn handle<'a>(f: *mut ffi::sqlite3_file) -> Option<(&'a mut FileKind, &'a VfsCtx)> {
    if f.is_null() {
        return None;
    }
    let h = f as *mut Handle;
    // SAFETY: SQLite passes back the handle xOpen filled in.
    let (file, ctx) = unsafe { ((*h).file, (*h).ctx) };
    if file.is_null() || ctx.is_null() {
        return None;
    }
    // SAFETY: both were created by xOpen and live until xClose.
    unsafe { Some((&mut *file, &*ctx)) }
}

unsafe fn ctx_of<'a>(vfs: *mut ffi::sqlite3_vfs) -> Option<&'a VfsCtx> {
    if vfs.is_null() {
        return None;
    }
    // SAFETY: pAppData is the leaked VfsCtx of this registration.
    let p = unsafe { (*vfs).pAppData } as *const VfsCtx;
    (!p.is_null()).then(|| unsafe { &*p })
}

// ---------------------------------------------------------------- VFS

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard("xOpen", ffi::SQLITE_CANTOPEN, || {
        if file.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        let h = file as *mut Handle;
        // SAFETY: SQLite gives szOsFile writable bytes; a null pMethods
        // tells it not to call xClose when we fail.
        unsafe {
            (*h).base.pMethods = ptr::null();
            (*h).file = ptr::null_mut();
            (*h).ctx = ptr::null();
        }
        let Some(ctx) = (unsafe { ctx_of(vfs) }) else {
            return ffi::SQLITE_CANTOPEN;
        };
        let is_main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0
            && !name.is_null()
            && flags & ffi::SQLITE_OPEN_DELETEONCLOSE == 0;
        let mut result_flags = flags;
        let kind = if is_main {
            // SAFETY: a main-db name is NUL-terminated (with URI parameters after it).
            let raw = name_of_pathname(unsafe { CStr::from_ptr(name) }.to_bytes());
            let display = String::from_utf8_lossy(raw).into_owned();
            let opened = (|| {
                let n = std::str::from_utf8(raw)
                    .map_err(|_| Error::BadName("the name is not UTF-8".into()))?;
                crate::file::validate_name(n)?;
                // SAFETY: name is a main-db filename from SQLite.
                let params = unsafe { ctx.api.uri_params(name) };
                refuse_unsupported(&params)?;
                let p = OpenParams::parse(&params)?;
                let store = registry::resolve(&p.spec)?;
                let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
                let mut m = MainFile::open(n, store, p.at, create)?;
                m.set_admin(p.admin);
                Ok(m)
            })();
            match opened {
                Ok(m) => {
                    if m.is_read_only() {
                        result_flags =
                            (flags & !ffi::SQLITE_OPEN_READWRITE & !ffi::SQLITE_OPEN_CREATE)
                                | ffi::SQLITE_OPEN_READONLY;
                    }
                    FileKind::Main(Box::new(m))
                }
                Err(e) => return report(Some(ctx), &e, Op::Open, &display),
            }
        } else if flags & ffi::SQLITE_OPEN_SUPER_JOURNAL != 0 && !name.is_null() {
            // SAFETY: SQLite passes a NUL-terminated name.
            let n = unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            if flags & ffi::SQLITE_OPEN_CREATE != 0 {
                match group::create(&n) {
                    Some(s) => FileKind::Super(s),
                    None => {
                        let e = Error::BadIo(format!("super-journal {n:?} exists"));
                        return report(Some(ctx), &e, Op::Open, &n);
                    }
                }
            } else {
                // pager_delsuper reading a super-journal back (or, never
                // for us, a child journal it believes exists).
                match group::lookup(&n) {
                    Some(s) => FileKind::Super(s),
                    None => FileKind::Mem(MemFile::default()),
                }
            }
        } else {
            FileKind::Mem(MemFile::default())
        };
        if !out_flags.is_null() {
            // SAFETY: SQLite passes a valid out pointer or null.
            unsafe { *out_flags = result_flags };
        }
        let boxed = Box::into_raw(Box::new(kind));
        // SAFETY: as above.
        unsafe {
            (*h).file = boxed;
            (*h).ctx = ctx;
            (*h).base.pMethods = &IO_METHODS;
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    dir_sync: c_int,
) -> c_int {
    guard("xDelete", ffi::SQLITE_IOERR_DELETE, || {
        // Journals live in their handles; nothing is on disk to delete. The
        // main database is dropped through the API, never by SQLite.
        if name.is_null() {
            return ffi::SQLITE_OK;
        }
        // SAFETY: SQLite passes a NUL-terminated name.
        let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        // Deleting a super-journal is SQLite's commit point of a
        // multi-database transaction: the group commits here.
        match group::delete(&n, dir_sync != 0) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                // SAFETY: pAppData of our registration.
                let ctx = unsafe { ctx_of(vfs) };
                report(ctx, &e, Op::Sync, &n)
            }
        }
    })
}

unsafe extern "C" fn x_access(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _: c_int,
    out: *mut c_int,
) -> c_int {
    guard("xAccess", ffi::SQLITE_IOERR_ACCESS, || {
        // No journal or WAL ever "exists": SQLite must never roll back
        // another connection's journal as a hot one. A super-journal of a
        // multi-database commit exists until it committed: a rollback
        // plays a journal back only if the super-journal it names exists.
        let exists = !name.is_null() && {
            // SAFETY: SQLite passes a NUL-terminated name.
            let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            group::exists(&n)
        };
        if !out.is_null() {
            // SAFETY: SQLite passes a valid out pointer.
            unsafe { *out = exists as c_int };
        }
        ffi::SQLITE_OK
    })
}

/// Full pathnames: `fdb:<n>:<name>`, `n` new for every call.
///
/// SQLite keys state by full pathname: a shared cache (`BtShared`, found
/// by `strcmp` of full pathnames in `sqlite3BtreeOpen`) serves every
/// connection whose file has the same one, whatever its URI parameters.
/// The bare name let a connection to one store read another store's pages
/// of a database of the same name, and a time-travel connection read the
/// current database. A VFS cannot refuse a shared cache asked for by open
/// flag (`SQLITE_OPEN_SHAREDCACHE` never reaches `xOpen`) or by
/// `sqlite3_enable_shared_cache`; with a pathname of its own for every
/// open, no two connections ever share one, so each keeps its own
/// snapshot and commits (`cache=shared` in the URI is refused outright).
/// Journal names (`<pathname>-journal`) and super-journal names
/// (`<pathname>-mjXXXXXXXX9XX`) derive from it and stay unique too.
/// `xOpen` takes the name back out. A pathname is a handle, not a name: a
/// database opened by it (as given by `sqlite3_db_filename`) is the one
/// whose name is the whole string.
const PATH_PREFIX: &[u8] = b"fdb:";

static NEXT_PATH: AtomicU64 = AtomicU64::new(1);

/// The full pathname for database `name` (a fresh one on every call).
fn full_pathname(name: &[u8]) -> Vec<u8> {
    let n = NEXT_PATH.fetch_add(1, Ordering::Relaxed);
    let mut p = PATH_PREFIX.to_vec();
    p.extend_from_slice(n.to_string().as_bytes());
    p.push(b':');
    p.extend_from_slice(name);
    p
}

/// The database name inside a full pathname made by [`full_pathname`] (a
/// string that is not one is a name already: test hooks open by name).
fn name_of_pathname(path: &[u8]) -> &[u8] {
    let Some(rest) = path.strip_prefix(PATH_PREFIX) else {
        return path;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    match rest.get(digits) {
        Some(b':') if digits > 0 => &rest[digits + 1..],
        _ => path,
    }
}

unsafe extern "C" fn x_full_pathname(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard("xFullPathname", ffi::SQLITE_CANTOPEN, || {
        if name.is_null() || out.is_null() || n_out <= 0 {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: SQLite passes a NUL-terminated name and nOut bytes of output.
        let mut bytes = full_pathname(unsafe { CStr::from_ptr(name) }.to_bytes());
        bytes.push(0);
        if bytes.len() > n_out as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len()) };
        ffi::SQLITE_OK
    })
}

/// True unless `v` is one of the values SQLite reads as false for a
/// boolean URI parameter (`sqlite3_uri_boolean`: `0`, `no`, `off`,
/// `false`; empty). Numbers are true when non-zero (SQLite keeps only
/// their low byte: `256` counts as true here, which only refuses more).
fn uri_true(v: &str) -> bool {
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !digits.is_empty() {
        return digits.bytes().any(|b| b != b'0');
    }
    !(v.is_empty()
        || ["no", "off", "false"]
            .iter()
            .any(|f| v.eq_ignore_ascii_case(f)))
}

/// URI parameters SQLite acts on that this VFS cannot honour: refused at
/// open, with the reason.
fn refuse_unsupported(params: &[(String, String)]) -> Result<(), Error> {
    for (k, v) in params {
        let why = match k.as_str() {
            "cache" if v.eq_ignore_ascii_case("shared") => {
                "a shared cache gives several connections one page cache and one transaction; the fdb VFS gives every connection its own snapshot and commits (use cache=private, the default)"
            }
            "immutable" if uri_true(v) => {
                "immutable=1 tells SQLite the database never changes, so it would read stale pages for ever while others commit; open it read-only (mode=ro) or as of a point in history (version= or at=) instead"
            }
            "nolock" if uri_true(v) => {
                "nolock=1 makes SQLite skip the locks that begin and commit the fdb VFS's transactions: reads would not see one snapshot and writes could not commit"
            }
            _ => continue,
        };
        return Err(Error::BadParam {
            name: k.clone(),
            value: v.clone(),
            why: why.into(),
        });
    }
    Ok(())
}

fn parent(vfs: *mut ffi::sqlite3_vfs) -> Option<&'static ffi::sqlite3_vfs> {
    // SAFETY: the parent VFS is registered for the life of the process.
    unsafe { ctx_of(vfs) }.and_then(|c| unsafe { c.parent.as_ref() })
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    match parent(vfs) {
        // SAFETY: delegation to the parent VFS with its own pointer.
        Some(p) => match p.xDlOpen {
            Some(f) => unsafe { f(p as *const _ as *mut _, name) },
            None => ptr::null_mut(),
        },
        None => ptr::null_mut(),
    }
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    if let Some(p) = parent(vfs) {
        if let Some(f) = p.xDlError {
            // SAFETY: delegation.
            unsafe { f(p as *const _ as *mut _, n, out) }
        }
    }
}

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    h: *mut c_void,
    sym: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    let p = parent(vfs)?;
    // SAFETY: delegation.
    p.xDlSym
        .and_then(|f| unsafe { f(p as *const _ as *mut _, h, sym) })
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, h: *mut c_void) {
    if let Some(p) = parent(vfs) {
        if let Some(f) = p.xDlClose {
            // SAFETY: delegation.
            unsafe { f(p as *const _ as *mut _, h) }
        }
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guard("xRandomness", 0, || {
        if out.is_null() || n <= 0 {
            return 0;
        }
        // SAFETY: SQLite gives n writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(out as *mut u8, n as usize) };
        let _ = vfs;
        rand::fill(buf);
        n
    })
}

unsafe extern "C" fn x_sleep(_: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    guard("xSleep", 0, || {
        std::thread::sleep(std::time::Duration::from_micros(micros.max(0) as u64));
        micros
    })
}

/// Julian day number of the Unix epoch, in milliseconds (SQLite's unit).
const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;

fn now_julian_ms() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    UNIX_EPOCH_JULIAN_MS + ms
}

unsafe extern "C" fn x_current_time(_: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guard("xCurrentTime", ffi::SQLITE_ERROR, || {
        if !out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *out = now_julian_ms() as f64 / 86_400_000.0 };
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_current_time_int64(_: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    guard("xCurrentTimeInt64", ffi::SQLITE_ERROR, || {
        if !out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *out = now_julian_ms() };
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_get_last_error(
    _: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    guard("xGetLastError", 0, || {
        let msg = LAST_ERROR.with(|e| e.borrow().clone()).unwrap_or_default();
        if !out.is_null() && n > 0 {
            let b = msg.as_bytes();
            let k = b.len().min(n as usize - 1);
            // SAFETY: SQLite gives n writable bytes.
            unsafe {
                ptr::copy_nonoverlapping(b.as_ptr() as *const c_char, out, k);
                *out.add(k) = 0;
            }
        }
        0
    })
}

// ---------------------------------------------------------------- I/O

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: no shared memory (so no WAL) and no memory mapping.
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    guard("xClose", ffi::SQLITE_IOERR_CLOSE, || {
        if f.is_null() {
            return ffi::SQLITE_OK;
        }
        let h = f as *mut Handle;
        // SAFETY: the box was created in xOpen; xClose is called once.
        unsafe {
            let file = (*h).file;
            (*h).file = ptr::null_mut();
            (*h).base.pMethods = ptr::null();
            if !file.is_null() {
                drop(Box::from_raw(file));
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard("xRead", ffi::SQLITE_IOERR_READ, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        if buf.is_null() || amt < 0 || off < 0 {
            return ffi::SQLITE_IOERR_READ;
        }
        // SAFETY: SQLite gives amt writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, amt as usize) };
        let full = match file {
            FileKind::Mem(m) => match m.try_read(buf, off as u64) {
                Ok(n) => n == buf.len(),
                Err(e) => return report(Some(ctx), &mem_error(e), Op::Read, "(journal)"),
            },
            FileKind::Super(s) => s.read(buf, off as u64) == buf.len(),
            FileKind::Main(m) => match m.read(buf, off as u64) {
                Ok(full) => full,
                Err(e) => {
                    buf.fill(0);
                    return report(Some(ctx), &e, Op::Read, m.name());
                }
            },
        };
        if full {
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_IOERR_SHORT_READ
        }
    })
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    guard("xWrite", ffi::SQLITE_IOERR_WRITE, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if buf.is_null() || amt < 0 || off < 0 {
            return ffi::SQLITE_IOERR_WRITE;
        }
        // SAFETY: SQLite gives amt readable bytes.
        let buf = unsafe { std::slice::from_raw_parts(buf as *const u8, amt as usize) };
        match file {
            FileKind::Mem(m) => match m.try_write(buf, off as u64) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &mem_error(e), Op::Write, "(journal)"),
            },
            FileKind::Super(s) => match s.write(buf, off as u64) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &Error::BadIo(e), Op::Write, s.name()),
            },
            FileKind::Main(m) => match m.write(buf, off as u64) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &e, Op::Write, m.name()),
            },
        }
    })
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard("xTruncate", ffi::SQLITE_IOERR_TRUNCATE, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        if size < 0 {
            return ffi::SQLITE_IOERR_TRUNCATE;
        }
        let r = match file {
            FileKind::Mem(m) => m.try_truncate(size as u64).map_err(mem_error),
            FileKind::Super(s) => s.truncate(size as u64).map_err(Error::BadIo),
            FileKind::Main(m) => m.truncate(size as u64),
        };
        match r {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => report(Some(ctx), &e, Op::Truncate, file_name(file)),
        }
    })
}

/// A journal or temp file error: past its limit or out of room is
/// `SQLITE_FULL` (see `memfile`), anything else an I/O error.
fn mem_error(e: crate::memfile::MemError) -> Error {
    if e.is_full() {
        Error::Full(e.to_string())
    } else {
        Error::BadIo(e.to_string())
    }
}

fn file_name(f: &FileKind) -> &str {
    match f {
        FileKind::Main(m) => m.name(),
        FileKind::Mem(_) => "(journal)",
        FileKind::Super(s) => s.name(),
    }
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard("xSync", ffi::SQLITE_IOERR_FSYNC, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_FSYNC;
        };
        match file {
            FileKind::Mem(_) | FileKind::Super(_) => ffi::SQLITE_OK,
            FileKind::Main(m) => match m.sync() {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &e, Op::Sync, m.name()),
            },
        }
    })
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    guard("xFileSize", ffi::SQLITE_IOERR_FSTAT, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_FSTAT;
        };
        if out.is_null() {
            return ffi::SQLITE_IOERR_FSTAT;
        }
        let size = match file {
            FileKind::Mem(m) => Ok(m.size()),
            FileKind::Super(s) => Ok(s.size()),
            FileKind::Main(m) => m.size(),
        };
        match size {
            Ok(s) => {
                // SAFETY: valid out pointer.
                unsafe { *out = i64::try_from(s).unwrap_or(i64::MAX) };
                ffi::SQLITE_OK
            }
            Err(e) => report(Some(ctx), &e, Op::FileSize, file_name(file)),
        }
    })
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xLock", ffi::SQLITE_IOERR_LOCK, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_LOCK;
        };
        let Some(level) = Level::from_c(level) else {
            return ffi::SQLITE_IOERR_LOCK;
        };
        match file {
            FileKind::Mem(_) | FileKind::Super(_) => ffi::SQLITE_OK,
            FileKind::Main(m) => match m.lock(level) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &e, Op::Lock, m.name()),
            },
        }
    })
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xUnlock", ffi::SQLITE_IOERR_UNLOCK, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_IOERR_UNLOCK;
        };
        let Some(level) = Level::from_c(level) else {
            return ffi::SQLITE_IOERR_UNLOCK;
        };
        match file {
            FileKind::Mem(_) | FileKind::Super(_) => ffi::SQLITE_OK,
            FileKind::Main(m) => match m.unlock(level) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &e, Op::Unlock, m.name()),
            },
        }
    })
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(
        "xCheckReservedLock",
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        || {
            let Some((file, _)) = (unsafe { handle(f) }) else {
                return ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
            };
            let r = match file {
                FileKind::Main(m) => m.reserved_elsewhere(),
                FileKind::Mem(_) | FileKind::Super(_) => false,
            };
            if !out.is_null() {
                // SAFETY: valid out pointer.
                unsafe { *out = r as c_int };
            }
            ffi::SQLITE_OK
        },
    )
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard("xFileControl", ffi::SQLITE_IOERR, || {
        let Some((file, ctx)) = (unsafe { handle(f) }) else {
            return ffi::SQLITE_NOTFOUND;
        };
        let FileKind::Main(m) = file else {
            return ffi::SQLITE_NOTFOUND;
        };
        match op {
            ffi::SQLITE_FCNTL_PRAGMA => unsafe { file_control_pragma(m, ctx, arg) },
            ffi::SQLITE_FCNTL_PDB => {
                // A hint (return code ignored): `arg` is `sqlite3**`, the
                // connection that opened the file (btree.c,
                // sqlite3BtreeOpen). Files of one connection share a
                // snapshot per SQL transaction.
                if !arg.is_null() {
                    // SAFETY: SQLite passes a pointer to its connection pointer.
                    let conn = unsafe { *(arg as *const *mut ffi::sqlite3) };
                    if !conn.is_null() {
                        m.set_connection(conn as usize);
                        // SAFETY: SQLite is inside a call of this open
                        // connection (sqlite3BtreeOpen).
                        let defensive = unsafe { ctx.api.is_defensive(conn as usize) };
                        m.check_attach(defensive);
                    }
                }
                ffi::SQLITE_OK
            }
            ffi::SQLITE_FCNTL_SYNC => {
                // Sent right before xSync of the database file; the
                // argument names the super-journal of a multi-database
                // commit, NULL otherwise (pager.c, sqlite3PagerSync).
                let sj = (!arg.is_null()).then(|| {
                    // SAFETY: a NUL-terminated super-journal name.
                    unsafe { CStr::from_ptr(arg as *const c_char) }
                        .to_string_lossy()
                        .into_owned()
                });
                // It is the commit point (see `MainFile::sync_point`).
                match m.sync_point(sj) {
                    Ok(()) => ffi::SQLITE_OK,
                    Err(e) => report(Some(ctx), &e, Op::Sync, m.name()),
                }
            }
            ffi::SQLITE_FCNTL_COMMIT_PHASETWO => match m.commit_phase_two() {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => report(Some(ctx), &e, Op::PhaseTwo, m.name()),
            },
            ffi::SQLITE_FCNTL_VFSNAME => {
                if !arg.is_null() {
                    let s = ctx.api.alloc_cstr(VFS_NAME);
                    // SAFETY: arg is a `char**` for VFSNAME.
                    unsafe { *(arg as *mut *mut c_char) = s };
                }
                ffi::SQLITE_OK
            }
            _ => ffi::SQLITE_NOTFOUND,
        }
    })
}

/// SQLITE_FCNTL_PRAGMA: `arg` is `char*[3]`: result slot, name, argument.
unsafe fn file_control_pragma(m: &mut MainFile, ctx: &VfsCtx, arg: *mut c_void) -> c_int {
    if arg.is_null() {
        return ffi::SQLITE_NOTFOUND;
    }
    let a = arg as *mut *mut c_char;
    // SAFETY: SQLite passes three slots; name is non-null, argument may be null.
    let (name_p, arg_p) = unsafe { (*a.add(1), *a.add(2)) };
    if name_p.is_null() {
        return ffi::SQLITE_NOTFOUND;
    }
    let name = unsafe { CStr::from_ptr(name_p) }
        .to_string_lossy()
        .into_owned();
    let value = (!arg_p.is_null()).then(|| {
        unsafe { CStr::from_ptr(arg_p) }
            .to_string_lossy()
            .into_owned()
    });
    let set = |s: &str| {
        let p = ctx.api.alloc_cstr(s);
        // SAFETY: slot 0 takes a string from SQLite's allocator.
        unsafe { *a = p };
    };
    // SAFETY: SQLite runs the PRAGMA inside a call of this connection.
    let defensive = m
        .connection()
        .is_some_and(|c| unsafe { ctx.api.is_defensive(c) });
    match m.pragma(&name, value.as_deref(), defensive) {
        Ok(PragmaOutcome::NotOurs) => ffi::SQLITE_NOTFOUND,
        Ok(PragmaOutcome::Value(v)) => {
            set(&v);
            ffi::SQLITE_OK
        }
        Ok(PragmaOutcome::Refused(msg)) => {
            // SQLite reports the message as the statement's error; a debug
            // event is enough here.
            tracing::debug!(database = m.name(), pragma = %name, "{msg}");
            set(&msg);
            ffi::SQLITE_ERROR
        }
        Err(e) => {
            let code = report(Some(ctx), &e, Op::FileControl, m.name());
            set(&format!("fdb VFS: {e}"));
            code
        }
    }
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

// ---------------------------------------------------------------- registration

/// Registers the VFS named [`VFS_NAME`] with the SQLite behind `api`
/// (idempotent per SQLite: a second call only applies `make_default`).
pub fn register_with(api: Api, make_default: bool) -> Result<(), String> {
    let name = CString::new(VFS_NAME).map_err(|e| e.to_string())?;
    // SAFETY: vfs_find with a NUL-terminated name.
    let existing = unsafe { (api.vfs_find)(name.as_ptr()) };
    if !existing.is_null() {
        if make_default {
            // SAFETY: re-registering an already registered VFS moves it to the front.
            let rc = unsafe { (api.vfs_register)(existing, 1) };
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_vfs_register failed ({rc})"));
            }
        }
        return Ok(());
    }
    // SAFETY: vfs_find(NULL) returns the default VFS (or null).
    let parent = unsafe { (api.vfs_find)(ptr::null()) };
    let ctx = Box::leak(Box::new(VfsCtx { api, parent }));
    // The name must live as long as the registration: for ever.
    let zname: &'static CStr = Box::leak(name.into_boxed_c_str());
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<Handle>() as c_int,
        mxPathname: MAX_PATHNAME,
        pNext: ptr::null_mut(),
        zName: zname.as_ptr(),
        pAppData: ctx as *mut VfsCtx as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: the VFS object and everything it points to are leaked (static).
    let rc = unsafe { (api.vfs_register)(vfs, make_default as c_int) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("sqlite3_vfs_register failed ({rc})"));
    }
    tracing::info!(origin = api.origin, make_default, "registered the fdb VFS");
    Ok(())
}

/// Test hook: the I/O methods of a main database file driven directly,
/// as SQLite would (used by the fuzz test).
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// A main database file opened through `xOpen` of the linked SQLite's
    /// registration, driven through the raw I/O methods.
    pub struct RawFile {
        mem: Vec<u64>,
    }

    impl RawFile {
        /// Opens database `uri_name` (`NAME` plus URI parameters encoded
        /// the way SQLite lays them out: `name\0key\0value\0…\0\0`).
        pub fn open(name_and_params: &[u8]) -> Result<RawFile, c_int> {
            crate::register_linked().map_err(|_| ffi::SQLITE_ERROR)?;
            // SAFETY: vfs_find with a static name.
            let vfs = unsafe { ffi::sqlite3_vfs_find(c"fdb".as_ptr()) };
            if vfs.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let words = std::mem::size_of::<Handle>().div_ceil(8);
            let mut f = RawFile {
                mem: vec![0u64; words],
            };
            // SQLite's filename layout: 4 zero bytes before the name.
            let mut name = vec![0u8; 4];
            name.extend_from_slice(name_and_params);
            name.extend_from_slice(&[0, 0, 0]);
            let mut out = 0;
            let flags = ffi::SQLITE_OPEN_MAIN_DB
                | ffi::SQLITE_OPEN_READWRITE
                | ffi::SQLITE_OPEN_CREATE
                | ffi::SQLITE_OPEN_URI;
            // SAFETY: the buffer is szOsFile bytes, aligned for the handle.
            let rc = unsafe {
                x_open(
                    vfs,
                    name.as_ptr().add(4) as *const c_char,
                    f.ptr(),
                    flags,
                    &mut out,
                )
            };
            // SQLite keeps the name alive while the file is open; so do we.
            std::mem::forget(name);
            if rc == ffi::SQLITE_OK {
                Ok(f)
            } else {
                Err(rc)
            }
        }

        fn ptr(&mut self) -> *mut ffi::sqlite3_file {
            self.mem.as_mut_ptr() as *mut ffi::sqlite3_file
        }

        /// xRead.
        pub fn read(&mut self, buf: &mut [u8], off: i64) -> c_int {
            unsafe {
                x_read(
                    self.ptr(),
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len() as c_int,
                    off,
                )
            }
        }
        /// xWrite.
        pub fn write(&mut self, buf: &[u8], off: i64) -> c_int {
            unsafe {
                x_write(
                    self.ptr(),
                    buf.as_ptr() as *const c_void,
                    buf.len() as c_int,
                    off,
                )
            }
        }
        /// xTruncate.
        pub fn truncate(&mut self, size: i64) -> c_int {
            unsafe { x_truncate(self.ptr(), size) }
        }
        /// xSync.
        pub fn sync(&mut self) -> c_int {
            unsafe { x_sync(self.ptr(), 0) }
        }
        /// xFileControl(SQLITE_FCNTL_COMMIT_PHASETWO).
        pub fn commit_phase_two(&mut self) -> c_int {
            unsafe {
                x_file_control(
                    self.ptr(),
                    ffi::SQLITE_FCNTL_COMMIT_PHASETWO,
                    ptr::null_mut(),
                )
            }
        }
        /// xFileSize.
        pub fn size(&mut self) -> (c_int, i64) {
            let mut s = 0;
            let rc = unsafe { x_file_size(self.ptr(), &mut s) };
            (rc, s)
        }
        /// xLock.
        pub fn lock(&mut self, level: c_int) -> c_int {
            unsafe { x_lock(self.ptr(), level) }
        }
        /// xUnlock.
        pub fn unlock(&mut self, level: c_int) -> c_int {
            unsafe { x_unlock(self.ptr(), level) }
        }
        /// xFileControl(SQLITE_FCNTL_PRAGMA); returns (rc, result).
        pub fn pragma(&mut self, name: &str, arg: Option<&str>) -> (c_int, Option<String>) {
            let n = CString::new(name).unwrap_or_default();
            let a = arg.map(|a| CString::new(a).unwrap_or_default());
            let mut slots: [*mut c_char; 3] = [
                ptr::null_mut(),
                n.as_ptr() as *mut c_char,
                a.as_ref()
                    .map_or(ptr::null_mut(), |a| a.as_ptr() as *mut c_char),
            ];
            let rc = unsafe {
                x_file_control(
                    self.ptr(),
                    ffi::SQLITE_FCNTL_PRAGMA,
                    slots.as_mut_ptr() as *mut c_void,
                )
            };
            let out = (!slots[0].is_null()).then(|| {
                let s = unsafe { CStr::from_ptr(slots[0]) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { ffi::sqlite3_free(slots[0] as *mut c_void) };
                s
            });
            (rc, out)
        }
    }

    impl Drop for RawFile {
        fn drop(&mut self) {
            let p = self.ptr();
            // SAFETY: closes what xOpen opened (no-op when it failed).
            unsafe {
                if !(*(p as *mut Handle)).base.pMethods.is_null() {
                    x_close(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pathnames_are_unique_and_give_the_name_back() {
        let a = full_pathname(b"orders");
        let b = full_pathname(b"orders");
        assert_ne!(a, b);
        assert_eq!(name_of_pathname(&a), b"orders");
        // A name that looks like a pathname survives one round trip.
        let tricky = full_pathname(b"fdb:7:x");
        assert_eq!(name_of_pathname(&tricky), b"fdb:7:x");
        for plain in [&b"orders"[..], b"fdb:", b"fdb::x", b"fdb:1x:y", b""] {
            assert_eq!(name_of_pathname(plain), plain);
        }
    }

    #[test]
    fn boolean_uri_values() {
        for t in ["1", "yes", "TRUE", "on", "2", "256", "x"] {
            assert!(uri_true(t), "{t}");
        }
        for f in ["0", "00", "no", "Off", "false", ""] {
            assert!(!uri_true(f), "{f}");
        }
    }

    #[test]
    fn unsupported_parameters_are_refused() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for (k, v) in [("cache", "shared"), ("immutable", "1"), ("nolock", "yes")] {
            let e = refuse_unsupported(&p(k, v)).map_err(|e| e.to_string());
            assert!(e.as_ref().is_err_and(|m| m.contains(k)), "{k}={v}: {e:?}");
        }
        for (k, v) in [
            ("cache", "private"),
            ("immutable", "0"),
            ("nolock", "0"),
            ("mode", "ro"),
        ] {
            assert!(refuse_unsupported(&p(k, v)).is_ok(), "{k}={v}");
        }
    }
}
