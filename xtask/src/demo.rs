//! `cargo xtask demo`: Run the full stack locally: server, provisioned devices under the boot simulator, staged rollouts, a faulty release that rolls back.

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the task.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask demo` is not built yet")
}
