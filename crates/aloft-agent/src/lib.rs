//! Aloft's device runtime (std): what runs on an embedded-Linux device, in
//! the sample firmware and in the fleet simulator.
//!
//! - [`Identity`]: the identity bundle from provisioning (device id and
//!   key, server URL, CA to pin, TrustRoot, attributes).
//! - [`enroll`]: the first factory boot: the device makes its own key pair
//!   into a key-less template bundle and signs its registration request
//!   (also the `aloft-agent register-request` command).
//! - [`FileFlash`]: a NOR flash in a file with real NOR rules, so the
//!   [`aloft_device::Device`] state and slots survive restarts. The agent is
//!   generic over any [`NorFlash`](embedded_storage::nor_flash::NorFlash):
//!   the simulator runs it on aloft-device's in-memory `SimFlash`.
//! - [`Agent`]: the driver of `aloft_session`'s device state machine over a
//!   device-initiated gRPC stream (TLS pinned to the bundle's CA, or
//!   plaintext for `http://`): it seals the machine's messages with the
//!   device key (a hello carrying [`Agent::state`] and the pending reports,
//!   heartbeats, reports), drops reports from flash only once the server
//!   acknowledged them, hands TrustRoot chains and offers to the device core
//!   (which verifies them against its own state), unwraps the content key,
//!   downloads from the durable resume chunk into the installer (straight
//!   from storage over HTTPS Range requests when the directive names a
//!   payload URL, see [`direct`], else or after any failure through the
//!   server), reports
//!   `INSTALLED` and asks for the reboot, which follows from the durable
//!   install whatever the connection does; reconnects with exponential
//!   backoff and jitter; honours `CheckInLater` and the Welcome's check-in
//!   period.
//!
//! # How a firmware uses the agent
//!
//! The boot simulator (or bootloader) has already run
//! [`Device::boot`](aloft_device::Device::boot) and started the chosen slot.
//! The firmware then:
//!
//! ```no_run
//! # async fn firmware(layout: aloft_device::Layout) -> Result<(), Box<dyn std::error::Error>> {
//! use aloft_agent::{Agent, AgentConfig, Durability, FileFlash, Identity, Outcome};
//! use aloft_device::Device;
//!
//! let identity = Identity::load("identity.pb")?;
//! let flash: FileFlash = FileFlash::open("flash.bin", Durability::Sync)?;
//! // 1. Open the device state the boot decision left (the device core knows
//! //    which image runs: the one it verified for the booted slot).
//! let device = Device::open(flash, layout, identity.device_config()?)?;
//! // 2. The agent drives the sessions.
//! let mut agent = Agent::new(identity, device, AgentConfig::default())?;
//! // 3. Health check passed: confirm (raises the security floor, queues
//! //    the "confirmed" report). A firmware that never confirms rolls back.
//! agent.confirm()?;
//! // 4. Serve the server until an install wants a reboot.
//! match agent.run(async { let _ = tokio::signal::ctrl_c().await; }).await? {
//!     Outcome::RebootRequested { .. } => std::process::exit(3), // the boot simulator resets
//!     Outcome::Shutdown => {}
//! }
//! # Ok(()) }
//! ```
//!
//! `run` returns `Err` only for fatal errors (a flash failure): reset then.
//! Network errors and server refusals are retried with backoff.
//!
//! # Design decisions
//!
//! - **The reboot follows from the flash.** Once an install is durable, the
//!   session can only end in a reboot (a lost connection, a lost ack, a
//!   garbage message); a failed session with an unbooted trial pending
//!   reboots too.
//! - **Refusals are reported, durably where possible.** An offer refused
//!   before anything is written (bad directive or manifest, wrong device,
//!   nonce, expiry, floor, key unwrap) becomes an `INSTALL_FAILED` report
//!   held in memory and re-sent until acknowledged (the device core has no
//!   install record to hang it on). A chunk that fails authentication
//!   abandons the install through the core, which queues a durable report.
//! - **Reports leave flash only when acknowledged** by `ReportAck`; report
//!   ids are stable, so a re-send after a lost ack is recorded once.
//! - **A network failure mid-download repeats little**: the core persists
//!   the resume chunk every progress interval (at most 64 KiB by default);
//!   the next session's offer (a new directive echoing the new nonce)
//!   resumes there.
//! - **One connection per session**: each check-in connects, authenticates
//!   and stays up for the server's check-in period; downloads share the
//!   session's HTTP/2 connection. Offers come with a hello or, when a
//!   rollout starts or advances, on the open session's stream.
#![forbid(unsafe_code)]

mod agent;
mod backoff;
pub mod connect;
pub mod direct;
pub mod enroll;
mod error;
mod file_flash;
mod identity;

pub use agent::{
    Agent, AgentConfig, Connector, Event, Outcome, RunningFirmware, SessionEnd, SystemClock,
    WallClock,
};
pub use backoff::{Backoff, BackoffConfig};
pub use direct::{DirectError, DirectFailure, PayloadTls};
pub use error::{AgentError, OfferError};
pub use file_flash::{Durability, FileFlash, FileFlashError};
pub use identity::{
    ATTR_HARDWARE, ATTR_PRODUCT, Identity, IdentityError, MAX_IDENTITY_LEN, factory_view,
};
