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
#[derive(Clone)]
pub struct Tracker {
    store: Arc<dyn Store>,
    events: broadcast::Sender<pb::Event>,
    clock: Arc<dyn Clock>,
}

impl Tracker {
    /// Over `store`, with a live event channel of `capacity`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            events: broadcast::channel(capacity).0,
            clock,
        }
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

    /// Stores an event and publishes it. The caller flushes.
    pub fn event(
        &self,
        device: &str,
        release: &str,
        rollout: &str,
        kind: &str,
        detail: String,
    ) -> Result<(), StoreError> {
        let mut event = pb::Event {
            seq: 0,
            time: self.now(),
            device_id: device.to_owned(),
            rollout_id: rollout.to_owned(),
            release_id: release.to_owned(),
            kind: kind.to_owned(),
            detail,
        };
        self.store.append_event(&mut event)?;
        let _ = self.events.send(event);
        Ok(())
    }

    /// Records a device's self-reported state and last-seen time. Returns
    /// whether this is news: its first connection, or a state (firmware
    /// version, security version, slot) other than the stored one.
    pub fn observe(
        &self,
        id: &DeviceId,
        state: Option<&pb::DeviceState>,
    ) -> Result<bool, StoreError> {
        let seen = self.now();
        let mut news = false;
        self.store.update_device(id, &mut |d| {
            news = d.last_seen == 0;
            d.last_seen = seen;
            if let Some(s) = state {
                news |= d.firmware_version != s.firmware_version
                    || d.security_version != s.security_version
                    || d.active_slot != s.active_slot;
                d.firmware_version.clone_from(&s.firmware_version);
                d.security_version = s.security_version;
                d.active_slot = s.active_slot;
            }
            if rank(d.status) == 0 && d.status != S::Idle as i32 {
                set_status(d, S::Idle, seen);
                news = true;
            }
            true
        })?;
        Ok(news)
    }

    /// Publishes an event to live watchers without storing it (routine
    /// check-ins: storing one per check-in would grow the event log by the
    /// fleet size every check-in interval).
    pub fn publish(&self, device: &str, kind: &str, detail: String) {
        let _ = self.events.send(pb::Event {
            seq: 0,
            time: self.now(),
            device_id: device.to_owned(),
            kind: kind.to_owned(),
            detail,
            ..Default::default()
        });
    }

    /// Marks `release` offered to the device: always for a `fresh` offer (a
    /// retry after a failure starts over), otherwise unless its status for
    /// that release is already further along.
    pub fn offered(
        &self,
        id: &DeviceId,
        release: &ReleaseId,
        fresh: bool,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.store.update_device(id, &mut |d| {
            if !fresh
                && d.release_id == release.as_str()
                && rank(d.status) >= rank(S::Offered as i32)
            {
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
        let (target, name) = match kind {
            pb::ReportKind::Installed => (S::Installed, "installed"),
            pb::ReportKind::Confirmed => (S::Updated, "confirmed"),
            pb::ReportKind::RolledBack => (S::RolledBack, "rolled_back"),
            pb::ReportKind::InstallFailed => (S::Failed, "install_failed"),
            pb::ReportKind::Unspecified => return Err(ReportError::BadKind),
        };
        let release = ReleaseId::new(&report.release_id).map_err(|_| ReportError::BadRelease)?;
        if report.detail.len() > 1024 {
            return Err(ReportError::DetailTooLong);
        }
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
