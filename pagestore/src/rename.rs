//! Renaming a database, and what building one under a temporary name needs
//! around it (an import): an atomic catalog rename that may replace the
//! target, and a builder's signs of life so that abandoned temporaries can
//! be told from live ones.

use tracing::info;

use crate::catalog::validate_name;
use crate::database::Database;
use crate::encoding::{decode_db_id, decode_u64, DbMeta};
use crate::error::{Error, Result};
use crate::keys::Token;
use crate::kv::RangeOption;
use crate::store::PageStore;

/// The token of heartbeat markers: an upload marker (`D 'u' token`) that no
/// upload uses (upload tokens are random). When stale, upload sweeps and GC
/// remove it like an abandoned upload's marker; it has no content.
const HEARTBEAT_TOKEN: Token = [0xff; 16];

impl PageStore {
    /// Renames database `from` to `to` in one store transaction: the name
    /// key moves and the catalog entry takes the new name; pages, history
    /// and forks are untouched (they are keyed by id). When `to` exists,
    /// `replace` drops it in the same transaction (as
    /// [`PageStore::drop_database`] would), else the rename fails with
    /// [`Error::AlreadyExists`] and nothing changes. Readers of `to` see the
    /// old database or the new one, never neither. Idempotent under retries
    /// after an unknown commit result. Returns the renamed database.
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> Result<Database> {
        let source = self.open(from)?;
        validate_name(to)?;
        if from == to {
            return Ok(source);
        }
        let id = source.id();
        let inner = &self.inner;
        let (from_key, to_key) = (inner.keys.name(from), inner.keys.name(to));
        let meta_key = inner.keys.meta(id);
        let replaced = inner.run("rename", |t| {
            match t.get(&from_key, false)? {
                Some(v) if decode_db_id(&v)? == id => {}
                Some(_) => return Err(Error::ReplacedDuringRename(from.to_string())),
                None => {
                    // After commit_unknown_result our first attempt may
                    // have landed.
                    return match t.get(&to_key, false)? {
                        Some(v) if decode_db_id(&v)? == id => Ok(None),
                        _ => Err(Error::NotFound(from.to_string())),
                    };
                }
            }
            let mut replaced = None;
            if let Some(old) = t.get(&to_key, false)? {
                if !replace {
                    return Err(Error::AlreadyExists(to.to_string()));
                }
                let old = decode_db_id(&old)?;
                self.drop_id(t, old)?;
                replaced = Some(old);
            }
            let mut meta = t
                .get(&meta_key, false)?
                .map(|v| DbMeta::decode(&v))
                .transpose()?
                .ok_or_else(|| Error::Dropped(from.to_string()))?;
            meta.name = to.to_string();
            t.set(&meta_key, &meta.encode());
            t.clear(&from_key);
            t.set(&to_key, &id.to_be_bytes());
            Ok(replaced)
        })?;
        if let Some(old) = replaced {
            inner.cache.forget(old);
            inner.refresher.forget(old);
        }
        info!(from, to, id = id.get(), replaced = ?replaced, "renamed database");
        self.open(to)
    }
}

impl Database {
    /// Wall-clock time (µs since the Unix epoch) of the last sign of life of
    /// whoever builds this database: its creation, an upload chunk of a large
    /// transaction in progress (refreshed with every chunk), or a
    /// [`Database::heartbeat`]. A database built under a temporary name
    /// whose last activity is old was abandoned by a process that died.
    pub fn last_activity_micros(&self) -> Result<u64> {
        let meta = self.store.meta(self.id)?;
        let (b, e) = self.keys.uploads();
        let markers = self.store.inner.run("activity", |t| {
            t.get_range(&RangeOption::new(b.clone(), e.clone()).limit(10_000), true)
                .map_err(Error::from)
        })?;
        let mut newest = meta.created_micros;
        for kv in &markers.kvs {
            newest = newest.max(decode_u64(&kv.value)?);
        }
        Ok(newest)
    }

    /// Records a sign of life now (see [`Database::last_activity_micros`]):
    /// one small store commit. A long step that uploads nothing (verifying
    /// an import) calls it periodically.
    pub fn heartbeat(&self) -> Result<()> {
        let key = self.keys.upload(&HEARTBEAT_TOKEN);
        let now = self.store.inner.opts.clock.now_micros();
        self.store.inner.run("heartbeat", |t| {
            t.set(&key, &now.to_be_bytes());
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::embedded::{EmbeddedKv, EmbeddedOptions};
    use crate::{Error, PageNo, PageStore, StoreOptions};

    fn store() -> PageStore {
        let kv = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
        PageStore::new(kv, StoreOptions::default())
    }

    fn page(db: &crate::Database) -> u8 {
        let mut t = db.begin().unwrap();
        t.read_page(PageNo::new(0)).unwrap().unwrap()[0]
    }

    fn write(db: &crate::Database, b: u8) {
        let mut t = db.begin().unwrap();
        t.write_page(PageNo::new(0), &[b; 512]).unwrap();
        t.commit().unwrap();
    }

    #[test]
    fn rename_moves_the_name_and_keeps_the_pages() {
        let s = store();
        let a = s.create("tmp").unwrap();
        write(&a, 7);
        let b = s.rename("tmp", "final", false).unwrap();
        assert_eq!(b.id(), a.id());
        assert_eq!(b.name(), "final");
        assert_eq!(page(&b), 7);
        let names: Vec<String> = s.list().unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, vec!["final".to_string()]);
        assert!(matches!(s.open("tmp"), Err(Error::NotFound(_))));
        assert!(matches!(
            s.rename("tmp", "x", false),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn rename_onto_an_existing_name_needs_replace() {
        let s = store();
        let old = s.create("final").unwrap();
        write(&old, 1);
        let new = s.create("tmp").unwrap();
        write(&new, 2);
        assert!(matches!(
            s.rename("tmp", "final", false),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(page(&s.open("final").unwrap()), 1);
        let got = s.rename("tmp", "final", true).unwrap();
        assert_eq!(page(&got), 2);
        assert_eq!(s.list().unwrap().len(), 1);
        // The replaced database's keys are gone.
        let (b, e) = s.inner.keys.db(old.id()).all();
        let left = s
            .inner
            .run("t", |t| {
                t.get_range(&crate::kv::RangeOption::new(b.clone(), e.clone()), true)
                    .map_err(Error::from)
            })
            .unwrap();
        assert!(left.kvs.is_empty());
    }

    #[test]
    fn heartbeat_moves_last_activity() {
        let s = store();
        let db = s.create("tmp").unwrap();
        let created = db.last_activity_micros().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        db.heartbeat().unwrap();
        assert!(db.last_activity_micros().unwrap() > created);
    }
}
