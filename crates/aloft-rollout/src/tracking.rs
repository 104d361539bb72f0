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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceHistory {
    /// When it last connected (`None`: never).
    pub last_seen: Option<UnixTime>,
    /// Rollbacks reported within the server's look-back period.
    pub recent_rollbacks: u32,
    /// It installed an update and then went silent (see `silent_after_secs`).
    pub silent_after_update: bool,
}

/// Thresholds for [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingPolicy {
    /// Not seen for at least this many seconds = stale.
    pub stale_after_secs: u64,
    /// This many recent rollbacks or more = suspected broken.
    pub broken_after_rollbacks: u32,
}

impl Default for TrackingPolicy {
    /// Stale after 24 h; suspected broken after 2 rollbacks.
    fn default() -> Self {
        Self {
            stale_after_secs: 24 * 3600,
            broken_after_rollbacks: 2,
        }
    }
}

/// Why a device is suspected broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenReason {
    /// It rolled back this many times recently.
    RepeatedRollbacks(u32),
    /// It installed an update and then went silent.
    SilentAfterUpdate,
}

/// A device's health classification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// Not seen for the stale period (or never seen).
    pub stale: bool,
    /// Suspected broken, and why.
    pub suspected_broken: Option<BrokenReason>,
}

/// Classifies a device at `now`: stale when not seen for
/// `stale_after_secs` (a device never seen is stale); suspected broken when
/// silent after an update or with `broken_after_rollbacks` recent rollbacks.
pub fn classify(history: &DeviceHistory, now: UnixTime, policy: &TrackingPolicy) -> Classification {
    let stale = history
        .last_seen
        .is_none_or(|seen| now.0.saturating_sub(seen.0) >= policy.stale_after_secs);
    let suspected_broken = if history.silent_after_update {
        Some(BrokenReason::SilentAfterUpdate)
    } else if policy.broken_after_rollbacks > 0
        && history.recent_rollbacks >= policy.broken_after_rollbacks
    {
        Some(BrokenReason::RepeatedRollbacks(history.recent_rollbacks))
    } else {
        None
    };
    Classification {
        stale,
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
            broken_after_rollbacks: 2,
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
    fn suspected_broken() {
        let p = TrackingPolicy::default();
        let mut h = DeviceHistory {
            last_seen: Some(UnixTime(10)),
            ..Default::default()
        };
        assert_eq!(classify(&h, UnixTime(10), &p).suspected_broken, None);
        h.recent_rollbacks = 1;
        assert_eq!(classify(&h, UnixTime(10), &p).suspected_broken, None);
        h.recent_rollbacks = 2;
        assert_eq!(
            classify(&h, UnixTime(10), &p).suspected_broken,
            Some(BrokenReason::RepeatedRollbacks(2))
        );
        h.silent_after_update = true;
        assert_eq!(
            classify(&h, UnixTime(10), &p).suspected_broken,
            Some(BrokenReason::SilentAfterUpdate)
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
