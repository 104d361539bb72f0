//! Shared test helpers: device views, stages and a manual clock.
#![allow(dead_code)]

use aloft_protocol::{DeviceId, ReleaseId, Version};
use aloft_rollout::{DeviceView, RolloutId, RolloutSpec, Selector, Stage, UnixTime};

pub fn dev(i: usize) -> DeviceView {
    DeviceView {
        id: DeviceId::new(&format!("dev-{i:05}")).unwrap(),
        product: "sensor".into(),
        hardware: "rev-b".into(),
        version: Version::new(1, 0, 0),
        region: "eu".into(),
        time_zone: "UTC".into(),
        tags: vec![],
        test: false,
    }
}

pub fn stage(name: &str, percent: u8) -> Stage {
    Stage {
        name: name.into(),
        percent,
        test_devices_only: false,
        soak_secs: 0,
        min_sample: 0,
        max_failure_permille: 1000,
    }
}

pub fn test_stage() -> Stage {
    Stage {
        test_devices_only: true,
        ..stage("test", 0)
    }
}

pub fn spec(selector: &str, stages: Vec<Stage>) -> RolloutSpec {
    let mut s = RolloutSpec::new(
        RolloutId::new("r-1").unwrap(),
        ReleaseId::new("sensor-1.1.0").unwrap(),
        Version::new(1, 1, 0),
        Selector::parse(selector).unwrap(),
        stages,
    );
    s.jitter_secs = 0;
    s
}

/// An injectable clock: starts at a fixed instant, advanced by hand.
pub struct Clock(pub u64);

impl Clock {
    pub fn new() -> Self {
        Self(1_700_000_000)
    }
    pub fn now(&self) -> UnixTime {
        UnixTime(self.0)
    }
    pub fn advance(&mut self, secs: u64) -> UnixTime {
        self.0 += secs;
        self.now()
    }
}
