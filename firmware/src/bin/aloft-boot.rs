//! `aloft-boot`: the host boot simulator. Boots the device whose flash file
//! and identity bundle are given, starts the chosen slot's firmware and acts
//! as its watchdog, until SIGTERM or SIGINT (then it kills the firmware and
//! exits 0). Prints one line per boot event (JSON lines with `--json`).
//! Exits non-zero if the device cannot boot (no slot holds a verified image).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aloft_firmware::boot::{self, BootEvent, BootOptions, Outcome};
use clap::Parser;

/// Boot a simulated device from its flash file and watch its firmware.
#[derive(Debug, Parser)]
#[command(name = "aloft-boot", version, about)]
struct Args {
    /// The device's flash file (as `aloft-release factory` made it).
    #[arg(long, value_name = "FILE")]
    flash: PathBuf,
    /// The device's identity bundle (identity.pb). A template without a key
    /// (`aloft device template`) is enrolled at the first boot: the device
    /// makes its key and writes its registration request (see
    /// `--request-out`).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// Where the first factory boot writes the registration request
    /// (default: next to the identity bundle, STEM.request.json).
    #[arg(long, value_name = "FILE")]
    request_out: Option<PathBuf>,
    /// Directory for the started images (default: the flash file's directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Watchdog timeout in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    watchdog_ms: u64,
    /// Pause between a reset and the next boot, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    reset_delay_ms: u64,
    /// Stop after this many boots (default: run until SIGTERM/SIGINT).
    #[arg(long, value_name = "N")]
    max_boots: Option<u32>,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = watch_signals(stop.clone()) {
        eprintln!("aloft-boot: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let mut opts = BootOptions::new(args.flash, args.identity);
    if let Some(dir) = args.work_dir {
        opts.work_dir = dir;
    }
    if let Some(out) = args.request_out {
        opts.request_out = out;
    }
    opts.watchdog = Duration::from_millis(args.watchdog_ms.max(1));
    opts.reset_delay = Duration::from_millis(args.reset_delay_ms);
    let mut boots = 0u32;
    let result = boot::run(&opts, &stop, |event| {
        print_event(event, args.json);
        if let BootEvent::Reset { .. } = event {
            boots += 1;
            if args.max_boots.is_some_and(|max| boots >= max) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloft-boot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_event(event: &BootEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
        return;
    }
    match event {
        BootEvent::Booted {
            boot,
            slot,
            release,
            version,
            trial,
            attempts_left,
        } => {
            let trial = if *trial {
                format!(" (trial, {attempts_left} attempts left)")
            } else {
                String::new()
            };
            println!("boot {boot}: slot {slot} {release} {version}{trial}");
        }
        BootEvent::Enrolled {
            device_id,
            request,
            key_made,
        } => {
            let key = if *key_made {
                "made its key"
            } else {
                "kept its key"
            };
            println!(
                "first factory boot: {device_id} {key}; registration request in {request} (register it: aloft device register --request {request})"
            );
        }
        BootEvent::Started { version } => println!("firmware {version} started"),
        BootEvent::Confirmed => println!("firmware confirmed"),
        BootEvent::Reset { outcome } => {
            let why = match outcome {
                Outcome::Reboot => "reboot requested".to_owned(),
                Outcome::HealthFailed => "health check failed".to_owned(),
                Outcome::Crash(Some(code)) => format!("crashed (exit {code})"),
                Outcome::Crash(None) => "crashed (killed by a signal)".to_owned(),
                Outcome::Watchdog => "watchdog expired".to_owned(),
                Outcome::Stopped => "stopped".to_owned(),
            };
            println!("reset: {why}");
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT (a small tokio runtime on its own thread).
fn watch_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        stop.store(true, Ordering::SeqCst);
    });
    Ok(())
}
