//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (one per decoder
//! or state machine an attacker reaches; see `fuzz/src/seeds.rs` for the
//! list and each target's doc comment for what it checks).
//!
//! - `cargo xtask fuzz --smoke`: checks fuzz/ is formatted, builds every
//!   target, checks that the committed seed corpus is the one
//!   `fuzz/src/seeds.rs` generates, then
//!   runs each target for `--time` (default 10 s) from its seeds, writing
//!   nothing to `fuzz/corpus`; prints executions per second. A step of
//!   `cargo xtask ci`.
//! - `cargo xtask fuzz TARGET [--time 10m]`: one target for longer; new
//!   inputs go to `fuzz/target/corpus/TARGET` (kept between runs, not
//!   committed).
//! - `cargo xtask fuzz --seed`: regenerates `fuzz/corpus` (commit it).
//! - `cargo xtask fuzz --list`: the targets.
//!
//! Every run limits memory (`-rss_limit_mb`, and `-malloc_limit_mb` for any
//! single allocation) and the time per input (`-timeout`). A crash leaves
//! its input in `fuzz/artifacts/TARGET/`; reproduce it with
//! `fuzz/target/<host>/release/TARGET fuzz/artifacts/TARGET/crash-...`,
//! then make it a regression test in the owning crate.
//!
//! Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz
//! (pinned) on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, workspace_root};

