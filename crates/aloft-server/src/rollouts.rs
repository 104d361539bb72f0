//! The server side of rollouts: `aloft-rollout`'s engine over the store.
//!
//! Every rollout lives in memory as an [`aloft_rollout::Rollout`] (rebuilt
//! from the store at start) and in the store as one [`RolloutRecord`] (its
//! definition and progress) plus one [`RolloutDeviceRecord`] per device that
//! checked in or was controlled. Each operation changes the engine under one
//! lock and writes exactly the records it changed (a check-in writes at most
//! one small device record per rollout it consulted) before the lock is
//! released, so the store always holds the order the engine saw. Callers
//! flush before they acknowledge anything.
//!
//! A check-in never scans devices: each rollout's decision is a lookup of
//! the device's record, a selector evaluation and a hash.
//!
//! History: a [`pb::RolloutSample`] (state, current stage, counts per stage)
//! is appended to the store when a rollout changed since its last sample, at
//! most once per [`RolloutSettings::sample_interval_secs`] (checked at each
//! tick), and at once when its state or current stage changed or an operator
//! controlled it. Each rollout keeps its latest
//! [`RolloutSettings::max_samples`].

use crate::sync::Recover as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aloft_protocol::{DeviceId, ReleaseId, UnixTime, Version, pb};
use aloft_rollout::rollout::{DeviceOutcome, DeviceRecord as EngineDevice, Transition};
use aloft_rollout::{
    Decision, DeviceView, GlobalLoad, NotYetReason, Report, Rollout, RolloutProgress, RolloutSpec,
    RolloutState, Stage,
};

use crate::store::{
    DeviceRecord, ReleaseRecord, RolloutDeviceRecord, RolloutRecord, Store, StoreError,
};
use crate::tracking::EventKind;

/// Server-wide rollout settings.
#[derive(Clone, Debug)]
pub struct RolloutSettings {
    /// Devices offered and not finished across all rollouts (0 = no cap).
    pub max_concurrent_downloads: u32,
    /// An offer with no report for this long is withdrawn (0 = never).
    pub offer_timeout_secs: u64,
    /// Suggested check-in interval for waiting devices.
    pub check_in_secs: u64,
    /// Suggested wait for devices held back by a pacing cap.
    pub pacing_retry_secs: u64,
    /// Largest per-device jitter added to suggested check-ins.
    pub jitter_secs: u64,
    /// Least time between two samples of a rollout whose state and stage
    /// did not change.
    pub sample_interval_secs: u64,
    /// Samples kept per rollout; older ones are deleted.
    pub max_samples: usize,
}

/// Default for [`RolloutSettings::max_samples`].
pub const MAX_SAMPLES_PER_ROLLOUT: usize = 2_000;

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 0,
            offer_timeout_secs: 24 * 3600,
            check_in_secs: aloft_rollout::rollout::DEFAULT_CHECK_IN_SECS,
            pacing_retry_secs: aloft_rollout::rollout::DEFAULT_PACING_RETRY_SECS,
            jitter_secs: aloft_rollout::rollout::DEFAULT_JITTER_SECS,
            sample_interval_secs: 60,
            max_samples: MAX_SAMPLES_PER_ROLLOUT,
        }
    }
}

/// Why a rollout operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No rollout with this id.
    #[error("no rollout {0:?}")]
    UnknownRollout(String),
    /// No device with this id is registered.
    #[error("no device {0}")]
    UnknownDevice(String),
    /// The device has no record in the rollout (it never checked in).
    #[error("device {device} is not part of rollout {rollout} (it has not checked in)")]
    NotInRollout {
        /// The rollout.
        rollout: String,
        /// The device.
        device: String,
    },
    /// No release with this id.
    #[error("no release {0}: upload it first")]
    UnknownRelease(String),
    /// A rollout with this id exists.
    #[error("rollout {0} already exists")]
    Exists(String),
    /// The selector does not parse.
    #[error("invalid selector: {0}")]
    Selector(aloft_rollout::ParseError),
    /// The action does not apply in the rollout's state.
    #[error("{}", refusal(.rollout, .action, .state))]
    WrongState {
        /// The rollout.
        rollout: String,
        /// The refused action.
        action: &'static str,
        /// Its state.
        state: &'static str,
    },
    /// The request breaks a rollout rule (stages, window, id, ...).
    #[error("{0}")]
    Invalid(aloft_rollout::Error),
    /// A stored rollout does not rebuild.
    #[error("stored rollout {0} is corrupt: {1}")]
    Corrupt(String, aloft_rollout::Error),
    /// A factory rollout request breaks a factory rule.
    #[error(transparent)]
    Factory(#[from] crate::factory::FactoryError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refusal(rollout: &str, action: &str, state: &str) -> String {
    if matches!(state, "cancelled" | "completed") {
        format!("cannot {action} rollout {rollout}: it has ended ({state})")
    } else {
        format!("cannot {action} rollout {rollout}: it is {state}")
    }
}

