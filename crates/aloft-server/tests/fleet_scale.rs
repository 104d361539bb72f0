//! Targeting and stage membership over 10,000 device records in sled: every
//! check-in gets exactly what the selector and the hash buckets say, each
//! stage holds its share of the fleet, and a restart (rollouts rebuilt from
//! sled) changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_protocol::{DeviceId, UnixTime, pb};
use aloft_rollout::RolloutId;
use aloft_rollout::membership::{StageShare, bucket, stage_of};
use aloft_server::rollouts::{CheckIn, RolloutSettings, Rollouts};
use aloft_server::store::{ReleaseRecord, SledStore, Store};

const DEVICES: u32 = 10_000;
const REGIONS: [&str; 4] = ["eu", "us", "ap", "au"];
const NOW: UnixTime = UnixTime(1_800_000_000);

fn device(i: u32) -> pb::DeviceInfo {
    pb::DeviceInfo {
        device_id: format!("dev-{i:05}"),
        attributes: Some(pb::DeviceAttributes {
            product: "sensor".into(),
            hardware: "rev-a".into(),
            region: REGIONS[(i % 4) as usize].into(),
            time_zone: "Europe/Berlin".into(),
            tags: if i.is_multiple_of(10) {
                vec!["lab".into()]
            } else {
                vec![]
            },
            test_device: i % 500 == 1,
        }),
        ..Default::default()
    }
}

/// What the rules say device `i` should get at `stage`: `None` when the
/// selector misses it, else whether it is offered now.
fn expected(i: u32, rollout: &RolloutId, stages: &[StageShare], stage: usize) -> Option<bool> {
    let d = device(i);
    let a = d.attributes.as_ref().unwrap();
    // The selector below: eu or us, without the lab tag.
    if !(a.region == "eu" || a.region == "us") || a.tags.iter().any(|t| t == "lab") {
        return None;
    }
    let id = DeviceId::new(&d.device_id).unwrap();
    let first = stage_of(stages, bucket(rollout, &id), a.test_device);
    Some(first.is_some_and(|s| s <= stage))
}

/// Checks every device in; returns (offered, held back, nothing).
fn check_all(rollouts: &Rollouts, at_stage: usize, stages: &[StageShare]) -> [u32; 3] {
    let rid = RolloutId::new("scale").unwrap();
    let mut tally = [0; 3];
    for i in 0..DEVICES {
        let got = rollouts.check_in(&device(i), "1.0.0", NOW).unwrap();
        let slot = match (&got, expected(i, &rid, stages, at_stage)) {
            (CheckIn::Offer { .. }, Some(true)) => 0,
            (CheckIn::Later(_), Some(false)) => 1,
            (CheckIn::Nothing, None) => 2,
            (got, want) => panic!("device {i} at stage {at_stage}: got {got:?}, expected {want:?}"),
        };
        tally[slot] += 1;
    }
    tally
}

#[test]
fn ten_thousand_devices_in_sled_get_exactly_their_stage() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    for i in 0..DEVICES {
        assert!(store.insert_device(&device(i)).unwrap());
    }
    let release_id = aloft_protocol::ReleaseId::new("sensor-2.0.0").unwrap();
    let release = ReleaseRecord {
        info: Some(pb::ReleaseInfo {
            release_id: release_id.as_str().into(),
            product: "sensor".into(),
            hardware: vec!["rev-a".into()],
            version: "2.0.0".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(store.commit_release(&release_id, &release).unwrap());

    let stage = |name: &str, percent: u32, test: bool| pb::RolloutStage {
        name: name.into(),
        percent,
        test_devices_only: test,
        soak_secs: 3600,
        min_sample: 1,
        max_failure_permille: 1000,
    };
    let request = pb::CreateRolloutRequest {
        rollout_id: "scale".into(),
        release_id: release_id.as_str().into(),
        selector: "region in (eu, us) and not tag = lab".into(),
        stages: vec![
            stage("test", 0, true),
            stage("10%", 10, false),
            stage("all", 100, false),
        ],
        ..Default::default()
    };
    let shares = [
        StageShare {
            percent: 0,
            test_devices_only: true,
        },
        StageShare {
            percent: 10,
            test_devices_only: false,
        },
        StageShare {
            percent: 100,
            test_devices_only: false,
        },
    ];

    let rollouts = Rollouts::load(Arc::clone(&store), RolloutSettings::default()).unwrap();
    rollouts.create(request, &release, NOW).unwrap();

    // eu + us: 5,000; the lab devices among them (i % 20 == 0, all eu)
    // are 500, so 4,500 are targeted. The 20 test devices (i % 500 == 1) are
    // all in us without the tag: stage 0 offers exactly them.
    let t0 = check_all(&rollouts, 0, &shares);
    assert_eq!(t0, [20, 4_480, 5_500]);
    assert_eq!(t0[2], 5_500, "{t0:?}");

    rollouts
        .control("scale", pb::RolloutAction::Advance, "", NOW)
        .unwrap();
    let t1 = check_all(&rollouts, 1, &shares);
    // The 20 test devices plus 10 % of the other 4,480 by hash bucket
    // (448, within 3 standard deviations: about 60). The exact set is
    // checked per device in `check_all`.
    assert!(
        (388..=508).contains(&(t1[0] - 20)),
        "stage 1 offered {t1:?}"
    );

    // Per-stage counts the server reports agree with what the devices got.
    let info = rollouts.get("scale").unwrap();
    let counts: BTreeMap<_, _> = info
        .counts
        .iter()
        .map(|c| (c.stage.clone(), c.offered))
        .collect();
    assert_eq!(counts.values().sum::<u32>(), t1[0], "{counts:?}");

    // Rebuilt from sled: the same decisions (offered devices are offered
    // again as a resume, the rest still wait).
    drop(rollouts);
    let reloaded = Rollouts::load(Arc::clone(&store), RolloutSettings::default()).unwrap();
    assert_eq!(reloaded.get("scale").unwrap().current_stage, 1);
    assert_eq!(check_all(&reloaded, 1, &shares), t1);

    reloaded
        .control("scale", pb::RolloutAction::Advance, "", NOW)
        .unwrap();
    let t2 = check_all(&reloaded, 2, &shares);
    assert_eq!(t2, [4_500, 0, 5_500]);
}
