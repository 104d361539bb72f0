//! The `aloft` operator CLI. All logic lives in the library; this only
//! parses arguments (usage errors exit 2) and reports failures (exit 1).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = aloft_cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(aloft_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