impl RolloutError {
    fn engine(rollout: &str, e: aloft_rollout::Error) -> Self {
        match e {
            aloft_rollout::Error::Selector(p) => Self::Selector(p),
            aloft_rollout::Error::InvalidState { action, state } => Self::WrongState {
                rollout: rollout.to_owned(),
                action,
                state,
            },
            aloft_rollout::Error::UnknownDevice(device) => Self::NotInRollout {
                rollout: rollout.to_owned(),
                device,
            },
            e => Self::Invalid(e),
        }
    }
}

impl From<RolloutError> for tonic::Status {
    fn from(e: RolloutError) -> Self {
        let m = e.to_string();
        match e {
            RolloutError::UnknownRollout(_)
            | RolloutError::UnknownDevice(_)
            | RolloutError::NotInRollout { .. }
            | RolloutError::UnknownRelease(_) => tonic::Status::not_found(m),
            RolloutError::Exists(_) => tonic::Status::already_exists(m),
            RolloutError::Selector(_) | RolloutError::Invalid(_) => {
                tonic::Status::invalid_argument(m)
            }
            RolloutError::WrongState { .. } => tonic::Status::failed_precondition(m),
            RolloutError::Corrupt(..) => tonic::Status::internal(m),
            RolloutError::Factory(crate::factory::FactoryError::Shape) => {
                tonic::Status::invalid_argument(m)
            }
            RolloutError::Factory(_) => tonic::Status::failed_precondition(m),
            RolloutError::Store(e) => e.into(),
        }
    }
}

/// Why a directive no longer authorises a download.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownloadRefusal {
    /// The directive names a rollout this server does not have.
    #[error("rollout {0} does not exist")]
    UnknownRollout(String),
    /// The rollout was cancelled after the offer.
    #[error("rollout {0} was cancelled")]
    Cancelled(String),
    /// An operator excluded this device from the rollout.
    #[error("this device was excluded from rollout {0}")]
    Excluded(String),
}

/// What a check-in gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckIn {
    /// Offer `release` of `rollout`. `fresh` when this check-in took a new
    /// pacing slot (not a re-send to a device already downloading).
    Offer {
        /// The release.
        release: ReleaseId,
        /// The rollout.
        rollout: String,
        /// A new offer rather than a re-send.
        fresh: bool,
    },
    /// Nothing now; check in again at this time.
    Later(UnixTime),
    /// No rollout has anything for the device.
    Nothing,
}

/// What one [`Rollouts::tick`] did.
#[derive(Debug, Default)]
pub struct Tick {
    /// Events to record and publish.
    pub events: Vec<RolloutEvent>,
    /// History samples appended.
    pub samples: usize,
}

/// Something that happened to a rollout, for the event history.
///
/// Kinds: `rollout_state` (operator pause, resume or cancel; detail e.g.
/// `paused: REASON`), `rollout_paused` (the health gate; detail = the
/// reason), `stage_advanced`, `rollout_completed`, `retry_failed`,
/// `device_silent`, `offer_expired`, `device_excluded`, `device_forced`,
/// `device_retried`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    /// The rollout.
    pub rollout: String,
    /// Its release.
    pub release: String,
    /// The device concerned, if any.
    pub device: String,
    /// What happened.
    pub kind: EventKind,
    /// Detail, e.g. the pause reason.
    pub detail: String,
}

struct Entry {
    rollout: Rollout,
    /// The stored definition (kept to rewrite the record with new progress).
    record: RolloutRecord,
    product: String,
    hardware: Vec<String>,
    /// The latest stored sample.
    last_sample: Option<pb::RolloutSample>,
    /// Samples stored.
    samples: usize,
}

impl Entry {
    fn id(&self) -> &str {
        self.rollout.spec().id.as_str()
    }

    fn release(&self) -> &str {
        self.rollout.spec().release.as_str()
    }

    /// The rollout record with the engine's current progress.
    fn snapshot(&mut self) -> &RolloutRecord {
        let p = self.rollout.progress();
        let r = &mut self.record;
        (r.state, r.pause_reason) = match p.state {
            RolloutState::Active => (pb::RolloutState::Active as i32, String::new()),
            RolloutState::Paused { reason } => (pb::RolloutState::Paused as i32, reason),
            RolloutState::Cancelled => (pb::RolloutState::Cancelled as i32, String::new()),
            RolloutState::Completed => (pb::RolloutState::Completed as i32, String::new()),
        };
        r.current_stage = u32::try_from(p.current_stage).unwrap_or(u32::MAX);
        r.created_at = p.created_at.0;
        r.stage_started_at = p.stage_started_at.0;
        r.acknowledged = p.acknowledged;
        &self.record
    }

