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
//!   envelope, so the bootloader can re-check the image at every boot. The
//!   state partition ends with two TrustRoot copies ([`Layout::trust_area`]).
//!   [`Device::provision`] checks the layout against the flash's real erase
//!   sectors ([`EraseSectors`]).
//! - **TrustRoot** ([`Device::trust_root`], [`Device::update_trust_root`]):
//!   the root the device verifies updates under is stored in its flash. A
//!   chain of successors is verified under it and the newest is written to
//!   the copy the state does not name, read back, then one state record
//!   switches to it: a cut leaves the old root or the new one.
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
//!   record, so the report exists exactly once. Every boot re-checks the
//!   chosen slot against what the state recorded when its image was
//!   verified (at install, under the TrustRoot of that time, or at
//!   provisioning): the trailer holds the manifest whose digest the state
//!   recorded (an attacker cannot swap in another validly signed release),
//!   security version >= floor, SHA-256 over `image_len` bytes. Signatures
//!   and expiry are not checked again, so a rotation that retires the
//!   running image's release key never strands it. If neither slot
//!   verifies, [`Error::NoBootableSlot`].
//! - **Offers** ([`Device::verify_offer`]): verified under the device's own
//!   TrustRoot against its own state (running version from the active
//!   slot's record, floors, capacity, product, hardware, payload policy);
//!   [`Device::begin_install`] (encrypted) and
//!   [`Device::begin_signature_only_install`] take only the resulting
//!   [`AcceptedOffer`] and re-check it against the state of the moment.
//! - **Capability profiles** ([`PayloadPolicy`], [`DeviceConfig::payloads`]):
//!   a device installs encrypted releases only (the default), both, or
//!   signature-only ones only; an offer its policy refuses is refused before
//!   anything is written. The `decrypt` feature (default) compiles the
//!   decrypting installer; without it no AES-GCM code is linked.
//! - **Security floor** rises only in [`Device::confirm`] (to the running
//!   trial's security version); the attested-time floor rises when an
//!   install begins, by at most what [`TimePolicy`] allows (threat 23).
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
mod profile;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
mod trust;

pub use device::{
    AcceptedOffer, Booted, Clock, DEFAULT_PROGRESS_INTERVAL, DEFAULT_TRIAL_ATTEMPTS, Device,
    DeviceConfig, RunningImage, SessionBinding, TimePolicy, TrustStatus, Watchdog,
};
pub use error::Error;
pub use install::{ChunkProgress, Installer};
pub use layout::{
    DEFAULT_MANIFEST_AREA, DEFAULT_TRUST_AREA, EraseSectors, Layout, Partition, Slot,
    uniform_sector_at,
};
pub use profile::PayloadPolicy;
pub use state::{MAX_REPORTS, Report, ReportDetail, ReportId, ReportKind};
