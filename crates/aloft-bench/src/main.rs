//! `aloft-bench`: Aloft's benchmarks. `cargo xtask bench` builds it in
//! release mode and runs it; it runs the selected benchmarks one after the
//! other, then writes the raw figures as JSON and renders BENCHMARKS.md.
//!
//! Modules: [`benches`] (the registry and one module per benchmark),
//! [`measure`] (statistics, peak heap and stack), [`fixture`] (real keys,
//! signed releases, encrypted payloads), [`machine`], [`report`].

mod benches;
mod fixture;
mod machine;
mod measure;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::benches::Ctx;
use crate::machine::Machine;
use crate::report::{BenchResult, Results, Status};

#[global_allocator]
static GLOBAL: measure::CountingAlloc = measure::CountingAlloc;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "aloft-bench", about = "Aloft's benchmarks")]
struct Cli {
    /// Run only these benchmarks (comma-separated names; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Fewer, shorter repetitions (a smoke run; figures are noisier).
    #[arg(long)]
    quick: bool,
    /// List the benchmarks and exit.
    #[arg(long)]
    list: bool,
    /// Raw results (merged with an earlier file of the same machine).
    #[arg(long, default_value = "bench/results.json")]
    json: PathBuf,
    /// The Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// Git commit being measured (the xtask passes it).
    #[arg(long, default_value = "")]
    commit: String,
    /// Scratch directory (created if missing; the run's files are removed).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Process id of the supervising `cargo xtask bench`: if it goes away,
    /// this process kills its own process group (itself and everything it
    /// started). Only honoured when this process leads its own group.
    #[arg(long, value_name = "PID")]
    supervisor: Option<u32>,
    /// Kill the process group after this many seconds (with --supervisor).
    #[arg(long, value_name = "SECS")]
    deadline_secs: Option<u64>,
    /// Instead of benchmarking, run the device install loop for this many
    /// seconds (a target for `perf record`).
    #[arg(long, value_name = "SECS")]
    profile_install: Option<f64>,
    /// Instead of benchmarking, serve the check-in floor of benchmark 3
    /// from DIR (started by the benchmark itself).
    #[arg(long, value_name = "DIR", hide = true)]
    floor_server: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloft-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This process's process group id, from `/proc/self/stat`.
fn own_pgid() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // pid (comm) state ppid pgrp ...; comm may contain spaces: skip past ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Kills the bench's process group when the supervisor exits or the
/// deadline passes (a watchdog thread).
fn supervise(supervisor: u32, deadline: Option<std::time::Duration>) {
    let me = std::process::id();
    if own_pgid() != Some(me) {
        eprintln!("aloft-bench: not a process group leader; --supervisor ignored");
        return;
    }
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let orphaned = std::os::unix::process::parent_id() != supervisor;
            let late = deadline.is_some_and(|d| start.elapsed() > d);
            if orphaned || late {
                eprintln!(
                    "aloft-bench: {}; stopping every process of the bench",
                    if orphaned {
                        "the xtask went away"
                    } else {
                        "deadline passed"
                    }
                );
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{me}")])
                    .status();
                std::process::exit(2);
            }
        }
    });
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Some(pid) = cli.supervisor {
        supervise(pid, cli.deadline_secs.map(std::time::Duration::from_secs));
    }
    let registry = benches::registry();
    if cli.list {
        for b in &registry {
            println!("{:<22} {}. {}", b.name(), b.item(), b.title());
        }
        return Ok(());
    }
    if let Some(dir) = &cli.floor_server {
        return benches::floor::serve(dir);
    }
    if let Some(secs) = cli.profile_install {
        return benches::install::profile_loop(secs);
    }
    for name in &cli.only {
        if !registry.iter().any(|b| b.name() == name) {
            bail!("unknown benchmark `{name}` (see --list)");
        }
    }
    let scratch_parent = match &cli.scratch {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => std::env::temp_dir(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("aloft-bench-")
        .tempdir_in(&scratch_parent)
        .context("creating the scratch directory")?;
    let ctx = Ctx {
        quick: cli.quick,
        scratch: scratch.path().to_path_buf(),
    };
    let machine = Machine::detect();
    println!(
        "machine: {} ({} logical cores), {:.1} GiB",
        machine.cpu_model,
        machine.logical_cores,
        machine.memory_bytes as f64 / f64::from(1u32 << 30)
    );
    let mut fresh = Vec::new();
    for bench in &registry {
        if !cli.only.is_empty() && !cli.only.iter().any(|n| n == bench.name()) {
            continue;
        }
        println!("== {} ({}) ==", bench.title(), bench.name());
        let date = jiff::Timestamp::now()
            .round(jiff::Unit::Second)?
            .to_string();
        let (outcome, seconds) = measure::timed(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench.run(&ctx)))
        });
        let mut result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => failed(bench.as_ref(), format!("{e:#}")),
            Err(panic) => failed(
                bench.as_ref(),
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "panicked".into()),
            ),
        };
        result.date = date;
        result.commit.clone_from(&cli.commit);
        result.quick = cli.quick;
        result.seconds = seconds;
        for g in &result.goals {
            println!("  {}: {} (goal {})", g.what, g.measured, g.goal);
        }
        if result.status != Status::Measured {
            for n in &result.notes {
                println!("  {n}");
            }
        }
        fresh.push(result);
    }
    let failures: Vec<String> = fresh
        .iter()
        .filter(|b| b.status == Status::Failed)
        .map(|b| b.name.clone())
        .collect();
    let previous = std::fs::read(&cli.json)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Results>(&bytes).ok());
    let names: Vec<(String, String, u8)> = registry
        .iter()
        .map(|b| (b.name().to_string(), b.title().to_string(), b.item()))
        .collect();
    let results = report::merge(machine, &names, fresh, previous);
    if let Some(dir) = cli.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut json = serde_json::to_string_pretty(&results)?;
    json.push('\n');
    std::fs::write(&cli.json, json).with_context(|| format!("writing {}", cli.json.display()))?;
    std::fs::write(&cli.markdown, report::render_markdown(&results))
        .with_context(|| format!("writing {}", cli.markdown.display()))?;
    println!(
        "wrote {} and {}",
        cli.json.display(),
        cli.markdown.display()
    );
    drop(scratch);
    if !failures.is_empty() {
        bail!("failed: {}", failures.join(", "));
    }
    Ok(())
}

fn failed(bench: &dyn benches::Bench, why: String) -> BenchResult {
    let mut r = BenchResult::new(bench.name(), bench.title(), bench.item(), Status::Failed);
    r.note(format!("failed: {why}"));
    r
}
