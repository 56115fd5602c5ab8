//! One transaction of the embedded store: lazy read version, reads through
//! the transaction's own writes, read-conflict ranges, size accounting.
//!
//! Read-your-writes follows FDB's client (`ReadYourWrites.actor.cpp`):
//! reads see the transaction's sets, clears and atomic ops (snapshot reads
//! too); a read answered entirely by its own writes adds no read-conflict
//! range, and a range read adds ranges only for the keys whose value came
//! from the store. A key written with a versionstamped value, and every key
//! a versionstamped key may land on, is unreadable (1036) until commit; the
//! write-conflict range of a versionstamped key is that whole range.

use std::iter::Peekable;
use std::sync::Arc;

use tracing::debug;

use super::atomic::versionstamp_key_range;
use super::commit::CommitRequest;
use super::conflict_ranges::{single_key_range, KeyRange};
use super::durable::Rows;
use super::view::{next_side, Side, View};
use super::writes::{apply_ops, Lookup, Pending, WriteBuffer};
use super::StoreState;
use crate::kv::limits::MVCC_WINDOW_MICROS;
use crate::kv::size::{
    check_batch_keys, check_read_key, clear_range_size, covered_range, mutation_size, range_size,
    value_bytes,
};
use crate::kv::{
    CommitInfo, ConflictKind, Durability, KeyValue, KvError, KvResult, KvTxn, MutationType,
    RangeOption, RangeResult, ReadRequest, ReadResult, Version,
};

/// A range read stops after about this many key and value bytes and says
/// `more` (FDB streams ranges in chunks in the same way).
pub(crate) const RANGE_BYTE_BUDGET: usize = 1 << 20;

/// A transaction on an [`super::EmbeddedKv`].
pub(crate) struct EmbeddedTxn {
    store: Arc<StoreState>,
    read_version: Option<Version>,
    /// Whether the read version was obtained or validated (a version set
    /// with `set_read_version` is checked by the first read or the commit).
    read_version_ok: bool,
    writes: WriteBuffer,
    read_conflicts: Vec<KeyRange>,
    write_conflicts: Vec<KeyRange>,
    size: usize,
    durability: Durability,
}

fn unreadable(key: &[u8]) -> KvError {
    KvError::new(
        KvError::ACCESSED_UNREADABLE,
        format!(
            "read of key {} written with a versionstamped value in this transaction",
            show(key)
        ),
    )
}

/// A short printable form of a key for messages.
fn show(key: &[u8]) -> String {
    let shown: String = key
        .iter()
        .take(64)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > 64 {
        format!("\"{shown}\"... ({} bytes)", key.len())
    } else {
        format!("\"{shown}\"")
    }
}

impl EmbeddedTxn {
    pub(crate) fn new(store: Arc<StoreState>) -> Self {
        EmbeddedTxn {
            store,
            read_version: None,
            read_version_ok: false,
            writes: WriteBuffer::default(),
            read_conflicts: Vec::new(),
            write_conflicts: Vec::new(),
            size: 0,
            durability: Durability::Full,
        }
    }

    /// The read version, fetched (one GRV round trip) or validated on first
    /// use.
    fn ensure_read_version(&mut self) -> KvResult<Version> {
        match self.read_version {
            Some(v) if self.read_version_ok => Ok(v),
            Some(v) => {
                self.check_not_too_old(v)?;
                self.store
                    .versions
                    .accept_read_version(v, self.store.now())?;
                self.read_version_ok = true;
                Ok(v)
            }
            None => {
                let v = self.store.get_read_version();
                self.read_version = Some(v);
                self.read_version_ok = true;
                Ok(v)
            }
        }
    }

    fn check_not_too_old(&self, rv: Version) -> KvResult<()> {
        let age = self.store.now().since(rv);
        if age > MVCC_WINDOW_MICROS {
            return Err(KvError::new(
                KvError::TRANSACTION_TOO_OLD,
                format!(
                    "read version {rv} is {:.3} s old (MVCC window {} s)",
                    age as f64 / 1e6,
                    MVCC_WINDOW_MICROS / 1_000_000
                ),
            ));
        }
        Ok(())
    }

