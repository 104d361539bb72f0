//! Deterministic, evenly spread stage membership.
//!
//! Rules:
//! - A device's **bucket** in a rollout is the first 8 bytes (big-endian) of
//!   `SHA-256(rollout id || 0x00 || device id)`, modulo 10 000. It never
//!   changes, so membership is stable across restarts and replicas, and a
//!   different rollout id reshuffles the fleet (the same devices do not always
//!   go first).
//! - Stage percentages are cumulative. A device belongs to the first
//!   percentage stage `k` with `bucket < percent_k * 100`; it is then eligible
//!   in stage `k` and every later stage (membership is monotonic).
//! - When the first stage is `test_devices_only`, test devices belong to it
//!   (whatever their bucket) and percentage stages draw from the other devices.
//!   Without such a stage, test devices are bucketed like any other.
//! - A device whose bucket is not below the last stage's percentage is in no
//!   stage (a rollout that stops at 50% never reaches the other half).

use aloft_protocol::DeviceId;
use sha2::{Digest as _, Sha256};

use crate::RolloutId;

/// Number of buckets: percentages resolve to 1/100 of a percent.
pub const BUCKETS: u16 = 10_000;

/// The device's bucket in `0..BUCKETS` for this rollout.
pub fn bucket(rollout: &RolloutId, device: &DeviceId) -> u16 {
    let mut h = Sha256::new();
    h.update(rollout.as_str().as_bytes());
    h.update([0u8]);
    h.update(device.as_str().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
}

/// What membership needs to know of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageShare {
    /// Cumulative percentage (0-100) of the target devices; ignored for test stages.
    pub percent: u8,
    /// The stage holds only test devices.
    pub test_devices_only: bool,
}

/// The index of the first stage a device belongs to, if any (rules in the module docs).
///
/// `stages` must satisfy [`crate::rollout::RolloutSpec::new`]'s rules (a test
/// stage only first; percentages non-decreasing).
pub fn stage_of(stages: &[StageShare], bucket: u16, test_device: bool) -> Option<usize> {
    let has_test_stage = stages.first().is_some_and(|s| s.test_devices_only);
    if test_device && has_test_stage {
        return Some(0);
    }
    stages
        .iter()
        .position(|s| !s.test_devices_only && u32::from(bucket) < u32::from(s.percent) * 100)
}

/// A deterministic delay in `0..=max_secs` for this device, to spread
/// notifications and check-ins of a large fleet. Same device, same delay.
pub fn jitter_secs(device: &DeviceId, max_secs: u64) -> u64 {
    if max_secs == 0 {
        return 0;
    }
    let digest = Sha256::new()
        .chain_update(b"aloft-jitter\x00")
        .chain_update(device.as_str().as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % (max_secs.saturating_add(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(percents: &[u8], test_first: bool) -> Vec<StageShare> {
        let mut v = Vec::new();
        if test_first {
            v.push(StageShare {
                percent: 0,
                test_devices_only: true,
            });
        }
        v.extend(percents.iter().map(|&percent| StageShare {
            percent,
            test_devices_only: false,
        }));
        v
    }

    fn ids(n: usize) -> Vec<DeviceId> {
        (0..n)
            .map(|i| DeviceId::new(&format!("dev-{i:06}")).unwrap())
            .collect()
    }

    /// Share of devices per stage is within `tol` (absolute, in percent) of
    /// the configured cumulative percentages; membership is monotonic.
    fn check_spread(n: usize, tol: f64) {
        let rollout = RolloutId::new("r-2024-spread").unwrap();
        let st = stages(&[1, 10, 50, 100], false);
        let mut cumulative = [0usize; 4];
        for id in ids(n) {
            let b = bucket(&rollout, &id);
            assert!(b < BUCKETS);
            let k = stage_of(&st, b, false).unwrap();
            for (j, c) in cumulative.iter_mut().enumerate() {
                // monotonic: once eligible, eligible in every later stage
                if j >= k {
                    *c += 1;
                }
            }
        }
        for (c, pct) in cumulative.iter().zip([1.0, 10.0, 50.0, 100.0]) {
            let got = *c as f64 * 100.0 / n as f64;
            assert!(
                (got - pct).abs() <= tol,
                "n={n}: stage {pct}% got {got:.3}%"
            );
        }
    }

    #[test]
    fn spread_10k() {
        check_spread(10_000, 0.6);
    }

    #[test]
    fn spread_100k() {
        check_spread(100_000, 0.3);
    }

    #[test]
    fn bucket_is_stable_and_rollout_specific() {
        let a = RolloutId::new("a").unwrap();
        let b = RolloutId::new("b").unwrap();
        let id = DeviceId::new("dev-1").unwrap();
        assert_eq!(bucket(&a, &id), bucket(&a, &id));
        // Known answer: pins the hash layout (rollout id, 0x00, device id).
        let digest = Sha256::digest(b"a\x00dev-1");
        let want = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(u64::from(bucket(&a, &id)), want);
        // Reshuffled per rollout: across 1000 devices, the buckets differ.
        let same = ids(1000)
            .iter()
            .filter(|d| bucket(&a, d) == bucket(&b, d))
            .count();
        assert!(same < 10, "{same}");
    }

    #[test]
    fn test_devices_form_the_first_stage() {
        let st = stages(&[10, 100], true);
        assert_eq!(stage_of(&st, 9_999, true), Some(0));
        assert_eq!(stage_of(&st, 0, false), Some(1));
        assert_eq!(stage_of(&st, 999, false), Some(1));
        assert_eq!(stage_of(&st, 1_000, false), Some(2));
        // Without a test stage, test devices are bucketed normally.
        let st = stages(&[10, 100], false);
        assert_eq!(stage_of(&st, 5_000, true), Some(1));
    }

    #[test]
    fn bucket_boundaries() {
        let st = stages(&[1, 50], false);
        assert_eq!(stage_of(&st, 99, false), Some(0));
        assert_eq!(stage_of(&st, 100, false), Some(1));
        assert_eq!(stage_of(&st, 4_999, false), Some(1));
        assert_eq!(stage_of(&st, 5_000, false), None);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let all = ids(2000);
        let js: Vec<u64> = all.iter().map(|d| jitter_secs(d, 600)).collect();
        assert!(js.iter().all(|&j| j <= 600));
        assert_eq!(
            js,
            all.iter().map(|d| jitter_secs(d, 600)).collect::<Vec<_>>()
        );
        // spread: every 100 s band is used
        for band in 0..6 {
            assert!(js.iter().any(|&j| j / 100 == band), "band {band}");
        }
        assert_eq!(jitter_secs(&all[0], 0), 0);
    }
}
