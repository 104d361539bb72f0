//! `cargo xtask keys`: create local key material (root and release keys, a
//! local CA and a localhost server certificate, the signed TrustRoot) with
//! `aloft-release keys`. Every argument is passed through; see
//! `cargo xtask keys --help`.

use crate::release::run_release_tool;

/// Options of `cargo xtask keys`: the arguments of `aloft-release keys`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Arguments for `aloft-release keys`, e.g. `--out DIR [--server-data DIR | --server-key HEX] [--json]`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Runs the task.
pub fn run(args: &Args) -> anyhow::Result<()> {
    run_release_tool("keys", &args.args)
}
