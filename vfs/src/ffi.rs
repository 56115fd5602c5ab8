//! The `extern "C"` entry points SQLite calls: the VFS object here, the
//! I/O methods of open files in [`io`] (one safe trait over the three
//! kinds of file, generic trampolines) and [`main_file`]. Every entry
//! point runs its body in [`guard`] (`catch_unwind`: a panic crossing
//! into C aborts the host process) and returns an SQLite code instead;
//! every error goes through [`report`], the one place that turns it into
//! a code (with `error::sqlite_code`) and logs it with `tracing` and, for
//! the host to see, with `sqlite3_log`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;
use tracing::{error, warn};

use crate::api::Api;
use crate::error::{sqlite_code, Error, Op};
use crate::file::group;
use crate::file::MainFile;
use crate::memfile::MemFile;
use crate::registry::{self, OpenParams};

mod io;
mod main_file;

use io::SuperFile;

/// What `xOpen` opened: one of the three kinds of file.
enum Opened {
    Main(Box<MainFile>),
    Super(Box<SuperFile>),
    Mem(Box<MemFile>),
}

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

/// Runs `f`, turning a panic into `fallback`: every entry point's body
/// runs in here.
fn guard<T>(what: &'static str, fallback: T, f: impl FnOnce() -> T) -> T {
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

/// The registration data behind `vfs`.
///
/// # Safety
/// `vfs` is null or a VFS object [`register_with`] made.
unsafe fn ctx_of<'a>(vfs: *mut ffi::sqlite3_vfs) -> Option<&'a VfsCtx> {
    if vfs.is_null() {
        return None;
    }
    // SAFETY: `vfs` is our registration; pAppData is its leaked VfsCtx.
    let p = unsafe { (*vfs).pAppData } as *const VfsCtx;
    // SAFETY: leaked, so valid for ever.
    unsafe { p.as_ref() }
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
        // SAFETY: SQLite gives szOsFile writable bytes.
        unsafe { io::clear(file) };
        // SAFETY: pAppData of our registration.
        let Some(ctx) = (unsafe { ctx_of(vfs) }) else {
            return ffi::SQLITE_CANTOPEN;
        };
        let is_main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0
            && !name.is_null()
            && flags & ffi::SQLITE_OPEN_DELETEONCLOSE == 0;
        let is_super = flags & ffi::SQLITE_OPEN_SUPER_JOURNAL != 0 && !name.is_null();
        let opened = if is_main {
            // SAFETY: a main-db name from SQLite.
            unsafe { open_main(ctx, name, flags) }
        } else if is_super {
            // SAFETY: SQLite passes a NUL-terminated name.
            let n = unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            open_super(&n, flags & ffi::SQLITE_OPEN_CREATE != 0)
                .map_err(|e| report(Some(ctx), &e, Op::Open, &n))
        } else {
            Ok(Opened::Mem(Box::default()))
        };
        let kind = match opened {
            Ok(kind) => kind,
            Err(rc) => return rc,
        };
        if !out_flags.is_null() {
            let read_only = matches!(&kind, Opened::Main(m) if m.is_read_only());
            let result_flags = match read_only {
                true => {
                    (flags & !ffi::SQLITE_OPEN_READWRITE & !ffi::SQLITE_OPEN_CREATE)
                        | ffi::SQLITE_OPEN_READONLY
                }
                false => flags,
            };
            // SAFETY: SQLite passes a valid out pointer or null.
            unsafe { *out_flags = result_flags };
        }
        // SAFETY: as above; ctx is the registration's (never freed).
        unsafe {
            match kind {
                Opened::Main(m) => io::install(file, m, ctx),
                Opened::Super(s) => io::install(file, s, ctx),
                Opened::Mem(m) => io::install(file, m, ctx),
            }
        }
        ffi::SQLITE_OK
    })
}

