//! The host boot simulator: the bootloader and the watchdog of one device.
//!
//! Each boot: open the flash file, run aloft-device's boot decision (a trial
//! spends one attempt durably before it is started; the chosen slot is
//! re-verified: manifest signatures, recorded manifest, security floor,
//! image SHA-256), copy the chosen slot's image out to an executable file,
//! hash the copy once more against the verified manifest, and start it as
//! described in [`crate::watchdog`]. Then watch it: no heartbeat within the
//! watchdog timeout kills it; any exit (reboot requested, crash, health
//! failure) or a watchdog kill is a reset, and the loop boots again. The
//! flash file is closed while the firmware runs (the firmware opens it).

use std::io::{BufRead as _, BufReader};
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aloft_device::{Device, Slot};
use aloft_protocol::Digest;
use embedded_storage::nor_flash::ReadNorFlash as _;
use serde::Serialize;

use crate::board;
use crate::watchdog::{self, EXIT_HEALTH_FAILED, EXIT_REBOOT, Event};
use aloft_agent::{Identity, IdentityError};

/// How the simulator runs.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// The device's flash file.
    pub flash: PathBuf,
    /// The device's identity bundle.
    pub identity: PathBuf,
    /// Where the started image is written, as `STEM.slot-a` / `STEM.slot-b`
    /// (STEM: the flash file's name without extension), so several devices
    /// can share one directory.
    pub work_dir: PathBuf,
    /// Watchdog timeout: a firmware silent this long is killed.
    pub watchdog: Duration,
    /// Pause between a reset and the next boot.
    pub reset_delay: Duration,
    /// Where the first factory boot writes the device's registration
    /// request (one JSON line) when its identity bundle is a template
    /// without a key (default: next to the bundle, `STEM.request.json`).
    pub request_out: PathBuf,
}

impl BootOptions {
    /// Defaults: 5 s watchdog, 200 ms reset delay, images next to the flash file.
    pub fn new(flash: PathBuf, identity: PathBuf) -> Self {
        let work_dir = flash
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self {
            flash,
            request_out: identity.with_extension("request.json"),
            identity,
            work_dir,
            watchdog: Duration::from_secs(5),
            reset_delay: Duration::from_millis(200),
        }
    }
}

/// Why a firmware run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "code")]
pub enum Outcome {
    /// The firmware asked for a reboot ([`EXIT_REBOOT`]).
    Reboot,
    /// Its health check failed ([`EXIT_HEALTH_FAILED`]).
    HealthFailed,
    /// It exited any other way (exit code, or none for a signal).
    Crash(Option<i32>),
    /// No heartbeat within the timeout: killed by the watchdog.
    Watchdog,
    /// The simulator was stopped while it ran.
    Stopped,
}

/// What the simulator reports, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum BootEvent {
    /// A boot decision chose a slot; its image is being started.
    Booted {
        /// Boot number (the device's boot count).
        boot: u32,
        /// Slot started.
        slot: char,
        /// Release id of its image.
        release: String,
        /// Version of its image.
        version: String,
        /// True for an unconfirmed trial image.
        trial: bool,
        /// Trial attempts left after this one.
        attempts_left: u8,
    },
    /// The firmware started and said its version.
    Started {
        /// Version the running firmware reports.
        version: String,
    },
    /// The firmware confirmed itself.
    Confirmed,
    /// First factory boot: the identity bundle was a template, so the
    /// device made its key pair (kept in the bundle only) and wrote its
    /// signed registration request for the station to register.
    Enrolled {
        /// The device id.
        device_id: String,
        /// Where the request was written.
        request: String,
        /// False when the bundle already held a key (a restart before the
        /// station took the request): a fresh request under the same key.
        key_made: bool,
    },
    /// The firmware run ended and the device resets.
    Reset {
        /// Why.
        outcome: Outcome,
    },
}

