//! `cargo xtask release`: build the sample firmware, sign its manifest with
//! the offline release key, encrypt the payload and stage it (a bundle file
//! or an upload), with `aloft-release release`. Every argument is passed
//! through; see `cargo xtask release --help`.
//!
//! `aloft-release` itself runs in the dev profile (its crypto dependencies
//! are optimised by the workspace's dev profile); the firmware it builds uses
//! the `firmware` profile (release, stripped).

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd::{cargo, workspace_root};

/// Options of `cargo xtask release`: the arguments of `aloft-release release`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Arguments for `aloft-release release`, e.g. `--keys DIR --version V
    /// [--security-version N] [--fault none|health|crash|hang] [--out FILE | --server URL]`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Runs the task.
pub fn run(args: &Args) -> anyhow::Result<()> {
    run_release_tool("release", &args.args)
}

/// Runs `aloft-release SUBCOMMAND ARGS...` through `cargo run`, in the
/// caller's directory (so relative paths mean what the caller meant), with
/// its stdout untouched (scripts read it) and the command line on stderr.
pub fn run_release_tool(subcommand: &str, args: &[String]) -> anyhow::Result<()> {
    let manifest = workspace_root().join("Cargo.toml");
    let mut command = Command::new(cargo());
    command
        .arg("run")
        .arg("-q")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "aloft-release", "--bin", "aloft-release", "--"])
        .arg(subcommand)
        .args(args);
    eprintln!(
        "$ cargo run -q -p aloft-release -- {subcommand} {}",
        args.join(" ")
    );
    let status = command
        .status()
        .context("could not run cargo for aloft-release")?;
    if !status.success() {
        bail!("`aloft-release {subcommand}` failed ({status})");
    }
    Ok(())
}
