//! The whole device against a real server: the boot simulator starts the
//! real firmware from a flash file; the firmware confirms itself, runs the
//! agent over gRPC, installs a rolled-out release, asks for a reboot, and the
//! new image confirms itself; then a release that crashes at start is
//! installed, fails three trial boots, the device goes back to the previous
//! image and the server sees the rollback.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aloft_agent::Identity;
use aloft_device::Device;
use aloft_firmware::board::{self, FileFlash};
use aloft_firmware::boot::{self, BootEvent, BootOptions, Outcome};
use aloft_firmware::config::{self, Fault, FirmwareConfig};
use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{DeviceId, SecretKey, UnixTime, Version, pb};
use aloft_server::ServerConfig;
use common::{Keys, NOW, Release, firmware_image, release};
use tonic::Request;

type Admin = AdminServiceClient<tonic::transport::Channel>;

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn upload(admin: &mut Admin, token: &str, rel: &Release) {
    use pb::upload_release_request::Part;
    let envelope = pb::SignedEnvelope::decode(rel.envelope.as_slice()).unwrap();
    let mut messages = vec![pb::UploadReleaseRequest {
        part: Some(Part::Header(pb::UploadReleaseHeader {
            manifest: Some(envelope),
            content_key: rel.key.expose().to_vec(),
            payload_len: rel.payload.len() as u64,
        })),
    }];
    for p in rel.payload.chunks(64 * 1024) {
        messages.push(pb::UploadReleaseRequest {
            part: Some(Part::Payload(p.to_vec())),
        });
    }
    admin
        .upload_release(authed(tokio_stream::iter(messages), token))
        .await
        .unwrap();
}