    /// Starts one read round trip: read version, window check, latency.
    fn read_round_trip(&mut self) -> KvResult<Version> {
        let rv = self.ensure_read_version()?;
        self.check_not_too_old(rv)?;
        self.store.faults.round_trip_latency();
        self.store.counters.read();
        Ok(rv)
    }

    /// Ends a read round trip: history may have been pruned under the read,
    /// in which case the read version is out of the window by now.
    fn end_read(&mut self, rv: Version, value_bytes: usize) -> KvResult<()> {
        self.check_not_too_old(rv)?;
        self.store.counters.bytes_read(value_bytes as u64);
        Ok(())
    }

    fn add_read_conflict(&mut self, range: KeyRange) {
        self.size += range_size(&range.0, &range.1);
        self.read_conflicts.push(range);
    }

    /// The read-conflict ranges of a range read that covered `covered`
    /// (sized as the whole covered range, the rule the remote client
    /// mirrors).
    fn add_range_read_conflict(&mut self, covered: KeyRange, ranges: Vec<KeyRange>) {
        self.size += range_size(&covered.0, &covered.1);
        self.read_conflicts.extend(ranges);
    }

    /// Adds the size of a mutation and its implicit write-conflict range.
    fn count_write(&mut self, key: &[u8], param_len: usize) {
        self.size += mutation_size(key, param_len);
    }
}

/// The value of `key` through the transaction's writes; `true` when the
/// store was needed (and a read-conflict range applies).
fn point(view: &View<'_>, writes: &WriteBuffer, key: &[u8]) -> KvResult<(Option<Vec<u8>>, bool)> {
    match writes.lookup(key) {
        Lookup::Known(v) => Ok((v, false)),
        Lookup::Unreadable => Err(unreadable(key)),
        Lookup::Unmodified => Ok((view.get(key)?, true)),
        Lookup::Ops(ops) => Ok((apply_ops(view.get(key)?, ops), true)),
    }
}

fn resolve_pending(
    key: &[u8],
    pending: Pending,
    base: Option<Vec<u8>>,
) -> KvResult<Option<Vec<u8>>> {
    match pending {
        Pending::Value(v) => Ok(v),
        Pending::Ops(ops) => Ok(apply_ops(base, &ops)),
        Pending::Unreadable => Err(unreadable(key)),
    }
}

/// The store's rows merged with the transaction's writes.
struct Merged<'w> {
    base: Peekable<Rows>,
    over: Peekable<std::vec::IntoIter<(Vec<u8>, Pending)>>,
    writes: &'w WriteBuffer,
    reverse: bool,
}

impl Merged<'_> {
    fn next_row(&mut self) -> KvResult<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let side = match (self.base.peek(), self.over.peek()) {
                (None, None) => return Ok(None),
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Side::Base,
                (None, Some(_)) => Side::Over,
                (Some(Ok((bk, _))), Some((ok, _))) => next_side(bk, ok, self.reverse),
            };
            match side {
                Side::Base => match self.base.next() {
                    Some(Ok((k, v))) => {
                        if self.writes.is_cleared(&k) {
                            continue;
                        }
                        return Ok(Some((k, v)));
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(None),
                },
                Side::Over | Side::Both => {
                    let base = if side == Side::Both {
                        match self.base.next() {
                            Some(Ok((_, v))) => Some(v),
                            Some(Err(e)) => return Err(e),
                            None => None,
                        }
                    } else {
                        None
                    };
                    let Some((k, pending)) = self.over.next() else {
                        return Ok(None);
                    };
                    if let Some(v) = resolve_pending(&k, pending, base)? {
                        return Ok(Some((k, v)));
                    }
                }
            }
        }
    }
}

