//! The catalog: database names → ids. Create, open, list and drop by name.

use tracing::info;

use crate::database::Database;
use crate::encoding::{decode_db_id, DbMeta};
use crate::error::{Error, Result};
use crate::ids::DbId;
use crate::kv::{RangeOption, Version};
use crate::store::PageStore;

/// Longest database name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A database as listed by [`PageStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Its name.
    pub name: String,
    /// Its id (the key prefix of its pages).
    pub id: DbId,
}

/// Checks a database name: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8. The one
/// name rule of the engine, the VFS, the Rust API and the CLI.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName("the name is empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidName(format!(
            "{} bytes; at most {MAX_NAME_BYTES} bytes of UTF-8",
            name.len()
        )));
    }
    Ok(())
}

impl PageStore {
    /// Creates an empty database: one store commit.
    pub fn create(&self, name: &str) -> Result<Database> {
        self.create_with(
            name,
            DbMeta {
                name: name.to_string(),
                created_micros: self.inner.opts.clock.now_micros(),
                ..Default::default()
            },
        )
    }

    /// Creates a database with catalog entry `meta` (a fork names its
    /// origin there): one store commit.
    pub(crate) fn create_with(&self, name: &str, meta: DbMeta) -> Result<Database> {
        validate_name(name)?;
        let inner = &self.inner;
        // Random ids need no shared counter (which every create would
        // conflict on); 64 bits make a collision negligible, and the create
        // transaction refuses an id that is already in use anyway.
        let id = DbId::new(rand::random::<u64>() | 1);
        let name_key = inner.keys.name(name);
        inner.run("create", |t| {
            if let Some(v) = t.get(&name_key, false)? {
                // After commit_unknown_result our own first attempt may have landed.
                return if decode_db_id(&v)? == id {
                    Ok(())
                } else {
                    Err(Error::AlreadyExists(name.to_string()))
                };
            }
            if t.get(&inner.keys.meta(id), false)?.is_some() {
                return Err(Error::IdCollision);
            }
            if let Some((parent, _)) = meta.parent {
                // Read in the same transaction: a concurrent drop of the
                // origin conflicts with this fork.
                let origin = t
                    .get(&inner.keys.meta(parent), false)?
                    .map(|v| DbMeta::decode(&v))
                    .transpose()?;
                match origin {
                    Some(m) if !m.dropped => {}
                    _ => return Err(Error::Dropped(format!("origin of fork {name:?}"))),
                }
                t.set(&inner.keys.child(parent, id), &[]);
            }
            t.set(&name_key, &id.to_be_bytes());
            t.set(&inner.keys.meta(id), &meta.encode());
            Ok(())
        })?;
        info!(
            database = name,
            id = id.get(),
            fork = meta.parent.is_some(),
            "created database"
        );
        let ancestors = self.ancestors(meta.parent)?;
        Ok(Database::new(self.clone(), name, id, &ancestors))
    }

    /// Opens an existing database.
    pub fn open(&self, name: &str) -> Result<Database> {
        validate_name(name)?;
        let key = self.inner.keys.name(name);
        // Name and catalog entry in one store transaction (one read version).
        let (id, meta) = self.inner.run("open", |t| {
            let id = t
                .get(&key, true)?
                .ok_or_else(|| Error::NotFound(name.to_string()))?;
            let id = decode_db_id(&id)?;
            let meta = t
                .get(&self.inner.keys.meta(id), true)?
                .ok_or_else(|| Error::corrupt(format!("catalog entry of database {id} missing")))?;
            Ok((id, DbMeta::decode(&meta)?))
        })?;
        let ancestors = self.ancestors(meta.parent)?;
        Ok(Database::new(self.clone(), name, id, &ancestors))
    }

    /// The catalog entry of database `id`.
    pub(crate) fn meta(&self, id: DbId) -> Result<DbMeta> {
        let key = self.inner.keys.meta(id);
        let v = self
            .inner
            .run("meta", |t| t.get(&key, true).map_err(Error::from))?
            .ok_or_else(|| Error::corrupt(format!("catalog entry of database {id} missing")))?;
        DbMeta::decode(&v)
    }