async fn rollout(admin: &mut Admin, token: &str, id: &str, rel: &Release) {
    admin
        .create_rollout(authed(
            pb::CreateRolloutRequest {
                rollout_id: id.into(),
                release_id: rel.manifest.release_id().to_string(),
                selector: String::new(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

/// Waits (up to 60 s) until the events seen so far satisfy `pred`.
fn wait_events(
    rx: &mpsc::Receiver<BootEvent>,
    seen: &mut Vec<BootEvent>,
    what: &str,
    pred: impl Fn(&[BootEvent]) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(60);
    while !pred(seen) {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("never saw {what}; events: {seen:#?}"),
        }
    }
}

async fn wait_device(
    admin: &mut Admin,
    token: &str,
    what: &str,
    pred: impl Fn(&pb::DeviceInfo) -> bool,
) -> pb::DeviceInfo {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let info = admin
            .get_device(authed(
                pb::GetDeviceRequest {
                    device_id: "dev-1".into(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        if pred(&info) {
            return info;
        }
        assert!(Instant::now() < until, "server never saw {what}: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn booted(e: &BootEvent, want_slot: char, want_version: &str, want_trial: bool) -> bool {
    matches!(e, BootEvent::Booted { slot, version, trial, .. }
        if *slot == want_slot && version == want_version && *trial == want_trial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_then_faulty_update_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.limits.next_check_in_secs = 1;
    let server = aloft_server::start(config).await.unwrap();
    let token = server.admin_token().to_owned();
    let url = format!("http://{}", server.local_addr());
    let mut admin = AdminServiceClient::connect(url.clone()).await.unwrap();

    let keys = Keys::new();
    let server_key = server.server_public_key();
    let envelope = keys.trust_root_for(&server_key, NOW + 86_400);
    let trust =
        VerifiedTrustRoot::trust_on_first_use(&envelope, UnixTime(common::created_at())).unwrap();
    admin
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(envelope),
            },
            &token,
        ))
        .await
        .unwrap();

    // Factory: register, write the identity bundle, 1.0.0 in slot A.
    let device_key = SecretKey::generate();
    admin
        .register_device(authed(
            pb::RegisterDeviceRequest {
                device_id: "dev-1".into(),
                public_key: device_key.public_key().to_sec1_compressed().to_vec(),
                attributes: Some(pb::DeviceAttributes {
                    product: board::PRODUCT.into(),
                    hardware: board::HARDWARE.into(),
                    region: "eu".into(),
                    time_zone: "Europe/Berlin".into(),
                    tags: vec![],
                    test_device: false,
                }),
                factory_version: "1.0.0".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    let identity = Identity::new(
        DeviceId::new("dev-1").unwrap(),
        device_key,
        url.clone(),
        None,
        trust.clone(),
        BTreeMap::from([
            ("product".to_owned(), board::PRODUCT.to_owned()),
            ("hardware".to_owned(), board::HARDWARE.to_owned()),
        ]),
    )
    .unwrap();
    let identity_path = dir.path().join("identity.pb");
    std::fs::write(&identity_path, identity.to_bundle().encode_to_vec()).unwrap();
    let base = firmware_image();
    let stamped = |major, minor, fault| {
        let mut image = base.clone();
        let version = Version::new(major, minor, 0);
        config::restamp(&mut image, &FirmwareConfig { version, fault }).unwrap();
        release(&keys, &trust, image, &version.to_string())
    };
    let factory = stamped(1, 0, Fault::None);
    let slot_size =
        (base.len() as u32 + aloft_device::DEFAULT_MANIFEST_AREA).div_ceil(1 << 20) << 20;
    let flash_path = dir.path().join("flash.bin");
    let flash = FileFlash::create(
        &flash_path,
        board::flash_len(slot_size) as usize,
        board::Durability::Sync,
    )
    .unwrap();
    Device::provision(
        flash,
        board::layout(slot_size),
        identity.device_config().unwrap(),
        &trust,
        &factory.image,
        &factory.envelope,
    )
    .unwrap();

    // Power on.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let mut opts = BootOptions::new(flash_path, identity_path);
    opts.reset_delay = Duration::from_millis(50);
    let boot_stop = stop.clone();
    let sim = std::thread::spawn(move || {
        boot::run(&opts, &boot_stop, |e| {
            let _ = tx.send(e.clone());
            ControlFlow::Continue(())
        })
    });
    let mut seen = Vec::new();
    wait_events(&rx, &mut seen, "1.0.0 confirmed", |ev| {
        ev.contains(&BootEvent::Confirmed)
    });
    assert!(booted(&seen[0], 'A', "1.0.0", false), "{seen:?}");

    // A good update: installed, reboot, trial, confirmed.
    let good = stamped(1, 1, Fault::None);
    upload(&mut admin, &token, &good).await;
    rollout(&mut admin, &token, "r1", &good).await;
    wait_events(&rx, &mut seen, "1.1.0 confirmed on B", |ev| {
        ev.iter()
            .position(|e| booted(e, 'B', "1.1.0", true))
            .is_some_and(|i| ev[i..].contains(&BootEvent::Confirmed))
    });
    assert!(seen.contains(&BootEvent::Reset {
        outcome: Outcome::Reboot
    }));
    wait_device(&mut admin, &token, "1.1.0 running", |d| {
        d.firmware_version == "1.1.0" && d.status == pb::DeviceStatus::Updated as i32
    })
    .await;

    // A faulty update: installed to A, three crashing trials, back to B.
    let mark = seen.len();
    let bad = stamped(1, 2, Fault::Crash);
    upload(&mut admin, &token, &bad).await;
    rollout(&mut admin, &token, "r2", &bad).await;
    wait_events(&rx, &mut seen, "1.1.0 back on B", |ev| {
        ev[mark..].iter().any(|e| booted(e, 'B', "1.1.0", false))
    });
    let trials = seen[mark..]
        .iter()
        .filter(|e| booted(e, 'A', "1.2.0", true))
        .count();
    assert_eq!(trials, 3, "{:#?}", &seen[mark..]);
    let crashes = seen[mark..]
        .iter()
        .filter(|e| {
            matches!(e, BootEvent::Reset { outcome: Outcome::Crash(Some(code)) }
                if *code == aloft_firmware::watchdog::EXIT_CRASH)
        })
        .count();
    assert_eq!(crashes, 3);
    let info = wait_device(&mut admin, &token, "the rollback", |d| {
        d.status == pb::DeviceStatus::RolledBack as i32
    })
    .await;
    assert_eq!(info.firmware_version, "1.1.0");

    stop.store(true, Ordering::SeqCst);
    sim.join().unwrap().unwrap();
    server.shutdown().await.unwrap();
}