/// Why the simulator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The flash file could not be opened.
    #[error("flash file {path}: {source}")]
    Board {
        /// The flash file.
        path: PathBuf,
        /// What failed.
        source: crate::BoardError,
    },
    /// The flash holds no confirmed factory image to enrol with.
    #[error(
        "first factory boot: the flash holds no confirmed factory image (write one with `aloft-release factory` first)"
    )]
    NoFactoryImage,
    /// The registration request could not be written.
    #[error("registration request {path}: {source}")]
    Request {
        /// The request file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The identity bundle could not be used.
    #[error("identity bundle {path}: {source}")]
    Identity {
        /// The bundle.
        path: PathBuf,
        /// What was wrong.
        source: IdentityError,
    },
    /// The device core failed or refused; [`aloft_device::Error::NoBootableSlot`]
    /// means neither slot holds a verified image: the device is bricked.
    #[error("boot decision: {0}")]
    Device(aloft_device::Error),
    /// The copied image does not match the verified manifest.
    #[error("the image copied out of slot {0:?} does not match its verified digest")]
    CopyMismatch(Slot),
    /// The image could not be written or started.
    #[error("starting the firmware {path}: {source}")]
    Start {
        /// The executable.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs the boot loop until `stop` is set or `on_event` breaks; the running
/// firmware is then killed. Returns the number of boots made.
pub fn run(
    opts: &BootOptions,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&BootEvent) -> ControlFlow<()>,
) -> Result<u32, BootError> {
    let identity_error = |source| BootError::Identity {
        path: opts.identity.clone(),
        source,
    };
    let identity = match Identity::load(&opts.identity) {
        Err(IdentityError::NoKey) => {
            let (identity, event) = enroll_at_first_boot(opts)?;
            if on_event(&event).is_break() {
                return Ok(0);
            }
            identity
        }
        other => other.map_err(identity_error)?,
    };
    // Boot checks each slot against what the device recorded when it
    // verified the image (no TrustRoot needed: see `Device::boot`).
    let config = identity.device_config().map_err(identity_error)?;
    let mut boots = 0;
    while !stop.load(Ordering::SeqCst) {
        let (flash, layout) =
            board::open_flash(&opts.flash).map_err(|source| BootError::Board {
                path: opts.flash.clone(),
                source,
            })?;
        let mut device = Device::open(flash, layout, config.clone()).map_err(BootError::Device)?;
        let booted = device.boot().map_err(BootError::Device)?;
        boots += 1;
        let attempts_left = device.trial().map_or(0, |(_, n)| n);
        let boot = device.boot_count();
        let mut flash = device.into_flash();
        let mut image = vec![0u8; booted.manifest.image_len() as usize];
        flash
            .read(layout.slot(booted.slot).offset, &mut image)
            .map_err(|e| BootError::Board {
                path: opts.flash.clone(),
                source: e.into(),
            })?;
        drop(flash);
        if Digest::of(&image) != booted.manifest.image_digest() {
            return Err(BootError::CopyMismatch(booted.slot));
        }
        let slot = if booted.slot == Slot::A { 'A' } else { 'B' };
        let event = BootEvent::Booted {
            boot,
            slot,
            release: booted.manifest.release_id().to_string(),
            version: booted.manifest.version().to_string(),
            trial: booted.trial,
            attempts_left,
        };
        if on_event(&event).is_break() {
            return Ok(boots);
        }
        let exe = exe_path(opts, slot);
        write_executable(&exe, &image).map_err(|source| BootError::Start {
            path: exe.clone(),
            source,
        })?;
        drop(image);
        let mut cmd = Command::new(&exe);
        cmd.env(watchdog::ENV_FLASH, &opts.flash)
            .env(watchdog::ENV_IDENTITY, &opts.identity)
            .env(watchdog::ENV_SLOT, slot.to_string())
            .env(watchdog::ENV_TRIAL, if booted.trial { "1" } else { "0" })
            .env(
                watchdog::ENV_WATCHDOG_MS,
                opts.watchdog.as_millis().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = spawn(&mut cmd).map_err(|source| BootError::Start {
            path: exe.clone(),
            source,
        })?;
        let (outcome, broke) = supervise(child, opts.watchdog, stop, &mut on_event);
        if broke {
            return Ok(boots);
        }
        if on_event(&BootEvent::Reset { outcome }).is_break() {
            return Ok(boots);
        }
        sleep_unless_stopped(opts.reset_delay, stop);
    }
    Ok(boots)
}

/// The first factory boot of a device whose bundle is a template: reads
/// the factory image's version from the flash (without a boot decision, so
/// no boot is counted), makes the key and the registration request
/// ([`aloft_agent::enroll`]) and writes the request to
/// [`BootOptions::request_out`] (temporary file, synced, renamed).
fn enroll_at_first_boot(opts: &BootOptions) -> Result<(Identity, BootEvent), BootError> {
    let identity_error = |source| BootError::Identity {
        path: opts.identity.clone(),
        source,
    };
    let (_, _, config) = aloft_agent::factory_view(&opts.identity).map_err(identity_error)?;
    let (flash, layout) = board::open_flash(&opts.flash).map_err(|source| BootError::Board {
        path: opts.flash.clone(),
        source,
    })?;
    let device = Device::open(flash, layout, config).map_err(BootError::Device)?;
    let factory_version = device.active_version().ok_or(BootError::NoFactoryImage)?;
    drop(device);
    let enrollment = aloft_agent::enroll::enroll(
        &opts.identity,
        &aloft_agent::enroll::EnrollOptions {
            factory_version,
            payloads: None,
            now: aloft_agent::WallClock::now(&aloft_agent::SystemClock),
        },
    )
    .map_err(identity_error)?;
    let device_id = enrollment.identity.device_id().to_string();
    let mut line = aloft_agent::enroll::request_line(&device_id, &enrollment.request);
    line.push('\n');
    write_synced(&opts.request_out, line.as_bytes()).map_err(|source| BootError::Request {
        path: opts.request_out.clone(),
        source,
    })?;
    let event = BootEvent::Enrolled {
        device_id,
        request: opts.request_out.display().to_string(),
        key_made: enrollment.key_made,
    };
    Ok((enrollment.identity, event))
}

/// Writes `bytes` to `path` whole or not at all (temporary file, fsync,
/// rename).
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Where the image of `slot` is written before it is started.
pub fn exe_path(opts: &BootOptions, slot: char) -> PathBuf {
    let stem = opts
        .flash
        .file_stem()
        .map_or_else(|| "flash".into(), |s| s.to_string_lossy());
    opts.work_dir
        .join(format!("{stem}.slot-{}", slot.to_ascii_lowercase()))
}

/// Writes `image` as an executable file (via a temporary name and rename).
fn write_executable(path: &Path, image: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, image)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)
}

