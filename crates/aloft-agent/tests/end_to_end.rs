//! End to end: the real server in-process (sled in a temp dir), a real
//! signed and encrypted release uploaded through the admin API, a rollout,
//! and agents on the simulated NOR flash.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_agent::{Agent, AgentError, Event, Outcome, SessionEnd};
use aloft_device::sim::{Fault, FaultMode};
use aloft_device::{Device, ReportKind, Slot};
use aloft_protocol::pb;
use common::*;

const IMAGE: usize = 40 * 1024;

type Events = Arc<Mutex<Vec<Event>>>;

fn recorder() -> (Events, impl FnMut(&Event) + Send + Sync + 'static) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (events, move |e: &Event| {
        sink.lock().unwrap().push(e.clone())
    })
}

async fn run_until_reboot(agent: &mut Agent<Flash>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(30), agent.run(std::future::pending()))
        .await
        .expect("no reboot within 30 s")
        .unwrap()
}

/// Runs `agent` in the background until the server shows `pred`, then stops
/// it and returns it.
async fn run_until_server(
    h: &Harness,
    mut agent: Agent<Flash>,
    what: &str,
    pred: impl Fn(&pb::DeviceInfo) -> bool,
) -> (Agent<Flash>, pb::DeviceInfo) {
    let id = agent.identity().device_id().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let outcome = agent
            .run(async {
                let _ = stopped.await;
            })
            .await;
        (agent, outcome)
    });
    let info = h.wait_for(&id, what, pred).await;
    let _ = stop.send(());
    let (agent, outcome) = task.await.unwrap();
    assert_eq!(outcome.unwrap(), Outcome::Shutdown);
    (agent, info)
}

/// The server shows a status once the report is stored; its ack may still
/// be on the way when `run_until_server` stops the agent. One more session
/// re-sends what is unacknowledged, which the server acknowledges as a
/// duplicate (changing nothing).
async fn settle_reports(mut agent: Agent<Flash>) -> Agent<Flash> {
    if agent.device().reports().count() > 0 {
        agent.check_in(std::future::pending()).await.unwrap();
    }
    agent
}

