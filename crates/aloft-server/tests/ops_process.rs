//! Operating the real binary: webhook deliveries survive kill -9 mid-retry,
//! `aloft-server backup` / `restore` round trip a running server, `--help`
//! lists the operations flags with their defaults, and `--log-format json`
//! writes one object per line with the device id as a field.

mod common;
mod receiver;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aloft_protocol::pb;
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use common::*;
use receiver::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_aloft-server");

fn spawn(
    data: &Path,
    listen: &str,
    extra: &[&str],
    stderr: Stdio,
) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args([
            "--data",
            data.to_str().unwrap(),
            "--listen",
            listen,
            "--insecure-plaintext",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("aloft-server listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn register(admin: &AdminServiceClient<tonic::transport::Channel>, token: &str, id: &str) {
    admin
        .clone()
        .register_device(authed(TestDevice::new(id).register_request(), token))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_survive_kill_9_mid_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fast = [
        "--webhook-retry-base-ms",
        "30",
        "--webhook-retry-max-secs",
        "1",
    ];
    let (mut child, addr) = spawn(&data, "127.0.0.1:0", &fast, Stdio::null());
    let token = token(&data);
    // The receiver refuses the first 6 attempts: the first event is still
    // being retried when the server is killed.
    let rx = Receiver::start(6).await;
    let secret = b"kill-nine-webhook-secret-123456".to_vec();
    let admin = AdminServiceClient::new(connect(addr, None).await);
    admin
        .clone()
        .add_webhook(authed(
            pb::AddWebhookRequest {
                url: rx.url(),
                events: vec!["registered".into()],
                secret: secret.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    for i in 0..10 {
        register(&admin, &token, &format!("before-{i:02}")).await;
    }
    rx.wait(10, "three refused attempts", |l| l.len() >= 3)
        .await;
    child.kill().unwrap(); // SIGKILL, mid-retry
    child.wait().unwrap();
    let seen_before = rx.all().len();
    assert!(
        rx.delivered().is_empty(),
        "still retrying the first event at the kill"
    );

    let (mut child, addr) = spawn(&data, "127.0.0.1:0", &fast, Stdio::null());
    let admin = AdminServiceClient::new(connect(addr, None).await);
    for i in 0..10 {
        register(&admin, &token, &format!("after-{i:02}")).await;
    }
    rx.wait(20, "all twenty events", |l| {
        l.iter()
            .filter(|d| d.status == 200)
            .map(|d| &d.key)
            .collect::<HashSet<_>>()
            .len()
            == 20
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let all = rx.all();
    assert!(all.len() > seen_before, "retries went on after the restart");
    // Every event delivered; none lost; a key always carries the same event.
    let mut by_key: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for d in &all {
        receiver::verify(&secret, d, receiver::now()).unwrap();
        let prev = by_key
            .entry(d.key.clone())
            .or_insert_with(|| d.body.clone());
        assert_eq!(*prev, d.body, "two different events under key {}", d.key);
    }
    let delivered: Vec<String> = {
        let mut first = Vec::new();
        for d in rx.delivered() {
            let id = d.json()["device_id"].as_str().unwrap().to_owned();
            if !first.contains(&id) {
                first.push(id);
            }
        }
        first
    };
    let want: Vec<String> = (0..10)
        .map(|i| format!("before-{i:02}"))
        .chain((0..10).map(|i| format!("after-{i:02}")))
        .collect();
    assert_eq!(delivered, want, "every event, in the order it was recorded");
    eprintln!(
        "{} requests for 20 events ({} refused, {} before the kill)",
        all.len(),
        all.iter().filter(|d| d.status != 200).count(),
        seen_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_running_server_restores_into_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = spawn(&data, "127.0.0.1:0", &[], Stdio::null());
    let token = token(&data);
    let admin = AdminServiceClient::new(connect(addr, None).await);
    for i in 0..20 {
        register(&admin, &token, &format!("kept-{i:02}")).await;
    }
    let file = dir.path().join("aloft.backup");
    // Writers keep going while the backup runs.
    let writer = {
        let (admin, token) = (admin.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..50 {
                register(&admin, &token, &format!("during-{i:02}")).await;
            }
        })
    };
    let out = tokio::process::Command::new(BIN)
        .args(["backup", "--server", &format!("http://{addr}"), "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("backed up") && said.contains("key files"),
        "{said}"
    );
    writer.await.unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup holds keys");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // A damaged copy is refused before anything is written.
    let bad = dir.path().join("bad.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&bad, bytes).unwrap();
    let out = Command::new(BIN)
        .args(["restore", bad.to_str().unwrap(), "--data"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256 does not match"));
    assert!(!dir.path().join("never").join("db").exists());
    // Not over existing data.
    let out = Command::new(BIN)
        .args([
            "restore",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));

    let restored = dir.path().join("restored");
    let out = Command::new(BIN)
        .args([
            "restore",
            file.to_str().unwrap(),
            "--data",
            restored.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut child, addr) = spawn(&restored, "127.0.0.1:0", &[], Stdio::null());
    let admin = AdminServiceClient::new(connect(addr, None).await);
    // The same token works (tokens are records, the token file a key file).
    let devices = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest {
                limit: 1000,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .devices;
    let ids: HashSet<_> = devices.iter().map(|d| d.device_id.as_str()).collect();
    assert!((0..20).all(|i| ids.contains(format!("kept-{i:02}").as_str())));
    // The snapshot is a prefix of the writes made during it: if device n
    // made it, every device before n did too.
    let during = (0..50)
        .filter(|i| ids.contains(format!("during-{i:02}").as_str()))
        .count();
    assert!(
        (0..during).all(|i| ids.contains(format!("during-{i:02}").as_str())),
        "{ids:?}"
    );
    // New ids never collide with restored ones: a new event is listed after
    // the restored ones.
    register(&admin, &token, "after-restore").await;
    let events = admin
        .clone()
        .list_device_events(authed(
            pb::ListDeviceEventsRequest {
                device_id: "after-restore".into(),
                limit: 10,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let newest_restored = admin
        .clone()
        .list_device_events(authed(
            pb::ListDeviceEventsRequest {
                device_id: "kept-19".into(),
                limit: 10,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events[0].seq > newest_restored[0].seq);
    // The restored audit log still verifies under the same server key.
    let audit = admin
        .clone()
        .list_audit(authed(pb::ListAuditRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let key = aloft_protocol::PublicKey::from_sec1(
        &admin
            .clone()
            .get_server_info(authed(pb::GetServerInfoRequest {}, &token))
            .await
            .unwrap()
            .into_inner()
            .server_public_key,
    )
    .unwrap();
    let entries: Vec<_> = audit
        .entries
        .into_iter()
        .map(|e| (e.seq, e.record))
        .collect();
    let report = aloft_protocol::audit::verify(&entries, &audit.heads, &[key]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.records >= 20);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn help_lists_every_operations_flag_with_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--metrics <ADDR>", "not served"),
        ("--log-format <FORMAT>", "[default: text]"),
        ("--audit-head-secs <SECS>", "[default: 60]"),
        ("--webhook-retry-base-ms <MS>", "[default: 1000]"),
        ("--webhook-retry-max-secs <SECS>", "[default: 600]"),
        ("--webhook-give-up-secs <SECS>", "[default: 259200]"),
        ("--webhook-timeout-secs <SECS>", "[default: 10]"),
        ("--webhook-max-queued <N>", "[default: 100000]"),
        ("--webhook-ca <FILE>", "system's roots"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing from\n{help}"));
        let entry: String = help[at..].lines().take(8).collect::<Vec<_>>().join(" ");
        assert!(entry.contains(default), "{flag}: {entry}");
    }
    assert!(help.contains("aloft-server backup") && help.contains("aloft-server restore"));
    for cmd in ["backup", "restore"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--data"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_ids_as_fields() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log.jsonl");
    let file = std::fs::File::create(&log).unwrap();
    let (mut child, addr) = spawn(&data, "127.0.0.1:0", &["--log-format", "json"], file.into());
    let token = token(&data);
    let channel = connect(addr, None).await;
    let admin = AdminServiceClient::new(channel.clone());
    let device = TestDevice::new("logged-1");
    admin
        .clone()
        .register_device(authed(device.register_request(), &token))
        .await
        .unwrap();
    // A second session of the device ends the first: logged with its id.
    let (first, _) = device.connect(&channel, vec![]).await.unwrap();
    let (second, _) = device.connect(&channel, vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    drop((first, second));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string())
    );
    let ended = lines
        .iter()
        .find(|l| l["message"] == "device session ended")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(ended["span"]["device"], "logged-1", "{ended}");
    let replaced = lines
        .iter()
        .find(|l| l["message"] == "newer session replaces the older one")
        .unwrap();
    assert_eq!(replaced["device"], "logged-1", "{replaced}");
}