/// What a range read returns and, unless it was a snapshot read, what it
/// read: the range covered and the read-conflict ranges within it.
type RangeRead = (RangeResult, Option<(KeyRange, Vec<KeyRange>)>);

/// A range read through the transaction's writes. A snapshot read
/// (`conflicts` false: a page read's) computes no conflict ranges: cold
/// page reads are one such read per page.
fn range(
    view: &View<'_>,
    writes: &WriteBuffer,
    opt: &RangeOption,
    conflicts: bool,
) -> KvResult<RangeRead> {
    if opt.begin >= opt.end {
        let read = conflicts.then(|| ((opt.begin.clone(), opt.end.clone()), Vec::new()));
        return Ok((RangeResult::default(), read));
    }
    let result = range_rows(view, writes, opt)?;
    // The covered range lies within the requested one: when that meets no
    // versionstamped range, neither does the covered one.
    let stamped = writes.meets_stamped_range(&opt.begin, &opt.end);
    if !conflicts && !stamped {
        return Ok((result, None));
    }
    let covered = covered_range(opt, &result);
    if stamped && writes.meets_stamped_range(&covered.0, &covered.1) {
        return Err(KvError::new(
            KvError::ACCESSED_UNREADABLE,
            format!(
                "range read of [{}, {}) reaches keys a versionstamped key of this transaction may land on",
                show(&covered.0),
                show(&covered.1)
            ),
        ));
    }
    let read = conflicts.then(|| {
        let ranges = writes.read_conflicts(covered.clone());
        (covered, ranges)
    });
    Ok((result, read))
}

/// The rows of a range read through the transaction's writes, up to its
/// limit and [`RANGE_BYTE_BUDGET`].
fn range_rows(view: &View<'_>, writes: &WriteBuffer, opt: &RangeOption) -> KvResult<RangeResult> {
    let mut merged = Merged {
        base: view.range(&opt.begin, &opt.end, opt.reverse)?.peekable(),
        over: writes
            .overlay_range(&opt.begin, &opt.end, opt.reverse)
            .into_iter()
            .peekable(),
        writes,
        reverse: opt.reverse,
    };
    let limit = if opt.limit == 0 {
        usize::MAX
    } else {
        opt.limit
    };
    let mut kvs = Vec::with_capacity(limit.min(16));
    let mut bytes = 0usize;
    let mut more = false;
    while kvs.len() < limit {
        if bytes >= RANGE_BYTE_BUDGET {
            more = merged.next_row()?.is_some();
            break;
        }
        match merged.next_row()? {
            Some((key, value)) => {
                bytes += key.len() + value.len();
                kvs.push(KeyValue { key, value });
            }
            None => break,
        }
    }
    Ok(RangeResult { kvs, more })
}

/// A range read of the last row only (a page's newest version at a
/// snapshot): its bounds. Only below the system key space (`\xff`), where
/// the store keeps rows of its own that reads do not show.
fn last_row_bounds(r: &ReadRequest) -> Option<(&[u8], &[u8])> {
    match r {
        ReadRequest::Range(o)
            if o.limit == 1 && o.reverse && o.begin < o.end && o.end.as_slice() <= b"\xff" =>
        {
            Some((o.begin.as_slice(), o.end.as_slice()))
        }
        _ => None,
    }
}

