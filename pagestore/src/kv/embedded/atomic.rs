//! FoundationDB's atomic operations, with the exact parameter semantics of
//! FDB's `Atomic.h` (API version >= 520), and versionstamp substitution.

use crate::kv::limits::MAX_VALUE_SIZE;
use crate::kv::{KvError, KvResult, MutationType, Versionstamp};

/// Applies a non-versionstamp atomic op to `existing` (None = key absent).
/// Returns the new value, or `None` when the key ends up cleared.
pub(crate) fn apply(op: MutationType, existing: Option<&[u8]>, param: &[u8]) -> Option<Vec<u8>> {
    match op {
        MutationType::Add => Some(add(existing.unwrap_or_default(), param)),
        MutationType::BitAnd => match existing {
            None => Some(param.to_vec()),
            Some(e) => Some(bitwise(e, param, |a, b| a & b, 0x00, false)),
        },
        MutationType::BitOr => Some(or_xor(existing, param, |a, b| a | b)),
        MutationType::BitXor => Some(or_xor(existing, param, |a, b| a ^ b)),
        MutationType::Max => Some(match existing {
            None => param.to_vec(),
            Some([]) => param.to_vec(),
            Some(e) => le_pick(e, param, true),
        }),
        MutationType::Min => Some(match existing {
            None => param.to_vec(),
            Some(e) => le_pick(e, param, false),
        }),
        MutationType::ByteMax => Some(match existing {
            Some(e) if e > param => e.to_vec(),
            _ => param.to_vec(),
        }),
        MutationType::ByteMin => Some(match existing {
            Some(e) if e < param => e.to_vec(),
            _ => param.to_vec(),
        }),
        MutationType::CompareAndClear => match existing {
            Some(e) if e == param => None,
            other => other.map(<[u8]>::to_vec),
        },
        MutationType::AppendIfFits => {
            let e = existing.unwrap_or_default();
            if e.is_empty() {
                Some(param.to_vec())
            } else if param.is_empty() || e.len() + param.len() > MAX_VALUE_SIZE {
                Some(e.to_vec())
            } else {
                let mut v = e.to_vec();
                v.extend_from_slice(param);
                Some(v)
            }
        }
        // Versionstamp ops are resolved at commit time by `substitute`; as a
        // plain value they are the parameter itself.
        MutationType::SetVersionstampedKey | MutationType::SetVersionstampedValue => {
            Some(param.to_vec())
        }
    }
}

/// Little-endian addition, result as long as `param` (carry out discarded).
fn add(existing: &[u8], param: &[u8]) -> Vec<u8> {
    if existing.is_empty() || param.is_empty() {
        return param.to_vec();
    }
    let mut out = Vec::with_capacity(param.len());
    let mut carry = 0u16;
    for (i, p) in param.iter().enumerate() {
        let e = existing.get(i).copied().unwrap_or(0);
        let sum = u16::from(e) + u16::from(*p) + carry;
        out.push((sum & 0xff) as u8);
        carry = sum >> 8;
    }
    out
}

fn or_xor(existing: Option<&[u8]>, param: &[u8], f: fn(u8, u8) -> u8) -> Vec<u8> {
    match existing {
        Some(e) if !e.is_empty() && !param.is_empty() => bitwise(e, param, f, 0, true),
        _ => param.to_vec(),
    }
}

/// Byte-wise `f` over `param`'s length; bytes of `param` beyond `existing`
/// are combined with `pad` (`keep_param` = copy the parameter byte instead).
fn bitwise(
    existing: &[u8],
    param: &[u8],
    f: fn(u8, u8) -> u8,
    pad: u8,
    keep_param: bool,
) -> Vec<u8> {
    param
        .iter()
        .enumerate()
        .map(|(i, p)| match existing.get(i) {
            Some(e) => f(*e, *p),
            None if keep_param => *p,
            None => pad,
        })
        .collect()
}

