//! A transaction's size and read accounting by the embedded backend's rule,
//! which the remote client reproduces call by call so that its
//! [`KvTxn::approximate_size`](crate::kv::KvTxn::approximate_size) and
//! [`KvMetrics`](crate::kv::KvMetrics) match the embedded store's.
//!
//! The size counts mutations plus their conflict ranges, as FDB does
//! (the limit is [`MAX_TRANSACTION_SIZE`](crate::kv::limits::MAX_TRANSACTION_SIZE)).

use crate::kv::key_range::{key_after, KeyRange};
use crate::kv::limits::MAX_KEY_SIZE;
use crate::kv::{KvError, KvResult, RangeOption, RangeResult, ReadRequest};

/// Fails with `key_too_large` (2102) for a read of a key over the limit.
pub(crate) fn check_read_key(key: &[u8]) -> KvResult<()> {
    if key.len() > MAX_KEY_SIZE {
        return Err(KvError::new(
            KvError::KEY_TOO_LARGE,
            format!("read of a {}-byte key (limit {MAX_KEY_SIZE})", key.len()),
        ));
    }
    Ok(())
}

/// [`check_read_key`] for every point read of a batch.
pub(crate) fn check_batch_keys(requests: &[ReadRequest]) -> KvResult<()> {
    for r in requests {
        if let ReadRequest::Get(key) = r {
            check_read_key(key)?;
        }
    }
    Ok(())
}

/// The conflict cost of a range `[b, e)`, as FDB counts it.
pub(crate) fn range_size(b: &[u8], e: &[u8]) -> usize {
    b.len() + e.len()
}

/// The conflict cost of the range holding only `key` (`[key, key + \0)`).
pub(crate) fn point_size(key: &[u8]) -> usize {
    2 * key.len() + 1
}

/// The size of a set, clear or atomic op of `key` with a `param_len`-byte
/// value or parameter: the mutation and its implicit write-conflict range.
pub(crate) fn mutation_size(key: &[u8], param_len: usize) -> usize {
    key.len() + param_len + point_size(key)
}

/// The size of a `clear_range`: the mutation and its write-conflict range.
pub(crate) fn clear_range_size(begin: &[u8], end: &[u8]) -> usize {
    2 * range_size(begin, end)
}

/// The range a range read's read-conflict range covers: the whole
/// requested range, or up to the last row returned when the read stopped
/// early (at its limit or with `more`).
pub(crate) fn covered_range(opt: &RangeOption, r: &RangeResult) -> KeyRange {
    let stopped = r.more || (opt.limit != 0 && r.kvs.len() == opt.limit);
    match (stopped, r.kvs.last()) {
        (true, Some(last)) if opt.reverse => (last.key.clone(), opt.end.clone()),
        (true, Some(last)) => (opt.begin.clone(), key_after(&last.key)),
        _ => (opt.begin.clone(), opt.end.clone()),
    }
}

/// The value bytes of a range read's rows (what `bytes_read` counts).
pub(crate) fn value_bytes(r: &RangeResult) -> usize {
    r.kvs.iter().map(|kv| kv.value.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KeyValue;

    fn rows(keys: &[&str], more: bool) -> RangeResult {
        RangeResult {
            kvs: keys
                .iter()
                .map(|k| KeyValue {
                    key: k.as_bytes().to_vec(),
                    value: b"vv".to_vec(),
                })
                .collect(),
            more,
        }
    }

    #[test]
    fn a_stopped_read_covers_up_to_its_last_row() {
        let opt = RangeOption::new(b"a".to_vec(), b"z".to_vec());
        let whole = (b"a".to_vec(), b"z".to_vec());
        assert_eq!(covered_range(&opt, &rows(&["b", "c"], false)), whole);
        assert_eq!(
            covered_range(&opt, &rows(&["b", "c"], true)),
            (b"a".to_vec(), b"c\0".to_vec())
        );
        let limited = opt.clone().limit(2);
        assert_eq!(
            covered_range(&limited, &rows(&["b", "c"], false)),
            (b"a".to_vec(), b"c\0".to_vec())
        );
        assert_eq!(covered_range(&limited, &rows(&["b"], false)), whole);
        assert_eq!(
            covered_range(&limited.reverse(), &rows(&["y", "x"], false)),
            (b"x".to_vec(), b"z".to_vec())
        );
        assert_eq!(value_bytes(&rows(&["b", "c"], false)), 4);
    }

    #[test]
    fn sizes_count_mutations_and_conflict_ranges() {
        assert_eq!(mutation_size(b"key", 5), 3 + 5 + 7);
        assert_eq!(clear_range_size(b"a", b"bc"), 6);
        assert_eq!(
            check_read_key(&[0; MAX_KEY_SIZE]).map_err(|e| e.code),
            Ok(())
        );
        assert_eq!(
            check_read_key(&[0; MAX_KEY_SIZE + 1]).map_err(|e| e.code),
            Err(KvError::KEY_TOO_LARGE)
        );
        let batch = |k: Vec<u8>| [ReadRequest::Get(b"a".to_vec()), ReadRequest::Get(k)];
        assert!(check_batch_keys(&batch(vec![0; MAX_KEY_SIZE])).is_ok());
        assert!(check_batch_keys(&batch(vec![0; MAX_KEY_SIZE + 1])).is_err());
    }
}
