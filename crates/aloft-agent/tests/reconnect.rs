//! Reconnects: exponential backoff after refused sessions, CheckInLater
//! honoured, heartbeats within a session. Against a scripted tonic server
//! reached over an in-memory transport (`Agent::with_connector`), so the
//! tests run on tokio's paused clock: every delay is exact and nothing
//! really waits.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use aloft_agent::{Agent, Event, Outcome};
use aloft_device::Device;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::device_service_server::{DeviceService, DeviceServiceServer};
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, PublicKey, SecretKey, UnixTime, device_msg, pb};
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Script {
    /// Refuse this many sessions first (UNAVAILABLE).
    refuse_first: u32,
    /// Send CheckInLater with this delay right after the Welcome.
    check_in_later: Option<u64>,
    /// Put this `aloft-retry-after-ms` on the refusals.
    retry_after_ms: Option<u64>,
}

struct Pacer {
    script: Script,
    device_key: PublicKey,
    sessions: AtomicU32,
    /// (arrival, seq) of every heartbeat, each verified.
    heartbeats: Mutex<Vec<(Instant, u64)>>,
    welcomed: Mutex<Vec<Instant>>,
}

struct Svc(Arc<Pacer>);

#[tonic::async_trait]
impl DeviceService for Svc {
    type SessionStream = ReceiverStream<Result<pb::ServerToDevice, Status>>;
    type DownloadStream = ReceiverStream<Result<pb::DownloadChunk, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::DeviceToServer>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let n = self.0.sessions.fetch_add(1, Ordering::SeqCst);
        if n < self.0.script.refuse_first {
            let mut status = Status::unavailable("scripted refusal");
            if let Some(ms) = self.0.script.retry_after_ms {
                status.metadata_mut().insert(
                    aloft_protocol::wire::RETRY_AFTER_MS,
                    ms.to_string().parse().unwrap(),
                );
            }
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.0.clone();
        tokio::spawn(async move {
            let challenge = rand_bytes::<32>().to_vec();
            let out = |kind| pb::ServerToDevice { kind: Some(kind) };
            let _ = tx
                .send(Ok(out(Kind::Challenge(pb::Challenge {
                    nonce: challenge.clone(),
                    server_time: now(),
                }))))
                .await;
            let Ok(Some(first)) = inbound.message().await else {
                return;
            };
            device_msg::open(&first.signed.unwrap(), &this.device_key, &challenge, 1).unwrap();
            this.welcomed.lock().unwrap().push(Instant::now());
            let _ = tx
                .send(Ok(out(Kind::Welcome(pb::Welcome {
                    session_token: vec![1; 16],
                    server_time: now(),
                    next_check_in_secs: 30,
                }))))
                .await;
            if let Some(after) = this.script.check_in_later {
                let _ = tx
                    .send(Ok(out(Kind::CheckInLater(pb::CheckInLater {
                        after_secs: after,
                    }))))
                    .await;
            }
            let mut seq = 2;
            while let Ok(Some(m)) = inbound.message().await {
                let opened =
                    device_msg::open(&m.signed.unwrap(), &this.device_key, &challenge, seq)
                        .unwrap();
                if let Some(Body::Heartbeat(hb)) = opened.body {
                    assert_eq!(hb.state.unwrap().firmware_version, "1.0.0");
                    this.heartbeats.lock().unwrap().push((Instant::now(), seq));
                }
                seq += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn download(
        &self,
        _request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("no downloads here"))
    }
}

async fn setup(script: Script) -> (Arc<Pacer>, Agent<Flash>, Arc<Mutex<Vec<Event>>>) {
    let keys = Keys::new();
    let server_key = SecretKey::generate();
    let trust = VerifiedTrustRoot::trust_on_first_use(
        &keys.trust_root(&server_key.public_key()),
        UnixTime(now()),
    )
    .unwrap();
    let device_key = SecretKey::generate();
    let pacer = Arc::new(Pacer {
        script,
        device_key: device_key.public_key(),
        sessions: AtomicU32::new(0),
        heartbeats: Mutex::default(),
        welcomed: Mutex::default(),
    });
    // Each session dials a fresh in-memory pipe; the server takes the other end.
    let (dial, accepted) = mpsc::channel::<Result<tokio::io::DuplexStream, std::io::Error>>(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DeviceServiceServer::new(Svc(pacer.clone())))
            .serve_with_incoming(ReceiverStream::new(accepted)),
    );
    let factory = keys.release("1.0.0", 4 * 1024);
    let mut device = Device::provision(
        new_flash(),
        layout(),
        device_config(),
        &trust,
        &factory.image,
        &factory.manifest_bytes(),
    )
    .unwrap();
    let _booted = device.boot().unwrap();
    let identity = aloft_agent::Identity::new(
        DeviceId::new("dev-r").unwrap(),
        device_key,
        "http://in-memory.invalid",
        None,
        trust,
        Default::default(),
    )
    .unwrap();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    let mut config = fast_config();
    config.heartbeat = Duration::from_millis(100);
    let agent = Agent::new(identity, device, config)
        .unwrap()
        .with_connector(move || {
            let dial = dial.clone();
            async move {
                let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
                    let dial = dial.clone();
                    async move {
                        let (client, server) = tokio::io::duplex(64 * 1024);
                        dial.send(Ok(server))
                            .await
                            .map_err(|_| std::io::Error::other("the test server stopped"))?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                    }
                });
                tonic::transport::Endpoint::from_static("http://in-memory.invalid")
                    .connect_with_connector(connector)
                    .await
                    .map_err(aloft_agent::AgentError::Connect)
            }
        })
        .with_observer(move |e| sink.lock().unwrap().push(e.clone()));
    (pacer, agent, events)
}