    /// The fork chain above a database whose origin is `parent`: (id, cap)
    /// pairs, nearest first. Each ancestor is seen only up to the version
    /// its child was forked at.
    pub(crate) fn ancestors(
        &self,
        mut parent: Option<(DbId, Version)>,
    ) -> Result<Vec<(DbId, Version)>> {
        let mut out: Vec<(DbId, Version)> = Vec::new();
        while let Some((pid, at)) = parent {
            if out.len() > 1_000 || out.iter().any(|(id, _)| *id == pid) {
                return Err(Error::corrupt("fork chain loops"));
            }
            let cap = out.last().map_or(at, |(_, c)| at.min(*c));
            out.push((pid, cap));
            parent = self.meta(pid)?.parent;
        }
        Ok(out)
    }

    /// Opens a database, creating it when it does not exist.
    pub fn open_or_create(&self, name: &str) -> Result<Database> {
        match self.open(name) {
            Err(Error::NotFound(_)) => match self.create(name) {
                Err(Error::AlreadyExists(_)) => self.open(name),
                other => other,
            },
            other => other,
        }
    }

    /// Lists all databases, by name.
    pub fn list(&self) -> Result<Vec<DatabaseInfo>> {
        let keys = &self.inner.keys;
        let (mut begin, end) = keys.names();
        let mut out = Vec::new();
        loop {
            let chunk = self.inner.run("list", |t| {
                t.get_range(
                    &RangeOption::new(begin.clone(), end.clone()).limit(1000),
                    true,
                )
                .map_err(Error::from)
            })?;
            for kv in &chunk.kvs {
                let name = keys
                    .name_of(&kv.key)
                    .ok_or_else(|| Error::corrupt("catalog key"))?;
                out.push(DatabaseInfo {
                    name: String::from_utf8_lossy(name).into_owned(),
                    id: decode_db_id(&kv.value)?,
                });
            }
            match chunk.kvs.last() {
                Some(last) if chunk.more || chunk.kvs.len() == 1000 => {
                    begin = last.key.clone();
                    begin.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Drops a database. Its keys are removed in one store transaction (a
    /// range clear is one small mutation whatever the size), unless forks
    /// still read from it: then only its name goes, and its pages stay
    /// until the last fork is dropped (GC trims them to what forks need).
    /// Returns false when no such database exists. Reusing the name later
    /// gives a fresh, empty database.
    pub fn drop_database(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        let inner = &self.inner;
        let key = inner.keys.name(name);
        let dropped = inner.run("drop", |t| {
            let Some(v) = t.get(&key, false)? else {
                return Ok(None);
            };
            let id = decode_db_id(&v)?;
            t.clear(&key);
            self.drop_id(t, id)?;
            failpoint!("drop::before");
            Ok(Some(id))
        })?;
        if let Some(id) = dropped {
            inner.cache.forget(id);
            inner.refresher.forget(id);
            info!(database = name, id = %id, "dropped database");
        }
        Ok(dropped.is_some())
    }

    /// Removes database `id` (whose name is already gone) in `t`: all its
    /// keys when no fork reads from it, else it is only marked dropped. A
    /// fork's removal may free a dropped origin in turn.
    pub(crate) fn drop_id(&self, t: &mut dyn crate::kv::KvTxn, id: DbId) -> Result<()> {
        let keys = &self.inner.keys;
        let meta_key = keys.meta(id);
        let Some(mv) = t.get(&meta_key, false)? else {
            return Ok(());
        };
        let mut meta = DbMeta::decode(&mv)?;
        let (cb, ce) = keys.children(id);
        let has_children = !t
            .get_range(&RangeOption::new(cb, ce).limit(1), false)?
            .kvs
            .is_empty();
        if has_children {
            meta.dropped = true;
            t.set(&meta_key, &meta.encode());
            return Ok(());
        }
        let (b, e) = keys.db(id).all();
        t.clear(&meta_key);
        t.clear_range(&b, &e);
        if let Some((parent, _)) = meta.parent {
            t.clear(&keys.child(parent, id));
            let Some(pv) = t.get(&keys.meta(parent), false)? else {
                return Ok(());
            };
            if DbMeta::decode(&pv)?.dropped {
                // Our own child key is cleared in this transaction, and a
                // range read sees the transaction's writes.
                self.drop_id(t, parent)?;
            }
        }
        Ok(())
    }
}