/// Little-endian unsigned max (`want_max`) or min of `existing` (truncated or
/// zero-extended to the parameter's length) and `param`.
fn le_pick(existing: &[u8], param: &[u8], want_max: bool) -> Vec<u8> {
    if param.is_empty() {
        return Vec::new();
    }
    let e: Vec<u8> = (0..param.len())
        .map(|i| existing.get(i).copied().unwrap_or(0))
        .collect();
    let mut ord = std::cmp::Ordering::Equal;
    for i in (0..param.len()).rev() {
        if e[i] != param[i] {
            ord = e[i].cmp(&param[i]);
            break;
        }
    }
    let existing_wins = if want_max {
        ord == std::cmp::Ordering::Greater
    } else {
        ord == std::cmp::Ordering::Less
    };
    if existing_wins {
        e
    } else {
        param.to_vec()
    }
}

/// Checks a versionstamp parameter (key or value with a trailing LE u32
/// offset) and returns the placeholder offset.
pub(crate) fn placeholder_offset(with_offset: &[u8]) -> KvResult<usize> {
    let n = with_offset.len();
    if n < 4 {
        return Err(KvError::new(
            KvError::CLIENT_INVALID_OPERATION,
            "versionstamp operation parameter is shorter than its 4-byte offset",
        ));
    }
    let mut off = [0u8; 4];
    off.copy_from_slice(&with_offset[n - 4..]);
    let offset = u32::from_le_bytes(off) as usize;
    if offset + 10 > n - 4 {
        return Err(KvError::new(
            KvError::CLIENT_INVALID_OPERATION,
            format!(
                "versionstamp offset {offset} does not leave 10 bytes in a {}-byte parameter",
                n - 4
            ),
        ));
    }
    Ok(offset)
}

/// Drops the trailing offset and writes `stamp` over the 10-byte placeholder.
pub(crate) fn substitute(with_offset: &[u8], stamp: &Versionstamp) -> KvResult<Vec<u8>> {
    let offset = placeholder_offset(with_offset)?;
    let mut out = with_offset[..with_offset.len() - 4].to_vec();
    out[offset..offset + 10].copy_from_slice(&stamp.0);
    Ok(out)
}

/// FDB's `getVersionstampKeyRange`: the keys a versionstamped key may land
/// on, from its stamp at `read_version + 1` (batch order 0; stamp 0 when
/// no read version is known yet) to its stamp of all `0xff`, inclusive.
/// `None` for a malformed key (its error is deferred to commit).
pub(crate) fn versionstamp_key_range(
    with_offset: &[u8],
    read_version: Option<crate::kv::Version>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let offset = placeholder_offset(with_offset).ok()?;
    let key = &with_offset[..with_offset.len() - 4];
    let low = Versionstamp::new(
        read_version.map_or(crate::kv::Version::ZERO, |v| v.after(1)),
        0,
    );
    let mut begin = key.to_vec();
    begin[offset..offset + 10].copy_from_slice(&low.0);
    let mut end = key.to_vec();
    end[offset..offset + 10].fill(0xff);
    end.push(0);
    Some((begin, end))
}

