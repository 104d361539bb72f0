//! `cargo xtask keys`: Create local key material: root and release keys, the TrustRoot, a local CA and a localhost server certificate.

/// Options of `cargo xtask keys`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the task.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask keys` is not built yet")
}
