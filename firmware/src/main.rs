//! `aloft-firmware`: the sample device firmware, as a host program started
//! by `aloft-boot` (see `aloft_firmware::watchdog` for the protocol).
//!
//! Its version and fault are baked in at build time
//! (`aloft_firmware::config`). At start it says its version on the watchdog
//! channel, starts petting the watchdog, runs its health check, confirms
//! itself (a trial image becomes the active one and the security floor
//! rises), then runs the device agent until an install asks for a reboot.
//!
//! Optional environment (inherited through `aloft-boot`):
//! `ALOFT_AGENT_MAX_CHECK_IN_MS` caps the session length / check-in delay,
//! `ALOFT_AGENT_HEARTBEAT_MS` sets the heartbeat interval; `RUST_LOG` the
//! log filter (logs go to stderr; stdout is the watchdog channel).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, Identity, Outcome};
use aloft_device::{Device, Slot};
use aloft_firmware::board;
use aloft_firmware::config::{self, Fault, FirmwareConfig};
use aloft_firmware::watchdog::{self, EXIT_CRASH, EXIT_HEALTH_FAILED, EXIT_REBOOT, Event};
use anyhow::{Context as _, anyhow};

/// What the boot simulator handed over.
struct Boot {
    flash: PathBuf,
    identity: PathBuf,
    slot: Slot,
    trial: bool,
    watchdog: Duration,
}

impl Boot {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("{name} is not set (start me with aloft-boot)"))
        };
        let number = |name: &str| {
            var(name)?
                .parse::<u64>()
                .map_err(|_| format!("{name} is not a number"))
        };
        let slot = match var(watchdog::ENV_SLOT)?.as_str() {
            "A" => Slot::A,
            "B" => Slot::B,
            other => return Err(format!("{} is {other:?}, not A or B", watchdog::ENV_SLOT)),
        };
        Ok(Self {
            flash: var(watchdog::ENV_FLASH)?.into(),
            identity: var(watchdog::ENV_IDENTITY)?.into(),
            slot,
            trial: var(watchdog::ENV_TRIAL)? == "1",
            watchdog: Duration::from_millis(number(watchdog::ENV_WATCHDOG_MS)?.max(1)),
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
    match run(&cfg, &boot) {
        Ok(Exit::Reboot) => {
            Event::Reboot.send();
            ExitCode::from(EXIT_REBOOT as u8)
        }
        Ok(Exit::Shutdown) => ExitCode::SUCCESS,
        Ok(Exit::HealthFailed(e)) => {
            tracing::error!(
                trial = boot.trial,
                "health check failed: {e}; not confirming"
            );
            ExitCode::from(EXIT_HEALTH_FAILED as u8)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_CRASH as u8)
        }
    }
}

/// How the firmware ends.
enum Exit {
    /// An update was installed: reboot into it.
    Reboot,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// The health check failed (the image stays unconfirmed).
    HealthFailed(String),
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

/// The sample health check: the device state says this slot was booted,
/// and no deliberate health fault is baked in.
fn health_check(
    cfg: &FirmwareConfig,
    boot: &Boot,
    device: &Device<board::FileFlash>,
) -> Result<(), String> {
    if cfg.fault == Fault::Health {
        return Err("deliberate fault: the health check fails".into());
    }
    if device.booted_slot() != boot.slot {
        return Err(format!(
            "started from slot {:?} but the device state says {:?}",
            boot.slot,
            device.booted_slot()
        ));
    }
    // The image the device core verified for this slot is this build.
    match device.running() {
        Some(image) if image.version == cfg.version => Ok(()),
        Some(image) => Err(format!(
            "this build is {} but the device recorded {} for slot {:?}",
            cfg.version, image.version, boot.slot
        )),
        None => Err("the device state records no image for the booted slot".into()),
    }
}

/// Health check, confirm, then the device agent until it asks for a reboot.
fn run(cfg: &FirmwareConfig, boot: &Boot) -> anyhow::Result<Exit> {
    let identity = Identity::load(&boot.identity)?;
    let (flash, layout) = board::open_flash(&boot.flash)?;
    let device = Device::open(flash, layout, identity.device_config()?)
        .map_err(|e| anyhow!("opening the device state: {e}"))?;
    if let Err(e) = health_check(cfg, boot, &device) {
        return Ok(Exit::HealthFailed(e));
    }
    let mut agent = Agent::new(identity, device, agent_config()?)?;
    agent.confirm().context("confirming this image")?;
    Event::Confirmed.send();
    tracing::info!(version = %cfg.version, "confirmed; running the agent");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(agent.run(shutdown_signal()))?;
    Ok(match outcome {
        Outcome::RebootRequested {
            release_id,
            version,
        } => {
            tracing::info!(%release_id, %version, "installed; rebooting");
            Exit::Reboot
        }
        Outcome::Shutdown => Exit::Shutdown,
    })
}

/// Environment variable: upper bound on a session / check-in delay, in
/// milliseconds (demos shorten it so devices see new rollouts quickly).
const ENV_MAX_CHECK_IN_MS: &str = "ALOFT_AGENT_MAX_CHECK_IN_MS";
/// Environment variable: heartbeat interval within a session, in milliseconds.
const ENV_HEARTBEAT_MS: &str = "ALOFT_AGENT_HEARTBEAT_MS";

/// The agent's defaults, with the optional overrides above (inherited from
/// `aloft-boot`'s environment).
fn agent_config() -> anyhow::Result<AgentConfig> {
    let mut config = AgentConfig::default();
    let ms = |name: &str| -> anyhow::Result<Option<Duration>> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(Duration::from_millis(
                v.parse()
                    .with_context(|| format!("{name}={v:?} is not a number"))?,
            ))),
            Err(_) => Ok(None),
        }
    };
    if let Some(d) = ms(ENV_MAX_CHECK_IN_MS)? {
        config.max_check_in = d;
        config.default_check_in = config.default_check_in.min(d);
    }
    if let Some(d) = ms(ENV_HEARTBEAT_MS)? {
        config.heartbeat = d;
    }
    Ok(config)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
