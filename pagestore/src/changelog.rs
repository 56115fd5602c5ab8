//! The change log (`D 'l' vs seq`): which pages each commit changed.
//!
//! Every reader of the log also reads GC's horizon (`D 'g'`) in the same
//! store transaction: GC removes records at or below its horizon, so for a
//! reader whose range starts below it "no record" would silently read as
//! "no change" (a lost update). Such a read fails with the retryable
//! [`Error::SnapshotTooOld`] instead.

#![warn(clippy::too_many_lines)]

use std::collections::BTreeMap;

use crate::encoding::{decode_horizon, LogRecord};
use crate::error::{Error, Result};
use crate::keys::DbKeys;
use crate::kv::{KvTxn, RangeOption, RangeResult, ReadRequest, ReadResult, Version, Versionstamp};

/// One commit as listed by [`crate::Database::changes_after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The commit.
    pub versionstamp: Versionstamp,
    /// What it changed.
    pub record: LogRecord,
}

/// The bound "every commit of version `v`": commits after it have a
/// version above `v`. (A read version `v` sees all commits of version `v`,
/// whatever their batch order.)
pub fn after_version(v: Version) -> Versionstamp {
    Versionstamp::new(v, u16::MAX)
}

/// Fails when GC's `horizon` may have removed records after `after`: GC
/// removes every record of a version at or below its horizon.
pub(crate) fn check_log_horizon(
    database: &str,
    after: Versionstamp,
    horizon: Version,
) -> Result<()> {
    if after_version(horizon) > after && !planted!("plant::skip_horizon_check") {
        return Err(Error::SnapshotTooOld {
            database: database.to_string(),
            snapshot: after.version(),
            horizon,
            time_travel: false,
        });
    }
    Ok(())
}

/// Rows of the log read per store transaction by [`read_all`].
const ROWS_PER_READ: usize = 10_000;

/// One read of log rows in `[b, e)` (at most `limit`, 0 = all the backend
/// returns at once) and of GC's horizon, in `t`.
fn read_rows(
    t: &mut dyn KvTxn,
    database: &str,
    keys: &DbKeys,
    after: Versionstamp,
    range: RangeOption,
) -> Result<RangeResult> {
    let reqs = [ReadRequest::Range(range), ReadRequest::Get(keys.horizon())];
    let mut res = t.get_batch(&reqs, true)?.into_iter();
    match (res.next(), res.next()) {
        (Some(ReadResult::Range(r)), Some(ReadResult::Value(h))) => {
            check_log_horizon(database, after, decode_horizon(h.as_deref())?)?;
            Ok(r)
        }
        _ => Err(Error::corrupt("batch answer")),
    }
}

/// Reads, in `t`, the records of commits after `after` up to version
/// `upto`, oldest first, checking GC's horizon in the same transaction.
pub(crate) fn read_after(
    t: &mut dyn KvTxn,
    database: &str,
    keys: &DbKeys,
    after: Versionstamp,
    upto: Version,
) -> Result<Vec<(Versionstamp, LogRecord)>> {
    read_chunks(keys, after, upto, 0, |range| {
        read_rows(t, database, keys, after, range)
    })
}

/// Like [`read_after`], in as many short store transactions as the range
/// needs (each checks the horizon again: a record is immutable until GC
/// removes it, so every chunk read under the horizon is complete).
pub(crate) fn read_all(
    inner: &crate::store::StoreCore,
    database: &str,
    keys: &DbKeys,
    after: Versionstamp,
    upto: Version,
) -> Result<Vec<(Versionstamp, LogRecord)>> {
    read_chunks(keys, after, upto, ROWS_PER_READ, |range| {
        inner.run("changes", |t| {
            read_rows(t, database, keys, after, range.clone())
        })
    })
}

/// The one paginated reader of the log: `read` answers one range (of at
/// most `limit` rows, 0 = as many as the store returns at once); chunks
/// continue after the last key until the range is exhausted.
fn read_chunks(
    keys: &DbKeys,
    after: Versionstamp,
    upto: Version,
    limit: usize,
    mut read: impl FnMut(RangeOption) -> Result<RangeResult>,
) -> Result<Vec<(Versionstamp, LogRecord)>> {
    let (mut b, e) = keys.log_after(&after, upto);
    let mut rows = Vec::new();
    loop {
        let r = read(RangeOption::new(b.clone(), e.clone()).limit(limit))?;
        let done = !r.more && (limit == 0 || r.kvs.len() < limit);
        if let Some(last) = r.kvs.last() {
            b = last.key.clone();
            b.push(0);
        }
        rows.extend(r.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        if done {
            return group(keys, rows.into_iter());
        }
    }
}

/// The record of commit `vs`, read in `t` (no horizon check: callers read
/// records GC keeps, such as an unfinished large commit's).
pub(crate) fn read_record(
    t: &mut dyn KvTxn,
    keys: &DbKeys,
    vs: &Versionstamp,
) -> Result<Option<LogRecord>> {
    let (b, e) = keys.log_of(vs);
    let r = t.get_range(&RangeOption::new(b, e), true)?;
    if r.more {
        return Err(Error::corrupt("change-log record larger than one read"));
    }
    Ok(group(keys, r.kvs.into_iter().map(|kv| (kv.key, kv.value)))?
        .into_iter()
        .next()
        .map(|(_, rec)| rec))
}

/// Joins the parts of each change-log record and decodes them.
pub(crate) fn group(
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
