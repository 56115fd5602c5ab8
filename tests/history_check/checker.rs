//! A list-append history checker in the style of Jepsen's Elle
//! (Kingsbury & Alvaro, VLDB 2020).
//!
//! Every transaction appends unique values to a few keys and reads a few
//! keys' whole lists. Because every append is unique and a read returns
//! the whole list, the longest read of a key is (a prefix of) its version
//! order, and every other read must be a prefix of it. From that order the
//! checker infers Adya's dependencies exactly:
//!
//! * `ww`: the writer of element i precedes the writer of element i + 1;
//! * `wr`: the writer of a read's last element precedes the reader;
//! * `rw`: a reader precedes the writer of the element after its last one;
//! * `rt`: a transaction that completed before another was invoked precedes
//!   it (strict serializability), encoded with one chain of "time" nodes so
//!   the graph stays linear in the history.
//!
//! A cycle made of `ww` edges is G0, with `wr` edges G1c, with exactly one
//! `rw` edge G-single, with more G2-item (write skew, anti-dependency
//! cycles), and one that needs `rt` edges a real-time violation. Besides
//! cycles it reports aborted reads (G1a: a value appended by a transaction
//! that definitely failed), intermediate reads (G1b), lost updates (two
//! committed transactions read the same version of a key and both appended
//! to it), duplicates (a value twice in one list: a transaction applied
//! twice), garbage reads (a value nobody appended), reads that disagree
//! on the order, internal inconsistencies (a transaction that does not see
//! its own appends), and acknowledged appends missing from the final state.
//!
//! Transactions whose outcome is unknown may have committed or not: they
//! join the graph only when one of their values was read, and they have no
//! completion time (they may land after the client gave up on them).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

/// How a transaction ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Committed (acknowledged).
    Ok,
    /// Definitely not committed.
    Fail,
    /// May or may not have committed (e.g. `commit_unknown_result`, a kill).
    Unknown,
}

/// One operation of a transaction, in program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Appended `value` (unique across the history) to `key`'s list.
    Append { key: String, value: u64 },
    /// Read `key`'s whole list (empty when the key does not exist).
    Read { key: String, values: Vec<u64> },
}

/// One transaction of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// Unique id (shown in reports).
    pub id: String,
    pub outcome: Outcome,
    /// When the client started it (a clock shared by every process:
    /// `CLOCK_MONOTONIC` nanoseconds).
    pub invoke_ns: u64,
    /// When the client learned its outcome (`None` when it never did).
    pub complete_ns: Option<u64>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// A committed transaction.
    pub fn ok(id: &str, invoke_ns: u64, complete_ns: u64, ops: Vec<Op>) -> Txn {
        Txn {
            id: id.to_string(),
            outcome: Outcome::Ok,
            invoke_ns,
            complete_ns: Some(complete_ns),
            ops,
        }
    }
}

/// `Op::Append` shorthand.
pub fn append(key: &str, value: u64) -> Op {
    Op::Append {
        key: key.to_string(),
        value,
    }
}

/// `Op::Read` shorthand.
pub fn read(key: &str, values: &[u64]) -> Op {
    Op::Read {
        key: key.to_string(),
        values: values.to_vec(),
    }
}

/// What the checker is given.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub txns: Vec<Txn>,
    /// The final state of every key of the databases in `final_dbs`, read
    /// after the workload stopped (keys absent here are empty lists). A
    /// key's database is the part of the key before its first `/`.
    pub final_state: BTreeMap<String, Vec<u64>>,
    pub final_dbs: BTreeSet<String>,
    /// Per database: acknowledged appends of transactions invoked before
    /// this time may legitimately be missing from the final state (a
    /// restore of that database to an earlier version completed after
    /// them).
    pub exempt_before_ns: BTreeMap<String, u64>,
    /// The staleness bound the clients ran with (0: strict). A committed
    /// transaction that only read may have read a snapshot up to this much
    /// older than its invocation: its real-time predecessors are those
    /// that completed that long before it (bounded staleness, reported as
    /// a real-time violation only beyond the bound). Transactions that
    /// write are validated at commit, so they keep strict real time.
    pub staleness_ns: u64,
}

