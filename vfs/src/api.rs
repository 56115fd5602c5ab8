//! The few SQLite functions the VFS calls, as a table of function pointers.
//!
//! Why a table: the same VFS code runs in two worlds. Linked into a Rust
//! program, it calls the SQLite that `libsqlite3-sys` bundles (the one
//! rusqlite uses). Loaded as an extension into a host (the `sqlite3` shell,
//! Python's apsw, …), it must call the *host's* SQLite through the
//! `sqlite3_api_routines` pointer the host passes to the entry point: the
//! bundled copy inside our shared object is a different library with its own
//! VFS list and heap, and memory handed back to the host (pragma results,
//! error messages) must come from the host's `sqlite3_malloc`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use libsqlite3_sys as ffi;

/// `sqlite3_log`: variadic in C; we always call it with `"%s"` and one string.
pub type LogFn = unsafe extern "C" fn(c_int, *const c_char, ...);

/// `sqlite3_vfs_register`.
pub type VfsRegisterFn = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, c_int) -> c_int;
/// `sqlite3_vfs_find`.
pub type VfsFindFn = unsafe extern "C" fn(*const c_char) -> *mut ffi::sqlite3_vfs;
/// `sqlite3_malloc64`.
pub type Malloc64Fn = unsafe extern "C" fn(u64) -> *mut c_void;
/// `sqlite3_free`.
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
/// `sqlite3_uri_parameter`.
pub type UriParameterFn =
    unsafe extern "C" fn(ffi::sqlite3_filename, *const c_char) -> *const c_char;
/// `sqlite3_uri_key`.
pub type UriKeyFn = unsafe extern "C" fn(ffi::sqlite3_filename, c_int) -> *const c_char;
/// `sqlite3_db_config`: variadic; we only ask `SQLITE_DBCONFIG_DEFENSIVE`.
pub type DbConfigFn = unsafe extern "C" fn(*mut ffi::sqlite3, c_int, ...) -> c_int;

/// The SQLite functions the VFS uses.
#[derive(Clone, Copy, Debug)]
pub struct Api {
    /// `sqlite3_vfs_register`.
    pub vfs_register: unsafe extern "C" fn(*mut ffi::sqlite3_vfs, c_int) -> c_int,
    /// `sqlite3_vfs_find`.
    pub vfs_find: unsafe extern "C" fn(*const c_char) -> *mut ffi::sqlite3_vfs,
    /// `sqlite3_malloc64`.
    pub malloc64: unsafe extern "C" fn(u64) -> *mut c_void,
    /// `sqlite3_free`.
    pub free: unsafe extern "C" fn(*mut c_void),
    /// `sqlite3_uri_parameter`.
    pub uri_parameter: unsafe extern "C" fn(ffi::sqlite3_filename, *const c_char) -> *const c_char,
    /// `sqlite3_uri_key`.
    pub uri_key: unsafe extern "C" fn(ffi::sqlite3_filename, c_int) -> *const c_char,
    /// `sqlite3_log`.
    pub log: LogFn,
    /// `sqlite3_db_config` (to see a connection's defensive mode), when
    /// the host has it.
    pub db_config: Option<DbConfigFn>,
    /// Which SQLite this table calls ("linked" or "host").
    pub origin: &'static str,
}

/// Indexes (in pointer-sized slots) of the fields we use in SQLite's
/// `struct sqlite3_api_routines` (sqlite3ext.h). The struct only ever grows
/// at its end, so these are stable across versions; they were checked with
/// `offsetof` against sqlite3ext.h 3.54 (see the unit test for the count of
/// the bundled header's fields we rely on).
mod slot {
    pub const FREE: usize = 58;
    pub const LIBVERSION_NUMBER: usize = 67;
    pub const VFS_FIND: usize = 141;
    pub const VFS_REGISTER: usize = 142;
    pub const DB_CONFIG: usize = 163;
    pub const LOG: usize = 167;
    pub const URI_PARAMETER: usize = 189;
    pub const MALLOC64: usize = 197;
    pub const URI_KEY: usize = 245;
}

