//! The rollout state machine, driven by an injectable clock.

mod common;

use aloft_protocol::{Version, pb};
use aloft_rollout::rollout::{DeviceOutcome, Transition};
use aloft_rollout::{
    Decision, Error, GlobalLoad, MaintenanceWindow, NotYetReason, Report, Rollout, RolloutSpec,
    RolloutState, Stage, UnixTime,
};
use common::{Clock, dev, spec, stage, test_stage};

const ANY: GlobalLoad = GlobalLoad::UNLIMITED;

fn offered(d: &Decision) -> bool {
    matches!(d, Decision::Offer { .. })
}

fn reason(d: &Decision) -> NotYetReason {
    match d {
        Decision::NotYet { reason, .. } => reason.clone(),
        other => panic!("expected NotYet, got {other:?}"),
    }
}

/// Devices whose first eligible stage is `want` in `r`.
fn devices_in_stage(r: &Rollout, want: usize, n: usize) -> Vec<aloft_rollout::DeviceView> {
    (0..100_000)
        .map(dev)
        .filter(|d| r.classify(d) == Some(Some(want)))
        .take(n)
        .collect()
}

#[test]
fn stage_progression_with_soak() {
    let mut clock = Clock::new();
    let stages = vec![
        Stage {
            soak_secs: 3600,
            min_sample: 1,
            ..test_stage()
        },
        Stage {
            soak_secs: 3600,
            min_sample: 2,
            ..stage("ten", 10)
        },
        stage("all", 100),
    ];
    let mut r = Rollout::new(spec("", stages), clock.now(), false).unwrap();
    let mut fleet: Vec<_> = (0..200).map(dev).collect();
    fleet[7].test = true;
    fleet[8].test = true;

    // Stage 0: only the test devices are offered.
    let got: Vec<usize> = (0..200)
        .filter(|&i| offered(&r.decide(&fleet[i], clock.now(), ANY)))
        .collect();
    assert_eq!(got, [7, 8]);
    assert_eq!(
        reason(&r.decide(&fleet[0], clock.now(), ANY)),
        NotYetReason::NotInStage
    );
    for i in [7, 8] {
        r.report(&fleet[i].id, Report::Installed, clock.now())
            .unwrap();
    }
    // Soak not over, and devices still awaiting confirmation: no advance.
    assert!(r.tick(clock.advance(3599)).is_empty());
    assert!(
        r.tick(clock.advance(1)).is_empty(),
        "installed devices block the advance"
    );
    for i in [7, 8] {
        r.report(&fleet[i].id, Report::Updated, clock.now())
            .unwrap();
    }
    assert_eq!(r.tick(clock.now()), [Transition::Advanced { to: 1 }]);
    assert_eq!(r.stage_started_at(), clock.now());

    // Stage 1 (10%): roughly a tenth of the rest.
    let ten: Vec<usize> = (0..200)
        .filter(|&i| offered(&r.decide(&fleet[i], clock.now(), ANY)))
        .filter(|i| ![7, 8].contains(i))
        .collect();
    assert!((8..=35).contains(&ten.len()), "{}", ten.len());
    // min_sample 2 not met after the soak: stays.
    r.report(&fleet[ten[0]].id, Report::Updated, clock.now())
        .unwrap();
    assert!(r.tick(clock.advance(4000)).is_empty());
    r.report(&fleet[ten[1]].id, Report::Updated, clock.now())
        .unwrap();
    assert_eq!(r.tick(clock.now()), [Transition::Advanced { to: 2 }]);

    // Last stage: everyone. While one device is still installing it is not
    // done; once every device finished and the stage soaked, it completes
    // by itself.
    let rest = (0..200)
        .filter(|&i| offered(&r.decide(&fleet[i], clock.now(), ANY)))
        .count();
    assert_eq!(rest, 200 - 2 - 2); // two test devices and two updated are done
    for d in &fleet[1..] {
        let _ = r.report(&d.id, Report::Updated, clock.now());
    }
    r.report(&fleet[0].id, Report::Installed, clock.now())
        .unwrap();
    assert!(
        r.tick(clock.advance(3600)).is_empty(),
        "one still installing"
    );
    r.report(&fleet[0].id, Report::Updated, clock.now())
        .unwrap();
    assert_eq!(r.tick(clock.advance(1)), [Transition::Completed]);
    assert_eq!(r.state(), &RolloutState::Completed);
    // A completed rollout still serves a device that shows up late.
    assert!(offered(&r.decide(&dev(999), clock.now(), ANY)));
    assert_eq!(
        r.advance(clock.now()),
        Err(Error::InvalidState {
            action: "advance",
            state: "completed"
        })
    );
}

