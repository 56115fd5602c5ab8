//! Aligned text tables for query results.
//!
//! ```text
//!  id | name  | note
//! ----+-------+------
//!   1 | alice | NULL
//!  12 | bob   | x'00ff'
//! (2 rows)
//! ```
//!
//! Numbers are right-aligned, everything else left-aligned. NULL prints as
//! `NULL`, blobs as `x'hex'` (cut after [`BLOB_PREVIEW`] bytes, with the full
//! length), and control characters in text as escapes so that one row stays on
//! one line. Text is shown whole.

use std::fmt::Write as _;

use rusqlite::types::ValueRef;

/// Blob bytes shown before the preview is cut.
pub const BLOB_PREVIEW: usize = 16;

/// One formatted cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub right: bool,
}

impl Cell {
    /// Formats one SQLite value.
    pub fn from_value(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell {
                text: "NULL".into(),
                right: false,
            },
            ValueRef::Integer(i) => Cell {
                text: i.to_string(),
                right: true,
            },
            ValueRef::Real(f) => Cell {
                text: format_real(f),
                right: true,
            },
            ValueRef::Text(t) => Cell {
                text: escape_text(&String::from_utf8_lossy(t)),
                right: false,
            },
            ValueRef::Blob(b) => Cell {
                text: format_blob(b),
                right: false,
            },
        }
    }
}

fn format_real(f: f64) -> String {
    // `{:?}` keeps a decimal point on integral values ("1.0"), like SQLite.
    format!("{f:?}")
}

fn format_blob(b: &[u8]) -> String {
    let mut s = String::from("x'");
    for byte in b.iter().take(BLOB_PREVIEW) {
        let _ = write!(s, "{byte:02x}");
    }
    if b.len() > BLOB_PREVIEW {
        let _ = write!(s, "…' ({} bytes)", b.len());
    } else {
        s.push('\'');
    }
    s
}

fn escape_text(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    s
}

/// A result set: column names and formatted rows.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

impl Table {
    pub fn new(headers: Vec<String>) -> Table {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    /// Renders the table, ending with a row count line and a newline.
    pub fn render(&self) -> String {
        let ncol = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(&cell.text));
            }
        }
        let mut out = String::new();
        let pad = |out: &mut String, text: &str, w: usize, right: bool| {
            let fill = w.saturating_sub(width(text));
            if right {
                out.extend(std::iter::repeat_n(' ', fill));
                out.push_str(text);
            } else {
                out.push_str(text);
                out.extend(std::iter::repeat_n(' ', fill));
            }
        };
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = (&str, bool)>| {
            let mut first = true;
            for ((text, right), &w) in cells.zip(&widths) {
                out.push_str(if first { " " } else { " | " });
                first = false;
                pad(out, text, w, right);
            }
            // No trailing spaces.
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(
            &mut out,
            &mut self.headers.iter().map(|h| (h.as_str(), false)),
        );
        for (i, &w) in widths.iter().enumerate() {
            out.push_str(if i == 0 { "-" } else { "-+-" });
            out.extend(std::iter::repeat_n('-', w));
        }
        if ncol > 0 {
            out.push_str("-\n");
        }
        for row in &self.rows {
            line(
                &mut out,
                &mut row.iter().map(|c| (c.text.as_str(), c.right)),
            );
        }
        let n = self.rows.len();
        let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(headers: &[&str], rows: Vec<Vec<ValueRef<'_>>>) -> Table {
        let mut t = Table::new(headers.iter().map(|s| s.to_string()).collect());
        t.rows = rows
            .into_iter()
            .map(|r| r.into_iter().map(Cell::from_value).collect())
            .collect();
        t
    }

    #[test]
    fn aligns_columns_and_formats_values() {
        let t = table(
            &["id", "name", "note"],
            vec![
                vec![
                    ValueRef::Integer(1),
                    ValueRef::Text(b"alice"),
                    ValueRef::Null,
                ],
                vec![
                    ValueRef::Integer(12),
                    ValueRef::Text(b"bob"),
                    ValueRef::Blob(&[0, 255]),
                ],
                vec![
                    ValueRef::Real(2.5),
                    ValueRef::Text(b""),
                    ValueRef::Real(1.0),
                ],
            ],
        );
        let expected = [
            " id  | name  | note",
            "-----+-------+---------",
            "   1 | alice | NULL",
            "  12 | bob   | x'00ff'",
            " 2.5 |       |     1.0",
            "(3 rows)\n",
        ]
        .join("\n");
        assert_eq!(t.render(), expected);
    }

    #[test]
    fn empty_result_keeps_header() {
        let t = table(&["x"], vec![]);
        assert_eq!(t.render(), " x\n---\n(0 rows)\n");
        let t = table(&["count(*)"], vec![vec![ValueRef::Integer(7)]]);
        assert_eq!(t.render(), " count(*)\n----------\n        7\n(1 row)\n");
    }

    #[test]
    fn long_blobs_are_cut_with_their_length() {
        let b: Vec<u8> = (0..100).collect();
        let c = Cell::from_value(ValueRef::Blob(&b));
        assert_eq!(c.text, "x'000102030405060708090a0b0c0d0e0f…' (100 bytes)");
        assert_eq!(Cell::from_value(ValueRef::Blob(&[])).text, "x''");
    }

    #[test]
    fn text_stays_on_one_line() {
        let c = Cell::from_value(ValueRef::Text("a\nb\tc\u{1}é".as_bytes()));
        assert_eq!(c.text, "a\\nb\\tc\\u{1}é");
        // Text is never cut (PRAGMA fdb_stats is one long line).
        let long = "y".repeat(1000);
        assert_eq!(Cell::from_value(ValueRef::Text(long.as_bytes())).text, long);
    }

    #[test]
    fn unicode_width_by_chars() {
        let t = table(
            &["n"],
            vec![
                vec![ValueRef::Text("héllo".as_bytes())],
                vec![ValueRef::Text(b"x")],
            ],
        );
        assert_eq!(t.render(), " n\n-------\n héllo\n x\n(2 rows)\n");
    }
}
