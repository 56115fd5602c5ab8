//! `fdbvfs sql NAME "SQL…"`: runs every statement of the text in order and
//! prints the rows of each statement that returns columns as a table.

use std::io::Write;
use std::time::Duration;

use pagestore::retry::{self, Backoff, Pause};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection, Statement};

use super::table::{Cell, Table};
use super::Error;

/// How many times an autocommit statement that lost an optimistic conflict
/// (SQLITE_BUSY) is re-run before the error is reported.
const BUSY_RETRIES: u32 = 8;

/// Runs all statements of `sql` on `conn`, writing result tables to `out`.
///
/// Statements run one by one in autocommit mode unless the text opens a
/// transaction itself. An autocommit statement that fails with SQLITE_BUSY (a
/// conflict with a concurrent writer: nothing was written) is re-run with a
/// short backoff; inside an explicit transaction the error is reported,
/// because only the whole transaction could be re-run.
pub fn run(conn: &Connection, sql: &str, out: &mut dyn Write) -> Result<(), Error> {
    let mut batch = Batch::new(conn, sql);
    let mut n = 0;
    let mut printed = false;
    loop {
        let next = batch
            .next()
            .map_err(|source| Error::Sql { n: n + 1, source })?;
        let Some(mut stmt) = next else { break };
        n += 1;
        let table = run_statement(conn, &mut stmt).map_err(|source| Error::Sql { n, source })?;
        if let Some(table) = table {
            if printed {
                out.write_all(b"\n")?;
            }
            out.write_all(table.render().as_bytes())?;
            printed = true;
        }
    }
    if n == 0 {
        return Err(Error::Usage("no SQL statement given".into()));
    }
    out.flush()?;
    Ok(())
}

fn run_statement(conn: &Connection, stmt: &mut Statement<'_>) -> rusqlite::Result<Option<Table>> {
    let autocommit = conn.is_autocommit();
    // 4, 8, 16 … ms: the n-th re-run waits 2^(n+1) ms.
    let policy = Backoff::new(
        Duration::from_millis(4),
        Duration::from_millis(512),
        BUSY_RETRIES,
    );
    retry::run(
        &policy,
        |e| fdbvfs::is_busy(e) && autocommit && conn.is_autocommit(),
        |_, attempt| {
            tracing::info!(attempt, "statement conflicted, re-running it");
            Pause::Backoff
        },
        |_| collect(stmt),
    )
}

/// Steps the statement to its end, collecting rows when it has columns.
fn collect(stmt: &mut Statement<'_>) -> rusqlite::Result<Option<Table>> {
    let ncol = stmt.column_count();
    let mut table = Table::new(stmt.column_names().map(String::from).collect());
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(ncol);
        for i in 0..ncol {
            cells.push(Cell::from_value(row.get_ref(i)?));
        }
        table.rows.push(cells);
    }
    Ok((ncol > 0).then_some(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(conn: &Connection, text: &str) -> Result<String, Error> {
        let mut out = Vec::new();
        run(conn, text, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn runs_every_statement_and_prints_each_result() {
        let conn = Connection::open_in_memory().unwrap();
        let out = sql(
            &conn,
            "CREATE TABLE t(x, y); INSERT INTO t VALUES (1, 'a'), (2, NULL);\n\
             SELECT * FROM t; -- comment\n SELECT count(*) AS n FROM t;",
        )
        .unwrap();
        assert_eq!(
            out,
            " x | y\n---+------\n 1 | a\n 2 | NULL\n(2 rows)\n\n n\n---\n 2\n(1 row)\n"
        );
    }

    #[test]
    fn semicolons_inside_strings_and_triggers_do_not_split() {
        let conn = Connection::open_in_memory().unwrap();
        let out = sql(
            &conn,
            "CREATE TABLE t(x); CREATE TABLE log(m);\n\
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('a;b'); END;\n\
             INSERT INTO t VALUES ('x;y'); SELECT m FROM log; SELECT x FROM t",
        )
        .unwrap();
        assert_eq!(
            out,
            " m\n-----\n a;b\n(1 row)\n\n x\n-----\n x;y\n(1 row)\n"
        );
    }

    #[test]
    fn errors_name_the_statement() {
        let conn = Connection::open_in_memory().unwrap();
        let err = sql(&conn, "SELECT 1; SELEC 2").unwrap_err().to_string();
        assert!(err.starts_with("statement 2: "), "{err}");
        assert!(err.contains("syntax error"), "{err}");
        let err = sql(&conn, "SELECT * FROM missing").unwrap_err().to_string();
        assert!(err.contains("no such table: missing"), "{err}");
        let err = sql(&conn, " -- nothing\n ").unwrap_err().to_string();
        assert_eq!(err, "no SQL statement given");
    }

    #[test]
    fn statements_without_columns_print_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            sql(&conn, "CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap(),
            ""
        );
        let out = sql(&conn, "INSERT INTO t VALUES (2) RETURNING x").unwrap();
        assert_eq!(out, " x\n---\n 2\n(1 row)\n");
    }
}
