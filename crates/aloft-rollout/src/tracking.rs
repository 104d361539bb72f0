//! Fleet tracking: per-stage counts, fleet-by-version, stale and suspected-broken devices.

use std::collections::BTreeMap;

use aloft_protocol::{UnixTime, Version, pb};

use crate::selector::DeviceView;

/// Devices of one stage by outcome (mirrors `aloft.v1.StageCounts`; `silent`
/// has no field there and is added to `failed` on conversion).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Stage name.
    pub stage: String,
    /// Devices with a record in this stage (the sum of the rest).
    pub targeted: u32,
    /// Not yet offered.
    pub pending: u32,
    /// Offered, downloading.
    pub offered: u32,
    /// Installed, awaiting confirmation.
    pub installed: u32,
    /// Confirmed the new release.
    pub updated: u32,
    /// Reported an install error.
    pub failed: u32,
    /// Reverted to the old slot.
    pub rolled_back: u32,
    /// Silent after installing.
    pub silent: u32,
    /// Excluded by an operator.
    pub excluded: u32,
}

impl From<&StageCounts> for pb::StageCounts {
    fn from(c: &StageCounts) -> Self {
        Self {
            stage: c.stage.clone(),
            targeted: c.targeted,
            pending: c.pending,
            offered: c.offered,
            installed: c.installed,
            updated: c.updated,
            failed: c.failed + c.silent,
            rolled_back: c.rolled_back,
            excluded: c.excluded,
        }
    }
}

/// How many devices run each firmware version.
pub fn fleet_by_version<'a>(
    devices: impl IntoIterator<Item = &'a DeviceView>,
) -> BTreeMap<Version, u32> {
    let mut out = BTreeMap::new();
    for d in devices {
        *out.entry(d.version).or_insert(0) += 1;
    }
    out
}

/// What the server knows of a device's recent history, for classification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceHistory {
    /// When it last connected (`None`: never).
    pub last_seen: Option<UnixTime>,
    /// When it reported rollbacks (any order; those older than the policy's
    /// look-back are ignored).
    pub rollbacks: Vec<UnixTime>,
    /// When it took the update it is on or rebooting into (it reported the
    /// release installed or confirmed); `None` once it rolled back, failed,
    /// or when it never took one.
    pub update_taken_at: Option<UnixTime>,
}

/// Thresholds for [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingPolicy {
    /// Not seen for at least this many seconds = stale.
    pub stale_after_secs: u64,
    /// This many rollbacks or more within `rollback_window_secs` = suspected
    /// broken (0 disables the rule).
    pub broken_after_rollbacks: u32,
    /// Look-back for counting rollbacks.
    pub rollback_window_secs: u64,
    /// A device that took an update, was seen for less than this long after
    /// it, and has then been silent for at least this long is suspected
    /// broken (0 disables the rule).
    pub silent_after_secs: u64,
}

impl Default for TrackingPolicy {
    /// Stale after 24 h; suspected broken after 2 rollbacks in 7 days, or
    /// when silent for an hour within an hour of an update.
    fn default() -> Self {
        Self {
            stale_after_secs: 24 * 3600,
            broken_after_rollbacks: 2,
            rollback_window_secs: 7 * 24 * 3600,
            silent_after_secs: 3600,
        }
    }
}

/// Why a device is suspected broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenReason {
    /// It rolled back this many times within the look-back.
    RepeatedRollbacks(u32),
    /// It took an update and went silent soon after.
    SilentAfterUpdate,
}

impl BrokenReason {
    /// As the wire enum.
    pub fn to_pb(self) -> pb::BrokenReason {
        match self {
            Self::RepeatedRollbacks(_) => pb::BrokenReason::RepeatedRollbacks,
            Self::SilentAfterUpdate => pb::BrokenReason::SilentAfterUpdate,
        }
    }
}

/// A device's health classification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// Not seen for the stale period (or never seen).
    pub stale: bool,
    /// Rollbacks within the look-back.
    pub recent_rollbacks: u32,
    /// Suspected broken, and why.
    pub suspected_broken: Option<BrokenReason>,
}

