//! The rollout state machine: stages, health gate, pacing and per-device control.
//!
//! A [`Rollout`] holds one rollout's spec, state and per-device records. The
//! server feeds it facts (check-ins through [`Rollout::decide`], device
//! [`Report`]s, the time through [`Rollout::tick`]) and operator commands; it
//! never reads a clock or does I/O. Its rules are listed in the crate docs.

use std::collections::{BTreeMap, BTreeSet};

use aloft_protocol::{DeviceId, ReleaseId, UnixTime, Version, pb};

use crate::membership::{self, StageShare};
use crate::selector::{DeviceView, Selector};
use crate::tracking::StageCounts;
use crate::window::{self, MaintenanceWindow};
use crate::{Error, RolloutId};

/// Default suggested interval between check-ins while waiting, in seconds.
pub const DEFAULT_CHECK_IN_SECS: u64 = 3600;
/// Default wait before a device held back by a pacing cap asks again, in seconds.
pub const DEFAULT_PACING_RETRY_SECS: u64 = 300;
/// Default spread added to suggested check-ins, in seconds.
pub const DEFAULT_JITTER_SECS: u64 = 300;
/// Most stages a rollout may have.
pub const MAX_STAGES: usize = 32;

/// One stage of a rollout (mirrors `aloft.v1.RolloutStage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Display name, e.g. `canary`.
    pub name: String,
    /// Cumulative share (0-100) of the target devices; ignored for test stages.
    pub percent: u8,
    /// The stage holds only test devices (allowed only as the first stage).
    pub test_devices_only: bool,
    /// Seconds the stage must soak before it may advance automatically.
    pub soak_secs: u64,
    /// Finished devices (updated + failed) needed before the gate judges, and
    /// before the stage may advance automatically.
    pub min_sample: u32,
    /// Pause when failed * 1000 > this * finished (parts per thousand, 0-1000).
    pub max_failure_permille: u32,
}

impl Stage {
    fn label(&self) -> String {
        if self.test_devices_only {
            "test devices".into()
        } else {
            format!("{}%", self.percent)
        }
    }
}

/// Everything that defines a rollout. Checked by [`Rollout::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutSpec {
    /// The rollout's id (also the membership hash salt).
    pub id: RolloutId,
    /// The release offered.
    pub release: ReleaseId,
    /// The release's firmware version: devices already at or above it are not offered.
    pub target_version: Version,
    /// Which devices the rollout targets; re-evaluated on every check-in.
    pub selector: Selector,
    /// Ordered stages (at least one).
    pub stages: Vec<Stage>,
    /// Local-time maintenance window, if any.
    pub window: Option<MaintenanceWindow>,
    /// Cap on devices offered but not finished (0 = no per-rollout cap).
    pub max_concurrent: u32,
    /// A device that installed and then stays silent this long counts as failed (0 = never).
    pub silent_after_secs: u64,
    /// An offer with no report for this long is withdrawn, freeing its pacing
    /// slot; the device goes back to pending (0 = never).
    pub offer_timeout_secs: u64,
    /// Suggested check-in interval for waiting devices, in seconds.
    pub check_in_secs: u64,
    /// Suggested wait for a device held back by a pacing cap, in seconds.
    pub pacing_retry_secs: u64,
    /// Largest per-device jitter added to suggested check-ins, in seconds.
    pub jitter_secs: u64,
}

impl RolloutSpec {
    /// A spec with the defaults for everything but id, release, version,
    /// selector and stages: no window, no caps, no silence or offer timeout.
    pub fn new(
        id: RolloutId,
        release: ReleaseId,
        target_version: Version,
        selector: Selector,
        stages: Vec<Stage>,
    ) -> Self {
        Self {
            id,
            release,
            target_version,
            selector,
            stages,
            window: None,
            max_concurrent: 0,
            silent_after_secs: 0,
            offer_timeout_secs: 0,
            check_in_secs: DEFAULT_CHECK_IN_SECS,
            pacing_retry_secs: DEFAULT_PACING_RETRY_SECS,
            jitter_secs: DEFAULT_JITTER_SECS,
        }
    }