fn status(info: &pb::DeviceInfo) -> pb::DeviceStatus {
    pb::DeviceStatus::try_from(info.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_reboots_confirms_and_server_sees_updated() {
    let h = Harness::start(true).await;
    let factory = h.keys.release("1.0.0", 30 * 1024);
    let update = h.keys.release("1.1.0", IMAGE);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let (identity, device) = h.provision("dev-a", &factory).await;

    let (agent, booted) = boot(&identity, device);
    assert_eq!((booted.slot, booted.trial), (Slot::A, false));
    let (events, observer) = recorder();
    let mut agent = agent.with_observer(observer);
    let outcome = run_until_reboot(&mut agent).await;
    assert_eq!(
        outcome,
        Outcome::RebootRequested {
            release_id: update.id.parse().unwrap(),
            version: "1.1.0".parse().unwrap()
        }
    );
    {
        let events = events.lock().unwrap();
        assert!(events.iter().any(|e| matches!(e, Event::Connected { .. })));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Authenticated { .. }))
        );
        assert!(events.iter().any(|e| matches!(
            e,
            Event::DownloadStarted {
                start_chunk: 0,
                chunk_count: 160,
                ..
            }
        )));
    }
    h.wait_for("dev-a", "installed", |i| {
        status(i) == pb::DeviceStatus::Installed
    })
    .await;

    // Reboot: the boot decision starts the verified trial image in slot B.
    let (mut agent, booted) = boot(&identity, agent.into_device());
    assert_eq!((booted.slot, booted.trial), (Slot::B, true));
    assert_eq!(booted.manifest.version().to_string(), "1.1.0");
    // The health check passed.
    agent.confirm().unwrap();
    let (agent, info) = run_until_server(&h, agent, "updated", |i| {
        status(i) == pb::DeviceStatus::Updated
    })
    .await;
    assert_eq!(info.firmware_version, "1.1.0");
    assert_eq!(info.release_id, update.id);
    assert_eq!(info.active_slot, pb::Slot::B as i32);
    let device = settle_reports(agent).await.into_device();
    assert!(device.is_confirmed());
    assert_eq!(device.active_slot(), Slot::B);
    assert_eq!(
        device.reports().count(),
        0,
        "acknowledged reports leave flash"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_mid_download_resumes_from_the_durable_chunk() {
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 30 * 1024);
    let update = h.keys.release("1.1.0", IMAGE);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let (identity, mut device) = h.provision("dev-b", &factory).await;
    let _booted = device.boot().unwrap();

    // Cut the power about 100 flash operations into the download.
    let mut flash = device.into_flash();
    flash.arm(Fault {
        mode: FaultMode::PowerCut,
        at: flash.ops() + 100,
    });
    let device = Device::open(flash, layout(), device_config()).unwrap();
    let (events, observer) = recorder();
    let mut agent = Agent::new(identity.clone(), device, fast_config())
        .unwrap()
        .with_observer(observer);
    let err = tokio::time::timeout(Duration::from_secs(30), agent.run(std::future::pending()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Device(_)) && err.is_fatal(),
        "{err}"
    );
    let written = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::ChunkWritten { .. }))
        .count() as u32;
    assert!(
        written > 16 && written < 160,
        "cut mid-download ({written} chunks)"
    );

    // Power comes back: the device restarts.
    let mut flash = agent.into_device().into_flash();
    flash.power_cycle();
    flash.disarm();
    let mut device = Device::open(flash, layout(), device_config()).unwrap();
    let (release, _, durable) = device.install_progress().expect("install in progress");
    assert_eq!(release.as_str(), update.id);
    assert!(
        durable > 0 && durable <= written,
        "durable {durable}, written {written}"
    );
    let booted = device.boot().unwrap();
    assert_eq!(booted.slot, Slot::A, "the old image still runs");

    let (events, observer) = recorder();
    let mut agent = Agent::new(identity.clone(), device, fast_config())
        .unwrap()
        .with_observer(observer);
    let outcome = run_until_reboot(&mut agent).await;
    assert!(matches!(outcome, Outcome::RebootRequested { .. }));
    let events = events.lock().unwrap().clone();
    let starts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::DownloadStarted { start_chunk, .. } => Some(*start_chunk),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        [durable],
        "resumed from the durable chunk, not from 0"
    );
    let rewritten = events
        .iter()
        .filter(|e| matches!(e, Event::ChunkWritten { .. }))
        .count() as u32;
    assert_eq!(rewritten, 160 - durable);

    // The resumed image verifies at boot.
    let (_agent, booted) = boot(&identity, agent.into_device());
    assert_eq!((booted.slot, booted.trial), (Slot::B, true));
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_that_never_confirms_rolls_back_and_server_sees_it() {
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 30 * 1024);
    let update = h.keys.release("1.1.0", IMAGE);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let (identity, device) = h.provision("dev-c", &factory).await;
    let (mut agent, _) = boot(&identity, device);
    assert!(matches!(
        run_until_reboot(&mut agent).await,
        Outcome::RebootRequested { .. }
    ));

    // Trial boot 1: the new firmware runs and checks in, but never confirms.
    let (mut agent, booted) = boot(&identity, agent.into_device());
    assert_eq!((booted.slot, booted.trial), (Slot::B, true));
    let end = agent.check_in(std::future::pending()).await.unwrap();
    assert_eq!(end, SessionEnd::CheckInAfter(Duration::ZERO));
    let info = h.device_info("dev-c").await;
    assert_eq!(info.firmware_version, "1.1.0");
    // The watchdog resets it, again and again: attempts run out.
    let mut device = agent.into_device();
    for _ in 0..2 {
        let b = device.boot().unwrap();
        assert_eq!((b.slot, b.trial), (Slot::B, true));
    }
    let (agent, booted) = boot(&identity, device);
    assert_eq!((booted.slot, booted.trial), (Slot::A, false), "reverted");
    let reports: Vec<_> = agent.device().reports().collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].kind, ReportKind::RolledBack);

    let (agent, info) = run_until_server(&h, agent, "rolled back", |i| {
        status(i) == pb::DeviceStatus::RolledBack
    })
    .await;
    assert_eq!(info.firmware_version, "1.0.0");
    assert_eq!(info.release_id, update.id);
    let agent = settle_reports(agent).await;
    assert_eq!(agent.device().reports().count(), 0);
    assert_eq!(
        status(&h.device_info("dev-c").await),
        pb::DeviceStatus::RolledBack,
        "the re-sent report changed nothing"
    );
    // The server does not offer the rolled-back release again.
    assert_eq!(agent.device().install_progress(), None);
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_another_ca_is_refused() {
    let h = Harness::start(true).await;
    let factory = h.keys.release("1.0.0", 8 * 1024);
    let (identity, device) = h.provision("dev-tls", &factory).await;
    let other = make_tls(&h.dir.path().join("other"));
    let mut bundle = identity.to_bundle();
    bundle.ca_pem = other.ca_pem;
    let wrong = aloft_agent::Identity::from_bundle(bundle).unwrap();
    let (mut agent, _) = boot(&wrong, device);
    let err = agent.check_in(std::future::pending()).await.unwrap_err();
    assert!(matches!(err, AgentError::Connect(_)), "{err}");
    assert!(
        !err.is_fatal(),
        "a refused handshake is retried with backoff"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "says why: {err}"
    );
    // The right CA works.
    let (mut agent, _) = boot(&identity, agent.into_device());
    let end = agent.check_in(std::future::pending()).await.unwrap();
    assert_eq!(end, SessionEnd::CheckInAfter(Duration::ZERO));
    let info = h.device_info("dev-tls").await;
    assert!(info.last_seen > 0);
    h.server.shutdown().await.unwrap();
}

