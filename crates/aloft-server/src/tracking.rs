//! Device status tracking: last-seen, reported state, status with a
//! monotonic `status_seq`, and the event history (store + live broadcast).
//!
//! Status rules (per release, ranked OFFERED < INSTALLED < terminal, where
//! terminal is UPDATED, ROLLED_BACK or FAILED):
//! - a report about the release the status refers to applies only if it
//!   ranks strictly higher, so a late or replayed report never moves status
//!   back, and terminal states are final;
//! - a report about another release applies only when the device has no
//!   release in flight (REGISTERED/IDLE); otherwise it is kept as an event;
//! - success (UPDATED) comes only from a CONFIRMED report;
//! - each report id is processed once; re-sends are acknowledged again.

use crate::sync::Recover as _;
use std::sync::Arc;

use aloft_protocol::{DeviceId, ReleaseId, UnixTime, pb};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::rollouts::RolloutEvent;
use crate::store::{DeviceRecord, ReportId, Store, StoreError};

use pb::DeviceStatus as S;

fn rank(status: i32) -> u8 {
    match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Unspecified | S::Registered | S::Idle => 0,
        S::Offered => 1,
        S::Installed => 2,
        S::Updated | S::Failed | S::RolledBack => 3,
        S::Revoked => 4,
    }
}

/// What an event says happened. On the wire (`pb::Event.kind`) it is
/// [`EventKind::as_str`]: stable snake_case words watchers filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A device was registered.
    Registered,
    /// A device's attributes were changed.
    Updated,
    /// A device was revoked.
    Revoked,
    /// A device connected (first time, or with news; routine check-ins are live-only).
    Connected,
    /// A device reported a new state in a heartbeat.
    State,
    /// A device was offered a release.
    Offered,
    /// A device installed a release and is rebooting into it.
    Installed,
    /// A device runs and confirmed a release.
    Confirmed,
    /// A device rolled back from a release.
    RolledBack,
    /// A device's install failed.
    InstallFailed,
    /// A TrustRoot was installed.
    TrustRoot,
    /// The TrustRoot successors a device lacked were sent (live-only).
    TrustRootSent,
    /// A device refused a TrustRoot chain.
    TrustRootRefused,
    /// An operator token was created.
    TokenCreated,
    /// An operator token was revoked.
    TokenRevoked,
    /// A release was uploaded.
    ReleaseUploaded,
    /// A rollout was created.
    RolloutCreated,
    /// An operator paused, resumed or cancelled a rollout.
    RolloutState,
    /// The health gate paused a rollout.
    RolloutPaused,
    /// A rollout's stage advanced.
    StageAdvanced,
    /// A rollout completed.
    RolloutCompleted,
    /// An operator retried a rollout's failed devices.
    RetryFailed,
    /// A device installed and then went silent.
    DeviceSilent,
    /// A device's offer expired.
    OfferExpired,
    /// An operator excluded a device from a rollout.
    DeviceExcluded,
    /// An operator forced a device in a rollout.
    DeviceForced,
    /// An operator retried a device in a rollout.
    DeviceRetried,
}

impl EventKind {
    /// Every kind (webhook filters are checked against it).
    pub const ALL: [Self; 27] = [
        Self::Registered,
        Self::Updated,
        Self::Revoked,
        Self::Connected,
        Self::State,
        Self::Offered,
        Self::Installed,
        Self::Confirmed,
        Self::RolledBack,
        Self::InstallFailed,
        Self::TrustRoot,
        Self::TrustRootSent,
        Self::TrustRootRefused,
        Self::TokenCreated,
        Self::TokenRevoked,
        Self::ReleaseUploaded,
        Self::RolloutCreated,
        Self::RolloutState,
        Self::RolloutPaused,
        Self::StageAdvanced,
        Self::RolloutCompleted,
        Self::RetryFailed,
        Self::DeviceSilent,
        Self::OfferExpired,
        Self::DeviceExcluded,
        Self::DeviceForced,
        Self::DeviceRetried,
    ];

