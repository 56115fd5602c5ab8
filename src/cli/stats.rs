//! `fdbvfs stats [NAME] [--json|--prometheus]`: size, history and counters.
//!
//! Per database (NAME, or every database):
//! * `pages`, `page_size`, `bytes`: the size at the latest version;
//! * `version`: the latest store version;
//! * `commits` and `page_versions`: commits kept in the change log (the
//!   readable history, back to the GC horizon) and the page versions they
//!   wrote. Counted from the change log, not by scanning page keys (a scan
//!   would read every page's bytes): the cost is one range read per
//!   ~100 KB of change log, proportional to the commits in the retention
//!   window. GC also keeps, per page, the newest version at or below the
//!   horizon (at most one per page, not counted here);
//! * `retention`, `created`, `oldest_readable` (the later of creation and
//!   now minus the retention: time travel is guaranteed back to there) and
//!   `gc_horizon` (versions before it were garbage-collected; 0: none yet).
//!
//! Then the counters of **this process** (a one-shot CLI counts only what
//! it did itself, including reading these statistics; the shell's `.stats`
//! counts its whole session): page-cache hits, misses and hit rate, store
//! round trips (read versions, reads, commits), commits and conflicts.
//!
//! `--prometheus` prints the same in the Prometheus text format: one gauge
//! family per database field, labelled `database` (`fdbvfs_database_…`;
//! `fdbvfs_database_gc_horizon_version` is GC's progress), then
//! [`fdbvfs::Metrics`] of this process. A service that embeds the library
//! serves `Store::metrics().to_prometheus()` instead, whose counters cover
//! its whole life.

use std::io::Write;
use std::time::Duration;

use fdbvfs::metrics::{render, MetricFamily, MetricKind, Value as Sample};
use fdbvfs::Store;
use pagestore::{Database, DbStats, StoreStats};
use serde_json::{json, Value};
use vfs::at::format_micros;

use super::import::{human_bytes, is_temporary};
use super::table::{Cell, Table};
use super::Error;

/// One database as JSON.
fn db_json(s: &DbStats) -> Value {
    json!({
        "name": s.name,
        "id": s.id.get(),
        "pages": s.pages,
        "page_size": s.page_size,
        "bytes": s.bytes(),
        "version": s.version,
        "commits": s.commits,
        "page_versions": s.page_versions,
        "retention_secs": s.retention.as_secs(),
        "created": format_micros(s.created_micros),
        "oldest_readable": format_micros(s.oldest_readable_micros),
        "gc_horizon": s.gc_horizon,
        "fork_of": s.fork_of.map(|(id, v)| json!({"id": id.get(), "version": v})),
    })
}

fn store_err(e: pagestore::Error) -> Error {
    Error::from(fdbvfs::Error::from(e))
}

/// Statistics of one database.
pub fn db_stats(db: &Database) -> Result<DbStats, Error> {
    db.stats().map_err(store_err)
}

fn process_json(s: &StoreStats) -> Value {
    json!({
        "note": "counters of this process since it started",
        "cache": {
            "hits": s.cache.hits,
            "misses": s.cache.misses,
            "hit_rate": s.cache.hit_rate(),
            "bytes": s.cache.bytes,
            "capacity": s.cache.capacity,
        },
        "round_trips": s.kv.round_trips(),
        "read_versions": s.kv.read_versions,
        "reads": s.kv.reads,
        "store_commits": s.kv.commits,
        "store_conflicts": s.kv.conflicts,
        "commits": s.commits,
        "conflicts": s.conflicts,
        "bytes_read": s.kv.bytes_read,
        "bytes_written": s.kv.bytes_written,
    })
}

