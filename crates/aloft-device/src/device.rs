//! The device: its flash, layout and durable state; the boot decision, the
//! TrustRoot it verifies updates under, offer verification, and the
//! firmware-side API (confirm, reports).

use alloc::string::String;
use alloc::vec;

use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{
    DeviceContext, Manifest, VerifiedTrustRoot, VerifiedUpdate, danger, verify_update,
};
use aloft_protocol::{
    DeviceId, DeviceNonce, Digest, ReleaseId, SecurityVersion, UnixTime, Version,
};
use embedded_storage::nor_flash::NorFlash;

use crate::layout::{EraseSectors, Layout, Slot};
use crate::profile::PayloadPolicy;
use crate::state::{
    self, LogPos, Name, Report, ReportDetail, ReportId, ReportKind, SlotRecord, State, TrustRef,
};
use crate::{Error, flash, trust};

/// Default number of times a trial image is started before the device gives
/// up on it and reverts.
pub const DEFAULT_TRIAL_ATTEMPTS: u8 = 3;

/// The default progress interval is 1/16 of the slot's image capacity, at
/// most this many bytes (see [`Device::set_progress_interval`]).
pub const DEFAULT_PROGRESS_INTERVAL: u32 = 64 * 1024;

/// How far one accepted directive may move the device's attested time
/// (threat 23: a wrong or hostile server clock).
///
/// The attested-time floor is the newest server time the device accepted;
/// directives older than it are refused. A directive's server time is
/// authenticated, but a server whose clock runs months ahead would move the
/// floor months ahead, and every genuine directive after it would read as
/// regressed. So the floor moves at most to the device's own clock plus
/// `max_clock_skew_secs` when it has a clock, and at most
/// `max_step_secs` past the old floor per accepted directive (one per
/// session) when it has none. A server time beyond that is remembered as
/// the disagreement ([`Device::server_clock_ahead`]) and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimePolicy {
    /// With a clock: how far ahead of it the floor may go.
    pub max_clock_skew_secs: u64,
    /// Without a clock: how far one accepted directive may move the floor.
    pub max_step_secs: u64,
}

impl Default for TimePolicy {
    fn default() -> Self {
        Self {
            max_clock_skew_secs: 600,
            max_step_secs: 86_400,
        }
    }
}

/// What a device is, for the installer's compatibility checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Product name; a release for another product is refused.
    pub product: String,
    /// Hardware revision; it must be listed in the release manifest.
    pub hardware: String,
    /// Starts allowed for a trial image before it is rolled back (>= 1).
    pub trial_attempts: u8,
    /// How far accepted directives may move the attested time.
    pub time: TimePolicy,
    /// Which payload encodings it installs (its capability profile).
    pub payloads: PayloadPolicy,
}

impl DeviceConfig {
    /// A configuration with the default trial attempts, time policy and
    /// payload policy ([`PayloadPolicy::default`]: encrypted only when the
    /// `decrypt` feature is on).
    pub fn new(product: impl Into<String>, hardware: impl Into<String>) -> Self {
        Self {
            product: product.into(),
            hardware: hardware.into(),
            trial_attempts: DEFAULT_TRIAL_ATTEMPTS,
            time: TimePolicy::default(),
            payloads: PayloadPolicy::default(),
        }
    }

    /// The same configuration with payload policy `payloads`.
    pub fn with_payloads(mut self, payloads: PayloadPolicy) -> Self {
        self.payloads = payloads;
        self
    }
}

/// The device's sense of time when it verifies something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// A real-time clock reads this.
    At(UnixTime),
    /// No clock: the attested-time floor stands in for now.
    None,
}

/// The outcome of a boot decision: the slot to start and its manifest.
#[derive(Clone, Debug)]
pub struct Booted {
    /// The slot to start.
    pub slot: Slot,
    /// Its manifest: the one recorded for this slot when its image was
    /// verified, re-checked against that record and the image at this boot.
    pub manifest: Manifest,
    /// True for an unconfirmed trial image: arm the watchdog, and expect the
    /// firmware to call [`Device::confirm`] after its health check.
    pub trial: bool,
}

/// What runs: the image in the booted slot, as recorded when it was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningImage {
    /// The slot.
    pub slot: Slot,
    /// Its firmware version.
    pub version: Version,
    /// Its security version.
    pub security_version: SecurityVersion,
}

/// The TrustRoot a device verifies updates under, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustStatus {
    /// Its version.
    pub version: u32,
    /// Its expiry.
    pub expires_at: UnixTime,
    /// Expired (by the device's clock, or its attested time): the device
    /// cannot verify updates until a successor arrives.
    pub expired: bool,
}

