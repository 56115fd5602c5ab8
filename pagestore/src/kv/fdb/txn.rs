//! [`FdbTxn`]: one FDB transaction behind the [`KvTxn`] trait.

#![warn(clippy::too_many_lines)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use foundationdb::future::{FdbSlice, FdbValues};
use foundationdb::options::{self, ConflictRangeType, StreamingMode};
use foundationdb::{FdbError, FdbResult, KeySelector, Transaction};
use futures::executor::block_on;
use futures::future::{self, try_join_all, FutureExt, TryFutureExt};

use super::network::{self, Gate, Guarded};
use super::Shared;
use crate::kv::counters::Counters;
use crate::kv::{
    CommitInfo, ConflictKind, KeyValue, KvError, KvResult, KvTxn, MutationType, RangeOption,
    RangeResult, ReadRequest, ReadResult, Version, Versionstamp,
};

/// A range read stops (reporting `more`) once it has gathered this many key
/// and value bytes, so that an unbounded scan cannot take unbounded memory;
/// the caller continues after the last key returned.
pub(crate) const RANGE_BYTE_BUDGET: usize = 4 << 20;

/// FDB's own conflict-range size for one key: `[key, key + "\0")`.
fn point_range_size(key: &[u8]) -> usize {
    2 * key.len() + 1
}

/// Our mutation types are FDB's (the versionstamped ones already use the
/// API >= 520 layout: a 4-byte little-endian offset at the end).
pub(crate) fn fdb_mutation(op: MutationType) -> options::MutationType {
    match op {
        MutationType::Add => options::MutationType::Add,
        MutationType::BitAnd => options::MutationType::BitAnd,
        MutationType::BitOr => options::MutationType::BitOr,
        MutationType::BitXor => options::MutationType::BitXor,
        MutationType::Max => options::MutationType::Max,
        MutationType::Min => options::MutationType::Min,
        MutationType::ByteMax => options::MutationType::ByteMax,
        MutationType::ByteMin => options::MutationType::ByteMin,
        MutationType::SetVersionstampedKey => options::MutationType::SetVersionstampedKey,
        MutationType::SetVersionstampedValue => options::MutationType::SetVersionstampedValue,
        MutationType::CompareAndClear => options::MutationType::CompareAndClear,
        MutationType::AppendIfFits => options::MutationType::AppendIfFits,
    }
}

/// The FDB form of a range read. `Exact` when a row limit is given (the
/// rows come in one reply unless they exceed the server's byte limit);
/// `WantAll` for an unlimited range (large chunks: the whole range is
/// wanted, e.g. a page scan).
pub(crate) fn fdb_range(r: &RangeOption) -> foundationdb::RangeOption<'static> {
    let mut opt = foundationdb::RangeOption::from((
        KeySelector::first_greater_or_equal(r.begin.clone()),
        KeySelector::first_greater_or_equal(r.end.clone()),
    ));
    opt.reverse = r.reverse;
    if r.limit == 0 {
        opt.limit = None;
        opt.mode = StreamingMode::WantAll;
    } else {
        opt.limit = Some(r.limit);
        opt.mode = StreamingMode::Exact;
    }
    opt
}

/// What to do after one chunk of a range read.
enum Next {
    /// The range (or the limit) is exhausted.
    Done,
    /// Read the next chunk with this option.
    Continue(foundationdb::RangeOption<'static>),
    /// Stop here; more rows remain (byte budget).
    Stop,
}

/// Rows gathered by one range read across its chunks.
#[derive(Default)]
struct RangeAcc {
    kvs: Vec<KeyValue>,
    bytes: usize,
    value_bytes: u64,
}

impl RangeAcc {
    /// Takes one chunk's rows and decides whether to continue.
    fn absorb(&mut self, opt: foundationdb::RangeOption<'static>, values: FdbValues) -> Next {
        for kv in values.iter() {
            self.bytes += kv.key().len() + kv.value().len();
            self.value_bytes += kv.value().len() as u64;
            self.kvs.push(KeyValue {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
            });
        }
        if !values.more() {
            return Next::Done;
        }
        if values.is_empty() || self.bytes >= RANGE_BYTE_BUDGET {
            // Nothing to continue from, or enough for one call.
            return Next::Stop;
        }
        // `next_range` lowers the remaining limit and moves the begin (or,
        // reversed, the end) past the last key; `None` when the limit is met.
        match opt.next_range(&values) {
            Some(next) => Next::Continue(next),
            None => Next::Done,
        }
    }
}

/// One answer of a `get_batch` wave.
enum Answer {
    Value(Option<FdbSlice>),
    Range(FdbValues),
    EmptyRange,
}

type BatchFuture = Pin<Box<dyn Future<Output = FdbResult<Answer>> + Send>>;

/// Runs one round trip under a tracing span and logs its outcome.
fn traced<T>(op: &'static str, f: impl FnOnce() -> KvResult<T>) -> KvResult<T> {
    let span = tracing::debug_span!("fdb_round_trip", op);
    let _guard = span.enter();
    let start = Instant::now();
    let result = f();
    let elapsed_us = start.elapsed().as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(elapsed_us, "ok"),
        Err(e) => tracing::debug!(elapsed_us, code = e.code, "failed: {}", e.message),
    }
    result
}

