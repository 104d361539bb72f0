//! 10,000 device views: targeting and stage membership stay correct as a
//! rollout walks its stages, and newcomers join where they belong.

mod common;

use aloft_protocol::{DeviceId, Version};
use aloft_rollout::rollout::DeviceOutcome;
use aloft_rollout::{Decision, DeviceView, GlobalLoad, Report, Rollout, Stage};
use common::{Clock, spec, stage, test_stage};

const N: usize = 10_000;

fn fleet() -> Vec<DeviceView> {
    let products = ["sensor", "gateway"];
    let regions = ["eu", "us", "apac"];
    (0..N)
        .map(|i| DeviceView {
            id: DeviceId::new(&format!("fleet-{i:05}")).unwrap(),
            product: products[i % 2].into(),
            hardware: if i % 7 == 0 {
                "rev-a".into()
            } else {
                "rev-b".into()
            },
            version: Version::new(1, (i % 3) as u32, 0), // 1.0.0, 1.1.0, 1.2.0
            region: regions[(i / 3) % 3].into(),
            time_zone: "Europe/Berlin".into(),
            tags: if i % 11 == 0 {
                vec!["lab".into()]
            } else {
                vec![]
            },
            test: i % 97 == 0,
        })
        .collect()
}

/// The selector, written out by hand.
fn expected_target(d: &DeviceView) -> bool {
    d.product == "sensor"
        && (d.region == "eu" || d.region == "us")
        && d.version < Version::new(1, 1, 0)
        && !d.tags.iter().any(|t| t == "lab")
}

#[test]
fn ten_thousand_devices_targeting_and_membership() {
    let mut clock = Clock::new();
    let stages: Vec<Stage> = vec![
        test_stage(),
        stage("1%", 1),
        stage("10%", 10),
        stage("50%", 50),
        stage("all", 100),
    ];
    let selector =
        r#"product = "sensor" and region in (eu, us) and version < 1.1.0 and not tag = lab"#;
    let mut s = spec(selector, stages);
    s.target_version = Version::new(1, 3, 0); // above every device: only the selector filters
    let mut r = Rollout::new(s, clock.now(), false).unwrap();
    let mut devices = fleet();
    // Hold half the fleet back: they "appear" after the rollout started.
    let late = devices.split_off(N / 2);

    // Targeting agrees with the hand-written predicate on every device.
    let all: Vec<&DeviceView> = devices.iter().chain(&late).collect();
    for d in &all {
        assert_eq!(r.classify(d).is_some(), expected_target(d), "{:?}", d.id);
    }
    let targeted = all.iter().filter(|d| expected_target(d)).count();
    let tests = all.iter().filter(|d| expected_target(d) && d.test).count();
    assert!(tests > 0 && targeted > 1000, "{tests} {targeted}");
    let non_test = targeted - tests;

    let mut offered_total = 0;
    let mut cumulative_expected = 0usize;
    for (k, pct) in [(0usize, 0.0f64), (1, 1.0), (2, 10.0), (3, 50.0), (4, 100.0)] {
        if k == 2 {
            devices.extend(late.iter().cloned()); // newcomers join mid-rollout
        }
        let now = clock.advance(60);
        let mut newly = 0;
        for d in &devices {
            let decision = r.decide(d, now, GlobalLoad::UNLIMITED);
            let class = r.classify(d);
            let eligible = class.is_some_and(|st| st.is_some_and(|st| st <= k));
            match decision {
                Decision::Offer { .. } => {
                    assert!(eligible, "stage {k}: offered {:?} in class {class:?}", d.id);
                    newly += 1;
                    r.report(&d.id, Report::Updated, now).unwrap();
                }
                Decision::None => assert!(class.is_none()),
                Decision::NotYet { .. } => {
                    assert!(!eligible || r.device(&d.id).unwrap().outcome == DeviceOutcome::Updated)
                }
            }
        }
        offered_total += newly;
        // Everyone eligible so far (of the devices present) has been offered exactly once.
        let present_eligible = devices
            .iter()
            .filter(|d| r.classify(d).is_some_and(|st| st.is_some_and(|st| st <= k)))
            .count();
        assert_eq!(offered_total, present_eligible, "stage {k}");
        if k >= 2 {
            // All devices present: check the share against the percentage.
            let share_non_test = (present_eligible - tests) as f64 * 100.0 / non_test as f64;
            assert!(
                (share_non_test - pct).abs() < 2.5,
                "stage {k}: {share_non_test:.2}% vs {pct}%"
            );
            cumulative_expected = present_eligible;
        }
        let c = r.counts();
        assert_eq!(
            c.iter().map(|c| c.updated as usize).sum::<usize>(),
            offered_total
        );
        r.advance(now).unwrap();
    }
    assert_eq!(cumulative_expected, targeted);
    assert_eq!(offered_total, targeted);
}
