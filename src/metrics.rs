//! [`Metrics`]: this process's store counters, and their rendering in the
//! Prometheus text exposition format (version 0.0.4) for a service to
//! serve on its `/metrics` endpoint.
//!
//! ```
//! # fn main() -> Result<(), fdbvfs::Error> {
//! let store = fdbvfs::Store::in_memory()?;
//! store.open("orders")?.execute_batch("CREATE TABLE t(x)")?;
//! let m = store.metrics();
//! assert!(m.stats.kv.round_trips() > 0);
//! let text = m.to_prometheus(); // Content-Type: text/plain; version=0.0.4
//! assert!(text.contains("# TYPE fdbvfs_store_round_trips_total counter"));
//! # Ok(()) }
//! ```
//!
//! Names follow Prometheus's conventions: one `fdbvfs_` namespace, base
//! units in the name (`_bytes`, `_seconds`), `_total` on counters, and a
//! label where one quantity has several kinds (round trips by `kind`). The
//! counters are process-wide (every store of the process shares one page
//! cache and one backend per store) and start at zero with the process;
//! reading them costs no round trip.
//!
//! The encoder is written here rather than taken from a client crate: the
//! values are snapshots of counters the engine already keeps, so a
//! registry of live metric objects would only be copied into and out of.

use std::fmt::Write as _;

use pagestore::StoreStats;

/// A metric family's type (`# TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (from the start of the process).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// A sample value: exact integers, or floating point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Counters and sizes (printed exactly, with no float rounding).
    Int(u64),
    /// Ratios and timestamps.
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_nan() => f.write_str("NaN"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One sample of a family: label pairs and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `(name, value)` pairs; values are escaped when rendered.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
}

/// A metric family: every sample of one metric name.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFamily {
    /// `fdbvfs_…`; counters end in `_total`.
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The samples (at least one when rendered).
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    /// A family of one unlabelled sample.
    pub fn single(name: &str, kind: MetricKind, help: &str, value: Value) -> Self {
        MetricFamily {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: vec![Sample {
                labels: Vec::new(),
                value,
            }],
        }
    }

    /// A family with one label whose samples are `(label value, value)`.
    pub fn labelled(
        name: &str,
        kind: MetricKind,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (String, Value)>,
    ) -> Self {
        MetricFamily {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: samples
                .into_iter()
                .map(|(v, value)| Sample {
                    labels: vec![(label.to_string(), v)],
                    value,
                })
                .collect(),
        }
    }
}

/// Escapes a `# HELP` text: backslash and newline.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders families in the Prometheus text format (`# HELP`, `# TYPE`,
/// then one line per sample); families without samples are left out.
pub fn render(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&f.name);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

/// This process's counters of one store ([`crate::Store::metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// The engine's counters: page cache, store round trips and bytes,
    /// commits, conflicts, unknown results.
    pub stats: StoreStats,
}