/// Builds a rollout at stage 2 (10%) with `n` devices offered in that stage.
fn at_ten_percent(n: usize, min_sample: u32) -> (Rollout, Vec<aloft_rollout::DeviceView>, Clock) {
    let clock = Clock::new();
    let gate = |s: Stage| Stage {
        min_sample,
        max_failure_permille: 100,
        soak_secs: 86_400,
        ..s
    };
    let stages = vec![
        test_stage(),
        gate(stage("one", 1)),
        gate(stage("ten", 10)),
        stage("all", 100),
    ];
    let mut r = Rollout::new(spec("", stages), clock.now(), false).unwrap();
    r.advance(clock.now()).unwrap();
    r.advance(clock.now()).unwrap();
    let devs = devices_in_stage(&r, 2, n);
    assert_eq!(devs.len(), n);
    for d in &devs {
        assert!(offered(&r.decide(d, clock.now(), ANY)));
    }
    (r, devs, clock)
}

#[test]
fn health_gate_pauses_one_failure_past_the_threshold() {
    let (mut r, devs, clock) = at_ten_percent(21, 20);
    let now = clock.now();
    for d in &devs[..18] {
        assert!(r.report(&d.id, Report::Updated, now).unwrap().is_empty());
    }
    r.report(
        &devs[18].id,
        Report::Failed {
            detail: "flash write".into(),
        },
        now,
    )
    .unwrap();
    // 2 of 20 = 100‰, exactly at the threshold: keeps going.
    assert!(
        r.report(&devs[19].id, Report::RolledBack, now)
            .unwrap()
            .is_empty()
    );
    assert_eq!(r.state(), &RolloutState::Active);
    // One more failure: 3 of 21 > 100‰.
    let t = r.report(&devs[20].id, Report::RolledBack, now).unwrap();
    let want = "stage 2 (10%): 3 of 21 devices failed (142‰ > 100‰)";
    assert_eq!(
        t,
        [Transition::Paused {
            reason: want.into()
        }]
    );
    assert_eq!(
        r.state(),
        &RolloutState::Paused {
            reason: want.into()
        }
    );
    assert_eq!(r.info().pause_reason, want);
    assert_eq!(r.info().state, pb::RolloutState::Paused as i32);
}

#[test]
fn health_gate_waits_for_min_sample_and_records_the_reason() {
    let (mut r, devs, clock) = at_ten_percent(20, 20);
    let now = clock.now();
    // Three early failures: below the minimum sample, no judgement.
    for d in &devs[..3] {
        assert!(
            r.report(&d.id, Report::Failed { detail: "x".into() }, now)
                .unwrap()
                .is_empty()
        );
    }
    for d in &devs[3..19] {
        r.report(&d.id, Report::Updated, now).unwrap();
    }
    assert_eq!(
        r.state(),
        &RolloutState::Active,
        "19 finished < min_sample 20"
    );
    r.report(&devs[19].id, Report::Updated, now).unwrap();
    assert_eq!(
        r.state(),
        &RolloutState::Paused {
            reason: "stage 2 (10%): 3 of 20 devices failed (150‰ > 100‰)".into()
        }
    );
}

