//! Versioned page storage over an ordered transactional key-value store
//! shaped like FoundationDB.
//!
//! `pagestore` knows nothing about SQLite: it stores numbered pages of a
//! fixed size per database, keeps every version, and commits transactions
//! optimistically with page-level conflict detection.

#[macro_use]
mod failpoints;
pub mod clock;
pub mod keys;
pub mod kv;
pub mod sync;

mod cache;
mod catalog;
mod changelog;
mod commit;
mod database;
mod encoding;
mod error;
mod fast_hash;
mod gc;
mod history;
mod ids;
mod indexing;
mod page_read;
mod page_set;
mod read_set;
mod refresher;
mod rename;
pub mod retry;
mod staleness;
mod stats;
mod store;
mod txn;
mod upload;
mod view;
mod write_set;

pub use cache::{CacheStats, PageCache};
pub use catalog::{validate_name, DatabaseInfo, MAX_NAME_BYTES};
pub use changelog::{after_version, Change};
pub use commit::Committed;
pub use database::Database;
pub use encoding::{DbMeta, LogRecord, PageValue};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use history::{CLOCK_SKEW_WINDOW, DEFAULT_RETENTION, RESTORE_ATTEMPTS};
pub use ids::{DbId, PageNo};
pub use kv::Durability;
pub use page_set::PageSet;
pub use staleness::{BadStaleness, Staleness, MAX_STALENESS};
pub use stats::DbStats;
pub use store::{GcTotals, PageStore, StoreOptions, StoreStats};
pub use txn::{commit_group, commit_group_checked, Transaction};
