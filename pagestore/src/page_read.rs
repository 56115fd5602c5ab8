//! Reading pages at a snapshot: the page cache and this process's view
//! first, then one batched store read for the rest (plus one for content
//! uploaded by large commits). For a fork, each page is looked up in every
//! layer at once (the fork, then its ancestors as of the fork versions):
//! the nearest layer holding a version wins.

#![warn(clippy::too_many_lines)]

use std::sync::Arc;

use tracing::debug_span;

use crate::database::Database;
use crate::encoding::{decode_horizon, PageRef};
use crate::error::{Error, Result};
use crate::ids::{DbId, PageNo, Token};
use crate::keys::DbKeys;
use crate::kv::{RangeOption, ReadRequest, ReadResult, Version, Versionstamp};
use crate::read_set::ReadSet;
use crate::sync::lock;
use crate::view::{DbView, Latest};

/// A page version and the database (layer) that holds it.
type Owned = (DbId, Versionstamp);

/// A page the cache could not answer: (index in the answer, page, its
/// newest version as the view knows it, if it does).
type Missing = (usize, PageNo, Option<Owned>);

/// A page as the store answered: (index, page, version found, content).
type Found = (usize, PageNo, Option<Owned>, Option<Content>);

/// A page's content as its index entry gives it.
enum Content {
    /// The bytes (empty: the page is absent at this version).
    Page(Arc<[u8]>),
    /// Uploaded ahead by a large commit under this token.
    Uploaded(Token),
}

impl Content {
    /// Decodes a page value, copying an inline page once (into the buffer
    /// the cache keeps).
    fn decode(v: &[u8]) -> Result<Content> {
        Ok(match PageRef::decode(v)? {
            PageRef::Absent => Content::Page(Arc::from(&[][..])),
            PageRef::Inline(page) => Content::Page(Arc::from(page)),
            PageRef::Uploaded(tok) => Content::Uploaded(tok),
        })
    }
}

/// Requests for uploaded contents, and the token of the last uploaded page
/// seen.
type UploadReads = (Vec<ReadRequest>, Option<(DbId, Token)>);

/// The upload token of a recent large commit whose content is requested
/// speculatively, with the keys of its layer.
type Guess<'a> = (DbId, Token, &'a DbKeys);

/// Requests every batch starts with (see [`PageRead::check_requests`]).
const CHECKS: usize = 2;

/// Pages one read asks for, at one snapshot of one database.
pub(crate) struct PageRead<'a> {
    db: &'a Database,
    snapshot: Version,
    /// A time-travel read (its `SnapshotTooOld` is not retryable).
    time_travel: bool,
}

impl<'a> PageRead<'a> {
    pub fn new(db: &'a Database, snapshot: Version, time_travel: bool) -> Self {
        PageRead {
            db,
            snapshot,
            time_travel,
        }
    }

    /// The pages `pgnos` at the snapshot (None: absent), reading the store
    /// through `reads` for what the cache does not hold.
    pub fn pages(&self, reads: &mut ReadSet, pgnos: &[PageNo]) -> Result<Vec<Option<Arc<[u8]>>>> {
        let inner = &self.db.store.inner;
        let mut out: Vec<Option<Arc<[u8]>>> = vec![None; pgnos.len()];
        let (missing, guess) = self.cached(pgnos, &mut out);
        if missing.is_empty() {
            return Ok(out);
        }
        inner.cache.miss(missing.len() as u64);
        let span = debug_span!("read_pages", database = %self.db.name, version = self.snapshot.get(), pages = missing.len());
        let _g = span.enter();
        let guess = guess.and_then(|(owner, tok)| self.layer_keys(owner).map(|k| (owner, tok, k)));
        let requests = self.page_requests(&missing, guess.as_ref())?;
        let mut answers = self.read_checked(reads, &requests)?;
        let mut found = self.parse_found(&missing, &mut answers)?;
        let guessed = parse_guessed(guess.is_some(), missing.len(), &mut answers)?;
        let (blob_requests, seen_token) = self.use_guesses(&mut found, guessed, guess.as_ref())?;
        let blobs = if blob_requests.is_empty() {
            Vec::new()
        } else {
            let blob_requests: Vec<ReadRequest> = self
                .check_requests()
                .into_iter()
                .chain(blob_requests)
                .collect();
            self.read_checked(reads, &blob_requests)?.collect()
        };
        self.learn(found, blobs, seen_token, &mut out)?;
        Ok(out)
    }

    /// Page `p` at the snapshot (None: absent): a warm read is one lookup
    /// in the view and one in the cache, nothing allocated.
    pub fn page(&self, reads: &mut ReadSet, p: PageNo) -> Result<Option<Arc<[u8]>>> {
        match self.cached_page(p) {
            Some(hit) => Ok(hit),
            None => Ok(self.pages(reads, &[p])?.pop().flatten()),
        }
    }

