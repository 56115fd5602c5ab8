//! Collects the benchmark results into one table: workload | fdbvfs |
//! plain SQLite | ratio (fdbvfs time / SQLite time: 2.0 = half as fast).
//!
//! Reads criterion's estimates (`target/criterion/<group>/<target>/new/`),
//! `target/criterion/fdbvfs-writers.csv` and, when present,
//! `target/criterion/fdbvfs-bulk_load.csv`; prints the table as Markdown and
//! writes `target/criterion/fdbvfs-table.csv` and a chart of throughput vs
//! writers, `target/criterion/fdbvfs-writers.png`.
//!
//! ```text
//! cargo bench --bench compare -- --quick
//! cargo bench --bench writers -- --quick
//! cargo run --release --example bench_table
//! ```
//!
//! The chart is drawn with plotters' bitmap backend and no font library
//! (labels use a built-in 5x7 pixel font), so it needs no system packages.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

const GROUPS: [(&str, &str); 6] = [
    ("warm_point_read", "warm point read (1 per read-only txn)"),
    (
        "warm_point_read_x100",
        "warm point reads (100 per read-only txn)",
    ),
    ("cold_point_read", "cold point read"),
    ("cold_full_scan", "cold full scan (100k rows, 12 MB)"),
    ("insert_1_row_txn", "insert transaction, 1 row"),
    ("insert_10k_rows_txn", "insert transaction, 10,000 rows"),
];

fn dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion")
}

