//! A fast hasher for the warm read path's maps (page → newest version in
//! the view, page version → content in the cache). Their keys are page
//! numbers, database ids and versionstamps chosen by this process or the
//! store, not by whoever sends queries, so the standard library's SipHash
//! (a defence against chosen keys) only costs time: hashing was about a
//! tenth of a warm page read. This is the multiply-rotate hash of rustc's
//! `FxHasher`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// An odd constant with well-spread bits (rustc-hash's `K`).
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// Multiply-rotate hasher (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // The product's best bits are its high ones; hash tables index by
        // the low ones.
        self.0.rotate_left(26)
    }
}

/// Builds [`FastHasher`]s.
pub type FastHash = BuildHasherDefault<FastHasher>;

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastHash>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn nearby_keys_spread_over_buckets() {
        // Consecutive page numbers must not pile into a few buckets (low
        // bits) nor share hashbrown's tag (high bits) in bulk. (Random
        // hashes would fill ~2,600 of 4,096 buckets; this one fills ~2,000.)
        let h = FastHash::default();
        let low: HashSet<u64> = (0u32..4096).map(|p| h.hash_one(p) & 0xfff).collect();
        assert!(low.len() > 1500, "{} distinct buckets of 4096", low.len());
        let tags: HashSet<u64> = (0u32..4096).map(|p| h.hash_one(p) >> 57).collect();
        assert!(tags.len() > 100, "{} distinct tags", tags.len());
    }

    #[test]
    fn byte_strings_of_different_lengths_differ() {
        let h = FastHash::default();
        assert_ne!(
            h.hash_one([0u8; 3].as_slice()),
            h.hash_one([0u8; 4].as_slice())
        );
        assert_ne!(h.hash_one([1u8; 10]), h.hash_one([2u8; 10]));
    }
}
