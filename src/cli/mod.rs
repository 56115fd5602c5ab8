//! The `fdbvfs` command-line tool.
//!
//! Every subcommand works on one store: the embedded store in `--dir` (the
//! default), or, when built with the `fdb` feature, the FoundationDB cluster
//! named by `--cluster-file`. Errors end the process with exit code 1 and one
//! line on stderr (`error: …`); logs go to stderr, filtered by `RUST_LOG`
//! (default `warn`).

mod sql;
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
    },
    /// List the databases in the store.
    List,
    /// Drop a database and all of its pages.
    Drop {
        /// Database name.
        name: String,
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

fn run(cli: Cli) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Sql { name, sql } => {
            let store = cli.store.open()?;
            let conn = store.open(&name)?;
            sql::run(&conn, &sql, &mut stdout)
        }
        Command::List => {
            let store = cli.store.open()?;
            for name in store.list()? {
                writeln!(stdout, "{name}")?;
            }
            Ok(stdout.flush()?)
        }
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
    match std::panic::catch_unwind(move || run(cli)) {
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
        assert_eq!(cli.store.dir, std::path::PathBuf::from("/tmp/x"));
        assert!(matches!(cli.command, Command::Sql { .. }));
    }
}
