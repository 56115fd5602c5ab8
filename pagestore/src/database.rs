//! [`Database`]: one named database; starts transactions and keeps this
//! process's view of it current through the change log.

#![warn(clippy::too_many_lines)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, debug_span, warn};

use crate::changelog::{self, after_version, Change};
use crate::encoding::{decode_horizon, decode_u32, decode_u64, DbMeta, LogRecord};
use crate::error::{Error, Result};
use crate::ids::DbId;
use crate::keys::DbKeys;
use crate::kv::{KeyValue, KvTxn, RangeOption, ReadRequest, ReadResult, Version, Versionstamp};
use crate::read_set::{ReadSet, Snapshot, READ_VERSION_REUSE};
use crate::refresher::{RefreshFn, IDLE};
use crate::store::PageStore;
use crate::sync::lock;
use crate::upload;
use crate::view::{DbView, Latest};

/// Change-log rows read at BEGIN before giving up on catching up and
/// starting the view afresh (cheaper than replaying a long history).
const LOG_CATCH_UP_ROWS: usize = 2_000;

/// One layer of a database's pages: the database itself, or for a fork an
/// ancestor it reads from, capped at the version the fork started from.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub id: DbId,
    pub keys: DbKeys,
    /// Versions above this are not part of the fork (`u64::MAX` for the
    /// database itself).
    pub cap: Version,
}