/// The length a versionstamp parameter has once substituted.
pub(crate) fn substituted_len(with_offset: &[u8]) -> usize {
    with_offset.len().saturating_sub(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::INCOMPLETE_VERSIONSTAMP;

    fn le(v: u64, n: usize) -> Vec<u8> {
        v.to_le_bytes()[..n].to_vec()
    }

    #[test]
    fn add_follows_fdb() {
        assert_eq!(apply(MutationType::Add, None, &le(5, 8)), Some(le(5, 8)));
        assert_eq!(
            apply(MutationType::Add, Some(&le(250, 8)), &le(10, 8)),
            Some(le(260, 8))
        );
        // Result takes the parameter's length; carry out is dropped.
        assert_eq!(
            apply(MutationType::Add, Some(&[0xff, 0xff]), &[1]),
            Some(vec![0])
        );
        assert_eq!(
            apply(MutationType::Add, Some(&[0xff]), &[1, 0]),
            Some(vec![0, 1])
        );
        assert_eq!(apply(MutationType::Add, Some(&[7]), &[]), Some(vec![]));
    }

    #[test]
    fn bitwise_ops_follow_fdb() {
        assert_eq!(apply(MutationType::BitAnd, None, &[0x0f]), Some(vec![0x0f]));
        assert_eq!(
            apply(MutationType::BitAnd, Some(&[0x3c]), &[0x0f, 0xff]),
            Some(vec![0x0c, 0])
        );
        assert_eq!(
            apply(MutationType::BitOr, Some(&[0x30]), &[0x0f, 0x01]),
            Some(vec![0x3f, 0x01])
        );
        assert_eq!(
            apply(MutationType::BitXor, Some(&[0xff, 1]), &[0x0f]),
            Some(vec![0xf0])
        );
        assert_eq!(apply(MutationType::BitOr, None, &[1]), Some(vec![1]));
    }

    #[test]
    fn min_max_follow_fdb() {
        assert_eq!(
            apply(MutationType::Max, Some(&le(300, 2)), &le(5, 2)),
            Some(le(300, 2))
        );
        assert_eq!(
            apply(MutationType::Max, Some(&le(3, 2)), &le(5, 2)),
            Some(le(5, 2))
        );
        assert_eq!(
            apply(MutationType::Min, Some(&le(300, 2)), &le(5, 2)),
            Some(le(5, 2))
        );
        assert_eq!(apply(MutationType::Min, None, &le(5, 2)), Some(le(5, 2)));
        // Existing is truncated to the parameter's length.
        assert_eq!(
            apply(MutationType::Max, Some(&[1, 0, 9]), &[2, 0]),
            Some(vec![2, 0])
        );
        assert_eq!(
            apply(MutationType::ByteMax, Some(b"b"), b"ab"),
            Some(b"b".to_vec())
        );
        assert_eq!(
            apply(MutationType::ByteMin, Some(b"b"), b"ab"),
            Some(b"ab".to_vec())
        );
        assert_eq!(
            apply(MutationType::ByteMin, None, b"zz"),
            Some(b"zz".to_vec())
        );
    }

    #[test]
    fn compare_and_clear_and_append() {
        assert_eq!(apply(MutationType::CompareAndClear, Some(b"x"), b"x"), None);
        assert_eq!(
            apply(MutationType::CompareAndClear, Some(b"y"), b"x"),
            Some(b"y".to_vec())
        );
        assert_eq!(apply(MutationType::CompareAndClear, None, b"x"), None);
        assert_eq!(
            apply(MutationType::AppendIfFits, Some(b"ab"), b"cd"),
            Some(b"abcd".to_vec())
        );
        assert_eq!(
            apply(MutationType::AppendIfFits, None, b"cd"),
            Some(b"cd".to_vec())
        );
        let big = vec![1u8; MAX_VALUE_SIZE];
        assert_eq!(
            apply(MutationType::AppendIfFits, Some(&big), b"x"),
            Some(big.clone())
        );
    }

    #[test]
    fn versionstamp_substitution() {
        let mut key = b"pre".to_vec();
        key.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
        key.extend_from_slice(b"post");
        key.extend_from_slice(&3u32.to_le_bytes());
        let vs = Versionstamp::new(crate::kv::Version::new(0x0102_0304_0506_0708), 9);
        let out = substitute(&key, &vs).unwrap();
        assert_eq!(&out[..3], b"pre");
        assert_eq!(&out[3..13], &vs.0);
        assert_eq!(&out[13..], b"post");
        assert_eq!(out.len(), substituted_len(&key));
        // Offset pointing past the end is rejected.
        let mut bad = b"short".to_vec();
        bad.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(substitute(&bad, &vs).unwrap_err().code, 2000);
        assert_eq!(placeholder_offset(b"ab").unwrap_err().code, 2000);
    }
}