/// Spawns, retrying while the executable is "busy": another thread of this
/// process may be forking with the file's write descriptor still open.
fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// A line from the firmware's channel, or its end.
enum Line {
    Event(Event),
    Log(String),
    Eof,
}

/// Watches a running firmware until it exits, the watchdog fires, `stop`
/// is set or `on_event` breaks (then the second value is true).
fn supervise(
    mut child: Child,
    timeout: Duration,
    stop: &AtomicBool,
    on_event: &mut impl FnMut(&BootEvent) -> ControlFlow<()>,
) -> (Outcome, bool) {
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let msg = Event::parse(&line).map_or(Line::Log(line), Line::Event);
                if tx.send(msg).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Eof);
        });
    }
    let tick = Duration::from_millis(50);
    let mut deadline = Instant::now() + timeout;
    let mut reboot_requested = false;
    let mut channel_open = true;
    loop {
        if stop.load(Ordering::SeqCst) {
            kill(&mut child);
            return (Outcome::Stopped, false);
        }
        let now = Instant::now();
        if now >= deadline {
            kill(&mut child);
            return (Outcome::Watchdog, false);
        }
        if !channel_open {
            if let Ok(Some(status)) = child.try_wait() {
                return (exit_outcome(status, reboot_requested), false);
            }
            std::thread::sleep(tick.min(deadline - now));
            continue;
        }
        match rx.recv_timeout(tick.min(deadline - now)) {
            Ok(Line::Event(event)) => {
                deadline = Instant::now() + timeout;
                let report = match event {
                    Event::Pet => None,
                    Event::Start(version) => Some(BootEvent::Started { version }),
                    Event::Confirmed => Some(BootEvent::Confirmed),
                    Event::Reboot => {
                        reboot_requested = true;
                        None
                    }
                };
                if let Some(report) = report
                    && on_event(&report).is_break()
                {
                    kill(&mut child);
                    return (Outcome::Stopped, true);
                }
            }
            Ok(Line::Log(line)) => eprintln!("{line}"),
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => channel_open = false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

fn exit_outcome(status: ExitStatus, reboot_requested: bool) -> Outcome {
    match status.code() {
        Some(EXIT_REBOOT) if reboot_requested => Outcome::Reboot,
        Some(EXIT_HEALTH_FAILED) => Outcome::HealthFailed,
        code => Outcome::Crash(code),
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