    /// The rollout now, as a history sample.
    fn sample(&self, now: UnixTime) -> pb::RolloutSample {
        let state = match self.rollout.state() {
            RolloutState::Active => pb::RolloutState::Active,
            RolloutState::Paused { .. } => pb::RolloutState::Paused,
            RolloutState::Cancelled => pb::RolloutState::Cancelled,
            RolloutState::Completed => pb::RolloutState::Completed,
        };
        pb::RolloutSample {
            time: now.0,
            state: state as i32,
            current_stage: u32::try_from(self.rollout.current_stage()).unwrap_or(u32::MAX),
            counts: self.rollout.counts().iter().map(Into::into).collect(),
        }
    }

    fn device(&self, id: &DeviceId) -> Option<EngineDevice> {
        self.rollout.device(id).cloned()
    }

    fn compatible(&self, attrs: &pb::DeviceAttributes) -> bool {
        self.product == attrs.product && self.hardware.contains(&attrs.hardware)
    }

    /// The factory rollout settings, if this is one.
    fn factory(&self) -> Option<pb::FactoryRollout> {
        self.record.request.as_ref().and_then(|r| r.factory)
    }

    /// Whether `device` may be consulted by this rollout at `now`: always
    /// for an ordinary rollout; for a factory rollout only while the device
    /// is at the factory ([`crate::factory::at_factory`]).
    fn admits(&self, device: &DeviceRecord, now: UnixTime) -> bool {
        self.factory()
            .is_none_or(|f| crate::factory::at_factory(&f, device, now))
    }

    /// The rollout as the admin API shows it.
    fn info(&self) -> pb::RolloutInfo {
        let mut info = self.rollout.info();
        info.factory = self.factory();
        info
    }
}

fn outcome_code(o: DeviceOutcome) -> u32 {
    match o {
        DeviceOutcome::Pending => 0,
        DeviceOutcome::Offered => 1,
        DeviceOutcome::Installed => 2,
        DeviceOutcome::Updated => 3,
        DeviceOutcome::Failed => 4,
        DeviceOutcome::RolledBack => 5,
        DeviceOutcome::Silent => 6,
        DeviceOutcome::Excluded => 7,
    }
}

fn outcome_from(code: u32) -> Option<DeviceOutcome> {
    Some(match code {
        0 => DeviceOutcome::Pending,
        1 => DeviceOutcome::Offered,
        2 => DeviceOutcome::Installed,
        3 => DeviceOutcome::Updated,
        4 => DeviceOutcome::Failed,
        5 => DeviceOutcome::RolledBack,
        6 => DeviceOutcome::Silent,
        7 => DeviceOutcome::Excluded,
        _ => return None,
    })
}

fn to_stored(r: &EngineDevice) -> RolloutDeviceRecord {
    RolloutDeviceRecord {
        outcome: outcome_code(r.outcome),
        stage: r
            .stage
            .map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX - 1) + 1),
        forced: r.forced,
        since: r.since.0,
        offers: r.offers,
        rollbacks: r.rollbacks,
        failures: r.failures,
        last_error: r.last_error.clone(),
        last_seen: r.last_seen.0,
    }
}

fn from_stored(r: &RolloutDeviceRecord) -> Option<EngineDevice> {
    Some(EngineDevice {
        outcome: outcome_from(r.outcome)?,
        stage: r.stage.checked_sub(1).map(|s| s as usize),
        forced: r.forced,
        since: UnixTime(r.since),
        last_seen: UnixTime(r.last_seen.max(r.since)),
        offers: r.offers,
        rollbacks: r.rollbacks,
        failures: r.failures,
        last_error: r.last_error.clone(),
    })
}

/// The stages a rollout without any gets: everyone at once.
fn default_stages() -> Vec<pb::RolloutStage> {
    vec![pb::RolloutStage {
        name: "all".into(),
        percent: 100,
        test_devices_only: false,
        soak_secs: 0,
        min_sample: 0,
        max_failure_permille: 1000,
    }]
}

fn spec_of(record: &RolloutRecord) -> Result<RolloutSpec, aloft_rollout::Error> {
    let req = record
        .request
        .as_ref()
        .ok_or(aloft_rollout::Error::InvalidField("stored rollout request"))?;
    let version = Version::parse(&record.target_version)
        .map_err(|_| aloft_rollout::Error::InvalidField("target version"))?;
    let mut spec = RolloutSpec::from_proto(req, version)?;
    spec.offer_timeout_secs = record.offer_timeout_secs;
    spec.check_in_secs = record.check_in_secs;
    spec.pacing_retry_secs = record.pacing_retry_secs;
    spec.jitter_secs = record.jitter_secs;
    Ok(spec)
}