/// Binds an offer to one session of this device.
#[derive(Clone, Copy, Debug)]
pub struct SessionBinding<'a> {
    /// This device's id.
    pub device_id: &'a DeviceId,
    /// The nonce this session's hello carried.
    pub nonce: &'a DeviceNonce,
}

/// An offer this device verified ([`Device::verify_offer`]) against its own
/// state and TrustRoot; the only input [`Device::begin_install`] takes.
#[derive(Clone, Debug)]
pub struct AcceptedOffer {
    pub(crate) update: VerifiedUpdate,
    /// The attested time accepting it moves the floor to.
    pub(crate) attested: UnixTime,
    /// How far the directive's server time was beyond `attested`.
    pub(crate) server_ahead: u64,
}

impl AcceptedOffer {
    /// The verified directive and manifest.
    pub fn update(&self) -> &VerifiedUpdate {
        &self.update
    }

    /// How far ahead of what the device accepts the server's clock was, in
    /// seconds (0: it agreed).
    pub fn server_clock_ahead(&self) -> u64 {
        self.server_ahead
    }
}

/// The watchdog, as the firmware sees it: armed before a trial image
/// starts, petted while healthy; if it fires, the reset costs the trial one
/// attempt (the boot decision spends attempts, not the watchdog).
pub trait Watchdog {
    /// Starts the watchdog with `timeout_ms`.
    fn arm(&mut self, timeout_ms: u32);
    /// Restarts the countdown.
    fn pet(&mut self);
}

/// Why a slot did not verify (internal; flash errors propagate separately).
#[derive(Debug)]
enum SlotFault {
    NoManifest,
    WrongManifest,
    BelowFloor,
    TooLarge,
    DigestMismatch,
}

/// A device's flash with its layout, durable state and TrustRoot.
#[derive(Debug)]
pub struct Device<F> {
    pub(crate) flash: F,
    pub(crate) layout: Layout,
    pub(crate) config: DeviceConfig,
    pub(crate) state: State,
    log: LogPos,
    /// The current TrustRoot (None: neither copy verifies; see `open`).
    trust: Option<VerifiedTrustRoot>,
    /// A write failed: the cached state may differ from flash; reload first.
    stale: bool,
    /// Requested progress interval in bytes (`None`: the default).
    progress_interval: Option<u32>,
}