/// The kinds of anomaly the checker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    G0,
    G1a,
    G1b,
    G1c,
    GSingle,
    G2Item,
    RealTime,
    LostUpdate,
    Duplicate,
    GarbageRead,
    IncompatibleOrder,
    Internal,
    MissingAck,
    /// Found by a workload's own oracle (restore or drop checks).
    Workload,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::G0 => "G0 (write cycle)",
            Kind::G1a => "G1a (aborted read)",
            Kind::G1b => "G1b (intermediate read)",
            Kind::G1c => "G1c (circular information flow)",
            Kind::GSingle => "G-single (read skew / one anti-dependency)",
            Kind::G2Item => "G2-item (write skew / anti-dependency cycle)",
            Kind::RealTime => "real-time (strict serializability) violation",
            Kind::LostUpdate => "lost update",
            Kind::Duplicate => "duplicate (applied twice)",
            Kind::GarbageRead => "garbage read (value never appended)",
            Kind::IncompatibleOrder => "incompatible order",
            Kind::Internal => "internal (own appends not seen)",
            Kind::MissingAck => "acknowledged append missing from the final state",
            Kind::Workload => "workload check",
        })
    }
}

/// One anomaly, with a human-readable explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: Kind,
    pub explanation: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.explanation)
    }
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    /// Transactions in the dependency graph (committed or observed).
    pub graph_txns: usize,
    /// Dependency edges inferred (ww + wr + rw).
    pub dependency_edges: usize,
    /// Keys whose version order was inferred.
    pub keys: usize,
}

impl Report {
    pub fn kinds(&self) -> BTreeSet<Kind> {
        self.anomalies.iter().map(|a| a.kind).collect()
    }

    pub fn has(&self, k: Kind) -> bool {
        self.anomalies.iter().any(|a| a.kind == k)
    }

    /// Counts per kind, for printing.
    pub fn summary(&self) -> BTreeMap<Kind, usize> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind).or_insert(0) += 1;
        }
        m
    }
}

/// At most this many anomalies of one kind are explained (the rest are
/// counted).
const MAX_PER_KIND: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Edge {
    Ww,
    Wr,
    Rw,
    Rt,
}

impl Edge {
    fn name(self) -> &'static str {
        match self {
            Edge::Ww => "ww",
            Edge::Wr => "wr",
            Edge::Rw => "rw",
            Edge::Rt => "rt",
        }
    }
}

fn db_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// A transaction's reads with its own earlier appends to the key removed
/// (what it observed of others), or `None` when its own appends are not
/// at the end (an internal anomaly).
fn external_reads(t: &Txn) -> (Vec<(&str, Vec<u64>)>, Vec<String>) {
    let mut own: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut reads = Vec::new();
    let mut internal = Vec::new();
    for op in &t.ops {
        match op {
            Op::Append { key, value } => own.entry(key.as_str()).or_default().push(*value),
            Op::Read { key, values } => match own.get(key.as_str()) {
                None => reads.push((key.as_str(), values.clone())),
                Some(mine) => {
                    if values.len() >= mine.len() && values[values.len() - mine.len()..] == mine[..]
                    {
                        reads.push((key.as_str(), values[..values.len() - mine.len()].to_vec()));
                    } else {
                        internal.push(format!(
                            "{} read {key} = {values:?} after appending {mine:?} to it",
                            t.id
                        ));
                    }
                }
            },
        }
    }
    (reads, internal)
}

struct Anomalies {
    list: Vec<Anomaly>,
    counts: HashMap<Kind, usize>,
}

impl Anomalies {
    fn push(&mut self, kind: Kind, explanation: String) {
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        if *n <= MAX_PER_KIND {
            self.list.push(Anomaly { kind, explanation });
        } else if *n == MAX_PER_KIND + 1 {
            self.list.push(Anomaly {
                kind,
                explanation: "(more of this kind not shown)".into(),
            });
        }
    }
}

