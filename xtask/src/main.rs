//! Aloft's project tasks, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Each task is its own module; [`Task`] lists them. Tasks shell out to
//! `cargo` and friends and stop at the first failure with a non-zero exit.

mod bench;
mod browser;
mod ci;
mod cmd;
mod demo;
mod fuzz;
mod keys;
mod readme;
mod release;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Aloft's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The tasks; each is a module of the same name.
#[derive(Debug, Subcommand)]
enum Task {
    /// Run everything CI checks: rustfmt, clippy, the tests, the no_std
    /// proof and cargo-deny.
    Ci(ci::Args),
    /// Create local key material: root and release keys, the TrustRoot, a
    /// local CA and a server certificate for localhost.
    Keys(keys::Args),
    /// Build, sign, encrypt and stage a firmware release.
    Release(release::Args),
    /// Run the full stack locally on loopback (the README's run command).
    Demo(demo::Args),
    /// Run the benchmarks; writes BENCHMARKS.md and raw JSON.
    Bench(bench::Args),
    /// Run README.md's "By hand" commands as written (in target/readme/).
    Readme(readme::Args),
    /// Run the fuzz targets of fuzz/: `--smoke` (all, briefly), one target
    /// for longer, or `--seed` to regenerate the seed corpus.
    Fuzz(fuzz::Args),
    /// Run the dashboard's browser tests as CI does (installing Chromium
    /// and chromedriver with apt-get when they are missing).
    Browser(browser::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Ci(args) => ci::run(&args),
        Task::Keys(args) => keys::run(&args),
        Task::Release(args) => release::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Readme(args) => readme::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Browser(args) => browser::task(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nerror: {err:#}");
            ExitCode::FAILURE
        }
    }
}
