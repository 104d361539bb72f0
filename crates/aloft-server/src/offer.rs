//! Which release, if any, to offer a device that checks in.
//!
//! [`OfferPolicy`] is the seam for issue 5's rollout engine (stages, windows,
//! pacing). The default [`SelectorPolicy`] offers the newest release of any
//! active rollout whose selector matches the device, whose product and
//! hardware fit, that is newer than what the device runs, and that the
//! device has not already finished (updated, failed or rolled back).

use std::sync::Arc;

use aloft_protocol::{DeviceNonce, ReleaseId, Version, pb};

use crate::selector::Selector;
use crate::store::{DeviceRecord, Store, StoreError};

/// What the device said in its hello.
#[derive(Clone, Copy, Debug)]
pub struct HelloState<'a> {
    /// The hello's fresh nonce.
    pub device_nonce: &'a DeviceNonce,
    /// The device's self-reported state.
    pub state: &'a pb::DeviceState,
}

/// An offer decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferChoice {
    /// Release to offer.
    pub release_id: ReleaseId,
    /// Rollout it belongs to.
    pub rollout_id: String,
}

/// Decides offers. Implementations must be cheap: they run on every hello.
pub trait OfferPolicy: Send + Sync + 'static {
    /// The release to offer `device`, if any.
    fn choose(
        &self,
        device: &DeviceRecord,
        hello: &HelloState<'_>,
    ) -> Result<Option<OfferChoice>, StoreError>;
}

/// The default policy; see the module docs. Ignores stages and windows.
pub struct SelectorPolicy {
    store: Arc<dyn Store>,
}

impl SelectorPolicy {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn finished(status: i32) -> bool {
    use pb::DeviceStatus as S;
    matches!(
        S::try_from(status),
        Ok(S::Updated | S::Failed | S::RolledBack)
    )
}

impl OfferPolicy for SelectorPolicy {
    fn choose(
        &self,
        device: &DeviceRecord,
        hello: &HelloState<'_>,
    ) -> Result<Option<OfferChoice>, StoreError> {
        let Ok(running) = Version::parse(&hello.state.firmware_version) else {
            return Ok(None);
        };
        let attrs = device.attributes.clone().unwrap_or_default();
        let mut best: Option<(Version, OfferChoice)> = None;
        for rollout in self.store.list_rollouts()? {
            if rollout.state != pb::RolloutState::Active as i32 {
                continue;
            }
            let Ok(selector) = Selector::parse(&rollout.selector) else {
                continue;
            };
            if !selector.matches(device) {
                continue;
            }
            let Ok(release_id) = ReleaseId::new(&rollout.release_id) else {
                continue;
            };
            let Some(release) = self.store.release(&release_id)? else {
                continue;
            };
            let info = release.info.unwrap_or_default();
            let Ok(version) = Version::parse(&info.version) else {
                continue;
            };
            if info.product != attrs.product
                || !info.hardware.contains(&attrs.hardware)
                || version <= running
                || (device.release_id == release_id.as_str() && finished(device.status))
            {
                continue;
            }
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((
                    version,
                    OfferChoice {
                        release_id,
                        rollout_id: rollout.rollout_id,
                    },
                ));
            }
        }
        Ok(best.map(|(_, c)| c))
    }
}