/// Mean time per iteration in ns of one criterion benchmark.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let p = dir()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Criterion's directories of `group` (benchmark ids as directory names).
fn ids(group: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir().join(group))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("fdbvfs"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

struct Row {
    workload: String,
    target: String,
    fdbvfs: String,
    sqlite: String,
    ratio: f64,
}

/// One line of the writers CSV.
struct Writers {
    target: String,
    writers: u32,
    tps: f64,
    abort_rate: f64,
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for (group, workload) in GROUPS {
        let Some(sqlite) = mean_ns(group, "sqlite") else {
            continue;
        };
        for id in ids(group) {
            if let Some(f) = mean_ns(group, &id) {
                rows.push(Row {
                    workload: workload.to_string(),
                    target: id.clone(),
                    fdbvfs: human(f),
                    sqlite: human(sqlite),
                    ratio: f / sqlite,
                });
            }
        }
    }

    let writers: Vec<Writers> = read_csv(&dir().join("fdbvfs-writers.csv"))
        .into_iter()
        .filter_map(|r| {
            Some(Writers {
                target: r.get("target")?.clone(),
                writers: r.get("writers")?.parse().ok()?,
                tps: r.get("txn_per_s")?.parse().ok()?,
                abort_rate: r.get("abort_rate")?.parse().ok()?,
            })
        })
        .collect();
    for w in writers.iter().filter(|w| w.target.starts_with("fdbvfs")) {
        if let Some(s) = writers
            .iter()
            .find(|s| s.target == "sqlite" && s.writers == w.writers)
        {
            rows.push(Row {
                workload: format!("{} concurrent writers (txn/s, abort rate)", w.writers),
                target: w.target.clone(),
                fdbvfs: format!("{:.0}/s, {:.1}% aborts", w.tps, w.abort_rate * 100.0),
                sqlite: format!("{:.0}/s", s.tps),
                ratio: s.tps / w.tps.max(1e-9),
            });
        }
    }

    let bulk = read_csv(&dir().join("fdbvfs-bulk_load.csv"));
    let sqlite_bulk = bulk
        .iter()
        .find(|r| r.get("target").map(String::as_str) == Some("sqlite"))
        .and_then(|r| r.get("seconds")?.parse::<f64>().ok());
    if let Some(s) = sqlite_bulk {
        for r in &bulk {
            let (Some(t), Some(secs)) = (
                r.get("target"),
                r.get("seconds").and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if t.starts_with("fdbvfs") {
                let gib = r
                    .get("bytes")
                    .and_then(|b| b.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    / (1u64 << 30) as f64;
                rows.push(Row {
                    workload: format!("bulk load, {gib:.2} GiB in one transaction"),
                    target: t.clone(),
                    fdbvfs: format!("{secs:.1} s"),
                    sqlite: format!("{s:.1} s"),
                    ratio: secs / s,
                });
            }
        }
    }

    println!("| workload | target | fdbvfs | plain SQLite | ratio |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2}× |",
            r.workload, r.target, r.fdbvfs, r.sqlite, r.ratio
        );
    }
    let csv = dir().join("fdbvfs-table.csv");
    std::fs::create_dir_all(dir())?;
    let mut f = std::fs::File::create(&csv)?;
    writeln!(f, "workload,target,fdbvfs,plain_sqlite,ratio")?;
    for r in &rows {
        writeln!(
            f,
            "\"{}\",{},\"{}\",\"{}\",{:.4}",
            r.workload, r.target, r.fdbvfs, r.sqlite, r.ratio
        )?;
    }
    println!("\nwrote {}", csv.display());

    let fdb: Vec<&Writers> = writers
        .iter()
        .filter(|w| w.target.starts_with("fdbvfs"))
        .collect();
    if !fdb.is_empty() {
        let png = dir().join("fdbvfs-writers.png");
        chart(&fdb, &png)?;
        println!("wrote {}", png.display());
    }
    Ok(())
}

const W: u32 = 960;
const H: u32 = 560;

/// Throughput vs writers, one line per fdbvfs configuration.
fn chart(points: &[&Writers], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1, y0, y1) = (90i32, 600i32, 50i32, 500i32);
        let ymax = points.iter().map(|p| p.tps).fold(1.0f64, f64::max) * 1.1;
        let ymax = nice(ymax);
        let px = |w: u32| x0 + ((w as f64 - 1.0) / 7.0 * (x1 - x0) as f64) as i32;
        let py = |t: f64| y1 - (t / ymax * (y1 - y0) as f64) as i32;
        // Axes, grid and tick labels.
        let grey = RGBColor(220, 220, 220);
        for i in 0..=5 {
            let v = ymax * i as f64 / 5.0;
            let y = py(v);
            root.draw(&PathElement::new(vec![(x0, y), (x1, y)], grey))?;
            let s = format!("{v:.0}");
            text(&root, &s, x0 - 8 - 12 * s.len() as i32, y - 7, 2, &BLACK)?;
        }
        for w in [1u32, 2, 4, 8] {
            let x = px(w);
            root.draw(&PathElement::new(vec![(x, y0), (x, y1)], grey))?;
            text(&root, &w.to_string(), x - 5, y1 + 10, 2, &BLACK)?;
        }
        root.draw(&PathElement::new(
            vec![(x0, y0), (x0, y1), (x1, y1)],
            BLACK.stroke_width(2),
        ))?;
        text(&root, "TXN/S", 10, 14, 2, &BLACK)?;
        text(&root, "WRITERS", (x0 + x1) / 2 - 40, y1 + 34, 2, &BLACK)?;
        text(&root, "FDBVFS: THROUGHPUT VS WRITERS", 200, 14, 2, &BLACK)?;
        // One line per configuration.
        let mut targets: Vec<&str> = points.iter().map(|p| p.target.as_str()).collect();
        targets.dedup();
        for (i, t) in targets.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut line: Vec<(i32, i32)> = points
                .iter()
                .filter(|p| p.target == *t)
                .map(|p| (px(p.writers), py(p.tps)))
                .collect();
            line.sort();
            root.draw(&PathElement::new(line.clone(), color.stroke_width(3)))?;
            for &(x, y) in &line {
                root.draw(&Circle::new((x, y), 4, color.filled()))?;
            }
            let ly = y0 + 10 + 26 * i as i32;
            root.draw(&PathElement::new(
                vec![(x1 + 20, ly + 6), (x1 + 50, ly + 6)],
                color.stroke_width(3),
            ))?;
            let label = t.trim_start_matches("fdbvfs-").to_uppercase();
            text(&root, &label, x1 + 58, ly, 2, &BLACK)?;
        }
        root.present()?;
    }
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
}

/// A round axis maximum (1, 2 or 5 times a power of ten) at or above `v`.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// Draws `s` (upper case, digits, ` .=/-%:`) in a 5x7 pixel font scaled by
/// `scale`, top-left at (x, y). Plotters' own text needs a font library.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    x: i32,
    y: i32,
    scale: i32,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, c) in s.chars().enumerate() {
        let rows = glyph(c);
        let gx = x + i as i32 * 6 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let px = gx + col * scale;
                    let py = y + r as i32 * scale;
                    area.draw(&Rectangle::new(
                        [(px, py), (px + scale - 1, py + scale - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
    }
    Ok(())
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        _ => [0; 7],
    }
}