/// An FDB transaction. Mutations are buffered by the FDB client until
/// commit; reads go to the cluster (or are answered from this
/// transaction's own writes, as FDB's read-your-writes does).
pub(crate) struct FdbTxn {
    /// Destroyed only while the network runs in this process (see
    /// [`Guarded`]); every call into it holds a [`Gate`].
    trx: Guarded<Transaction>,
    shared: Arc<Shared>,
    /// The read version once known to us.
    read_version: Option<Version>,
    /// FDB has a read version (set, or fetched by an earlier call), so the
    /// next read costs no implicit GRV.
    has_read_version: bool,
    /// Mutations or write-conflict ranges were added: commit talks to FDB.
    wrote: bool,
    /// Key and value bytes of the mutations (`bytes_written` on success).
    mutation_bytes: usize,
    /// Approximate transaction size counted like FDB does: mutations plus
    /// read- and write-conflict ranges.
    size: usize,
    /// An error detected while buffering (FDB's "deferred error"), returned
    /// by the next read or the commit.
    deferred: Option<KvError>,
}

impl FdbTxn {
    pub(crate) fn new(trx: Transaction, shared: Arc<Shared>) -> Self {
        FdbTxn {
            trx: Guarded::new(trx),
            shared,
            read_version: None,
            has_read_version: false,
            wrote: false,
            mutation_bytes: 0,
            size: 0,
            deferred: None,
        }
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Fails with the deferred error, if any.
    fn check(&mut self) -> KvResult<()> {
        match self.deferred.take() {
            Some(e) => {
                self.deferred = Some(e.clone());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// A [`Gate`] for a buffering call (set, clear, ...), or `None` after
    /// recording why not as the deferred error.
    fn gate_or_defer(&mut self) -> Option<Gate> {
        match network::enter() {
            Ok(g) => Some(g),
            Err(e) => {
                if self.deferred.is_none() {
                    self.deferred = Some(e);
                }
                None
            }
        }
    }

    /// The `foundationdb` crate asserts (panics) on lengths over
    /// `i32::MAX`; FDB rejects anything that large anyway, so record the
    /// size error and skip the call.
    fn lengths_ok(&mut self, parts: &[&[u8]]) -> bool {
        if parts.iter().all(|p| p.len() <= i32::MAX as usize) {
            return true;
        }
        if self.deferred.is_none() {
            self.deferred = Some(KvError::new(
                KvError::TRANSACTION_TOO_LARGE,
                "a key, value or parameter is larger than 2 GiB",
            ));
        }
        false
    }

    /// The first read of a transaction without a read version makes FDB
    /// fetch one (a GRV round trip before the read): count it.
    fn note_implicit_grv(&mut self) {
        if !self.has_read_version {
            self.has_read_version = true;
            self.shared.counters.read_version();
        }
    }

    fn note_write(&mut self, mutation_bytes: usize, size: usize) {
        self.wrote = true;
        self.mutation_bytes += mutation_bytes;
        self.size += size;
    }

    /// A range read from `opt`, continuing over FDB's chunks (each one a
    /// counted round trip) until done, the limit is met or the byte budget
    /// is used. `first` is an already fetched first chunk (from a batch).
    fn read_range(
        &mut self,
        mut opt: foundationdb::RangeOption<'static>,
        snapshot: bool,
        first: Option<FdbValues>,
        acc: &mut RangeAcc,
    ) -> KvResult<bool> {
        let mut iteration = 1usize;
        let mut pending = first;
        loop {
            let values = match pending.take() {
                Some(v) => v,
                None => {
                    let fut = self.trx.get_range(&opt, iteration, snapshot);
                    let shared = &self.shared;
                    let r = traced("get_range", || {
                        block_on(fut).map_err(|e| shared.error("get_range", e))
                    });
                    self.counters().read();
                    r?
                }
            };
            iteration += 1;
            match acc.absorb(opt, values) {
                Next::Done => return Ok(false),
                Next::Stop => return Ok(true),
                Next::Continue(next) => opt = next,
            }
        }
    }

    fn finish_range(
        &mut self,
        r: &RangeOption,
        snapshot: bool,
        acc: RangeAcc,
        more: bool,
    ) -> RangeResult {
        self.counters().bytes_read(acc.value_bytes);
        if !snapshot {
            // FDB's read-conflict range covers the requested range (it is
            // trimmed to the rows read when a limit stops it: this is an
            // upper bound, which is what chunking needs).
            self.size += r.begin.len() + r.end.len();
        }
        RangeResult { kvs: acc.kvs, more }
    }

    /// A read version for a transaction that skips the commit: known, or
    /// fetched (a counted GRV unless FDB already has one).
    fn current_read_version(&mut self) -> KvResult<Version> {
        if let Some(v) = self.read_version {
            return Ok(v);
        }
        let _gate = network::enter()?;
        let fut = self.trx.get_read_version();
        let shared = &self.shared;
        let v = traced("get_read_version", || {
            block_on(fut).map_err(|e| shared.error("get_read_version", e))
        });
        if !self.has_read_version {
            // This call is the GRV round trip (otherwise FDB answers from
            // the version an earlier read already fetched).
            self.has_read_version = true;
            self.shared.counters.read_version();
        }
        let v = v?;
        let v = u64::try_from(v).map(Version::new).map_err(|_| {
            KvError::new(
                KvError::INTERNAL_ERROR,
                format!("FDB returned read version {v}"),
            )
        })?;
        self.read_version = Some(v);
        Ok(v)
    }
}

impl KvTxn for FdbTxn {
    fn read_version(&mut self) -> KvResult<Version> {
        self.check()?;
        self.current_read_version()
    }

    fn set_read_version(&mut self, version: Version) {
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        match i64::try_from(version.get()) {
            Ok(v) => {
                // FDB itself reports setting it after a read (2010
                // read_version_already_set) at the next operation.
                self.trx.set_read_version(v);
                self.read_version = Some(version);
                self.has_read_version = true;
            }
            Err(_) => {
                if self.deferred.is_none() {
                    self.deferred = Some(KvError::new(
                        2011, // version_invalid
                        format!("read version {version} is out of FDB's range"),
                    ));
                }
            }
        }
    }

    fn get(&mut self, key: &[u8], snapshot: bool) -> KvResult<Option<Vec<u8>>> {
        self.check()?;
        if !self.lengths_ok(&[key]) {
            return self.check().map(|()| None);
        }
        let _gate = network::enter()?;
        self.note_implicit_grv();
        let fut = self.trx.get(key, snapshot);
        let shared = &self.shared;
        let r = traced("get", || block_on(fut).map_err(|e| shared.error("get", e)));
        self.counters().read();
        let value = r?.map(|v| v.to_vec());
        if let Some(v) = &value {
            self.counters().bytes_read(v.len() as u64);
        }
        if !snapshot {
            self.size += point_range_size(key);
        }
        Ok(value)
    }

    fn get_range(&mut self, range: &RangeOption, snapshot: bool) -> KvResult<RangeResult> {
        self.check()?;
        if range.begin >= range.end {
            // FDB answers an empty or inverted range locally, without a
            // round trip or a conflict range.
            return Ok(RangeResult::default());
        }
        if !self.lengths_ok(&[&range.begin, &range.end]) {
            return self.check().map(|()| RangeResult::default());
        }
        let _gate = network::enter()?;
        self.note_implicit_grv();
        let mut acc = RangeAcc::default();
        let more = self.read_range(fdb_range(range), snapshot, None, &mut acc)?;
        Ok(self.finish_range(range, snapshot, acc, more))
    }

    fn get_batch(&mut self, requests: &[ReadRequest], snapshot: bool) -> KvResult<Vec<ReadResult>> {
        self.check()?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let too_long = requests.iter().any(|r| match r {
            ReadRequest::Get(k) => k.len() > i32::MAX as usize,
            ReadRequest::Range(r) => r.begin.len().max(r.end.len()) > i32::MAX as usize,
        });
        if too_long {
            batch_size_error(&mut self.deferred);
            return self.check().map(|()| Vec::new());
        }
        let _gate = network::enter()?;
        self.note_implicit_grv();
        // Issue every read before waiting for any: FDB sends them together
        // and the wave costs one round trip.
        let futures: Vec<BatchFuture> = requests
            .iter()
            .map(|r| match r {
                ReadRequest::Get(key) => self.trx.get(key, snapshot).map_ok(Answer::Value).boxed(),
                ReadRequest::Range(r) if r.begin >= r.end => {
                    future::ready(Ok(Answer::EmptyRange)).boxed()
                }
                ReadRequest::Range(r) => self
                    .trx
                    .get_range(&fdb_range(r), 1, snapshot)
                    .map_ok(Answer::Range)
                    .boxed(),
            })
            .collect();
        let shared = &self.shared;
        let answers = traced("get_batch", || {
            block_on(try_join_all(futures)).map_err(|e| shared.error("get_batch", e))
        });
        self.counters().read();
        let answers = answers?;
        let mut out = Vec::with_capacity(requests.len());
        for (request, answer) in requests.iter().zip(answers) {
            match (request, answer) {
                (ReadRequest::Get(key), Answer::Value(v)) => {
                    let v = v.map(|s| s.to_vec());
                    if let Some(v) = &v {
                        self.counters().bytes_read(v.len() as u64);
                    }
                    if !snapshot {
                        self.size += point_range_size(key);
                    }
                    out.push(ReadResult::Value(v));
                }
                (ReadRequest::Range(r), Answer::Range(values)) => {
                    // A range that did not fit in its first reply continues
                    // here, one counted round trip per further chunk.
                    let mut acc = RangeAcc::default();
                    let more = self.read_range(fdb_range(r), snapshot, Some(values), &mut acc)?;
                    out.push(ReadResult::Range(self.finish_range(r, snapshot, acc, more)));
                }
                (_, _) => out.push(ReadResult::Range(RangeResult::default())),
            }
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        if self.lengths_ok(&[key, value]) {
            self.trx.set(key, value);
            self.note_write(
                key.len() + value.len(),
                key.len() + value.len() + point_range_size(key),
            );
        }
    }

    fn clear(&mut self, key: &[u8]) {
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        if self.lengths_ok(&[key]) {
            self.trx.clear(key);
            // FDB sends a clear as the range [key, key + "\0").
            self.note_write(key.len(), 2 * point_range_size(key));
        }
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        if self.lengths_ok(&[begin, end]) {
            self.trx.clear_range(begin, end);
            let n = begin.len() + end.len();
            self.note_write(n, 2 * n);
        }
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType) {
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        if self.lengths_ok(&[key, param]) {
            self.trx.atomic_op(key, param, fdb_mutation(op));
            let n = key.len() + param.len();
            self.note_write(n, n + point_range_size(key));
        }
    }

    fn add_conflict_range(&mut self, begin: &[u8], end: &[u8], kind: ConflictKind) {
        if !self.lengths_ok(&[begin, end]) {
            return;
        }
        let Some(_gate) = self.gate_or_defer() else {
            return;
        };
        let ty = match kind {
            ConflictKind::Read => ConflictRangeType::Read,
            ConflictKind::Write => ConflictRangeType::Write,
        };
        match self.trx.add_conflict_range(begin, end, ty) {
            Ok(()) => {
                self.size += begin.len() + end.len();
                if kind == ConflictKind::Write {
                    // FDB commits a transaction with write-conflict ranges
                    // even without mutations.
                    self.wrote = true;
                }
            }
            Err(e) => {
                if self.deferred.is_none() {
                    self.deferred = Some(self.shared.error("add_conflict_range", e));
                }
            }
        }
    }

    fn approximate_size(&self) -> usize {
        self.size
    }

    fn commit(self: Box<Self>) -> KvResult<CommitInfo> {
        let mut this = *self;
        this.check()?;
        if !this.wrote {
            // Read-only: FDB would not contact the cluster either; the
            // "commit version" is the read version.
            return Ok(read_only(this.current_read_version()?));
        }
        // Held to the end: the transaction, its futures and the commit's
        // result are destroyed while the network runs.
        let _gate = network::enter()?;
        let FdbTxn {
            trx,
            shared,
            read_version,
            mutation_bytes,
            size,
            ..
        } = this;
        let trx = trx.into_inner();
        let counters = &shared.counters;
        // Asked before the commit, as FDB requires; it resolves when the
        // commit succeeds.
        let stamp_future = trx.get_versionstamp();
        counters.commit();
        traced("commit", || {
            let committed = match block_on(trx.commit()) {
                Ok(c) => c,
                Err(e) => return Err(commit_failed(&shared, FdbError::from(e))),
            };
            // From here on the commit is durable: any failure to learn its
            // version is reported as 1021 (commit_unknown_result), which
            // makes callers check idempotently whether it landed (it did)
            // instead of assuming nothing was written.
            let unknown = |what: &str, e: KvError| {
                counters.unknown_result();
                KvError::new(
                    KvError::COMMIT_UNKNOWN_RESULT,
                    format!("commit succeeded but {what} is unavailable: {e}"),
                )
            };
            let version = committed
                .committed_version()
                .map_err(|e| unknown("its version", shared.error("get_committed_version", e)))?;
            if version < 0 {
                // FDB found nothing to write (e.g. only no-op mutations)
                // and committed as read-only: there is no versionstamp.
                drop(stamp_future);
                let version = match read_version {
                    Some(v) => v,
                    None => fresh_read_version(&shared)?,
                };
                return Ok(read_only(version));
            }
            // `committed` (the transaction) stays alive until the stamp is
            // read: destroying it would break the stamp's promise.
            let stamp = block_on(stamp_future)
                .map_err(|e| unknown("its versionstamp", shared.error("get_versionstamp", e)))?;
            let versionstamp = Versionstamp::from_slice(&stamp).ok_or_else(|| {
                unknown(
                    "its versionstamp",
                    KvError::new(
                        KvError::INTERNAL_ERROR,
                        format!("FDB returned a {}-byte versionstamp", stamp.len()),
                    ),
                )
            })?;
            drop(committed);
            counters.committed(size as u64, mutation_bytes as u64);
            Ok(CommitInfo {
                version: Version::new(version as u64),
                versionstamp: Some(versionstamp),
            })
        })
    }
}

/// The outcome of a commit that wrote nothing: its read version.
fn read_only(version: Version) -> CommitInfo {
    CommitInfo {
        version,
        versionstamp: None,
    }
}

/// What a failed commit reports, counted: FDB's error, except that a
/// timeout is an unknown result.
fn commit_failed(shared: &Shared, e: FdbError) -> KvError {
    let counters = &shared.counters;
    match e.code() {
        KvError::NOT_COMMITTED => counters.conflict(),
        KvError::COMMIT_UNKNOWN_RESULT => counters.unknown_result(),
        KvError::TRANSACTION_TIMED_OUT => {
            // The timeout cancelled our wait, not a commit request already
            // at the proxies: it may have been applied. FDB's predicates do
            // not say so (1031 is neither retryable nor maybe-committed)
            // but treating it as "not applied" could apply a retried
            // transaction twice.
            counters.unknown_result();
            let timed_out = shared.error("commit", e);
            return KvError::new(
                KvError::COMMIT_UNKNOWN_RESULT,
                format!(
                    "{}; the commit may or may not have been applied",
                    timed_out.message
                ),
            );
        }
        _ => {}
    }
    shared.error("commit", e)
}

/// Records the size error for an oversized batch request.
fn batch_size_error(deferred: &mut Option<KvError>) {
    if deferred.is_none() {
        *deferred = Some(KvError::new(
            KvError::TRANSACTION_TOO_LARGE,
            "a key in a batch read is larger than 2 GiB",
        ));
    }
}

/// A read version from a new transaction (one counted GRV).
fn fresh_read_version(shared: &Shared) -> KvResult<Version> {
    let _gate = network::enter()?;
    let trx = shared.create_trx()?;
    shared.counters.read_version();
    let v = block_on(trx.get_read_version()).map_err(|e| shared.error("get_read_version", e));
    drop(trx);
    let v = v?;
    u64::try_from(v).map(Version::new).map_err(|_| {
        KvError::new(
            KvError::INTERNAL_ERROR,
            format!("FDB returned read version {v}"),
        )
    })
}