    /// Loads the pages `pgnos` into the cache: one store read for those the
    /// view and cache do not hold, nothing else for the rest (read-ahead
    /// asks mostly for cached pages when the cache is warm).
    pub fn prefetch(&self, reads: &mut ReadSet, pgnos: &[PageNo]) -> Result<()> {
        let cache = &self.db.store.inner.cache;
        let missing: Vec<PageNo> = {
            let view = lock(&self.db.view);
            let cached = |p: PageNo| match newest_known(&view, self.snapshot, p) {
                Some(Latest::Never) => true,
                Some(Latest::At(owner, vs)) => cache.contains(owner, p, &vs),
                None => false,
            };
            pgnos.iter().copied().filter(|&p| !cached(p)).collect()
        };
        cache.hits((pgnos.len() - missing.len()) as u64);
        if missing.is_empty() {
            return Ok(());
        }
        self.pages(reads, &missing).map(|_| ())
    }

    /// Page `p` when the view and the cache know it: `Some(None)` for an
    /// absent page, `None` when the store must be asked.
    fn cached_page(&self, p: PageNo) -> Option<Option<Arc<[u8]>>> {
        let cache = &self.db.store.inner.cache;
        let known = newest_known(&lock(&self.db.view), self.snapshot, p)?;
        let data = match known {
            Latest::Never => None,
            Latest::At(owner, vs) => Some(cache.get(owner, p, &vs)?),
        };
        cache.hit();
        Some(data.filter(|d| !d.is_empty()))
    }

    /// Fills `out` from the cache where the view knows the page's newest
    /// version; returns the pages left and the view's last upload token.
    fn cached(
        &self,
        pgnos: &[PageNo],
        out: &mut [Option<Arc<[u8]>>],
    ) -> (Vec<Missing>, Option<(DbId, Token)>) {
        let cache = &self.db.store.inner.cache;
        let mut missing: Vec<Missing> = Vec::new();
        let view = lock(&self.db.view);
        for (i, &p) in pgnos.iter().enumerate() {
            match newest_known(&view, self.snapshot, p) {
                Some(Latest::Never) => cache.hit(),
                Some(Latest::At(owner, vs)) => match cache.get(owner, p, &vs) {
                    Some(d) => {
                        cache.hit();
                        out[i] = (!d.is_empty()).then_some(d);
                    }
                    None => missing.push((i, p, Some((owner, vs)))),
                },
                None => missing.push((i, p, None)),
            }
        }
        (missing, view.last_token)
    }