/// A database of the store, by name. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pub(crate) store: PageStore,
    pub(crate) name: Arc<str>,
    pub(crate) id: DbId,
    pub(crate) keys: DbKeys,
    /// `layers[0]` is this database; then its fork ancestors, nearest first.
    pub(crate) layers: Arc<[Layer]>,
    /// This process's view of the database (the page cache's, kept here so
    /// that a page read does not look it up in the store-wide map).
    pub(crate) view: Arc<Mutex<DbView>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Database {
    /// A database handle; `ancestors` are (id, cap) of the fork chain,
    /// nearest first.
    pub(crate) fn new(
        store: PageStore,
        name: &str,
        id: DbId,
        ancestors: &[(DbId, Version)],
    ) -> Self {
        let keys = store.inner.keys.db(id);
        let mut layers = vec![Layer {
            id,
            keys: keys.clone(),
            cap: Version::MAX,
        }];
        for &(aid, cap) in ancestors {
            layers.push(Layer {
                id: aid,
                keys: store.inner.keys.db(aid),
                cap,
            });
        }
        Database {
            view: store.inner.cache.view(id),
            store,
            name: name.into(),
            id,
            keys,
            layers: layers.into(),
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's id.
    pub fn id(&self) -> DbId {
        self.id
    }

    /// The store it lives in.
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// For a fork: the database id and version it was forked from.
    pub fn fork_origin(&self) -> Option<(DbId, Version)> {
        self.layers.get(1).map(|l| (l.id, l.cap))
    }

    /// Where [`Database::begin`] starts (see there).
    pub(crate) fn start(&self) -> Result<Snapshot> {
        let span = debug_span!("begin", database = %self.name);
        let _g = span.enter();
        let mut t = self.store.inner.kv.begin()?;
        // Every commit acknowledged before this instant is at or below the
        // read version asked for next.
        let asked = self.store.inner.opts.clock.now_micros();
        let v = t.read_version()?;
        let got_at = Instant::now();
        failpoint!("begin::after_read_version");
        let from = lock(&self.view).known;
        let caught = match from < v {
            true => Some(self.read_catch_up(t.as_mut(), from, v, false)?),
            false => None,
        };
        failpoint!("begin::caught_up");
        let mut view = lock(&self.view);
        if let Some(c) = caught {
            if !apply_catch_up(&mut view, self.id, c, v, got_at) {
                // Reloaded at an older snapshot meanwhile: catch up again,
                // under the lock this time (rare).
                self.catch_up_locked(&mut view, t.as_mut(), v, got_at, false)?;
            }
        }
        if view.known == v {
            view.confirmed = view.confirmed.max(Some(asked));
        }
        // The view may be ahead of `v` (another connection began later):
        // every commit up to `known` is durable, so reading there is as
        // fresh and still includes everything acknowledged before us.
        debug!(version = view.known.get(), pages = view.page_count, "began");
        Ok(current(&view))
    }

    /// Where [`Database::begin_within`] starts: at this process's view, with
    /// no round trip, when the view was confirmed to be the latest within
    /// `bound` and is at or past `floor` (what the caller already saw or
    /// committed); else where [`Database::begin`] starts.
    pub(crate) fn start_within(&self, bound: Duration, floor: Version) -> Result<Snapshot> {
        {
            let mut view = lock(&self.view);
            // Tell the refresher now and then, not at every BEGIN (its
            // interest lasts `refresher::IDLE`); at once for a shorter bound.
            let tell = view
                .wanted
                .is_none_or(|(at, b)| bound < b || at.elapsed() > IDLE / 4);
            if tell {
                view.wanted = Some((Instant::now(), bound));
                self.store
                    .inner
                    .refresher
                    .want(self.id, bound, || self.refresher_fn());
            }
            let now = self.store.inner.opts.clock.now_micros();
            let fresh = view
                .confirmed
                .is_some_and(|c| now.saturating_sub(c) <= bound.as_micros() as u64)
                || (planted!("plant::ignore_staleness_bound") && view.confirmed.is_some());
            let floor = floor.max(view.committed);
            if fresh && view.known >= floor && view.known > Version::ZERO {
                debug!(database = %self.name, version = view.known.get(), "began within the staleness bound");
                return Ok(current(&view));
            }
        }
        self.start()
    }

    /// What the background refresher calls to keep this database's view
    /// fresh: a strict start when the view is older than the period. It
    /// holds the store weakly (false once the store is gone).
    fn refresher_fn(&self) -> RefreshFn {
        let store = Arc::downgrade(&self.store.inner);
        let (name, id) = (self.name.clone(), self.id);
        let ancestors: Vec<(DbId, Version)> =
            self.layers.iter().skip(1).map(|l| (l.id, l.cap)).collect();
        Arc::new(move |period| {
            let Some(inner) = store.upgrade() else {
                return false;
            };
            let db = Database::new(PageStore { inner }, &name, id, &ancestors);
            if db.view_age() >= period {
                if let Err(e) = db.start() {
                    debug!(database = %name, error = %e, "view refresh failed");
                }
            }
            true
        })
    }

    /// Notes a commit of this process at `version` (see `DbView::committed`).
    pub(crate) fn note_commit(&self, version: Version) {
        let mut view = lock(&self.view);
        view.committed = view.committed.max(version);
    }

    /// How long ago (store clock) this process's view was last confirmed
    /// to be the latest version; `Duration::MAX` when never.
    pub(crate) fn view_age(&self) -> Duration {
        let confirmed = lock(&self.view).confirmed;
        match confirmed {
            Some(c) => {
                Duration::from_micros(self.store.inner.opts.clock.now_micros().saturating_sub(c))
            }
            None => Duration::MAX,
        }
    }

    /// Where [`Database::begin_sibling`] starts (see there).
    pub(crate) fn start_sibling(&self, other: &ReadSet) -> Result<Snapshot> {
        let snap = other.snapshot;
        let mut view = lock(&self.view);
        let fresh_at = other
            .rv
            .and_then(|(v, at)| (v == snap && at.elapsed() < READ_VERSION_REUSE).then_some(at));
        // The other transaction's read version is only good for this
        // database's pages if no large commit of it was still being indexed
        // at that version: each path below says whether one was.
        let mut rv = fresh_at.map(|at| (snap, at));
        if view.known != snap {
            let mut t = self.store.inner.kv.begin()?;
            match fresh_at {
                Some(_) => t.set_read_version(snap),
                // Any read version at or past the snapshot gives the same
                // answers: keys carry their versions.
                None => {
                    let r = t.read_version()?;
                    rv = Some((r, Instant::now()));
                }
            }
            let at = fresh_at.unwrap_or_else(Instant::now);
            // Read at the other transaction's snapshot, this database may
            // not exist yet (created, e.g. ATTACHed, after that snapshot):
            // it is then empty there, not dropped.
            let young = fresh_at.is_some();
            if view.known < snap {
                self.catch_up_locked(&mut view, t.as_mut(), snap, at, young)?;
            } else {
                // The view is ahead: read the size as of the snapshot.
                let (size, finished) = self.read_size_at(t.as_mut(), snap, young)?;
                self.check_horizon(snap, size.horizon, false)?;
                let rv = if finished { None } else { rv };
                return Ok(Snapshot {
                    version: snap,
                    rv,
                    confirmed_at: other.confirmed_at,
                    last_change: None,
                    page_count: size.count,
                    page_size: size.page_size,
                });
            }
            if view.known_at.is_none() {
                rv = None;
            }
        } else if view.known_at.is_none() {
            rv = None;
        }
        Ok(Snapshot {
            version: snap,
            rv,
            confirmed_at: other.confirmed_at,
            last_change: view.last_change,
            page_count: view.page_count,
            page_size: view.page_size,
        })
    }

    /// Where [`Database::begin_at`] starts (see there).
    pub(crate) fn start_at(&self, version: Version) -> Result<Snapshot> {
        let mut t = self.store.inner.kv.begin()?;
        let rv = t.read_version()?;
        if version > rv {
            return Err(Error::VersionInFuture {
                version,
                latest: rv,
            });
        }
        let (size, finished) = self.read_size_at(t.as_mut(), version, false)?;
        self.check_horizon(version, size.horizon, true)?;
        Ok(Snapshot {
            version,
            rv: (!finished).then(|| (rv, Instant::now())),
            confirmed_at: None,
            last_change: None,
            page_count: size.count,
            page_size: size.page_size,
        })
    }

    /// Fails with [`Error::SnapshotTooOld`] when GC's `horizon` is past
    /// `snapshot`: versions the snapshot needs may be gone.
    pub(crate) fn check_horizon(
        &self,
        snapshot: Version,
        horizon: Version,
        time_travel: bool,
    ) -> Result<()> {
        if horizon > snapshot {
            return Err(Error::SnapshotTooOld {
                database: self.name.to_string(),
                snapshot,
                horizon,
                time_travel,
            });
        }
        Ok(())
    }

    /// The latest committed version (one read-version round trip).
    pub fn latest_version(&self) -> Result<Version> {
        Ok(self.store.inner.kv.begin()?.read_version()?)
    }

    /// The requests that give a [`SizeAt`] at `version`: GC's horizon, the
    /// catalog entry (a dropped database must not be read or written), and
    /// for each layer its newest size record and its header.
    fn size_requests(&self, version: Version) -> Vec<ReadRequest> {
        let mut reqs = vec![
            ReadRequest::Get(self.keys.horizon()),
            ReadRequest::Get(self.store.inner.keys.meta(self.id)),
        ];
        for l in self.layers.iter() {
            let (zb, ze) = l.keys.size_at(version.min(l.cap));
            reqs.push(ReadRequest::Range(
                RangeOption::new(zb, ze).limit(1).reverse(),
            ));
            reqs.push(ReadRequest::Get(l.keys.header()));
        }
        reqs
    }

    /// Decodes the answers to [`Self::size_requests`]: the nearest layer
    /// with a size record gives the size (a fork that never changed its
    /// size has its origin's), likewise for the page size. Fails with
    /// [`Error::Dropped`] when the database is gone (dropped, or dropped and
    /// its name reused) under this handle.
    /// `created_later_ok`: the answers are at an older read version, at
    /// which a missing catalog entry may mean "not created yet".
    fn sizes_from(
        &self,
        res: &mut impl Iterator<Item = ReadResult>,
        created_later_ok: bool,
    ) -> Result<SizeAt> {
        let horizon = match res.next() {
            Some(ReadResult::Value(v)) => decode_horizon(v.as_deref())?,
            _ => return Err(Error::corrupt("batch answer")),
        };
        match res.next() {
            Some(ReadResult::Value(meta)) => {
                self.check_exists(meta.as_deref(), created_later_ok)?
            }
            _ => return Err(Error::corrupt("batch answer")),
        }
        let (mut count, mut size) = (None, None);
        for _ in self.layers.iter() {
            match (res.next(), res.next()) {
                (Some(ReadResult::Range(z)), Some(ReadResult::Value(h))) => {
                    if count.is_none() {
                        if let Some(kv) = z.kvs.first() {
                            count = Some(decode_u64(&kv.value)?);
                        }
                    }
                    if size.is_none() {
                        size = h.as_deref().map(decode_u32).transpose()?;
                    }
                }
                _ => return Err(Error::corrupt("batch answer")),
            }
        }
        Ok(SizeAt {
            count: count.unwrap_or(0),
            page_size: size,
            horizon,
        })
    }

    /// Reads the [`SizeAt`] `version`, and finishes large commits up to
    /// `version` still being indexed; returns whether there were any (then
    /// `t`'s read version predates their page index: page reads need a
    /// newer one).
    fn read_size_at(
        &self,
        t: &mut dyn KvTxn,
        version: Version,
        created_later_ok: bool,
    ) -> Result<(SizeAt, bool)> {
        let (mb, me) = self.keys.materialize_upto(version);
        let mut reqs = vec![ReadRequest::Range(RangeOption::new(mb, me))];
        reqs.extend(self.size_requests(version));
        let mut res = t.get_batch(&reqs, true)?.into_iter();
        let Some(ReadResult::Range(m)) = res.next() else {
            return Err(Error::corrupt("batch answer"));
        };
        let size = self.sizes_from(&mut res, created_later_ok)?;
        let finished = self.finish_pending(&m.kvs)?;
        Ok((size, finished))
    }

    /// Moves the view from `known` to `v` (through the change log, or
    /// afresh on first sight or when too far behind) while holding its lock.
    fn catch_up_locked(
        &self,
        view: &mut DbView,
        t: &mut dyn KvTxn,
        v: Version,
        got_at: Instant,
        created_later_ok: bool,
    ) -> Result<()> {
        let c = self.read_catch_up(t, view.known, v, created_later_ok)?;
        if !apply_catch_up(view, self.id, c, v, got_at) {
            // Not reachable: `view` was at `known` throughout.
            return Err(Error::corrupt("view moved under its lock"));
        }
        Ok(())
    }

    /// What the view needs to go from `from` to `v`, read without holding
    /// the view's lock (page reads of other transactions never wait on a
    /// BEGIN's store read): the change log since `from`, or when it cannot
    /// be replayed (or `from` is zero) what starting afresh needs.
    fn read_catch_up(
        &self,
        t: &mut dyn KvTxn,
        from: Version,
        v: Version,
        created_later_ok: bool,
    ) -> Result<CatchUp> {
        if from == Version::ZERO {
            self.read_load(t, v, created_later_ok)
        } else {
            self.read_advance(t, from, v, created_later_ok)
        }
    }

    /// Size, page size and unfinished large commits at `v`, in one batched
    /// read.
    fn read_load(&self, t: &mut dyn KvTxn, v: Version, created_later_ok: bool) -> Result<CatchUp> {
        let (mb, me) = self.keys.materialize_upto(v);
        let (lb, le) = self.keys.log_between(Version::ZERO, v);
        let mut reqs = vec![
            ReadRequest::Range(RangeOption::new(mb, me)),
            // The last few commits: if one was large, pages read next are
            // likely its uploaded content (see `DbView::last_token`).
            ReadRequest::Range(RangeOption::new(lb, le).limit(RECENT_LOG_ROWS).reverse()),
        ];
        reqs.extend(self.size_requests(v));
        let mut res = t.get_batch(&reqs, true)?.into_iter();
        let (Some(ReadResult::Range(m)), Some(ReadResult::Range(recent))) =
            (res.next(), res.next())
        else {
            return Err(Error::corrupt("batch answer"));
        };
        let size = self.sizes_from(&mut res, created_later_ok)?;
        let finished = self.finish_pending(&m.kvs)?;
        Ok(CatchUp::Load {
            size,
            token: recent_large_token(&self.keys, self.id, recent.kvs),
            finished,
        })
    }

    /// The change log from `from` to `v` (with GC's horizon, the catalog
    /// entry and unfinished large commits, in one batched read); a fresh
    /// start when it cannot be replayed.
    fn read_advance(
        &self,
        t: &mut dyn KvTxn,
        from: Version,
        v: Version,
        created_later_ok: bool,
    ) -> Result<CatchUp> {
        let (lb, le) = self.keys.log_between(from, v);
        let (mb, me) = self.keys.materialize_upto(v);
        let res = t.get_batch(
            &[
                ReadRequest::Range(RangeOption::new(lb, le).limit(LOG_CATCH_UP_ROWS)),
                ReadRequest::Range(RangeOption::new(mb, me)),
                ReadRequest::Get(self.keys.horizon()),
                ReadRequest::Get(self.store.inner.keys.meta(self.id)),
            ],
            true,
        )?;
        let [ReadResult::Range(log), ReadResult::Range(m), ReadResult::Value(h), ReadResult::Value(meta)] =
            <[ReadResult; 4]>::try_from(res).map_err(|_| Error::corrupt("batch answer"))?
        else {
            return Err(Error::corrupt("batch answer"));
        };
        self.check_exists(meta.as_deref(), created_later_ok)?;
        let horizon = decode_horizon(h.as_deref())?;
        // GC removes change-log records below its horizon: a view older
        // than that cannot be replayed and starts afresh.
        if log.more || log.kvs.len() >= LOG_CATCH_UP_ROWS || horizon > from {
            debug!(database = %self.name, "change log cannot be replayed; reloading view");
            return self.read_load(t, v, created_later_ok);
        }
        let finished = self.finish_pending(&m.kvs)?;
        let records =
            changelog::group(&self.keys, log.kvs.into_iter().map(|kv| (kv.key, kv.value)))?;
        Ok(CatchUp::Advance {
            from,
            records,
            finished,
        })
    }

    /// Fails with [`Error::Dropped`] unless `meta` (this database's catalog
    /// entry, read now) shows it still exists: a handle must not read or
    /// write a database another process dropped (or dropped and
    /// re-created under the same name).
    pub(crate) fn check_exists(&self, meta: Option<&[u8]>, created_later_ok: bool) -> Result<()> {
        match meta {
            Some(m) if !DbMeta::decode(m)?.dropped => Ok(()),
            None if created_later_ok => Ok(()),
            _ => Err(Error::Dropped(self.name.to_string())),
        }
    }

    /// Finishes the large commits whose `D 'm'` markers are `markers`.
    /// Returns whether there were any: the read version they were seen at
    /// then predates their page index, and must not serve page reads (the
    /// defect where a reader remembered pre-commit pages).
    fn finish_pending(&self, markers: &[KeyValue]) -> Result<bool> {
        for kv in markers {
            self.finish_large(&kv.key, &kv.value)?;
        }
        Ok(!markers.is_empty())
    }

    /// Finishes every large commit up to version `upto` still being
    /// indexed (GC does this before its horizon passes them).
    pub(crate) fn finish_large_upto(&self, upto: Version) -> Result<()> {
        let (mb, me) = self.keys.materialize_upto(upto);
        let markers = self.store.inner.run("large-pending", |t| {
            t.get_range(&RangeOption::new(mb.clone(), me.clone()), true)
                .map_err(Error::from)
        })?;
        self.finish_pending(&markers.kvs).map(|_| ())
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
        failpoint!("finish::saw_marker");
        // The record and the marker, read together: the marker seen earlier
        // may be gone since (another process finished the index), and then
        // GC may have removed the record too; only a marker without its
        // record is corrupt.
        let (rec, marker) = self.store.inner.run("large-record", |t| {
            let rec = changelog::read_record(t, &self.keys, &vs)?;
            Ok((rec, t.get(key, true)?))
        })?;
        let rec = match (rec, marker) {
            (Some(rec), _) => rec,
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                return Err(Error::corrupt("large commit without its change-log record"))
            }
        };
        warn!(database = %self.name, commit = %vs, "finishing a large commit's page index");
        upload::materialize(&self.store.inner, &self.keys, &self.name, vs, &token, &rec)
    }

    /// Commits in `(after, upto]` (versions) and what each changed, oldest
    /// first. Fails with the retryable [`Error::SnapshotTooOld`] when GC
    /// may have removed records of that range.
    pub fn changes_between(&self, after: Version, upto: Version) -> Result<Vec<Change>> {
        self.changes_after(after_version(after), upto)
    }

    /// Commits with a versionstamp after `after` and a version up to `upto`,
    /// oldest first. Comparing versionstamps, not versions, matters:
    /// FoundationDB gives every commit of one batch the same version.
    /// Fails with the retryable [`Error::SnapshotTooOld`] when GC may have
    /// removed records of that range.
    pub fn changes_after(&self, after: Versionstamp, upto: Version) -> Result<Vec<Change>> {
        let rows = changelog::read_all(&self.store.inner, &self.name, &self.keys, after, upto)?;
        Ok(rows
            .into_iter()
            .map(|(versionstamp, record)| Change {
                versionstamp,
                record,
            })
            .collect())
    }
}

/// Page count, page size and GC horizon of a database at one version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SizeAt {
    pub count: u64,
    pub page_size: Option<u32>,
    pub horizon: Version,
}

