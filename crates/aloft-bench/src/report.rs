//! The results: one [`Results`] file (raw JSON) and its Markdown rendering
//! (BENCHMARKS.md).
//!
//! Every benchmark returns a [`BenchResult`]: goal rows (what was measured
//! against which goal), tables, notes and raw figures. A run of a subset
//! (`--only`) keeps the other benchmarks' earlier results when they were
//! measured on the same machine, each with its own date and commit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;

/// Version of the JSON layout; a file with another version is not merged.
pub const FORMAT_VERSION: u32 = 1;

/// The whole results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The machine every result in this file was measured on.
    pub machine: Machine,
    /// One entry per known benchmark, in registry order.
    pub benchmarks: Vec<BenchResult>,
}

/// How a benchmark ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It ran and its figures are below.
    Measured,
    /// It is not built yet (its parts are still being built).
    NotMeasuredYet,
    /// It ran and failed; the notes say why.
    Failed,
    /// Not selected in any run so far.
    NotRun,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::NotMeasuredYet => "not measured yet",
            Self::Failed => "FAILED",
            Self::NotRun => "not run",
        }
    }
}

/// A figure held against its goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// What is measured, e.g. "install / (AES-GCM + SHA-256) throughput".
    pub what: String,
    /// The goal as text, e.g. ">= 0.90".
    pub goal: String,
    /// The measured value as text.
    pub measured: String,
    /// Whether the goal is met; `None` for reference figures without a goal.
    pub met: Option<bool>,
}

/// A rendered table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Caption.
    pub title: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells (as many as columns).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with `title` and `columns`.
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| (*c).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row<S: ToString>(&mut self, cells: &[S]) {
        self.rows
            .push(cells.iter().map(ToString::to_string).collect());
    }
}

/// One benchmark's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    /// Registry name (`--only` takes it).
    pub name: String,
    /// Heading.
    pub title: String,
    /// Item number in the benchmarks issue.
    pub item: u8,
    /// How it ended.
    pub status: Status,
    /// When it ran (RFC 3339, UTC); empty if never.
    pub date: String,
    /// Git commit it ran on; empty if never.
    pub commit: String,
    /// Whether it ran in `--quick` mode (fewer, smaller repetitions).
    pub quick: bool,
    /// Wall time of the benchmark, seconds.
    pub seconds: f64,
    /// Figures against goals.
    pub goals: Vec<Goal>,
    /// Tables.
    pub tables: Vec<Table>,
    /// Notes: method, limits, profiling findings.
    pub notes: Vec<String>,
    /// Raw named figures (units in the name).
    pub figures: BTreeMap<String, f64>,
    /// Raw samples of repeated measurements (units in the name).
    pub samples: BTreeMap<String, Vec<f64>>,
}

impl BenchResult {
    /// An empty result of `status`.
    pub fn new(name: &str, title: &str, item: u8, status: Status) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            item,
            status,
            date: String::new(),
            commit: String::new(),
            quick: false,
            seconds: 0.0,
            goals: Vec::new(),
            tables: Vec::new(),
            notes: Vec::new(),
            figures: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    /// Records a raw figure.
    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.into(), value);
    }

    /// Records raw samples.
    pub fn samples(&mut self, name: &str, values: &[f64]) {
        self.samples.insert(name.into(), values.to_vec());
    }

    /// Adds a goal row.
    pub fn goal(&mut self, what: &str, goal: &str, measured: String, met: Option<bool>) {
        self.goals.push(Goal {
            what: what.into(),
            goal: goal.into(),
            measured,
            met,
        });
    }

    /// Adds a note.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }
}

/// Merges `fresh` results over `previous` ones: each benchmark takes its
/// fresh result if it ran now, else its previous one if that was measured
/// on the same machine, else a "not run" placeholder from `registry`.
pub fn merge(
    machine: Machine,
    registry: &[(String, String, u8)],
    fresh: Vec<BenchResult>,
    previous: Option<Results>,
) -> Results {
    let previous = previous
        .filter(|p| p.format == FORMAT_VERSION && p.machine.same_hardware(&machine))
        .map(|p| p.benchmarks)
        .unwrap_or_default();
    let benchmarks = registry
        .iter()
        .map(|(name, title, item)| {
            fresh
                .iter()
                .find(|r| &r.name == name)
                .or_else(|| previous.iter().find(|r| &r.name == name))
                .cloned()
                .unwrap_or_else(|| BenchResult::new(name, title, *item, Status::NotRun))
        })
        .collect();
    Results {
        format: FORMAT_VERSION,
        machine,
        benchmarks,
    }
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

fn render_table(out: &mut String, table: &Table) {
    if !table.title.is_empty() {
        let _ = writeln!(out, "**{}**\n", table.title);
    }
    let header: Vec<String> = table.columns.iter().map(|c| escape(c)).collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table.columns.len()));
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn met_label(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "-",
    }
}