#[test]
fn paused_means_no_offers_until_resume_and_resume_acknowledges() {
    let (mut r, devs, clock) = at_ten_percent(20, 2);
    let now = clock.now();
    r.report(&devs[0].id, Report::Failed { detail: "x".into() }, now)
        .unwrap();
    r.report(&devs[1].id, Report::Updated, now).unwrap();
    assert!(matches!(r.state(), RolloutState::Paused { .. }));
    // Newcomers and devices mid-download alike are held.
    let newcomer = devices_in_stage(&r, 1, 1).pop().unwrap();
    assert_eq!(reason(&r.decide(&newcomer, now, ANY)), NotYetReason::Paused);
    assert_eq!(reason(&r.decide(&devs[5], now, ANY)), NotYetReason::Paused);
    assert_eq!(
        r.pause("again"),
        Err(Error::InvalidState {
            action: "pause",
            state: "paused"
        })
    );

    r.resume().unwrap();
    assert!(offered(&r.decide(&newcomer, now, ANY)));
    // The acknowledged failure alone does not re-pause ...
    r.report(&devs[2].id, Report::Updated, now).unwrap();
    assert!(r.tick(now).is_empty());
    assert_eq!(r.state(), &RolloutState::Active);
    // ... a new one does.
    r.report(&devs[3].id, Report::RolledBack, now).unwrap();
    assert!(matches!(r.state(), RolloutState::Paused { .. }));

    r.cancel().unwrap();
    assert_eq!(r.decide(&devs[6], now, ANY), Decision::None);
    assert_eq!(
        r.resume(),
        Err(Error::InvalidState {
            action: "resume",
            state: "cancelled"
        })
    );
    assert_eq!(
        r.cancel(),
        Err(Error::InvalidState {
            action: "cancel",
            state: "cancelled"
        })
    );
    assert_eq!(
        r.resume().unwrap_err().to_string(),
        "cannot resume a rollout that is cancelled"
    );
}

#[test]
fn operator_pause_resume() {
    let clock = Clock::new();
    let mut r = Rollout::new(spec("", vec![stage("all", 100)]), clock.now(), true).unwrap();
    assert_eq!(
        reason(&r.decide(&dev(1), clock.now(), ANY)),
        NotYetReason::Paused
    );
    assert_eq!(r.resume(), Ok(()));
    assert_eq!(
        r.resume(),
        Err(Error::InvalidState {
            action: "resume",
            state: "active"
        })
    );
    assert!(offered(&r.decide(&dev(1), clock.now(), ANY)));
    r.pause("investigating").unwrap();
    assert_eq!(r.info().pause_reason, "investigating");
}

#[test]
fn silent_after_update_counts_as_failure() {
    let mut clock = Clock::new();
    let gate = Stage {
        min_sample: 2,
        max_failure_permille: 499,
        ..stage("all", 100)
    };
    let mut s = spec("", vec![gate]);
    s.silent_after_secs = 600;
    let mut r = Rollout::new(s, clock.now(), false).unwrap();
    for i in 0..2 {
        assert!(offered(&r.decide(&dev(i), clock.now(), ANY)));
    }
    r.report(&dev(0).id, Report::Updated, clock.now()).unwrap();
    r.report(&dev(1).id, Report::Installed, clock.now())
        .unwrap();
    assert!(r.tick(clock.advance(599)).is_empty());
    let t = r.tick(clock.advance(1));
    assert_eq!(t[0], Transition::Silent(dev(1).id));
    assert!(matches!(t[1], Transition::Paused { .. }), "{t:?}");
    assert_eq!(r.device(&dev(1).id).unwrap().outcome, DeviceOutcome::Silent);
    assert_eq!(r.counts()[0].silent, 1);
}