    /// The wire word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Updated => "updated",
            Self::Revoked => "revoked",
            Self::Connected => "connected",
            Self::State => "state",
            Self::Offered => "offered",
            Self::Installed => "installed",
            Self::Confirmed => "confirmed",
            Self::RolledBack => "rolled_back",
            Self::InstallFailed => "install_failed",
            Self::TrustRoot => "trust_root",
            Self::TrustRootSent => "trust_root_sent",
            Self::TrustRootRefused => "trust_root_refused",
            Self::TokenCreated => "token_created",
            Self::TokenRevoked => "token_revoked",
            Self::ReleaseUploaded => "release_uploaded",
            Self::RolloutCreated => "rollout_created",
            Self::RolloutState => "rollout_state",
            Self::RolloutPaused => "rollout_paused",
            Self::StageAdvanced => "stage_advanced",
            Self::RolloutCompleted => "rollout_completed",
            Self::RetryFailed => "retry_failed",
            Self::DeviceSilent => "device_silent",
            Self::OfferExpired => "offer_expired",
            Self::DeviceExcluded => "device_excluded",
            Self::DeviceForced => "device_forced",
            Self::DeviceRetried => "device_retried",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded now and changed the device's status.
    Applied,
    /// Recorded now as an event only (stale or not applicable).
    Recorded,
    /// Already recorded earlier; acknowledge again.
    Duplicate,
}

/// Applies device state and reports to the store and publishes events.
///
/// A stored event reaches live watchers only once it is durable: it waits in
/// `pending` until the next flush that covers it ([`Tracker::take_pending`]
/// before the flush, [`Tracker::publish_durable`] after), so a watcher never
/// sees an event that a crash then erases. Live-only events
/// ([`Tracker::publish`], `seq` 0) go out at once.
#[derive(Clone)]
pub struct Tracker {
    store: Arc<dyn Store>,
    events: broadcast::Sender<pb::Event>,
    clock: Arc<dyn Clock>,
    pending: Arc<std::sync::Mutex<Vec<pb::Event>>>,
}

