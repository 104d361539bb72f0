//! Operating the server under a simulated fleet: `/metrics` scraped while
//! the fleet updates shows the counters move as it does; a backup taken in
//! the middle of a rollout, restored into a new data directory and served
//! on the same address, lets the fleet reconnect and finish the rollout.

#[path = "../../aloft-agent/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aloft_agent::{AgentConfig, BackoffConfig};
use aloft_protocol::pb;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_server::{RunningServer, ServerConfig};
use aloft_sim::{Identities, SimConfig};
use common::*;
use tonic::transport::Channel;

async fn serve(data: &Path, listen: SocketAddr) -> (RunningServer, AdminServiceClient<Channel>) {
    let mut config = ServerConfig::new(data, listen);
    config.limits.next_check_in_secs = 1;
    // Devices held back by the pacing cap come back within a second (the
    // default spreads a fleet's check-ins over minutes).
    config.limits.check_in_jitter_secs = 0;
    config.limits.notify_jitter = Duration::ZERO;
    config.ops.metrics = Some("127.0.0.1:0".parse().unwrap());
    let server = aloft_server::start(config).await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    (server, AdminServiceClient::new(channel))
}

/// A fleet of `n` simulated devices registering themselves, 1.0.0 in slot A,
/// running until every one is on 1.1.0.
fn fleet(n: usize, url: String, token: &str, factory: &Release, prefix: &str) -> SimConfig {
    let bundle = pb::ReleaseBundle {
        manifest: Some(factory.manifest.clone()),
        content_key: factory.key.expose().to_vec(),
        payload: factory.payload.clone(),
    };
    let mut config = SimConfig::new(
        n,
        url,
        Identities::Register {
            admin_token: token.to_owned(),
            id_prefix: prefix.into(),
        },
        bundle,
    );
    config.slot_size = Some(40 * 1024);
    config.until_updated = Some("1.1.0".into());
    config.duration = Duration::from_secs(90);
    config.spread_source_addrs = true;
    config.agent = AgentConfig {
        heartbeat: Duration::from_millis(500),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        ..AgentConfig::default()
    };
    config
}

/// The value of one sample line of a scrape (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

