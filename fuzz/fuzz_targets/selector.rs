//! The rollout selector language on arbitrary text: `Selector::parse`, then
//! `matches` on a few devices.
//!
//! Properties: no panic (nesting is bounded, the length is bounded); a
//! parsed selector prints (`Display`) and re-parses to the same selector,
//! which selects exactly the same devices.
#![no_main]

use aloft_protocol::{DeviceId, Version};
use aloft_rollout::{DeviceView, Selector};
use libfuzzer_sys::fuzz_target;

fn devices() -> Vec<DeviceView> {
    let view = |id: &str, product: &str, v: (u32, u32, u32), region: &str, tags: &[&str], test| {
        DeviceView {
            id: DeviceId::new(id).unwrap(),
            product: product.into(),
            hardware: "rev-b".into(),
            version: Version::new(v.0, v.1, v.2),
            region: region.into(),
            time_zone: "Europe/Berlin".into(),
            tags: tags.iter().map(|t| (*t).into()).collect(),
            test,
        }
    };
    vec![
        view("dev-1", "sensor", (1, 0, 0), "eu", &["lab"], true),
        view("dev-2", "sensor", (1, 10, 0), "us", &[], false),
        view("gw-9", "gateway", (2, 0, 1), "not", &["a b", "lab"], false),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    let printed = selector.to_string();
    let again = Selector::parse(&printed).expect("a printed selector parses");
    assert_eq!(again, selector);
    for d in devices() {
        assert_eq!(again.matches(&d), selector.matches(&d));
    }
});
