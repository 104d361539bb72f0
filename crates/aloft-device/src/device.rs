//! The device: its flash, layout and durable state; the boot decision and the
//! firmware-side API (confirm, reports).

use alloc::string::String;
use alloc::vec;

use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::pb;
use aloft_protocol::trust::{VerifiedManifest, VerifiedTrustRoot};
use aloft_protocol::{Digest, ReleaseId, SecurityVersion, UnixTime};
use embedded_storage::nor_flash::NorFlash;

use crate::layout::{Layout, Slot};
use crate::state::{self, LogPos, Name, Report, ReportDetail, ReportId, ReportKind, State};
use crate::{Error, flash};

/// Default number of times a trial image is started before the device gives
/// up on it and reverts.
pub const DEFAULT_TRIAL_ATTEMPTS: u8 = 3;

/// The default progress interval is 1/16 of the slot's image capacity, at
/// most this many bytes (see [`Device::set_progress_interval`]).
pub const DEFAULT_PROGRESS_INTERVAL: u32 = 64 * 1024;

/// What a device is, for the installer's compatibility checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Product name; a release for another product is refused.
    pub product: String,
    /// Hardware revision; it must be listed in the release manifest.
    pub hardware: String,
    /// Starts allowed for a trial image before it is rolled back (>= 1).
    pub trial_attempts: u8,
}

/// The outcome of a boot decision: the slot to start and its verified manifest.
#[derive(Clone, Debug)]
pub struct Booted {
    /// The slot to start.
    pub slot: Slot,
    /// Its manifest, verified at this boot together with the image digest.
    pub manifest: VerifiedManifest,
    /// True for an unconfirmed trial image: arm the watchdog, and expect the
    /// firmware to call [`Device::confirm`] after its health check.
    pub trial: bool,
}

/// The hardware watchdog, as the firmware sees it: armed before a trial image
/// starts, petted while healthy; if it fires, the reset costs the trial one
/// attempt (the boot decision spends attempts, not the watchdog).
pub trait Watchdog {
    /// Starts the watchdog with `timeout_ms`.
    fn arm(&mut self, timeout_ms: u32);
    /// Restarts the countdown.
    fn pet(&mut self);
}

/// Verifies a slot's manifest envelope for *booting*: signatures, roles and
/// fields through the trust root, but deliberately **not expiry**.
///
/// Expiry protects a device from being offered a stale release (threat 5);
/// it is enforced when an update is accepted (`verify_update`). An image that
/// was accepted and ran yesterday must still boot today, even if its manifest
/// has since expired and the device has no clock: refusing it could brick the
/// device. The check is therefore run at time zero.
pub fn verify_manifest_for_boot(
    trust: &VerifiedTrustRoot,
    envelope: &pb::SignedEnvelope,
) -> Result<VerifiedManifest, aloft_protocol::Error> {
    trust.verify_manifest(envelope, UnixTime(0))
}

/// Why a slot did not verify (internal; flash errors propagate separately).
#[derive(Debug)]
enum SlotFault {
    NoManifest,
    BadManifest,
    WrongManifest,
    BelowFloor,
    TooLarge,
    DigestMismatch,
}

/// A device's flash with its layout and durable state.
#[derive(Debug)]
pub struct Device<F> {
    pub(crate) flash: F,
    pub(crate) layout: Layout,
    pub(crate) config: DeviceConfig,
    pub(crate) state: State,
    log: LogPos,
    /// A write failed: the cached state may differ from flash; reload first.
    stale: bool,
    /// Requested progress interval in bytes (`None`: the default).
    progress_interval: Option<u32>,
}

