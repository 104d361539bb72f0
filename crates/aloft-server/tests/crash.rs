//! Durability: every acknowledged write survives `kill -9` of the server.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aloft_protocol::pb;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use common::*;

fn spawn(data: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aloft-server"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--insecure-plaintext",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("aloft-server listening on ")
        .expect(&line)
        .parse()
        .unwrap();
    (child, addr)
}

#[test]
fn refuses_to_start_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aloft-server"))
        .args([
            "--data",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-plaintext"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = spawn(&data);
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = AdminServiceClient::new(connect(addr, None).await);

    // Four concurrent writers register devices until the server dies.
    let mut writers = Vec::new();
    for w in 0..4 {
        let admin = admin.clone();
        let token = token.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let id = format!("w{w}-{i:05}");
                let req = TestDevice::new(&id).register_request();
                match admin.clone().register_device(authed(req, &token)).await {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "too few writes to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "{} acknowledged writes in {:?} before kill -9",
        acked.len(),
        started.elapsed()
    );

    let (mut child, addr) = spawn(&data);
    let admin = AdminServiceClient::new(connect(addr, None).await);
    let mut found = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page = admin
            .clone()
            .list_devices(authed(
                pb::ListDevicesRequest {
                    after: after.clone(),
                    limit: 1000,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        found.extend(page.devices.into_iter().map(|d| d.device_id));
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    let missing: Vec<_> = acked.iter().filter(|id| !found.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