/// Classifies a device at `now` under `policy`:
/// - stale when not seen for `stale_after_secs` (a device never seen is
///   stale);
/// - suspected broken when it took an update and went silent soon after:
///   seen for less than `silent_after_secs` after the update, then silent
///   for at least as long (an updated device that ran well for a while and
///   then dropped off is only stale);
/// - otherwise suspected broken with `broken_after_rollbacks` rollbacks or
///   more within `rollback_window_secs`.
///
/// A clock behind the recorded times never makes a device stale or silent.
pub fn classify(history: &DeviceHistory, now: UnixTime, policy: &TrackingPolicy) -> Classification {
    let since = |t: UnixTime| now.0.saturating_sub(t.0);
    let stale = history
        .last_seen
        .is_none_or(|seen| since(seen) >= policy.stale_after_secs);
    let recent_rollbacks = history
        .rollbacks
        .iter()
        .filter(|&&t| since(t) < policy.rollback_window_secs)
        .count() as u32;
    let silent_after_update = policy.silent_after_secs > 0
        && history.update_taken_at.is_some_and(|taken| {
            let seen = history.last_seen.map_or(taken, |s| s.max(taken));
            seen.0.saturating_sub(taken.0) < policy.silent_after_secs
                && since(seen) >= policy.silent_after_secs
        });
    let suspected_broken = if silent_after_update {
        Some(BrokenReason::SilentAfterUpdate)
    } else if policy.broken_after_rollbacks > 0 && recent_rollbacks >= policy.broken_after_rollbacks
    {
        Some(BrokenReason::RepeatedRollbacks(recent_rollbacks))
    } else {
        None
    };
    Classification {
        stale,
        recent_rollbacks,
        suspected_broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_protocol::DeviceId;

    #[test]
    fn stale_boundary() {
        let p = TrackingPolicy {
            stale_after_secs: 100,
            ..Default::default()
        };
        let h = |seen| DeviceHistory {
            last_seen: Some(UnixTime(seen)),
            ..Default::default()
        };
        assert!(!classify(&h(1000), UnixTime(1099), &p).stale);
        assert!(classify(&h(1000), UnixTime(1100), &p).stale);
        assert!(classify(&DeviceHistory::default(), UnixTime(0), &p).stale);
        // A clock behind last_seen is not stale.
        assert!(!classify(&h(2000), UnixTime(1000), &p).stale);
    }

    #[test]
    fn repeated_rollbacks_within_the_look_back() {
        let p = TrackingPolicy {
            broken_after_rollbacks: 2,
            rollback_window_secs: 1000,
            ..Default::default()
        };
        let mut h = DeviceHistory {
            last_seen: Some(UnixTime(5000)),
            rollbacks: vec![UnixTime(4001)],
            ..Default::default()
        };
        let at = |h: &DeviceHistory, now| classify(h, UnixTime(now), &p);
        assert_eq!(at(&h, 5000).suspected_broken, None);
        assert_eq!(at(&h, 5000).recent_rollbacks, 1);
        h.rollbacks.push(UnixTime(4500));
        assert_eq!(
            at(&h, 4999).suspected_broken,
            Some(BrokenReason::RepeatedRollbacks(2))
        );
        // The first rollback leaves the look-back at 5001.
        assert_eq!(at(&h, 5000).recent_rollbacks, 2);
        assert_eq!(at(&h, 5001).recent_rollbacks, 1);
        assert_eq!(at(&h, 5001).suspected_broken, None);
        // The rule can be turned off.
        let off = TrackingPolicy {
            broken_after_rollbacks: 0,
            ..p
        };
        assert_eq!(classify(&h, UnixTime(4999), &off).suspected_broken, None);
    }

    #[test]
    fn silent_soon_after_an_update() {
        let p = TrackingPolicy {
            silent_after_secs: 100,
            broken_after_rollbacks: 1,
            ..Default::default()
        };
        let h = |taken, seen| DeviceHistory {
            last_seen: Some(UnixTime(seen)),
            rollbacks: vec![UnixTime(1)],
            update_taken_at: Some(UnixTime(taken)),
        };
        let broken = |h: &DeviceHistory, now| classify(h, UnixTime(now), &p).suspected_broken;
        let silent = Some(BrokenReason::SilentAfterUpdate);
        // Installed at 1000, never heard from again: silent from 1100 on
        // (and silence outranks the rollback).
        assert_eq!(
            broken(&h(1000, 1000), 1099),
            Some(BrokenReason::RepeatedRollbacks(1))
        );
        assert_eq!(broken(&h(1000, 1000), 1100), silent);
        // Seen for 99 s after the update (it confirmed), then silent.
        assert_eq!(broken(&h(1000, 1099), 1199), silent);
        // Seen for the full period after the update: only stale later.
        assert_ne!(broken(&h(1000, 1100), 100_000), silent);
        // A clock behind the update time is not silence.
        assert_ne!(broken(&h(1000, 1000), 500), silent);
        // No update taken, no silence rule.
        let none = DeviceHistory {
            last_seen: Some(UnixTime(1000)),
            ..Default::default()
        };
        assert_eq!(broken(&none, 100_000), None);
        // The rule can be turned off.
        let off = TrackingPolicy {
            silent_after_secs: 0,
            broken_after_rollbacks: 0,
            ..p
        };
        assert_eq!(
            classify(&h(1000, 1000), UnixTime(5000), &off).suspected_broken,
            None
        );
    }

    #[test]
    fn versions_summary_and_proto_counts() {
        let d = |i: u32, v: Version| DeviceView {
            id: DeviceId::new(&format!("d{i}")).unwrap(),
            product: "p".into(),
            hardware: "h".into(),
            version: v,
            region: String::new(),
            time_zone: String::new(),
            tags: vec![],
            test: false,
        };
        let fleet = [
            d(1, Version::new(1, 0, 0)),
            d(2, Version::new(1, 10, 0)),
            d(3, Version::new(1, 0, 0)),
        ];
        let by = fleet_by_version(&fleet);
        assert_eq!(
            by.into_iter().collect::<Vec<_>>(),
            [(Version::new(1, 0, 0), 2), (Version::new(1, 10, 0), 1)]
        );
        let c = StageCounts {
            stage: "s".into(),
            failed: 2,
            silent: 3,
            ..Default::default()
        };
        assert_eq!(pb::StageCounts::from(&c).failed, 5);
    }
}