/// Change-log rows read at first sight of a database to find a recent
/// large commit.
const RECENT_LOG_ROWS: usize = 16;

/// The token of the newest large commit among `rows` (change-log rows,
/// newest first; a record's parts may be cut off at the limit, so only the
/// first part, which holds the token and flags, is decoded).
fn recent_large_token(
    keys: &DbKeys,
    id: DbId,
    rows: Vec<crate::kv::KeyValue>,
) -> Option<(DbId, crate::keys::Token)> {
    rows.into_iter()
        .filter(|kv| matches!(keys.parse_log(&kv.key), Some((_, 0))))
        .find_map(|kv| {
            let rec = LogRecord::decode_head(&kv.value)?;
            rec.large.then_some((id, rec.token))
        })
}

/// The snapshot at the view's `known` version.
fn current(view: &DbView) -> Snapshot {
    Snapshot {
        version: view.known,
        rv: view.known_at.map(|at| (view.known, at)),
        confirmed_at: view.confirmed,
        last_change: view.last_change,
        page_count: view.page_count,
        page_size: view.page_size,
    }
}

/// What a catch-up read found (see `Database::read_catch_up`).
enum CatchUp {
    /// Start afresh at the read version.
    Load {
        size: SizeAt,
        token: Option<(DbId, crate::keys::Token)>,
        /// Large commits were finished: the read version predates their
        /// page index.
        finished: bool,
    },
    /// The change-log records after `from`, up to the read version.
    Advance {
        from: Version,
        records: Vec<(Versionstamp, LogRecord)>,
        finished: bool,
    },
}