    /// The keys of layer `owner`.
    fn layer_keys(&self, owner: DbId) -> Option<&'a DbKeys> {
        self.db
            .layers
            .iter()
            .find(|l| l.id == owner)
            .map(|l| &l.keys)
    }

    /// The answers to `requests`, whose first [`CHECKS`] are
    /// [`PageRead::check_requests`], in one store read: those two are
    /// checked, or not asked when a batch at the same read version found
    /// them fine (one read version always gives the same answers, and a
    /// transaction's reads share one: a cold point read is 4 batches).
    fn read_checked(
        &self,
        reads: &mut ReadSet,
        requests: &[ReadRequest],
    ) -> Result<std::vec::IntoIter<ReadResult>> {
        let (rv, known, answers) = reads.store_read(&self.db.store.inner.kv, |t| {
            // Set before this runs: no round trip.
            let rv = t.read_version()?;
            let known = self.verified(rv);
            let batch = if known {
                requests.get(CHECKS..).unwrap_or_default()
            } else {
                requests
            };
            Ok((rv, known, t.get_batch(batch, true)?))
        })?;
        let mut answers = answers.into_iter();
        if !known {
            let horizon = self.check_horizon(&mut answers)?;
            self.check_exists(&mut answers)?;
            lock(&self.db.view).verified = Some((rv, horizon));
        }
        Ok(answers)
    }

    /// Whether a batch at read version `rv` found the database there, with
    /// GC's horizon at or below this snapshot.
    fn verified(&self, rv: Version) -> bool {
        matches!(lock(&self.db.view).verified, Some((v, h)) if v == rv && h <= self.snapshot)
    }

    /// What every batch of page reads checks first (see
    /// [`PageRead::read_checked`]): GC's horizon (a snapshot older than it
    /// may be missing versions, which must be an error, not wrong pages),
    /// and the database's catalog entry (see [`PageRead::check_exists`]).
    fn check_requests(&self) -> [ReadRequest; CHECKS] {
        [
            ReadRequest::Get(self.db.keys.horizon()),
            ReadRequest::Get(self.db.store.inner.keys.meta(self.db.id)),
        ]
    }

    /// The checks, then per page its known version or, in every layer, the
    /// newest version at the snapshot, then the guessed contents.
    fn page_requests(
        &self,
        missing: &[Missing],
        guess: Option<&Guess<'_>>,
    ) -> Result<Vec<ReadRequest>> {
        let mut requests: Vec<ReadRequest> = Vec::with_capacity(CHECKS + missing.len());
        requests.extend(self.check_requests());
        for &(_, p, known) in missing {
            match known {
                Some((owner, vs)) => {
                    let keys = self
                        .layer_keys(owner)
                        .ok_or_else(|| Error::corrupt("cached page of an unknown layer"))?;
                    requests.push(ReadRequest::Get(keys.page(p, &vs)));
                }
                None => {
                    for l in self.db.layers.iter() {
                        let (b, e) = l.keys.page_at(p, self.snapshot.min(l.cap));
                        requests.push(ReadRequest::Range(
                            RangeOption::new(b, e).limit(1).reverse(),
                        ));
                    }
                }
            }
        }
        // Speculative content reads: if these pages come from the same large
        // commit as the last such page, their content arrives in this same
        // round trip (a wrong guess costs an empty answer per page).
        if let Some((_, tok, keys)) = guess {
            for &(_, p, _) in missing {
                requests.push(ReadRequest::Get(keys.blob(tok, p)));
            }
        }
        Ok(requests)
    }

    /// The answer about the database's catalog entry, read with every batch
    /// of page reads: a database dropped after the snapshot has lost its
    /// keys, and a read at a newer read version (the snapshot's is too old,
    /// or the store's history of the clear is gone) must fail with
    /// `Dropped`, not serve holes or "corrupt" errors.
    fn check_exists(&self, answers: &mut impl Iterator<Item = ReadResult>) -> Result<()> {
        match answers.next() {
            Some(ReadResult::Value(meta)) => self.db.check_exists(meta.as_deref(), false),
            _ => Err(Error::corrupt("batch answer")),
        }
    }

    /// The first answer: GC's horizon, which must not be past the snapshot.
    fn check_horizon(&self, answers: &mut impl Iterator<Item = ReadResult>) -> Result<Version> {
        let horizon = match answers.next() {
            Some(ReadResult::Value(v)) => decode_horizon(v.as_deref())?,
            _ => return Err(Error::corrupt("batch answer")),
        };
        self.db
            .check_horizon(self.snapshot, horizon, self.time_travel)?;
        Ok(horizon)
    }

    /// The answers about each missing page: the version found (nearest
    /// layer first) and its value.
    fn parse_found(
        &self,
        missing: &[Missing],
        answers: &mut impl Iterator<Item = ReadResult>,
    ) -> Result<Vec<Found>> {
        let mut found: Vec<Found> = Vec::new();
        for &(i, p, known) in missing {
            match known {
                Some(k) => match answers.next() {
                    Some(ReadResult::Value(Some(v))) => {
                        found.push((i, p, Some(k), Some(Content::decode(&v)?)))
                    }
                    Some(ReadResult::Value(None)) => {
                        return Err(Error::corrupt("page version listed but missing"))
                    }
                    _ => return Err(Error::corrupt("batch answer")),
                },
                None => {
                    let hit = self.nearest_layer(answers)?;
                    match hit {
                        Some((k, v)) => found.push((i, p, Some(k), Some(v))),
                        None => found.push((i, p, None, None)),
                    }
                }
            }
        }
        Ok(found)
    }

    /// One page's answers from every layer: the nearest layer's version.
    fn nearest_layer(
        &self,
        answers: &mut impl Iterator<Item = ReadResult>,
    ) -> Result<Option<(Owned, Content)>> {
        let mut hit = None;
        for l in self.db.layers.iter() {
            let Some(ReadResult::Range(r)) = answers.next() else {
                return Err(Error::corrupt("batch answer"));
            };
            if hit.is_none() {
                if let Some(kv) = r.kvs.into_iter().next() {
                    let (_, vs) = l
                        .keys
                        .parse_page(&kv.key)
                        .ok_or_else(|| Error::corrupt("page key"))?;
                    hit = Some(((l.id, vs), Content::decode(&kv.value)?));
                }
            }
        }
        Ok(hit)
    }

    /// Puts guessed content in place of uploaded values it matches; returns
    /// the requests for the other uploaded contents and the token of the
    /// last uploaded page seen.
    fn use_guesses(
        &self,
        found: &mut [Found],
        mut guessed: Vec<Option<Vec<u8>>>,
        guess: Option<&Guess<'_>>,
    ) -> Result<UploadReads> {
        let mut blob_requests: Vec<ReadRequest> = Vec::new();
        let mut seen_token = None;
        for (j, (_, p, k, v)) in found.iter_mut().enumerate() {
            if let (Some((owner, _)), Some(Content::Uploaded(tok))) = (&k, &v) {
                seen_token = Some((*owner, *tok));
                let hit = matches!(guess, Some((o, t, _)) if o == owner && t == tok);
                if let Some(content) = guessed.get_mut(j).and_then(Option::take).filter(|_| hit) {
                    *v = Some(Content::Page(Arc::from(content)));
                    continue;
                }
                let keys = self
                    .layer_keys(*owner)
                    .ok_or_else(|| Error::corrupt("unknown layer"))?;
                blob_requests.push(ReadRequest::Get(keys.blob(tok, *p)));
            }
        }
        Ok((blob_requests, seen_token))
    }

    /// Fills `out` from what the store answered, and caches it: page
    /// contents always, newest versions in the view when it is at the
    /// snapshot.
    fn learn(
        &self,
        found: Vec<Found>,
        blobs: Vec<ReadResult>,
        seen_token: Option<(DbId, Token)>,
        out: &mut [Option<Arc<[u8]>>],
    ) -> Result<()> {
        let inner = &self.db.store.inner;
        let mut blobs = blobs.into_iter();
        let mut view = lock(&self.db.view);
        if seen_token.is_some() {
            view.last_token = seen_token;
        }
        let learn = view.known == self.snapshot;
        for (i, p, k, v) in found {
            let data: Arc<[u8]> = match v {
                None => {
                    if learn {
                        view.latest.insert(p, Latest::Never);
                    }
                    continue;
                }
                Some(Content::Page(data)) => data,
                Some(Content::Uploaded(_)) => match blobs.next() {
                    Some(ReadResult::Value(Some(b))) => Arc::from(b),
                    _ => return Err(Error::corrupt("uploaded page content missing")),
                },
            };
            if let Some((owner, vs)) = k {
                inner.cache.insert(owner, p, vs, data.clone());
                if learn {
                    view.latest.insert(p, Latest::At(owner, vs));
                }
            }
            out[i] = (!data.is_empty()).then_some(data);
        }
        Ok(())
    }
}