#[test]
fn maintenance_window_in_device_local_time_across_dst() {
    let mut s = spec("", vec![stage("all", 100)]);
    s.window = Some(MaintenanceWindow::new(120, 240).unwrap());
    s.jitter_secs = 60;
    let t0 = UnixTime(1_711_800_000); // 2024-03-30T12:00:00Z
    let mut r = Rollout::new(s, t0, false).unwrap();
    let mut berlin = dev(1);
    berlin.time_zone = "Europe/Berlin".into();
    // Saturday 13:00 CET: outside; next opening is the DST night, 03:00 CEST = 01:00Z.
    let next = UnixTime(1_711_846_800); // 2024-03-31T01:00:00Z
    match r.decide(&berlin, t0, ANY) {
        Decision::NotYet {
            reason,
            check_in_at,
        } => {
            assert_eq!(reason, NotYetReason::OutsideWindow { next });
            assert!(
                check_in_at.0 >= next.0 && check_in_at.0 <= next.0 + 60,
                "{check_in_at:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // 00:59:59Z is 01:59:59 CET: still closed. 01:00Z is 03:00 CEST: open.
    assert!(!offered(&r.decide(&berlin, UnixTime(next.0 - 1), ANY)));
    assert!(offered(&r.decide(&berlin, next, ANY)));

    // The same instant is not in the window for a device in New York (21:00 EDT)
    // nor in Kolkata (06:30 IST); an unknown zone falls back to UTC (01:00: closed).
    for tz in ["America/New_York", "Asia/Kolkata", "Not/AZone"] {
        let mut d = dev(2);
        d.time_zone = tz.into();
        assert!(
            matches!(
                reason(&r.decide(&d, next, ANY)),
                NotYetReason::OutsideWindow { .. }
            ),
            "{tz}"
        );
    }
    // Kolkata's 02:00 is 20:30Z.
    let mut k = dev(3);
    k.time_zone = "Asia/Kolkata".into();
    assert!(offered(&r.decide(&k, UnixTime(1_711_830_600), ANY))); // 2024-03-30T20:30:00Z
}

#[test]
fn devices_join_when_they_come_to_match() {
    let clock = Clock::new();
    let mut r = Rollout::new(
        spec("region = eu and not tag = lab", vec![stage("all", 100)]),
        clock.now(),
        false,
    )
    .unwrap();
    let mut d = dev(1);
    d.region = "us".into();
    assert_eq!(r.decide(&d, clock.now(), ANY), Decision::None);
    assert!(r.device(&d.id).is_none());
    d.region = "eu".into(); // attribute changed
    assert!(offered(&r.decide(&d, clock.now(), ANY)));
    // A newly provisioned device joins the running rollout.
    assert!(offered(&r.decide(&dev(500), clock.now(), ANY)));
    // A lab device never matches; one already on the target version is skipped.
    let mut lab = dev(2);
    lab.tags.push("lab".into());
    assert_eq!(r.decide(&lab, clock.now(), ANY), Decision::None);
    let mut done = dev(3);
    done.version = Version::new(1, 1, 0);
    assert_eq!(r.decide(&done, clock.now(), ANY), Decision::None);
}

#[test]
fn pacing_caps_per_rollout_and_global() {
    let mut clock = Clock::new();
    let mut s = spec("", vec![stage("all", 100)]);
    s.max_concurrent = 3;
    s.offer_timeout_secs = 900;
    let mut r = Rollout::new(s, clock.now(), false).unwrap();
    for i in 0..3 {
        assert!(offered(&r.decide(&dev(i), clock.now(), ANY)));
    }
    assert_eq!(r.in_flight(), 3);
    match r.decide(&dev(3), clock.now(), ANY) {
        Decision::NotYet {
            reason,
            check_in_at,
        } => {
            assert_eq!(reason, NotYetReason::PacingCap);
            assert_eq!(
                check_in_at.0,
                clock.0 + aloft_rollout::rollout::DEFAULT_PACING_RETRY_SECS
            );
        }
        other => panic!("{other:?}"),
    }
    // A re-check-in of an offered device is re-offered without taking a new slot.
    assert!(offered(&r.decide(&dev(0), clock.now(), ANY)));
    assert_eq!(r.in_flight(), 3);
    // Finishing frees a slot.
    r.report(&dev(0).id, Report::Installed, clock.now())
        .unwrap();
    assert!(offered(&r.decide(&dev(3), clock.now(), ANY)));
    // The server-wide cap holds back even when the rollout has room.
    r.report(&dev(1).id, Report::Updated, clock.now()).unwrap();
    let full = GlobalLoad {
        in_flight: 50,
        max: 50,
    };
    assert_eq!(
        reason(&r.decide(&dev(4), clock.now(), full)),
        NotYetReason::PacingCap
    );
    assert!(offered(&r.decide(
        &dev(4),
        clock.now(),
        GlobalLoad {
            in_flight: 49,
            max: 50
        }
    )));
    // An offer that times out returns its slot.
    assert_eq!(
        reason(&r.decide(&dev(5), clock.now(), ANY)),
        NotYetReason::PacingCap
    );
    let t = r.tick(clock.advance(900));
    assert!(t.contains(&Transition::OfferExpired(dev(2).id)), "{t:?}");
    assert!(offered(&r.decide(&dev(5), clock.now(), ANY)));
}

#[test]
fn per_device_exclude_force_retry() {
    let clock = Clock::new();
    let now = clock.now();
    let stages = vec![stage("one", 1), stage("all", 100)];
    let mut r = Rollout::new(spec("", stages), now, false).unwrap();
    let late = devices_in_stage(&r, 1, 2);
    let early = devices_in_stage(&r, 0, 2);

    // Exclude (cancel one device): no offers, and its reports stop counting.
    assert!(offered(&r.decide(&early[0], now, ANY)));
    r.exclude(&early[0].id, now);
    assert_eq!(
        reason(&r.decide(&early[0], now, ANY)),
        NotYetReason::Excluded
    );
    r.report(&early[0].id, Report::RolledBack, now).unwrap();
    assert_eq!(r.device(&early[0].id).unwrap().rollbacks, 0);
    assert_eq!(r.counts()[0].excluded, 1);
    assert_eq!(r.in_flight(), 0);
    // Excluding a device that never checked in holds at its first check-in.
    r.exclude(&late[1].id, now);
    r.advance(now).unwrap();
    assert_eq!(
        reason(&r.decide(&late[1], now, ANY)),
        NotYetReason::Excluded
    );

    // Force: a device outside the current stage, while paused.
    let mut r = Rollout::new(
        spec("", vec![stage("one", 1), stage("all", 100)]),
        now,
        true,
    )
    .unwrap();
    assert_eq!(reason(&r.decide(&late[0], now, ANY)), NotYetReason::Paused);
    r.force(&late[0].id, now);
    assert!(offered(&r.decide(&late[0], now, ANY)));

    // Retry one failed device; retry-failed for all.
    r.resume().unwrap();
    assert!(offered(&r.decide(&early[0], now, ANY)));
    assert!(offered(&r.decide(&early[1], now, ANY)));
    r.report(
        &early[0].id,
        Report::Failed {
            detail: "disk".into(),
        },
        now,
    )
    .unwrap();
    r.report(&early[1].id, Report::RolledBack, now).unwrap();
    assert_eq!(
        reason(&r.decide(&early[0], now, ANY)),
        NotYetReason::AlreadyDone
    );
    r.retry(&early[0].id, now).unwrap();
    assert!(offered(&r.decide(&early[0], now, ANY)));
    assert_eq!(r.device(&early[0].id).unwrap().offers, 2);
    assert_eq!(r.retry_failed(now), 1);
    assert!(offered(&r.decide(&early[1], now, ANY)));
    assert_eq!(
        r.retry(&dev(99_999).id, now),
        Err(Error::UnknownDevice("dev-99999".into()))
    );
    assert!(r.report(&dev(99_999).id, Report::Updated, now).is_err());
}

#[test]
fn counts_by_stage_and_info() {
    let clock = Clock::new();
    let now = clock.now();
    let mut r = Rollout::new(
        spec("", vec![stage("one", 1), stage("all", 100)]),
        now,
        false,
    )
    .unwrap();
    let d = devices_in_stage(&r, 0, 3);
    for x in &d {
        r.decide(x, now, ANY);
    }
    r.report(&d[0].id, Report::Updated, now).unwrap();
    r.report(&d[1].id, Report::Installed, now).unwrap();
    let late = devices_in_stage(&r, 1, 1);
    r.decide(&late[0], now, ANY);
    let c = r.counts();
    assert_eq!(
        (c[0].targeted, c[0].updated, c[0].installed, c[0].offered),
        (3, 1, 1, 1)
    );
    assert_eq!((c[1].targeted, c[1].pending), (1, 1));
    let info = r.info();
    assert_eq!(info.rollout_id, "r-1");
    assert_eq!(info.counts.len(), 2);
    assert_eq!(info.counts[0].targeted, 3);
    assert_eq!(info.stages[1].percent, 100);
}

#[test]
fn stage_rules_are_enforced() {
    let bad = |stages: Vec<Stage>| Rollout::new(spec("", stages), UnixTime(0), false).unwrap_err();
    assert!(matches!(bad(vec![]), Error::InvalidStages(_)));
    assert!(
        matches!(bad(vec![stage("a", 10), test_stage()]), Error::InvalidStages(m) if m.contains("first"))
    );
    assert!(
        matches!(bad(vec![stage("a", 50), stage("b", 10)]), Error::InvalidStages(m) if m.contains("below"))
    );
    assert!(
        matches!(bad(vec![stage("a", 101)]), Error::InvalidStages(m) if m.contains("over 100"))
    );
    let p = Stage {
        max_failure_permille: 1001,
        ..stage("a", 100)
    };
    assert!(matches!(bad(vec![p]), Error::InvalidStages(m) if m.contains("1000")));
    assert!(matches!(
        bad((0..33).map(|_| stage("a", 100)).collect()),
        Error::InvalidStages(_)
    ));
}

#[test]
fn spec_from_create_request() {
    let req = pb::CreateRolloutRequest {
        rollout_id: "r-9".into(),
        release_id: "sensor-1.1.0".into(),
        selector: "region in (eu, us)".into(),
        stages: vec![
            pb::RolloutStage {
                name: "t".into(),
                test_devices_only: true,
                ..Default::default()
            },
            pb::RolloutStage {
                name: "all".into(),
                percent: 100,
                max_failure_permille: 50,
                ..Default::default()
            },
        ],
        window: Some(pb::MaintenanceWindow {
            start_minute: 120,
            end_minute: 240,
        }),
        max_concurrent: 7,
        silent_after_secs: 3600,
        start_paused: false,
        factory: None,
    };
    let s = RolloutSpec::from_proto(&req, Version::new(1, 1, 0)).unwrap();
    assert_eq!(s.max_concurrent, 7);
    assert_eq!(s.window, Some(MaintenanceWindow::new(120, 240).unwrap()));
    let info = Rollout::new(s, UnixTime(5), false).unwrap().info();
    assert_eq!(info.stages, req.stages);
    assert_eq!(info.window, req.window);
    assert_eq!(info.selector, req.selector);

    let with = |f: &dyn Fn(&mut pb::CreateRolloutRequest)| {
        let mut r = req.clone();
        f(&mut r);
        RolloutSpec::from_proto(&r, Version::new(1, 1, 0)).unwrap_err()
    };
    assert!(matches!(
        with(&|r| r.selector = "region <".into()),
        Error::Selector(_)
    ));
    assert_eq!(
        with(&|r| r.rollout_id = "a b".into()),
        Error::InvalidRolloutId
    );
    assert_eq!(
        with(&|r| r.release_id = String::new()),
        Error::InvalidField("release id")
    );
    assert_eq!(
        with(&|r| r.window = Some(pb::MaintenanceWindow {
            start_minute: 2000,
            end_minute: 0
        })),
        Error::InvalidWindow(2000)
    );
    assert!(matches!(
        with(&|r| r.stages[1].percent = 300),
        Error::InvalidStages(_)
    ));
    assert!(matches!(
        with(&|r| r.stages.clear()),
        Error::InvalidStages(_)
    ));
}

#[test]
fn restore_rebuilds_the_same_rollout() {
    use aloft_rollout::RolloutProgress;
    let mut clock = Clock::new();
    let stages = vec![
        Stage {
            min_sample: 4,
            max_failure_permille: 500,
            ..stage("half", 50)
        },
        stage("all", 100),
    ];
    let mut r = Rollout::new(spec("", stages.clone()), clock.now(), false).unwrap();
    let fleet: Vec<_> = (0..40).map(dev).collect();
    for d in &fleet {
        r.decide(d, clock.now(), ANY);
    }
    clock.advance(10);
    let offered_ids: Vec<_> = r
        .devices()
        .filter(|(_, rec)| rec.outcome == DeviceOutcome::Offered)
        .map(|(id, _)| id.clone())
        .collect();
    r.report(&offered_ids[0], Report::Updated, clock.now())
        .unwrap();
    r.report(
        &offered_ids[1],
        Report::Failed { detail: "x".into() },
        clock.now(),
    )
    .unwrap();
    r.pause("look").unwrap();
    r.resume().unwrap();
    r.exclude(&offered_ids[2], clock.now());

    let devices: Vec<_> = r
        .devices()
        .map(|(id, rec)| (id.clone(), rec.clone()))
        .collect();
    let back = Rollout::restore(spec("", stages.clone()), r.progress(), devices.clone()).unwrap();
    assert_eq!(back.info(), r.info());
    assert_eq!(back.progress(), r.progress());
    assert_eq!(back.counts(), r.counts());
    assert_eq!(back.in_flight(), r.in_flight());

    // Out-of-range indexes are refused.
    let bad = RolloutProgress {
        current_stage: 2,
        ..r.progress()
    };
    assert_eq!(
        Rollout::restore(spec("", stages.clone()), bad, devices.clone()).unwrap_err(),
        Error::InvalidField("restored current stage")
    );
    let mut twice = devices.clone();
    twice.push(devices[0].clone());
    assert_eq!(
        Rollout::restore(spec("", stages.clone()), r.progress(), twice).unwrap_err(),
        Error::InvalidField("restored device listed twice"),
        "a device counted twice would skew the tallies"
    );
    let mut bad_devices = devices;
    bad_devices[0].1.stage = Some(5);
    assert_eq!(
        Rollout::restore(spec("", stages), r.progress(), bad_devices).unwrap_err(),
        Error::InvalidField("restored device stage")
    );
}

/// Seen in a 500-device rollout with server restarts: a device that kept
/// checking in while installing was counted silent (and failed), because the
/// silence timer ignored its check-ins.
#[test]
fn a_device_that_keeps_checking_in_while_installing_is_not_silent() {
    let mut clock = Clock::new();
    let mut sp = spec("", vec![stage("all", 100)]);
    sp.silent_after_secs = 600;
    let mut r = Rollout::new(sp, clock.now(), false).unwrap();
    let d = dev(1);
    assert!(offered(&r.decide(&d, clock.now(), ANY)));
    r.report(&d.id, Report::Installed, clock.now()).unwrap();
    // An hour of check-ins five minutes apart (on the old version, and then
    // on the new one in its trial): never silent.
    for i in 0..12 {
        clock.advance(300);
        if i % 2 == 0 {
            assert_eq!(
                reason(&r.decide(&d, clock.now(), ANY)),
                NotYetReason::AlreadyDone
            );
        } else {
            r.seen(&d.id, clock.now());
        }
        assert!(r.tick(clock.now()).is_empty(), "check-in {i}");
    }
    // Then it goes quiet: silent after the period.
    assert!(r.tick(clock.advance(599)).is_empty());
    // (Its only device finished, as a failure: the rollout is done too.)
    assert_eq!(
        r.tick(clock.advance(1)),
        [Transition::Silent(d.id.clone()), Transition::Completed]
    );
    assert_eq!(r.device(&d.id).unwrap().outcome, DeviceOutcome::Silent);
}

/// Seen after server restarts: devices not yet in the current stage were
/// told to come back after the full check-in period, so a staged rollout
/// stalled for minutes after its stage could advance.
#[test]
fn devices_waiting_for_their_stage_come_back_when_it_may_advance() {
    let clock = Clock::new();
    let mut sp = spec(
        "",
        vec![
            Stage {
                soak_secs: 600,
                ..stage("first", 10)
            },
            stage("all", 100),
        ],
    );
    sp.check_in_secs = 3600;
    let mut r = Rollout::new(sp, clock.now(), false).unwrap();
    let waiting = devices_in_stage(&r, 1, 1).remove(0);
    let Decision::NotYet {
        reason: NotYetReason::NotInStage,
        check_in_at,
    } = r.decide(&waiting, clock.now(), ANY)
    else {
        panic!("expected NotInStage");
    };
    assert_eq!(
        check_in_at,
        UnixTime(clock.now().0 + 600),
        "at the end of the soak"
    );
    // Once the stage has soaked (waiting for confirmations), soon.
    let later = UnixTime(clock.now().0 + 700);
    let Decision::NotYet { check_in_at, .. } = r.decide(&waiting, later, ANY) else {
        panic!("expected NotYet");
    };
    assert_eq!(
        check_in_at,
        UnixTime(later.0 + aloft_rollout::rollout::STAGE_WAIT_RETRY_SECS)
    );
}

/// An operation whose store write fails is undone: the engine's state is
/// exactly what it was before.
#[test]
fn a_journaled_operation_rolls_back_to_the_state_before_it() {
    let mut clock = Clock::new();
    let mut r = Rollout::new(spec("", vec![stage("all", 100)]), clock.now(), false).unwrap();
    for i in 0..3 {
        assert!(offered(&r.decide(&dev(i), clock.now(), ANY)));
    }
    r.report(&dev(0).id, Report::Updated, clock.now()).unwrap();
    let (info, devices) = (
        r.info(),
        r.devices()
            .map(|(i, d)| (i.clone(), d.clone()))
            .collect::<Vec<_>>(),
    );

    r.begin();
    r.report(
        &dev(1).id,
        Report::Failed { detail: "x".into() },
        clock.advance(5),
    )
    .unwrap();
    assert!(offered(&r.decide(&dev(7), clock.now(), ANY)));
    r.pause("operator").unwrap();
    let mut changed = r.changed_devices();
    changed.sort();
    assert_eq!(changed, [dev(1).id, dev(7).id]);
    assert!(r.progress_changed());
    r.rollback();
    assert_eq!(r.info(), info);
    assert_eq!(
        r.devices()
            .map(|(i, d)| (i.clone(), d.clone()))
            .collect::<Vec<_>>(),
        devices
    );
    assert_eq!(r.state(), &RolloutState::Active);
    // A committed operation stays.
    r.begin();
    r.report(&dev(2).id, Report::Updated, clock.now()).unwrap();
    r.commit();
    assert_eq!(
        r.device(&dev(2).id).unwrap().outcome,
        DeviceOutcome::Updated
    );
}
