//! The last row of each of many ascending key ranges, found in one forward
//! walk of the redb table instead of one reverse range read per range (a
//! B-tree descent from the root, plus the iterator's setup and teardown).
//!
//! Why: a cold page read asks for each page's newest version at or below
//! its snapshot, a reverse range read of limit 1 per page, in batches of up
//! to hundreds of pages that mostly lie next to each other (a scan). Walking
//! forward visits each version key once and copies only the rows chosen.
//!
//! The walk skips keys between the ranges (versions newer than the
//! snapshot, pages not asked for) and counts rows within a range (older
//! versions); past [`MAX_STEPS`] of either it seeks instead, so no answer
//! costs much more than its own range read would.

use redb::{AccessGuard, ReadOnlyTable, StorageError};

type Table = ReadOnlyTable<&'static [u8], &'static [u8]>;
type Guard = AccessGuard<'static, &'static [u8]>;
type Rows = redb::Range<'static, &'static [u8], &'static [u8]>;

/// A key and its value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Keys stepped over, between two ranges or inside one, before a seek is
/// cheaper.
const MAX_STEPS: usize = 8;

/// A forward walk of `[from, end)`, with the row it stands on.
struct Walk {
    rows: Rows,
    at: Option<(Guard, Guard)>,
}

impl Walk {
    fn new(table: &Table, from: &[u8], end: &[u8]) -> Result<Walk, StorageError> {
        let mut rows = table.range::<&[u8]>(from..end)?;
        let at = rows.next().transpose()?;
        Ok(Walk { rows, at })
    }

    fn step(&mut self) -> Result<(), StorageError> {
        self.at = self.rows.next().transpose()?;
        Ok(())
    }

    /// The key the walk stands on (None: past the end).
    fn key(&self) -> Option<&[u8]> {
        self.at.as_ref().map(|(k, _)| k.value())
    }
}

/// The last row of each range of `ranges`, which must be non-empty,
/// ascending and disjoint (`b < e <= next b`): what a reverse range read of
/// limit 1 of each would answer.
pub(crate) fn last_rows(
    table: &Table,
    ranges: &[(&[u8], &[u8])],
) -> Result<Vec<Option<Row>>, StorageError> {
    let Some(&(first, _)) = ranges.first() else {
        return Ok(Vec::new());
    };
    if let [(b, e)] = ranges {
        // One range: one reverse seek, no walk.
        let last = table.range::<&[u8]>(b..e)?.next_back().transpose()?;
        return Ok(vec![
            last.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
        ]);
    }
    let end = ranges.last().map_or(first, |r| r.1);
    let mut walk = Walk::new(table, first, end)?;
    let mut out = Vec::with_capacity(ranges.len());
    for &(b, e) in ranges {
        walk = reach(table, walk, b, end)?;
        let mut last = None;
        let mut rows = 0;
        while walk.key().is_some_and(|k| k < e) {
            if rows == MAX_STEPS {
                // Many versions: the newest by a reverse seek, and the walk
                // goes on from the range's end.
                last = table.range::<&[u8]>(b..e)?.next_back().transpose()?;
                walk = Walk::new(table, e, end)?;
                break;
            }
            rows += 1;
            last = walk.at.take();
            walk.step()?;
        }
        out.push(last.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())));
    }
    Ok(out)
}

/// Moves `walk` to the first key at or past `b`: a few steps, else a seek.
fn reach(table: &Table, mut walk: Walk, b: &[u8], end: &[u8]) -> Result<Walk, StorageError> {
    for _ in 0..MAX_STEPS {
        match walk.key() {
            Some(k) if k < b => walk.step()?,
            // At or past `b`, or no key left before `end`.
            _ => return Ok(walk),
        }
    }
    if walk.key().is_some_and(|k| k < b) {
        return Walk::new(table, b, end);
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");

    fn table(keys: &[Vec<u8>]) -> (Database, Table) {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("db");
        let w = db.begin_write().expect("write");
        {
            let mut t = w.open_table(T).expect("table");
            for k in keys {
                t.insert(k.as_slice(), [k.as_slice(), b"!"].concat().as_slice())
                    .expect("insert");
            }
        }
        w.commit().expect("commit");
        let r = db.begin_read().expect("read");
        let t = r.open_table(T).expect("open");
        (db, t)
    }

    /// What one reverse range read of limit 1 per range answers.
    fn reverse_each(t: &Table, ranges: &[(&[u8], &[u8])]) -> Vec<Option<Row>> {
        ranges
            .iter()
            .map(|&(b, e)| {
                t.range::<&[u8]>(b..e)
                    .expect("range")
                    .next_back()
                    .transpose()
                    .expect("row")
                    .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            })
            .collect()
    }

    /// Keys `p v` (page p, version v) for pages 0..40 with 1 + p % 13
    /// versions each (up to 13: past the walk's step bound).
    fn versions() -> Vec<Vec<u8>> {
        (0u8..40)
            .flat_map(|p| (0..=p % 13).map(move |v| vec![p, v * 2]))
            .collect()
    }

    #[test]
    fn answers_as_one_reverse_read_per_range() {
        let (_db, t) = table(&versions());
        // Every page, at "snapshots" cutting its versions anywhere, with
        // runs of pages left out (gaps longer and shorter than the bound).
        for snapshot in [0u8, 1, 3, 7, 30] {
            for stride in [1u8, 2, 5, 11] {
                let bounds: Vec<(Vec<u8>, Vec<u8>)> = (0u8..45)
                    .step_by(stride.into())
                    .map(|p| (vec![p], vec![p, snapshot]))
                    .collect();
                let ranges: Vec<(&[u8], &[u8])> = bounds
                    .iter()
                    .map(|(b, e)| (b.as_slice(), e.as_slice()))
                    .collect();
                assert_eq!(
                    last_rows(&t, &ranges).expect("walk"),
                    reverse_each(&t, &ranges),
                    "snapshot {snapshot}, stride {stride}"
                );
                for r in &ranges {
                    let one = std::slice::from_ref(r);
                    assert_eq!(last_rows(&t, one).expect("one"), reverse_each(&t, one));
                }
            }
        }
    }

    #[test]
    fn empty_and_adjacent_ranges() {
        let (_db, t) = table(&versions());
        assert!(last_rows(&t, &[]).expect("walk").is_empty());
        let ranges: Vec<(&[u8], &[u8])> = vec![
            (&[1], &[2]),
            (&[2], &[2, 5]),
            (&[2, 5], &[3]),
            (&[9, 9], &[9, 10]),
            (&[50], &[60]),
        ];
        assert_eq!(
            last_rows(&t, &ranges).expect("walk"),
            reverse_each(&t, &ranges)
        );
    }
}