    /// Builds a spec from a `CreateRolloutRequest`; the server supplies the
    /// release's version. `max_concurrent = 0` in the request is kept as "no
    /// per-rollout cap": the server substitutes its default first if it has one.
    /// `start_paused` is not part of the spec: pass it to [`Rollout::new`].
    pub fn from_proto(
        req: &pb::CreateRolloutRequest,
        target_version: Version,
    ) -> Result<Self, Error> {
        let id = RolloutId::new(&req.rollout_id)?;
        let release =
            ReleaseId::new(&req.release_id).map_err(|_| Error::InvalidField("release id"))?;
        let selector = Selector::parse(&req.selector)?;
        let stages = req
            .stages
            .iter()
            .map(Stage::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec = Self::new(id, release, target_version, selector, stages);
        spec.window = req
            .window
            .as_ref()
            .map(MaintenanceWindow::try_from)
            .transpose()?;
        spec.max_concurrent = req.max_concurrent;
        spec.silent_after_secs = req.silent_after_secs;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the stage rules: 1 to [`MAX_STAGES`] stages; a
    /// `test_devices_only` stage only first; percentages 0-100 and
    /// non-decreasing; permille 0-1000.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidStages(m));
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return bad(format!(
                "need 1 to {MAX_STAGES} stages, got {}",
                self.stages.len()
            ));
        }
        let mut last = 0;
        for (i, s) in self.stages.iter().enumerate() {
            if s.test_devices_only {
                if i != 0 {
                    return bad(format!("stage {i}: a test-devices stage must be the first"));
                }
                continue;
            }
            if s.percent > 100 {
                return bad(format!("stage {i}: percent {} is over 100", s.percent));
            }
            if s.percent < last {
                return bad(format!(
                    "stage {i}: percent {} is below the previous {last}",
                    s.percent
                ));
            }
            last = s.percent;
            if s.max_failure_permille > 1000 {
                return bad(format!(
                    "stage {i}: max_failure_permille {} is over 1000",
                    s.max_failure_permille
                ));
            }
        }
        Ok(())
    }
}

impl TryFrom<&pb::RolloutStage> for Stage {
    type Error = Error;
    fn try_from(s: &pb::RolloutStage) -> Result<Self, Error> {
        Ok(Self {
            name: s.name.clone(),
            percent: u8::try_from(s.percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| {
                    Error::InvalidStages(format!("percent {} is over 100", s.percent))
                })?,
            test_devices_only: s.test_devices_only,
            soak_secs: s.soak_secs,
            min_sample: s.min_sample,
            max_failure_permille: s.max_failure_permille,
        })
    }
}

impl From<&Stage> for pb::RolloutStage {
    fn from(s: &Stage) -> Self {
        Self {
            name: s.name.clone(),
            percent: s.percent.into(),
            test_devices_only: s.test_devices_only,
            soak_secs: s.soak_secs,
            min_sample: s.min_sample,
            max_failure_permille: s.max_failure_permille,
        }
    }
}

impl TryFrom<&pb::MaintenanceWindow> for MaintenanceWindow {
    type Error = Error;
    fn try_from(w: &pb::MaintenanceWindow) -> Result<Self, Error> {
        MaintenanceWindow::new(w.start_minute, w.end_minute)
    }
}

impl From<&MaintenanceWindow> for pb::MaintenanceWindow {
    fn from(w: &MaintenanceWindow) -> Self {
        Self {
            start_minute: w.start_minute(),
            end_minute: w.end_minute(),
        }
    }
}

/// A rollout's lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Offering to eligible devices.
    Active,
    /// No offers go out; `reason` says why (health gate or operator).
    Paused {
        /// Recorded reason, e.g. "stage 2 (10%): 3 of 20 devices failed (150‰ > 100‰)".
        reason: String,
    },
    /// Stopped by an operator; final.
    Cancelled,
    /// Finished (an operator advanced past the last stage); final.
    Completed,
}

impl RolloutState {
    /// `active`, `paused`, `cancelled` or `completed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused { .. } => "paused",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
        }
    }
}

/// Where one device stands in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceOutcome {
    /// Targeted, not yet offered.
    Pending,
    /// Offered (a directive went out); downloading. Counts against pacing caps.
    Offered,
    /// Installed into the inactive slot and rebooting; awaiting confirmation.
    Installed,
    /// Running and confirmed the new release.
    Updated,
    /// Reported an install error.
    Failed,
    /// Reported "downloaded but not running" (the boot decision reverted).
    RolledBack,
    /// Installed, then silent for `silent_after_secs`.
    Silent,
    /// Excluded by an operator; its reports no longer count.
    Excluded,
}

impl DeviceOutcome {
    const ALL: [Self; 8] = [
        Self::Pending,
        Self::Offered,
        Self::Installed,
        Self::Updated,
        Self::Failed,
        Self::RolledBack,
        Self::Silent,
        Self::Excluded,
    ];

    /// Counts as a failure for the health gate.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::RolledBack | Self::Silent)
    }

    /// Finished: updated or failed.
    pub fn is_finished(self) -> bool {
        self == Self::Updated || self.is_failure()
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A device's record in a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Current outcome.
    pub outcome: DeviceOutcome,
    /// The first stage the device is eligible in (`None`: beyond the last stage).
    pub stage: Option<usize>,
    /// An operator forced it: offered regardless of stage, window, pacing and pause.
    pub forced: bool,
    /// When the outcome last changed.
    pub since: UnixTime,
    /// When it last checked in while installing (what the silence timer
    /// counts from, with `since`).
    pub last_seen: UnixTime,
    /// Offers made to it.
    pub offers: u32,
    /// Rollbacks it reported.
    pub rollbacks: u32,
    /// Install errors it reported.
    pub failures: u32,
    /// The last failure detail it reported.
    pub last_error: Option<String>,
}