/// Moves `view` to `v` with what `c` read; false when it cannot (an
/// `Advance` read from a version the view is no longer at or past: another
/// connection reloaded it at an older snapshot meanwhile). A view already
/// at or past `v` stays as it is; one that moved past the catch-up's start
/// meanwhile takes only the newer records.
fn apply_catch_up(view: &mut DbView, id: DbId, c: CatchUp, v: Version, got_at: Instant) -> bool {
    if view.known >= v {
        return true;
    }
    let finished = match c {
        CatchUp::Load {
            size,
            token,
            finished,
        } => {
            view.reset();
            view.page_count = size.count;
            view.page_size = size.page_size;
            view.last_token = token;
            view.last_change = Some(after_version(v));
            finished
        }
        CatchUp::Advance { from, .. } if view.known < from || view.known == Version::ZERO => {
            return false
        }
        CatchUp::Advance {
            records, finished, ..
        } => {
            let seen = view.known;
            for (vs, rec) in records.into_iter().filter(|(vs, _)| vs.version() > seen) {
                apply_record(view, id, vs, rec);
            }
            finished
        }
    };
    view.known = v;
    // After finishing a page index, `v` predates it: no reuse.
    view.known_at = (!finished).then_some(got_at);
    true
}

/// One change-log record, into the view.
fn apply_record(view: &mut DbView, id: DbId, vs: Versionstamp, rec: LogRecord) {
    view.last_change = Some(vs);
    if rec.large {
        view.last_token = Some((id, rec.token));
    }
    for &p in rec.pages.iter().chain(rec.absent.iter()) {
        view.latest.insert(p, Latest::At(id, vs));
    }
    if let Some(c) = rec.page_count {
        view.page_count = c;
    }
    if let Some(s) = rec.page_size {
        view.page_size = Some(s);
    }
}
