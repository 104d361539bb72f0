//! A small fleet against the real server in-process: every device updates,
//! power cuts mid-download resume, never-confirming firmware rolls back, and
//! the server's records agree.

#[path = "../../aloft-agent/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use aloft_agent::{AgentConfig, BackoffConfig};
use aloft_protocol::pb;
use aloft_sim::{Identities, SimConfig};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_update_resume_and_roll_back() {
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 8 * 1024);
    let update = h.keys.release("1.1.0", 64 * 1024);
    h.upload(&update).await;
    h.rollout("fleet", &update.id, "").await;

    let bundle = pb::ReleaseBundle {
        manifest: Some(factory.manifest.clone()),
        content_key: factory.key.expose().to_vec(),
        payload: factory.payload.clone(),
    };
    let mut config = SimConfig::new(
        20,
        h.url(),
        Identities::Register {
            admin_token: h.server.admin_token().to_owned(),
            id_prefix: "fleet-".into(),
        },
        bundle,
    );
    config.slot_size = Some(68 * 1024);
    config.power_cut_pct = 25.0;
    config.never_confirm_pct = 20.0;
    config.until_updated = Some("1.1.0".into());
    config.duration = Duration::from_secs(60);
    config.trial_run = Duration::from_millis(300);
    config.spread_source_addrs = true;
    config.agent = AgentConfig {
        heartbeat: Duration::from_millis(500),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..AgentConfig::default()
    };
    let summary = aloft_sim::run(config).await.unwrap();
    println!("{}", summary.render());

    assert!(summary.condition_met, "{summary:?}");
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.outcomes.get("updated"), Some(&16));
    assert_eq!(summary.outcomes.get("rolled_back"), Some(&4));
    assert_eq!(summary.rollbacks, 4);
    assert_eq!(summary.power_cuts, 5);
    assert_eq!(
        summary.resumes, 5,
        "every cut download resumed past chunk 0"
    );
    assert_eq!(summary.restarts_from_zero, 0);
    assert!(summary.installs >= 20);
    assert!(summary.connect.count >= 20 && summary.auth.count >= 20);

    let mut updated = 0;
    let mut rolled_back = 0;
    for i in 0..20 {
        let info = h.device_info(&format!("fleet-{i:05}")).await;
        assert_eq!(info.release_id, update.id);
        match pb::DeviceStatus::try_from(info.status).unwrap() {
            pb::DeviceStatus::Updated => {
                assert_eq!(info.firmware_version, "1.1.0");
                updated += 1;
            }
            pb::DeviceStatus::RolledBack => {
                assert_eq!(info.firmware_version, "1.0.0");
                rolled_back += 1;
            }
            other => panic!("fleet-{i:05}: {other:?}"),
        }
    }
    assert_eq!((updated, rolled_back), (16, 4));
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_a_fleet_and_prints_json() {
    use aloft_protocol::prost::Message as _;
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 8 * 1024);
    let update = h.keys.release("1.1.0", 8 * 1024);
    h.upload(&update).await;
    h.rollout("cli", &update.id, "").await;
    let bundle = pb::ReleaseBundle {
        manifest: Some(factory.manifest.clone()),
        content_key: factory.key.expose().to_vec(),
        payload: factory.payload.clone(),
    };
    let path = h.dir.path().join("factory.bundle");
    std::fs::write(&path, bundle.encode_to_vec()).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft-sim"))
        .args(["--devices", "5", "--server", &h.url(), "--factory"])
        .arg(&path)
        .args(["--until-updated", "1.1.0", "--duration", "30", "--json"])
        .args(["--progress", "0", "--backoff-ms", "50"])
        .env("ALOFT_TOKEN", h.server.admin_token())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["devices"], 5);
    assert_eq!(summary["condition_met"], true);
    assert_eq!(summary["outcomes"]["updated"], 5);
    assert!(summary["auth"]["count"].as_u64().unwrap() >= 5);
    assert!(summary["connect"]["p50_ms"].as_f64().unwrap() > 0.0);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_binary_refuses_missing_identity_source_and_bad_factory() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\xff\xff\xff not a bundle").unwrap();
    let run = |args: Vec<&std::ffi::OsStr>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_aloft-sim"));
        c.args(args).env_remove("ALOFT_TOKEN");
        c.output().unwrap()
    };
    let out = run(vec![
        "--server".as_ref(),
        "http://127.0.0.1:1".as_ref(),
        "--factory".as_ref(),
        junk.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
    let out = run(vec![
        "--server".as_ref(),
        "http://127.0.0.1:1".as_ref(),
        "--token".as_ref(),
        "t".as_ref(),
        "--factory".as_ref(),
        junk.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a release bundle"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A larger fleet for measurements (`cargo test -p aloft-sim --test fleet --
/// --ignored --nocapture`; ALOFT_SIM_DEVICES sets the size).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement: a larger fleet"]
async fn larger_fleet_measurement() {
    let n: usize = std::env::var("ALOFT_SIM_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let h = Harness::start(false).await;
    let factory = h.keys.release("1.0.0", 8 * 1024);
    let update = h.keys.release("1.1.0", 32 * 1024);
    h.upload(&update).await;
    h.rollout("big", &update.id, "").await;
    let bundle = pb::ReleaseBundle {
        manifest: Some(factory.manifest.clone()),
        content_key: factory.key.expose().to_vec(),
        payload: factory.payload.clone(),
    };
    let mut config = SimConfig::new(
        n,
        h.url(),
        Identities::Register {
            admin_token: h.server.admin_token().to_owned(),
            id_prefix: "big-".into(),
        },
        bundle,
    );
    config.slot_size = Some(40 * 1024);
    config.until_updated = Some("1.1.0".into());
    config.duration = Duration::from_secs(120);
    config.spread_source_addrs = true;
    config.progress = Some(Duration::from_secs(5));
    let summary = aloft_sim::run(config).await.unwrap();
    println!("{}", summary.render());
    h.server.shutdown().await.unwrap();
}