/// What a device reported about this rollout's release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Image written and verified; the device is rebooting into it.
    Installed,
    /// The new firmware runs and confirmed itself.
    Updated,
    /// The install failed.
    Failed {
        /// What went wrong, as the device said.
        detail: String,
    },
    /// Downloaded but not running: the device reverted to its old slot.
    RolledBack,
}

/// Load across all rollouts of the server, for the global pacing cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalLoad {
    /// Devices currently downloading (offered, not finished) server-wide.
    pub in_flight: u32,
    /// The server-wide cap (0 = none).
    pub max: u32,
}

impl GlobalLoad {
    /// No global cap.
    pub const UNLIMITED: Self = Self {
        in_flight: 0,
        max: 0,
    };
}

/// Why a device is not offered the release now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotYetReason {
    /// Its stage has not been reached.
    NotInStage,
    /// Outside its maintenance window, which next opens at `next`.
    OutsideWindow {
        /// When the window next opens.
        next: UnixTime,
    },
    /// The rollout is paused.
    Paused,
    /// A concurrency cap (rollout or server) is full.
    PacingCap,
    /// An operator excluded the device.
    Excluded,
    /// The device already took the update (installed, updated or failed; see retry).
    AlreadyDone,
}

/// The answer to "should this device get the release now?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send a directive for this release.
    Offer {
        /// The release to offer.
        release: ReleaseId,
    },
    /// Not now.
    NotYet {
        /// Why.
        reason: NotYetReason,
        /// Suggested next check-in (with the device's jitter).
        check_in_at: UnixTime,
    },
    /// This rollout has nothing for the device (not targeted, already at the
    /// target version, or the rollout is over).
    None,
}

/// Something that changed by itself, for the server's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The health gate paused the rollout.
    Paused {
        /// The recorded reason.
        reason: String,
    },
    /// The rollout advanced to stage `to` after its soak.
    Advanced {
        /// The new current stage.
        to: usize,
    },
    /// The device installed and then went silent: counted as failed.
    Silent(DeviceId),
    /// The device's offer timed out and went back to pending.
    OfferExpired(DeviceId),
    /// The last stage soaked and every device in the rollout finished.
    Completed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally([u32; 8]);

impl Tally {
    fn get(&self, o: DeviceOutcome) -> u32 {
        self.0[o.index()]
    }
    fn finished(&self) -> u32 {
        DeviceOutcome::ALL
            .iter()
            .filter(|o| o.is_finished())
            .map(|o| self.get(*o))
            .sum()
    }
    fn failed(&self) -> u32 {
        DeviceOutcome::ALL
            .iter()
            .filter(|o| o.is_failure())
            .map(|o| self.get(*o))
            .sum()
    }
}

/// A rollout's own state, apart from its spec and device records: what a
/// server persists next to them and hands back to [`Rollout::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutProgress {
    /// The lifecycle state (with the pause reason).
    pub state: RolloutState,
    /// Index of the current stage.
    pub current_stage: usize,
    /// When the rollout was created.
    pub created_at: UnixTime,
    /// When the current stage started.
    pub stage_started_at: UnixTime,
    /// Failures of the current stage an operator acknowledged by resuming.
    pub acknowledged: u32,
}

/// One rollout's state and per-device records.
#[derive(Clone, Debug)]
pub struct Rollout {
    spec: RolloutSpec,
    shares: Vec<StageShare>,
    state: RolloutState,
    current: usize,
    created_at: UnixTime,
    stage_started_at: UnixTime,
    devices: BTreeMap<DeviceId, DeviceRecord>,
    /// Index `stages.len()` holds devices beyond the last stage.
    tallies: Vec<Tally>,
    /// Failures in the current stage an operator acknowledged by resuming.
    acknowledged: u32,
    /// Offered and installed devices by the time their timer runs out
    /// (offer timeout, silence), so a tick touches only what is due.
    deadlines: BTreeSet<(UnixTime, DeviceId)>,
    /// The undo log of the operation in progress (see [`Rollout::begin`]).
    journal: Option<Journal>,
}

/// What an operation changed, to undo it if its store write fails.
#[derive(Clone, Debug)]
struct Journal {
    progress: RolloutProgress,
    /// Each changed device's record before its first change (`None`: new).
    devices: BTreeMap<DeviceId, Option<DeviceRecord>>,
}

/// How long a device waiting for its stage is told to wait at most once the
/// current stage has soaked (it may advance at any moment then).
pub const STAGE_WAIT_RETRY_SECS: u64 = 60;

