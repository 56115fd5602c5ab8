//! The catalog: database names → ids. Create, open, list and drop by name.

use tracing::info;

use crate::database::Database;
use crate::encoding::DbMeta;
use crate::error::{Error, Result};
use crate::kv::RangeOption;
use crate::store::PageStore;

/// Longest database name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A database as listed by [`PageStore::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Its name.
    pub name: String,
    /// Its id (the key prefix of its pages).
    pub id: u64,
}

fn validate(name: &str) -> Result<()> {
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

fn decode_id(v: &[u8]) -> Result<u64> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::corrupt("catalog id"))
}

impl PageStore {
    /// Creates an empty database: one store commit.
    pub fn create(&self, name: &str) -> Result<Database> {
        validate(name)?;
        let inner = &self.inner;
        // Random ids need no shared counter (which every create would
        // conflict on); 64 bits make a collision negligible, and the create
        // transaction refuses an id that is already in use anyway.
        let id: u64 = rand::random::<u64>() | 1;
        let meta = DbMeta {
            name: name.to_string(),
            created_micros: inner.opts.clock.now_micros(),
        };
        let name_key = inner.keys.name(name);
        inner.run("create", |t| {
            if let Some(v) = t.get(&name_key, false)? {
                // After commit_unknown_result our own first attempt may have landed.
                return if decode_id(&v)? == id {
                    Ok(())
                } else {
                    Err(Error::AlreadyExists(name.to_string()))
                };
            }
            if t.get(&inner.keys.meta(id), false)?.is_some() {
                return Err(Error::Other("database id collision; try again".into()));
            }
            t.set(&name_key, &id.to_be_bytes());
            t.set(&inner.keys.meta(id), &meta.encode());
            Ok(())
        })?;
        info!(database = name, id, "created database");
        Ok(Database::new(self.clone(), name, id))
    }

    /// Opens an existing database.
    pub fn open(&self, name: &str) -> Result<Database> {
        validate(name)?;
        let key = self.inner.keys.name(name);
        let id = self
            .inner
            .run("open", |t| t.get(&key, true).map_err(Error::from))?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        Ok(Database::new(self.clone(), name, decode_id(&id)?))
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
                    id: decode_id(&kv.value)?,
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

    /// Drops a database and all its keys, in one store transaction (a
    /// range clear is one small mutation whatever the size). Returns false
    /// when no such database exists. Reusing the name later gives a fresh,
    /// empty database.
    pub fn drop_database(&self, name: &str) -> Result<bool> {
        validate(name)?;
        let inner = &self.inner;
        let key = inner.keys.name(name);
        let dropped = inner.run("drop", |t| {
            let Some(v) = t.get(&key, false)? else {
                return Ok(None);
            };
            let id = decode_id(&v)?;
            let (b, e) = inner.keys.db(id).all();
            t.clear(&key);
            t.clear(&inner.keys.meta(id));
            t.clear_range(&b, &e);
            Ok(Some(id))
        })?;
        if let Some(id) = dropped {
            inner.cache.forget(id);
            info!(database = name, id, "dropped database");
        }
        Ok(dropped.is_some())
    }
}