/// Text lines about this process's counters; `whose` names the process.
pub fn process_text(s: &StoreStats, whose: &str) -> String {
    format!(
        "{whose}: cache hit rate {:.1}% ({} hits, {} misses; {} cached of {}), {} store round trips ({} read versions, {} reads, {} commits), {} commits, {} conflicts\n",
        100.0 * s.cache.hit_rate(),
        s.cache.hits,
        s.cache.misses,
        human_bytes(s.cache.bytes),
        human_bytes(s.cache.capacity),
        s.kv.round_trips(),
        s.kv.read_versions,
        s.kv.reads,
        s.kv.commits,
        s.commits,
        s.conflicts + s.kv.conflicts,
    )
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// One database, as `field: value` lines.
pub fn db_text(s: &DbStats) -> String {
    let mut lines = vec![
        format!("database: {}", s.name),
        format!(
            "size: {} pages of {} bytes ({})",
            s.pages,
            s.page_size,
            human_bytes(s.bytes())
        ),
        format!("version: {}", s.version),
        format!(
            "history: {} commits, {} page versions (since the GC horizon)",
            s.commits, s.page_versions
        ),
        format!(
            "retention: {} s ({})",
            s.retention.as_secs(),
            humanize(s.retention)
        ),
        format!("created: {}", format_micros(s.created_micros)),
        format!(
            "oldest readable: {}",
            format_micros(s.oldest_readable_micros)
        ),
        format!(
            "gc horizon: {}",
            if s.gc_horizon == fdbvfs::Version::ZERO {
                "none (nothing collected yet)".to_string()
            } else {
                format!("v:{} (older versions collected)", s.gc_horizon)
            }
        ),
    ];
    if let Some((id, v)) = s.fork_of {
        lines.push(format!("fork of: database id {id} at v:{v}"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Several databases as one table.
pub fn table(all: &[DbStats]) -> Table {
    let mut t = Table::new(
        [
            "database",
            "pages",
            "page_size",
            "bytes",
            "version",
            "commits",
            "page_versions",
            "retention",
            "oldest_readable",
        ]
        .map(String::from)
        .to_vec(),
    );
    let num = |n: u64| Cell {
        text: n.to_string(),
        right: true,
    };
    let text = |s: String| Cell {
        text: s,
        right: false,
    };
    for s in all {
        t.rows.push(vec![
            text(s.name.clone()),
            num(s.pages),
            num(u64::from(s.page_size)),
            num(s.bytes()),
            num(s.version.get()),
            num(s.commits),
            num(s.page_versions),
            text(humanize(s.retention)),
            text(format_micros(s.oldest_readable_micros)),
        ]);
    }
    t
}

/// How `stats` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `field: value` lines or a table, then one line of counters.
    Text,
    /// One JSON document.
    Json,
    /// The Prometheus text exposition format.
    Prometheus,
}

/// Seconds since the Unix epoch, from microseconds.
fn seconds(micros: u64) -> Sample {
    Sample::Float(micros as f64 / 1e6)
}

/// The databases' fields as Prometheus gauge families, one sample per
/// database (label `database`).
pub fn database_families(all: &[DbStats]) -> Vec<MetricFamily> {
    type Field = fn(&DbStats) -> Sample;
    let fields: [(&str, &str, Field); 10] = [
        (
            "fdbvfs_database_pages",
            "Pages at the latest version.",
            |s| Sample::Int(s.pages),
        ),
        ("fdbvfs_database_page_size_bytes", "Page size.", |s| {
            Sample::Int(u64::from(s.page_size))
        }),
        (
            "fdbvfs_database_size_bytes",
            "Size at the latest version (pages times page size).",
            |s| Sample::Int(s.bytes()),
        ),
        (
            "fdbvfs_database_version",
            "Latest store version the database was read at.",
            |s| Sample::Int(s.version.get()),
        ),
        (
            "fdbvfs_database_history_commits",
            "Commits kept in the change log (readable history since the GC horizon).",
            |s| Sample::Int(s.commits),
        ),
        (
            "fdbvfs_database_history_page_versions",
            "Page versions written by the commits kept in the change log.",
            |s| Sample::Int(s.page_versions),
        ),
        (
            "fdbvfs_database_retention_seconds",
            "How long old versions stay readable.",
            |s| Sample::Int(s.retention.as_secs()),
        ),
        (
            "fdbvfs_database_created_timestamp_seconds",
            "Creation time, seconds since the Unix epoch.",
            |s| seconds(s.created_micros),
        ),
        (
            "fdbvfs_database_oldest_readable_timestamp_seconds",
            "Oldest time the database can be read as of (time travel, forks, \
             restores), seconds since the Unix epoch.",
            |s| seconds(s.oldest_readable_micros),
        ),
        (
            "fdbvfs_database_gc_horizon_version",
            "GC progress: versions below this one were garbage-collected (0: none yet).",
            |s| Sample::Int(s.gc_horizon.get()),
        ),
    ];
    fields
        .into_iter()
        .map(|(name, help, get)| {
            MetricFamily::labelled(
                name,
                MetricKind::Gauge,
                help,
                "database",
                all.iter().map(|s| (s.name.clone(), get(s))),
            )
        })
        .collect()
}

/// `fdbvfs stats [NAME] [--json|--prometheus]`.
pub fn stats(
    store: &Store,
    name: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let pages = store.page_store();
    let mut all = Vec::new();
    match name {
        Some(n) => all.push(db_stats(&pages.open(n).map_err(store_err)?)?),
        None => {
            for info in pages.list().map_err(store_err)? {
                if is_temporary(&info.name) {
                    continue;
                }
                match pages.open(&info.name) {
                    Ok(db) => all.push(db_stats(&db)?),
                    // Dropped between the listing and now.
                    Err(pagestore::Error::NotFound(_)) => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
        }
    }
    let process = pages.stats();
    if format == Format::Prometheus {
        let mut families = database_families(&all);
        families.extend(store.metrics().families());
        out.write_all(render(&families).as_bytes())?;
    } else if format == Format::Json {
        let doc = json!({
            "databases": all.iter().map(db_json).collect::<Vec<_>>(),
            "process": process_json(&process),
        });
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Usage(format!("cannot encode JSON: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        match (name, all.as_slice()) {
            (Some(_), [one]) => out.write_all(db_text(one).as_bytes())?,
            _ => out.write_all(table(&all).render().as_bytes())?,
        }
        out.write_all(
            process_text(&process, "this process (the stats command itself)").as_bytes(),
        )?;
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &Store, name: Option<&str>, as_json: bool) -> String {
        let format = if as_json { Format::Json } else { Format::Text };
        render_with(store, name, format)
    }

    fn render_with(store: &Store, name: Option<&str>, format: Format) -> String {
        let mut out = Vec::new();
        stats(store, name, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reports_size_history_and_counters() {
        let store = Store::in_memory().unwrap();
        let conn = store.open("a").unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);",
        )
        .unwrap();
        store.open("b").unwrap();
        let doc: Value = serde_json::from_str(&run(&store, Some("a"), true)).unwrap();
        let a = &doc["databases"][0];
        assert_eq!(a["name"], "a");
        assert_eq!(a["page_size"], 4096);
        assert_eq!(a["pages"], 2);
        assert_eq!(a["bytes"], 8192);
        assert_eq!(a["commits"], 3);
        assert_eq!(a["retention_secs"], 7 * 24 * 3600);
        assert!(a["page_versions"].as_u64().unwrap() >= 3);
        assert!(doc["process"]["round_trips"].as_u64().unwrap() > 0);
        assert!(doc["process"]["cache"]["hit_rate"].is_number());

        let all: Value = serde_json::from_str(&run(&store, None, true)).unwrap();
        assert_eq!(all["databases"].as_array().unwrap().len(), 2);

        let text = run(&store, Some("a"), false);
        assert!(text.contains("size: 2 pages of 4096 bytes"), "{text}");
        assert!(text.contains("history: 3 commits"), "{text}");
        assert!(text.contains("this process"), "{text}");
        let text = run(&store, None, false);
        assert!(text.contains("(2 rows)"), "{text}");
    }
}

#[cfg(test)]
mod prometheus_tests {
    use super::*;

    #[test]
    fn prometheus_has_a_sample_per_database_and_the_process_counters() {
        let store = Store::in_memory().unwrap();
        store
            .open("a\"b")
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        store.open("c").unwrap();
        let mut out = Vec::new();
        stats(&store, None, Format::Prometheus, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("fdbvfs_database_size_bytes{database=\"a\\\"b\"} 8192\n"),
            "{text}"
        );
        assert!(
            text.contains("fdbvfs_database_history_commits{database=\"a\\\"b\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fdbvfs_database_pages{database=\"c\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE fdbvfs_store_round_trips_total counter\n"));
        // Every family once, its samples right after its TYPE line.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a family appears twice:\n{text}");
    }
}