impl Rollout {
    /// Starts a rollout at stage 0 (paused with reason "created paused" when `start_paused`).
    pub fn new(spec: RolloutSpec, now: UnixTime, start_paused: bool) -> Result<Self, Error> {
        spec.validate()?;
        let shares = spec
            .stages
            .iter()
            .map(|s| StageShare {
                percent: s.percent,
                test_devices_only: s.test_devices_only,
            })
            .collect();
        let tallies = vec![Tally::default(); spec.stages.len() + 1];
        let state = if start_paused {
            RolloutState::Paused {
                reason: "created paused".into(),
            }
        } else {
            RolloutState::Active
        };
        Ok(Self {
            spec,
            shares,
            state,
            current: 0,
            created_at: now,
            stage_started_at: now,
            devices: BTreeMap::new(),
            tallies,
            acknowledged: 0,
            deadlines: BTreeSet::new(),
            journal: None,
        })
    }

    /// Rebuilds a rollout from what a server persisted: its spec, its
    /// [`Rollout::progress`] and its device records (as [`Rollout::device`]
    /// returned them). The per-stage tallies are recomputed from the records.
    pub fn restore(
        spec: RolloutSpec,
        progress: RolloutProgress,
        devices: impl IntoIterator<Item = (DeviceId, DeviceRecord)>,
    ) -> Result<Self, Error> {
        let mut r = Self::new(spec, progress.created_at, false)?;
        let n = r.spec.stages.len();
        if progress.current_stage >= n {
            return Err(Error::InvalidField("restored current stage"));
        }
        // One pass, no copies: tallies and deadlines as `put` keeps them,
        // the map built at once from the records (bulk, for a large fleet).
        let mut records = Vec::new();
        let mut deadlines = Vec::new();
        for (id, rec) in devices {
            if rec.stage.is_some_and(|s| s >= n) {
                return Err(Error::InvalidField("restored device stage"));
            }
            r.tallies[Self::slot(rec.stage, n)].0[rec.outcome.index()] += 1;
            if let Some(d) = r.deadline(&rec) {
                deadlines.push((d, id.clone()));
            }
            records.push((id, rec));
        }
        let restored = records.len();
        r.devices = records.into_iter().collect();
        if r.devices.len() != restored {
            return Err(Error::InvalidField("restored device listed twice"));
        }
        r.deadlines = deadlines.into_iter().collect();
        r.state = progress.state;
        r.current = progress.current_stage;
        r.stage_started_at = progress.stage_started_at;
        r.acknowledged = progress.acknowledged;
        Ok(r)
    }