/// The newest version of page `p` at `snapshot` as `view` knows it. The
/// view knows every page's newest version as of `view.known` (for the pages
/// it lists), so when `known` is at or past the snapshot, a version at or
/// below the snapshot is also the newest at the snapshot; a newer one says
/// nothing about which version the snapshot sees.
fn newest_known(view: &DbView, snapshot: Version, p: PageNo) -> Option<Latest> {
    if view.known < snapshot {
        return None;
    }
    match view.latest.get(&p).copied()? {
        Latest::At(_, vs) if vs.version() > snapshot => None,
        known => Some(known),
    }
}

/// The speculative contents, one answer per missing page (when guessed).
fn parse_guessed(
    guessed: bool,
    missing: usize,
    answers: &mut impl Iterator<Item = ReadResult>,
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    if guessed {
        for _ in 0..missing {
            match answers.next() {
                Some(ReadResult::Value(v)) => out.push(v),
                _ => return Err(Error::corrupt("batch answer")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(v: u64) -> Latest {
        Latest::At(DbId::new(1), Versionstamp::new(Version::new(v), 0))
    }

    /// A view that has read the change log up to version 100, by which
    /// page 0 was last written at 50, page 1 at 100, page 2 never.
    fn view() -> DbView {
        let mut v = DbView {
            known: Version::new(100),
            ..DbView::default()
        };
        v.latest.insert(PageNo::new(0), at(50));
        v.latest.insert(PageNo::new(1), at(100));
        v.latest.insert(PageNo::new(2), Latest::Never);
        v
    }

    #[test]
    fn the_view_answers_only_for_snapshots_it_has_passed() {
        let v = view();
        let known = |snap: u64, p: u32| newest_known(&v, Version::new(snap), PageNo::new(p));
        // At or below `known`, a version at or below the snapshot is the
        // newest there.
        assert_eq!(known(100, 0), Some(at(50)));
        assert_eq!(known(60, 0), Some(at(50)));
        assert_eq!(known(100, 1), Some(at(100)));
        assert_eq!(known(100, 2), Some(Latest::Never));
        assert_eq!(known(10, 2), Some(Latest::Never));
        // A version newer than the snapshot: which one the snapshot sees
        // is unknown (never an older guess, never the newer one).
        assert_eq!(known(99, 1), None);
        // A snapshot past `known`: the page may have changed since.
        assert_eq!(known(101, 0), None);
        assert_eq!(known(101, 2), None);
        // A page the view has not seen.
        assert_eq!(known(100, 3), None);
    }
}