/// The stored progress; an unknown stored state refuses to load (fail
/// closed: a rollout of unknown state never offers anything).
fn progress_of(record: &RolloutRecord) -> Result<RolloutProgress, aloft_rollout::Error> {
    let state = match pb::RolloutState::try_from(record.state) {
        Ok(pb::RolloutState::Active) => RolloutState::Active,
        Ok(pb::RolloutState::Paused) => RolloutState::Paused {
            reason: record.pause_reason.clone(),
        },
        Ok(pb::RolloutState::Cancelled) => RolloutState::Cancelled,
        Ok(pb::RolloutState::Completed) => RolloutState::Completed,
        Ok(pb::RolloutState::Unspecified) | Err(_) => {
            return Err(aloft_rollout::Error::InvalidField("stored rollout state"));
        }
    };
    Ok(RolloutProgress {
        state,
        current_stage: record.current_stage as usize,
        created_at: UnixTime(record.created_at),
        stage_started_at: UnixTime(record.stage_started_at),
        acknowledged: record.acknowledged,
    })
}

/// What a device looks like to a rollout: its attributes and running version.
pub fn device_view(device: &DeviceRecord, running: &str) -> Option<DeviceView> {
    let attrs = device.attributes.clone().unwrap_or_default();
    Some(DeviceView {
        id: DeviceId::new(&device.device_id).ok()?,
        product: attrs.product,
        hardware: attrs.hardware,
        version: Version::parse(running).ok()?,
        region: attrs.region,
        time_zone: attrs.time_zone,
        tags: attrs.tags,
        test: attrs.test_device,
    })
}

/// All rollouts of the server; see the module docs.
pub struct Rollouts {
    store: Arc<dyn Store>,
    settings: RolloutSettings,
    inner: Mutex<BTreeMap<String, Entry>>,
    /// Bumped when devices may have become eligible (created, resumed,
    /// advanced, retried, forced): open sessions decide again.
    nudge: tokio::sync::watch::Sender<u64>,
}

fn transition_event(e: &Entry, t: &Transition) -> RolloutEvent {
    let (device, kind, detail) = match t {
        Transition::Paused { reason } => (String::new(), EventKind::RolloutPaused, reason.clone()),
        Transition::Advanced { to } => (
            String::new(),
            EventKind::StageAdvanced,
            stage_label(e.rollout.spec().stages.get(*to), *to),
        ),
        Transition::Silent(id) => (
            id.to_string(),
            EventKind::DeviceSilent,
            "installed, then silent: counted as failed".into(),
        ),
        Transition::OfferExpired(id) => (
            id.to_string(),
            EventKind::OfferExpired,
            "no report in time: the offer was withdrawn".into(),
        ),
        Transition::Completed => (
            String::new(),
            EventKind::RolloutCompleted,
            "every device finished and the last stage soaked".into(),
        ),
    };
    RolloutEvent {
        rollout: e.id().to_owned(),
        release: e.release().to_owned(),
        device,
        kind,
        detail,
    }
}

fn with_reason(what: &str, reason: &str) -> String {
    if reason.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {reason}")
    }
}

fn stage_label(stage: Option<&Stage>, index: usize) -> String {
    match stage {
        Some(s) => format!("stage {index} ({})", s.name),
        None => format!("stage {index}"),
    }
}

impl Rollouts {
    /// Rebuilds every rollout from `store`.
    pub fn load(store: Arc<dyn Store>, settings: RolloutSettings) -> Result<Self, RolloutError> {
        let mut map = BTreeMap::new();
        for record in store.list_rollouts()? {
            let id = record.id().to_owned();
            let corrupt = |e| RolloutError::Corrupt(id.clone(), e);
            let spec = spec_of(&record).map_err(corrupt)?;
            let release = store.release(&spec.release)?.and_then(|r| r.info);
            let (product, hardware) = release.map(|i| (i.product, i.hardware)).unwrap_or_default();
            let mut devices = Vec::new();
            for (device, stored) in store.rollout_devices(&id)? {
                let rec =
                    from_stored(&stored).ok_or(StoreError::Corrupt("rollout device outcome"))?;
                devices.push((device, rec));
            }
            let progress = progress_of(&record).map_err(corrupt)?;
            let rollout = Rollout::restore(spec, progress, devices).map_err(corrupt)?;
            let last_sample = store.rollout_samples(&id, 0, 1)?.pop();
            let samples = store.rollout_sample_count(&id)?;
            map.insert(
                id,
                Entry {
                    rollout,
                    record,
                    product,
                    hardware,
                    last_sample,
                    samples,
                },
            );
        }
        Ok(Self {
            store,
            settings,
            inner: Mutex::new(map),
            nudge: tokio::sync::watch::channel(0).0,
        })
    }

