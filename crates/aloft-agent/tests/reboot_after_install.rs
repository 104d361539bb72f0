//! The reboot after an install always happens: the connection is cut at
//! each point after the last chunk (before the "installed" report leaves,
//! after it reached the server but before its ack came back), and the agent
//! still asks for the reboot instead of retrying forever; the device boots
//! the trial image, confirms it and the server sees it updated.
//!
//! Seen before the session became a state machine: devices that finished an
//! install and lost the session before their report stayed on the old
//! firmware with a trial pending, were never offered again and blocked
//! their rollout stage.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use aloft_agent::{Event, Outcome};
use aloft_device::Slot;
use aloft_protocol::pb;
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Pass everything.
const PASS: u8 = 0;
/// Drop what the server sends (the device's messages still arrive).
const CUT_TO_DEVICE: u8 = 1;
/// Close both directions.
const CUT_BOTH: u8 = 2;

/// A TCP proxy in front of the server whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AtomicU8::new(PASS));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, s.clone(), false));
                tokio::spawn(pump(sr, cw, s.clone(), true));
            }
        });
        Self { addr, state }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<AtomicU8>,
    to_device: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match state.load(Ordering::SeqCst) {
            CUT_BOTH => return,
            CUT_TO_DEVICE if to_device => continue,
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Both directions, when the last chunk is written (before finish).
    AtLastChunk,
    /// Both directions, when the install is durable (before the report).
    AtInstalled,
    /// Only the server's messages, from the durable install on: the report
    /// reaches the server, its ack never reaches the device.
    AckLost,
}

async fn cut_after_the_last_chunk(cut: Cut) {
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 8 * 1024);
    let update = h.keys.release("1.1.0", 12 * 1024);
    h.upload(&update).await;
    h.rollout("r1", &update.id, "").await;
    let id = format!("dev-{cut:?}").to_lowercase();
    let (identity, device) = h.provision(&id, &factory).await;
    let proxy = Proxy::start(h.server.local_addr()).await;
    let through_proxy = aloft_agent::Identity::new(
        identity.device_id().clone(),
        identity.secret_key().clone(),
        format!("http://{}", proxy.addr),
        None,
        identity.factory_trust_root().clone(),
        identity.attributes().clone(),
    )
    .unwrap();
    let chunks = update.params.chunk_count();
    let state = proxy.state.clone();
    let (agent, _) = boot(&through_proxy, device);
    let mut agent = agent.with_observer(move |e| match (cut, e) {
        (Cut::AtLastChunk, Event::ChunkWritten { index }) if *index + 1 == chunks => {
            state.store(CUT_BOTH, Ordering::SeqCst);
        }
        (Cut::AtInstalled, Event::Installed { .. }) => state.store(CUT_BOTH, Ordering::SeqCst),
        (Cut::AckLost, Event::Installed { .. }) => {
            state.store(CUT_TO_DEVICE, Ordering::SeqCst);
        }
        _ => {}
    });
    let outcome = tokio::time::timeout(Duration::from_secs(30), agent.run(std::future::pending()))
        .await
        .unwrap_or_else(|_| panic!("{cut:?}: no reboot within 30 s (the agent kept retrying)"))
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::RebootRequested {
            release_id: update.id.parse().unwrap(),
            version: "1.1.0".parse().unwrap()
        },
        "{cut:?}"
    );
    // The reboot: the trial image starts, confirms, and reports (directly).
    let (mut agent, booted) = boot(&identity, agent.into_device());
    assert_eq!((booted.slot, booted.trial), (Slot::B, true), "{cut:?}");
    agent.confirm().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = agent
            .run(async {
                let _ = stopped.await;
            })
            .await;
        agent
    });
    let info = h
        .wait_for(&id, "updated", |i| {
            i.status == pb::DeviceStatus::Updated as i32
        })
        .await;
    assert_eq!(info.firmware_version, "1.1.0", "{cut:?}");
    let _ = stop.send(());
    let mut agent = task.await.unwrap();
    // The server may show UPDATED a moment before its ack reaches the
    // device: one more session carries whatever is still unacknowledged.
    if agent.device().reports().count() > 0 {
        tokio::time::timeout(
            Duration::from_secs(10),
            agent.check_in(std::future::pending()),
        )
        .await
        .expect("a session")
        .unwrap();
    }
    assert_eq!(
        agent.device().reports().count(),
        0,
        "{cut:?}: every report acknowledged"
    );
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cut_at_the_last_chunk_still_reboots() {
    cut_after_the_last_chunk(Cut::AtLastChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cut_before_the_report_still_reboots() {
    cut_after_the_last_chunk(Cut::AtInstalled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_report_ack_still_reboots() {
    cut_after_the_last_chunk(Cut::AckLost).await;
}
