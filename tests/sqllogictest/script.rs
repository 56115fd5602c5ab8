//! Parser for the classic sqllogictest script format (SQLite's `sqllogictest.c`).
//!
//! A script is a sequence of records separated by blank lines. Lines starting
//! with `#` between records are comments. A record starts with optional
//! condition lines (`skipif DB` / `onlyif DB`, possibly followed by a
//! `# comment`), then one of:
//!
//! * `statement ok` / `statement error`, followed by SQL up to a blank line;
//! * `query TYPES [SORT [LABEL]]`, SQL, `----`, then one expected value per
//!   line (or a single `N values hashing to MD5` line) up to a blank line;
//! * `hash-threshold N`;
//! * `halt`.
//!
//! Trailing whitespace (including the `\r` of CRLF files) is removed from every
//! line, as the classic runner does.

use std::fmt;

/// The database engine name the runner identifies as in `skipif` / `onlyif`.
pub const ENGINE: &str = "sqlite";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    No,
    Row,
    Value,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Statement {
        expect_ok: bool,
        sql: String,
    },
    Query {
        types: String,
        sort: Sort,
        label: Option<String>,
        sql: String,
        /// `None` when the record has no `----` section.
        expected: Option<Vec<String>>,
    },
    HashThreshold(usize),
    Halt,
}

#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based line number of the record's command line.
    pub line: usize,
    /// False when a `skipif`/`onlyif` condition excludes [`ENGINE`].
    pub applies: bool,
    pub kind: Kind,
}

#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses a whole script.
pub fn parse(text: &str) -> Result<Vec<Record>, ParseError> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        // Skip blank lines and comments between records.
        if lines[i].is_empty() || lines[i].starts_with('#') {
            i += 1;
            continue;
        }
        let mut applies = true;
        // Condition lines.
        loop {
            let Some(line) = lines.get(i) else {
                return Err(ParseError {
                    line: i,
                    message: "condition at end of file".into(),
                });
            };
            let mut tokens = line.split_whitespace();
            match tokens.next() {
                Some("skipif") => {
                    if tokens.next() == Some(ENGINE) {
                        applies = false;
                    }
                    i += 1;
                }
                Some("onlyif") => {
                    if tokens.next() != Some(ENGINE) {
                        applies = false;
                    }
                    i += 1;
                }
                _ => break,
            }
        }
        let start = i;
        let tokens: Vec<&str> = lines[i].split_whitespace().collect();
        i += 1;
        // Body: lines up to the next blank line.
        let body_start = i;
        while i < lines.len() && !lines[i].is_empty() {
            i += 1;
        }
        let body = &lines[body_start..i];
        let err = |message: String| ParseError {
            line: start + 1,
            message,
        };
        let kind = match tokens.first().copied() {
            Some("statement") => {
                let expect_ok = match tokens.get(1).copied() {
                    Some("ok") => true,
                    Some("error") => false,
                    other => return Err(err(format!("bad statement mode {other:?}"))),
                };
                Kind::Statement {
                    expect_ok,
                    sql: body.join("\n"),
                }
            }
            Some("query") => {
                let types = tokens
                    .get(1)
                    .ok_or_else(|| err("query without a type string".into()))?
                    .to_string();
                if types.is_empty() || !types.chars().all(|c| matches!(c, 'I' | 'R' | 'T')) {
                    return Err(err(format!("bad query type string {types:?}")));
                }
                let sort = match tokens.get(2).copied() {
                    None | Some("nosort") => Sort::No,
                    Some("rowsort") => Sort::Row,
                    Some("valuesort") => Sort::Value,
                    Some(other) => return Err(err(format!("bad sort mode {other:?}"))),
                };
                let label = tokens.get(3).map(|s| s.to_string());
                let (sql, expected) = match body.iter().position(|l| *l == "----") {
                    Some(p) => (
                        body[..p].join("\n"),
                        Some(body[p + 1..].iter().map(|s| s.to_string()).collect()),
                    ),
                    None => (body.join("\n"), None),
                };
                Kind::Query {
                    types,
                    sort,
                    label,
                    sql,
                    expected,
                }
            }
            Some("hash-threshold") => {
                let n = tokens
                    .get(1)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| err("bad hash-threshold".into()))?;
                Kind::HashThreshold(n)
            }
            Some("halt") => Kind::Halt,
            other => return Err(err(format!("unknown record type {other:?}"))),
        };
        records.push(Record {
            line: start + 1,
            applies,
            kind,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_conditions() {
        let text = "hash-threshold 8\r\n\r\n# c\r\nstatement ok\r\nCREATE TABLE t(x)\r\n\r\n\
                    onlyif sqlite # why\nquery IT rowsort lbl\nSELECT 1,\n'a'\n----\n1\na\n\n\
                    skipif sqlite\nhalt\n\nonlyif mysql\nhalt\n";
        let r = parse(text).unwrap();
        assert_eq!(r.len(), 5);
        assert!(matches!(r[0].kind, Kind::HashThreshold(8)));
        match &r[2].kind {
            Kind::Query {
                types,
                sort,
                label,
                sql,
                expected,
            } => {
                assert_eq!(types, "IT");
                assert_eq!(*sort, Sort::Row);
                assert_eq!(label.as_deref(), Some("lbl"));
                assert_eq!(sql, "SELECT 1,\n'a'");
                assert_eq!(expected.as_deref().unwrap(), ["1", "a"]);
            }
            k => panic!("{k:?}"),
        }
        assert!(r[2].applies);
        assert!(!r[3].applies);
        assert!(!r[4].applies);
    }
}
