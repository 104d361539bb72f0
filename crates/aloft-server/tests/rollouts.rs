//! Rollouts through real gRPC, driven by an injected clock: stage progression,
//! the health gate, maintenance windows, pacing, per-device control, restart.
#![allow(missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_protocol::UnixTime;
use aloft_protocol::pb::{self, ReportKind, server_to_device::Kind};
use aloft_server::ServerConfig;
use aloft_server::clock::{Clock as _, ManualClock};
use common::{
    Conn, Harness, Keys, TestDevice, TestStore, authed, connect, now, start_with, upload,
};
use tonic::Code;

const RELEASE: &str = "sensor-1.1.0";

struct Setup {
    h: Harness,
    clock: Arc<ManualClock>,
    events: Arc<Mutex<Vec<pb::Event>>>,
}

fn fast(config: &mut ServerConfig, clock: &Arc<ManualClock>) {
    config.clock = clock.clone();
    config.limits.rollout_tick = Duration::from_millis(20);
    config.limits.check_in_jitter_secs = 0;
    config.limits.next_check_in_secs = 300;
    config.limits.notify_jitter = Duration::ZERO;
}

/// A server on a manual clock with a TrustRoot, release 1.1.0 and a live event log.
async fn setup(tweak: impl FnOnce(&mut ServerConfig)) -> Setup {
    let clock = Arc::new(ManualClock::new(UnixTime(now())));
    let c = clock.clone();
    let h = start_with(false, move |config| {
        fast(config, &c);
        tweak(config);
    })
    .await;
    h.install_trust_root().await;
    let release = h.keys.release(RELEASE, "1.1.0", 700, now() + 7 * 86_400);
    h.upload(&release, 4096).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut stream = h
        .admin()
        .watch_events(authed(pb::WatchEventsRequest::default(), &h.token()))
        .await
        .unwrap()
        .into_inner();
    let log = events.clone();
    tokio::spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            log.lock().unwrap().push(e);
        }
    });
    Setup { h, clock, events }
}

impl Setup {
    async fn device(&self, id: &str, f: impl FnOnce(&mut pb::DeviceAttributes)) -> TestDevice {
        let dev = TestDevice::new(id);
        let mut req = dev.register_request();
        f(req.attributes.as_mut().unwrap());
        self.h
            .admin()
            .register_device(authed(req, &self.h.token()))
            .await
            .unwrap();
        dev
    }

    async fn create(
        &self,
        req: pb::CreateRolloutRequest,
    ) -> Result<pb::RolloutInfo, tonic::Status> {
        self.h
            .admin()
            .create_rollout(authed(req, &self.h.token()))
            .await
            .map(|r| r.into_inner())
    }

