//! A read at one read version: a redb snapshot of the latest values with
//! the in-memory MVCC history laid over it (see [`super::mvcc`]).

use std::cmp::Ordering;
use std::iter::Peekable;
use std::sync::RwLock;

use super::durable::{Rows, Snapshot};
use super::last_rows::Row;
use super::mvcc::{History, TooOld};
use crate::kv::{KvError, KvResult, Version};

/// The store as of one read version.
pub(crate) struct View<'a> {
    snapshot: Snapshot,
    read_version: Version,
    history: &'a RwLock<History>,
}

impl<'a> View<'a> {
    pub(crate) fn new(
        snapshot: Snapshot,
        read_version: Version,
        history: &'a RwLock<History>,
    ) -> Self {
        View {
            snapshot,
            read_version,
            history,
        }
    }

    fn history(&self) -> std::sync::RwLockReadGuard<'_, History> {
        crate::sync::read(self.history)
    }

    /// 1007 for a read whose history was dropped (see [`super::mvcc`]).
    fn too_old(&self, t: TooOld) -> KvError {
        KvError::new(
            KvError::TRANSACTION_TOO_OLD,
            format!(
                "read version {} is older than the MVCC history kept in memory \
                 (the previous values of commit {} were dropped for the history's byte bound, \
                 or by a large range clear)",
                self.read_version, t.dropped
            ),
        )
    }

    /// The value of `key` at the read version.
    pub(crate) fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        if self.read_version < self.snapshot.version {
            let old = self
                .history()
                .value_at(key, self.read_version, self.snapshot.version)
                .map_err(|t| self.too_old(t))?;
            if let Some(old) = old {
                return Ok(old);
            }
        }
        self.snapshot.get(key)
    }

    /// The last row of each of `ranges` (ascending, disjoint) at the read
    /// version, in one walk; None when the read version is below the
    /// snapshot's (the history's values would have to be laid over).
    pub(crate) fn last_rows(
        &self,
        ranges: &[(&[u8], &[u8])],
    ) -> KvResult<Option<Vec<Option<Row>>>> {
        if self.read_version < self.snapshot.version {
            return Ok(None);
        }
        self.snapshot.last_rows(ranges).map(Some)
    }

    /// Rows of `[begin, end)` at the read version, lazily.
    pub(crate) fn range(&self, begin: &[u8], end: &[u8], reverse: bool) -> KvResult<Rows> {
        let base = self.snapshot.range(begin, end, reverse)?;
        // At the snapshot's own version nothing is overridden: no need for
        // the history's lock (a cold page read is one range read per page).
        if self.read_version >= self.snapshot.version {
            return Ok(base);
        }
        let mut overrides = self
            .history()
            .overrides(begin, end, self.read_version, self.snapshot.version)
            .map_err(|t| self.too_old(t))?;
        if overrides.is_empty() {
            return Ok(base);
        }
        if reverse {
            overrides.reverse();
        }
        Ok(Box::new(Overridden {
            base: base.peekable(),
            over: overrides.into_iter().peekable(),
            reverse,
        }))
    }
}

/// Which of two merged streams holds the next key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Only the base stream.
    Base,
    /// Only the overriding stream.
    Over,
    /// Both, with the same key: the override wins.
    Both,
}

/// Orders two keys in the direction of a scan.
pub(crate) fn next_side(base: &[u8], over: &[u8], reverse: bool) -> Side {
    let ord = base.cmp(over);
    match (ord, reverse) {
        (Ordering::Equal, _) => Side::Both,
        (Ordering::Less, false) | (Ordering::Greater, true) => Side::Base,
        _ => Side::Over,
    }
}

/// Keys replaced (`Some`) or hidden (`None`), in scan order.
type Overrides = std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>;

/// Base rows with some keys replaced (`Some`) or hidden (`None`).
struct Overridden {
    base: Peekable<Rows>,
    over: Peekable<Overrides>,
    reverse: bool,
}

impl Iterator for Overridden {
    type Item = KvResult<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let side = match (self.base.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => return self.base.next(),
                (None, Some(_)) => Side::Over,
                (Some(Ok((bk, _))), Some((ok, _))) => next_side(bk, ok, self.reverse),
            };
            if side == Side::Base {
                return self.base.next();
            }
            if side == Side::Both {
                self.base.next();
            }
            match self.over.next() {
                Some((k, Some(v))) => return Some(Ok((k, v))),
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_direction() {
        assert_eq!(next_side(b"a", b"b", false), Side::Base);
        assert_eq!(next_side(b"a", b"b", true), Side::Over);
        assert_eq!(next_side(b"b", b"b", true), Side::Both);
    }

    #[test]
    fn overrides_replace_and_hide() {
        let base: Rows = Box::new(
            vec![
                Ok((b"a".to_vec(), b"1".to_vec())),
                Ok((b"c".to_vec(), b"3".to_vec())),
                Ok((b"e".to_vec(), b"5".to_vec())),
            ]
            .into_iter(),
        );
        let over = vec![
            (b"b".to_vec(), Some(b"old-b".to_vec())),
            (b"c".to_vec(), None),
            (b"e".to_vec(), Some(b"old-e".to_vec())),
        ];
        let rows: Vec<_> = Overridden {
            base: base.peekable(),
            over: over.into_iter().peekable(),
            reverse: false,
        }
        .map(|r| r.unwrap())
        .collect();
        assert_eq!(
            rows,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"old-b".to_vec()),
                (b"e".to_vec(), b"old-e".to_vec()),
            ]
        );
    }
}
