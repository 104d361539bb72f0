//! `cargo xtask release`: Build the sample firmware, sign its manifest with the offline release key, encrypt the payload and stage it (bundle file or upload).

/// Options of `cargo xtask release`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the task.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask release` is not built yet")
}