    /// The state to persist next to the spec and device records (see [`Rollout::restore`]).
    pub fn progress(&self) -> RolloutProgress {
        RolloutProgress {
            state: self.state.clone(),
            current_stage: self.current,
            created_at: self.created_at,
            stage_started_at: self.stage_started_at,
            acknowledged: self.acknowledged,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    /// The lifecycle state.
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    /// Index of the current stage.
    pub fn current_stage(&self) -> usize {
        self.current
    }

    /// When the current stage started.
    pub fn stage_started_at(&self) -> UnixTime {
        self.stage_started_at
    }

    /// A device's record, if it ever checked in or was controlled.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceRecord> {
        self.devices.get(id)
    }

    /// All device records, ordered by id.
    pub fn devices(&self) -> impl Iterator<Item = (&DeviceId, &DeviceRecord)> {
        self.devices.iter()
    }

    /// Devices offered and not finished (what the per-rollout cap limits).
    pub fn in_flight(&self) -> u32 {
        self.tallies
            .iter()
            .map(|t| t.get(DeviceOutcome::Offered))
            .sum()
    }

    /// Whether the rollout targets `device`, and the first stage it is eligible
    /// in (`Some(None)`: targeted but beyond the last stage). Pure: records nothing.
    pub fn classify(&self, device: &DeviceView) -> Option<Option<usize>> {
        self.spec
            .selector
            .matches(device)
            .then(|| self.stage_for(device))
    }

    fn stage_for(&self, device: &DeviceView) -> Option<usize> {
        let b = membership::bucket(&self.spec.id, &device.id);
        membership::stage_of(&self.shares, b, device.test)
    }

    fn slot(stage: Option<usize>, n: usize) -> usize {
        stage.unwrap_or(n)
    }

    /// When `rec`'s timer runs out, if it has one: an offer after the offer
    /// timeout, an install after the silence period since the later of its
    /// report and its last check-in.
    fn deadline(&self, rec: &DeviceRecord) -> Option<UnixTime> {
        let after =
            |from: UnixTime, secs: u64| (secs > 0).then(|| UnixTime(from.0.saturating_add(secs)));
        match rec.outcome {
            DeviceOutcome::Offered => after(rec.since, self.spec.offer_timeout_secs),
            DeviceOutcome::Installed => {
                after(rec.since.max(rec.last_seen), self.spec.silent_after_secs)
            }
            _ => None,
        }
    }

    /// Replaces (or removes, with `None`) one record, keeping the tallies
    /// and the deadline index in step. Journals the old record.
    fn put(&mut self, id: &DeviceId, rec: Option<DeviceRecord>) {
        let n = self.spec.stages.len();
        let old = match &rec {
            Some(r) => self.devices.insert(id.clone(), r.clone()),
            None => self.devices.remove(id),
        };
        if let Some(j) = &mut self.journal {
            j.devices.entry(id.clone()).or_insert_with(|| old.clone());
        }
        if let Some(o) = &old {
            self.tallies[Self::slot(o.stage, n)].0[o.outcome.index()] -= 1;
            if let Some(d) = self.deadline(o) {
                self.deadlines.remove(&(d, id.clone()));
            }
        }
        if let Some(r) = &rec {
            self.tallies[Self::slot(r.stage, n)].0[r.outcome.index()] += 1;
            if let Some(d) = self.deadline(r) {
                self.deadlines.insert((d, id.clone()));
            }
        }
    }

    /// Changes one record, keeping the tallies (and acknowledged failures) in step.
    fn update(&mut self, id: &DeviceId, f: impl FnOnce(&mut DeviceRecord)) {
        let Some(mut rec) = self.devices.get(id).cloned() else {
            return;
        };
        let (old_stage, old_outcome) = (rec.stage, rec.outcome);
        f(&mut rec);
        let new_outcome = rec.outcome;
        if rec == self.devices[id] {
            return;
        }
        self.put(id, Some(rec));
        if old_stage == Some(self.current) && old_outcome.is_failure() && !new_outcome.is_failure()
        {
            self.acknowledged = self.acknowledged.saturating_sub(1);
        }
    }

    fn insert(&mut self, id: &DeviceId, stage: Option<usize>, now: UnixTime) {
        self.put(
            id,
            Some(DeviceRecord {
                outcome: DeviceOutcome::Pending,
                stage,
                forced: false,
                since: now,
                last_seen: now,
                offers: 0,
                rollbacks: 0,
                failures: 0,
                last_error: None,
            }),
        );
    }

    /// Starts an operation that can be undone: every change from here is
    /// journaled until [`Rollout::commit`] or [`Rollout::rollback`]. A server
    /// persists [`Rollout::changed_devices`] (and the progress, if it
    /// changed) and rolls back when that write fails, so memory and store
    /// always agree.
    pub fn begin(&mut self) {
        self.journal = Some(Journal {
            progress: self.progress(),
            devices: BTreeMap::new(),
        });
    }

    /// Devices whose records changed since [`Rollout::begin`].
    pub fn changed_devices(&self) -> Vec<DeviceId> {
        self.journal
            .as_ref()
            .map(|j| {
                j.devices
                    .iter()
                    .filter(|(id, before)| self.devices.get(*id) != before.as_ref())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the progress (state, stage, ...) changed since [`Rollout::begin`].
    pub fn progress_changed(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.progress != self.progress())
    }

    /// Keeps the changes since [`Rollout::begin`].
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes every change since [`Rollout::begin`].
    pub fn rollback(&mut self) {
        let Some(j) = self.journal.take() else {
            return;
        };
        for (id, before) in j.devices {
            self.put(&id, before);
        }
        self.state = j.progress.state;
        self.current = j.progress.current_stage;
        self.stage_started_at = j.progress.stage_started_at;
        self.acknowledged = j.progress.acknowledged;
    }

    /// A device of this rollout checked in at `now` (it may be running the
    /// target version already, in its trial): an installing device is not
    /// silent.
    pub fn seen(&mut self, device: &DeviceId, now: UnixTime) {
        if self
            .devices
            .get(device)
            .is_some_and(|r| r.outcome == DeviceOutcome::Installed && r.last_seen < now)
        {
            self.update(device, |r| r.last_seen = now);
        }
    }

    fn set_outcome(&mut self, id: &DeviceId, outcome: DeviceOutcome, now: UnixTime) {
        self.update(id, |r| {
            r.outcome = outcome;
            r.since = now;
        });
    }

    fn check_in(&self, device: &DeviceId, now: UnixTime, base: u64) -> UnixTime {
        let j = membership::jitter_secs(device, self.spec.jitter_secs);
        UnixTime(now.0.saturating_add(base).saturating_add(j))
    }

    fn not_yet(&self, device: &DeviceId, now: UnixTime, reason: NotYetReason) -> Decision {
        let check_in_at = match &reason {
            NotYetReason::OutsideWindow { next } => self.check_in(device, *next, 0),
            NotYetReason::PacingCap => self.check_in(device, now, self.spec.pacing_retry_secs),
            NotYetReason::NotInStage => {
                // Come back when the current stage may advance: at the end
                // of its soak, or soon once it has soaked.
                let soak_end = self
                    .stage_started_at
                    .0
                    .saturating_add(self.spec.stages[self.current].soak_secs);
                let wait = soak_end
                    .saturating_sub(now.0)
                    .max(STAGE_WAIT_RETRY_SECS.min(self.spec.check_in_secs));
                self.check_in(device, now, wait.min(self.spec.check_in_secs))
            }
            _ => self.check_in(device, now, self.spec.check_in_secs),
        };
        Decision::NotYet {
            reason,
            check_in_at,
        }
    }

    /// Decides whether `device` (checking in at `now`) gets the release, and
    /// records an offer when it does. Rules are in the crate docs.
    pub fn decide(&mut self, device: &DeviceView, now: UnixTime, global: GlobalLoad) -> Decision {
        if self.state == RolloutState::Cancelled {
            return Decision::None;
        }
        let id = &device.id;
        if !self.spec.selector.matches(device) {
            return Decision::None;
        }
        let stage = self.stage_for(device);
        let outcome = match self.devices.get(id) {
            Some(r) => r.outcome,
            None => {
                if device.version >= self.spec.target_version {
                    return Decision::None;
                }
                self.insert(id, stage, now);
                DeviceOutcome::Pending
            }
        };
        if matches!(outcome, DeviceOutcome::Pending | DeviceOutcome::Excluded) {
            // Attributes may have changed (e.g. the test flag): re-place it.
            self.update(id, |r| r.stage = stage);
        }
        let rec = &self.devices[id];
        let forced = rec.forced;
        let paused = matches!(self.state, RolloutState::Paused { .. });
        match outcome {
            DeviceOutcome::Excluded => return self.not_yet(id, now, NotYetReason::Excluded),
            DeviceOutcome::Installed => {
                self.seen(id, now);
                return self.not_yet(id, now, NotYetReason::AlreadyDone);
            }
            DeviceOutcome::Updated
            | DeviceOutcome::Failed
            | DeviceOutcome::RolledBack
            | DeviceOutcome::Silent => return self.not_yet(id, now, NotYetReason::AlreadyDone),
            DeviceOutcome::Offered => {
                // Re-send so the device can resume its download; it already holds a slot.
                if paused && !forced {
                    return self.not_yet(id, now, NotYetReason::Paused);
                }
                return Decision::Offer {
                    release: self.spec.release.clone(),
                };
            }
            DeviceOutcome::Pending => {}
        }
        if device.version >= self.spec.target_version {
            return Decision::None;
        }
        if !forced {
            if paused {
                return self.not_yet(id, now, NotYetReason::Paused);
            }
            if stage.is_none_or(|s| s > self.current) {
                return self.not_yet(id, now, NotYetReason::NotInStage);
            }
            if let Some(w) = &self.spec.window {
                let (tz, _) = window::resolve_or_utc(&device.time_zone);
                if !w.is_open(now, &tz) {
                    let next = w.next_start(now, &tz);
                    return self.not_yet(id, now, NotYetReason::OutsideWindow { next });
                }
            }
            let rollout_full =
                self.spec.max_concurrent > 0 && self.in_flight() >= self.spec.max_concurrent;
            let server_full = global.max > 0 && global.in_flight >= global.max;
            if rollout_full || server_full {
                return self.not_yet(id, now, NotYetReason::PacingCap);
            }
        }
        self.update(id, |r| {
            r.outcome = DeviceOutcome::Offered;
            r.since = now;
            r.offers += 1;
        });
        Decision::Offer {
            release: self.spec.release.clone(),
        }
    }

    /// Records a device's report, then runs the health gate.
    ///
    /// Reports of excluded devices are ignored; a report from a device without
    /// a record is [`Error::UnknownDevice`].
    pub fn report(
        &mut self,
        device: &DeviceId,
        report: Report,
        now: UnixTime,
    ) -> Result<Vec<Transition>, Error> {
        let Some(rec) = self.devices.get(device) else {
            return Err(Error::UnknownDevice(device.to_string()));
        };
        if rec.outcome == DeviceOutcome::Excluded {
            return Ok(Vec::new());
        }
        self.update(device, |r| {
            r.since = now;
            r.outcome = match report {
                Report::Installed => DeviceOutcome::Installed,
                Report::Updated => DeviceOutcome::Updated,
                Report::Failed { detail } => {
                    r.failures += 1;
                    r.last_error = Some(detail);
                    DeviceOutcome::Failed
                }
                Report::RolledBack => {
                    r.rollbacks += 1;
                    DeviceOutcome::RolledBack
                }
            };
        });
        Ok(self.gate().into_iter().collect())
    }

    /// Advances time: marks silent devices, withdraws expired offers, runs the
    /// health gate, and advances a stage whose soak is over (crate docs).
    pub fn tick(&mut self, now: UnixTime) -> Vec<Transition> {
        let mut out = Vec::new();
        // Only devices whose timer ran out: the index is ordered by deadline.
        let mut due = Vec::new();
        while let Some((at, id)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            due.push(id);
        }
        for id in due {
            // The index entry is gone; `put` would remove it again harmlessly.
            match self.devices.get(&id).map(|r| r.outcome) {
                Some(DeviceOutcome::Installed) => {
                    self.set_outcome(&id, DeviceOutcome::Silent, now);
                    out.push(Transition::Silent(id));
                }
                Some(DeviceOutcome::Offered) => {
                    self.set_outcome(&id, DeviceOutcome::Pending, now);
                    out.push(Transition::OfferExpired(id));
                }
                _ => {}
            }
        }
        if !matches!(
            self.state,
            RolloutState::Active | RolloutState::Paused { .. }
        ) {
            return out;
        }
        out.extend(self.gate());
        if self.state == RolloutState::Active && self.ready_to_advance(now) {
            self.enter_stage(self.current + 1, now);
            out.push(Transition::Advanced { to: self.current });
        } else if self.state == RolloutState::Active && self.done(now) {
            self.state = RolloutState::Completed;
            out.push(Transition::Completed);
        }
        out
    }

    /// The last stage soaked, healthy, with at least its sample finished,
    /// and no device anywhere in the rollout still to be offered, downloading
    /// or installing.
    fn done(&self, now: UnixTime) -> bool {
        let stage = &self.spec.stages[self.current];
        let busy = |o: DeviceOutcome| self.tallies.iter().map(|t| t.get(o)).sum::<u32>();
        self.current + 1 == self.spec.stages.len()
            && now.0 >= self.stage_started_at.0.saturating_add(stage.soak_secs)
            && self.tallies[self.current].finished() >= stage.min_sample.max(1)
            && busy(DeviceOutcome::Pending) == 0
            && busy(DeviceOutcome::Offered) == 0
            && busy(DeviceOutcome::Installed) == 0
            && !self.unhealthy()
    }

    fn ready_to_advance(&self, now: UnixTime) -> bool {
        let stage = &self.spec.stages[self.current];
        let t = &self.tallies[self.current];
        self.current + 1 < self.spec.stages.len()
            && now.0 >= self.stage_started_at.0.saturating_add(stage.soak_secs)
            && t.finished() >= stage.min_sample
            && t.get(DeviceOutcome::Installed) == 0
            && !self.unhealthy()
    }

    fn unhealthy(&self) -> bool {
        let stage = &self.spec.stages[self.current];
        let t = &self.tallies[self.current];
        let (finished, failed) = (
            u64::from(t.finished()),
            u64::from(t.failed().saturating_sub(self.acknowledged)),
        );
        finished >= u64::from(stage.min_sample)
            && failed * 1000 > u64::from(stage.max_failure_permille) * finished
    }

    /// The health gate: pauses an active rollout whose current stage fails too often.
    fn gate(&mut self) -> Option<Transition> {
        if self.state != RolloutState::Active || !self.unhealthy() {
            return None;
        }
        let stage = &self.spec.stages[self.current];
        let t = &self.tallies[self.current];
        let (finished, failed) = (t.finished(), t.failed().saturating_sub(self.acknowledged));
        let rate = u64::from(failed) * 1000 / u64::from(finished.max(1));
        let reason = format!(
            "stage {} ({}): {failed} of {finished} devices failed ({rate}‰ > {}‰)",
            self.current,
            stage.label(),
            stage.max_failure_permille
        );
        self.state = RolloutState::Paused {
            reason: reason.clone(),
        };
        Some(Transition::Paused { reason })
    }

    fn enter_stage(&mut self, stage: usize, now: UnixTime) {
        self.current = stage;
        self.stage_started_at = now;
        self.acknowledged = 0;
    }

    fn refuse(&self, action: &'static str) -> Error {
        Error::InvalidState {
            action,
            state: self.state.name(),
        }
    }

    /// Operator pause (only an active rollout). The reason is recorded as
    /// given ("paused by operator" when empty).
    pub fn pause(&mut self, reason: &str) -> Result<(), Error> {
        if self.state != RolloutState::Active {
            return Err(self.refuse("pause"));
        }
        let reason = if reason.trim().is_empty() {
            "paused by operator".to_owned()
        } else {
            reason.to_owned()
        };
        self.state = RolloutState::Paused { reason };
        Ok(())
    }

    /// Operator resume (only a paused rollout). The current stage's failures so
    /// far count as acknowledged: the gate judges only failures after this.
    pub fn resume(&mut self) -> Result<(), Error> {
        if !matches!(self.state, RolloutState::Paused { .. }) {
            return Err(self.refuse("resume"));
        }
        self.acknowledged = self.tallies[self.current].failed();
        self.state = RolloutState::Active;
        Ok(())
    }

    /// Operator cancel (active or paused); final.
    pub fn cancel(&mut self) -> Result<(), Error> {
        if !matches!(
            self.state,
            RolloutState::Active | RolloutState::Paused { .. }
        ) {
            return Err(self.refuse("cancel"));
        }
        self.state = RolloutState::Cancelled;
        Ok(())
    }

    /// Operator advance to the next stage regardless of soak and criteria (a
    /// paused rollout stays paused); past the last stage it completes.
    pub fn advance(&mut self, now: UnixTime) -> Result<(), Error> {
        if !matches!(
            self.state,
            RolloutState::Active | RolloutState::Paused { .. }
        ) {
            return Err(self.refuse("advance"));
        }
        if self.current + 1 < self.spec.stages.len() {
            self.enter_stage(self.current + 1, now);
        } else {
            self.state = RolloutState::Completed;
        }
        Ok(())
    }

    /// Puts every failed, rolled-back and silent device back to pending; returns how many.
    pub fn retry_failed(&mut self, now: UnixTime) -> usize {
        let ids: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, r)| r.outcome.is_failure())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.set_outcome(id, DeviceOutcome::Pending, now);
        }
        ids.len()
    }

