//! `cargo xtask bench`: builds `aloft-bench` in release mode, runs the
//! selected benchmarks, and leaves BENCHMARKS.md and `bench/results.json`
//! in the workspace root.
//!
//! Process hygiene: the bench runs in its own process group with a deadline;
//! it watches this process and kills its whole group if the xtask goes away
//! (Ctrl-C) or the deadline passes. After it exits, the xtask kills whatever
//! is left in that group, so nothing it started outlives the command.
//! Benchmarks only use 127.0.0.0/8.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, workspace_root};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only these benchmarks (comma-separated names; see `--list`).
    /// Results of the others are kept from the previous run on this machine.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Fewer, smaller repetitions: a quick smoke run (noisier figures).
    #[arg(long)]
    quick: bool,
    /// List the benchmarks and exit.
    #[arg(long)]
    list: bool,
    /// Stop the bench (and everything it started) after this many minutes.
    #[arg(long, default_value_t = 60)]
    timeout_minutes: u64,
    /// Instead of benchmarking, profile the device install path with
    /// `perf record` (installed from Debian's packages if missing) and print
    /// the hottest functions.
    #[arg(long)]
    profile: bool,
}

/// The target directory cargo builds into (honours `CARGO_TARGET_DIR`).
fn target_dir() -> Result<PathBuf> {
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()
            .context("current directory")?
            .join(dir),
        None => workspace_root().join("target"),
    })
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Sends SIGKILL to every process in group `pgid` (no error if none is left).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs the task.
pub fn run(args: &Args) -> Result<()> {
    // The network benchmarks start the server binary built next to the bench.
    Cmd::cargo([
        "build",
        "--release",
        "-p",
        "aloft-bench",
        "-p",
        "aloft-server",
    ])
    .run()?;
    let bin = target_dir()?.join("release").join("aloft-bench");
    if args.list {
        return Cmd::new(&bin).args(["--list"]).run();
    }
    if args.profile {
        return profile(&bin);
    }
    let root = workspace_root();
    // Leftovers of an interrupted run (e.g. a half-filled store) go first.
    let scratch = target_dir()?.join("bench-scratch");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let deadline = Duration::from_secs(args.timeout_minutes.max(1) * 60);
    let mut bench_args: Vec<String> = vec![
        "--json".into(),
        "bench/results.json".into(),
        "--markdown".into(),
        "BENCHMARKS.md".into(),
        "--commit".into(),
        git_commit(),
        "--scratch".into(),
        scratch.display().to_string(),
        "--supervisor".into(),
        std::process::id().to_string(),
        "--deadline-secs".into(),
        deadline.as_secs().to_string(),
    ];
    if args.quick {
        bench_args.push("--quick".into());
    }
    if !args.only.is_empty() {
        bench_args.push("--only".into());
        bench_args.push(args.only.join(","));
    }
    println!("$ aloft-bench {}", bench_args.join(" "));
    let mut child = {
        use std::os::unix::process::CommandExt as _;
        Command::new(&bin)
            .args(&bench_args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?
    };
    let pgid = child.id();
    let start = Instant::now();
    // The bench enforces the deadline itself; this is the backstop.
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for aloft-bench")? {
            break Some(status);
        }
        if start.elapsed() > deadline + Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    kill_group(pgid);
    let _ = child.wait();
    match status {
        None => bail!(
            "aloft-bench ran past its {} minute deadline and was killed",
            args.timeout_minutes
        ),
        Some(s) if !s.success() => bail!("aloft-bench failed ({s})"),
        Some(_) => {
            println!("BENCHMARKS.md and bench/results.json are up to date");
            Ok(())
        }
    }
}

/// `perf record` of the install loop, then the top of `perf report`.
fn profile(bin: &std::path::Path) -> Result<()> {
    if !Cmd::new("perf").args(["--version"]).succeeds() {
        println!("perf is missing: installing it from Debian's packages");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let apt = |args: &[&str]| {
            if root {
                Cmd::new("apt-get").args(args).run()
            } else {
                Cmd::new("sudo").args(["apt-get"]).args(args).run()
            }
        };
        apt(&["update"])?;
        apt(&["install", "-y", "linux-perf"])?;
    }
    let data = target_dir()?
        .join("bench-scratch")
        .join("install.perf.data");
    if let Some(dir) = data.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let data_s = data.display().to_string();
    let bin_s = bin.display().to_string();
    Cmd::new("perf")
        .args([
            "record",
            "-F",
            "2000",
            "-g",
            "-o",
            &data_s,
            "--",
            &bin_s,
            "--profile-install",
            "8",
        ])
        .run()?;
    Cmd::new("perf")
        .args([
            "report",
            "-i",
            &data_s,
            "--stdio",
            "--no-children",
            "--percent-limit",
            "1",
            "-g",
            "none",
            "--sort",
            "symbol",
        ])
        .run()
}