async fn run_for(agent: &mut Agent<Flash>, d: Duration) {
    let outcome = agent.run(tokio::time::sleep(d)).await.unwrap();
    assert_eq!(outcome, Outcome::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn refused_sessions_back_off_exponentially_then_connect() {
    let (pacer, mut agent, events) = setup(Script {
        refuse_first: 4,
        ..Script::default()
    })
    .await;
    run_for(&mut agent, Duration::from_millis(1500)).await;
    let events = events.lock().unwrap().clone();
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 4, "one retry per refusal: {events:?}");
    // Full jitter under a doubling ceiling: 50, 100, 200, 400 ms.
    for (i, d) in delays.iter().enumerate() {
        assert!(*d <= Duration::from_millis(50 << i), "retry {i}: {d:?}");
    }
    let authenticated = events
        .iter()
        .filter(|e| matches!(e, Event::Authenticated { .. }))
        .count();
    assert_eq!(authenticated, 1, "connected after the refusals");
    assert_eq!(pacer.sessions.load(Ordering::SeqCst), 5);
}

fn retry_delays(events: &Mutex<Vec<Event>>) -> Vec<Duration> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_refusal_that_names_its_retry_delay_is_waited_out() {
    let (pacer, mut agent, events) = setup(Script {
        refuse_first: 3,
        retry_after_ms: Some(300),
        ..Script::default()
    })
    .await;
    run_for(&mut agent, Duration::from_millis(1500)).await;
    let delays = retry_delays(&events);
    assert_eq!(delays.len(), 3, "{delays:?}");
    // The backoff alone would allow 0 to 50, 100, 200 ms.
    for d in &delays {
        assert!(*d >= Duration::from_millis(300), "waited only {d:?}");
        assert!(*d <= Duration::from_millis(400), "{d:?}");
    }
    assert_eq!(pacer.sessions.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_server_cannot_park_a_device_beyond_its_longest_backoff() {
    let (_pacer, mut agent, events) = setup(Script {
        refuse_first: 2,
        retry_after_ms: Some(3_600_000),
        ..Script::default()
    })
    .await;
    run_for(&mut agent, Duration::from_millis(1500)).await;
    let delays = retry_delays(&events);
    assert_eq!(
        delays,
        [Duration::from_millis(400); 2],
        "capped at the backoff's max"
    );
}

#[tokio::test(start_paused = true)]
async fn check_in_later_is_honoured() {
    let (pacer, mut agent, events) = setup(Script {
        check_in_later: Some(1),
        ..Script::default()
    })
    .await;
    run_for(&mut agent, Duration::from_millis(1800)).await;
    let welcomed = pacer.welcomed.lock().unwrap().clone();
    assert_eq!(welcomed.len(), 2, "one session now, one a second later");
    let gap = welcomed[1] - welcomed[0];
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100),
        "waited {gap:?}"
    );
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Retrying { .. })),
        "pacing is not a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_signed_in_sequence() {
    let (pacer, mut agent, _events) = setup(Script::default()).await;
    run_for(&mut agent, Duration::from_millis(650)).await;
    let beats = pacer.heartbeats.lock().unwrap().clone();
    // Every 100 ms after the welcome, each verified with seq 2, 3, ...
    assert_eq!(beats.len(), 6, "{} heartbeats in 650 ms", beats.len());
    for pair in beats.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(100));
    }
    let seqs: Vec<u64> = beats.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (2..2 + beats.len() as u64).collect::<Vec<_>>());
    assert_eq!(pacer.sessions.load(Ordering::SeqCst), 1);
}