    /// Changes when devices may have become eligible; see [`Rollouts::nudge`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.nudge.subscribe()
    }

    /// Tells open sessions to decide again.
    fn nudge(&self) {
        self.nudge.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.lock().recover()
    }

    /// Validates and stores a new factory rollout (see [`crate::factory`]):
    /// its release must be newer than the product's current factory
    /// rollout's, which it supersedes (cancelled, with an event) and whose
    /// `registered_since` it inherits.
    pub fn create_factory(
        &self,
        mut req: pb::CreateRolloutRequest,
        release: &ReleaseRecord,
        now: UnixTime,
    ) -> Result<(pb::RolloutInfo, Vec<RolloutEvent>), RolloutError> {
        let info = release.info.clone().unwrap_or_default();
        let version = Version::parse(&info.version).map_err(|_| {
            RolloutError::Invalid(aloft_rollout::Error::InvalidField("release version"))
        })?;
        // The product's factory rollouts still standing, newest release first.
        let mut previous: Vec<(Version, String, u64)> = self
            .lock()
            .values()
            .filter(|e| e.product == info.product && *e.rollout.state() != RolloutState::Cancelled)
            .filter_map(|e| {
                let f = e.factory()?;
                Some((
                    e.rollout.spec().target_version,
                    e.id().to_owned(),
                    f.registered_since,
                ))
            })
            .collect();
        previous.sort_by(|a, b| b.cmp(a));
        if let Some((newest, id, _)) = previous.first()
            && *newest >= version
        {
            return Err(crate::factory::FactoryError::NotNewer {
                current: id.clone(),
                product: info.product,
                version: newest.to_string(),
            }
            .into());
        }
        let inherited = previous.first().map(|(_, _, since)| *since);
        crate::factory::normalise(&mut req, inherited, now)?;
        let out = self.create(req, release, now)?;
        let mut events = Vec::new();
        for (_, id, _) in previous {
            let reason = format!("superseded by factory rollout {}", out.rollout_id);
            let (_, cancelled) = self.control(&id, pb::RolloutAction::Cancel, &reason, now)?;
            events.extend(cancelled);
        }
        Ok((out, events))
    }

    /// Validates and stores a new rollout.
    pub fn create(
        &self,
        mut req: pb::CreateRolloutRequest,
        release: &ReleaseRecord,
        now: UnixTime,
    ) -> Result<pb::RolloutInfo, RolloutError> {
        let info = release.info.clone().unwrap_or_default();
        let version = Version::parse(&info.version).map_err(|_| {
            RolloutError::Invalid(aloft_rollout::Error::InvalidField("release version"))
        })?;
        if req.stages.is_empty() {
            req.stages = default_stages();
        }
        let id = req.rollout_id.clone();
        let mut spec =
            RolloutSpec::from_proto(&req, version).map_err(|e| RolloutError::engine(&id, e))?;
        let s = &self.settings;
        spec.offer_timeout_secs = s.offer_timeout_secs;
        spec.check_in_secs = s.check_in_secs;
        spec.pacing_retry_secs = s.pacing_retry_secs;
        spec.jitter_secs = s.jitter_secs;
        let rollout =
            Rollout::new(spec, now, req.start_paused).map_err(|e| RolloutError::engine(&id, e))?;
        let mut entry = Entry {
            rollout,
            record: RolloutRecord {
                request: Some(req),
                target_version: version.to_string(),
                offer_timeout_secs: s.offer_timeout_secs,
                check_in_secs: s.check_in_secs,
                pacing_retry_secs: s.pacing_retry_secs,
                jitter_secs: s.jitter_secs,
                ..Default::default()
            },
            product: info.product,
            hardware: info.hardware,
            last_sample: None,
            samples: 0,
        };
        let mut map = self.lock();
        if map.contains_key(&id) || !self.store.insert_rollout(entry.snapshot())? {
            return Err(RolloutError::Exists(id));
        }
        let out = entry.info();
        let e = map.entry(id).or_insert(entry);
        self.record_sample(e, now, true)?;
        drop(map);
        self.nudge();
        Ok(out)
    }

    /// One rollout with live counts.
    pub fn get(&self, id: &str) -> Result<pb::RolloutInfo, RolloutError> {
        self.lock()
            .get(id)
            .map(Entry::info)
            .ok_or_else(|| RolloutError::UnknownRollout(id.to_owned()))
    }

    /// The latest `limit` samples of rollout `id` at or after `since`, oldest
    /// first (`limit` 0 or above the kept number = all kept).
    pub fn history(
        &self,
        id: &str,
        since: u64,
        limit: u32,
    ) -> Result<Vec<pb::RolloutSample>, RolloutError> {
        if !self.lock().contains_key(id) {
            return Err(RolloutError::UnknownRollout(id.to_owned()));
        }
        let kept = self.settings.max_samples.max(1);
        let limit = match usize::try_from(limit) {
            Ok(0) | Err(_) => kept,
            Ok(n) => n.min(kept),
        };
        Ok(self.store.rollout_samples(id, since, limit)?)
    }

    /// Appends a sample of `e` if it changed since its last one: at once when
    /// its state or current stage changed or when `force`d, otherwise once
    /// the sample interval has passed since the last sample. Deletes the
    /// oldest samples beyond the cap. Returns whether it appended.
    fn record_sample(&self, e: &mut Entry, now: UnixTime, force: bool) -> Result<bool, StoreError> {
        let next = e.sample(now);
        if let Some(last) = &e.last_sample {
            let moved = last.state != next.state || last.current_stage != next.current_stage;
            if !moved && last.counts == next.counts {
                return Ok(false);
            }
            let due = now.0 >= last.time.saturating_add(self.settings.sample_interval_secs);
            if !moved && !force && !due {
                return Ok(false);
            }
        }
        let drop = (e.samples + 1).saturating_sub(self.settings.max_samples.max(1));
        self.store.append_rollout_sample(e.id(), &next, drop)?;
        e.samples = e.samples + 1 - drop;
        e.last_sample = Some(next);
        Ok(true)
    }

    /// Whether a directive of `rollout` still authorises `device` to
    /// download: the rollout exists, was not cancelled, and has not
    /// excluded the device. A directive outside any rollout (empty id) is
    /// authorised by itself.
    pub fn download_allowed(
        &self,
        rollout: &str,
        device: &DeviceId,
    ) -> Result<(), DownloadRefusal> {
        if rollout.is_empty() {
            return Ok(());
        }
        let map = self.lock();
        let e = map
            .get(rollout)
            .ok_or_else(|| DownloadRefusal::UnknownRollout(rollout.to_owned()))?;
        if matches!(e.rollout.state(), RolloutState::Cancelled) {
            return Err(DownloadRefusal::Cancelled(rollout.to_owned()));
        }
        if e.device(device)
            .is_some_and(|d| d.outcome == DeviceOutcome::Excluded)
        {
            return Err(DownloadRefusal::Excluded(rollout.to_owned()));
        }
        Ok(())
    }

    /// Every rollout, by id.
    pub fn list(&self) -> Vec<pb::RolloutInfo> {
        self.lock().values().map(Entry::info).collect()
    }

    /// Devices offered and not finished, over all rollouts not cancelled (a
    /// completed rollout still serves devices that show up late).
    fn in_flight(map: &BTreeMap<String, Entry>) -> u32 {
        map.values()
            .filter(|e| *e.rollout.state() != RolloutState::Cancelled)
            .map(|e| e.rollout.in_flight())
            .sum()
    }

    /// Decides what a device checking in at `now` gets. Rollouts whose release
    /// fits the device (product, hardware, newer than `running`) are asked in
    /// order of release version, newest first; the first offer wins. A
    /// check-in writes only the device records it changed.
    pub fn check_in(
        &self,
        device: &DeviceRecord,
        running: &str,
        now: UnixTime,
    ) -> Result<CheckIn, RolloutError> {
        let Some(view) = device_view(device, running) else {
            return Ok(CheckIn::Nothing);
        };
        let attrs = device.attributes.clone().unwrap_or_default();
        let mut map = self.lock();
        let mut global = GlobalLoad {
            in_flight: Self::in_flight(&map),
            max: self.settings.max_concurrent_downloads,
        };
        let mut order: Vec<(Version, String)> = map
            .values()
            .filter(|e| {
                e.compatible(&attrs)
                    && e.rollout.spec().target_version > view.version
                    && e.admits(device, now)
            })
            .map(|e| (e.rollout.spec().target_version, e.id().to_owned()))
            .collect();
        order.sort_by(|a, b| b.cmp(a));
        // A device installing a release of a rollout it already runs (its
        // trial) is consulted by no rollout below: tell those it is alive.
        let ids: Vec<String> = map.keys().cloned().collect();
        for id in ids {
            let Some(e) = map.get_mut(&id) else { continue };
            if e.rollout.spec().target_version <= view.version
                && e.device(&view.id)
                    .is_some_and(|r| r.outcome == DeviceOutcome::Installed)
            {
                e.rollout.begin();
                e.rollout.seen(&view.id, now);
                self.persist(e)?;
            }
        }
        let mut later: Option<UnixTime> = None;
        for (_, id) in order {
            let Some(e) = map.get_mut(&id) else { continue };
            let before = e.device(&view.id);
            e.rollout.begin();
            let decision = e.rollout.decide(&view, now, global);
            self.persist(e)?;
            match decision {
                Decision::Offer { release } => {
                    let fresh = before
                        .as_ref()
                        .is_none_or(|b| b.outcome != DeviceOutcome::Offered);
                    return Ok(CheckIn::Offer {
                        release,
                        rollout: id,
                        fresh,
                    });
                }
                Decision::NotYet {
                    reason:
                        NotYetReason::Paused
                        | NotYetReason::NotInStage
                        | NotYetReason::OutsideWindow { .. }
                        | NotYetReason::PacingCap,
                    check_in_at,
                } => {
                    later = Some(later.map_or(check_in_at, |l| l.min(check_in_at)));
                }
                Decision::NotYet { .. } | Decision::None => {}
            }
            global.in_flight = Self::in_flight(&map);
        }
        Ok(later.map_or(CheckIn::Nothing, CheckIn::Later))
    }

    /// A device says it runs `running`, confirmed, while rollouts still
    /// hold it as offered or installing that version: its confirmation was
    /// lost (a server restored from a backup taken before the report, which
    /// the device will not send again once acknowledged). Counts it as
    /// updated in each such rollout, as its Confirmed report would have.
    pub fn reconcile_confirmed(
        &self,
        device: &DeviceId,
        running: &str,
        now: UnixTime,
    ) -> Result<Vec<RolloutEvent>, RolloutError> {
        let Ok(running) = Version::parse(running) else {
            return Ok(Vec::new());
        };
        let stale: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| {
                e.rollout.spec().target_version == running
                    && e.device(device).is_some_and(|r| {
                        matches!(r.outcome, DeviceOutcome::Offered | DeviceOutcome::Installed)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        for id in stale {
            tracing::info!(device = %device, rollout = %id, version = %running, "device runs the rollout's version, confirmed, but its report is missing (restored store?): counted as updated");
            events.extend(self.report(&id, device, Report::Updated, now)?);
        }
        Ok(events)
    }

    /// Feeds a device report about a release of `rollout` to the engine.
    /// Reports from devices the rollout has no record of are ignored.
    pub fn report(
        &self,
        rollout: &str,
        device: &DeviceId,
        report: Report,
        now: UnixTime,
    ) -> Result<Vec<RolloutEvent>, RolloutError> {
        let mut map = self.lock();
        let Some(e) = map.get_mut(rollout) else {
            return Ok(Vec::new());
        };
        e.rollout.begin();
        let transitions = match e.rollout.report(device, report, now) {
            Ok(t) => t,
            Err(aloft_rollout::Error::UnknownDevice(_)) => {
                e.rollout.commit();
                return Ok(Vec::new());
            }
            Err(err) => {
                e.rollout.rollback();
                return Err(RolloutError::engine(rollout, err));
            }
        };
        let changed = e.rollout.progress_changed();
        self.persist(e)?;
        if changed {
            self.sample_if_due(e, now, true);
        }
        Ok(transitions.iter().map(|t| transition_event(e, t)).collect())
    }

    /// Writes what the engine's journaled operation changed: the rollout
    /// record when its progress changed, and the changed devices' records,
    /// in one store write. On failure the operation is undone, so memory
    /// and store agree (and the caller refuses the operation).
    fn persist(&self, e: &mut Entry) -> Result<(), StoreError> {
        let records: Vec<_> = e
            .rollout
            .changed_devices()
            .into_iter()
            .filter_map(|id| e.device(&id).map(|r| (id, to_stored(&r))))
            .collect();
        let record = e.rollout.progress_changed().then(|| e.snapshot().clone());
        let id = e.id().to_owned();
        let written = if record.is_some() || !records.is_empty() {
            self.store.save_rollout(&id, record.as_ref(), &records)
        } else {
            Ok(())
        };
        match written {
            Ok(()) => e.rollout.commit(),
            Err(err) => {
                e.rollout.rollback();
                tracing::warn!(rollout = %id, error = %err, "rollout write failed; the operation was undone");
                return Err(err);
            }
        }
        Ok(())
    }

    /// Appends a due history sample; a failure is logged, never fatal (the
    /// operation it follows is durable, the history only thinner).
    fn sample_if_due(&self, e: &mut Entry, now: UnixTime, force: bool) -> bool {
        match self.record_sample(e, now, force) {
            Ok(appended) => appended,
            Err(err) => {
                tracing::warn!(rollout = %e.id(), error = %err, "could not store a rollout history sample");
                false
            }
        }
    }

    /// Advances time for every rollout (silent devices, expired offers, the
    /// health gate, stage advance), persists what changed and records
    /// history samples that are due.
    pub fn tick(&self, now: UnixTime) -> Result<Tick, RolloutError> {
        let mut map = self.lock();
        let mut out = Tick::default();
        for e in map.values_mut() {
            if *e.rollout.state() == RolloutState::Cancelled {
                continue;
            }
            e.rollout.begin();
            let transitions = e.rollout.tick(now);
            if transitions.is_empty() {
                e.rollout.commit();
            } else {
                self.persist(e)?;
                out.events
                    .extend(transitions.iter().map(|t| transition_event(e, t)));
            }
            if self.sample_if_due(e, now, false) {
                out.samples += 1;
            }
        }
        drop(map);
        if out
            .events
            .iter()
            .any(|e| e.kind == EventKind::StageAdvanced)
        {
            self.nudge();
        }
        Ok(out)
    }

    /// An operator action on a rollout.
    pub fn control(
        &self,
        id: &str,
        action: pb::RolloutAction,
        reason: &str,
        now: UnixTime,
    ) -> Result<(pb::RolloutInfo, Vec<RolloutEvent>), RolloutError> {
        use pb::RolloutAction as A;
        let mut map = self.lock();
        let e = map
            .get_mut(id)
            .ok_or_else(|| RolloutError::UnknownRollout(id.to_owned()))?;
        e.rollout.begin();
        let decided = Self::control_engine(e, id, action, reason, now);
        let (kind, detail) = match decided {
            Ok(kd) => kd,
            Err(err) => {
                e.rollout.rollback();
                return Err(err);
            }
        };
        self.persist(e)?;
        self.sample_if_due(e, now, true);
        let event = RolloutEvent {
            rollout: id.to_owned(),
            release: e.release().to_owned(),
            device: String::new(),
            kind,
            detail,
        };
        let info = e.info();
        drop(map);
        if matches!(action, A::Resume | A::Advance | A::RetryFailed) {
            self.nudge();
        }
        Ok((info, vec![event]))
    }

    /// The engine part of [`Rollouts::control`]: the event it makes.
    fn control_engine(
        e: &mut Entry,
        id: &str,
        action: pb::RolloutAction,
        reason: &str,
        now: UnixTime,
    ) -> Result<(EventKind, String), RolloutError> {
        use pb::RolloutAction as A;
        let engine =
            |r: Result<(), aloft_rollout::Error>| r.map_err(|x| RolloutError::engine(id, x));
        let (kind, detail) = match action {
            A::Pause => {
                engine(e.rollout.pause(reason))?;
                let reason = match e.rollout.state() {
                    RolloutState::Paused { reason } => reason.clone(),
                    _ => String::new(),
                };
                (EventKind::RolloutState, format!("paused: {reason}"))
            }
            A::Resume => {
                engine(e.rollout.resume())?;
                (EventKind::RolloutState, with_reason("resumed", reason))
            }
            A::Cancel => {
                engine(e.rollout.cancel())?;
                (EventKind::RolloutState, with_reason("cancelled", reason))
            }
            A::Advance => {
                engine(e.rollout.advance(now))?;
                if *e.rollout.state() == RolloutState::Completed {
                    (
                        EventKind::RolloutCompleted,
                        "advanced past the last stage".into(),
                    )
                } else {
                    let to = e.rollout.current_stage();
                    (
                        EventKind::StageAdvanced,
                        format!(
                            "{} by operator",
                            stage_label(e.rollout.spec().stages.get(to), to)
                        ),
                    )
                }
            }
            A::RetryFailed => {
                if !matches!(
                    e.rollout.state(),
                    RolloutState::Active | RolloutState::Paused { .. }
                ) {
                    return Err(RolloutError::WrongState {
                        rollout: id.to_owned(),
                        action: "retry failed devices of",
                        state: e.rollout.state().name(),
                    });
                }
                let n = e.rollout.retry_failed(now);
                (
                    EventKind::RetryFailed,
                    format!("{n} devices back to pending"),
                )
            }
            A::Unspecified => {
                return Err(RolloutError::Invalid(aloft_rollout::Error::InvalidField(
                    "rollout action (pause, resume, cancel, advance or retry-failed)",
                )));
            }
        };
        Ok((kind, detail))
    }

    /// An operator action on one device of a rollout. The caller checks that
    /// the device is registered.
    pub fn control_device(
        &self,
        id: &str,
        device: &DeviceId,
        action: pb::DeviceAction,
        now: UnixTime,
    ) -> Result<(pb::RolloutInfo, RolloutEvent), RolloutError> {
        use pb::DeviceAction as A;
        let mut map = self.lock();
        let e = map
            .get_mut(id)
            .ok_or_else(|| RolloutError::UnknownRollout(id.to_owned()))?;
        if matches!(
            e.rollout.state(),
            RolloutState::Cancelled | RolloutState::Completed
        ) {
            let action = match action {
                A::Exclude => "exclude a device of",
                A::Force => "force a device of",
                _ => "retry a device of",
            };
            return Err(RolloutError::WrongState {
                rollout: id.to_owned(),
                action,
                state: e.rollout.state().name(),
            });
        }
        if action == A::Unspecified {
            return Err(RolloutError::Invalid(aloft_rollout::Error::InvalidField(
                "device action (exclude, force or retry)",
            )));
        }
        e.rollout.begin();
        let kind = match action {
            A::Exclude => {
                e.rollout.exclude(device, now);
                EventKind::DeviceExcluded
            }
            A::Force => {
                e.rollout.force(device, now);
                EventKind::DeviceForced
            }
            _ => {
                if let Err(x) = e.rollout.retry(device, now) {
                    e.rollout.rollback();
                    return Err(RolloutError::engine(id, x));
                }
                EventKind::DeviceRetried
            }
        };
        self.persist(e)?;
        let event = RolloutEvent {
            rollout: id.to_owned(),
            release: e.release().to_owned(),
            device: device.to_string(),
            kind,
            detail: String::new(),
        };
        let info = e.info();
        drop(map);
        if matches!(action, A::Force | A::Retry) {
            self.nudge();
        }
        Ok((info, event))
    }
}
