//! Ctrl-C (SIGINT) for long commands: instead of killing the
//! process, it sets a flag that `import` and `export` check between pages
//! (so they clean up: drop the temporary database, remove `OUT.part`), and
//! interrupts the SQLite statement being watched (an `integrity_check`, or
//! a statement of the shell, which then goes on with the next input).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use pagestore::sync;
use rusqlite::{Connection, InterruptHandle};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static WATCHED: Mutex<Option<InterruptHandle>> = Mutex::new(None);

/// Installs the handler (once per process). Without it (the platform
/// refused), Ctrl-C ends the process as usual; nothing visible is left
/// half-done either way.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let r = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            if let Some(h) = sync::lock(&WATCHED).as_ref() {
                h.interrupt();
            }
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "no Ctrl-C handler");
        }
    });
}

/// Whether Ctrl-C was pressed since the last [`clear`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Forgets an earlier Ctrl-C.
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Ctrl-C interrupts `conn`'s running statement while the guard lives.
pub fn watch(conn: &Connection) -> Watch {
    *sync::lock(&WATCHED) = Some(conn.get_interrupt_handle());
    Watch
}

/// See [`watch`].
pub struct Watch;

impl Drop for Watch {
    fn drop(&mut self) {
        *sync::lock(&WATCHED) = None;
    }
}
