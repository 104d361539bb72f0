//! Aloft's device runtime (std): what runs on an embedded-Linux device, in
//! the sample firmware and in the fleet simulator.
//!
//! - [`Identity`]: the identity bundle from provisioning (device id and
//!   key, server URL, CA to pin, TrustRoot, attributes).
//! - [`FileFlash`]: a NOR flash in a file with real NOR rules, so the
//!   [`aloft_device::Device`] state and slots survive restarts. The agent is
//!   generic over any [`NorFlash`](embedded_storage::nor_flash::NorFlash):
//!   the simulator runs it on aloft-device's in-memory `SimFlash`.
//! - [`Agent`]: the device-initiated session (TLS pinned to the bundle's CA,
//!   or plaintext for `http://`): answers the challenge with a signed hello
//!   carrying [`Agent::state`] and the pending reports; heartbeats; drops
//!   reports from flash only once the server acknowledged them; verifies
//!   offers ([`Agent::verify_offer`]), unwraps the content key, downloads
//!   from the durable resume chunk into the installer, reports `INSTALLED`
//!   and asks for a reboot; reconnects with exponential backoff and jitter;
//!   honours `CheckInLater` and the Welcome's check-in period.
//!
//! # How a firmware uses the agent
//!
//! The boot simulator (or bootloader) has already run
//! [`Device::boot`](aloft_device::Device::boot) and started the chosen slot.
//! The firmware then:
//!
//! ```no_run
//! # async fn firmware(layout: aloft_device::Layout) -> Result<(), Box<dyn std::error::Error>> {
//! use aloft_agent::{Agent, AgentConfig, Durability, FileFlash, Identity, Outcome, RunningFirmware};
//! use aloft_device::{Device, Slot};
//!
//! let identity = Identity::load("identity.pb")?;
//! let flash: FileFlash = FileFlash::open("flash.bin", Durability::Sync)?;
//! // 1. Open the device state the boot decision left.
//! let device = Device::open(flash, layout, identity.device_config()?)?;
//! // 2. Say which firmware runs (baked in at build time).
//! let running = RunningFirmware {
//!     version: "1.1.0".parse()?,
//!     security_version: aloft_protocol::SecurityVersion(1),
//!     slot: device.booted_slot(),
//! };
//! let mut agent = Agent::new(identity, device, running, AgentConfig::default())?;
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
mod error;
mod file_flash;
mod identity;

pub use agent::{Agent, AgentConfig, Event, Outcome, RunningFirmware, SessionEnd};
pub use backoff::{Backoff, BackoffConfig};
pub use error::{AgentError, OfferError};
pub use file_flash::{Durability, FileFlash, FileFlashError};
pub use identity::{ATTR_HARDWARE, ATTR_PRODUCT, Identity, IdentityError, MAX_IDENTITY_LEN};