impl Tracker {
    /// Over `store`, with a live event channel of `capacity`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            events: broadcast::channel(capacity).0,
            clock,
            pending: Arc::default(),
        }
    }

    /// The stored events a flush starting now will make durable.
    pub fn take_pending(&self) -> Vec<pb::Event> {
        std::mem::take(&mut *self.pending.lock().recover())
    }

    /// Publishes events a completed flush made durable (see
    /// [`Tracker::take_pending`]).
    pub fn publish_durable(&self, events: Vec<pb::Event>) {
        for e in events {
            let _ = self.events.send(e);
        }
    }

    /// Puts back events whose flush failed: a later flush publishes them.
    pub fn restore_pending(&self, mut events: Vec<pb::Event>) {
        let mut pending = self.pending.lock().recover();
        events.append(&mut pending);
        *pending = events;
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// Stores and publishes a rollout's event. The caller flushes.
    pub fn rollout_event(&self, e: &RolloutEvent) -> Result<(), StoreError> {
        self.event(&e.device, &e.release, &e.rollout, e.kind, e.detail.clone())
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::Event> {
        self.events.subscribe()
    }

    /// Stores an event; it is published to watchers after the caller's flush.
    pub fn event(
        &self,
        device: &str,
        release: &str,
        rollout: &str,
        kind: EventKind,
        detail: String,
    ) -> Result<(), StoreError> {
        let mut event = pb::Event {
            seq: 0,
            time: self.now(),
            device_id: device.to_owned(),
            rollout_id: rollout.to_owned(),
            release_id: release.to_owned(),
            kind: kind.as_str().to_owned(),
            detail,
        };
        self.store.append_event(&mut event)?;
        crate::audit::note_event(&event);
        self.pending.lock().recover().push(event);
        Ok(())
    }

    /// Records a device's self-reported state and last-seen time. Returns
    /// whether this is news (its first connection, or a state: firmware
    /// version, security version, slot, TrustRoot, server-clock
    /// disagreement, other than the stored one) and the record as written.
    pub fn observe(
        &self,
        id: &DeviceId,
        state: Option<&pb::DeviceState>,
    ) -> Result<(bool, Option<pb::DeviceInfo>), StoreError> {
        let seen = self.now();
        let mut news = false;
        let record = self.store.update_device(id, &mut |d| {
            news = d.last_seen == 0;
            d.last_seen = seen;
            if let Some(s) = state {
                news |= d.firmware_version != s.firmware_version
                    || d.security_version != s.security_version
                    || d.active_slot != s.active_slot;
                news |= d.trust_root_version != s.trust_root_version
                    || d.trust_root_expired != s.trust_root_expired
                    || d.server_clock_ahead_secs != s.server_clock_ahead_secs;
                d.firmware_version.clone_from(&s.firmware_version);
                d.security_version = s.security_version;
                d.active_slot = s.active_slot;
                d.trust_root_version = s.trust_root_version;
                d.trust_root_expires_at = s.trust_root_expires_at;
                d.trust_root_expired = s.trust_root_expired;
                d.server_clock_ahead_secs = s.server_clock_ahead_secs;
            }
            if rank(d.status) == 0 && d.status != S::Idle as i32 {
                set_status(d, S::Idle, seen);
                news = true;
            }
            true
        })?;
        Ok((news, record))
    }

    /// Publishes an event to live watchers without storing it (routine
    /// check-ins: storing one per check-in would grow the event log by the
    /// fleet size every check-in interval).
    pub fn publish(&self, device: &str, kind: EventKind, detail: String) {
        let _ = self.events.send(pb::Event {
            seq: 0,
            time: self.now(),
            device_id: device.to_owned(),
            kind: kind.as_str().to_owned(),
            detail,
            ..Default::default()
        });
    }

    /// Marks `release` offered to the device: always for a `fresh` offer (a
    /// retry after a failure starts over), otherwise unless its status for
    /// that release is OFFERED, INSTALLED or UPDATED already.
    pub fn offered(
        &self,
        id: &DeviceId,
        release: &ReleaseId,
        fresh: bool,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.store.update_device(id, &mut |d| {
            // A re-offer (the device reconnected while offered or installing)
            // keeps its progress. A FAILED or ROLLED_BACK status for the same
            // release is stale whenever the engine offers again (it does only
            // after a retry), even when another session of the device took
            // the fresh decision and has not written it yet: two sessions of
            // one device (the newest wins) may decide concurrently, and both
            // must end with OFFERED.
            let in_progress = matches!(
                S::try_from(d.status),
                Ok(S::Offered | S::Installed | S::Updated)
            );
            if !fresh && d.release_id == release.as_str() && in_progress {
                return false;
            }
            d.release_id = release.as_str().to_owned();
            set_status(d, S::Offered, now);
            true
        })?;
        Ok(())
    }

    /// Applies one report (see the module docs) and records its event with
    /// `rollout`'s id. The caller flushes, then acknowledges.
    pub fn report(
        &self,
        id: &DeviceId,
        report: &pb::Report,
        rollout: &str,
    ) -> Result<ReportOutcome, ReportError> {
        let report_id = ReportId::new(&report.report_id).ok_or(ReportError::BadId)?;
        let kind = pb::ReportKind::try_from(report.kind).unwrap_or(pb::ReportKind::Unspecified);
        if report.detail.len() > 1024 {
            return Err(ReportError::DetailTooLong);
        }
        let (target, name) = match kind {
            pb::ReportKind::Installed => (S::Installed, EventKind::Installed),
            pb::ReportKind::Confirmed => (S::Updated, EventKind::Confirmed),
            pb::ReportKind::RolledBack => (S::RolledBack, EventKind::RolledBack),
            pb::ReportKind::InstallFailed => (S::Failed, EventKind::InstallFailed),
            pb::ReportKind::TrustRootRefused => {
                // About the device's trust, not a release: an event only.
                if self.store.report_seen(id, &report_id)? {
                    return Ok(ReportOutcome::Duplicate);
                }
                tracing::warn!(device = %id, detail = %report.detail, "device refused the TrustRoot chain");
                self.event(
                    id.as_str(),
                    "",
                    "",
                    EventKind::TrustRootRefused,
                    report.detail.clone(),
                )?;
                self.store.mark_report(id, &report_id)?;
                return Ok(ReportOutcome::Recorded);
            }
            pb::ReportKind::Unspecified => return Err(ReportError::BadKind),
        };
        let release = ReleaseId::new(&report.release_id).map_err(|_| ReportError::BadRelease)?;
        if self.store.report_seen(id, &report_id)? {
            return Ok(ReportOutcome::Duplicate);
        }
        let now = self.now();
        let mut applied = false;
        self.store.update_device(id, &mut |d| {
            applied = false;
            if d.revoked {
                return false;
            }
            let same = d.release_id == release.as_str();
            let applies = if same {
                rank(target as i32) > rank(d.status)
            } else {
                rank(d.status) == 0
            };
            if applies {
                d.release_id = release.as_str().to_owned();
                set_status(d, target, now);
                applied = true;
            }
            // Every distinct rollback counts towards "suspected broken",
            // even one that no longer moves the status.
            let rolled_back = kind == pb::ReportKind::RolledBack;
            if rolled_back {
                record_rollback(d, now);
            }
            applies || rolled_back
        })?;
        let detail = if applied {
            report.detail.clone()
        } else {
            format!("stale report, status unchanged: {}", report.detail)
        };
        self.event(id.as_str(), release.as_str(), rollout, name, detail)?;
        self.store.mark_report(id, &report_id)?;
        Ok(if applied {
            ReportOutcome::Applied
        } else {
            ReportOutcome::Recorded
        })
    }
}

/// Rollback times kept per device (enough for any sensible threshold).
pub const KEPT_ROLLBACKS: usize = 8;

/// Moves `d` to `status` at `now`.
pub(crate) fn set_status(d: &mut DeviceRecord, status: S, now: u64) {
    d.status = status as i32;
    d.status_seq += 1;
    d.status_changed_at = now;
}

/// Appends a rollback at `now`, keeping the latest [`KEPT_ROLLBACKS`].
fn record_rollback(d: &mut DeviceRecord, now: u64) {
    d.rollback_times.push(now);
    let excess = d.rollback_times.len().saturating_sub(KEPT_ROLLBACKS);
    d.rollback_times.drain(..excess);
}

/// The device's history as the tracking policy sees it.
pub fn history(d: &DeviceRecord) -> aloft_rollout::tracking::DeviceHistory {
    let took_update = matches!(S::try_from(d.status), Ok(S::Installed | S::Updated));
    aloft_rollout::tracking::DeviceHistory {
        last_seen: (d.last_seen != 0).then_some(UnixTime(d.last_seen)),
        rollbacks: d.rollback_times.iter().map(|&t| UnixTime(t)).collect(),
        update_taken_at: took_update.then_some(UnixTime(d.status_changed_at)),
    }
}

/// A report that cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Empty or over-long report id.
    #[error("report id must be 1 to 64 bytes")]
    BadId,
    /// Unspecified or unknown kind.
    #[error("report kind is unspecified or unknown")]
    BadKind,
    /// Invalid release id.
    #[error("report names an invalid release id")]
    BadRelease,
    /// Detail over 1 KiB.
    #[error("report detail exceeds 1024 bytes")]
    DetailTooLong,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReportError> for tonic::Status {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => e.into(),
            e => tonic::Status::invalid_argument(format!("report refused: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::SledStore;

    /// The flake of `exclude_force_retry_and_their_refusals`: after a retry,
    /// the device's older session took the fresh decision and the newer one
    /// re-offered (not fresh) and wrote first; the status stayed FAILED.
    #[test]
    fn a_re_offer_after_a_failure_moves_the_status_to_offered() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let tracker = Tracker::new(store.clone(), 16, Arc::new(SystemClock));
        let id = DeviceId::new("d1").unwrap();
        let release = ReleaseId::new("r1").unwrap();
        store
            .insert_device(&DeviceRecord {
                device_id: "d1".into(),
                release_id: "r1".into(),
                status: S::Failed as i32,
                ..Default::default()
            })
            .unwrap();
        tracker.offered(&id, &release, false).unwrap();
        let status = |store: &Arc<dyn Store>| store.device(&id).unwrap().unwrap().status;
        assert_eq!(status(&store), S::Offered as i32);
        // Progress past the offer is kept by a re-offer.
        store
            .update_device(&id, &mut |d| {
                d.status = S::Installed as i32;
                true
            })
            .unwrap();
        tracker.offered(&id, &release, false).unwrap();
        assert_eq!(status(&store), S::Installed as i32);
        // A fresh offer always starts over.
        tracker.offered(&id, &release, true).unwrap();
        assert_eq!(status(&store), S::Offered as i32);
    }
}