impl<F: NorFlash> Device<F> {
    /// Factory provisioning: writes `image` to slot A with its manifest,
    /// formats the state partition (slot A active and confirmed, security
    /// floor at the manifest's security version). The manifest must verify
    /// against `trust` and describe `image` exactly.
    pub fn provision(
        mut flash: F,
        layout: Layout,
        config: DeviceConfig,
        trust: &VerifiedTrustRoot,
        image: &[u8],
        manifest_envelope: &[u8],
    ) -> Result<Self, Error> {
        layout.validate::<F>(flash.capacity())?;
        let envelope = decode_envelope(manifest_envelope)?;
        let manifest = verify_manifest_for_boot(trust, &envelope)?;
        if manifest.image_len != image.len() as u64 || Digest::of(image) != manifest.image_digest {
            return Err(Error::DigestMismatch);
        }
        if image.len() as u64 > u64::from(layout.image_capacity(Slot::A)) {
            return Err(Error::Protocol(aloft_protocol::Error::ImageTooLarge {
                image_len: image.len() as u64,
                capacity: layout.image_capacity(Slot::A).into(),
            }));
        }
        let part = layout.slot_a;
        flash.erase(part.offset, part.end()).map_err(Error::flash)?;
        flash::write_padded(&mut flash, part.offset, image)?;
        write_trailer(&mut flash, &layout, Slot::A, manifest_envelope)?;
        let state = State::factory(manifest.digest, manifest.security_version);
        let log = state::format(&mut flash, &layout, &state)?;
        Ok(Self {
            flash,
            layout,
            config,
            state,
            log,
            stale: false,
            progress_interval: None,
        })
    }

    /// Opens a provisioned device: reads the newest valid state record.
    pub fn open(mut flash: F, layout: Layout, config: DeviceConfig) -> Result<Self, Error> {
        layout.validate::<F>(flash.capacity())?;
        let (state, log) = state::load(&mut flash, &layout)?;
        Ok(Self {
            flash,
            layout,
            config,
            state,
            log,
            stale: false,
            progress_interval: None,
        })
    }

    /// The flash (read-only: for inspection and tests).
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The flash map.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The compatibility configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The last confirmed slot.
    pub fn active_slot(&self) -> Slot {
        self.state.active
    }

    /// The slot started at the last boot.
    pub fn booted_slot(&self) -> Slot {
        self.state.booted
    }

    /// Whether the image started at the last boot is confirmed.
    pub fn is_confirmed(&self) -> bool {
        self.state.confirmed
    }

    /// The pending trial slot and its attempts left, if any.
    pub fn trial(&self) -> Option<(Slot, u8)> {
        self.state.trial.map(|t| (t.slot, t.attempts_left))
    }

    /// The anti-rollback floor.
    pub fn security_floor(&self) -> SecurityVersion {
        self.state.security_floor
    }

    /// The latest server time the device has seen attested.
    pub fn time_floor(&self) -> UnixTime {
        self.state.time_floor
    }

    /// Boots so far (each boot decision counts one).
    pub fn boot_count(&self) -> u32 {
        self.state.boot_count
    }

    /// The install in progress: release, manifest digest and the chunk to
    /// download next.
    pub fn install_progress(&self) -> Option<(ReleaseId, Digest, u32)> {
        self.state
            .install
            .and_then(|i| Some((i.release.release_id()?, i.manifest_digest, i.next_chunk)))
    }

    /// Sets how often the installer persists its resume point: each time the
    /// data written crosses a multiple of `bytes`, rounded up to whole sectors
    /// of the slot (0: every sector). A resume repeats at most this much plus
    /// a sector and a chunk; a smaller interval costs more state records
    /// (time, and wear of the state partition). Default: 1/16 of the slot's
    /// image capacity, at most [`DEFAULT_PROGRESS_INTERVAL`], at least one
    /// sector. A runtime setting, not persisted; applies to installs begun
    /// after the call.
    pub fn set_progress_interval(&mut self, bytes: u32) {
        self.progress_interval = Some(bytes);
    }

    /// The progress interval the installer uses for `slot`, in bytes: a
    /// positive multiple of the slot's sector size, at most its image
    /// capacity (see [`Device::set_progress_interval`]).
    pub fn progress_interval(&self, slot: Slot) -> u32 {
        let sector = self.layout.slot(slot).sector_size;
        let capacity = self.layout.image_capacity(slot);
        let want = self
            .progress_interval
            .unwrap_or((capacity / 16).min(DEFAULT_PROGRESS_INTERVAL))
            .min(capacity);
        want.div_ceil(sector).max(1) * sector
    }

    /// The slot an install writes: never the active one.
    pub fn inactive_slot(&self) -> Slot {
        self.state.active.other()
    }

