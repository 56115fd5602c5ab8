//! Executes parsed sqllogictest records on a SQLite connection exactly as the
//! classic runner's SQLite engine (`slt_sqlite.c`) does:
//!
//! * `statement` records go through `sqlite3_exec` (every statement of the
//!   record runs);
//! * `query` records prepare the first statement with `sqlite3_prepare_v2`
//!   and step it until it stops returning rows (a step error ends the result
//!   with the rows so far);
//! * each value is formatted by its column's type letter: NULL as `NULL`;
//!   `I` with `sqlite3_column_int` (32-bit) and `%d`; `R` with
//!   `sqlite3_column_double` and SQLite's own `%.3f` (`sqlite3_snprintf`, into
//!   a 200-byte buffer as the classic runner does); `T` with
//!   `sqlite3_column_text`, `(empty)` for an empty string and each byte
//!   outside `' '..='~'` replaced by `@`;
//! * results are sorted per the record's mode (`rowsort`: rows compared
//!   value by value with byte order; `valuesort`: all values), and compared
//!   one value per line, or as `N values hashing to MD5` (MD5 of each value
//!   followed by `\n`) when there are more values than the hash threshold;
//! * a query label must give the same result everywhere it appears.
//!
//! The raw C API is used (through rusqlite's `ffi`) so that conversions are
//! SQLite's, not re-implementations of them.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;

use md5::{Digest, Md5};
use rusqlite::{ffi, Connection};

use super::script::{Kind, Record, Sort};

