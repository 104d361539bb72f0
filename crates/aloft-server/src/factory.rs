//! Update before shipment: factory rollouts.
//!
//! Firmware goes to the factory long before products ship, so a freshly
//! built device should power up at the end of the line, check in, and take
//! the newest release of its product before it is packed. A factory
//! rollout (`CreateRolloutRequest.factory`) is the standing rule for that:
//!
//! - it targets the devices of its release's product (and hardware, and
//!   its selector) **registered since it started** (`registered_since`, set
//!   by the server), **while they are at the factory**: up to
//!   `period_secs` (default [`DEFAULT_PERIOD_SECS`]) after their
//!   registration. Newly registered devices join by themselves at their
//!   first check-in; a device in the field is never reached by it, so
//!   field updates stay with the staged rollouts;
//! - it has one stage, everyone, that never completes by itself (standing),
//!   and a health gate that pauses it when more than half of at least
//!   [`GATE_MIN_SAMPLE`] finished devices failed: a bad release stops at
//!   the line, not in the field;
//! - creating a factory rollout for a newer release of the product
//!   supersedes the previous one (it is cancelled, and its downloads stop)
//!   and inherits its `registered_since`, so devices registered under it
//!   and not yet done move on to the newest release. A factory rollout
//!   never offers an older release than the one it replaces.
//!
//! The station registers the devices (a factory token), powers them up and
//! waits for each to confirm (`WaitDevice`, `aloft device wait ID
//! --confirmed RELEASE`) before packing.

use aloft_protocol::{UnixTime, pb};

use crate::store::DeviceRecord;

/// How long after its registration a device counts as at the factory, when
/// the rollout does not say.
pub const DEFAULT_PERIOD_SECS: u64 = 7 * 86_400;
/// Finished devices before the factory stage's health gate counts.
pub const GATE_MIN_SAMPLE: u32 = 5;
/// The factory stage pauses when failures exceed this, per mille.
pub const GATE_MAX_FAILURE_PERMILLE: u32 = 500;
/// The factory stage's soak: 100 years, i.e. it never completes by itself.
const NEVER_SECS: u64 = 100 * 365 * 86_400;

/// Whether `device` is at the factory for rollout settings `f` at `now`.
pub fn at_factory(f: &pb::FactoryRollout, device: &DeviceRecord, now: UnixTime) -> bool {
    let period = period(f);
    device.registered_at >= f.registered_since
        && now.0 <= device.registered_at.saturating_add(period)
}

/// The period of `f` (its default when 0).
pub fn period(f: &pb::FactoryRollout) -> u64 {
    if f.period_secs == 0 {
        DEFAULT_PERIOD_SECS
    } else {
        f.period_secs
    }
}

/// The one stage of a factory rollout.
fn stage() -> pb::RolloutStage {
    pb::RolloutStage {
        name: "factory".into(),
        percent: 100,
        test_devices_only: false,
        soak_secs: NEVER_SECS,
        min_sample: GATE_MIN_SAMPLE,
        max_failure_permille: GATE_MAX_FAILURE_PERMILLE,
    }
}

/// Why a factory rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// Stages or a window were given.
    #[error(
        "a factory rollout has one stage (every device at the factory) and no maintenance window: leave out the stages and the window (`aloft rollout create ID --release R --factory` takes no --stages or --window)"
    )]
    Shape,
    /// The release is not newer than the one the product's factory rollout offers.
    #[error(
        "factory rollout {current} of product {product} already offers {version}: a factory rollout must offer a newer release"
    )]
    NotNewer {
        /// The current factory rollout.
        current: String,
        /// The product.
        product: String,
        /// The version it offers.
        version: String,
    },
}

/// Normalises a factory rollout request: its stage, no window, its period,
/// and `registered_since` (the superseded rollout's, or `now`).
pub fn normalise(
    req: &mut pb::CreateRolloutRequest,
    inherited: Option<u64>,
    now: UnixTime,
) -> Result<(), FactoryError> {
    if !req.stages.is_empty() || req.window.is_some() {
        return Err(FactoryError::Shape);
    }
    req.stages = vec![stage()];
    let f = req.factory.get_or_insert_with(Default::default);
    f.period_secs = period(f);
    f.registered_since = inherited.unwrap_or(now.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_at_the_factory_from_the_start_for_the_period() {
        let f = pb::FactoryRollout {
            period_secs: 100,
            registered_since: 1_000,
        };
        let device = |registered_at| DeviceRecord {
            registered_at,
            ..Default::default()
        };
        assert!(at_factory(&f, &device(1_000), UnixTime(1_100)));
        assert!(
            !at_factory(&f, &device(1_000), UnixTime(1_101)),
            "period over"
        );
        assert!(
            !at_factory(&f, &device(999), UnixTime(1_000)),
            "registered before"
        );
        assert_eq!(period(&pb::FactoryRollout::default()), DEFAULT_PERIOD_SECS);
    }

    #[test]
    fn a_factory_request_gets_its_stage_and_refuses_others() {
        let mut req = pb::CreateRolloutRequest {
            factory: Some(pb::FactoryRollout::default()),
            ..Default::default()
        };
        normalise(&mut req, None, UnixTime(50)).unwrap();
        assert_eq!(req.stages.len(), 1);
        assert_eq!(req.factory.unwrap().registered_since, 50);
        let mut staged = req.clone();
        assert!(matches!(
            normalise(&mut staged, Some(7), UnixTime(60)),
            Err(FactoryError::Shape)
        ));
        req.stages.clear();
        normalise(&mut req, Some(7), UnixTime(60)).unwrap();
        assert_eq!(req.factory.unwrap().registered_since, 7, "inherited");
    }
}
