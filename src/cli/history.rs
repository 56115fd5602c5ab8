//! History subcommands: `fork`, `restore`, `retention`, `gc` (and the
//! `--at` of `sql`, handled in `mod.rs`).
//!
//! Points in history (`--at`) are an RFC 3339 time (`2026-11-21T10:00:00Z`,
//! an offset like `+01:00` allowed, no zone meaning UTC) or a store version
//! written `v:123` or `@123` (what `PRAGMA fdb_version` prints).

use std::io::Write;
use std::time::Duration;

use fdbvfs::{At, GcReport, Store};

use super::table::{Cell, Table};
use super::Error;

/// Adds to a write refused on an `sql --at` connection why, and what to do.
pub fn explain_read_only(e: Error, name: &str, at: At) -> Error {
    match e {
        Error::Sql { n, source }
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) =>
        {
            Error::Usage(format!(
                "statement {n}: {source}: `sql --at {at}` reads {name:?} as it was then, read-only; to change that state, fork it (fdbvfs fork {} NEW --at {at}) or restore it (fdbvfs restore {} --at {at})",
                shell_word(name),
                shell_word(name)
            ))
        }
        e => e,
    }
}

/// `fdbvfs fork SRC DST [--at T]`.
pub fn fork(
    store: &Store,
    src: &str,
    dst: &str,
    at: Option<At>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let v = store.fork(src, dst, at)?;
    let when = at.map(|a| format!(" (as of {a})")).unwrap_or_default();
    writeln!(out, "forked {src:?} at version {v}{when} into {dst:?}")?;
    Ok(out.flush()?)
}

/// `fdbvfs restore NAME --at T`. A conflict with concurrent writers (the
/// restore is an ordinary commit) is retried by [`Store::restore`].
pub fn restore(store: &Store, name: &str, at: At, out: &mut dyn Write) -> Result<(), Error> {
    let target = store.version_at(name, at)?;
    let v = store.restore(name, At::Version(target))?;
    let when = match at {
        At::Time(_) => format!(" (as of {at})"),
        At::Version(_) => String::new(),
    };
    writeln!(
        out,
        "restored {name:?} to version {target}{when} as new version {v}; undo with: fdbvfs restore {} --at v:{}",
        shell_word(name),
        v.before(1)
    )?;
    Ok(out.flush()?)
}

/// `fdbvfs retention NAME [DURATION]`: shows, or sets then shows, how long
/// old versions stay readable.
pub fn retention(
    store: &Store,
    name: &str,
    set: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if let Some(s) = set {
        let d = vfs::pragma::parse_duration(s).ok_or_else(|| {
            Error::Usage(format!(
                "retention takes seconds (an integer >= 0) or a duration like 7d or 12h, not {s:?}"
            ))
        })?;
        store.set_retention(name, d)?;
    }
    let d = store.retention(name)?;
    writeln!(
        out,
        "retention of {name:?}: {} s ({})",
        d.as_secs(),
        humanize(d)
    )?;
    Ok(out.flush()?)
}

/// `fdbvfs gc [NAME] [--dry-run]`: one table row per database.
pub fn gc(
    store: &Store,
    name: Option<&str>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let reports = store.gc(name, dry_run)?;
    out.write_all(gc_table(&reports).render().as_bytes())?;
    let versions: u64 = reports.iter().map(|r| r.page_versions).sum();
    let bytes: u64 = reports.iter().map(|r| r.page_bytes).sum();
    let keys: u64 = reports.iter().map(|r| r.metadata_keys).sum();
    if dry_run {
        writeln!(
            out,
            "dry run: would free {versions} page versions ({bytes} bytes) and {keys} metadata keys; nothing was removed"
        )?;
    } else {
        writeln!(
            out,
            "freed {versions} page versions ({bytes} bytes) and {keys} metadata keys"
        )?;
    }
    Ok(out.flush()?)
}

/// The GC reports as a table.
pub fn gc_table(reports: &[GcReport]) -> Table {
    let mut t = Table::new(
        [
            "database",
            "horizon",
            "fork_pins",
            "page_versions",
            "page_bytes",
            "metadata_keys",
            "transactions",
        ]
        .map(String::from)
        .to_vec(),
    );
    let num = |n: u64| Cell {
        text: n.to_string(),
        right: true,
    };
    for r in reports {
        let pins = r
            .fork_pins
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        t.rows.push(vec![
            Cell {
                text: r.database.clone(),
                right: false,
            },
            num(r.horizon.get()),
            Cell {
                text: if pins.is_empty() { "-".into() } else { pins },
                right: false,
            },
            num(r.page_versions),
            num(r.page_bytes),
            num(r.metadata_keys),
            num(r.transactions),
        ]);
    }
    t
}

/// `7days`, `1h 30m`, `0s`.
fn humanize(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// `name` quoted for a POSIX shell when it needs it.
fn shell_word(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b))
    {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_table_lists_each_database() {
        let r = GcReport {
            database: "orders".into(),
            horizon: fdbvfs::Version::new(42),
            fork_pins: vec![fdbvfs::Version::new(7), fdbvfs::Version::new(9)],
            page_versions: 10,
            page_bytes: 40960,
            metadata_keys: 3,
            transactions: 0,
            dry_run: true,
        };
        let s = gc_table(&[r]).render();
        assert!(s.contains("orders"), "{s}");
        assert!(s.contains("7,9"), "{s}");
        assert!(s.contains("40960"), "{s}");
        assert!(s.contains("(1 row)"), "{s}");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("orders"), "orders");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
