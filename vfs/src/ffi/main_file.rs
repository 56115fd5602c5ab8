//! The main database file as SQLite's I/O methods see it: [`MainFile`]
//! behind the [`VfsFile`] trait, and the file controls it answers.

use std::ffi::c_int;

use libsqlite3_sys as ffi;

use super::io::{FileControl, PragmaRequest, VfsFile};
use super::VFS_NAME;
use crate::api::Api;
use crate::error::Result;
use crate::file::{MainFile, PragmaOutcome};
use crate::lock::Level;

static MAIN_METHODS: ffi::sqlite3_io_methods = super::io::io_methods::<MainFile>();

impl VfsFile for MainFile {
    const METHODS: &'static ffi::sqlite3_io_methods = &MAIN_METHODS;

    fn name(&self) -> &str {
        MainFile::name(self)
    }

    fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool> {
        MainFile::read(self, buf, offset).inspect_err(|_| buf.fill(0))
    }

    fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        MainFile::write(self, buf, offset)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        MainFile::truncate(self, size)
    }

    fn size(&mut self) -> Result<u64> {
        MainFile::size(self)
    }

    fn sync(&mut self) -> Result<()> {
        MainFile::sync(self)
    }

    fn lock(&mut self, level: Level) -> Result<()> {
        MainFile::lock(self, level)
    }

    fn unlock(&mut self, level: Level) -> Result<()> {
        MainFile::unlock(self, level)
    }

    fn reserved_elsewhere(&self) -> bool {
        MainFile::reserved_elsewhere(self)
    }

    fn file_control(&mut self, api: &Api, request: FileControl) -> Result<c_int> {
        match request {
            FileControl::Pragma(p) => pragma(self, api, p),
            // Files of one connection share a snapshot per SQL transaction.
            FileControl::Connection(Some(conn)) => {
                self.set_connection(conn);
                // SAFETY: SQLite is inside a call of this open connection
                // (sqlite3BtreeOpen).
                let defensive = unsafe { api.is_defensive(conn) };
                self.check_attach(defensive);
                Ok(ffi::SQLITE_OK)
            }
            FileControl::Connection(None) => Ok(ffi::SQLITE_OK),
            // It is the commit point (see `MainFile::sync_point`).
            FileControl::Sync(super_journal) => {
                self.sync_point(super_journal).map(|()| ffi::SQLITE_OK)
            }
            FileControl::CommitPhaseTwo => self.commit_phase_two().map(|()| ffi::SQLITE_OK),
            FileControl::VfsName(slot) => {
                if let Some(slot) = slot {
                    slot.set(api, VFS_NAME);
                }
                Ok(ffi::SQLITE_OK)
            }
            FileControl::Other => Ok(ffi::SQLITE_NOTFOUND),
        }
    }
}

/// SQLITE_FCNTL_PRAGMA: our answer or refusal goes to the result slot;
/// an error goes there too (as SQLite's message for the statement) and is
/// reported by the trampoline.
fn pragma(m: &mut MainFile, api: &Api, p: PragmaRequest) -> Result<c_int> {
    let defensive = m
        .connection()
        // SAFETY: SQLite runs the PRAGMA inside a call of this connection.
        .is_some_and(|c| unsafe { api.is_defensive(c) });
    match m.pragma(&p.name, p.value.as_deref(), defensive) {
        Ok(PragmaOutcome::NotOurs) => Ok(ffi::SQLITE_NOTFOUND),
        Ok(PragmaOutcome::Value(v)) => {
            p.answer.set(api, &v);
            Ok(ffi::SQLITE_OK)
        }
        Ok(PragmaOutcome::Refused(msg)) => {
            // SQLite reports the message as the statement's error; a debug
            // event is enough here.
            tracing::debug!(database = m.name(), pragma = %p.name, "{msg}");
            p.answer.set(api, &msg);
            Ok(ffi::SQLITE_ERROR)
        }
        Err(e) => {
            p.answer.set(api, &format!("fdb VFS: {e}"));
            Err(e)
        }
    }
}
