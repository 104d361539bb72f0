//! The server over real gRPC on 127.0.0.1:0: the happy path (TLS and
//! plaintext) and every refusal.

mod common;

use std::time::Duration;

use aloft_protocol::payload::ChunkDecryptor;
use aloft_protocol::pb::device_message::Body;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::pb::{self, ReportKind};
use aloft_protocol::trust::{DeviceContext, verify_update};
use aloft_protocol::{DeviceNonce, SecurityVersion, UnixTime, Version, wrap};
use common::*;
use tonic::{Code, Status};

async fn happy_path(tls: bool) {
    let h = start(tls).await;
    h.install_trust_root().await;
    let dev = h.register("dev-1").await;
    let release = h.keys.release("sensor-1.1.0", "1.1.0", 3000, now() + 3600);
    // Parts deliberately not aligned to chunks.
    let info = h.upload(&release, 1000).await.unwrap();
    assert_eq!(info.payload_len, release.payload.len() as u64);
    h.rollout("r1", "sensor-1.1.0", "").await;

    let (mut conn, welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    let Kind::Offer(offer) = conn.next().await.unwrap() else {
        panic!("expected an offer")
    };
    let trust = h.keys.verified_trust(&h.server.server_public_key());
    let nonce = DeviceNonce::from_bytes(conn.nonce);
    let ctx = DeviceContext {
        device_id: &dev.id,
        device_nonce: &nonce,
        product: "sensor",
        hardware: "rev-a",
        current_version: Version::new(1, 0, 0),
        security_floor: SecurityVersion(1),
        time_floor: UnixTime(0),
        slot_capacity: 1 << 20,
        now: UnixTime(now()),
    };
    let update = verify_update(
        &trust,
        offer.directive.as_ref().unwrap(),
        offer.manifest.as_ref().unwrap(),
        &ctx,
    )
    .expect("the offer verifies on the device");
    assert_eq!(update.directive().rollout_id(), "r1");
    let wrapped = update
        .directive()
        .content_key()
        .expect("an encrypted release");
    let key = wrap::unwrap_content_key(wrapped, &dev.key, &dev.id).unwrap();
    assert_eq!(&key, &release.key);
    assert_eq!(
        h.device_info("dev-1").await.status,
        pb::DeviceStatus::Offered as i32
    );

    // Full download, then a resume from the middle.
    let token = welcome.session_token.clone();
    let chunks = download(&h.channel, Some(&token), "sensor-1.1.0", 0)
        .await
        .unwrap();
    assert_eq!(chunks.len() as u32, release.params.chunk_count());
    let mut dec = ChunkDecryptor::new(&key, update.manifest().payload_params(), 0).unwrap();
    let mut image = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i as u32);
        let mut data = c.data.clone();
        image.extend_from_slice(dec.decrypt_next(&mut data).unwrap());
    }
    assert_eq!(image, release.image);
    let resumed = download(&h.channel, Some(&token), "sensor-1.1.0", 5)
        .await
        .unwrap();
    assert_eq!(resumed.first().unwrap().index, 5);
    assert_eq!(resumed.len(), chunks.len() - 5);
    let mut dec = ChunkDecryptor::new(&key, update.manifest().payload_params(), 5).unwrap();
    let mut data = resumed[0].data.clone();
    let plain = dec.decrypt_next(&mut data).unwrap();
    assert_eq!(plain, &release.image[5 * 256..6 * 256]);

    let ack = conn
        .report(ReportKind::Installed, "sensor-1.1.0", b"rep-1")
        .await;
    assert_eq!(ack.report_ids, vec![b"rep-1".to_vec()]);
    assert_eq!(
        h.device_info("dev-1").await.status,
        pb::DeviceStatus::Installed as i32
    );
    conn.report(ReportKind::Confirmed, "sensor-1.1.0", b"rep-2")
        .await;
    let info = h.device_info("dev-1").await;
    assert_eq!(info.status, pb::DeviceStatus::Updated as i32);
    assert!(info.connected);
    assert!(info.last_seen > 0);

    // A late report and a replayed report never move status back.
    let seq = info.status_seq;
    let ack = conn
        .report(ReportKind::Installed, "sensor-1.1.0", b"rep-late")
        .await;
    assert_eq!(ack.report_ids, vec![b"rep-late".to_vec()]);
    let ack = conn
        .report(ReportKind::Installed, "sensor-1.1.0", b"rep-1")
        .await;
    assert_eq!(
        ack.report_ids,
        vec![b"rep-1".to_vec()],
        "re-sends are acknowledged again"
    );
    let info = h.device_info("dev-1").await;
    assert_eq!(info.status, pb::DeviceStatus::Updated as i32);
    assert_eq!(info.status_seq, seq);

    let events = h
        .admin()
        .list_device_events(authed(
            pb::ListDeviceEventsRequest {
                device_id: "dev-1".into(),
                limit: 0,
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "registered",
        "connected",
        "offered",
        "installed",
        "confirmed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    drop(conn);
    h.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn happy_path_plaintext() {
    happy_path(false).await;
}

#[tokio::test]
async fn happy_path_tls() {
    happy_path(true).await;
}

/// Stored "connected" events of `id`.
async fn stored_connects(h: &Harness, id: &str) -> Vec<String> {
    h.admin()
        .list_device_events(authed(
            pb::ListDeviceEventsRequest {
                device_id: id.into(),
                limit: 0,
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.kind == "connected")
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn routine_check_ins_are_published_but_not_stored() {
    let h = start(false).await;
    let mut dev = h.register("dev-r").await;
    let mut live = h
        .admin()
        .watch_events(authed(pb::WatchEventsRequest::default(), &h.token()))
        .await
        .unwrap()
        .into_inner();
    let mut check_in = async |dev: &TestDevice| {
        drop(dev.connect(&h.channel, vec![]).await.unwrap());
        let e = tokio::time::timeout(Duration::from_secs(5), live.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.kind.as_str(), e.device_id.as_str()),
            ("connected", "dev-r")
        );
        e.seq
    };
    // The first connection is news: stored.
    assert_ne!(check_in(&dev).await, 0);
    // The same state again: live watchers see it, the log does not grow.
    assert_eq!(check_in(&dev).await, 0);
    assert_eq!(check_in(&dev).await, 0);
    assert_eq!(stored_connects(&h, "dev-r").await, ["running 1.0.0"]);
    // New firmware is news again.
    dev.version = "1.1.0".into();
    assert_ne!(check_in(&dev).await, 0);
    assert_eq!(
        stored_connects(&h, "dev-r").await,
        ["running 1.0.0", "running 1.1.0"]
    );
    assert_eq!(h.device_info("dev-r").await.firmware_version, "1.1.0");
}

#[tokio::test]
async fn rolled_back_report_marks_device_and_stops_offers() {
    let h = start(false).await;
    h.install_trust_root().await;
    let dev = h.register("dev-rb").await;
    let release = h.keys.release("sensor-1.2.0", "1.2.0", 700, now() + 3600);
    h.upload(&release, 4096).await.unwrap();
    h.rollout("r-rb", "sensor-1.2.0", "id=dev-rb").await;
    let (mut conn, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    assert!(matches!(conn.next().await.unwrap(), Kind::Offer(_)));
    conn.report(ReportKind::RolledBack, "sensor-1.2.0", b"rb-1")
        .await;
    let info = h.device_info("dev-rb").await;
    assert_eq!(info.status, pb::DeviceStatus::RolledBack as i32);
    assert_eq!(info.release_id, "sensor-1.2.0");
    drop(conn);
    // A late CONFIRMED cannot turn a rollback into success; no new offer.
    let report = pb::Report {
        report_id: b"late".to_vec(),
        kind: ReportKind::Confirmed as i32,
        release_id: "sensor-1.2.0".into(),
        detail: String::new(),
    };
    let (mut conn, _) = dev.connect(&h.channel, vec![report]).await.unwrap();
    let Kind::ReportAck(ack) = conn.next().await.unwrap() else {
        panic!("expected ack")
    };
    assert_eq!(ack.report_ids, vec![b"late".to_vec()]);
    assert_eq!(
        h.device_info("dev-rb").await.status,
        pb::DeviceStatus::RolledBack as i32
    );
    conn.send(Body::Heartbeat(pb::Heartbeat {
        state: Some(dev.state()),
    }))
    .await;
    let ack = conn
        .report(ReportKind::Installed, "sensor-1.2.0", b"x")
        .await;
    assert_eq!(ack.report_ids.len(), 1, "no offer arrived before the ack");
}

#[tokio::test]
async fn unknown_and_revoked_devices_are_refused() {
    let h = start(false).await;
    let stranger = TestDevice::new("stranger");
    let err = stranger.connect(&h.channel, vec![]).await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("unknown device"));

    let dev = h.register("dev-r").await;
    let (mut live, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    h.admin()
        .revoke_device(authed(
            pb::RevokeDeviceRequest {
                device_id: "dev-r".into(),
            },
            &h.token(),
        ))
        .await
        .unwrap();
    let err = live.next().await.err().unwrap();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "revocation closes the live session"
    );
    let err = dev.connect(&h.channel, vec![]).await.err().unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"));
    assert_eq!(
        h.device_info("dev-r").await.status,
        pb::DeviceStatus::Revoked as i32
    );
}

#[tokio::test]
async fn replayed_or_forged_hello_is_refused() {
    let h = start(false).await;
    let dev = h.register("dev-a").await;
    // Capture a valid hello from one session...
    let mut first = dev.open(&h.channel).await.unwrap();
    let hello = pb::Hello {
        device_nonce: first.nonce.to_vec(),
        state: Some(dev.state()),
        reports: vec![],
    };
    let captured = first.seal(Body::Hello(hello));
    first.send_raw(captured.clone()).await;
    assert!(matches!(first.next().await.unwrap(), Kind::Welcome(_)));
    // ...and replay it on a new stream: the challenge differs.
    let second = dev.open(&h.channel).await.unwrap();
    second.send_raw(captured).await;
    let mut second = second;
    let err = second.next().await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A hello signed by another key.
    let mut forged = dev.open(&h.channel).await.unwrap();
    forged.key = aloft_protocol::SecretKey::generate();
    let hello = pb::Hello {
        device_nonce: forged.nonce.to_vec(),
        state: Some(dev.state()),
        reports: vec![],
    };
    forged.send(Body::Hello(hello)).await;
    assert_eq!(
        forged.next().await.err().unwrap().code(),
        Code::Unauthenticated
    );

    // Garbage instead of a device message.
    let garbage = dev.open(&h.channel).await.unwrap();
    garbage
        .send_raw(pb::SignedDeviceMessage {
            payload: vec![0xff; 40],
            signature: vec![1; 64],
        })
        .await;
    let mut garbage = garbage;
    assert_eq!(
        garbage.next().await.err().unwrap().code(),
        Code::InvalidArgument
    );

    // First message not a hello.
    let mut not_hello = dev.open(&h.channel).await.unwrap();
    not_hello
        .send(Body::Heartbeat(pb::Heartbeat { state: None }))
        .await;
    assert_eq!(
        not_hello.next().await.err().unwrap().code(),
        Code::InvalidArgument
    );
}

/// The refusal of an oversized or undecodable device message says what was
/// wrong, how big it was and what the limit is; never a signature hint.
#[tokio::test]
async fn oversized_and_garbage_device_messages_are_refused_with_their_limit() {
    use aloft_protocol::limits::MAX_DEVICE_MESSAGE_LEN;
    let h = start(false).await;
    let dev = h.register("dev-big").await;
    let oversized = pb::SignedDeviceMessage {
        payload: vec![0; MAX_DEVICE_MESSAGE_LEN + 100],
        signature: vec![1; 64],
    };
    let expect_limit = |err: Status| {
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let text = err.message();
        assert!(
            text.contains(&format!("{} bytes", MAX_DEVICE_MESSAGE_LEN + 100)),
            "{text}"
        );
        assert!(text.contains(&MAX_DEVICE_MESSAGE_LEN.to_string()), "{text}");
        assert!(!text.contains("seq"), "no signature hint: {text}");
    };
    // As the hello...
    let mut hello = dev.open(&h.channel).await.unwrap();
    hello.send_raw(oversized.clone()).await;
    expect_limit(hello.next().await.err().unwrap());
    // ...and inside an authenticated session.
    let (mut conn, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    conn.send_raw(oversized).await;
    expect_limit(conn.next().await.err().unwrap());
    // Signed garbage says what it is not, once.
    let (mut conn, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    conn.seq += 1;
    let payload = vec![0xff; 40];
    let signature = conn
        .key
        .sign(aloft_protocol::keys::Domain::DeviceMessage, &payload);
    conn.send_raw(pb::SignedDeviceMessage {
        payload,
        signature: signature.as_bytes().to_vec(),
    })
    .await;
    let err = conn.next().await.err().unwrap();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("protobuf DeviceMessage"),
        "{}",
        err.message()
    );
    assert_eq!(
        err.message().matches("malformed").count(),
        0,
        "{}",
        err.message()
    );
    // The server still serves the device.
    dev.connect(&h.channel, vec![]).await.unwrap();
}

#[tokio::test]
async fn in_session_replay_and_wrong_challenge_close_the_stream() {
    let h = start(false).await;
    let dev = h.register("dev-s").await;
    let (mut conn, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    let hb = conn.seal(Body::Heartbeat(pb::Heartbeat { state: None }));
    conn.send_raw(hb.clone()).await;
    conn.send_raw(hb).await; // same seq again
    let err = conn.next().await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("seq"), "{}", err.message());

    let (mut conn, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    conn.challenge = vec![0; 32];
    conn.send(Body::Heartbeat(pb::Heartbeat { state: None }))
        .await;
    assert_eq!(
        conn.next().await.err().unwrap().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn newest_session_wins() {
    let h = start(false).await;
    let dev = h.register("dev-n").await;
    let (mut old, old_welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    let (mut new, _) = dev.connect(&h.channel, vec![]).await.unwrap();
    let err = old.next().await.err().unwrap();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // The old token no longer authorises anything.
    let err = download(&h.channel, Some(&old_welcome.session_token), "any", 0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    new.report(ReportKind::InstallFailed, "sensor-9.9.9", b"n1")
        .await;
}

#[tokio::test]
async fn silent_device_is_dropped_after_the_hello_timeout() {
    let h = start_with(false, |c| {
        c.limits.hello_timeout = Duration::from_millis(300)
    })
    .await;
    let dev = h.register("dev-quiet").await;
    let mut conn = dev.open(&h.channel).await.unwrap();
    let started = std::time::Instant::now();
    let err = conn.next().await.err().unwrap();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn downloads_need_a_session_and_a_directive_for_this_device() {
    let h = start(false).await;
    h.install_trust_root().await;
    let a = h.register("dev-da").await;
    let b = h.register("dev-db").await;
    let release = h.keys.release("sensor-2.0.0", "2.0.0", 600, now() + 3600);
    h.upload(&release, 4096).await.unwrap();
    h.rollout("only-a", "sensor-2.0.0", "id=dev-da").await;

    let (mut ca, wa) = a.connect(&h.channel, vec![]).await.unwrap();
    assert!(matches!(ca.next().await.unwrap(), Kind::Offer(_)));
    let (_cb, wb) = b.connect(&h.channel, vec![]).await.unwrap();

    assert_eq!(
        download(&h.channel, None, "sensor-2.0.0", 0)
            .await
            .err()
            .unwrap()
            .code(),
        Code::Unauthenticated
    );
    let bogus = [7u8; 32];
    assert_eq!(
        download(&h.channel, Some(&bogus), "sensor-2.0.0", 0)
            .await
            .err()
            .unwrap()
            .code(),
        Code::Unauthenticated
    );
    let err = download(&h.channel, Some(&wb.session_token), "sensor-2.0.0", 0)
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "B has no directive for A's release: {err:?}"
    );
    assert_eq!(
        download(&h.channel, Some(&wa.session_token), "nope-1", 0)
            .await
            .err()
            .unwrap()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        download(&h.channel, Some(&wa.session_token), "sensor-2.0.0", 99)
            .await
            .err()
            .unwrap()
            .code(),
        Code::OutOfRange
    );
    assert_eq!(
        download(&h.channel, Some(&wa.session_token), "sensor-2.0.0", 0)
            .await
            .unwrap()
            .len(),
        3
    );
    // An operator token is not a device credential either.
    let err = download(&h.channel, Some(h.token().as_bytes()), "sensor-2.0.0", 0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn uploads_are_verified_and_nothing_is_stored_on_failure() {
    let h = start(false).await;
    let good = h.keys.release("sensor-3.0.0", "3.0.0", 1000, now() + 3600);
    let err = h.upload(&good, 4096).await.err().unwrap();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("SetTrustRoot"));
    h.install_trust_root().await;

    let mut unsigned = h.keys.release("u-1", "3.0.0", 1000, now() + 3600);
    unsigned.manifest.signatures.clear();
    let mut altered = h.keys.release("a-1", "3.0.0", 1000, now() + 3600);
    let last = altered.manifest.payload.len() - 1;
    altered.manifest.payload[last] ^= 1;
    let expired = h.keys.release("e-1", "3.0.0", 1000, now() - 10);
    let mut by_server_role = h.keys.release("s-1", "3.0.0", 1000, now() + 3600);
    by_server_role.manifest.signatures.clear();
    aloft_protocol::envelope::add_signature(
        &mut by_server_role.manifest,
        aloft_protocol::keys::Domain::ReleaseManifest,
        &h.keys.root,
    );
    for (name, r) in [
        ("unsigned", &unsigned),
        ("altered", &altered),
        ("expired", &expired),
        ("root-signed", &by_server_role),
    ] {
        let err = h.upload(r, 4096).await.err().unwrap();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    // Payload problems: wrong declared length, truncated, extended, tampered, wrong key.
    let admin = h.admin();
    let err = upload(
        &admin,
        &h.token(),
        &good,
        good.payload.len() as u64 + 1,
        4096,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut short = h.keys.release("t-1", "3.0.0", 1000, now() + 3600);
    let full = short.payload.len() as u64;
    short.payload.truncate(500);
    assert_eq!(
        upload(&admin, &h.token(), &short, full, 4096)
            .await
            .err()
            .unwrap()
            .code(),
        Code::InvalidArgument
    );
    let mut long = h.keys.release("l-1", "3.0.0", 1000, now() + 3600);
    let full = long.payload.len() as u64;
    long.payload.extend_from_slice(&[0; 10]);
    assert_eq!(
        upload(&admin, &h.token(), &long, full, 4096)
            .await
            .err()
            .unwrap()
            .code(),
        Code::InvalidArgument
    );
    let mut tampered = h.keys.release("x-1", "3.0.0", 1000, now() + 3600);
    tampered.payload[600] ^= 1;
    assert_eq!(
        h.upload(&tampered, 100).await.err().unwrap().code(),
        Code::InvalidArgument
    );
    let mut wrong_key = h.keys.release("k-1", "3.0.0", 1000, now() + 3600);
    wrong_key.key = aloft_protocol::ContentKey::from_bytes([9; 32]);
    assert_eq!(
        h.upload(&wrong_key, 4096).await.err().unwrap().code(),
        Code::InvalidArgument
    );
    assert!(
        h.releases().await.is_empty(),
        "nothing stored after failures"
    );

    h.upload(&good, 333).await.unwrap();
    let err = h.upload(&good, 4096).await.err().unwrap();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(h.releases().await.len(), 1);
}

#[tokio::test]
async fn oversized_payload_is_refused_by_limit() {
    let h = start_with(false, |c| c.limits.max_payload_len = 1000).await;
    h.install_trust_root().await;
    let big = h.keys.release("big-1", "1.5.0", 2000, now() + 3600);
    let err = h.upload(&big, 4096).await.err().unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit"));
    // A single message over the decode limit.
    let admin = h.admin();
    let huge = aloft_protocol::pb::SetTrustRootRequest {
        trust_root: Some(pb::SignedEnvelope {
            payload: vec![0; 2 << 20],
            signatures: vec![],
        }),
    };
    let err = admin
        .clone()
        .set_trust_root(authed(huge, &h.token()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"));
    assert!(h.releases().await.is_empty());
}

#[tokio::test]
async fn trust_root_rotation_rules() {
    let h = start(false).await;
    h.install_trust_root().await;
    let admin = h.admin();
    let skipped = h.keys.trust_root(&h.server.server_public_key(), 3);
    let err = admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(skipped),
            },
            &h.token(),
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    let next = h.keys.trust_root(&h.server.server_public_key(), 2);
    let info = admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(next.clone()),
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.trust_root, Some(next));
    // A different root cannot take over.
    let other = Keys::new().trust_root(&h.server.server_public_key(), 3);
    let err = admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(other),
            },
            &h.token(),
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn operator_auth_and_least_privilege() {
    let h = start(false).await;
    let admin = h.admin();
    let token = |role: pb::Role, name: &str| {
        let admin = admin.clone();
        let t = h.token();
        let name = name.to_owned();
        async move {
            admin
                .clone()
                .create_token(authed(
                    pb::CreateTokenRequest {
                        name,
                        role: role as i32,
                    },
                    &t,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let viewer = token(pb::Role::Viewer, "viewer").await;
    let operator = token(pb::Role::Operator, "ops").await;

    // No token.
    let err = admin
        .clone()
        .list_devices(pb::ListDevicesRequest::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Viewer reads but cannot write.
    admin
        .clone()
        .list_devices(authed(pb::ListDevicesRequest::default(), &viewer.token))
        .await
        .unwrap();
    let dev = TestDevice::new("dev-auth");
    let err = admin
        .clone()
        .register_device(authed(dev.register_request(), &viewer.token))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = admin
        .clone()
        .create_rollout(authed(
            pb::CreateRolloutRequest {
                rollout_id: "x".into(),
                release_id: "y".into(),
                ..Default::default()
            },
            &viewer.token,
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Operator manages devices but not tokens or the trust root.
    admin
        .clone()
        .register_device(authed(dev.register_request(), &operator.token))
        .await
        .unwrap();
    let err = admin
        .clone()
        .create_token(authed(
            pb::CreateTokenRequest {
                name: "x".into(),
                role: pb::Role::Admin as i32,
            },
            &operator.token,
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    let tr = h.keys.trust_root(&h.server.server_public_key(), 1);
    let err = admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(tr),
            },
            &operator.token,
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Revoked tokens are refused.
    admin
        .clone()
        .revoke_token(authed(
            pb::RevokeTokenRequest {
                token_id: operator.info.unwrap().token_id,
            },
            &h.token(),
        ))
        .await
        .unwrap();
    let err = admin
        .clone()
        .list_devices(authed(pb::ListDevicesRequest::default(), &operator.token))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"));
    // A device's session token is not an operator token.
    let (_conn, welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    let err = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest::default(),
            &hex::encode(&welcome.session_token),
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Tokens are listed without secrets.
    let tokens = admin
        .clone()
        .list_tokens(authed(pb::ListTokensRequest {}, &h.token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tokens.tokens.len(), 3);
    assert!(tokens.tokens.iter().any(|t| t.revoked));
}

#[tokio::test]
async fn list_devices_pages_and_filters() {
    let h = start(false).await;
    for i in 0..5 {
        h.register(&format!("dev-{i}")).await;
    }
    let admin = h.admin();
    let page = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest {
                limit: 2,
                ..Default::default()
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.devices.len(), 2);
    assert_eq!(page.next_after, "dev-1");
    let rest = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest {
                after: page.next_after,
                limit: 10,
                ..Default::default()
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.devices.len(), 3);
    assert!(rest.next_after.is_empty());
    let sel = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest {
                selector: "id=dev-3".into(),
                ..Default::default()
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sel.devices.len(), 1);
    let stale = admin
        .clone()
        .list_devices(authed(
            pb::ListDevicesRequest {
                stale_secs: 3600,
                ..Default::default()
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stale.devices.len(), 5, "never-seen devices are stale");
    let err = admin
        .clone()
        .register_device(authed(
            TestDevice::new("dev-0").register_request(),
            &h.token(),
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut bad = TestDevice::new("dev-bad").register_request();
    bad.public_key = vec![4; 10];
    let err = admin
        .clone()
        .register_device(authed(bad, &h.token()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn misbehaving_client_does_not_disturb_others() {
    let h = start(false).await;
    let good = h.register("dev-good").await;
    let bad = h.register("dev-bad").await;
    let mut bad_conn = bad.open(&h.channel).await.unwrap();
    // Oversized message: over the device service's decode limit.
    bad_conn
        .send_raw(pb::SignedDeviceMessage {
            payload: vec![0; 64 * 1024],
            signature: vec![],
        })
        .await;
    let err = bad_conn.next().await.err().unwrap();
    assert_ne!(err.code(), Code::Ok);
    let (mut conn, _) = good.connect(&h.channel, vec![]).await.unwrap();
    let ack = conn
        .report(ReportKind::InstallFailed, "sensor-1.0.1", b"g1")
        .await;
    assert_eq!(ack.report_ids.len(), 1);
    let info = h.device_info("dev-bad").await;
    assert_eq!(info.last_seen, 0, "the bad client left nothing behind");
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = Keys::new();
    let store = TestStore::new();
    let config = || {
        let mut c = aloft_server::ServerConfig::new(&data, "127.0.0.1:0".parse().unwrap());
        c.store = store.backend();
        c
    };
    let server = aloft_server::start(config()).await.unwrap();
    let token = server.admin_token().to_owned();
    let pk = server.server_public_key();
    let ch = connect(server.local_addr(), None).await;
    let admin = aloft_protocol::pb::admin_service_client::AdminServiceClient::new(ch);
    admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(keys.trust_root(&pk, 1)),
            },
            &token,
        ))
        .await
        .unwrap();
    admin
        .clone()
        .register_device(authed(TestDevice::new("dev-p").register_request(), &token))
        .await
        .unwrap();
    let release = keys.release("sensor-4.0.0", "4.0.0", 900, now() + 3600);
    upload(&admin, &token, &release, release.payload.len() as u64, 4096)
        .await
        .unwrap();
    server.shutdown().await.unwrap();

    let server = aloft_server::start(config()).await.unwrap();
    assert_eq!(server.admin_token(), token);
    assert_eq!(server.server_public_key(), pk);
    let ch = connect(server.local_addr(), None).await;
    let admin = aloft_protocol::pb::admin_service_client::AdminServiceClient::new(ch);
    let info = admin
        .clone()
        .get_server_info(authed(pb::GetServerInfoRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(info.trust_root.is_some());
    admin
        .clone()
        .get_device(authed(
            pb::GetDeviceRequest {
                device_id: "dev-p".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    let releases = admin
        .clone()
        .list_releases(authed(pb::ListReleasesRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(releases.releases.len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_events_streams_live_events() {
    let h = start(false).await;
    let admin = h.admin();
    let err = admin
        .clone()
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut events = admin
        .clone()
        .watch_events(authed(pb::WatchEventsRequest::default(), &h.token()))
        .await
        .unwrap()
        .into_inner();
    h.register("dev-w").await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, "registered");
    assert_eq!(event.device_id, "dev-w");
    assert!(event.seq > 0);
}
