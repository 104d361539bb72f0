//! Aloft's rollout policy engine: which device gets which release, when.
//!
//! Sans-IO and clock-free: every function takes the time as a [`UnixTime`]
//! value, so the server (and the tests) decide what "now" is. No tokio, no
//! storage; the server persists [`rollout::Rollout`]s and plugs them in.
//!
//! Modules:
//! - [`selector`]: the targeting language (grammar in its docs) over a [`selector::DeviceView`].
//! - [`membership`]: deterministic stage membership by hash bucket, and notification jitter.
//! - [`window`]: maintenance windows in the device's IANA time zone, DST-correct.
//! - [`rollout`]: the state machine: stages, health gate, pacing, per-device control.
//! - [`tracking`]: per-stage counts, fleet by version, stale and suspected-broken devices.
//!
//! # Rules
//!
//! **Targeting.** The selector is evaluated at every check-in: a device that
//! comes to match (new, or changed attributes) joins the running rollout; one
//! that stops matching is no longer offered. Devices already at or above the
//! release's version are never offered.
//!
//! **Stages.** A device's bucket is `SHA-256(rollout id || 0 || device id)`
//! (first 8 bytes) mod 10 000; it is eligible from the first stage whose
//! cumulative `percent * 100` exceeds its bucket. Test devices form stage 0
//! when stage 0 is `test_devices_only` (only stage 0 may be). A device is
//! offered only once the current stage reaches its stage.
//!
//! **Decide** (in this order): cancelled rollout, selector miss, or
//! already at the target version → `None`; excluded → `NotYet(Excluded)`;
//! installed/updated/failed → `NotYet(AlreadyDone)`; already offered → `Offer`
//! again (resume; the slot is already counted); paused → `NotYet(Paused)`;
//! stage not reached → `NotInStage`; outside the window → `OutsideWindow{next}`;
//! a pacing cap full (offered-but-unfinished devices of this rollout ≥
//! `max_concurrent`, or the server's in-flight ≥ its cap) → `PacingCap`;
//! otherwise `Offer`, recorded as offered. A forced device skips the pause,
//! stage, window and pacing checks. Each `NotYet` carries a suggested check-in:
//! the window's next start, `now + pacing_retry_secs` for pacing, the end of
//! the current stage's soak for a device whose stage is not reached (at most
//! [`rollout::STAGE_WAIT_RETRY_SECS`] once it soaked, at most
//! `check_in_secs`), else `now + check_in_secs`, each plus the device's
//! deterministic jitter. A completed rollout keeps serving devices that show
//! up late.
//!
//! **Health gate.** In the current stage, `finished = updated + failed +
//! rolled back + silent` and `failed = failed + rolled back + silent`. Once
//! `finished >= min_sample`, an active rollout pauses itself when
//! `failed * 1000 > max_failure_permille * finished`: exactly at the threshold
//! it continues, one more failure pauses it. The reason is recorded, e.g.
//! `stage 2 (10%): 3 of 20 devices failed (150‰ > 100‰)`. A device that
//! installed and is neither heard from (a check-in counts:
//! [`rollout::Rollout::seen`]) nor reports for `silent_after_secs` becomes
//! silent at the next [`rollout::Rollout::tick`]. Resuming acknowledges the stage's failures
//! so far; the gate then counts only new ones (retrying or recovering a
//! failed device reduces the acknowledged count again).
//!
//! **Advance.** At a tick, an active rollout moves from stage `k` to `k + 1`
//! when: `k` is not the last stage, `soak_secs` have passed since `k` started,
//! at least `min_sample` of `k`'s devices finished, none is installed and still
//! awaiting confirmation, and the gate holds. The last stage completes the
//! rollout by itself once it soaked, is healthy, and no device of the
//! rollout is still pending, offered or installing (devices that come to
//! match later are still served); an operator advance past it completes it
//! at once. Operator advance ignores soak and criteria.
//!
//! **Work proportional to change.** A tick touches only devices whose timer
//! ran out (offered past the offer timeout, installed past the silence
//! period): they are indexed by deadline, so an idle tick costs the same for
//! ten devices or a million.
//!
//! **Operator control.** pause (active; the reason is kept as given), resume
//! (paused), cancel (active or paused; final), advance, retry-failed; per
//! device exclude (stops offers and counting), force, retry.
//!
//! **Persistence.** A server stores the [`rollout::RolloutSpec`], the
//! [`rollout::RolloutProgress`] and each device's [`rollout::DeviceRecord`]
//! (one small record per device), and rebuilds with [`rollout::Rollout::restore`].
//! Each operation is journaled ([`rollout::Rollout::begin`]): the server writes
//! exactly [`rollout::Rollout::changed_devices`] (and the progress when it
//! changed) and undoes the operation with [`rollout::Rollout::rollback`] when
//! that write fails, so memory and store never disagree.
#![forbid(unsafe_code)]

mod error;
pub mod membership;
pub mod rollout;
pub mod selector;
pub mod tracking;
pub mod window;

use core::fmt;

pub use aloft_protocol::UnixTime;
pub use error::{Error, ParseError};
pub use rollout::{
    Decision, GlobalLoad, NotYetReason, Report, Rollout, RolloutProgress, RolloutSpec,
    RolloutState, Stage,
};
pub use selector::{DeviceView, IndexedField, Selector, Term};
pub use window::MaintenanceWindow;

/// A rollout's unique id: 1 to 64 of `[A-Za-z0-9._:-]`, not starting with `.`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolloutId(String);

impl RolloutId {
    /// Validates and wraps `s`.
    pub fn new(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= aloft_protocol::types::MAX_ID_LEN
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::InvalidRolloutId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RolloutId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_ids_are_validated() {
        assert!(RolloutId::new("r-2024.1").is_ok());
        for bad in ["", ".x", "a b", "a/b"] {
            assert_eq!(RolloutId::new(bad), Err(Error::InvalidRolloutId), "{bad}");
        }
        assert!(RolloutId::new(&"x".repeat(65)).is_err());
    }
}
