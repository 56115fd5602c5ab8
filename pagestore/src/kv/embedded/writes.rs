//! A transaction's buffered writes and their read-your-writes view, with
//! FDB's rules for which reads they answer, which reads still need a
//! read-conflict range, and which keys are unreadable until commit.

use super::atomic;
use super::conflict_ranges::{normalize, single_key_range, subtract, KeyRange};
use crate::kv::overlay::{KeyOverlay, Seen};
use crate::kv::{KvError, MutationType};

/// One buffered mutation, applied at commit in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mutation {
    /// Sets a key.
    Set(Vec<u8>, Vec<u8>),
    /// Clears a key.
    Clear(Vec<u8>),
    /// Clears `[begin, end)`.
    ClearRange(Vec<u8>, Vec<u8>),
    /// An atomic op on a key (versionstamp ops carry their offset suffix
    /// until commit resolves them into `Set`s).
    Atomic(Vec<u8>, Vec<u8>, MutationType),
}

/// What the transaction knows about one key it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Its value no matter what the store holds (set, clear, or an atomic
    /// op on a key whose value is known).
    Value(Option<Vec<u8>>),
    /// Atomic ops to apply, in order, to the store's value.
    Ops(Vec<(MutationType, Vec<u8>)>),
    /// Written with a versionstamped value: unreadable until commit.
    Unreadable,
}

/// The answer of the write buffer for one key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// Not written: read the store.
    Unmodified,
    /// Known without the store.
    Known(Option<Vec<u8>>),
    /// Read the store, then apply these ops.
    Ops(&'a [(MutationType, Vec<u8>)]),
    /// accessed_unreadable (1036).
    Unreadable,
}

/// Buffered writes of one transaction.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    mutations: Vec<Mutation>,
    overlay: KeyOverlay<Pending>,
    /// A parameter error found when an op was added, reported at commit
    /// (as FDB's client does).
    deferred: Option<KvError>,
    /// Every range cleared (normalised on use): reads there are answered
    /// here and need no read-conflict range.
    cleared: Vec<KeyRange>,
    /// The ranges versionstamped keys may land on (FDB's
    /// `getVersionstampKeyRange`), minus what was cleared since: reads
    /// there fail with 1036, as in FDB's read-your-writes map.
    stamped_ranges: Vec<KeyRange>,
}