/// A TCP proxy to `target` that cuts its first connection after `budget`
/// bytes from the server, then forwards everything.
async fn cutting_proxy(target: std::net::SocketAddr, budget: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let limit = if first { budget } else { usize::MAX };
            first = false;
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= limit {
                        break;
                    }
                }
                // Dropping both halves closes the connection both ways.
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_mid_download_resumes() {
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 30 * 1024);
    let update = h.keys.release("1.1.0", IMAGE);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let (identity, device) = h.provision("dev-drop", &factory).await;
    let proxy = cutting_proxy(h.server.local_addr(), 25 * 1024).await;
    let mut bundle = identity.to_bundle();
    bundle.server_url = format!("http://{proxy}");
    let identity = aloft_agent::Identity::from_bundle(bundle).unwrap();

    let (agent, _) = boot(&identity, device);
    let (events, observer) = recorder();
    let mut agent = agent.with_observer(observer);
    let outcome = run_until_reboot(&mut agent).await;
    assert!(matches!(outcome, Outcome::RebootRequested { .. }));
    let events = events.lock().unwrap().clone();
    let starts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::DownloadStarted { start_chunk, .. } => Some(*start_chunk),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "one drop, one resume: {starts:?}");
    assert_eq!(starts[0], 0);
    assert!(starts[1] > 0, "resumed, not restarted: {starts:?}");
    assert_eq!(starts[1] % 16, 0, "at a sector boundary (16 chunks)");
    assert!(
        events.iter().any(|e| matches!(e, Event::Retrying { .. })),
        "the drop was retried"
    );
    let (_agent, booted) = boot(&identity, agent.into_device());
    assert_eq!((booted.slot, booted.trial), (Slot::B, true));
    h.server.shutdown().await.unwrap();
}