    /// Excludes (cancels) one device: it is not offered again and its reports
    /// stop counting. Works for devices that never checked in.
    pub fn exclude(&mut self, device: &DeviceId, now: UnixTime) {
        if !self.devices.contains_key(device) {
            self.insert(device, None, now);
        }
        self.set_outcome(device, DeviceOutcome::Excluded, now);
    }

    /// Forces one device: at its next check-in it is offered regardless of
    /// stage, window, pacing caps and pause (not of the selector, the target
    /// version or a cancelled rollout). A failed or excluded device goes back to pending.
    pub fn force(&mut self, device: &DeviceId, now: UnixTime) {
        if !self.devices.contains_key(device) {
            self.insert(device, None, now);
        }
        self.update(device, |r| {
            r.forced = true;
            if r.outcome.is_failure() || r.outcome == DeviceOutcome::Excluded {
                r.outcome = DeviceOutcome::Pending;
                r.since = now;
            }
        });
    }

    /// Retries one failed, rolled-back, silent or excluded device (back to pending).
    pub fn retry(&mut self, device: &DeviceId, now: UnixTime) -> Result<(), Error> {
        let Some(rec) = self.devices.get(device) else {
            return Err(Error::UnknownDevice(device.to_string()));
        };
        if rec.outcome.is_failure() || rec.outcome == DeviceOutcome::Excluded {
            self.set_outcome(device, DeviceOutcome::Pending, now);
        }
        Ok(())
    }