/// Answers of a snapshot batch without writes of its own to its "last
/// row" range reads (see [`last_row_bounds`]): each ascending run in one
/// walk of the store (`last_rows`; a lone one by one reverse seek, without
/// the merging iterators of a general range read), indexed like `requests`
/// (None: read it as usual). Empty when the view must lay history over the
/// store.
/// The reads of one batch are at one version, so their order is free.
fn walk_last_rows(view: &View<'_>, requests: &[ReadRequest]) -> KvResult<Vec<Option<RangeResult>>> {
    let mut answers: Vec<Option<RangeResult>> = (0..requests.len()).map(|_| None).collect();
    let mut run: Vec<(usize, &[u8], &[u8])> = Vec::new();
    let bounds = requests
        .iter()
        .enumerate()
        .filter_map(|(i, r)| last_row_bounds(r).map(|(b, e)| (i, b, e)));
    for (i, b, e) in bounds.chain(std::iter::once((usize::MAX, &[][..], &[][..]))) {
        let ascending = run.last().is_some_and(|&(_, _, pe)| pe <= b) && i != usize::MAX;
        if !ascending && !run.is_empty() {
            let ranges: Vec<(&[u8], &[u8])> = run.iter().map(|&(_, b, e)| (b, e)).collect();
            let Some(rows) = view.last_rows(&ranges)? else {
                return Ok(Vec::new());
            };
            for (&(j, _, _), row) in run.iter().zip(rows) {
                let kvs = row.map(|(key, value)| KeyValue { key, value });
                if let Some(slot) = answers.get_mut(j) {
                    *slot = Some(RangeResult {
                        kvs: kvs.into_iter().collect(),
                        more: false,
                    });
                }
            }
        }
        if !ascending {
            run.clear();
        }
        run.push((i, b, e));
    }
    Ok(answers)
}

impl KvTxn for EmbeddedTxn {
    fn read_version(&mut self) -> KvResult<Version> {
        match self.read_version {
            Some(v) => Ok(v),
            None => self.ensure_read_version(),
        }
    }

    fn set_read_version(&mut self, version: Version) {
        self.read_version = Some(version);
        self.read_version_ok = false;
    }

    fn get(&mut self, key: &[u8], snapshot: bool) -> KvResult<Option<Vec<u8>>> {
        check_read_key(key)?;
        match self.writes.lookup(key) {
            Lookup::Known(v) => return Ok(v),
            Lookup::Unreadable => return Err(unreadable(key)),
            Lookup::Unmodified | Lookup::Ops(_) => {}
        }
        let rv = self.read_round_trip()?;
        let view = self.store.view(rv)?;
        let (value, _) = point(&view, &self.writes, key)?;
        drop(view);
        let n = value.as_ref().map_or(0, Vec::len);
        self.end_read(rv, n)?;
        if !snapshot {
            self.add_read_conflict(single_key_range(key));
        }
        debug!(
            op = "get",
            version = rv.get(),
            key_len = key.len(),
            bytes = n,
            snapshot,
            "kv round trip"
        );
        Ok(value)
    }

    fn get_range(&mut self, opt: &RangeOption, snapshot: bool) -> KvResult<RangeResult> {
        if opt.begin >= opt.end {
            return Ok(RangeResult::default());
        }
        let rv = self.read_round_trip()?;
        let view = self.store.view(rv)?;
        let (result, read) = range(&view, &self.writes, opt, !snapshot)?;
        drop(view);
        let n = value_bytes(&result);
        self.end_read(rv, n)?;
        if let Some((covered, conflicts)) = read {
            self.add_range_read_conflict(covered, conflicts);
        }
        debug!(
            op = "get_range",
            version = rv.get(),
            rows = result.kvs.len(),
            bytes = n,
            more = result.more,
            snapshot,
            "kv round trip"
        );
        Ok(result)
    }

