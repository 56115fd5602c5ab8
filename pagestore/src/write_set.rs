//! [`WriteSet`]: what a transaction wrote: dirty pages (in memory or
//! uploaded ahead), the page count and size it leaves, and the token its
//! uploads and its commit go under.

#![warn(clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ids::{PageNo, Token};
use crate::kv::Durability;
use crate::read_set::Snapshot;

/// A page written by the transaction.
#[derive(Clone, Debug)]
pub(crate) enum Dirty {
    /// Held in memory.
    Mem(Arc<[u8]>),
    /// Uploaded ahead under the transaction's token.
    Uploaded,
}

/// The writes of one transaction.
#[derive(Clone, Debug)]
pub(crate) struct WriteSet {
    /// Page count at the snapshot.
    pub base_count: u64,
    /// Page count including own writes and truncation.
    pub count: u64,
    /// Page size at the snapshot.
    pub base_page_size: Option<u32>,
    /// Page size, set by the first write when the snapshot had none.
    pub page_size: Option<u32>,
    /// Dirty pages.
    pub pages: BTreeMap<PageNo, Dirty>,
    /// Lowest page count set by `truncate`; pages from there up to the
    /// snapshot's count that are not rewritten become absent.
    pub trunc_from: Option<u64>,
    /// Bytes of dirty pages held in memory.
    pub mem_bytes: usize,
    /// The token of this transaction's uploads and commit.
    pub token: Token,
    /// Content has been uploaded under `token` (cleanup needed on abort).
    pub uploaded: bool,
    /// How durable the commit must be when acknowledged.
    pub durability: Durability,
}

impl WriteSet {
    /// Nothing written yet at `start`.
    pub fn new(start: &Snapshot) -> Self {
        WriteSet {
            base_count: start.page_count,
            count: start.page_count,
            base_page_size: start.page_size,
            page_size: start.page_size,
            pages: BTreeMap::new(),
            trunc_from: None,
            mem_bytes: 0,
            token: rand::random(),
            uploaded: false,
            durability: Durability::Full,
        }
    }

    /// True when anything was written or truncated.
    pub fn has_writes(&self) -> bool {
        !self.pages.is_empty() || self.count != self.base_count || self.trunc_from.is_some()
    }
}