async fn rollout(admin: &AdminServiceClient<Channel>, token: &str, release: &str, max: u32) {
    admin
        .clone()
        .create_rollout(authed(
            pb::CreateRolloutRequest {
                rollout_id: "r1".into(),
                release_id: release.into(),
                max_concurrent: max,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

async fn counts(admin: &AdminServiceClient<Channel>, token: &str) -> pb::RolloutInfo {
    admin
        .clone()
        .get_rollout(authed(
            pb::GetRolloutRequest {
                rollout_id: "r1".into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

fn updated(info: &pb::RolloutInfo) -> u32 {
    info.counts.iter().map(|c| c.updated).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_a_simulated_fleet_updates() {
    watchdog();
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = serve(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let token = server.admin_token().to_owned();
    let keys = Keys::new();
    admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(keys.trust_root(&server.server_public_key())),
            },
            &token,
        ))
        .await
        .unwrap();
    let factory = keys.release("1.0.0", 8 * 1024);
    let update = keys.release("1.1.0", 32 * 1024);
    upload_ok(&admin, &token, &update).await;
    rollout(&admin, &token, &update.id, 2).await;
    let metrics = server.metrics_addr().unwrap();
    let before = scrape(metrics).await;
    assert_eq!(value(&before, "aloft_device_check_ins_total"), 0.0);

    let n = 8;
    let sim = tokio::spawn(aloft_sim::run(fleet(
        n,
        format!("http://{}", server.local_addr()),
        &token,
        &factory,
        "metered-",
    )));
    let updated_series =
        "aloft_rollout_stage_devices{rollout=\"r1\",stage=\"all\",outcome=\"updated\"}";
    let mut seen = Vec::new();
    let mut last = String::new();
    while !sim.is_finished() {
        last = scrape(metrics).await;
        let now = (
            value(&last, "aloft_device_check_ins_total"),
            value(&last, "aloft_offers_total"),
            value(&last, "aloft_download_bytes_total"),
            value(&last, "aloft_device_reports_total{kind=\"confirmed\"}"),
            value(&last, updated_series),
        );
        if let Some(prev) = seen.last() {
            let prev: &(f64, f64, f64, f64, f64) = prev;
            assert!(
                now.0 >= prev.0 && now.1 >= prev.1 && now.2 >= prev.2 && now.3 >= prev.3,
                "a counter went back: {prev:?} -> {now:?}"
            );
        }
        seen.push(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = sim.await.unwrap().unwrap();
    assert!(summary.condition_met, "{summary:?}");
    let end = scrape(metrics).await;
    let stage_name = counts(&admin, &token).await.counts[0].stage.clone();
    let updated_series = format!(
        "aloft_rollout_stage_devices{{rollout=\"r1\",stage=\"{stage_name}\",outcome=\"updated\"}}"
    );
    assert!(
        value(&end, "aloft_device_check_ins_total") >= n as f64,
        "{end}"
    );
    assert!(value(&end, "aloft_offers_total") >= n as f64, "{end}");
    assert_eq!(
        value(&end, "aloft_device_reports_total{kind=\"confirmed\"}"),
        n as f64,
        "{end}"
    );
    assert!(
        value(&end, "aloft_download_bytes_total") >= (n * update.payload.len()) as f64,
        "{end}"
    );
    assert_eq!(value(&end, &updated_series), n as f64, "{end}");
    assert!(
        value(&end, "aloft_events_total{kind=\"confirmed\"}") >= n as f64,
        "{end}"
    );
    // The counters moved while the fleet did, not only at the end.
    let mid: Vec<_> = seen
        .iter()
        .filter(|s| s.3 > 0.0 && s.3 < n as f64)
        .collect();
    assert!(
        !mid.is_empty(),
        "no scrape saw the rollout in progress: {seen:?} (last {last})"
    );
    eprintln!("{} scrapes during the rollout", seen.len());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_mid_rollout_restores_and_the_fleet_finishes() {
    watchdog();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let (server, admin) = serve(&first, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let token = server.admin_token().to_owned();
    let keys = Keys::new();
    admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(keys.trust_root(&server.server_public_key())),
            },
            &token,
        ))
        .await
        .unwrap();
    let factory = keys.release("1.0.0", 8 * 1024);
    let update = keys.release("1.1.0", 32 * 1024);
    upload_ok(&admin, &token, &update).await;
    // Two devices at a time, so the rollout is under way for a while.
    rollout(&admin, &token, &update.id, 2).await;

    let n = 10;
    let sim = tokio::spawn(aloft_sim::run(fleet(
        n,
        format!("http://{addr}"),
        &token,
        &factory,
        "restored-",
    )));
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let done = updated(&counts(&admin, &token).await);
        if (2..n as u32 - 3).contains(&done) {
            break;
        }
        assert!(
            Instant::now() < until && done < n as u32 - 3,
            "the rollout never reached the middle ({done} updated)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let file = dir.path().join("mid-rollout.backup");
    let taken =
        aloft_server::backup::backup(&format!("http://{addr}"), None, &token, &first, &file)
            .await
            .unwrap();
    let at_backup = updated(&counts(&admin, &token).await);
    assert!(
        taken.objects >= 1,
        "the release payload is in the backup: {taken:?}"
    );
    // The old server goes away with its disk; the fleet keeps retrying.
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let second = dir.path().join("second");
    let restored = aloft_server::backup::restore(&file, &second).unwrap();
    assert!(restored.records > 0);
    let (server, admin) = serve(&second, addr).await;
    assert_eq!(server.admin_token(), token, "the token file came back");

    let summary = sim.await.unwrap().unwrap();
    assert!(
        summary.condition_met,
        "the fleet did not finish after the restore: {summary:?}"
    );
    assert_eq!(summary.outcomes.get("updated"), Some(&n), "{summary:?}");
    let until = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let info = counts(&admin, &token).await;
        if updated(&info) == n as u32 {
            break info;
        }
        assert!(
            Instant::now() < until,
            "the restored server never counted every device: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in 0..n {
        let id = format!("restored-{i:05}");
        let d = admin
            .clone()
            .get_device(authed(
                pb::GetDeviceRequest {
                    device_id: id.clone(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.firmware_version, "1.1.0", "{id}");
    }
    eprintln!(
        "backup with {at_backup}/{n} updated ({} records, {} bytes); rollout after restore: {:?}",
        taken.records, taken.bytes, info.counts
    );
    server.shutdown().await.unwrap();
}