/// The classic runner's default hash threshold.
pub const DEFAULT_HASH_THRESHOLD: usize = 8;
/// Failure messages kept per file.
const MAX_REPORTED: usize = 5;

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The first few failures, human-readable.
    pub failures: Vec<String>,
    /// MD5 over every record's actual output, to compare two engines.
    pub digest: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5_values(values: &[String]) -> String {
    let mut h = Md5::new();
    for v in values {
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

fn errmsg(db: *mut ffi::sqlite3) -> String {
    // SAFETY: db is a live connection handle; sqlite3_errmsg never returns NULL
    // for one, and the string is copied before any other call on db.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned()
}

/// `sqlite3_exec` of the whole SQL text.
fn exec(db: *mut ffi::sqlite3, sql: &str) -> Result<(), String> {
    let c = CString::new(sql).map_err(|e| e.to_string())?;
    let mut err: *mut c_char = ptr::null_mut();
    // SAFETY: valid handle and NUL-terminated SQL; err is freed below.
    let rc = unsafe { ffi::sqlite3_exec(db, c.as_ptr(), None, ptr::null_mut(), &mut err) };
    let msg = if err.is_null() {
        String::new()
    } else {
        // SAFETY: err was allocated by SQLite and is NUL-terminated.
        let s = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: err came from sqlite3_exec, is freed once and not used after.
        unsafe { ffi::sqlite3_free(err.cast()) };
        s
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("rc={rc} {msg}"))
    }
}

/// Runs the first statement of `sql` and formats every value.
fn query(db: *mut ffi::sqlite3, sql: &str, types: &[u8]) -> Result<Vec<String>, String> {
    let c = CString::new(sql).map_err(|e| e.to_string())?;
    let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
    // SAFETY: valid handle and NUL-terminated SQL; stmt is finalized below.
    let rc = unsafe { ffi::sqlite3_prepare_v2(db, c.as_ptr(), -1, &mut stmt, ptr::null_mut()) };
    if rc != ffi::SQLITE_OK {
        let msg = errmsg(db);
        // SAFETY: stmt is NULL or the statement prepare returned; finalized once.
        unsafe { ffi::sqlite3_finalize(stmt) };
        return Err(format!("prepare rc={rc} {msg}"));
    }
    if stmt.is_null() {
        return Err("no SQL statement".into());
    }
    struct Finalize(*mut ffi::sqlite3_stmt);
    impl Drop for Finalize {
        fn drop(&mut self) {
            // SAFETY: the statement is finalized exactly once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }
    let _guard = Finalize(stmt);
    // SAFETY: stmt is a live prepared statement (finalized by the guard).
    let ncol = unsafe { ffi::sqlite3_column_count(stmt) } as usize;
    if ncol != types.len() {
        return Err(format!(
            "statement returns {ncol} columns, the type string names {}",
            types.len()
        ));
    }
    let mut out = Vec::new();
    let mut buf = [0 as c_char; 200];
    // SAFETY: stmt is a live prepared statement.
    while unsafe { ffi::sqlite3_step(stmt) } == ffi::SQLITE_ROW {
        for (i, ty) in types.iter().enumerate() {
            let i = i as c_int;
            // SAFETY: stmt has a current row and i is below its column count
            // (checked against the type string above).
            if unsafe { ffi::sqlite3_column_type(stmt, i) } == ffi::SQLITE_NULL {
                out.push("NULL".to_string());
                continue;
            }
            let v = match ty {
                // SAFETY: a current row, i below the column count.
                b'I' => unsafe { ffi::sqlite3_column_int(stmt, i) }.to_string(),
                // SAFETY: a current row, i below the column count; buf is
                // writable for buf.len() bytes and snprintf NUL-terminates it.
                b'R' => unsafe {
                    let d = ffi::sqlite3_column_double(stmt, i);
                    ffi::sqlite3_snprintf(
                        buf.len() as c_int,
                        buf.as_mut_ptr(),
                        c"%.3f".as_ptr(),
                        d,
                    );
                    CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
                },
                _ => {
                    // SAFETY: a current row, i below the column count.
                    let p = unsafe { ffi::sqlite3_column_text(stmt, i) };
                    let bytes = if p.is_null() {
                        &[][..]
                    } else {
                        // SAFETY: a non-NULL result of sqlite3_column_text is
                        // NUL-terminated and valid until the next step.
                        unsafe { CStr::from_ptr(p.cast()) }.to_bytes()
                    };
                    if bytes.is_empty() {
                        "(empty)".to_string()
                    } else {
                        bytes
                            .iter()
                            .map(|&b| {
                                if (b' '..=b'~').contains(&b) {
                                    b as char
                                } else {
                                    '@'
                                }
                            })
                            .collect()
                    }
                }
            };
            out.push(v);
        }
    }
    Ok(out)
}

fn snippet(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() > 160 {
        let mut end = 160;
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &one_line[..end])
    } else {
        one_line
    }
}

fn show(lines: &[String]) -> String {
    if lines.len() > 12 {
        format!("{:?} … ({} lines)", &lines[..12], lines.len())
    } else {
        format!("{lines:?}")
    }
}

/// Runs every record of one script on `conn`.
pub fn run(conn: &Connection, file: &str, records: &[Record]) -> Outcome {
    // SAFETY: the handle stays valid while `conn` is borrowed; it is only used
    // on this thread for the duration of this call.
    let db = unsafe { conn.handle() };
    let mut outcome = Outcome::default();
    let mut threshold = DEFAULT_HASH_THRESHOLD;
    let mut labels: HashMap<String, (usize, String)> = HashMap::new();
    let mut transcript = Md5::new();
    let mut halted = false;
    for record in records {
        let counted = matches!(record.kind, Kind::Statement { .. } | Kind::Query { .. });
        if halted || !record.applies {
            if counted {
                outcome.skipped += 1;
            }
            continue;
        }
        let failure: Option<String> = match &record.kind {
            Kind::HashThreshold(n) => {
                threshold = *n;
                None
            }
            Kind::Halt => {
                halted = true;
                None
            }
            Kind::Statement { expect_ok, sql } => {
                let result = exec(db, sql);
                transcript.update(format!("S{}\n", result.is_ok()).as_bytes());
                match (expect_ok, result) {
                    (true, Ok(())) | (false, Err(_)) => None,
                    (true, Err(e)) => Some(format!("statement failed: {e}\n    {}", snippet(sql))),
                    (false, Ok(())) => Some(format!(
                        "statement succeeded, expected an error\n    {}",
                        snippet(sql)
                    )),
                }
            }
            Kind::Query {
                types,
                sort,
                label,
                sql,
                expected,
            } => match query(db, sql, types.as_bytes()) {
                Err(e) => {
                    transcript.update(b"Qerr\n");
                    Some(format!("query failed: {e}\n    {}", snippet(sql)))
                }
                Ok(mut values) => {
                    match sort {
                        Sort::No => {}
                        Sort::Value => values.sort(),
                        Sort::Row => {
                            let mut rows: Vec<Vec<String>> =
                                values.chunks(types.len()).map(<[String]>::to_vec).collect();
                            rows.sort();
                            values = rows.into_iter().flatten().collect();
                        }
                    }
                    let hash = md5_values(&values);
                    let actual = if threshold > 0 && values.len() > threshold {
                        vec![format!("{} values hashing to {hash}", values.len())]
                    } else {
                        values.clone()
                    };
                    for line in &actual {
                        transcript.update(line.as_bytes());
                        transcript.update(b"\n");
                    }
                    let mut failure = match expected {
                        Some(expected) if *expected != actual => Some(format!(
                            "wrong result\n    {}\n    expected {}\n    actual   {}",
                            snippet(sql),
                            show(expected),
                            show(&actual)
                        )),
                        _ => None,
                    };
                    if let (None, Some(label)) = (&failure, label) {
                        let key = (values.len(), hash);
                        match labels.get(label) {
                            Some(prev) if *prev != key => {
                                failure = Some(format!(
                                    "label {label}: result differs from an earlier query with this label\n    {}",
                                    snippet(sql)
                                ));
                            }
                            Some(_) => {}
                            None => {
                                labels.insert(label.clone(), key);
                            }
                        }
                    }
                    failure
                }
            },
        };
        if counted {
            match failure {
                None => outcome.passed += 1,
                Some(msg) => {
                    outcome.failed += 1;
                    if outcome.failures.len() < MAX_REPORTED {
                        outcome
                            .failures
                            .push(format!("{file}:{}: {msg}", record.line));
                    }
                }
            }
        }
    }
    outcome.digest = hex(&transcript.finalize());
    outcome
}