/// Opens a main database file by its SQLite filename (the full pathname
/// with URI parameters after it); an error is reported and its code
/// returned.
///
/// # Safety
/// `name` is a main-db filename SQLite passed to `xOpen`.
unsafe fn open_main(
    ctx: &VfsCtx,
    name: ffi::sqlite3_filename,
    flags: c_int,
) -> Result<Opened, c_int> {
    // SAFETY: a main-db name is NUL-terminated (with URI parameters after it).
    let raw = name_of_pathname(unsafe { CStr::from_ptr(name) }.to_bytes());
    let opened = (|| {
        let n = std::str::from_utf8(raw).map_err(|_| Error::NameNotUtf8)?;
        pagestore::validate_name(n)?;
        // SAFETY: name is a main-db filename from SQLite.
        let params = unsafe { ctx.api.uri_params(name) };
        refuse_unsupported(&params)?;
        let p = OpenParams::parse(&params)?;
        let store = registry::resolve(&p.spec)?;
        let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
        let mut m = MainFile::open(n, store, p.at, create)?;
        m.set_admin(p.admin);
        m.set_staleness(p.staleness);
        m.set_keep_cache(p.keep_cache);
        Ok(Opened::Main(Box::new(m)))
    })();
    opened.map_err(|e| report(Some(ctx), &e, Op::Open, &String::from_utf8_lossy(raw)))
}

/// Opens super-journal `name`: a new one (`create`), or the one
/// `pager_delsuper` reads back (or, never for us, a child journal it
/// believes exists: an empty file).
fn open_super(name: &str, create: bool) -> Result<Opened, Error> {
    if create {
        return match group::create(name) {
            Some(s) => Ok(Opened::Super(Box::new(SuperFile(s)))),
            None => Err(Error::SuperJournalExists(name.to_string())),
        };
    }
    Ok(match group::lookup(name) {
        Some(s) => Opened::Super(Box::new(SuperFile(s))),
        None => Opened::Mem(Box::default()),
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
        // SAFETY: `out` has n_out >= bytes.len() writable bytes.
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

/// The VFS we delegate loading extensions to.
///
/// # Safety
/// `vfs` is null or our registration.
unsafe fn parent(vfs: *mut ffi::sqlite3_vfs) -> Option<&'static ffi::sqlite3_vfs> {
    // SAFETY: the caller's contract.
    let ctx = unsafe { ctx_of(vfs) }?;
    // SAFETY: the parent VFS is registered for the life of the process.
    unsafe { ctx.parent.as_ref() }
}

/// The parent's own pointer, for calling its methods.
fn parent_ptr(p: &ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    ptr::from_ref(p).cast_mut()
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    guard("xDlOpen", ptr::null_mut(), || {
        // SAFETY: SQLite passes our registration.
        match unsafe { parent(vfs) }.and_then(|p| Some((p, p.xDlOpen?))) {
            // SAFETY: delegation to the parent VFS with its own pointer.
            Some((p, f)) => unsafe { f(parent_ptr(p), name) },
            None => ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    guard("xDlError", (), || {
        // SAFETY: SQLite passes our registration.
        if let Some((p, f)) = unsafe { parent(vfs) }.and_then(|p| Some((p, p.xDlError?))) {
            // SAFETY: delegation to the parent VFS with its own pointer.
            unsafe { f(parent_ptr(p), n, out) }
        }
    })
}

/// What `xDlSym` returns.
type DlSym = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    h: *mut c_void,
    sym: *const c_char,
) -> DlSym {
    guard("xDlSym", None, || {
        // SAFETY: SQLite passes our registration.
        let (p, f) = unsafe { parent(vfs) }.and_then(|p| Some((p, p.xDlSym?)))?;
        // SAFETY: delegation to the parent VFS with its own pointer.
        unsafe { f(parent_ptr(p), h, sym) }
    })
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, h: *mut c_void) {
    guard("xDlClose", (), || {
        // SAFETY: SQLite passes our registration.
        if let Some((p, f)) = unsafe { parent(vfs) }.and_then(|p| Some((p, p.xDlClose?))) {
            // SAFETY: delegation to the parent VFS with its own pointer.
            unsafe { f(parent_ptr(p), h) }
        }
    })
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
        szOsFile: std::mem::size_of::<io::Handle>() as c_int,
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