impl WriteBuffer {
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.mutations
            .push(Mutation::Set(key.to_vec(), value.to_vec()));
        // FDB's write map keeps a key unreadable through later writes
        // (`is_unreadable = it.is_unreadable() || ...`); only a clear
        // resets it.
        let next = match self.overlay.get(key) {
            Seen::Written(Pending::Unreadable) => Pending::Unreadable,
            _ => Pending::Value(Some(value.to_vec())),
        };
        self.overlay.insert(key, next);
    }

    pub(crate) fn clear(&mut self, key: &[u8]) {
        self.mutations.push(Mutation::Clear(key.to_vec()));
        self.overlay.insert(key, Pending::Value(None));
        self.unstamp(&[single_key_range(key)]);
    }

    pub(crate) fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        self.mutations
            .push(Mutation::ClearRange(begin.to_vec(), end.to_vec()));
        self.overlay.clear_range(begin, end);
        let r = (begin.to_vec(), end.to_vec());
        self.unstamp(std::slice::from_ref(&r));
        self.cleared.push(r);
    }

    /// Records the range a versionstamped key may land on as unreadable.
    /// (Kept unsorted: a commit adds one per versionstamped key and rarely
    /// reads after them, so lookups scan.)
    pub(crate) fn stamped_range(&mut self, range: KeyRange) {
        self.stamped_ranges.push(range);
    }

    /// A clear makes keys readable again: their value is known (absent).
    fn unstamp(&mut self, cleared: &[KeyRange]) {
        if !self.stamped_ranges.is_empty() {
            let all = normalize(std::mem::take(&mut self.stamped_ranges));
            self.stamped_ranges = subtract(&all, cleared);
        }
    }

    /// Whether `[begin, end)` meets a range a versionstamped key may land on.
    pub(crate) fn meets_stamped_range(&self, begin: &[u8], end: &[u8]) -> bool {
        self.stamped_ranges
            .iter()
            .any(|(b, e)| b.as_slice() < end && e.as_slice() > begin)
    }

    /// The read-conflict ranges of a read that covered `covered`: FDB adds
    /// none for keys the transaction's own writes fully determine (set,
    /// cleared, or an atomic op on such a value), only for keys whose value
    /// came from the store (untouched, or atomic ops over the store's).
    pub(crate) fn read_conflicts(&self, covered: KeyRange) -> Vec<KeyRange> {
        let (begin, end) = (&covered.0, &covered.1);
        if begin >= end {
            return Vec::new();
        }
        let mut known: Vec<KeyRange> = self
            .cleared
            .iter()
            .filter(|(b, e)| b < end && e > begin)
            .cloned()
            .collect();
        known.extend(
            self.overlay
                .written(begin, end)
                .filter(|(_, p)| !matches!(p, Pending::Ops(_)))
                .map(|(k, _)| single_key_range(k)),
        );
        if known.is_empty() {
            return vec![covered];
        }
        subtract(&[covered], &normalize(known))
    }

    pub(crate) fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType) {
        match op {
            MutationType::SetVersionstampedKey => {
                if let Err(e) = atomic::placeholder_offset(key) {
                    self.defer(e);
                }
            }
            MutationType::SetVersionstampedValue => {
                if let Err(e) = atomic::placeholder_offset(param) {
                    self.defer(e);
                }
                self.overlay.insert(key, Pending::Unreadable);
            }
            _ => {
                let next = match self.overlay.take(key) {
                    Seen::Written(Pending::Value(v)) => {
                        Pending::Value(atomic::apply(op, v.as_deref(), param))
                    }
                    Seen::Written(Pending::Ops(mut ops)) => {
                        ops.push((op, param.to_vec()));
                        Pending::Ops(ops)
                    }
                    Seen::Written(Pending::Unreadable) => Pending::Unreadable,
                    Seen::Cleared => Pending::Value(atomic::apply(op, None, param)),
                    Seen::Untouched => Pending::Ops(vec![(op, param.to_vec())]),
                };
                self.overlay.insert(key, next);
            }
        }
        self.mutations
            .push(Mutation::Atomic(key.to_vec(), param.to_vec(), op));
    }

    fn defer(&mut self, e: KvError) {
        if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }

    /// What the transaction's own writes say about `key`.
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        if self
            .stamped_ranges
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
        {
            return Lookup::Unreadable;
        }
        match self.overlay.get(key) {
            Seen::Written(Pending::Value(v)) => Lookup::Known(v.clone()),
            Seen::Written(Pending::Ops(ops)) => Lookup::Ops(ops),
            Seen::Written(Pending::Unreadable) => Lookup::Unreadable,
            Seen::Cleared => Lookup::Known(None),
            Seen::Untouched => Lookup::Unmodified,
        }
    }

    /// Written keys of `[begin, end)` in the requested order.
    pub(crate) fn overlay_range(
        &self,
        begin: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> Vec<(Vec<u8>, Pending)> {
        let it = self
            .overlay
            .written(begin, end)
            .map(|(k, p)| (k.clone(), p.clone()));
        if reverse {
            it.rev().collect()
        } else {
            it.collect()
        }
    }

    /// Whether `key` lies in a range this transaction cleared.
    pub(crate) fn is_cleared(&self, key: &[u8]) -> bool {
        self.overlay.is_cleared(key)
    }

    pub(crate) fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }

    pub(crate) fn into_mutations(self) -> Vec<Mutation> {
        self.mutations
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    pub(crate) fn deferred_error(&self) -> Option<&KvError> {
        self.deferred.as_ref()
    }
}