/// Checks a history; see the module docs.
pub fn check(h: &History) -> Report {
    let mut out = Anomalies {
        list: Vec::new(),
        counts: HashMap::new(),
    };
    let txns = &h.txns;
    // The final state joins the history as a read-only transaction after
    // everything else.
    let end = txns
        .iter()
        .flat_map(|t| [Some(t.invoke_ns), t.complete_ns])
        .flatten()
        .max()
        .unwrap_or(0)
        + 1;
    let mut all: Vec<Txn> = txns.clone();
    let final_idx = if h.final_dbs.is_empty() && h.final_state.is_empty() {
        None
    } else {
        all.push(Txn::ok(
            "FINAL-READ",
            end,
            end + 1,
            h.final_state.iter().map(|(k, v)| read(k, v)).collect(),
        ));
        Some(all.len() - 1)
    };
    let n = all.len();

    // Who appended what.
    let mut writer: HashMap<(&str, u64), usize> = HashMap::new();
    let mut appends_of: HashMap<(usize, &str), Vec<u64>> = HashMap::new();
    for (i, t) in all.iter().enumerate() {
        for op in &t.ops {
            if let Op::Append { key, value } = op {
                if let Some(j) = writer.insert((key.as_str(), *value), i) {
                    out.push(
                        Kind::Workload,
                        format!(
                            "value {value} appended to {key} by both {} and {} (the workload must use unique values)",
                            all[j].id, t.id
                        ),
                    );
                }
                appends_of
                    .entry((i, key.as_str()))
                    .or_default()
                    .push(*value);
            }
        }
    }

    // External reads of committed transactions.
    let mut reads: Vec<(usize, &str, Vec<u64>)> = Vec::new();
    for (i, t) in all.iter().enumerate() {
        if t.outcome != Outcome::Ok {
            continue;
        }
        let (ext, internal) = external_reads(t);
        for e in internal {
            out.push(Kind::Internal, e);
        }
        for (k, v) in ext {
            reads.push((i, k, v));
        }
    }

    // Per-read checks: duplicates, garbage, aborted and intermediate reads.
    let mut observed = vec![false; n];
    for (i, k, vals) in &reads {
        let mut seen = BTreeSet::new();
        for v in vals {
            if !seen.insert(*v) {
                let w = writer.get(&(*k, *v)).map(|w| all[*w].id.as_str());
                out.push(
                    Kind::Duplicate,
                    format!(
                        "{} read {k} with value {v} twice (appended by {}): {vals:?}",
                        all[*i].id,
                        w.unwrap_or("nobody")
                    ),
                );
            }
            match writer.get(&(*k, *v)) {
                None => out.push(
                    Kind::GarbageRead,
                    format!(
                        "{} read {k} with value {v}, which nobody appended",
                        all[*i].id
                    ),
                ),
                Some(w) if all[*w].outcome == Outcome::Fail => out.push(
                    Kind::G1a,
                    format!(
                        "{} read {k} with value {v}, appended by {}, which failed",
                        all[*i].id, all[*w].id
                    ),
                ),
                Some(w) => observed[*w] = true,
            }
        }
        if let Some(last) = vals.last() {
            if let Some(&w) = writer.get(&(*k, *last)) {
                if w != *i {
                    if let Some(mine) = appends_of.get(&(w, *k)) {
                        if mine.last() != Some(last) {
                            out.push(
                                Kind::G1b,
                                format!(
                                    "{} read {k} = {vals:?}, ending in {last}, an intermediate append of {} (which appended {mine:?})",
                                    all[*i].id, all[w].id
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    // Version order per key: the longest read, deduplicated; every read
    // must be a prefix of it.
    let mut longest: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (_, k, vals) in &reads {
        let e = longest.entry(k).or_default();
        if vals.len() > e.len() {
            *e = vals.clone();
        }
    }
    for (i, k, vals) in &reads {
        let l = &longest[k];
        if l[..vals.len()] != vals[..] {
            out.push(
                Kind::IncompatibleOrder,
                format!(
                    "{} read {k} = {vals:?}, not a prefix of another read {l:?}",
                    all[*i].id
                ),
            );
        }
    }
    let order: BTreeMap<&str, Vec<u64>> = longest
        .iter()
        .map(|(k, l)| {
            let mut seen = BTreeSet::new();
            (*k, l.iter().copied().filter(|v| seen.insert(*v)).collect())
        })
        .collect();
    let position: HashMap<(&str, u64), usize> = order
        .iter()
        .flat_map(|(k, l)| l.iter().enumerate().map(move |(p, v)| ((*k, *v), p)))
        .collect();

    // Lost updates: two committed transactions read the same version of a
    // key (the same prefix length) and both appended to it.
    let mut read_then_wrote: BTreeMap<(&str, usize), Vec<usize>> = BTreeMap::new();
    for (i, k, vals) in &reads {
        if appends_of.contains_key(&(*i, *k)) {
            let e = read_then_wrote.entry((k, vals.len())).or_default();
            if !e.contains(i) {
                e.push(*i);
            }
        }
    }
    for ((k, len), ts) in &read_then_wrote {
        if ts.len() > 1 {
            let ids: Vec<&str> = ts.iter().map(|t| all[*t].id.as_str()).collect();
            out.push(
                Kind::LostUpdate,
                format!("{ids:?} all read version {len} of {k} and all appended to it"),
            );
        }
    }

    // The graph: committed transactions, and unknown ones that were read.
    let in_graph: Vec<bool> = all
        .iter()
        .enumerate()
        .map(|(i, t)| t.outcome == Outcome::Ok || (t.outcome == Outcome::Unknown && observed[i]))
        .collect();
    let mut g = Graph::new(n);
    let mut edge_keys: HashMap<(usize, usize, Edge), &str> = HashMap::new();
    for (k, l) in &order {
        for pair in l.windows(2) {
            let (Some(&a), Some(&b)) = (writer.get(&(*k, pair[0])), writer.get(&(*k, pair[1])))
            else {
                continue;
            };
            if a != b && in_graph[a] && in_graph[b] {
                g.add(a, b, Edge::Ww);
                edge_keys.entry((a, b, Edge::Ww)).or_insert(k);
            }
        }
    }
    for (i, k, vals) in &reads {
        if !in_graph[*i] {
            continue;
        }
        if let Some(last) = vals.last() {
            if let Some(&w) = writer.get(&(*k, *last)) {
                if w != *i && in_graph[w] {
                    g.add(w, *i, Edge::Wr);
                    edge_keys.entry((w, *i, Edge::Wr)).or_insert(k);
                }
            }
        }
        let next = match vals.last() {
            None => Some(0),
            Some(last) => position.get(&(*k, *last)).map(|p| p + 1),
        };
        if let Some(v) = next.and_then(|p| order.get(k).and_then(|l| l.get(p))) {
            if let Some(&w) = writer.get(&(*k, *v)) {
                if w != *i && in_graph[w] {
                    g.add(*i, w, Edge::Rw);
                    edge_keys.entry((*i, w, Edge::Rw)).or_insert(k);
                }
            }
        }
    }
    let dependency_edges = g.edges;
    // Real time: completion c_m of the m-th completed transaction is time
    // node n + m; T -> node(own completion), node m -> node m + 1,
    // node(last completion before T's invocation) -> T.
    let mut completions: Vec<(u64, usize)> = (0..n)
        .filter(|&i| in_graph[i] && all[i].outcome == Outcome::Ok)
        .filter_map(|i| all[i].complete_ns.map(|c| (c, i)))
        .collect();
    completions.sort();
    let base = g.grow(completions.len());
    for (m, (_, i)) in completions.iter().enumerate() {
        g.add(*i, base + m, Edge::Rt);
        if m + 1 < completions.len() {
            g.add(base + m, base + m + 1, Edge::Rt);
        }
    }
    for i in 0..n {
        if !in_graph[i] {
            continue;
        }
        let read_only = all[i].ops.iter().all(|o| matches!(o, Op::Read { .. }));
        let t = if read_only {
            all[i].invoke_ns.saturating_sub(h.staleness_ns)
        } else {
            all[i].invoke_ns
        };
        let m = completions.partition_point(|(c, _)| *c < t);
        if m > 0 {
            g.add(base + m - 1, i, Edge::Rt);
        }
    }

    let name = |v: usize| -> String {
        if v < n {
            all[v].id.clone()
        } else {
            "(time)".into()
        }
    };
    let describe = |cycle: &[(usize, Edge)]| -> String {
        let mut s = String::new();
        for (idx, (v, e)) in cycle.iter().enumerate() {
            let next = cycle[(idx + 1) % cycle.len()].0;
            if *e == Edge::Rt && (*v >= n || next >= n) {
                if *v < n {
                    s.push_str(&format!("{} -rt-> ", name(*v)));
                }
                continue;
            }
            let key = edge_keys.get(&(*v, next, *e)).copied().unwrap_or("");
            s.push_str(&format!("{} -{}({key})-> ", name(*v), e.name()));
        }
        s.push_str(&name(cycle[0].0));
        let txns: Vec<String> = cycle
            .iter()
            .filter(|(v, _)| *v < n)
            .map(|(v, _)| format!("{}: {:?}", all[*v].id, all[*v].ops))
            .collect();
        format!("{s}\n    {}", txns.join("\n    "))
    };

    // Cycles, by the weakest edge set that has one.
    let levels: [(&[Edge], Edge, Kind); 4] = [
        (&[Edge::Ww], Edge::Ww, Kind::G0),
        (&[Edge::Ww, Edge::Wr], Edge::Wr, Kind::G1c),
        (&[Edge::Ww, Edge::Wr, Edge::Rw], Edge::Rw, Kind::G2Item),
        (
            &[Edge::Ww, Edge::Wr, Edge::Rw, Edge::Rt],
            Edge::Rt,
            Kind::RealTime,
        ),
    ];
    for (allowed, new, kind) in levels {
        for scc in g.sccs(allowed) {
            if scc.len() < 2 {
                continue;
            }
            let member: BTreeSet<usize> = scc.iter().copied().collect();
            // A cycle through an edge of the new kind.
            let mut found = None;
            let mut tries = 0;
            'search: for &u in &scc {
                for &(v, e) in &g.adj[u] {
                    if e != new || !member.contains(&v) {
                        continue;
                    }
                    tries += 1;
                    if tries > 200 {
                        break 'search;
                    }
                    // G-single: back from v to u without another rw edge.
                    if new == Edge::Rw {
                        if let Some(path) = g.path(v, u, &[Edge::Ww, Edge::Wr], &member) {
                            found = Some((Kind::GSingle, u, e, path));
                            break 'search;
                        }
                    }
                    if found.is_none() {
                        if let Some(path) = g.path(v, u, allowed, &member) {
                            found = Some((kind, u, e, path));
                            if new != Edge::Rw {
                                break 'search;
                            }
                        }
                    }
                }
            }
            if let Some((k, u, e, path)) = found {
                let mut cycle = vec![(u, e)];
                cycle.extend(path);
                out.push(k, describe(&cycle));
            }
        }
    }

    // Acknowledged appends missing from the final state.
    if final_idx.is_some() {
        for t in all.iter().filter(|t| t.outcome == Outcome::Ok) {
            for op in &t.ops {
                let Op::Append { key, value } = op else {
                    continue;
                };
                let db = db_of(key);
                if !h.final_dbs.contains(db) {
                    continue;
                }
                if h.exempt_before_ns.get(db).is_some_and(|e| t.invoke_ns < *e) {
                    continue;
                }
                let present = h.final_state.get(key).is_some_and(|l| l.contains(value));
                if !present {
                    out.push(
                        Kind::MissingAck,
                        format!(
                            "{} appended {value} to {key} and was acknowledged; the final state is {:?}",
                            t.id,
                            h.final_state.get(key).cloned().unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }

    Report {
        anomalies: out.list,
        graph_txns: in_graph.iter().filter(|b| **b).count(),
        dependency_edges,
        keys: order.len(),
    }
}

/// A directed multigraph with typed edges.
struct Graph {
    adj: Vec<Vec<(usize, Edge)>>,
    edges: usize,
}

impl Graph {
    fn new(n: usize) -> Graph {
        Graph {
            adj: vec![Vec::new(); n],
            edges: 0,
        }
    }

    /// Adds `extra` nodes; returns the index of the first.
    fn grow(&mut self, extra: usize) -> usize {
        let base = self.adj.len();
        self.adj.resize(base + extra, Vec::new());
        base
    }

    fn add(&mut self, a: usize, b: usize, e: Edge) {
        if !self.adj[a].contains(&(b, e)) {
            self.adj[a].push((b, e));
            self.edges += usize::from(e != Edge::Rt);
        }
    }

    /// Strongly connected components over the allowed edge kinds
    /// (iterative Tarjan).
    fn sccs(&self, allowed: &[Edge]) -> Vec<Vec<usize>> {
        let n = self.adj.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            let mut call: Vec<(usize, usize)> = vec![(root, 0)];
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut i)) = call.last_mut() {
                if *i < self.adj[v].len() {
                    let (w, e) = self.adj[v][*i];
                    *i += 1;
                    if !allowed.contains(&e) {
                        continue;
                    }
                    if index[w] == usize::MAX {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        call.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    call.pop();
                    if let Some(&(parent, _)) = call.last() {
                        low[parent] = low[parent].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            comp.push(w);
                            if w == v {
                                break;
                            }
                        }
                        out.push(comp);
                    }
                }
            }
        }
        out
    }

    /// A shortest path from `from` to `to` inside `within` over the allowed
    /// edges, as (node, edge taken from it) pairs, `to` excluded.
    fn path(
        &self,
        from: usize,
        to: usize,
        allowed: &[Edge],
        within: &BTreeSet<usize>,
    ) -> Option<Vec<(usize, Edge)>> {
        let mut prev: HashMap<usize, (usize, Edge)> = HashMap::new();
        let mut q = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(v) = q.pop_front() {
            if v == to {
                let mut path = Vec::new();
                let mut cur = to;
                while cur != from {
                    let (p, e) = prev[&cur];
                    path.push((p, e));
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            for &(w, e) in &self.adj[v] {
                if allowed.contains(&e) && within.contains(&w) && seen.insert(w) {
                    prev.insert(w, (v, e));
                    q.push_back(w);
                }
            }
        }
        None
    }
}
