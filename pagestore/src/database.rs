//! [`Database`]: one named database; starts transactions and keeps this
//! process's view of it current through the change log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, debug_span, warn};

use crate::cache::{lock, DbView, Latest};
use crate::encoding::LogRecord;
use crate::error::{Error, Result};
use crate::keys::DbKeys;
use crate::kv::{KvTxn, RangeOption, ReadRequest, ReadResult, Version, Versionstamp};
use crate::store::PageStore;
use crate::txn::Transaction;
use crate::upload;

/// Change-log rows read at BEGIN before giving up on catching up and
/// starting the view afresh (cheaper than replaying a long history).
const LOG_CATCH_UP_ROWS: usize = 2_000;

/// A database of the store, by name. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) store: PageStore,
    pub(crate) name: Arc<str>,
    pub(crate) id: u64,
    pub(crate) keys: DbKeys,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish()
    }
}

/// One commit as listed by [`Database::changes_between`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The commit.
    pub versionstamp: Versionstamp,
    /// What it changed.
    pub record: LogRecord,
}

impl Database {
    pub(crate) fn new(store: PageStore, name: &str, id: u64) -> Self {
        let keys = store.inner.keys.db(id);
        Database {
            store,
            name: name.into(),
            id,
            keys,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The store it lives in.
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// Starts a transaction at the latest committed version: one read-version
    /// round trip plus one read of the change log since this process last
    /// looked (none when another connection of the process already looked
    /// past that version). Every commit acknowledged before this call is
    /// visible (strict serializability).
    pub fn begin(&self) -> Result<Transaction> {
        let span = debug_span!("begin", database = %self.name);
        let _g = span.enter();
        let mut t = self.store.inner.kv.begin()?;
        let v = t.read_version()?;
        let got_at = Instant::now();
        let view = self.store.inner.cache.view(self.id);
        let mut view = lock(&view);
        if view.known == 0 {
            self.load_view(&mut view, t.as_mut(), v, got_at)?;
        } else if view.known < v {
            self.advance_view(&mut view, t.as_mut(), v, got_at)?;
        }
        // The view may be ahead of `v` (another connection began later):
        // every commit up to `known` is durable, so reading there is as
        // fresh and still includes everything acknowledged before us.
        let snapshot = view.known;
        debug!(version = snapshot, pages = view.page_count, "began");
        Ok(Transaction::new(
            self.clone(),
            snapshot,
            view.known_at.map(|at| (snapshot, at)),
            view.page_count,
            view.page_size,
            false,
        ))
    }

    /// Starts a read-only transaction at an earlier `version` (time travel).
    /// Fails when `version` has not been reached yet.
    pub fn begin_at(&self, version: Version) -> Result<Transaction> {
        let mut t = self.store.inner.kv.begin()?;
        let rv = t.read_version()?;
        if version > rv {
            return Err(Error::Other(format!(
                "version {version} is in the future (latest is {rv})"
            )));
        }
        let (count, size) = self.read_size_at(t.as_mut(), version)?;
        Ok(Transaction::new(
            self.clone(),
            version,
            Some((rv, Instant::now())),
            count,
            size,
            true,
        ))
    }

    /// Reads (page count, page size) at `version` directly from the store.
    fn read_size_at(&self, t: &mut dyn KvTxn, version: Version) -> Result<(u64, Option<u32>)> {
        let (zb, ze) = self.keys.size_at(version);
        let res = t.get_batch(
            &[
                ReadRequest::Range(RangeOption::new(zb, ze).limit(1).reverse()),
                ReadRequest::Get(self.keys.header()),
            ],
            true,
        )?;
        let mut it = res.into_iter();
        let count = match it.next() {
            Some(ReadResult::Range(r)) => match r.kvs.first() {
                Some(kv) => decode_u64(&kv.value)?,
                None => 0,
            },
            _ => return Err(Error::corrupt("batch answer")),
        };
        let size = match it.next() {
            Some(ReadResult::Value(Some(v))) => Some(decode_u32(&v)?),
            Some(ReadResult::Value(None)) => None,
            _ => return Err(Error::corrupt("batch answer")),
        };
        Ok((count, size))
    }

    /// First sight of the database in this process: its size, page size and
    /// unfinished large commits, in one batched read.
    fn load_view(
        &self,
        view: &mut DbView,
        t: &mut dyn KvTxn,
        v: Version,
        got_at: Instant,
    ) -> Result<()> {
        let (mb, me) = self.keys.materialize_upto(v);
        let (zb, ze) = self.keys.size_at(v);
        let res = t.get_batch(
            &[
                ReadRequest::Range(RangeOption::new(zb, ze).limit(1).reverse()),
                ReadRequest::Get(self.keys.header()),
                ReadRequest::Range(RangeOption::new(mb, me)),
            ],
            true,
        )?;
        let [ReadResult::Range(z), ReadResult::Value(h), ReadResult::Range(m)] =
            <[ReadResult; 3]>::try_from(res).map_err(|_| Error::corrupt("batch answer"))?
        else {
            return Err(Error::corrupt("batch answer"));
        };
        view.reset();
        view.page_count = match z.kvs.first() {
            Some(kv) => decode_u64(&kv.value)?,
            None => 0,
        };
        view.page_size = h.as_deref().map(decode_u32).transpose()?;
        for kv in &m.kvs {
            self.finish_large(&kv.key, &kv.value)?;
        }
        view.known = v;
        view.known_at = Some(got_at);
        Ok(())
    }

    /// Moves the view from `known` to `v` through the change log.
    fn advance_view(
        &self,
        view: &mut DbView,
        t: &mut dyn KvTxn,
        v: Version,
        got_at: Instant,
    ) -> Result<()> {
        let (lb, le) = self.keys.log_between(view.known, v);
        let (mb, me) = self.keys.materialize_upto(v);
        let res = t.get_batch(
            &[
                ReadRequest::Range(RangeOption::new(lb, le).limit(LOG_CATCH_UP_ROWS)),
                ReadRequest::Range(RangeOption::new(mb, me)),
            ],
            true,
        )?;
        let [ReadResult::Range(log), ReadResult::Range(m)] =
            <[ReadResult; 2]>::try_from(res).map_err(|_| Error::corrupt("batch answer"))?
        else {
            return Err(Error::corrupt("batch answer"));
        };
        if log.more || log.kvs.len() >= LOG_CATCH_UP_ROWS {
            debug!(database = %self.name, "change log too long to replay; reloading view");
            return self.load_view(view, t, v, got_at);
        }
        for kv in &m.kvs {
            self.finish_large(&kv.key, &kv.value)?;
        }
        for (vs, rec) in group_log(&self.keys, log.kvs.into_iter().map(|kv| (kv.key, kv.value)))? {
            for &p in rec.pages.iter().chain(rec.absent.iter()) {
                view.latest.insert(p, Latest::At(vs));
            }
            if let Some(c) = rec.page_count {
                view.page_count = c;
            }
            if let Some(s) = rec.page_size {
                view.page_size = Some(s);
            }
        }
        view.known = v;
        view.known_at = Some(got_at);
        Ok(())
    }

    /// Completes a large commit's page index (idempotent; any process may
    /// do it, the committer normally already has).
    fn finish_large(&self, key: &[u8], token: &[u8]) -> Result<()> {
        let vs = self
            .keys
            .parse_materialize(key)
            .ok_or_else(|| Error::corrupt("materialize key"))?;
        let token = token
            .try_into()
            .map_err(|_| Error::corrupt("materialize token"))?;
        let changes = self.changes_in(vs)?;
        let rec = changes
            .into_iter()
            .find(|c| c.versionstamp == vs)
            .ok_or_else(|| Error::corrupt("large commit without its change-log record"))?;
        warn!(database = %self.name, commit = %vs, "finishing a large commit's page index");
        upload::materialize(self, vs, &token, &rec.record)
    }

    fn changes_in(&self, vs: Versionstamp) -> Result<Vec<Change>> {
        let v = vs.version();
        self.changes_between(v.saturating_sub(1), v)
    }

    /// Commits in `(after, upto]` and what each changed, oldest first.
    pub fn changes_between(&self, after: Version, upto: Version) -> Result<Vec<Change>> {
        let (mut b, e) = self.keys.log_between(after, upto);
        let mut rows = Vec::new();
        loop {
            let r = self.store.inner.run("changes", |t| {
                t.get_range(&RangeOption::new(b.clone(), e.clone()), true)
                    .map_err(Error::from)
            })?;
            let more = r.more;
            if let Some(last) = r.kvs.last() {
                b = last.key.clone();
                b.push(0);
            }
            rows.extend(r.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            if !more {
                break;
            }
        }
        Ok(group_log(&self.keys, rows.into_iter())?
            .into_iter()
            .map(|(versionstamp, record)| Change {
                versionstamp,
                record,
            })
            .collect())
    }
}

/// Joins the parts of each change-log record and decodes them.
pub(crate) fn group_log(
    keys: &DbKeys,
    rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<Vec<(Versionstamp, LogRecord)>> {
    let mut parts: BTreeMap<Versionstamp, Vec<u8>> = BTreeMap::new();
    for (k, v) in rows {
        let (vs, _seq) = keys
            .parse_log(&k)
            .ok_or_else(|| Error::corrupt("change-log key"))?;
        // Rows arrive in key order, so parts of one record arrive in `seq` order.
        parts.entry(vs).or_default().extend_from_slice(&v);
    }
    parts
        .into_iter()
        .map(|(vs, b)| Ok((vs, LogRecord::decode(&b)?)))
        .collect()
}

pub(crate) fn decode_u64(b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt("u64 value"))
}

pub(crate) fn decode_u32(b: &[u8]) -> Result<u32> {
    b.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| Error::corrupt("u32 value"))
}
