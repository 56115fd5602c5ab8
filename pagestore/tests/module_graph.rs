//! pagestore's top-level modules form no import cycle: each can be read
//! knowing only the modules below it. The test reads the sources, collects
//! every reference to a top-level module (`use crate::x`, `crate::x::`,
//! `super::x` in a top-level file's inline test module) and fails listing
//! a cycle if the graph has one. `kv` (and everything under it) counts as
//! one node; `lib.rs` (which declares every module) and the `failpoints`
//! macro module (used by everyone, using no one) are left out.
//!
//! Run: `cargo test --release -p pagestore --test module_graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Modules not taking part in the graph.
const IGNORED: &[&str] = &["lib", "failpoints"];

/// Module → modules it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`kv/...` is `kv`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Drops `//` comments (doc comments included) so that prose naming a
/// module is not a reference.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The position of the `}` closing a list whose `{` was just before `s`.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

/// The modules `text` refers to through `prefix` (`crate::` or `super::`),
/// including each name of a braced import list (`crate::{a, b::c}`).
fn references(text: &str, prefix: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `foo_crate::`
        }
        if let Some(list) = rest.strip_prefix('{') {
            let end = matching_brace(list);
            // Names at the list's top level: `a`, `b::c`, `d::{e, f}` give a, b, d.
            let mut depth = 0;
            let mut item = String::new();
            for c in list[..end].chars().chain(std::iter::once(',')) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if modules.contains(&name) {
                            found.insert(name);
                        }
                        item.clear();
                    }
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if modules.contains(&name) {
            found.insert(name);
        }
    }
    found
}

/// The import graph among pagestore's top-level modules.
fn graph() -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f))
        .filter(|m| !IGNORED.contains(&m.as_str()))
        .collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if IGNORED.contains(&module.as_str()) {
            continue;
        }
        let text = strip_comments(&fs::read_to_string(file).unwrap_or_default());
        let mut refs = references(&text, "crate::", &modules);
        // In a top-level file, `super::x` names a sibling top-level module
        // (from the file's inline test module; `super::*` names itself).
        // Under `kv/`, `super::` stays inside kv.
        if file.parent() == Some(src.as_path()) {
            refs.extend(references(&text, "super::", &modules));
        }
        refs.remove(&module);
        if let Some(deps) = graph.get_mut(&module) {
            deps.extend(refs);
        }
    }
    graph
}

/// A cycle of `graph`, if it has one (as the list of modules along it,
/// first repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, deps)| {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            format!("  {m} -> {}", deps.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = graph();
    assert!(graph.contains_key("txn") && graph.contains_key("kv"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle among pagestore's modules: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            describe(&graph)
        );
    }
    println!("{}", describe(&graph));
}

#[test]
fn the_checker_finds_cycles() {
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["c".to_string()].into());
    graph.insert("c".into(), ["a".to_string()].into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn references_are_read_from_paths_and_import_lists() {
    let modules: BTreeSet<String> = ["txn", "keys", "kv", "cache"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "use crate::{keys::DbKeys, kv::{KvTxn, Version}};\nlet x = crate::txn::f(); other_crate::cache::g();";
    let refs = references(text, "crate::", &modules);
    assert_eq!(
        refs,
        ["keys", "kv", "txn"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