    /// Capacity of the inactive slot for an image, in bytes.
    pub fn inactive_capacity(&self) -> u64 {
        self.layout.image_capacity(self.inactive_slot()).into()
    }

    /// Reports not yet acknowledged, oldest first.
    pub fn reports(&self) -> impl Iterator<Item = Report> + '_ {
        let mut stored: [Option<state::StoredReport>; state::MAX_REPORTS] = self.state.reports;
        stored.sort_by_key(|r| r.map_or(u32::MAX, |r| r.id));
        stored.into_iter().flatten().filter_map(|r| {
            Some(Report {
                id: ReportId(r.id),
                kind: r.kind,
                release_id: r.release.release_id()?,
                detail: r.detail,
            })
        })
    }

    /// Drops report `id` once the server has durably recorded it. Returns
    /// whether it was queued (acknowledging an unknown id is harmless).
    pub fn ack_report(&mut self, id: ReportId) -> Result<bool, Error> {
        self.refresh()?;
        let mut st = self.state;
        let Some(entry) = st
            .reports
            .iter_mut()
            .find(|r| r.is_some_and(|r| r.id == id.0))
        else {
            return Ok(false);
        };
        *entry = None;
        self.commit(st)?;
        Ok(true)
    }

    /// Records a newer attested server time (from an accepted directive);
    /// the floor never moves back.
    pub fn raise_time_floor(&mut self, server_time: UnixTime) -> Result<(), Error> {
        self.refresh()?;
        if server_time <= self.state.time_floor {
            return Ok(());
        }
        let mut st = self.state;
        st.time_floor = server_time;
        self.commit(st)
    }

    /// Called by the firmware after its health check: makes the running trial
    /// image the active one, raises the security floor to its security
    /// version (the only place the floor rises) and queues a "confirmed"
    /// report, all in one durable record. Confirming a confirmed image is a
    /// no-op.
    pub fn confirm(&mut self) -> Result<(), Error> {
        self.refresh()?;
        let mut st = self.state;
        let trial = match st.trial {
            Some(t) if t.slot == st.booted && !st.confirmed => t,
            _ if st.confirmed => return Ok(()),
            _ => return Err(Error::NotInTrial),
        };
        st.active = trial.slot;
        st.trial = None;
        st.confirmed = true;
        st.security_floor = st.security_floor.max(trial.security_version);
        st.push_report(ReportKind::Confirmed, trial.release, ReportDetail::None);
        self.commit(st)
    }

    /// The boot decision (the bootloader's logic).
    ///
    /// A pending trial slot is re-verified and spends one attempt durably
    /// before it is returned; with no attempts left, or if it fails
    /// verification, the device reverts to the last confirmed slot and queues
    /// a rollback report, in the same record. Whatever slot is returned was
    /// verified at this boot: manifest signatures through `trust` (expiry not
    /// enforced, see [`verify_manifest_for_boot`]), the manifest the state
    /// recorded for that slot, security version at or above the floor, and
    /// the SHA-256 of the image's `image_len` bytes. If the active slot fails,
    /// the other slot is used when it holds a previously confirmed image that
    /// still verifies; if nothing verifies, [`Error::NoBootableSlot`] and
    /// nothing may be started.
    pub fn boot(&mut self, trust: &VerifiedTrustRoot) -> Result<Booted, Error> {
        self.refresh()?;
        let mut st = self.state;
        st.boot_count = st.boot_count.wrapping_add(1);
        if let Some(mut trial) = st.trial {
            let verdict = if trial.attempts_left == 0 {
                Err(ReportDetail::AttemptsExhausted)
            } else {
                match self.verify_slot(trust, &st, trial.slot)? {
                    Ok(m) => Ok(m),
                    Err(_) => Err(ReportDetail::VerificationFailed),
                }
            };
            match verdict {
                Ok(manifest) => {
                    trial.attempts_left -= 1;
                    st.trial = Some(trial);
                    st.booted = trial.slot;
                    st.confirmed = false;
                    self.commit(st)?;
                    return Ok(Booted {
                        slot: trial.slot,
                        manifest,
                        trial: true,
                    });
                }
                Err(detail) => {
                    st.trial = None;
                    st.slot_manifest[trial.slot.index()] = None;
                    st.push_report(ReportKind::RolledBack, trial.release, detail);
                }
            }
        }
        for slot in [st.active, st.active.other()] {
            if st.slot_manifest[slot.index()].is_none() {
                continue;
            }
            if let Ok(manifest) = self.verify_slot(trust, &st, slot)? {
                st.active = slot;
                st.booted = slot;
                st.confirmed = true;
                self.commit(st)?;
                return Ok(Booted {
                    slot,
                    manifest,
                    trial: false,
                });
            }
        }
        if st != self.state {
            self.commit(st)?;
        }
        Err(Error::NoBootableSlot)
    }

    /// Re-verifies `slot` against the state `st`. Flash errors are `Err`;
    /// an image that does not verify is `Ok(Err(..))`.
    fn verify_slot(
        &mut self,
        trust: &VerifiedTrustRoot,
        st: &State,
        slot: Slot,
    ) -> Result<Result<VerifiedManifest, SlotFault>, Error> {
        let Some(expected) = st.slot_manifest[slot.index()] else {
            return Ok(Err(SlotFault::NoManifest));
        };
        let Some(envelope) = read_trailer(&mut self.flash, &self.layout, slot)? else {
            return Ok(Err(SlotFault::NoManifest));
        };
        let Ok(manifest) = verify_manifest_for_boot(trust, &envelope) else {
            return Ok(Err(SlotFault::BadManifest));
        };
        if manifest.digest != expected {
            return Ok(Err(SlotFault::WrongManifest));
        }
        if manifest.security_version < st.security_floor {
            return Ok(Err(SlotFault::BelowFloor));
        }
        if manifest.image_len > u64::from(self.layout.image_capacity(slot)) {
            return Ok(Err(SlotFault::TooLarge));
        }
        let digest = flash::hash(
            &mut self.flash,
            self.layout.slot(slot).offset,
            manifest.image_len,
        )?;
        if digest != manifest.image_digest {
            return Ok(Err(SlotFault::DigestMismatch));
        }
        Ok(Ok(manifest))
    }

    /// Reloads the state from flash after a failed write.
    pub(crate) fn refresh(&mut self) -> Result<(), Error> {
        if self.stale {
            let (state, log) = state::load(&mut self.flash, &self.layout)?;
            self.state = state;
            self.log = log;
            self.stale = false;
        }
        Ok(())
    }

    /// Makes `st` the durable state (one record append).
    pub(crate) fn commit(&mut self, st: State) -> Result<(), Error> {
        match state::append(&mut self.flash, &self.layout, &mut self.log, &st) {
            Ok(()) => {
                self.state = st;
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                Err(e)
            }
        }
    }

    pub(crate) fn release_name(id: &ReleaseId) -> Name {
        Name::new(id)
    }
}

/// Writes `slot`'s manifest trailer: erase it, then a 4-byte little-endian
/// length and the envelope bytes.
pub(crate) fn write_trailer<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
    envelope: &[u8],
) -> Result<(), Error> {
    if envelope.len() + 4 > layout.trailer_len(slot) as usize {
        return Err(Error::ManifestTooLarge);
    }
    let at = layout.trailer_offset(slot);
    flash
        .erase(at, at + layout.trailer_len(slot))
        .map_err(Error::flash)?;
    let mut buf = vec![0xFFu8; 4 + envelope.len()];
    buf[..4].copy_from_slice(&(envelope.len() as u32).to_le_bytes());
    buf[4..].copy_from_slice(envelope);
    flash::write_padded(flash, at, &buf)
}

/// Reads `slot`'s manifest envelope, or `None` if the trailer holds none.
pub(crate) fn read_trailer<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    slot: Slot,
) -> Result<Option<pb::SignedEnvelope>, Error> {
    let at = layout.trailer_offset(slot);
    let mut len = [0u8; 4];
    flash::read(flash, at, &mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len + 4 > layout.trailer_len(slot) as usize {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    flash::read(flash, at + 4, &mut buf)?;
    Ok(decode_envelope(&buf).ok())
}