/// Oldest host SQLite the extension accepts: `sqlite3_uri_key` is 3.31.
pub const MIN_HOST_VERSION: c_int = 3_031_000;

impl Api {
    /// The SQLite linked into this binary (rusqlite's bundled copy).
    pub fn linked() -> Api {
        Api {
            vfs_register: ffi::sqlite3_vfs_register,
            vfs_find: ffi::sqlite3_vfs_find,
            malloc64: ffi::sqlite3_malloc64,
            free: ffi::sqlite3_free,
            uri_parameter: ffi::sqlite3_uri_parameter,
            uri_key: ffi::sqlite3_uri_key,
            log: ffi::sqlite3_log,
            db_config: Some(ffi::sqlite3_db_config),
            origin: "linked",
        }
    }

    /// The host's SQLite, from the `sqlite3_api_routines` pointer given to
    /// an extension entry point.
    ///
    /// # Safety
    /// `routines` must be the pointer SQLite passed to the entry point.
    pub unsafe fn from_routines(routines: *const c_void) -> Result<Api, String> {
        if routines.is_null() {
            return Err("no sqlite3_api_routines pointer (not loaded by SQLite?)".into());
        }
        let table = routines as *const *const c_void;
        // SAFETY: the host's table has at least the slots of its version; we
        // check the version before reading slots added after 3.31.
        let get = |i: usize| unsafe { *table.add(i) };
        let version_fn = get(slot::LIBVERSION_NUMBER);
        if version_fn.is_null() {
            return Err("host SQLite has no libversion_number".into());
        }
        // SAFETY: slot LIBVERSION_NUMBER is `int (*)(void)` in every version.
        let version_fn: unsafe extern "C" fn() -> c_int =
            unsafe { std::mem::transmute(version_fn) };
        // SAFETY: a function of the host's SQLite taking nothing.
        let version = unsafe { version_fn() };
        if version < MIN_HOST_VERSION {
            return Err(format!(
                "host SQLite {version} is too old; fdbvfs needs {MIN_HOST_VERSION} or newer"
            ));
        }
        let need = |i: usize, what: &str| {
            let p = get(i);
            if p.is_null() {
                Err(format!("host SQLite lacks {what}"))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each slot holds the function of the documented signature.
        unsafe {
            Ok(Api {
                vfs_register: std::mem::transmute::<*const c_void, VfsRegisterFn>(need(
                    slot::VFS_REGISTER,
                    "vfs_register",
                )?),
                vfs_find: std::mem::transmute::<*const c_void, VfsFindFn>(need(
                    slot::VFS_FIND,
                    "vfs_find",
                )?),
                malloc64: std::mem::transmute::<*const c_void, Malloc64Fn>(need(
                    slot::MALLOC64,
                    "malloc64",
                )?),
                free: std::mem::transmute::<*const c_void, FreeFn>(need(slot::FREE, "free")?),
                uri_parameter: std::mem::transmute::<*const c_void, UriParameterFn>(need(
                    slot::URI_PARAMETER,
                    "uri_parameter",
                )?),
                uri_key: std::mem::transmute::<*const c_void, UriKeyFn>(need(
                    slot::URI_KEY,
                    "uri_key",
                )?),
                log: std::mem::transmute::<*const c_void, LogFn>(need(slot::LOG, "log")?),
                db_config: need(slot::DB_CONFIG, "db_config")
                    .ok()
                    .map(|p| std::mem::transmute::<*const c_void, DbConfigFn>(p)),
                origin: "host",
            })
        }
    }

    /// Copies `s` into memory from this SQLite's allocator (for strings
    /// SQLite frees with `sqlite3_free`). Null on allocation failure.
    pub fn alloc_cstr(&self, s: &str) -> *mut c_char {
        let bytes = s.as_bytes();
        // Interior NULs would truncate the message; replace them.
        let n = bytes.len();
        // SAFETY: malloc64 returns n+1 writable bytes or null.
        let p = unsafe { (self.malloc64)(n as u64 + 1) } as *mut u8;
        if p.is_null() {
            return std::ptr::null_mut();
        }
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: i < n, within the allocation.
            unsafe { *p.add(i) = if b == 0 { b' ' } else { b } };
        }
        // SAFETY: index n is the last byte of the allocation.
        unsafe { *p.add(n) = 0 };
        p as *mut c_char
    }

    /// Writes `msg` to SQLite's error log (`sqlite3_log`).
    pub fn log_message(&self, code: c_int, msg: &str) {
        let Ok(c) = CString::new(msg.replace('\0', " ")) else {
            return;
        };
        // SAFETY: "%s" with one NUL-terminated string argument.
        unsafe { (self.log)(code, c"%s".as_ptr(), c.as_ptr()) };
    }

    /// Whether connection `conn` (a `sqlite3*`) is in defensive mode
    /// (`SQLITE_DBCONFIG_DEFENSIVE`); false when that cannot be told.
    ///
    /// # Safety
    /// `conn` must be a connection that is open, and the caller must be
    /// inside one of its calls into the VFS (its mutex, if any, is held by
    /// this thread and is recursive).
    pub unsafe fn is_defensive(&self, conn: usize) -> bool {
        let Some(db_config) = self.db_config else {
            return false;
        };
        if conn == 0 {
            return false;
        }
        let mut on: c_int = 0;
        // SAFETY: -1 only reads the setting into `on` (sqlite3_db_config
        // with a boolean op takes an int and an int*).
        let rc = unsafe {
            db_config(
                conn as *mut ffi::sqlite3,
                ffi::SQLITE_DBCONFIG_DEFENSIVE,
                -1 as c_int,
                &mut on as *mut c_int,
            )
        };
        rc == ffi::SQLITE_OK && on != 0
    }

    /// All URI parameters of a main-database filename, in order.
    ///
    /// # Safety
    /// `name` must be a filename SQLite passed to `xOpen` for a main database.
    pub unsafe fn uri_params(&self, name: ffi::sqlite3_filename) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if name.is_null() {
            return out;
        }
        for i in 0..c_int::MAX {
            // SAFETY: uri_key returns null past the last parameter.
            let k = unsafe { (self.uri_key)(name, i) };
            if k.is_null() {
                break;
            }
            // SAFETY: k is a NUL-terminated key inside SQLite's filename block.
            let v = unsafe { (self.uri_parameter)(name, k) };
            // SAFETY: as above.
            let key = unsafe { CStr::from_ptr(k) }.to_string_lossy().into_owned();
            let value = if v.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null value is NUL-terminated, in the same block.
                unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned()
            };
            out.push((key, value));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_alloc_roundtrip() {
        let api = Api::linked();
        let p = api.alloc_cstr("hello\0world");
        assert!(!p.is_null());
        // SAFETY: alloc_cstr returned a NUL-terminated string (not null).
        let s = unsafe { CStr::from_ptr(p) }.to_str().map(str::to_owned);
        // SAFETY: allocated by SQLite's allocator, freed once.
        unsafe { (api.free)(p as *mut c_void) };
        assert_eq!(s.as_deref(), Ok("hello world"));
    }

    #[test]
    fn defensive_mode_is_seen() {
        let api = Api::linked();
        let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
        // SAFETY: an in-memory connection, closed below.
        unsafe {
            assert_eq!(
                ffi::sqlite3_open(c":memory:".as_ptr(), &mut db),
                ffi::SQLITE_OK
            );
            assert!(!api.is_defensive(db as usize));
            let mut out: c_int = 0;
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_DEFENSIVE,
                1 as c_int,
                &mut out as *mut c_int,
            );
            assert!(api.is_defensive(db as usize));
            ffi::sqlite3_close(db);
        }
    }
}