impl Metrics {
    /// The counters as Prometheus metric families (see the module docs).
    pub fn families(&self) -> Vec<MetricFamily> {
        use MetricKind::{Counter, Gauge};
        let s = &self.stats;
        let int = Value::Int;
        vec![
            MetricFamily::labelled(
                "fdbvfs_store_round_trips_total",
                Counter,
                "Round trips to the key-value store (FoundationDB or embedded), by kind: \
                 read_version (GRV), read (get, range chunk or batch), commit.",
                "kind",
                [
                    ("read_version".to_string(), int(s.kv.read_versions)),
                    ("read".to_string(), int(s.kv.reads)),
                    ("commit".to_string(), int(s.kv.commits)),
                ],
            ),
            MetricFamily::single(
                "fdbvfs_store_read_bytes_total",
                Counter,
                "Value bytes returned by store reads.",
                int(s.kv.bytes_read),
            ),
            MetricFamily::single(
                "fdbvfs_store_written_bytes_total",
                Counter,
                "Key and value bytes written by successful store commits.",
                int(s.kv.bytes_written),
            ),
            MetricFamily::single(
                "fdbvfs_store_largest_commit_bytes",
                Gauge,
                "Size of the largest store transaction committed by this process.",
                int(s.kv.max_commit_bytes),
            ),
            MetricFamily::single(
                "fdbvfs_store_not_committed_total",
                Counter,
                "Store commits that failed with not_committed (1020), whether then \
                 retried by the engine or reported as a conflict.",
                int(s.kv.conflicts),
            ),
            MetricFamily::single(
                "fdbvfs_store_unknown_results_total",
                Counter,
                "Store commits that ended in commit_unknown_result (1021): the engine \
                 then finds out, by the commit token, whether they landed.",
                int(s.kv.unknown_results),
            ),
            MetricFamily::single(
                "fdbvfs_page_cache_hits_total",
                Counter,
                "Page reads served by the process-wide page cache.",
                int(s.cache.hits),
            ),
            MetricFamily::single(
                "fdbvfs_page_cache_misses_total",
                Counter,
                "Page reads that went to the store.",
                int(s.cache.misses),
            ),
            MetricFamily::single(
                "fdbvfs_page_cache_size_bytes",
                Gauge,
                "Bytes of page content in the page cache.",
                int(s.cache.bytes),
            ),
            MetricFamily::single(
                "fdbvfs_page_cache_capacity_bytes",
                Gauge,
                "Byte budget of the page cache.",
                int(s.cache.capacity),
            ),
            MetricFamily::single(
                "fdbvfs_commits_total",
                Counter,
                "SQLite transactions committed with writes.",
                int(s.commits),
            ),
            MetricFamily::single(
                "fdbvfs_commit_conflicts_total",
                Counter,
                "SQLite commits refused because a concurrent commit changed a page \
                 they read (SQLITE_BUSY to the application, which re-runs them).",
                int(s.conflicts),
            ),
            MetricFamily::single(
                "fdbvfs_commit_unknown_results_recovered_total",
                Counter,
                "SQLite commits that, after an unknown result, found they had landed.",
                int(s.recovered_unknown),
            ),
            MetricFamily::single(
                "fdbvfs_store_retries_total",
                Counter,
                "Store transactions (the engine's own and commits) retried after a \
                 retryable error (conflicts of internal transactions, 1007, 1021, ...).",
                int(s.retries),
            ),
            MetricFamily::single(
                "fdbvfs_gc_passes_total",
                Counter,
                "GC passes over one database run by this process (dry runs excluded).",
                int(s.gc.passes),
            ),
            MetricFamily::single(
                "fdbvfs_gc_removed_page_versions_total",
                Counter,
                "Page versions removed by GC.",
                int(s.gc.page_versions),
            ),
            MetricFamily::single(
                "fdbvfs_gc_removed_bytes_total",
                Counter,
                "Page content bytes removed by GC.",
                int(s.gc.page_bytes),
            ),
            MetricFamily::single(
                "fdbvfs_gc_removed_metadata_keys_total",
                Counter,
                "Change-log records, time-index entries, size records and commit \
                 tokens removed by GC.",
                int(s.gc.metadata_keys),
            ),
            MetricFamily::single(
                "fdbvfs_gc_transactions_total",
                Counter,
                "Store transactions committed by GC.",
                int(s.gc.transactions),
            ),
        ]
    }

    /// The counters in the Prometheus text format.
    pub fn to_prometheus(&self) -> String {
        render(&self.families())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let fams = [
            MetricFamily::labelled(
                "x_total",
                MetricKind::Counter,
                "a \\ help\nline",
                "db",
                [("a\"b\\c\nd".to_string(), Value::Int(7))],
            ),
            MetricFamily::single("y", MetricKind::Gauge, "y", Value::Float(0.5)),
            MetricFamily::single("z", MetricKind::Gauge, "z", Value::Float(f64::NAN)),
            MetricFamily {
                name: "empty".into(),
                help: "left out".into(),
                kind: MetricKind::Gauge,
                samples: vec![],
            },
        ];
        assert_eq!(
            render(&fams),
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n\
             x_total{db=\"a\\\"b\\\\c\\nd\"} 7\n\
             # HELP y y\n# TYPE y gauge\ny 0.5\n\
             # HELP z z\n# TYPE z gauge\nz NaN\n"
        );
    }

    #[test]
    fn every_counter_of_the_engine_is_a_family() {
        let mut m = Metrics::default();
        m.stats.kv.read_versions = 1;
        m.stats.kv.reads = 2;
        m.stats.kv.commits = 3;
        m.stats.cache.hits = 4;
        m.stats.commits = 5;
        m.stats.conflicts = 6;
        m.stats.kv.unknown_results = 7;
        let text = m.to_prometheus();
        for line in [
            "fdbvfs_store_round_trips_total{kind=\"read_version\"} 1",
            "fdbvfs_store_round_trips_total{kind=\"read\"} 2",
            "fdbvfs_store_round_trips_total{kind=\"commit\"} 3",
            "fdbvfs_page_cache_hits_total 4",
            "fdbvfs_commits_total 5",
            "fdbvfs_commit_conflicts_total 6",
            "fdbvfs_store_unknown_results_total 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for f in m.families() {
            assert!(f.name.starts_with("fdbvfs_"), "{}", f.name);
            assert_eq!(
                f.kind == MetricKind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }
}