    /// Counts by outcome for each stage (devices that checked in or were controlled).
    pub fn counts(&self) -> Vec<StageCounts> {
        self.spec
            .stages
            .iter()
            .zip(&self.tallies)
            .map(|(s, t)| StageCounts {
                stage: s.name.clone(),
                targeted: t.0.iter().sum(),
                pending: t.get(DeviceOutcome::Pending),
                offered: t.get(DeviceOutcome::Offered),
                installed: t.get(DeviceOutcome::Installed),
                updated: t.get(DeviceOutcome::Updated),
                failed: t.get(DeviceOutcome::Failed),
                rolled_back: t.get(DeviceOutcome::RolledBack),
                silent: t.get(DeviceOutcome::Silent),
                excluded: t.get(DeviceOutcome::Excluded),
            })
            .collect()
    }

    /// The rollout as the admin API's `RolloutInfo`.
    pub fn info(&self) -> pb::RolloutInfo {
        let (state, pause_reason) = match &self.state {
            RolloutState::Active => (pb::RolloutState::Active, String::new()),
            RolloutState::Paused { reason } => (pb::RolloutState::Paused, reason.clone()),
            RolloutState::Cancelled => (pb::RolloutState::Cancelled, String::new()),
            RolloutState::Completed => (pb::RolloutState::Completed, String::new()),
        };
        pb::RolloutInfo {
            rollout_id: self.spec.id.to_string(),
            release_id: self.spec.release.to_string(),
            selector: self.spec.selector.to_string(),
            stages: self.spec.stages.iter().map(Into::into).collect(),
            window: self.spec.window.as_ref().map(Into::into),
            state: state as i32,
            current_stage: self.current as u32,
            pause_reason,
            counts: self.counts().iter().map(Into::into).collect(),
            created_at: self.created_at.0,
            stage_started_at: self.stage_started_at.0,
            max_concurrent: self.spec.max_concurrent,
            // The server's notion (which devices are at the factory).
            factory: None,
        }
    }
}
