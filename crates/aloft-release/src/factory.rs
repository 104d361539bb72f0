//! `aloft-release factory`: the factory step for one sample device. Creates
//! the device's flash file and writes a signed release into slot A as the
//! confirmed active image (aloft-device `Device::provision`), so the device
//! boots verified firmware from its first power-on.
//!
//! The identity bundle may be a template without a key (`aloft device
//! template`: the device makes its key at its first boot) or hold one.
//! The release is checked against the TrustRoot in the device's identity
//! bundle (the one the device will boot with) and against the device's
//! product and hardware before anything is written; a flash file that
//! already exists is never overwritten.

use std::path::{Path, PathBuf};

use aloft_device::{Device, Slot};
use aloft_firmware::board::{self, FileFlash};
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use serde::Serialize;

use crate::release::{check_bundle, read_bundle};
use crate::{ReleaseError, now};

/// Inputs of the factory step.
#[derive(Clone, Debug)]
pub struct FactoryOptions {
    /// The device's identity bundle (`identity.pb`).
    pub identity: PathBuf,
    /// The release bundle to put in slot A.
    pub bundle: PathBuf,
    /// The flash file to create.
    pub flash: PathBuf,
    /// Bytes per slot (a multiple of [`board::SECTOR`]).
    pub slot_size: u32,
}

/// What the factory step did, printed as JSON with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct FactorySummary {
    /// Device id.
    pub device_id: String,
    /// The flash file.
    pub flash: PathBuf,
    /// Flash bytes.
    pub flash_len: u64,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Largest image a slot holds.
    pub image_capacity: u32,
    /// Release in slot A.
    pub release_id: String,
    /// Its version.
    pub version: String,
    /// Its image length.
    pub image_len: u64,
}

/// Runs the factory step.
pub fn provision(opts: &FactoryOptions) -> Result<FactorySummary, ReleaseError> {
    let bad_identity = |e: aloft_agent::IdentityError| ReleaseError::BadFile {
        path: opts.identity.clone(),
        what: "identity bundle",
        reason: e.to_string(),
    };
    let (device_id, factory_trust, config) =
        aloft_agent::factory_view(&opts.identity).map_err(bad_identity)?;
    // At the factory the TrustRoot must also be current.
    let trust = VerifiedTrustRoot::trust_on_first_use(factory_trust.envelope(), now())
        .map_err(ReleaseError::refused("the identity's TrustRoot"))?;

    let release = read_bundle(&opts.bundle)?;
    let (manifest, image) = check_bundle(&release, &trust)?;
    if manifest.product() != config.product || !manifest.hardware().contains(&config.hardware) {
        return Err(ReleaseError::InvalidArg {
            what: "release",
            reason: format!(
                "{} is for product {} on {:?}; the device is {} on {}",
                manifest.release_id(),
                manifest.product(),
                manifest.hardware(),
                config.product,
                config.hardware
            ),
        });
    }
    if opts.slot_size == 0 || !opts.slot_size.is_multiple_of(board::SECTOR) {
        return Err(ReleaseError::InvalidArg {
            what: "slot size",
            reason: format!("{} is not a multiple of {}", opts.slot_size, board::SECTOR),
        });
    }
    let capacity = board::image_capacity(opts.slot_size);
    if manifest.image_len() > u64::from(capacity) {
        return Err(ReleaseError::InvalidArg {
            what: "slot size",
            reason: format!(
                "the image is {} bytes; slots of {} bytes hold at most {capacity}",
                manifest.image_len(),
                opts.slot_size
            ),
        });
    }
    let layout = board::layout(opts.slot_size);
    let flash_len = board::flash_len(opts.slot_size);
    if opts.flash.exists() {
        return Err(ReleaseError::Exists(opts.flash.clone()));
    }
    if let Some(dir) = opts.flash.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(ReleaseError::io(dir))?;
    }
    let manifest_bytes = release
        .manifest
        .as_ref()
        .map(|m| m.encode_to_vec())
        .unwrap_or_default();
    let result = FileFlash::create(&opts.flash, flash_len as usize, board::Durability::Sync)
        .map_err(|e| ReleaseError::BadFile {
            path: opts.flash.clone(),
            what: "flash file",
            reason: e.to_string(),
        })
        .and_then(|flash| {
            Device::provision(flash, layout, config, &trust, &image, &manifest_bytes)
                .map_err(ReleaseError::Device)
        });
    let device = match result {
        Ok(device) => device,
        Err(e) => {
            remove_partial(&opts.flash);
            return Err(e);
        }
    };
    debug_assert_eq!(device.active_slot(), Slot::A);
    Ok(FactorySummary {
        device_id: device_id.to_string(),
        flash: opts.flash.clone(),
        flash_len,
        slot_size: opts.slot_size,
        image_capacity: capacity,
        release_id: manifest.release_id().to_string(),
        version: manifest.version().to_string(),
        image_len: manifest.image_len(),
    })
}

fn remove_partial(path: &Path) {
    let _ = std::fs::remove_file(path);
}
