//! The `fdbvfs` command-line tool.
//!
//! Every subcommand works on one store: the embedded store in `--dir` (the
//! default), or, when built with the `fdb` feature, the FoundationDB cluster
//! named by `--cluster-file`. Errors end the process with exit code 1 and one
//! line on stderr (`error: …`); logs go to stderr, filtered by `RUST_LOG`
//! (default `warn`).

mod export;
mod generate;
mod history;
mod import;
mod interrupt;
mod shell;
mod sql;
mod stats;
mod store;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use store::StoreArgs;

/// SQLite databases kept in FoundationDB, opened by name.
#[derive(Debug, Parser)]
#[command(name = "fdbvfs", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL statements on a database (created on first use) and print the
    /// rows of each statement as a table.
    Sql {
        /// Database name.
        name: String,
        /// One or more SQL statements separated by `;`.
        sql: String,
        /// Read-only, as the database was at this point: an RFC 3339 time
        /// (2026-11-21T10:00:00Z) or a store version (v:123 or @123).
        #[arg(long, value_name = "TIME|v:VERSION")]
        at: Option<fdbvfs::At>,
    },
    /// Create DST as a fork of SRC (now, or as of --at): a writable
    /// copy-on-write database, made in one small commit whatever the size.
    Fork {
        /// The database to fork.
        src: String,
        /// The new database.
        dst: String,
        /// Fork SRC as it was at this point: an RFC 3339 time or v:VERSION.
        #[arg(long, value_name = "TIME|v:VERSION")]
        at: Option<fdbvfs::At>,
    },
    /// Make NAME's current state equal to its state at --at, as one new
    /// commit (history is kept: the restore can be undone).
    Restore {
        /// Database name.
        name: String,
        /// The point to go back to: an RFC 3339 time or v:VERSION.
        #[arg(long, value_name = "TIME|v:VERSION")]
        at: fdbvfs::At,
    },
    /// Show or set how long old versions of NAME stay readable (time travel,
    /// forks and restores reach back that far; 0 keeps only the latest).
    Retention {
        /// Database name.
        name: String,
        /// New retention: seconds, or a duration like 7d, 12h, 90min.
        duration: Option<String>,
    },
    /// Garbage-collect old versions outside the retention windows (of NAME,
    /// or of every database) and print what was freed.
    Gc {
        /// Database name (default: every database).
        name: Option<String>,
        /// Only report what would be freed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy an SQLite file into a new database NAME, page by page, with a
    /// progress bar; checked with PRAGMA integrity_check, then made visible
    /// under NAME in one step (an interrupted import leaves no NAME).
    Import {
        /// The new database.
        name: String,
        /// The SQLite file to read (rollback-journal or WAL mode).
        file: std::path::PathBuf,
        /// Replace NAME if it exists (in the same step that makes the import
        /// visible).
        #[arg(long)]
        force: bool,
    },
    /// Write a consistent snapshot of NAME (now, or as of --at) to a plain
    /// SQLite file, with a progress bar (written to OUT.part, checked, then
    /// renamed).
    Export {
        /// Database name.
        name: String,
        /// The SQLite file to write.
        out: std::path::PathBuf,
        /// Export NAME as it was at this point: an RFC 3339 time or v:VERSION.
        #[arg(long, value_name = "TIME|v:VERSION")]
        at: Option<fdbvfs::At>,
        /// Overwrite OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Interactive SQL shell on NAME (line editing, history, dot-commands:
    /// .help); reads a script from standard input when it is not a terminal.
    Shell {
        /// Database name (created on first use).
        name: String,
    },
    /// Size, history (versions kept, oldest readable time) and this
    /// process's counters (cache hit rate, round trips, conflicts), for
    /// NAME or every database.
    Stats {
        /// Database name (default: every database).
        name: Option<String>,
        /// Print JSON.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print the Prometheus text format (per-database gauges, then
        /// this process's counters), e.g. for node_exporter's textfile
        /// collector.
        #[arg(long)]
        prometheus: bool,
    },
    /// List the databases in the store.
    List,
    /// Drop a database and all of its pages.
    Drop {
        /// Database name.
        name: String,
    },
    /// Print a shell completion script: `fdbvfs completions bash >
    /// /usr/share/bash-completion/completions/fdbvfs` (zsh: a file `_fdbvfs`
    /// in $fpath; fish: ~/.config/fish/completions/fdbvfs.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `fdbvfs man > fdbvfs.1; man -l
    /// fdbvfs.1`; with --out-dir, write one page per command there.
    Man {
        /// Write fdbvfs.1, fdbvfs-sql.1, … into this directory.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// What can go wrong in a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] fdbvfs::Error),
    #[error("statement {n}: {source}")]
    Sql { n: usize, source: rusqlite::Error },
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second initialisation (there is none) would only be ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli, stdout: &mut dyn Write) -> Result<(), Error> {
    match cli.command {
        Command::Sql { name, sql, at } => {
            let store = cli.store.open()?;
            match at {
                Some(at) => {
                    let conn = store.open_at(&name, at)?;
                    sql::run(&conn, &sql, stdout)
                        .map_err(|e| history::explain_read_only(e, &name, at))
                }
                None => sql::run(&store.open(&name)?, &sql, stdout),
            }
        }
        Command::Fork { src, dst, at } => history::fork(&cli.store.open()?, &src, &dst, at, stdout),
        Command::Restore { name, at } => history::restore(&cli.store.open()?, &name, at, stdout),
        Command::Retention { name, duration } => {
            history::retention(&cli.store.open()?, &name, duration.as_deref(), stdout)
        }
        Command::Gc { name, dry_run } => {
            let store = cli.store.open()?;
            if !dry_run {
                import::sweep_stale(store.page_store())?;
            }
            history::gc(&store, name.as_deref(), dry_run, stdout)
        }
        Command::Import { name, file, force } => {
            interrupt::install();
            import::import(&cli.store.open()?, &name, &file, force, stdout)
        }
        Command::Export {
            name,
            out,
            at,
            force,
        } => {
            interrupt::install();
            export::export(&cli.store.open()?, &name, &out, at, force, stdout)
        }
        Command::Shell { name } => shell::shell(&cli.store.open()?, &name, stdout),
        Command::Stats {
            name,
            json,
            prometheus,
        } => {
            let format = match (json, prometheus) {
                (true, _) => stats::Format::Json,
                (_, true) => stats::Format::Prometheus,
                _ => stats::Format::Text,
            };
            stats::stats(&cli.store.open()?, name.as_deref(), format, stdout)
        }
        Command::List => {
            let store = cli.store.open()?;
            for name in import::visible_names(&store)? {
                writeln!(stdout, "{name}")?;
            }
            Ok(stdout.flush()?)
        }
        Command::Completions { shell } => generate::completions(shell, stdout),
        Command::Man { out_dir } => generate::man(out_dir.as_deref(), stdout),
        Command::Drop { name } => {
            let store = cli.store.open()?;
            if store.drop_database(&name)? {
                Ok(())
            } else {
                Err(Error::Usage(format!("no database named {name:?}")))
            }
        }
    }
}

/// Prints one line on stderr: messages from SQLite or the store may hold
/// newlines, which are folded.
fn print_error(msg: &str) {
    let line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Panics are bugs; still, report them in one line, without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        print_error(&format!("internal error: {msg}{at}"));
    }));
    let cli = Cli::parse();
    init_logging();
    match std::panic::catch_unwind(move || run(cli, &mut std::io::stdout().lock())) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // `fdbvfs list | head` is not an error.
        Ok(Err(Error::Io(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            print_error(&e.to_string());
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_global_dir_after_subcommand() {
        let cli =
            Cli::try_parse_from(["fdbvfs", "sql", "db", "SELECT 1", "--dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.store.dir, Some(std::path::PathBuf::from("/tmp/x")));
        assert!(matches!(cli.command, Command::Sql { .. }));
    }

    fn fdbvfs(dir: &std::path::Path, args: &[&str]) -> Result<String, Error> {
        let mut argv = vec!["fdbvfs", "--dir", dir.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run(Cli::try_parse_from(argv).unwrap(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn sql_list_drop_on_an_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = fdbvfs(
            d,
            &[
                "sql",
                "demo",
                "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2); SELECT sum(x) AS s FROM t",
            ],
        )
        .unwrap();
        assert_eq!(out, " s\n---\n 3\n(1 row)\n");
        fdbvfs(d, &["sql", "other", "CREATE TABLE u(y)"]).unwrap();
        assert_eq!(fdbvfs(d, &["list"]).unwrap(), "demo\nother\n");
        assert_eq!(fdbvfs(d, &["drop", "demo"]).unwrap(), "");
        assert_eq!(fdbvfs(d, &["list"]).unwrap(), "other\n");
        let err = fdbvfs(d, &["drop", "demo"]).unwrap_err().to_string();
        assert_eq!(err, "no database named \"demo\"");
        // A dropped name comes back empty.
        let err = fdbvfs(d, &["sql", "demo", "SELECT * FROM t"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such table: t"), "{err}");
    }
}
