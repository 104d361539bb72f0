//! `aloft-firmware`: the sample device firmware, as a host program started
//! by `aloft-boot` (see `aloft_firmware::watchdog` for the protocol).
//!
//! Its version and fault are baked in at build time
//! (`aloft_firmware::config`). At start it says its version on the watchdog
//! channel, starts petting the watchdog, runs its health check, confirms
//! itself (a trial image becomes the active one and the security floor
//! rises), then runs the device agent until an install asks for a reboot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aloft_firmware::config::{self, Fault, FirmwareConfig};
use aloft_firmware::watchdog::{self, EXIT_CRASH, EXIT_HEALTH_FAILED, EXIT_REBOOT, Event};
use aloft_firmware::{board, identity};

/// What the boot simulator handed over.
struct Boot {
    flash: PathBuf,
    identity: PathBuf,
    trial: bool,
    watchdog: Duration,
}

impl Boot {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var_os(name)
                .ok_or_else(|| format!("{name} is not set (start me with aloft-boot)"))
        };
        let watchdog_ms = var(watchdog::ENV_WATCHDOG_MS)?
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("{} is not a number", watchdog::ENV_WATCHDOG_MS))?;
        Ok(Self {
            flash: var(watchdog::ENV_FLASH)?.into(),
            identity: var(watchdog::ENV_IDENTITY)?.into(),
            trial: var(watchdog::ENV_TRIAL)? == "1",
            watchdog: Duration::from_millis(watchdog_ms.max(1)),
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = config::baked();
    Event::Start(cfg.version.to_string()).send();
    tracing::info!(version = %cfg.version, fault = %cfg.fault, "aloft-firmware starting");
    if cfg.fault == Fault::Crash {
        tracing::error!("deliberate fault: crashing at start");
        return ExitCode::from(EXIT_CRASH as u8);
    }
    let boot = match Boot::from_env() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CRASH as u8);
        }
    };
    if cfg.fault == Fault::Hang {
        tracing::error!("deliberate fault: hanging without petting the watchdog");
        loop {
            std::thread::park();
        }
    }
    start_petting(boot.watchdog);
    if let Err(e) = health_check(&cfg, &boot) {
        tracing::error!(
            trial = boot.trial,
            "health check failed: {e}; not confirming"
        );
        return ExitCode::from(EXIT_HEALTH_FAILED as u8);
    }
    match run(&boot) {
        Ok(()) => {
            Event::Reboot.send();
            ExitCode::from(EXIT_REBOOT as u8)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_CRASH as u8)
        }
    }
}

/// Pets the watchdog from a thread, four times per timeout.
fn start_petting(timeout: Duration) {
    let every = (timeout / 4).max(Duration::from_millis(10));
    std::thread::spawn(move || {
        loop {
            Event::Pet.send();
            std::thread::sleep(every);
        }
    });
}

/// The sample health check: the identity bundle and the flash are usable,
/// and no deliberate health fault is baked in.
fn health_check(cfg: &FirmwareConfig, boot: &Boot) -> Result<(), String> {
    if cfg.fault == Fault::Health {
        return Err("deliberate fault: the health check fails".into());
    }
    let bundle = identity::read_bundle(&boot.identity).map_err(|e| e.to_string())?;
    identity::boot_trust_root(&bundle, &boot.identity).map_err(|e| e.to_string())?;
    board::open_flash(&boot.flash).map_err(|e| e.to_string())?;
    Ok(())
}

/// Confirms this image and runs the device agent until it asks for a reboot.
fn run(boot: &Boot) -> anyhow::Result<()> {
    let bundle = identity::read_bundle(&boot.identity)?;
    let (flash, layout) = board::open_flash(&boot.flash)?;
    let mut device =
        aloft_device::Device::open(flash, layout, board::device_config(&bundle.attributes))
            .map_err(|e| anyhow::anyhow!("opening the device: {e}"))?;
    device
        .confirm()
        .map_err(|e| anyhow::anyhow!("confirming: {e}"))?;
    Event::Confirmed.send();
    tracing::info!("confirmed; agent not wired yet, idling");
    loop {
        std::thread::park();
    }
}
