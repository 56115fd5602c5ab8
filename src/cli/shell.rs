//! `fdbvfs shell NAME`: an interactive SQL shell on one database.
//!
//! On a terminal it edits lines with rustyline and keeps a history
//! (`$FDBVFS_HISTORY`, else `~/.fdbvfs_history`); otherwise it reads a
//! script from standard input without prompts. A statement runs once
//! SQLite's `sqlite3_complete` says the text typed so far ends one (so a
//! statement may span lines; a `;` inside a string or trigger body does not
//! end it), with the same table output as `fdbvfs sql`. A line starting
//! with `.` (outside a statement) is a dot-command; `.help` lists them.
//! Errors print one line on stderr and the shell goes on; a script that had
//! errors ends with exit code 1.

use std::ffi::CString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use fdbvfs::{At, Store};
use rusqlite::Connection;

use super::import::visible_names;
use super::{history, interrupt, sql, stats, Error};

const HELP: &str = "\
SQL statements end with ';' and may span lines. Dot-commands:
  .at VERSION|TIME   reopen read-only as of v:N (or @N) or an RFC 3339 time
  .at now            back to the latest version, writable
  .databases         list the databases of the store
  .fork DST          fork this database (as of .at, if set) into DST
  .help              this text
  .open NAME         switch to database NAME (created on first use)
  .quit              leave (also .exit, or Ctrl-D)
  .stats             size, history and this session's counters
  .tables            list tables and views
";

/// Environment variable naming the history file.
pub const HISTORY_ENV: &str = "FDBVFS_HISTORY";

/// Whether `sql` ends with a complete statement (SQLite's own test: a `;`
/// outside strings, comments and trigger bodies).
pub fn is_complete(sql: &str) -> bool {
    match CString::new(sql) {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the
        // call; sqlite3_complete only reads it.
        Ok(c) => unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 },
        // An embedded NUL: run it and let SQLite report the error.
        Err(_) => true,
    }
}

/// Whether `line` holds only whitespace and comments (skipped between
/// statements, like the sqlite3 shell does).
fn only_comments(line: &str) -> bool {
    let mut rest = line.trim_start();
    loop {
        if rest.is_empty() || rest.starts_with("--") {
            return true;
        }
        match rest.strip_prefix("/*") {
            Some(r) => match r.find("*/") {
                Some(end) => rest = r[end + 2..].trim_start(),
                None => return false,
            },
            None => return false,
        }
    }
}

/// The state of a shell session.
struct Session<'a> {
    store: &'a Store,
    name: String,
    /// Set by `.at`: the version read (read-only).
    at: Option<fdbvfs::Version>,
    conn: Connection,
}

/// What a dot-command asks of the loop.
enum Next {
    Continue,
    Quit,
}

impl<'a> Session<'a> {
    fn open(store: &'a Store, name: &str) -> Result<Session<'a>, Error> {
        Ok(Session {
            store,
            name: name.to_string(),
            at: None,
            conn: store.open(name)?,
        })
    }

    fn prompt(&self) -> String {
        match self.at {
            Some(v) => format!("{}@v:{v}> ", self.name),
            None => format!("{}> ", self.name),
        }
    }

    fn continuation(&self) -> String {
        let width = self.prompt().chars().count();
        format!("{:>w$}", "...> ", w = width.max(5))
    }

    fn idle(&self) -> Result<(), Error> {
        if self.conn.is_autocommit() {
            Ok(())
        } else {
            Err(Error::Usage(
                "a transaction is open: COMMIT or ROLLBACK it first".into(),
            ))
        }
    }

    fn run_sql(&self, text: &str, out: &mut dyn Write) -> Result<(), Error> {
        interrupt::clear();
        let _watch = interrupt::watch(&self.conn);
        match sql::run(&self.conn, text, out) {
            Err(Error::Sql { n, source })
                if self.at.is_some()
                    && source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) =>
            {
                Err(Error::Usage(format!(
                    "statement {n}: {source} (read-only at v:{}; `.at now` goes back to the latest version)",
                    self.at.unwrap_or_default()
                )))
            }
            // Only comments: nothing to do.
            Err(Error::Usage(m)) if m == "no SQL statement given" => Ok(()),
            other => other,
        }
    }

