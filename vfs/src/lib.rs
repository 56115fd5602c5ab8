//! The SQLite VFS `fdb`: SQLite's main database file served from
//! [`pagestore`], journals and temporary files in memory, optimistic
//! multi-writer commits (DESIGN.md §4–5).
//!
//! This crate knows nothing about FoundationDB: stores are selected by URI
//! parameters through [`registry`], where the `fdbvfs` crate plugs in the
//! FDB backend.
//!
//! Modules, one concept each:
//! * [`api`] — the few SQLite functions we call (linked SQLite or a host's);
//! * `ffi` — the `extern "C"` entry points, panic-safe: the VFS object, and
//!   one safe trait over the three kinds of open file with generic I/O
//!   trampolines (`ffi/io.rs`, `ffi/main_file.rs`);
//! * [`file`] — the main database file (one module per concern under
//!   `file/`); [`memfile`] — journals and temp files;
//! * [`lock`] — the lock state machine (one state enum, a pure transition);
//!   [`header`] — SQLite's database header and the change-counter trick;
//! * `btree` — the children an interior B-tree page names (read-ahead);
//! * [`pragma`] — PRAGMAs we answer; [`error`] — errors → SQLite codes;
//! * [`registry`] — which store a connection uses; [`at`] — points in history;
//! * `testing` — raw I/O test hooks (feature `testutil` only).

pub mod api;
pub mod at;
mod btree;
pub mod error;
mod ffi;
pub mod file;
pub mod header;
pub mod lock;
pub mod memfile;
pub mod pragma;
pub mod registry;
#[cfg(any(test, feature = "testutil"))]
pub mod testing;

use std::sync::OnceLock;

pub use api::Api;
pub use at::At;
pub use error::{sqlite_code, Error, Op, Result};
pub use ffi::{panics_caught, register_with, take_last_error, VFS_NAME};
pub use registry::{Backends, OpenParams, StoreSpec};

/// Registers the `fdb` VFS with the SQLite linked into this program
/// (rusqlite's bundled copy). Idempotent.
pub fn register_linked() -> std::result::Result<(), String> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| register_with(Api::linked(), false))
        .clone()
}