/// cargo-fuzz release installed when it is missing (pinned so the build
/// flags it passes stay the same).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Largest resident memory of a fuzzing process (ASan's shadow and
/// quarantine included), in MB.
const RSS_LIMIT_MB: u32 = 2048;
/// Largest single allocation, in MB: far above any limit the decoders
/// allow (16 KiB envelopes, 64 KiB chunks, 8 KiB device messages), far
/// below what an unchecked length field would ask for.
const MALLOC_LIMIT_MB: u32 = 64;
/// Longest time for one input, in seconds (a slower input counts as a hang).
const INPUT_TIMEOUT_SECS: u32 = 10;
/// Default time per target of `--smoke`.
const SMOKE_SECS: u64 = 10;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run one target (see `--list`) instead of all.
    target: Option<String>,
    /// Run every target briefly from the seed corpus (writes no corpus).
    #[arg(long, conflicts_with_all = ["target", "seed"])]
    smoke: bool,
    /// How long to run: per target with `--smoke` (default 10s), for
    /// TARGET (default 10m). e.g. 30s, 10m, 2h.
    #[arg(long, value_parser = parse_time)]
    time: Option<Duration>,
    /// Regenerate the seed corpus in fuzz/corpus.
    #[arg(long, conflicts_with = "target")]
    seed: bool,
    /// List the targets.
    #[arg(long)]
    list: bool,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 30s, 10m or 2h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("the time must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Runs `cargo xtask fuzz`.
pub fn run(args: &Args) -> Result<()> {
    if args.list {
        for t in targets()? {
            println!("{t}");
        }
        return Ok(());
    }
    if args.seed {
        build()?;
        return gen_seeds(false);
    }
    if args.smoke {
        return smoke_for(args.time.unwrap_or(Duration::from_secs(SMOKE_SECS)));
    }
    let Some(target) = &args.target else {
        bail!("name a target (`cargo xtask fuzz --list`), or use --smoke or --seed");
    };
    if !targets()?.contains(target) {
        bail!("no fuzz target {target:?}: `cargo xtask fuzz --list` shows them");
    }
    build()?;
    let time = args.time.unwrap_or(Duration::from_secs(600));
    let corpus = fuzz_dir().join("target/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let run = run_target(target, time, &corpus, false)?;
    println!(
        "\n{target}: {} executions in {:.0}s ({} exec/s), {} new inputs in {}",
        run.execs,
        run.took.as_secs_f64(),
        run.exec_per_sec,
        run.new_units,
        corpus.display()
    );
    if let Some(failure) = run.failure {
        bail!("{target} failed: {failure}");
    }
    Ok(())
}

/// `cargo xtask fuzz --smoke` with the default time (the CI step).
pub fn smoke() -> Result<()> {
    smoke_for(Duration::from_secs(SMOKE_SECS))
}

fn smoke_for(time: Duration) -> Result<()> {
    let started = Instant::now();
    // The fuzz crate is its own workspace, so `cargo fmt --all` skips it.
    Cmd::cargo(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"])
        .run()
        .context("fuzz/ is not formatted: run `cargo fmt --manifest-path fuzz/Cargo.toml`")?;
    build()?;
    let built = started.elapsed();
    gen_seeds(true)?;
    let scratch = fuzz_dir().join("target/smoke");
    let mut results = Vec::new();
    for target in targets()? {
        let dir = scratch.join(&target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let run = run_target(&target, time, &dir, true)?;
        println!(
            "    {target:<18} {:>8} execs {:>7} exec/s  {}",
            run.execs,
            run.exec_per_sec,
            run.failure.as_deref().unwrap_or("ok")
        );
        results.push((target, run));
    }
    println!("\n==> fuzz smoke ({}s per target)", time.as_secs());
    println!(
        "    {:<18} {:>9} {:>8} {:>7}  result",
        "target", "execs", "exec/s", "rss MB"
    );
    for (target, r) in &results {
        println!(
            "    {target:<18} {:>9} {:>8} {:>7}  {}",
            r.execs,
            r.exec_per_sec,
            r.peak_rss_mb,
            r.failure.as_deref().unwrap_or("ok")
        );
    }
    println!(
        "    {} targets; build {:.0}s, total {:.0}s",
        results.len(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.failure.is_some())
        .map(|(t, _)| t.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz smoke failed for: {} (inputs in fuzz/artifacts/<target>/; reproduce with \
             fuzz/target/{}/release/<target> <input>)",
            failed.join(", "),
            host()?
        );
    }
    Ok(())
}

/// `fuzz/` in the workspace.
fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// The targets: the `[[bin]]`s of fuzz/Cargo.toml with a file in
/// fuzz/fuzz_targets/, in file-name order.
fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `cargo +nightly` (the rustup proxy, so the toolchain override applies).
fn nightly<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Cmd::new("cargo").args(["+nightly"]).args(args)
}

/// Installs cargo-fuzz if needed, then builds every target (address
/// sanitizer, debug assertions and overflow checks on) into fuzz/target.
fn build() -> Result<()> {
    if !nightly(["--version"]).succeeds() {
        bail!(
            "fuzzing needs the nightly toolchain (`cargo +nightly`); install it with \
             `rustup toolchain install nightly`"
        );
    }
    let installed = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() != Some(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}")) {
        println!(
            "cargo-fuzz {CARGO_FUZZ_VERSION} not found ({}): installing it with \
             `cargo install --locked cargo-fuzz --version {CARGO_FUZZ_VERSION}` (once per machine)",
            installed.as_deref().unwrap_or("missing")
        );
        let started = Instant::now();
        Cmd::cargo([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .run()
        .context("installing cargo-fuzz")?;
        println!(
            "cargo-fuzz installed in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    let target_dir = fuzz_dir().join("target");
    nightly(["fuzz", "build", "--debug-assertions", "--target-dir"])
        .args([&target_dir])
        .run()
        .context("building the fuzz targets")
}

/// Host triple (where cargo-fuzz puts the binaries).
fn host() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host")
}

fn binary(name: &str) -> Result<PathBuf> {
    Ok(fuzz_dir()
        .join("target")
        .join(host()?)
        .join("release")
        .join(name))
}

/// Checks (`check`) or rewrites the seed corpus with the built generator.
fn gen_seeds(check: bool) -> Result<()> {
    let mut cmd = Cmd::new(binary("gen-seeds")?);
    if check {
        cmd = cmd.args(["--check"]);
    }
    cmd.run().context(if check {
        "the seed corpus is stale"
    } else {
        "generating the seed corpus"
    })
}

/// What one run did.
#[derive(Debug, Default)]
struct RunStats {
    execs: u64,
    exec_per_sec: u64,
    new_units: u64,
    peak_rss_mb: u64,
    took: Duration,
    /// Why it failed (crash, leak, timeout, out of memory).
    failure: Option<String>,
}

/// Runs `target` for `time` with `work` as its writable corpus and the
/// committed seeds read-only. `quiet`: libFuzzer's output goes to
/// `work.log` and is shown only on failure.
fn run_target(target: &str, time: Duration, work: &Path, quiet: bool) -> Result<RunStats> {
    let seeds = fuzz_dir().join("corpus").join(target);
    let artifacts = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let log = work.with_extension("log");
    let mut cmd = Command::new(binary(target)?);
    cmd.arg(format!("-max_total_time={}", time.as_secs()))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(work)
        .arg(&seeds)
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    if !quiet {
        println!("$ {} {}", target, work.display());
    }
    let started = Instant::now();
    let (status, text) = if quiet {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let status = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("running fuzz target {target}"))?;
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    } else {
        let out = cmd
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running fuzz target {target}"))?;
        let output = tee_stderr(out)?;
        (output.0, output.1)
    };
    let mut stats = parse_stats(&text);
    stats.took = started.elapsed();
    if !status.success() {
        let kind = text
            .lines()
            .find_map(|l| {
                l.split_once("ERROR: libFuzzer: ")
                    .map(|(_, k)| k.to_string())
            })
            .or_else(|| {
                text.lines()
                    .find(|l| l.contains("panicked at"))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("exit {status}"));
        if quiet {
            eprintln!("\n--- {target}: last lines of {} ---", log.display());
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
        stats.failure = Some(kind);
    }
    Ok(stats)
}

/// Echoes the child's stderr while collecting it.
fn tee_stderr(mut child: std::process::Child) -> Result<(std::process::ExitStatus, String)> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut text = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        eprintln!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    Ok((child.wait().context("waiting for the fuzzer")?, text))
}

/// libFuzzer's `-print_final_stats=1` lines (`stat::name: value`).
fn parse_stats(text: &str) -> RunStats {
    let mut s = RunStats::default();
    for line in text.lines() {
        let Some((name, value)) = line
            .trim()
            .strip_prefix("stat::")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name {
            "number_of_executed_units" => s.execs = v,
            "average_exec_per_sec" => s.exec_per_sec = v,
            "new_units_added" => s.new_units = v,
            "peak_rss_mb" => s.peak_rss_mb = v,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let text = "#1234\tDONE   cov: 10 ft: 20 corp: 3/1Kb exec/s: 99 rss: 50Mb\n\
                    Done 1234 runs in 11 second(s)\n\
                    stat::number_of_executed_units: 1234\n\
                    stat::average_exec_per_sec:     112\n\
                    stat::new_units_added:          7\n\
                    stat::slowest_unit_time_sec:    0\n\
                    stat::peak_rss_mb:              50\n";
        let s = parse_stats(text);
        assert_eq!(
            (s.execs, s.exec_per_sec, s.new_units, s.peak_rss_mb),
            (1234, 112, 7, 50)
        );
        assert_eq!(parse_stats("nothing").execs, 0);
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_time("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_time("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_time("45"), Ok(Duration::from_secs(45)));
        assert!(parse_time("0s").is_err());
        assert!(parse_time("10x").is_err());
        assert!(parse_time("m").is_err());
    }

    #[test]
    fn every_target_has_seeds() {
        let root = fuzz_dir().join("corpus");
        for t in targets().unwrap() {
            let n = std::fs::read_dir(root.join(&t)).map_or(0, |d| d.count());
            assert!(n > 0, "fuzz target {t} has no seed corpus");
        }
    }
}
