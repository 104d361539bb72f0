//! `cargo xtask bench`: Run the benchmarks and write BENCHMARKS.md plus raw JSON.

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the task.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask bench` is not built yet")
}
