//! Aloft's sample device firmware and host boot simulator.
//!
//! Two binaries share this library:
//! - `aloft-firmware`, the sample firmware as a host program: its version
//!   and a deliberate fault are baked in at build time ([`config`]); it pets
//!   the watchdog, runs its health check, confirms itself and runs the
//!   device agent until an install asks for a reboot;
//! - `aloft-boot`, the boot simulator ([`boot`]): runs aloft-device's boot
//!   decision on the device's flash file, starts the chosen slot's verified
//!   image and acts as the watchdog.
//!
//! The two talk through the small protocol in [`watchdog`]; the flash map
//! and device names are in [`board`].

pub mod board;
pub mod boot;
pub mod config;
pub mod watchdog;

/// Name of the firmware executable (the image a release carries).
pub const FIRMWARE_BIN: &str = "aloft-firmware";

/// Why the board (flash file and its layout) could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The flash file could not be opened or read.
    #[error(transparent)]
    Flash(#[from] board::FileFlashError),
    /// Its length is not a valid flash map.
    #[error(transparent)]
    Size(#[from] board::BadFlashSize),
}
