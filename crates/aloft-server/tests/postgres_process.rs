//! The real binary on PostgreSQL: it refuses a database whose schema it
//! was not built for and says to migrate; `aloft-server migrate` creates
//! the schema once; a server on `--store postgres://...` keeps its records
//! there (nothing in a sled directory) across a kill -9, and refuses a
//! sled-style backup of it with what to use instead.

mod common;

use std::process::{Command, Stdio};

use aloft_protocol::pb;
use common::pg::TestDb;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_aloft-server");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unmigrated_database_is_refused_with_what_to_run_and_migrate_runs_once() {
    let db = TestDb::empty();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, _, err) = run(&[
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--insecure-plaintext",
        "--store",
        &db.url,
    ]);
    assert!(!ok);
    assert!(err.contains("schema is at version 0"), "{err}");
    assert!(err.contains("aloft-server migrate --store"), "{err}");

    let (ok, out, err) = run(&["migrate", "--store", &db.url]);
    assert!(ok, "{err}");
    assert!(out.contains("applied migration 1:"), "{out}");
    assert!(out.contains("(was 0)"), "{out}");
    let (ok, out, _) = run(&["migrate", "--store", &db.url]);
    assert!(ok);
    assert!(out.contains("already at version"), "{out}");
}

#[test]
fn a_store_that_is_neither_sled_nor_postgres_is_a_usage_error() {
    let out = Command::new(BIN)
        .args([
            "--data",
            "unused",
            "--listen",
            "127.0.0.1:0",
            "--insecure-plaintext",
            "--store",
            "mysql://db/aloft",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown store") && err.contains("postgres://"),
        "{err}"
    );
    let (_, help, _) = run(&["--help"]);
    assert!(help.contains("--store <STORE>") && help.contains("aloft-server migrate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_keeps_its_records_there_across_kill_9() {
    let db = TestDb::migrated();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut child = Command::new(BIN)
            .args([
                "--data",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--insecure-plaintext",
                "--store",
                &db.url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr: std::net::SocketAddr = line
            .trim()
            .strip_prefix("aloft-server listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .parse()
            .unwrap();
        (child, addr)
    };
    let (mut first, addr) = start();
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let mut admin = pb::admin_service_client::AdminServiceClient::new(connect(addr, None).await);
    admin
        .register_device(authed(TestDevice::new("dev-pg").register_request(), &token))
        .await
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        !data.join("db").exists(),
        "a server on PostgreSQL writes no sled store"
    );

    let (mut second, addr) = start();
    let mut admin = pb::admin_service_client::AdminServiceClient::new(connect(addr, None).await);
    let devices = admin
        .list_devices(authed(pb::ListDevicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(
        devices
            .iter()
            .map(|d| d.device_id.as_str())
            .collect::<Vec<_>>(),
        ["dev-pg"]
    );
    // Backups of this store are PostgreSQL's job, and the refusal says so.
    let refused = admin
        .backup(authed(pb::BackupRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("pg_dump"), "{refused:?}");
    second.kill().unwrap();
    second.wait().unwrap();
}