    fn get_batch(&mut self, requests: &[ReadRequest], snapshot: bool) -> KvResult<Vec<ReadResult>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        check_batch_keys(requests)?;
        let rv = self.read_round_trip()?;
        let view = self.store.view(rv)?;
        let mut walked = if snapshot && self.writes.is_empty() {
            walk_last_rows(&view, requests)?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(requests.len());
        // (range covered, its read-conflict ranges)
        let mut conflicts: Vec<(KeyRange, Vec<KeyRange>)> = Vec::new();
        let mut n = 0usize;
        for (i, r) in requests.iter().enumerate() {
            if let Some(result) = walked.get_mut(i).and_then(Option::take) {
                n += value_bytes(&result);
                out.push(ReadResult::Range(result));
                continue;
            }
            match r {
                ReadRequest::Get(key) => {
                    let (value, from_store) = point(&view, &self.writes, key)?;
                    n += value.as_ref().map_or(0, Vec::len);
                    if from_store && !snapshot {
                        let k = single_key_range(key);
                        conflicts.push((k.clone(), vec![k]));
                    }
                    out.push(ReadResult::Value(value));
                }
                ReadRequest::Range(opt) => {
                    let (result, read) = range(&view, &self.writes, opt, !snapshot)?;
                    n += value_bytes(&result);
                    if let Some(read) = read.filter(|_| opt.begin < opt.end) {
                        conflicts.push(read);
                    }
                    out.push(ReadResult::Range(result));
                }
            }
        }
        drop(view);
        self.end_read(rv, n)?;
        for (covered, ranges) in conflicts {
            self.add_range_read_conflict(covered, ranges);
        }
        debug!(
            op = "get_batch",
            version = rv.get(),
            requests = requests.len(),
            bytes = n,
            snapshot,
            "kv round trip"
        );
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.count_write(key, value.len());
        self.writes.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.count_write(key, 0);
        self.writes.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        self.size += clear_range_size(begin, end);
        self.writes.clear_range(begin, end);
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType) {
        self.count_write(key, param.len());
        if op == MutationType::SetVersionstampedKey {
            // FDB: the key may land anywhere from the stamp of the read
            // version + 1 (0 when none is known yet) to all-0xff; that
            // range is the write-conflict range and is unreadable.
            if let Some(r) = versionstamp_key_range(key, self.read_version) {
                self.write_conflicts.push(r.clone());
                self.writes.stamped_range(r);
            }
        }
        self.writes.atomic_op(key, param, op);
    }

    fn add_conflict_range(&mut self, begin: &[u8], end: &[u8], kind: ConflictKind) {
        if begin >= end {
            return;
        }
        let r = (begin.to_vec(), end.to_vec());
        match kind {
            ConflictKind::Read => self.add_read_conflict(r),
            ConflictKind::Write => {
                self.size += range_size(begin, end);
                self.write_conflicts.push(r);
            }
        }
    }

    fn approximate_size(&self) -> usize {
        self.size
    }

    fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    fn commit(self: Box<Self>) -> KvResult<CommitInfo> {
        let mut this = *self;
        this.check_limits()?;
        if this.writes.is_empty() && this.write_conflicts.is_empty() {
            // Read-only: nothing to send, nothing can conflict (FDB).
            return Ok(CommitInfo {
                version: this.read_version.unwrap_or_default(),
                versionstamp: None,
            });
        }
        let read_version = if this.read_conflicts.is_empty() {
            this.read_version.filter(|_| this.read_version_ok)
        } else {
            Some(this.ensure_read_version()?)
        };
        let EmbeddedTxn {
            store,
            read_conflicts,
            write_conflicts,
            writes,
            size,
            durability,
            ..
        } = this;
        store.commit(CommitRequest {
            read_version,
            reads: read_conflicts,
            explicit_writes: write_conflicts,
            mutations: writes.into_mutations(),
            size,
            durability,
        })
    }
}

impl EmbeddedTxn {
    /// FDB's client-side checks: bad parameters and size limits.
    fn check_limits(&self) -> KvResult<()> {
        if let Some(e) = self.writes.deferred_error() {
            return Err(e.clone());
        }
        super::commit::check_mutation_sizes(self.writes.mutations())?;
        if self.size > crate::kv::limits::MAX_TRANSACTION_SIZE {
            return Err(KvError::new(
                KvError::TRANSACTION_TOO_LARGE,
                format!(
                    "transaction is {} bytes (limit {})",
                    self.size,
                    crate::kv::limits::MAX_TRANSACTION_SIZE
                ),
            ));
        }
        Ok(())
    }
}
