//! Aloft's project tasks, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Each task is its own module; [`Task`] lists them. Tasks shell out to
//! `cargo` and friends and stop at the first failure with a non-zero exit.

mod ci;
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Aloft's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The tasks. Add new ones (release, keys, demo, bench) as a variant here
/// and a module beside `ci`.
#[derive(Debug, Subcommand)]
enum Task {
    /// Run everything CI checks: rustfmt, clippy, the tests, the no_std
    /// proof and cargo-deny.
    Ci(ci::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Ci(args) => ci::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nerror: {err:#}");
            ExitCode::FAILURE
        }
    }
}
