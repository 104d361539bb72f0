//! `aloft audit` and `aloft webhook` against a real server, and the tamper
//! test: records altered, deleted and reordered in the store on disk, and
//! `aloft audit verify` names each.

use std::path::Path;
use std::time::Duration;

use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_server::{RunningServer, ServerConfig};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn start(data: &Path) -> RunningServer {
    let mut config = ServerConfig::new(data, "127.0.0.1:0".parse().unwrap());
    config.ops.audit_head_interval = Duration::from_millis(50);
    aloft_server::start(config).await.unwrap()
}

async fn aloft(server: &RunningServer, token: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["--server", &format!("http://{}", server.local_addr())])
        .args(args)
        .env("ALOFT_TOKEN", token)
        .env_remove("ALOFT_SERVER")
        .output()
        .await
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_altered_deleted_and_reordered_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data).await;
    let admin = server.admin_token().to_owned();

    // Records 1-12: token creations; 13: a refusal.
    let mut viewer = String::new();
    for i in 0..12 {
        let r = aloft(
            &server,
            &admin,
            &[
                "token",
                "create",
                "--name",
                &format!("t{i}"),
                "--role",
                "viewer",
            ],
        )
        .await;
        assert!(r.ok, "{}", r.stderr);
        viewer = r.stdout.trim().to_owned();
    }
    let r = aloft(&server, &viewer, &["audit", "verify"]).await;
    assert!(
        !r.ok && r.stderr.contains("needs the admin role"),
        "{}",
        r.stderr
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = aloft(&server, &admin, &["audit", "verify"]).await;
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("audit log intact: 13 records"),
        "{}",
        r.stdout
    );
    let r = aloft(
        &server,
        &admin,
        &["--json", "audit", "list", "--since", "1h"],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 13);
    assert_eq!(list[0]["method"], "CreateToken");
    assert_eq!(list[12]["code"], 7);
    let r = aloft(&server, &admin, &["audit", "list"]).await;
    assert!(
        r.stdout.contains("bootstrap-admin") && r.stdout.contains("permission_denied"),
        "{}",
        r.stdout
    );
    server.shutdown().await.unwrap();

    // Tamper with the store on disk, the server stopped.
    {
        let db = sled::open(data.join("db")).unwrap();
        let audit = db.open_tree("audit").unwrap();
        let key = |n: u64| n.to_be_bytes();
        let mut r3 = pb::AuditRecord::decode(audit.get(key(3)).unwrap().unwrap().as_ref()).unwrap();
        r3.token_name = "someone-else".into();
        audit.insert(key(3), r3.encode_to_vec()).unwrap();
        audit.remove(key(6)).unwrap();
        let (r9, r10) = (
            audit.get(key(9)).unwrap().unwrap(),
            audit.get(key(10)).unwrap().unwrap(),
        );
        audit.insert(key(9), r10).unwrap();
        audit.insert(key(10), r9).unwrap();
        db.flush().unwrap();
    }
    let server = start(&data).await;
    let r = aloft(&server, &admin, &["audit", "verify"]).await;
    assert!(!r.ok, "tampering went unnoticed: {}", r.stdout);
    for finding in [
        "record 3 was altered",
        "record 6 was deleted",
        "position 9 holds record 10",
        "position 10 holds record 9",
    ] {
        assert!(
            r.stdout.contains(finding),
            "{finding:?} missing from\n{}",
            r.stdout
        );
    }
    assert!(
        r.stderr.contains("tampered with: 4 findings"),
        "{}",
        r.stderr
    );
    let r = aloft(&server, &admin, &["--json", "audit", "verify"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["intact"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_commands_add_list_test_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data")).await;
    let admin = server.admin_token().to_owned();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    // Nobody listens on this port: deliveries fail and the status says so.
    let url = "http://127.0.0.1:9/hook";

    let r = aloft(
        &server,
        &admin,
        &[
            "webhook",
            "add",
            url,
            "--secret-file",
            short.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!r.ok && r.stderr.contains("at least 16"), "{}", r.stderr);
    let r = aloft(
        &server,
        &admin,
        &[
            "webhook",
            "add",
            "http://hooks.example.com/x",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!r.ok && r.stderr.contains("loopback"), "{}", r.stderr);
    let r = aloft(
        &server,
        &admin,
        &[
            "webhook",
            "add",
            url,
            "--events",
            "confirmed,rolled_back",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let id = r.stdout.trim().to_owned();
    assert!(id.starts_with("wh-"), "{id}");

    let r = aloft(&server, &admin, &["webhook", "list"]).await;
    assert!(
        r.stdout.contains(&id) && r.stdout.contains("confirmed,rolled_back"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("0123456789abcdef"),
        "the secret is never shown"
    );
    let r = aloft(&server, &admin, &["webhook", "test", &id]).await;
    assert!(r.ok && r.stdout.contains("test-"), "{}", r.stderr);
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let r = aloft(&server, &admin, &["--json", "webhook", "status"]).await;
        status = serde_json::from_str(&r.stdout).unwrap();
        if status[0]["failed_attempts"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status[0]["pending"], 1, "{status}");
    assert!(
        status[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connect to 127.0.0.1:9"),
        "{status}"
    );
    let r = aloft(&server, &admin, &["webhook", "status"]).await;
    assert!(
        r.stdout.contains("QUEUED") && r.stdout.contains("connect to"),
        "{}",
        r.stdout
    );

    let r = aloft(&server, &admin, &["webhook", "remove", &id]).await;
    assert!(r.ok, "{}", r.stderr);
    let r = aloft(&server, &admin, &["webhook", "remove", &id]).await;
    assert!(!r.ok && r.stderr.contains("no webhook"), "{}", r.stderr);
    // The changes are in the audit log.
    let r = aloft(&server, &admin, &["--json", "audit", "list"]).await;
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let methods: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        methods,
        [
            "AddWebhook",
            "AddWebhook",
            "TestWebhook",
            "RemoveWebhook",
            "RemoveWebhook"
        ]
    );
    assert!(
        list[2]["subjects"][0]
            .as_str()
            .unwrap()
            .starts_with("webhook_test")
    );
    server.shutdown().await.unwrap();
}