    async fn get(&self, id: &str) -> pb::RolloutInfo {
        self.h
            .admin()
            .get_rollout(authed(
                pb::GetRolloutRequest {
                    rollout_id: id.into(),
                },
                &self.h.token(),
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn control(
        &self,
        id: &str,
        action: pb::RolloutAction,
        token: &str,
    ) -> Result<pb::RolloutInfo, tonic::Status> {
        self.h
            .admin()
            .control_rollout(authed(
                pb::ControlRolloutRequest {
                    rollout_id: id.into(),
                    action: action as i32,
                    reason: "test".into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn control_device(
        &self,
        id: &str,
        device: &str,
        action: pb::DeviceAction,
        token: &str,
    ) -> Result<pb::RolloutInfo, tonic::Status> {
        self.h
            .admin()
            .control_rollout_device(authed(
                pb::ControlRolloutDeviceRequest {
                    rollout_id: id.into(),
                    device_id: device.into(),
                    action: action as i32,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Connects `dev` and returns the session and what the server said after the Welcome.
    async fn hello(&self, dev: &TestDevice) -> (Conn, Option<Kind>) {
        let (mut conn, _) = dev.connect(&self.h.channel, vec![]).await.unwrap();
        let said = maybe_next(&mut conn).await;
        (conn, said)
    }

    /// Waits (up to 5 s) for an event of `kind` (and `rollout`).
    async fn event(&self, kind: &str, rollout: &str) -> pb::Event {
        for _ in 0..250 {
            if let Some(e) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.kind == kind && e.rollout_id == rollout)
            {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {kind} event for {rollout}; got {:?}",
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.kind.clone())
                .collect::<Vec<_>>()
        );
    }

    /// Waits (up to 5 s) until the rollout satisfies `f`.
    async fn until(&self, id: &str, f: impl Fn(&pb::RolloutInfo) -> bool) -> pb::RolloutInfo {
        for _ in 0..250 {
            let info = self.get(id).await;
            if f(&info) {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "rollout {id} never reached the state: {:?}",
            self.get(id).await
        );
    }
}

async fn maybe_next(conn: &mut Conn) -> Option<Kind> {
    // Long enough for a decision on a loaded machine (and on PostgreSQL).
    match tokio::time::timeout(Duration::from_millis(1500), conn.inbound.message()).await {
        Err(_) => None,
        Ok(Ok(Some(m))) => m.kind,
        Ok(other) => panic!("session ended: {other:?}"),
    }
}

fn offered(k: &Option<Kind>) -> bool {
    matches!(k, Some(Kind::Offer(_)))
}

fn later(k: &Option<Kind>) -> u64 {
    match k {
        Some(Kind::CheckInLater(l)) => l.after_secs,
        other => panic!("expected CheckInLater, got {other:?}"),
    }
}

fn stage(name: &str, percent: u32) -> pb::RolloutStage {
    pb::RolloutStage {
        name: name.into(),
        percent,
        test_devices_only: false,
        soak_secs: 0,
        min_sample: 0,
        max_failure_permille: 1000,
    }
}

fn test_stage(soak_secs: u64, min_sample: u32) -> pb::RolloutStage {
    pb::RolloutStage {
        test_devices_only: true,
        soak_secs,
        min_sample,
        ..stage("test", 0)
    }
}

fn rollout(id: &str, stages: Vec<pb::RolloutStage>) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        rollout_id: id.into(),
        release_id: RELEASE.into(),
        stages,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_advance_after_soak_and_late_stages_wait() {
    let s = setup(|_| {}).await;
    let t1 = s.device("t1", |a| a.test_device = true).await;
    let t2 = s.device("t2", |a| a.test_device = true).await;
    let d1 = s.device("d1", |_| {}).await;
    s.create(rollout("r1", vec![test_stage(3600, 2), stage("all", 100)]))
        .await
        .unwrap();

    // Stage 0 holds only test devices; the others are told when to come back.
    let (_c, said) = s.hello(&d1).await;
    assert_eq!(later(&said), 300);
    for (t, n) in [(&t1, b"t1"), (&t2, b"t2")] {
        let (mut c, said) = s.hello(t).await;
        assert!(offered(&said), "{said:?}");
        c.report(ReportKind::Installed, RELEASE, &[n[0], n[1], 1])
            .await;
        c.report(ReportKind::Confirmed, RELEASE, &[n[0], n[1], 2])
            .await;
    }
    let info = s.get("r1").await;
    assert_eq!(info.counts[0].updated, 2);
    // Not before the soak is over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("r1").await.current_stage, 0);
    s.clock.advance(3600);
    let info = s.until("r1", |i| i.current_stage == 1).await;
    assert_eq!(info.state, pb::RolloutState::Active as i32);
    let e = s.event("stage_advanced", "r1").await;
    assert!(e.detail.contains("stage 1 (all)"), "{e:?}");
    let (_c, said) = s.hello(&d1).await;
    assert!(offered(&said), "{said:?}");
    assert_eq!(s.get("r1").await.counts[1].offered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gate_pauses_one_failure_past_the_threshold() {
    let s = setup(|_| {}).await;
    let mut devs = Vec::new();
    for i in 0..7 {
        devs.push(s.device(&format!("g{i}"), |_| {}).await);
    }
    s.create(rollout(
        "g",
        vec![pb::RolloutStage {
            min_sample: 4,
            max_failure_permille: 250,
            ..stage("all", 100)
        }],
    ))
    .await
    .unwrap();
    let mut conns = Vec::new();
    for d in &devs[..5] {
        let (c, said) = s.hello(d).await;
        assert!(offered(&said), "{said:?}");
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate().take(3) {
        c.report(ReportKind::Confirmed, RELEASE, &[b'c', i as u8])
            .await;
    }
    conns[3]
        .report(ReportKind::InstallFailed, RELEASE, b"f3")
        .await;
    // 1 of 4 = 250 per mille: exactly at the threshold, still active.
    let info = s.get("g").await;
    assert_eq!(info.state, pb::RolloutState::Active as i32, "{info:?}");
    let (_c, said) = s.hello(&devs[5]).await;
    assert!(offered(&said));
    // One more failure: 2 of 5 = 400 > 250.
    conns[4]
        .report(ReportKind::RolledBack, RELEASE, b"f4")
        .await;
    let info = s.get("g").await;
    assert_eq!(info.state, pb::RolloutState::Paused as i32);
    assert!(
        info.pause_reason.contains("2 of 5"),
        "{}",
        info.pause_reason
    );
    let e = s.event("rollout_paused", "g").await;
    assert_eq!(e.detail, info.pause_reason);
    // While paused no new directives go out.
    let (_c, said) = s.hello(&devs[6]).await;
    assert_eq!(later(&said), 300);
    s.control("g", pb::RolloutAction::Resume, &s.h.token())
        .await
        .unwrap();
    let (_c, said) = s.hello(&devs[6]).await;
    assert!(offered(&said));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_count_as_failures_at_the_tick() {
    let s = setup(|_| {}).await;
    let d = s.device("s1", |_| {}).await;
    let mut req = rollout(
        "s",
        vec![pb::RolloutStage {
            min_sample: 1,
            max_failure_permille: 0,
            ..stage("all", 100)
        }],
    );
    req.silent_after_secs = 600;
    s.create(req).await.unwrap();
    let (mut c, said) = s.hello(&d).await;
    assert!(offered(&said));
    c.report(ReportKind::Installed, RELEASE, b"i").await;
    drop(c);
    s.clock.advance(600);
    let e = s.event("device_silent", "s").await;
    assert_eq!(e.device_id, "s1");
    let info = s
        .until("s", |i| i.state == pb::RolloutState::Paused as i32)
        .await;
    assert!(
        info.pause_reason.contains("1 of 1"),
        "{}",
        info.pause_reason
    );
    assert_eq!(info.counts[0].failed, 1, "silent counts as failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_in_device_local_time() {
    let s = setup(|_| {}).await;
    let berlin = s
        .device("w-berlin", |a| a.time_zone = "Europe/Berlin".into())
        .await;
    let tokyo = s
        .device("w-tokyo", |a| a.time_zone = "Asia/Tokyo".into())
        .await;
    // 2026-01-15 12:00 UTC: 13:00 in Berlin (CET), 21:00 in Tokyo.
    let noon = 1_768_478_400;
    s.clock.set(UnixTime(noon));
    let mut req = rollout("w", vec![stage("all", 100)]);
    req.window = Some(pb::MaintenanceWindow {
        start_minute: 120,
        end_minute: 240,
    });
    s.create(req).await.unwrap();
    // Next 02:00 CET is 01:00 UTC tomorrow; next 02:00 JST is 17:00 UTC today.
    let (_c, said) = s.hello(&berlin).await;
    assert_eq!(later(&said), 13 * 3600);
    let (_c, said) = s.hello(&tokyo).await;
    assert_eq!(later(&said), 5 * 3600);
    s.clock.set(UnixTime(noon + 5 * 3600 + 60));
    let (_c, said) = s.hello(&tokyo).await;
    assert!(offered(&said), "{said:?}");
    let (_c, said) = s.hello(&berlin).await;
    assert_eq!(later(&said), 8 * 3600 - 60);
    s.clock.set(UnixTime(noon + 13 * 3600 + 1800));
    let (_c, said) = s.hello(&berlin).await;
    assert!(offered(&said), "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_across_daylight_saving_changes() {
    let s = setup(|_| {}).await;
    let berlin = s
        .device("dst-berlin", |a| a.time_zone = "Europe/Berlin".into())
        .await;
    let mut req = rollout("dst", vec![stage("all", 100)]);
    req.window = Some(pb::MaintenanceWindow {
        start_minute: 180,
        end_minute: 300,
    });
    // Autumn first (the offer in spring would finish the device).
    // 2026-10-24 12:00 UTC is 14:00 CEST; that night the clocks go back, so
    // 03:00 local is 02:00 UTC, 14 h away (13 h with the summer offset).
    let autumn = 1_792_843_200;
    s.clock.set(UnixTime(autumn));
    s.create(req).await.unwrap();
    let (_c, said) = s.hello(&berlin).await;
    assert_eq!(later(&said), 14 * 3600);
    // 2026-03-28 12:00 UTC is 13:00 CET; that night the clocks go forward,
    // so 03:00 local is 01:00 UTC, 13 h away (14 h with the winter offset).
    let spring = 1_774_699_200;
    s.clock.set(UnixTime(spring));
    let (_c, said) = s.hello(&berlin).await;
    assert_eq!(later(&said), 13 * 3600);
    // 00:59 UTC is 01:59 CET: still outside, one minute to go.
    s.clock.set(UnixTime(spring + 13 * 3600 - 60));
    let (_c, said) = s.hello(&berlin).await;
    assert_eq!(later(&said), 60);
    // 01:00 UTC is 03:00 CEST: inside.
    s.clock.set(UnixTime(spring + 13 * 3600));
    let (_c, said) = s.hello(&berlin).await;
    assert!(offered(&said), "{said:?}");
}

/// Devices suspected broken, served through GetDevice and ListDevices.
async fn broken_ids(s: &Setup) -> Vec<String> {
    s.h.admin()
        .list_devices(authed(
            pb::ListDevicesRequest {
                suspected_broken: true,
                ..Default::default()
            },
            &s.h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .devices
        .into_iter()
        .map(|d| d.device_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rollbacks_and_silence_after_an_update_mark_devices_broken() {
    let s = setup(|c| {
        c.limits.tracking.broken_after_rollbacks = 2;
        c.limits.tracking.rollback_window_secs = 86_400;
        c.limits.tracking.silent_after_secs = 600;
    })
    .await;
    let flaky = s.device("b-flaky", |_| {}).await;
    let silent = s.device("b-silent", |_| {}).await;
    let fine = s.device("b-fine", |_| {}).await;
    s.create(rollout("b", vec![stage("all", 100)]))
        .await
        .unwrap();
    let mut conns = Vec::new();
    for d in [&flaky, &silent, &fine] {
        let (c, said) = s.hello(d).await;
        assert!(offered(&said), "{said:?}");
        conns.push(c);
    }
    let [mut flaky_c, mut silent_c, mut fine_c] = conns.try_into().ok().unwrap();
    flaky_c.report(ReportKind::RolledBack, RELEASE, b"r1").await;
    // A re-sent report is one rollback, not two.
    flaky_c.report(ReportKind::RolledBack, RELEASE, b"r1").await;
    let info = s.h.device_info("b-flaky").await;
    assert_eq!(info.recent_rollbacks, 1);
    assert_eq!(info.suspected_broken, pb::BrokenReason::None as i32);
    assert!(broken_ids(&s).await.is_empty());
    // A second rollback (status already ROLLED_BACK) still counts.
    flaky_c.report(ReportKind::RolledBack, RELEASE, b"r2").await;
    let info = s.h.device_info("b-flaky").await;
    assert_eq!(info.recent_rollbacks, 2);
    assert_eq!(info.rollback_times.len(), 2);
    assert_eq!(
        info.suspected_broken,
        pb::BrokenReason::RepeatedRollbacks as i32
    );

    silent_c.report(ReportKind::Installed, RELEASE, b"i").await;
    fine_c.report(ReportKind::Installed, RELEASE, b"i").await;
    fine_c.report(ReportKind::Confirmed, RELEASE, b"c").await;
    drop((silent_c, fine_c));
    s.clock.advance(599);
    assert_eq!(broken_ids(&s).await, ["b-flaky"]);
    s.clock.advance(1);
    // b-fine checks in a full silent period after its update: healthy.
    let _ = s.hello(&fine).await;
    assert_eq!(broken_ids(&s).await, ["b-flaky", "b-silent"]);
    let info = s.h.device_info("b-silent").await;
    assert_eq!(
        info.suspected_broken,
        pb::BrokenReason::SilentAfterUpdate as i32
    );
    assert_eq!(info.status, pb::DeviceStatus::Installed as i32);
    // b-fine's later silence makes it stale, not broken.
    s.clock.advance(10_000);
    assert_eq!(broken_ids(&s).await, ["b-flaky", "b-silent"]);
    // The rollbacks leave the one-day look-back.
    s.clock.advance(86_400);
    assert_eq!(broken_ids(&s).await, ["b-silent"]);
    let info = s.h.device_info("b-flaky").await;
    assert_eq!(info.recent_rollbacks, 0);
    assert_eq!(info.rollback_times.len(), 2, "history is kept");
    // Silent b-silent comes back: no longer suspected.
    let _ = s.hello(&silent).await;
    assert!(broken_ids(&s).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_caps_per_server_and_per_rollout() {
    let s = setup(|c| c.limits.max_concurrent_downloads = 2).await;
    let mut devs = Vec::new();
    for i in 0..3 {
        devs.push(s.device(&format!("p{i}"), |_| {}).await);
    }
    s.create(rollout("p", vec![stage("all", 100)]))
        .await
        .unwrap();
    let (mut c0, said) = s.hello(&devs[0]).await;
    assert!(offered(&said));
    let (_c1, said) = s.hello(&devs[1]).await;
    assert!(offered(&said));
    // The server's cap is full: come back after the pacing retry (300 s).
    let (_c2, said) = s.hello(&devs[2]).await;
    assert_eq!(later(&said), 300);
    c0.report(ReportKind::Confirmed, RELEASE, b"ok").await;
    let (_c2, said) = s.hello(&devs[2]).await;
    assert!(offered(&said));

    // A rollout's own cap.
    let s = setup(|_| {}).await;
    let a = s.device("q0", |_| {}).await;
    let b = s.device("q1", |_| {}).await;
    let mut req = rollout("q", vec![stage("all", 100)]);
    req.max_concurrent = 1;
    s.create(req).await.unwrap();
    let (_ca, said) = s.hello(&a).await;
    assert!(offered(&said));
    let (_cb, said) = s.hello(&b).await;
    assert_eq!(later(&said), 300);
    // A device already downloading gets its offer again (resume), cap or not.
    let (_ca, said) = s.hello(&a).await;
    assert!(offered(&said));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_force_retry_and_their_refusals() {
    let s = setup(|_| {}).await;
    let d1 = s.device("x1", |_| {}).await;
    let d2 = s.device("x2", |_| {}).await;
    let d3 = s.device("x3", |_| {}).await;
    s.create(rollout("x", vec![test_stage(3600, 1), stage("all", 100)]))
        .await
        .unwrap();
    let token = s.h.token();
    use pb::DeviceAction as D;

    // Force: offered although its stage is not reached.
    let (_c, said) = s.hello(&d1).await;
    assert_eq!(later(&said), 300);
    s.control_device("x", "x1", D::Force, &token).await.unwrap();
    let (mut c1, said) = s.hello(&d1).await;
    assert!(offered(&said), "{said:?}");
    c1.report(ReportKind::InstallFailed, RELEASE, b"fail").await;
    assert_eq!(
        s.h.device_info("x1").await.status,
        pb::DeviceStatus::Failed as i32
    );
    let (_c, said) = s.hello(&d1).await;
    assert_eq!(said, None, "a failed device is not offered again");
    // Retry: back to pending, and (still forced) offered again.
    let info = s.control_device("x", "x1", D::Retry, &token).await.unwrap();
    assert_eq!(info.counts[1].failed, 0);
    let (_c, said) = s.hello(&d1).await;
    assert!(offered(&said), "{said:?}");
    assert_eq!(
        s.h.device_info("x1").await.status,
        pb::DeviceStatus::Offered as i32
    );

    // Exclude: never offered, even once its stage is reached.
    s.control_device("x", "x2", D::Exclude, &token)
        .await
        .unwrap();
    s.control("x", pb::RolloutAction::Advance, &token)
        .await
        .unwrap();
    let (_c, said) = s.hello(&d2).await;
    assert_eq!(said, None);
    let (_c, said) = s.hello(&d3).await;
    assert!(offered(&said));
    assert_eq!(s.get("x").await.counts[1].excluded, 1);
    let e = s.event("device_excluded", "x").await;
    assert_eq!(e.device_id, "x2");

    // Refusals.
    let code = |r: Result<pb::RolloutInfo, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(s.control_device("nope", "x1", D::Exclude, &token).await),
        Code::NotFound
    );
    assert_eq!(
        code(s.control_device("x", "no-such", D::Exclude, &token).await),
        Code::NotFound
    );
    assert_eq!(
        code(s.control_device("x", "bad id", D::Exclude, &token).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(s.control_device("x", "x1", D::Unspecified, &token).await),
        Code::InvalidArgument
    );
    let d4 = s.device("x4", |_| {}).await;
    drop(d4);
    let err = s
        .control_device("x", "x4", D::Retry, &token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("not part of rollout x"), "{err:?}");
    let viewer = viewer_token(&s.h).await;
    assert_eq!(
        code(s.control_device("x", "x1", D::Exclude, &viewer).await),
        Code::PermissionDenied
    );
    s.control("x", pb::RolloutAction::Cancel, &token)
        .await
        .unwrap();
    let err = s
        .control_device("x", "x1", D::Force, &token)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("ended"), "{err:?}");
}

async fn viewer_token(h: &Harness) -> String {
    h.admin()
        .create_token(authed(
            pb::CreateTokenRequest {
                name: "viewer".into(),
                role: pb::Role::Viewer as i32,
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_control_and_creation_refusals() {
    use pb::RolloutAction as A;
    let s = setup(|_| {}).await;
    let token = s.h.token();
    let code = |r: Result<pb::RolloutInfo, tonic::Status>| r.unwrap_err();

    let bad = |f: fn(&mut pb::CreateRolloutRequest)| {
        let mut r = rollout("c", vec![stage("all", 100)]);
        f(&mut r);
        r
    };
    let err = code(s.create(bad(|r| r.selector = "colour = red".into())).await);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("invalid selector"), "{err:?}");
    let err = code(
        s.create(bad(|r| r.stages = vec![stage("a", 50), stage("b", 10)]))
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("below the previous"), "{err:?}");
    let err = code(
        s.create(bad(|r| r.stages = vec![stage("a", 50), test_stage(0, 0)]))
            .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = code(
        s.create(bad(|r| {
            r.window = Some(pb::MaintenanceWindow {
                start_minute: 1500,
                end_minute: 10,
            })
        }))
        .await,
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("1500"), "{err:?}");
    let err = code(s.create(bad(|r| r.rollout_id = ".hidden".into())).await);
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = code(s.create(bad(|r| r.release_id = "no-such".into())).await);
    assert_eq!(err.code(), Code::NotFound);
    s.create(bad(|_| {})).await.unwrap();
    assert_eq!(
        code(s.create(bad(|_| {})).await).code(),
        Code::AlreadyExists
    );

    assert_eq!(
        code(s.control("nope", A::Pause, &token).await).code(),
        Code::NotFound
    );
    assert_eq!(
        code(s.control("c", A::Unspecified, &token).await).code(),
        Code::InvalidArgument
    );
    let err = code(s.control("c", A::Resume, &token).await);
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("active"), "{err:?}");
    let viewer = viewer_token(&s.h).await;
    assert_eq!(
        code(s.control("c", A::Pause, &viewer).await).code(),
        Code::PermissionDenied
    );
    let paused = s.control("c", A::Pause, &token).await.unwrap();
    assert_eq!(paused.pause_reason, "test");
    // Advancing the last stage completes the rollout.
    let done = s.control("c", A::Advance, &token).await.unwrap();
    assert_eq!(done.state, pb::RolloutState::Completed as i32);
    s.event("rollout_completed", "c").await;
    for action in [A::Resume, A::Cancel, A::Advance, A::RetryFailed, A::Pause] {
        let err = code(s.control("c", action, &token).await);
        assert_eq!(err.code(), Code::FailedPrecondition, "{action:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_comes_to_match_joins() {
    let s = setup(|_| {}).await;
    let d = s.device("m1", |a| a.region = "eu".into()).await;
    let mut req = rollout("m", vec![stage("all", 100)]);
    req.selector = "region = us and version < 1.1.0".into();
    s.create(req).await.unwrap();
    let (_c, said) = s.hello(&d).await;
    assert_eq!(said, None);
    assert_eq!(s.get("m").await.counts[0].targeted, 0);
    let mut attrs = d.register_request().attributes.unwrap();
    attrs.region = "us".into();
    s.h.admin()
        .update_device(authed(
            pb::UpdateDeviceRequest {
                device_id: "m1".into(),
                attributes: Some(attrs),
            },
            &s.h.token(),
        ))
        .await
        .unwrap();
    let (_c, said) = s.hello(&d).await;
    assert!(offered(&said), "{said:?}");
    assert_eq!(s.get("m").await.counts[0].offered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = Keys::new();
    let clock = Arc::new(ManualClock::new(UnixTime(now())));
    let store = TestStore::new();
    let config = || {
        let mut c = ServerConfig::new(&data, "127.0.0.1:0".parse().unwrap());
        c.store = store.backend();
        fast(&mut c, &clock);
        c
    };
    let server = aloft_server::start(config()).await.unwrap();
    let token = server.admin_token().to_owned();
    let ch = connect(server.local_addr(), None).await;
    let admin = pb::admin_service_client::AdminServiceClient::new(ch.clone());
    admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(keys.trust_root(&server.server_public_key(), 1)),
            },
            &token,
        ))
        .await
        .unwrap();
    let release = keys.release(RELEASE, "1.1.0", 700, now() + 86_400);
    upload(&admin, &token, &release, release.payload.len() as u64, 4096)
        .await
        .unwrap();
    let t1 = TestDevice::new("t1");
    let mut reg = t1.register_request();
    reg.attributes.as_mut().unwrap().test_device = true;
    admin
        .clone()
        .register_device(authed(reg, &token))
        .await
        .unwrap();
    let d1 = TestDevice::new("d1");
    admin
        .clone()
        .register_device(authed(d1.register_request(), &token))
        .await
        .unwrap();
    admin
        .clone()
        .create_rollout(authed(
            rollout("r", vec![test_stage(3600, 1), stage("all", 100)]),
            &token,
        ))
        .await
        .unwrap();
    let (mut c, _) = t1.connect(&ch, vec![]).await.unwrap();
    assert!(offered(&maybe_next(&mut c).await));
    c.report(ReportKind::Confirmed, RELEASE, b"ok").await;
    drop(c);
    let (mut c, _) = d1.connect(&ch, vec![]).await.unwrap();
    assert_eq!(later(&maybe_next(&mut c).await), 300, "not in stage yet");
    drop(c);
    admin
        .clone()
        .control_rollout_device(authed(
            pb::ControlRolloutDeviceRequest {
                rollout_id: "r".into(),
                device_id: "d1".into(),
                action: pb::DeviceAction::Exclude as i32,
            },
            &token,
        ))
        .await
        .unwrap();
    let before = admin
        .clone()
        .control_rollout(authed(
            pb::ControlRolloutRequest {
                rollout_id: "r".into(),
                action: pb::RolloutAction::Pause as i32,
                reason: "night".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let history = |admin: pb::admin_service_client::AdminServiceClient<_>| {
        let token = token.clone();
        async move {
            admin
                .clone()
                .get_rollout_history(authed(
                    pb::GetRolloutHistoryRequest {
                        rollout_id: "r".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .samples
        }
    };
    let samples_before = history(admin.clone()).await;
    assert_eq!(
        samples_before.last().map(|s| s.state),
        Some(pb::RolloutState::Paused as i32)
    );
    server.shutdown().await.unwrap();

    let server = aloft_server::start(config()).await.unwrap();
    let ch = connect(server.local_addr(), None).await;
    let admin = pb::admin_service_client::AdminServiceClient::new(ch.clone());
    let get = || {
        let admin = admin.clone();
        let token = token.clone();
        async move {
            admin
                .clone()
                .get_rollout(authed(
                    pb::GetRolloutRequest {
                        rollout_id: "r".into(),
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let after = get().await;
    assert_eq!(after, before);
    // The history came back, and goes on from where it was.
    assert_eq!(history(admin.clone()).await, samples_before);
    assert_eq!(after.pause_reason, "night");
    assert_eq!(after.counts[0].updated, 1);
    assert_eq!(after.counts[1].excluded, 1);
    // The engine state came back too: resume, soak, advance by itself.
    admin
        .clone()
        .control_rollout(authed(
            pb::ControlRolloutRequest {
                rollout_id: "r".into(),
                action: pb::RolloutAction::Resume as i32,
                reason: String::new(),
            },
            &token,
        ))
        .await
        .unwrap();
    clock.advance(3600);
    let mut advanced = false;
    for _ in 0..250 {
        if get().await.current_stage == 1 {
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(advanced);
    let samples = history(admin.clone()).await;
    assert_eq!(samples[..samples_before.len()], samples_before[..]);
    let new: Vec<_> = samples[samples_before.len()..]
        .iter()
        .map(|s| (s.state, s.current_stage))
        .collect();
    assert_eq!(
        new,
        [
            (pb::RolloutState::Active as i32, 0),
            (pb::RolloutState::Active as i32, 1)
        ]
    );
    // The excluded device stays excluded; the updated one is done.
    let (mut c, _) = d1.connect(&ch, vec![]).await.unwrap();
    assert_eq!(maybe_next(&mut c).await, None);
    let (mut c, _) = t1.connect(&ch, vec![]).await.unwrap();
    assert_eq!(maybe_next(&mut c).await, None);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_devices_are_offered_when_a_rollout_resumes() {
    let s = setup(|_| {}).await;
    let d = s.device("n1", |_| {}).await;
    let (mut c, said) = s.hello(&d).await;
    assert_eq!(said, None, "no rollout yet");
    let mut req = rollout("n", vec![stage("all", 100)]);
    req.start_paused = true;
    s.create(req).await.unwrap();
    assert_eq!(maybe_next(&mut c).await, None, "paused: nothing pushed");
    s.control("n", pb::RolloutAction::Resume, &s.h.token())
        .await
        .unwrap();
    // Offered on the open session, without a new check-in.
    let got = c.next().await.unwrap();
    assert!(matches!(got, Kind::Offer(_)), "{got:?}");
}

impl Setup {
    async fn history(
        &self,
        id: &str,
        since: u64,
        limit: u32,
        token: &str,
    ) -> Result<Vec<pb::RolloutSample>, tonic::Status> {
        self.h
            .admin()
            .get_rollout_history(authed(
                pb::GetRolloutHistoryRequest {
                    rollout_id: id.into(),
                    since,
                    limit,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().samples)
    }

    /// Waits (up to 5 s) until rollout `id` has `n` samples.
    async fn samples(&self, id: &str, n: usize) -> Vec<pb::RolloutSample> {
        let mut got = Vec::new();
        for _ in 0..250 {
            got = self.history(id, 0, 0, &self.h.token()).await.unwrap();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "rollout {id} has {} samples, expected {n}: {got:?}",
            got.len()
        );
    }
}

fn total(s: &pb::RolloutSample, f: fn(&pb::StageCounts) -> u32) -> u32 {
    s.counts.iter().map(f).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_samples_progress_at_most_once_per_interval_and_state_changes_at_once() {
    let s = setup(|c| c.limits.rollout_sample_interval = Duration::from_secs(60)).await;
    let t0 = s.clock.now().0;
    let d0 = s.device("d0", |_| {}).await;
    let d1 = s.device("d1", |_| {}).await;
    s.create(rollout("h", vec![stage("all", 100)]))
        .await
        .unwrap();
    // Created: one sample, nobody targeted yet.
    let h = s.samples("h", 1).await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].time, t0);
    assert_eq!(h[0].state, pb::RolloutState::Active as i32);
    assert_eq!(total(&h[0], |c| c.targeted), 0);

    // Offers change the counts, but the interval has not passed.
    let (mut c0, said) = s.hello(&d0).await;
    assert!(offered(&said));
    let (_c1, said) = s.hello(&d1).await;
    assert!(offered(&said));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.samples("h", 1).await.len(), 1, "rate-limited");

    // Once it has, the next tick samples.
    s.clock.advance(60);
    let h = s.samples("h", 2).await;
    assert_eq!(h[1].time, t0 + 60);
    assert_eq!(total(&h[1], |c| c.offered), 2);
    assert_eq!(h[1].counts[0].stage, "all");

    // A report within the interval waits; a pause is sampled at once, with
    // the report's counts.
    s.clock.advance(10);
    c0.report(ReportKind::Confirmed, RELEASE, b"h0").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.samples("h", 2).await.len(), 2, "rate-limited");
    s.control("h", pb::RolloutAction::Pause, &s.h.token())
        .await
        .unwrap();
    let h = s.history("h", 0, 0, &s.h.token()).await.unwrap();
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[2].time, t0 + 70);
    assert_eq!(h[2].state, pb::RolloutState::Paused as i32);
    assert_eq!(total(&h[2], |c| c.updated), 1);
    assert_eq!(total(&h[2], |c| c.offered), 1);
    // Nothing changed since: no more samples however long we wait.
    s.clock.advance(600);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.samples("h", 3).await.len(), 3);

    // since and limit select; a viewer may read.
    let viewer = viewer_token(&s.h).await;
    let times = |v: Vec<pb::RolloutSample>| v.iter().map(|x| x.time).collect::<Vec<_>>();
    assert_eq!(
        times(s.history("h", t0 + 1, 0, &viewer).await.unwrap()),
        [t0 + 60, t0 + 70]
    );
    assert_eq!(
        times(s.history("h", 0, 1, &viewer).await.unwrap()),
        [t0 + 70]
    );
    assert!(
        s.history("h", t0 + 71, 0, &viewer)
            .await
            .unwrap()
            .is_empty()
    );

    // Refusals: unknown rollout, no token.
    let err = s.history("nope", 0, 0, &viewer).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no rollout \"nope\""), "{err:?}");
    let err =
        s.h.admin()
            .get_rollout_history(pb::GetRolloutHistoryRequest {
                rollout_id: "h".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_health_gate_pause_is_sampled_at_the_report() {
    let s = setup(|c| c.limits.rollout_sample_interval = Duration::from_secs(3600)).await;
    let d0 = s.device("d0", |_| {}).await;
    s.create(rollout(
        "g",
        vec![pb::RolloutStage {
            min_sample: 1,
            max_failure_permille: 0,
            ..stage("all", 100)
        }],
    ))
    .await
    .unwrap();
    let (mut c, said) = s.hello(&d0).await;
    assert!(offered(&said));
    s.clock.advance(5);
    c.report(ReportKind::InstallFailed, RELEASE, b"f").await;
    let h = s.samples("g", 2).await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1].time, s.clock.now().0);
    assert_eq!(h[1].state, pb::RolloutState::Paused as i32);
    assert_eq!(total(&h[1], |c| c.failed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_only_the_latest_samples() {
    let s = setup(|c| c.limits.rollout_samples_kept = 3).await;
    let t0 = s.clock.now().0;
    s.create(rollout("k", vec![stage("all", 100)]))
        .await
        .unwrap();
    for (i, action) in [
        pb::RolloutAction::Pause,
        pb::RolloutAction::Resume,
        pb::RolloutAction::Pause,
        pb::RolloutAction::Resume,
    ]
    .into_iter()
    .enumerate()
    {
        s.clock.advance(1);
        s.control("k", action, &s.h.token()).await.unwrap();
        let kept = s.history("k", 0, 0, &s.h.token()).await.unwrap();
        assert_eq!(kept.len(), (i + 2).min(3));
    }
    // Five samples taken (created + 4 actions), the two oldest dropped.
    let h = s.history("k", 0, 0, &s.h.token()).await.unwrap();
    let times: Vec<u64> = h.iter().map(|x| x.time).collect();
    assert_eq!(times, [t0 + 2, t0 + 3, t0 + 4]);
    assert_eq!(h[2].state, pb::RolloutState::Active as i32);
    assert_eq!(h[1].state, pb::RolloutState::Paused as i32);
    // A limit above the cap returns what is kept.
    assert_eq!(s.history("k", 0, 100, &s.h.token()).await.unwrap().len(), 3);
}
