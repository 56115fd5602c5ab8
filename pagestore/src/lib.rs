//! Versioned page storage over an ordered transactional key-value store
//! shaped like FoundationDB.
//!
//! `pagestore` knows nothing about SQLite: it stores numbered pages of a
//! fixed size per database, keeps every version, and commits transactions
//! optimistically with page-level conflict detection.

pub mod clock;
pub mod kv;
