//! Test hook (feature `testutil`, never in release builds of users): a
//! main database file driven through the raw I/O methods, as SQLite
//! would, to send what SQLite itself never sends (the misuse and fuzz
//! tests).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use libsqlite3_sys as ffi;

/// A main database file opened through `xOpen` of the linked SQLite's
/// registration, driven through its I/O methods.
pub struct RawFile {
    /// `szOsFile` bytes for SQLite's file object, 8-byte aligned.
    mem: Vec<u64>,
}

impl RawFile {
    /// Opens database `uri_name` (`NAME` plus URI parameters encoded
    /// the way SQLite lays them out: `name\0key\0value\0…\0\0`).
    pub fn open(name_and_params: &[u8]) -> Result<RawFile, c_int> {
        crate::register_linked().map_err(|_| ffi::SQLITE_ERROR)?;
        // SAFETY: vfs_find with a static name.
        let vfs = unsafe { ffi::sqlite3_vfs_find(c"fdb".as_ptr()) };
        // SAFETY: a registered VFS lives for ever.
        let Some(v) = (unsafe { vfs.as_ref() }) else {
            return Err(ffi::SQLITE_ERROR);
        };
        let (Some(x_open), Ok(size)) = (v.xOpen, usize::try_from(v.szOsFile)) else {
            return Err(ffi::SQLITE_ERROR);
        };
        let mut f = RawFile {
            mem: vec![0u64; size.div_ceil(8)],
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
        // SAFETY: the buffer is szOsFile bytes, aligned for the handle; the
        // name is laid out as SQLite lays out filenames.
        let rc = unsafe {
            x_open(
                vfs,
                name.as_ptr().add(4).cast::<c_char>(),
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
        self.mem.as_mut_ptr().cast()
    }

    /// The open file's I/O methods (None once closed or never opened).
    fn methods(&mut self) -> Option<&'static ffi::sqlite3_io_methods> {
        // SAFETY: `mem` starts with the `sqlite3_file` xOpen filled in; its
        // methods are a static table.
        unsafe { (*self.ptr()).pMethods.as_ref() }
    }

    /// Calls one I/O method (SQLITE_MISUSE when the file is not open).
    fn call<M: Copy>(
        &mut self,
        method: impl FnOnce(&ffi::sqlite3_io_methods) -> Option<M>,
        run: impl FnOnce(M, *mut ffi::sqlite3_file) -> c_int,
    ) -> c_int {
        let p = self.ptr();
        match self.methods().and_then(method) {
            Some(m) => run(m, p),
            None => ffi::SQLITE_MISUSE,
        }
    }

    /// xRead.
    pub fn read(&mut self, buf: &mut [u8], off: i64) -> c_int {
        let (b, n) = (buf.as_mut_ptr().cast::<c_void>(), len(buf.len()));
        // SAFETY: an open file, `n` writable bytes at `b`.
        self.call(|m| m.xRead, |x, p| unsafe { x(p, b, n, off) })
    }

    /// xWrite.
    pub fn write(&mut self, buf: &[u8], off: i64) -> c_int {
        let (b, n) = (buf.as_ptr().cast::<c_void>(), len(buf.len()));
        // SAFETY: an open file, `n` readable bytes at `b`.
        self.call(|m| m.xWrite, |x, p| unsafe { x(p, b, n, off) })
    }

    /// xTruncate.
    pub fn truncate(&mut self, size: i64) -> c_int {
        // SAFETY: an open file.
        self.call(|m| m.xTruncate, |x, p| unsafe { x(p, size) })
    }

    /// xSync.
    pub fn sync(&mut self) -> c_int {
        // SAFETY: an open file.
        self.call(|m| m.xSync, |x, p| unsafe { x(p, 0) })
    }

    /// xFileControl(SQLITE_FCNTL_COMMIT_PHASETWO).
    pub fn commit_phase_two(&mut self) -> c_int {
        let op = ffi::SQLITE_FCNTL_COMMIT_PHASETWO;
        // SAFETY: an open file; this op takes no argument.
        self.call(
            |m| m.xFileControl,
            |x, p| unsafe { x(p, op, ptr::null_mut()) },
        )
    }

    /// xFileSize.
    pub fn size(&mut self) -> (c_int, i64) {
        let mut s = 0;
        let out: *mut i64 = &mut s;
        // SAFETY: an open file, a valid out pointer.
        let rc = self.call(|m| m.xFileSize, |x, p| unsafe { x(p, out) });
        (rc, s)
    }

    /// xLock.
    pub fn lock(&mut self, level: c_int) -> c_int {
        // SAFETY: an open file.
        self.call(|m| m.xLock, |x, p| unsafe { x(p, level) })
    }

    /// xUnlock.
    pub fn unlock(&mut self, level: c_int) -> c_int {
        // SAFETY: an open file.
        self.call(|m| m.xUnlock, |x, p| unsafe { x(p, level) })
    }

    /// xFileControl(SQLITE_FCNTL_PRAGMA); returns (rc, result).
    pub fn pragma(&mut self, name: &str, arg: Option<&str>) -> (c_int, Option<String>) {
        let n = CString::new(name).unwrap_or_default();
        let a = arg.map(|a| CString::new(a).unwrap_or_default());
        let mut slots: [*mut c_char; 3] = [
            ptr::null_mut(),
            n.as_ptr().cast_mut(),
            a.as_ref()
                .map_or(ptr::null_mut(), |a| a.as_ptr().cast_mut()),
        ];
        let (op, arg) = (
            ffi::SQLITE_FCNTL_PRAGMA,
            slots.as_mut_ptr().cast::<c_void>(),
        );
        // SAFETY: an open file; three slots as SQLite passes them.
        let rc = self.call(|m| m.xFileControl, |x, p| unsafe { x(p, op, arg) });
        let out = (!slots[0].is_null()).then(|| {
            // SAFETY: the VFS put a NUL-terminated string from SQLite's
            // allocator there; we own it now.
            unsafe {
                let s = CStr::from_ptr(slots[0]).to_string_lossy().into_owned();
                ffi::sqlite3_free(slots[0].cast());
                s
            }
        });
        (rc, out)
    }
}

/// A buffer length as SQLite's `int` (tests use small buffers).
fn len(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

impl Drop for RawFile {
    fn drop(&mut self) {
        // SAFETY: closes what xOpen opened (nothing when it failed: no
        // methods then).
        self.call(|m| m.xClose, |x, p| unsafe { x(p) });
    }
}
