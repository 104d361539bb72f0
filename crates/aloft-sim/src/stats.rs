//! Per-device records and the fleet summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// What one virtual device did (updated by its task and its agent's events).
#[derive(Clone, Debug, Default)]
pub struct DeviceStats {
    /// Device id.
    pub id: String,
    /// Fault plan: one power cut during the first download.
    pub planned_cut: bool,
    /// Fault plan: its firmware never confirms a trial image.
    pub never_confirm: bool,
    /// Version running now.
    pub version: String,
    /// Whether it is confirmed.
    pub confirmed: bool,
    /// Whether a report was acknowledged since the last boot.
    pub acked_since_boot: bool,
    /// Boots so far.
    pub boots: u32,
    /// Sessions authenticated.
    pub sessions: u32,
    /// Failed sessions (retried with backoff).
    pub retries: u32,
    /// Installs completed.
    pub installs: u32,
    /// Rollbacks (trial reverted).
    pub rollbacks: u32,
    /// Whether the last rollback's report was acknowledged.
    pub rollback_acked: bool,
    /// Offers refused.
    pub refusals: u32,
    /// Power cuts injected.
    pub power_cuts: u32,
    /// Resume points of downloads that did not start at chunk 0.
    pub resumed_from: Vec<u32>,
    /// Downloads that restarted from 0 after a power cut.
    pub restarts_from_zero: u32,
    /// Time to connect (TCP + TLS + HTTP/2), per session.
    pub connect: Vec<Duration>,
    /// Time from connected to Welcome (challenge, signed hello), per session.
    pub auth: Vec<Duration>,
    /// Download + install time per install.
    pub install: Vec<Duration>,
    /// A fatal error that stopped the device.
    pub error: Option<String>,
    /// Flash bytes this device does not share with the fleet (at the end).
    pub flash_private_bytes: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// From samples (nearest-rank).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1].as_secs_f64() * 1e3,
        }
    }
}

/// The fleet's result.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Virtual devices.
    pub devices: usize,
    /// Wall time of the run (after provisioning).
    pub elapsed_secs: f64,
    /// Time spent provisioning (registration, flash images).
    pub provision_secs: f64,
    /// Whether the end condition held (always true without one).
    pub condition_met: bool,
    /// Devices per final outcome.
    pub outcomes: BTreeMap<String, usize>,
    /// Devices per running version.
    pub versions: BTreeMap<String, usize>,
    /// Authenticated sessions.
    pub sessions: u64,
    /// Failed sessions (retried).
    pub retries: u64,
    /// Completed installs.
    pub installs: u64,
    /// Rollbacks.
    pub rollbacks: u64,
    /// Refused offers.
    pub refusals: u64,
    /// Injected power cuts.
    pub power_cuts: u64,
    /// Downloads resumed past chunk 0.
    pub resumes: u64,
    /// Downloads after a power cut that started over at chunk 0.
    pub restarts_from_zero: u64,
    /// Connect latency.
    pub connect: Percentiles,
    /// Authentication latency (challenge, signed hello, welcome).
    pub auth: Percentiles,
    /// Download + install time.
    pub install: Percentiles,
    /// Mean flash memory of a device (KiB not shared with the fleet).
    pub flash_kib_mean: f64,
    /// Largest flash memory of a device (KiB).
    pub flash_kib_max: f64,
    /// Up to 10 device errors.
    pub errors: Vec<String>,
}

/// A device's outcome label.
pub fn outcome(s: &DeviceStats, target: Option<&str>) -> String {
    if s.error.is_some() {
        "error".into()
    } else if s.rollbacks > 0 && s.never_confirm {
        "rolled_back".into()
    } else if s.confirmed && target == Some(s.version.as_str()) {
        "updated".into()
    } else if s.confirmed {
        format!("running {}", s.version)
    } else {
        format!("trial {}", s.version)
    }
}

/// Whether a device reached its end state for `--until-updated target`.
pub fn settled(s: &DeviceStats, target: &str) -> bool {
    s.error.is_some()
        || (s.confirmed && s.version == target && s.acked_since_boot)
        || (s.never_confirm && s.rollbacks > 0 && s.rollback_acked)
}

