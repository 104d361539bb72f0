//! Aloft's device core: A/B flash layout, power-safe state, boot decision and
//! streaming installer. `#![no_std]` (with `alloc` only off the per-chunk
//! path), no I/O, generic over [`embedded_storage::nor_flash::NorFlash`].
//!
//! # Design decisions
//!
//! - **Layout** ([`Layout`]): one flash holds a state partition and slots A
//!   and B, each a [`Partition`] (offset, size, sector size). A partition's
//!   sector size is any multiple of the flash's `ERASE_SIZE`, so partitions
//!   may sit in regions of larger sectors on non-uniform parts. `WRITE_SIZE`
//!   1..=32 is supported. The last sectors of each slot (at least
//!   [`Layout::manifest_area`] bytes) hold the slot's signed manifest
//!   envelope, so the bootloader can re-verify the image at every boot.
//! - **State** ([`state`]): two halves of the state partition, each an
//!   append log of fixed-size records (sequence number, fields, CRC-32). The
//!   newest valid record wins; torn records are skipped and their slots never
//!   reused; only the half *not* holding the newest record is ever erased.
//!   A cut at any instant leaves the previous or the new record readable.
//!   Every state change, including the ones that must be atomic together
//!   (revert + rollback report; confirm + floor + report; mark pending +
//!   clear install + report) is exactly one record append.
//! - **Boot** ([`Device::boot`]): a trial spends one attempt durably before it
//!   is returned; no attempts left or failed verification reverts to the
//!   last confirmed slot and queues a "rolled back" report in the same
//!   record, so the report exists exactly once. Every boot re-verifies the
//!   chosen slot: manifest signatures via the trust root, the manifest digest
//!   the state recorded for the slot (an attacker cannot swap in another
//!   validly signed release), security version >= floor, SHA-256 over
//!   `image_len` bytes. Manifest **expiry is not enforced at boot** (see
//!   [`verify_manifest_for_boot`]): an image that ran yesterday must boot
//!   today. If neither slot verifies, [`Error::NoBootableSlot`].
//! - **Security floor** rises only in [`Device::confirm`] (to the running
//!   trial's security version); the attested-time floor rises when an
//!   install begins (directive server time) or via
//!   [`Device::raise_time_floor`].
//! - **Reports**: a bounded queue ([`state::MAX_REPORTS`]) in the state; ids
//!   come from a per-device counter (no RNG needed); a report leaves only on
//!   [`Device::ack_report`]; when full, the oldest is dropped.
//! - **Installer** ([`Device::begin_install`], [`Installer`]): writes only
//!   the inactive slot (the one that is not the last confirmed slot; installs
//!   are refused while a trial is pending). Each chunk is authenticated and
//!   decrypted in the caller's buffer before any byte of it is written;
//!   sectors are erased just ahead of the data; progress (next chunk) is
//!   persisted each time the written data crosses a multiple of the
//!   progress interval ([`Device::set_progress_interval`]; whole sectors, by
//!   default 1/16 of the slot, at most 64 KiB: one state record per sector
//!   would cost a record append per 4 KiB, and on real parts a state-sector
//!   erase every few records). A resume restarts at the sector holding the
//!   durable offset (re-erased, earlier sectors kept), so it repeats less
//!   than the interval plus a sector and a chunk.
//!   `finish` re-reads the slot and checks the whole-image SHA-256 (a hash
//!   midstate cannot be persisted, so this also covers resumes), writes the
//!   manifest trailer, then marks the slot pending in one record.
//! - **Memory**: the per-chunk path does not allocate (stack word buffer,
//!   in-place decryption); `alloc` is used at `begin` (a copy of the manifest
//!   envelope) and at boot (decoding the manifest).
//! - **Simulator** (feature `sim`, [`sim`]): a NOR flash with strict
//!   programming rules and fault injection, used by the exhaustive power-cut
//!   test (tests/power_cut.rs).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod crc;
mod device;
mod error;
mod flash;
mod install;
pub mod layout;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;

pub use device::{
    Booted, DEFAULT_PROGRESS_INTERVAL, DEFAULT_TRIAL_ATTEMPTS, Device, DeviceConfig, Watchdog,
    verify_manifest_for_boot,
};
pub use error::Error;
pub use install::{ChunkProgress, Installer};
pub use layout::{DEFAULT_MANIFEST_AREA, Layout, Partition, Slot};
pub use state::{MAX_REPORTS, Report, ReportDetail, ReportId, ReportKind};