/// Renders BENCHMARKS.md.
pub fn render_markdown(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    out.push_str("# Aloft benchmarks\n\n");
    out.push_str(
        "Generated by `cargo xtask bench` (raw figures: `bench/results.json`); do not edit by \
         hand. Ratios are measured within one run, on the same data, so that the shared, noisy \
         machine affects both sides alike. Figures are medians of repeated runs unless a table \
         says otherwise; timings are reported, never asserted.\n\n",
    );
    out.push_str("## Machine\n\n");
    let mut t = Table::new("", &["", ""]);
    t.row(&["CPU", &m.cpu_model]);
    t.row(&[
        "cores".to_string(),
        format!(
            "{} logical ({} physical)",
            m.logical_cores,
            m.physical_cores
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        ),
    ]);
    t.row(&[
        "memory".to_string(),
        format!("{:.1} GiB", m.memory_bytes as f64 / f64::from(1u32 << 30)),
    ]);
    t.row(&["CPU features used by the crypto", &m.crypto_features]);
    t.row(&["OS", &m.os]);
    t.row(&["rustc", &m.rustc]);
    render_table(&mut out, &t);

    out.push_str("## Summary\n\n");
    let mut t = Table::new(
        "",
        &["#", "benchmark", "figure", "goal", "measured", "met", "run"],
    );
    for b in &results.benchmarks {
        let run = if b.date.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{} `{}`{}",
                b.date.get(..10).unwrap_or(&b.date),
                b.commit.get(..10).unwrap_or(&b.commit),
                if b.quick { " (quick)" } else { "" }
            )
        };
        if b.goals.is_empty() || b.status != Status::Measured {
            t.row(&[
                b.item.to_string(),
                b.title.clone(),
                "-".into(),
                "-".into(),
                b.status.label().into(),
                "-".into(),
                run,
            ]);
            continue;
        }
        for g in &b.goals {
            t.row(&[
                b.item.to_string(),
                b.title.clone(),
                g.what.clone(),
                g.goal.clone(),
                g.measured.clone(),
                met_label(g.met).into(),
                run.clone(),
            ]);
        }
    }
    render_table(&mut out, &t);

    for b in &results.benchmarks {
        let _ = writeln!(out, "## {}. {} (`{}`)\n", b.item, b.title, b.name);
        if b.status != Status::Measured {
            let _ = writeln!(out, "Status: **{}**.\n", b.status.label());
        } else {
            let _ = writeln!(
                out,
                "Run {} on commit `{}`{}, {:.1} s.\n",
                b.date,
                b.commit,
                if b.quick { " with `--quick`" } else { "" },
                b.seconds
            );
        }
        for table in &b.tables {
            render_table(&mut out, table);
        }
        for note in &b.notes {
            let _ = writeln!(out, "- {}", note.replace('\n', "\n  "));
        }
        if !b.notes.is_empty() {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(cpu: &str) -> Machine {
        Machine {
            cpu_model: cpu.into(),
            logical_cores: 2,
            physical_cores: Some(1),
            memory_bytes: 1 << 30,
            crypto_features: "aes".into(),
            os: "linux".into(),
            rustc: "rustc".into(),
        }
    }

    fn registry() -> Vec<(String, String, u8)> {
        vec![
            ("a".into(), "A".into(), 1),
            ("b".into(), "B".into(), 2),
            ("c".into(), "C".into(), 3),
        ]
    }

    fn measured(name: &str, value: f64) -> BenchResult {
        let mut r = BenchResult::new(name, name, 1, Status::Measured);
        r.figure("x", value);
        r
    }

    #[test]
    fn merge_keeps_earlier_results_only_from_the_same_machine() {
        let first = merge(
            machine("cpu"),
            &registry(),
            vec![measured("a", 1.0), measured("b", 2.0)],
            None,
        );
        let second = merge(
            machine("cpu"),
            &registry(),
            vec![measured("b", 3.0)],
            Some(first.clone()),
        );
        assert_eq!(second.benchmarks[0].figures["x"], 1.0);
        assert_eq!(second.benchmarks[1].figures["x"], 3.0);
        assert_eq!(second.benchmarks[2].status, Status::NotRun);
        let elsewhere = merge(machine("other"), &registry(), Vec::new(), Some(first));
        assert!(
            elsewhere
                .benchmarks
                .iter()
                .all(|b| b.status == Status::NotRun)
        );
    }

    #[test]
    fn markdown_has_machine_summary_and_escaped_tables() {
        let mut r = measured("a", 1.0);
        r.goal("ratio", ">= 0.9", "0.95".into(), Some(true));
        let mut t = Table::new("T", &["k", "v"]);
        t.row(&["a|b", "1"]);
        r.tables.push(t);
        r.note("a note");
        let md = render_markdown(&merge(machine("cpu"), &registry(), vec![r], None));
        assert!(md.contains("| CPU | cpu |"), "{md}");
        assert!(md.contains("| ratio | >= 0.9 | 0.95 | yes |"), "{md}");
        assert!(md.contains("a\\|b"), "{md}");
        assert!(md.contains("- a note"), "{md}");
        assert!(md.contains("not run"), "{md}");
    }
}