impl<F: NorFlash> Device<F> {
    /// Factory provisioning: checks the layout against the flash's real
    /// erase sectors, writes `image` to slot A with its manifest, stores
    /// `trust` as the device's TrustRoot and formats the state (slot A
    /// active and confirmed, security floor at the manifest's security
    /// version). The manifest must carry `trust`'s release-key signatures
    /// and describe `image` exactly; its expiry is not checked (the factory
    /// image may have been built long before).
    pub fn provision(
        mut flash: F,
        layout: Layout,
        config: DeviceConfig,
        trust: &VerifiedTrustRoot,
        image: &[u8],
        manifest_envelope: &[u8],
    ) -> Result<Self, Error>
    where
        F: EraseSectors,
    {
        layout.validate::<F>(flash.capacity())?;
        layout.check_geometry(&flash)?;
        let envelope = decode_envelope(manifest_envelope)?;
        let manifest = danger::verify_manifest_ignoring_expiry(trust, &envelope)?;
        if manifest.image_len() != image.len() as u64
            || Digest::of(image) != manifest.image_digest()
        {
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
        let root = trust.envelope().encode_to_vec();
        // Copy 0 holds the factory root; the first state record names it.
        let trust_ref = TrustRef {
            copy: 0,
            version: trust.version(),
            len: root.len() as u32,
            digest: trust.digest(),
            expires_at: trust.expires_at(),
        };
        let state = State::factory(slot_record(&manifest), trust_ref);
        trust::write_copy(&mut flash, &layout, 0, &root)?;
        let log = state::format(&mut flash, &layout, &state)?;
        Ok(Self {
            flash,
            layout,
            config,
            state,
            log,
            trust: Some(trust.clone()),
            stale: false,
            progress_interval: None,
        })
    }

    /// Opens a provisioned device: reads the newest valid state record and
    /// the TrustRoot copy it names. A TrustRoot copy that no longer
    /// verifies does not stop the device: it boots and runs as before, and
    /// [`Device::trust_root`] says why it cannot verify updates.
    pub fn open(mut flash: F, layout: Layout, config: DeviceConfig) -> Result<Self, Error> {
        layout.validate::<F>(flash.capacity())?;
        let (state, log) = state::load(&mut flash, &layout)?;
        let trust = trust::read_copy(&mut flash, &layout, &state.trust)?;
        Ok(Self {
            flash,
            layout,
            config,
            state,
            log,
            trust,
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

    /// The release and version of the pending trial image, if any.
    pub fn trial_image(&self) -> Option<(ReleaseId, Version)> {
        let trial = self.state.trial?;
        let record = self.state.slots[trial.slot.index()]?;
        Some((trial.release.release_id()?, record.version))
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

    /// The image in the booted slot, as recorded when it was verified (at
    /// install or provisioning). `None` only if the state names no image
    /// there (never after a successful [`Device::boot`]).
    pub fn running(&self) -> Option<RunningImage> {
        let slot = self.state.booted;
        self.state.slots[slot.index()].map(|r| RunningImage {
            slot,
            version: r.version,
            security_version: r.security_version,
        })
    }

    /// The version of the last confirmed image: offers must be newer.
    pub fn active_version(&self) -> Option<Version> {
        self.state.slots[self.state.active.index()].map(|r| r.version)
    }

    /// How far ahead of the attested time the device accepted the last
    /// accepted directive's server time was, in seconds (0: they agreed).
    pub fn server_clock_ahead(&self) -> u64 {
        self.state.server_ahead
    }

    /// The TrustRoot updates are verified under. Refused when the stored
    /// copy no longer verifies (bit rot): the device still boots and runs,
    /// and the server can send the chain again from
    /// [`TrustStatus::version`].
    pub fn trust_root(&self) -> Result<&VerifiedTrustRoot, Error> {
        self.trust.as_ref().ok_or(Error::TrustRootUnreadable)
    }

    /// The TrustRoot as the device reports it: version, expiry, and whether
    /// it has expired at `clock` (or at the attested time without a clock).
    pub fn trust_status(&self, clock: Clock) -> TrustStatus {
        let t = &self.state.trust;
        let now = self.now(clock);
        TrustStatus {
            version: t.version,
            expires_at: t.expires_at,
            expired: now > t.expires_at || self.trust.is_none(),
        }
    }

    /// The device's idea of now: its clock, never before its attested floor.
    fn now(&self, clock: Clock) -> UnixTime {
        match clock {
            Clock::At(t) => t.max(self.state.time_floor),
            Clock::None => self.state.time_floor,
        }
    }

    /// Walks a chain of TrustRoot successors (oldest first, from the current
    /// version + 1; see `VerifiedTrustRoot::update_chain`) and stores the
    /// newest power-safely: it is written to the TrustRoot copy the state
    /// does not name, read back, then one state record switches to it. A
    /// power cut at any point leaves the old root or the new one. The
    /// current root may have expired; the newest must not have, at `clock`.
    /// Returns the new version. A refused chain changes nothing.
    pub fn update_trust_root(
        &mut self,
        chain: &[pb::SignedEnvelope],
        clock: Clock,
    ) -> Result<u32, Error> {
        self.refresh()?;
        let now = self.now(clock);
        let next = self.trust_root()?.update_chain(chain, now)?;
        let bytes = next.envelope().encode_to_vec();
        let copy = 1 - self.state.trust.copy;
        trust::write_copy(&mut self.flash, &self.layout, copy, &bytes)?;
        let mut st = self.state;
        st.trust = TrustRef {
            copy,
            version: next.version(),
            len: bytes.len() as u32,
            digest: next.digest(),
            expires_at: next.expires_at(),
        };
        self.commit(st)?;
        let version = next.version();
        self.trust = Some(next);
        Ok(version)
    }

    /// Verifies an offer against this device's own TrustRoot and state:
    /// the directive is bound to `binding` (device id, this session's
    /// nonce), both objects verify under the current root, the release is
    /// for this product and hardware, at or above the security floor,
    /// newer than the last confirmed image, fits the inactive slot, the
    /// directive is not older than the attested time, and the release's
    /// payload encoding is one this device's [`PayloadPolicy`] installs
    /// ([`Error::PayloadRefused`]: nothing is written). Also works out how
    /// far accepting it may move the attested time ([`TimePolicy`]).
    pub fn verify_offer(
        &self,
        directive: &pb::SignedEnvelope,
        manifest: &pb::SignedEnvelope,
        binding: SessionBinding<'_>,
        clock: Clock,
    ) -> Result<AcceptedOffer, Error> {
        let trust = self.trust_root()?;
        let current_version = self.active_version().ok_or(Error::NoBootableSlot)?;
        let ctx = DeviceContext {
            device_id: binding.device_id,
            device_nonce: binding.nonce,
            product: &self.config.product,
            hardware: &self.config.hardware,
            current_version,
            security_floor: self.state.security_floor,
            time_floor: self.state.time_floor,
            slot_capacity: self.inactive_capacity(),
            now: self.now(clock),
        };
        let update = verify_update(trust, directive, manifest, &ctx)?;
        self.check_payload(update.manifest().payload_encoding())?;
        let policy = self.config.time;
        let limit = match clock {
            Clock::At(t) => t.0.saturating_add(policy.max_clock_skew_secs),
            Clock::None => self.state.time_floor.0.saturating_add(policy.max_step_secs),
        };
        let server_time = update.directive().server_time().0;
        let attested = UnixTime(server_time.min(limit).max(self.state.time_floor.0));
        Ok(AcceptedOffer {
            server_ahead: server_time.saturating_sub(attested.0),
            attested,
            update,
        })
    }

    /// Refuses a release whose payload encoding this device's policy (or
    /// build) does not install.
    pub(crate) fn check_payload(&self, offered: pb::PayloadEncoding) -> Result<(), Error> {
        if self.config.payloads.accepts(offered) {
            Ok(())
        } else {
            Err(Error::PayloadRefused {
                offered,
                policy: self.config.payloads,
            })
        }
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
        let Some(record) = st.slots[trial.slot.index()] else {
            return Err(Error::NotInTrial);
        };
        st.active = trial.slot;
        st.trial = None;
        st.confirmed = true;
        st.security_floor = st.security_floor.max(record.security_version);
        st.push_report(ReportKind::Confirmed, trial.release, ReportDetail::None);
        self.commit(st)
    }

    /// The boot decision (the bootloader's logic).
    ///
    /// A pending trial slot is re-verified and spends one attempt durably
    /// before it is returned; with no attempts left, or if it fails
    /// verification, the device reverts to the last confirmed slot and queues
    /// a rollback report, in the same record. Whatever slot is returned was
    /// verified at this boot against what the device recorded when it
    /// installed (or was provisioned with) that image: the trailer holds
    /// exactly the manifest whose digest the state recorded, its security
    /// version is at or above the floor, and the image hashes to the
    /// manifest's SHA-256. Signatures were checked under the TrustRoot of
    /// that time, so a later rotation that retires the image's release key
    /// never strands it; new installs always verify under the newest root.
    /// Manifest expiry is not enforced: an image that ran yesterday boots
    /// today. If the active slot fails, the other slot is used when it
    /// holds a previously confirmed image that still verifies; if nothing
    /// verifies, [`Error::NoBootableSlot`] and nothing may be started.
    pub fn boot(&mut self) -> Result<Booted, Error> {
        self.refresh()?;
        let mut st = self.state;
        st.boot_count = st.boot_count.wrapping_add(1);
        if let Some(mut trial) = st.trial {
            let verdict = if trial.attempts_left == 0 {
                Err(ReportDetail::AttemptsExhausted)
            } else {
                match self.verify_slot(&st, trial.slot)? {
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
                    st.slots[trial.slot.index()] = None;
                    st.push_report(ReportKind::RolledBack, trial.release, detail);
                }
            }
        }
        for slot in [st.active, st.active.other()] {
            if st.slots[slot.index()].is_none() {
                continue;
            }
            if let Ok(manifest) = self.verify_slot(&st, slot)? {
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
        st: &State,
        slot: Slot,
    ) -> Result<Result<Manifest, SlotFault>, Error> {
        let Some(record) = st.slots[slot.index()] else {
            return Ok(Err(SlotFault::NoManifest));
        };
        let Some(envelope) = read_trailer(&mut self.flash, &self.layout, slot)? else {
            return Ok(Err(SlotFault::NoManifest));
        };
        let Ok(manifest) = Manifest::from_recorded(&envelope, record.manifest_digest) else {
            return Ok(Err(SlotFault::WrongManifest));
        };
        if manifest.security_version() < st.security_floor {
            return Ok(Err(SlotFault::BelowFloor));
        }
        if manifest.image_len() > u64::from(self.layout.image_capacity(slot)) {
            return Ok(Err(SlotFault::TooLarge));
        }
        let digest = flash::hash(
            &mut self.flash,
            self.layout.slot(slot).offset,
            manifest.image_len(),
        )?;
        if digest != manifest.image_digest() {
            return Ok(Err(SlotFault::DigestMismatch));
        }
        Ok(Ok(manifest))
    }

    /// Reloads the state from flash after a failed write.
    pub(crate) fn refresh(&mut self) -> Result<(), Error> {
        if self.stale {
            let (state, log) = state::load(&mut self.flash, &self.layout)?;
            self.trust = trust::read_copy(&mut self.flash, &self.layout, &state.trust)?;
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

/// What the state records for a slot holding `manifest`'s image.
pub(crate) fn slot_record(manifest: &Manifest) -> SlotRecord {
    SlotRecord {
        manifest_digest: manifest.digest(),
        version: manifest.version(),
        security_version: manifest.security_version(),
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