impl Summary {
    /// Folds the per-device records.
    pub fn new(
        all: &[DeviceStats],
        target: Option<&str>,
        elapsed: Duration,
        provision: Duration,
        condition_met: bool,
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let (mut connect, mut auth, mut install) = (Vec::new(), Vec::new(), Vec::new());
        let mut errors = Vec::new();
        let sum = |f: fn(&DeviceStats) -> u64| all.iter().map(f).sum::<u64>();
        for s in all {
            *outcomes.entry(outcome(s, target)).or_insert(0) += 1;
            *versions.entry(s.version.clone()).or_insert(0) += 1;
            connect.extend_from_slice(&s.connect);
            auth.extend_from_slice(&s.auth);
            install.extend_from_slice(&s.install);
            if let Some(e) = &s.error
                && errors.len() < 10
            {
                errors.push(format!("{}: {e}", s.id));
            }
        }
        Self {
            devices: all.len(),
            elapsed_secs: elapsed.as_secs_f64(),
            provision_secs: provision.as_secs_f64(),
            condition_met,
            outcomes,
            versions,
            sessions: sum(|s| s.sessions.into()),
            retries: sum(|s| s.retries.into()),
            installs: sum(|s| s.installs.into()),
            rollbacks: sum(|s| s.rollbacks.into()),
            refusals: sum(|s| s.refusals.into()),
            power_cuts: sum(|s| s.power_cuts.into()),
            resumes: sum(|s| s.resumed_from.len() as u64),
            restarts_from_zero: sum(|s| s.restarts_from_zero.into()),
            connect: Percentiles::of(connect),
            auth: Percentiles::of(auth),
            install: Percentiles::of(install),
            flash_kib_mean: all
                .iter()
                .map(|s| s.flash_private_bytes as f64 / 1024.0)
                .sum::<f64>()
                / all.len().max(1) as f64,
            flash_kib_max: all
                .iter()
                .map(|s| s.flash_private_bytes as f64 / 1024.0)
                .fold(0.0, f64::max),
            errors,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} devices, {:.1} s (provisioning {:.1} s), end condition {}",
            self.devices,
            self.elapsed_secs,
            self.provision_secs,
            if self.condition_met { "met" } else { "NOT met" }
        );
        let _ = writeln!(out, "\noutcome              devices");
        for (k, v) in &self.outcomes {
            let _ = writeln!(out, "{k:<20} {v:>7}");
        }
        let _ = writeln!(out, "\nversion              devices");
        for (k, v) in &self.versions {
            let _ = writeln!(out, "{k:<20} {v:>7}");
        }
        let _ = writeln!(
            out,
            "\nsessions {}  retries {}  installs {}  rollbacks {}  refusals {}",
            self.sessions, self.retries, self.installs, self.rollbacks, self.refusals
        );
        let _ = writeln!(
            out,
            "power cuts {}  resumed downloads {}  restarted from 0 {}",
            self.power_cuts, self.resumes, self.restarts_from_zero
        );
        let _ = writeln!(
            out,
            "\ntiming (ms)          count      p50      p90      p99      max"
        );
        for (name, p) in [
            ("connect", &self.connect),
            ("auth", &self.auth),
            ("install", &self.install),
        ] {
            let _ = writeln!(
                out,
                "{name:<20} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            );
        }
        let _ = writeln!(
            out,
            "flash per device (KiB not shared): mean {:.1}, max {:.1}",
            self.flash_kib_mean, self.flash_kib_max
        );
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!(
            (p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
    }

    #[test]
    fn outcomes_and_settling() {
        let mut s = DeviceStats {
            version: "1.1.0".into(),
            confirmed: true,
            ..Default::default()
        };
        assert_eq!(outcome(&s, Some("1.1.0")), "updated");
        assert!(!settled(&s, "1.1.0"), "not until the server acknowledged");
        s.acked_since_boot = true;
        assert!(settled(&s, "1.1.0"));
        s.version = "1.0.0".into();
        assert_eq!(outcome(&s, Some("1.1.0")), "running 1.0.0");
        assert!(!settled(&s, "1.1.0"));
        s.never_confirm = true;
        s.rollbacks = 1;
        assert_eq!(outcome(&s, Some("1.1.0")), "rolled_back");
        assert!(!settled(&s, "1.1.0"));
        s.rollback_acked = true;
        assert!(settled(&s, "1.1.0"));
    }
}