/// Applies buffered atomic ops to the store's value.
pub(crate) fn apply_ops(base: Option<Vec<u8>>, ops: &[(MutationType, Vec<u8>)]) -> Option<Vec<u8>> {
    ops.iter()
        .fold(base, |acc, (op, p)| atomic::apply(*op, acc.as_deref(), p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &str, e: &str) -> KeyRange {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn stamped_ranges_are_unreadable_until_cleared() {
        let mut w = WriteBuffer::default();
        w.stamped_range(r("l/1", "l/9"));
        w.stamped_range(r("m/1", "m/9"));
        assert_eq!(w.lookup(b"l/5"), Lookup::Unreadable);
        assert_eq!(w.lookup(b"l/9"), Lookup::Unmodified);
        assert!(w.meets_stamped_range(b"a", b"l/2"));
        assert!(!w.meets_stamped_range(b"l/9", b"m/1"));
        w.clear_range(b"l/", b"l/6");
        assert_eq!(w.lookup(b"l/5"), Lookup::Known(None));
        assert_eq!(w.lookup(b"l/6"), Lookup::Unreadable);
        w.clear(b"m/5");
        assert_eq!(w.lookup(b"m/5"), Lookup::Known(None));
        assert_eq!(w.lookup(b"m/6"), Lookup::Unreadable);
    }

    #[test]
    fn read_conflicts_skip_what_own_writes_determine() {
        let mut w = WriteBuffer::default();
        w.clear_range(b"b", b"d");
        w.set(b"f", b"1");
        w.atomic_op(b"g", &[1], MutationType::Add);
        w.atomic_op(b"c", &[1], MutationType::Add);
        assert_eq!(
            w.read_conflicts(r("a", "z")),
            vec![
                r("a", "b"),
                (b"d".to_vec(), b"f".to_vec()),
                (b"f\0".to_vec(), b"z".to_vec())
            ]
        );
        assert_eq!(w.read_conflicts(r("b", "c")), vec![]);
        assert_eq!(w.read_conflicts(r("x", "z")), vec![r("x", "z")]);
    }

    #[test]
    fn ryw_tracks_sets_clears_and_ops() {
        let mut w = WriteBuffer::default();
        w.set(b"a", b"1");
        w.clear_range(b"a", b"c");
        assert_eq!(w.lookup(b"a"), Lookup::Known(None));
        assert_eq!(w.lookup(b"b"), Lookup::Known(None));
        assert_eq!(w.lookup(b"c"), Lookup::Unmodified);
        w.atomic_op(b"b", &[2], MutationType::Add);
        assert_eq!(w.lookup(b"b"), Lookup::Known(Some(vec![2])));
        w.atomic_op(b"x", &[2], MutationType::Add);
        w.atomic_op(b"x", &[3], MutationType::Add);
        match w.lookup(b"x") {
            Lookup::Ops(ops) => assert_eq!(apply_ops(Some(vec![1]), ops), Some(vec![6])),
            other => panic!("{other:?}"),
        }
        w.atomic_op(
            b"v",
            b"0123456789\0\0\0\0",
            MutationType::SetVersionstampedValue,
        );
        assert_eq!(w.lookup(b"v"), Lookup::Unreadable);
        // Still unreadable after a set (as in FDB); readable once cleared.
        w.set(b"v", b"plain");
        assert_eq!(w.lookup(b"v"), Lookup::Unreadable);
        w.clear(b"v");
        assert_eq!(w.lookup(b"v"), Lookup::Known(None));
        assert!(w.deferred_error().is_none());
        w.atomic_op(b"bad", b"", MutationType::SetVersionstampedKey);
        assert_eq!(w.deferred_error().map(|e| e.code), Some(2000));
        assert_eq!(w.mutations().len(), 9);
    }
}