    fn dot(&mut self, line: &str, out: &mut dyn Write) -> Result<Next, Error> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or(".");
        let arg = words.collect::<Vec<_>>().join(" ");
        let need_arg = |what: &str| -> Result<(), Error> {
            if arg.is_empty() {
                Err(Error::Usage(format!("{cmd} needs {what}")))
            } else {
                Ok(())
            }
        };
        match cmd {
            ".quit" | ".exit" | ".q" => return Ok(Next::Quit),
            ".help" => out.write_all(HELP.as_bytes())?,
            ".databases" | ".dbs" => {
                for n in visible_names(self.store)? {
                    let mark = if n == self.name { " (current)" } else { "" };
                    writeln!(out, "{n}{mark}")?;
                }
            }
            ".tables" => {
                let names = (|| {
                    self.conn
                        .prepare(
                            "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
                             AND name NOT LIKE 'sqlite_%' ORDER BY name",
                        )?
                        .query_map([], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })()
                .map_err(fdbvfs::Error::from)?;
                for n in names {
                    writeln!(out, "{n}")?;
                }
            }
            ".stats" => {
                let db = self
                    .store
                    .page_store()
                    .open(&self.name)
                    .map_err(fdbvfs::Error::from)?;
                let s = stats::db_stats(&db)?;
                out.write_all(stats::db_text(&s).as_bytes())?;
                let counters = self.store.page_store().stats();
                out.write_all(stats::process_text(&counters, "this session").as_bytes())?;
            }
            ".at" => {
                need_arg("a version (v:N), an RFC 3339 time, or now")?;
                self.idle()?;
                if arg.eq_ignore_ascii_case("now") || arg.eq_ignore_ascii_case("latest") {
                    self.conn = self.store.open(&self.name)?;
                    self.at = None;
                    writeln!(out, "reading {:?} at its latest version", self.name)?;
                } else {
                    let at: At = arg.parse().map_err(|e: vfs::at::BadAt| Error::Usage(e.0))?;
                    let v = self.store.version_at(&self.name, at)?;
                    self.conn = self.store.open_at(&self.name, At::Version(v))?;
                    self.at = Some(v);
                    writeln!(
                        out,
                        "reading {:?} as of v:{v}, read-only; `.at now` goes back to the latest version",
                        self.name
                    )?;
                }
            }
            ".fork" => {
                need_arg("the new database's name")?;
                history::fork(self.store, &self.name, &arg, self.at.map(At::Version), out)?;
            }
            ".open" => {
                need_arg("a database name")?;
                self.idle()?;
                *self = Session::open(self.store, &arg)?;
            }
            other => {
                return Err(Error::Usage(format!(
                    "unknown command {other}; .help lists the commands"
                )))
            }
        }
        out.flush()?;
        Ok(Next::Continue)
    }
}

/// Where lines come from.
enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Script(Box<dyn BufRead>),
}

enum Line {
    Text(String),
    /// Ctrl-C: drop the statement being typed.
    Cancel,
    End,
}

impl Input {
    fn read(&mut self, prompt: &str) -> Result<Line, Error> {
        match self {
            Input::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(l) => Ok(Line::Text(l)),
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Cancel),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Line::End),
                Err(e) => Err(Error::Usage(format!("reading input: {e}"))),
            },
            Input::Script(r) => {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Ok(Line::End);
                }
                if l.ends_with('\n') {
                    l.pop();
                    if l.ends_with('\r') {
                        l.pop();
                    }
                }
                Ok(Line::Text(l))
            }
        }
    }

    fn remember(&mut self, entry: &str) {
        if let Input::Editor { editor, .. } = self {
            let _ = editor.add_history_entry(entry);
        }
    }

    fn interactive(&self) -> bool {
        matches!(self, Input::Editor { .. })
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        if let Input::Editor {
            editor,
            history: Some(path),
        } = self
        {
            if let Err(e) = editor.save_history(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not save the shell history");
            }
        }
    }
}

fn history_path() -> Option<PathBuf> {
    let from = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty());
    from(HISTORY_ENV)
        .map(PathBuf::from)
        .or_else(|| from("HOME").map(|h| PathBuf::from(h).join(".fdbvfs_history")))
}

fn editor() -> Result<Input, Error> {
    let config = rustyline::Config::builder()
        .max_history_size(10_000)
        .and_then(|b| b.history_ignore_dups(true))
        .map_err(|e| Error::Usage(format!("line editor: {e}")))?
        .auto_add_history(false)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .map_err(|e| Error::Usage(format!("line editor: {e}")))?;
    let history = history_path();
    if let Some(p) = &history {
        // A missing history file is normal the first time.
        let _ = editor.load_history(p);
    }
    Ok(Input::Editor {
        editor: Box::new(editor),
        history,
    })
}

/// `fdbvfs shell NAME`: reads from a terminal with line editing, else a
/// script from standard input.
pub fn shell(store: &Store, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let input = if std::io::stdin().is_terminal() {
        // Ctrl-C at the prompt drops the statement being typed (rustyline
        // reads it as a key); while a statement runs, it interrupts that
        // statement. A script on stdin keeps the default: Ctrl-C ends it.
        interrupt::install();
        editor()?
    } else {
        Input::Script(Box::new(std::io::stdin().lock()))
    };
    run(store, name, input, out)
}

