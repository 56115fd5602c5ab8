//! The loadable-extension entry point: `.load ./target/release/libfdbvfs`.

use std::ffi::{c_char, c_int, c_void};

use tracing::info;

/// SQLITE_OK_LOAD_PERMANENTLY: keep the library loaded after the
/// connection that loaded it closes (the VFS outlives it; unloading would
/// leave SQLite calling into unmapped code).
const SQLITE_OK_LOAD_PERMANENTLY: c_int = 256;

/// Entry point SQLite looks up for `libfdbvfs` (`sqlite3_` + `fdbvfs` +
/// `_init`). Registers the `fdb` VFS with the host's SQLite through its
/// `sqlite3_api_routines`; with `FDBVFS_DEFAULT=1` it also becomes the
/// default VFS, so unmodified applications use it.
///
/// Configuration: URI parameters (`file:NAME?vfs=fdb&dir=PATH` or, with
/// the `fdb` feature, `&cluster=FILE`), else the default store
/// ([`crate::backend`]: with `fdb`, `FDB_CLUSTER_FILE`; else `FDBVFS_DIR`;
/// else `./fdbvfs-data`). Logs go to stderr at the level in `FDBVFS_LOG`
/// (default `warn`), so open errors are explained.
///
/// # Safety
/// Called by SQLite with a valid `p_api` (and `pz_err_msg` or null).
#[no_mangle]
pub unsafe extern "C" fn sqlite3_fdbvfs_init(
    _db: *mut c_void,
    pz_err_msg: *mut *mut c_char,
    p_api: *const c_void,
) -> c_int {
    let out = std::panic::catch_unwind(|| {
        init_logging();
        // The loading thread (usually the host's main thread, which calls
        // exit()) keeps the FDB network's stop ahead of every other exit
        // handler: see `pagestore::kv::process`.
        pagestore::kv::process::enlist_thread();
        // SAFETY: p_api is the host's routine table.
        let api = unsafe { vfs::Api::from_routines(p_api) }?;
        crate::backend::install();
        let make_default = std::env::var("FDBVFS_DEFAULT")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        vfs::register_with(api, make_default)?;
        info!(make_default, "fdbvfs extension loaded");
        Ok::<_, String>(api)
    });
    match out {
        Ok(Ok(_)) => SQLITE_OK_LOAD_PERMANENTLY,
        Ok(Err(msg)) => {
            // We can only hand the message back through the host's
            // allocator, which needs a usable routine table.
            if !pz_err_msg.is_null() {
                // SAFETY: SQLite passes its routine table as p_api (this
                // function's contract).
                if let Ok(api) = unsafe { vfs::Api::from_routines(p_api) } {
                    // SAFETY: pz_err_msg is non-null and SQLite's to write;
                    // the message is allocated with SQLite's allocator.
                    unsafe { *pz_err_msg = api.alloc_cstr(&format!("fdbvfs: {msg}")) };
                }
            }
            libsqlite3_sys::SQLITE_ERROR
        }
        Err(_) => libsqlite3_sys::SQLITE_ERROR,
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FDBVFS_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // A host may load us twice, or the application may have its own
    // subscriber: then keep theirs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
