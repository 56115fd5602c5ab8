//! What a transaction's own writes say about its keys: the keys it wrote
//! (each with a backend-specific state `P`) and the ranges it cleared.
//!
//! The embedded backend's write buffer keeps what it needs to answer reads
//! here; the remote client keeps a lighter mirror in the same structure to
//! know which reads reach the store.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::kv::key_range::RangeSet;

/// Written keys and cleared ranges of one transaction.
#[derive(Debug)]
pub(crate) struct KeyOverlay<P> {
    keys: BTreeMap<Vec<u8>, P>,
    cleared: RangeSet,
}

impl<P> Default for KeyOverlay<P> {
    fn default() -> Self {
        KeyOverlay {
            keys: BTreeMap::new(),
            cleared: RangeSet::default(),
        }
    }
}

/// What the overlay knows about one key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen<P> {
    /// Written since the transaction began (or since it cleared the key).
    Written(P),
    /// In a range the transaction cleared, not written since.
    Cleared,
    /// Neither written nor cleared: the store's value stands.
    Untouched,
}

impl<P> KeyOverlay<P> {
    /// Records the state of a written key.
    pub(crate) fn insert(&mut self, key: &[u8], state: P) {
        self.keys.insert(key.to_vec(), state);
    }

    /// What is known about `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Seen<&P> {
        match self.keys.get(key) {
            Some(p) => Seen::Written(p),
            None if self.cleared.contains(key) => Seen::Cleared,
            None => Seen::Untouched,
        }
    }

    /// What is known about `key`, taking a written key's state out (to
    /// [`KeyOverlay::insert`] its next one).
    pub(crate) fn take(&mut self, key: &[u8]) -> Seen<P> {
        match self.keys.remove(key) {
            Some(p) => Seen::Written(p),
            None if self.cleared.contains(key) => Seen::Cleared,
            None => Seen::Untouched,
        }
    }

    /// Clears `[begin, end)`: forgets the written keys in it and records
    /// the range as cleared. Empty ranges do nothing.
    pub(crate) fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self.written(begin, end).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.keys.remove(&k);
        }
        self.cleared.insert(begin, end);
    }

    /// Whether `key` lies in a range this transaction cleared.
    pub(crate) fn is_cleared(&self, key: &[u8]) -> bool {
        self.cleared.contains(key)
    }

    /// The written keys of `[begin, end)`, ascending (`begin < end`).
    pub(crate) fn written(
        &self,
        begin: &[u8],
        end: &[u8],
    ) -> impl DoubleEndedIterator<Item = (&Vec<u8>, &P)> {
        self.keys
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_forget_written_keys_until_written_again() {
        let mut o = KeyOverlay::default();
        o.insert(b"a", 1);
        o.insert(b"c", 3);
        o.clear_range(b"a", b"c");
        assert_eq!(o.get(b"a"), Seen::Cleared);
        assert_eq!(o.get(b"b"), Seen::Cleared);
        assert_eq!(o.get(b"c"), Seen::Written(&3));
        assert_eq!(o.get(b"d"), Seen::Untouched);
        o.insert(b"b", 2);
        assert_eq!(o.take(b"b"), Seen::Written(2));
        assert_eq!(o.take(b"b"), Seen::Cleared);
        assert!(o.is_cleared(b"b") && !o.is_cleared(b"c"));
        o.clear_range(b"z", b"a");
        assert_eq!(o.written(b"a", b"z").count(), 1);
    }
}