/// Runs a script read from `script`.
#[cfg(test)]
fn run_script(
    store: &Store,
    name: &str,
    script: impl BufRead + 'static,
    out: &mut dyn Write,
) -> Result<(), Error> {
    run(store, name, Input::Script(Box::new(script)), out)
}

fn run(store: &Store, name: &str, mut input: Input, out: &mut dyn Write) -> Result<(), Error> {
    let mut session = Session::open(store, name)?;
    let interactive = input.interactive();
    if interactive {
        writeln!(
            out,
            "fdbvfs {} shell on {name:?}; .help for help, .quit to leave",
            env!("CARGO_PKG_VERSION")
        )?;
        out.flush()?;
    }
    let mut errors = 0usize;
    let mut report = |e: Error| {
        errors += 1;
        let line = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("error: {line}");
    };
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            session.prompt()
        } else {
            session.continuation()
        };
        let line = match input.read(&prompt)? {
            Line::Text(l) => l,
            Line::Cancel => {
                buf.clear();
                continue;
            }
            Line::End => break,
        };
        if buf.is_empty() {
            let t = line.trim();
            if only_comments(t) {
                continue;
            }
            if t.starts_with('.') {
                input.remember(t);
                match session.dot(t, out) {
                    Ok(Next::Quit) => break,
                    Ok(Next::Continue) => {}
                    Err(Error::Io(e)) => return Err(Error::Io(e)),
                    Err(e) => report(e),
                }
                continue;
            }
        }
        buf.push_str(&line);
        buf.push('\n');
        if is_complete(&buf) {
            input.remember(buf.trim_end());
            match session.run_sql(&buf, out) {
                Ok(()) => {}
                Err(Error::Io(e)) => return Err(Error::Io(e)),
                Err(e) => report(e),
            }
            buf.clear();
        }
    }
    // Text after the last `;` (a final statement without one) still runs.
    if !buf.trim().is_empty() {
        if let Err(e) = session.run_sql(&buf, out) {
            if let Error::Io(e) = e {
                return Err(Error::Io(e));
            }
            report(e);
        }
    }
    out.flush()?;
    if errors > 0 && !interactive {
        return Err(Error::Usage(format!(
            "{errors} error{} in the script",
            if errors == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(store: &Store, name: &str, text: &str) -> (String, Result<(), String>) {
        let mut out = Vec::new();
        let r = run_script(
            store,
            name,
            std::io::Cursor::new(text.as_bytes().to_vec()),
            &mut out,
        )
        .map_err(|e| e.to_string());
        (String::from_utf8(out).unwrap(), r)
    }

    #[test]
    fn comment_lines() {
        assert!(only_comments("  -- x"));
        assert!(only_comments("/* a */ -- b"));
        assert!(only_comments(""));
        assert!(!only_comments("/* a"));
        assert!(!only_comments("/* a */ SELECT 1;"));
    }

    #[test]
    fn completeness_follows_sqlite() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT 'a;"));
        assert!(is_complete("SELECT 'a;';\n"));
        assert!(!is_complete(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;"
        ));
        assert!(is_complete(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
        ));
    }

    #[test]
    fn runs_multi_line_statements_and_dot_commands() {
        let store = Store::in_memory().unwrap();
        let (out, r) = script(
            &store,
            "s",
            "CREATE TABLE t(x);\nINSERT INTO t\n  VALUES (1),\n  (2);\n\
             SELECT sum(x) AS s\nFROM t;\n.tables\n-- a comment\n.databases\n\
             SELECT 'a;b' AS v\n",
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            " s\n---\n 3\n(1 row)\nt\ns (current)\n v\n-----\n a;b\n(1 row)\n"
        );
    }

    #[test]
    fn at_fork_and_errors() {
        let store = Store::in_memory().unwrap();
        let conn = store.open("h").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let v: String = conn
            .query_row("PRAGMA fdb_version", [], |r| r.get(0))
            .unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let text = format!(
            ".at v:{v}\nSELECT count(*) AS n FROM t;\nINSERT INTO t VALUES (3);\n\
             .fork old\n.at now\nSELECT count(*) AS n FROM t;\n.bogus\n.open old\n\
             SELECT count(*) AS n FROM t;\n.stats\n"
        );
        let (out, r) = script(&store, "h", &text);
        assert_eq!(r, Err("2 errors in the script".to_string()));
        assert!(out.contains(&format!("as of v:{v}, read-only")), "{out}");
        assert!(out.contains(" n\n---\n 1\n(1 row)\n"), "{out}");
        assert!(out.contains(" n\n---\n 2\n(1 row)\n"), "{out}");
        assert!(out.contains("into \"old\""), "{out}");
        assert!(out.contains("database: old"), "{out}");
        assert!(out.contains("this session:"), "{out}");
        let n: i64 = store
            .open("old")
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
