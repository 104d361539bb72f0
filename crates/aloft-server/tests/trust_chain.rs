//! The server's TrustRoot chain (threats 13, 22): every root kept across
//! restarts and expiry, rotations that still need the newest root's
//! threshold, revoked release keys refused at upload, the successors a
//! lagging device lacks sent before any offer, and the switch to the next
//! directive key once a root lists it.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;

use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::pb::{self, server_to_device::Kind};
use aloft_protocol::trust::VerifiedTrustRoot;
use aloft_protocol::{PublicKey, SecretKey, UnixTime};
use aloft_server::clock::ManualClock;
use aloft_server::{RunningServer, ServerConfig};
use common::{Harness, Keys, TestDevice, TestStore, authed, connect, now, upload};
use tonic::Code;
use tonic::transport::Channel;

const HOUR: u64 = 3600;

fn key_bytes(k: &PublicKey) -> Vec<u8> {
    k.to_sec1_compressed().to_vec()
}

/// A TrustRoot `version` listing `root`, `release` and `server` keys,
/// expiring at `expires_at`, signed by `signers`.
fn root(
    version: u32,
    expires_at: u64,
    root: &SecretKey,
    release: &SecretKey,
    server: &PublicKey,
    signers: &[&SecretKey],
) -> pb::SignedEnvelope {
    let tr = pb::TrustRoot {
        version,
        expires_at,
        root_keys: vec![key_bytes(&root.public_key())],
        root_threshold: 1,
        release_keys: vec![key_bytes(&release.public_key())],
        release_threshold: 1,
        server_keys: vec![key_bytes(server)],
    };
    seal(&tr, Domain::TrustRoot, signers)
}

async fn set(
    channel: &Channel,
    token: &str,
    env: &pb::SignedEnvelope,
) -> Result<pb::ServerInfo, tonic::Status> {
    pb::admin_service_client::AdminServiceClient::new(channel.clone())
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(env.clone()),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn history(channel: &Channel, token: &str) -> Vec<u32> {
    pb::admin_service_client::AdminServiceClient::new(channel.clone())
        .get_trust_root_history(authed(pb::GetTrustRootHistoryRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .roots
        .iter()
        .map(|r| {
            VerifiedTrustRoot::reload_stored(r.trust_root.as_ref().unwrap())
                .unwrap()
                .version()
        })
        .collect()
}

async fn start_at(
    data: &std::path::Path,
    store: &TestStore,
    clock: &Arc<ManualClock>,
) -> (RunningServer, Channel) {
    let mut config = ServerConfig::new(data, "127.0.0.1:0".parse().unwrap());
    config.store = store.backend();
    config.clock = clock.clone();
    let server = aloft_server::start(config).await.unwrap();
    let channel = connect(server.local_addr(), None).await;
    (server, channel)
}

/// The defect this guards: a restart used to drop an expired stored root,
/// after which any self-signed root was accepted as a "first" one.
#[tokio::test]
async fn an_expired_stored_root_is_kept_and_still_guards_the_next_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = TestStore::new();
    let t0 = now();
    let clock = Arc::new(ManualClock::new(UnixTime(t0)));
    let keys = Keys::new();
    let (server, channel) = start_at(&data, &store, &clock).await;
    let token = server.admin_token().to_owned();
    let pk = server.server_public_key();
    let v1 = root(1, t0 + HOUR, &keys.root, &keys.release, &pk, &[&keys.root]);
    set(&channel, &token, &v1).await.unwrap();
    server.shutdown().await.unwrap();

    // Two hours later v1 has expired; the server restarts.
    clock.set(UnixTime(t0 + 2 * HOUR));
    let (server, channel) = start_at(&data, &store, &clock).await;
    let admin = pb::admin_service_client::AdminServiceClient::new(channel.clone());
    let info = admin
        .clone()
        .get_server_info(authed(pb::GetServerInfoRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.trust_root,
        Some(v1.clone()),
        "the expired root is kept"
    );
    // Nothing verifies under it: an upload is refused as expired.
    let release = keys.release("sensor-2.0.0", "2.0.0", 600, t0 + 30 * HOUR);
    let err = upload(&admin, &token, &release, release.payload.len() as u64, 4096)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("expired"), "{}", err.message());

    // Self-signed roots by other keys are refused, whatever their version.
    let stranger = Keys::new();
    let later = t0 + 400 * 24 * HOUR;
    for version in [1, 2] {
        let forged = root(
            version,
            later,
            &stranger.root,
            &stranger.release,
            &pk,
            &[&stranger.root],
        );
        let err = set(&channel, &token, &forged).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "version {version}");
        assert!(
            err.message()
                .contains("signed by the root threshold of version 1"),
            "{}",
            err.message()
        );
    }
    // A successor signed only by its new key is refused too.
    let new_root = SecretKey::generate();
    let only_new = root(2, later, &new_root, &keys.release, &pk, &[&new_root]);
    assert_eq!(
        set(&channel, &token, &only_new).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // The proper rotation: signed by v1's root key and its own.
    let v2 = root(
        2,
        later,
        &new_root,
        &keys.release,
        &pk,
        &[&keys.root, &new_root],
    );
    let info = set(&channel, &token, &v2).await.unwrap();
    assert_eq!(info.trust_root, Some(v2));
    upload(&admin, &token, &release, release.payload.len() as u64, 4096)
        .await
        .unwrap();
    assert_eq!(history(&channel, &token).await, [1, 2]);
    server.shutdown().await.unwrap();
    // The whole chain survives another restart.
    let (server, channel) = start_at(&data, &store, &clock).await;
    assert_eq!(history(&channel, &token).await, [1, 2]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_revoked_release_key_is_refused_at_upload() {
    let h = common::start(false).await;
    let token = h.token();
    let pk = h.server.server_public_key();
    let t0 = now();
    let v1 = root(
        1,
        t0 + 24 * HOUR,
        &h.keys.root,
        &h.keys.release,
        &pk,
        &[&h.keys.root],
    );
    set(&h.channel, &token, &v1).await.unwrap();
    // v2 replaces (revokes) the release key.
    let next = Keys {
        root: h.keys.root.clone(),
        release: SecretKey::generate(),
    };
    let v2 = root(
        2,
        t0 + 24 * HOUR,
        &next.root,
        &next.release,
        &pk,
        &[&h.keys.root],
    );
    set(&h.channel, &token, &v2).await.unwrap();
    let revoked = h.keys.release("sensor-1.1.0", "1.1.0", 500, t0 + HOUR);
    let err = h.upload(&revoked, 4096).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("threshold"), "{}", err.message());
    let current = next.release("sensor-1.1.1", "1.1.1", 500, t0 + HOUR);
    h.upload(&current, 4096).await.unwrap();
    assert!(
        h.releases().await.len() == 1,
        "nothing stored for the refused one"
    );
}

/// Opens a session stating TrustRoot `version`; returns the messages after
/// the Welcome until the first offer or check-in-later (or 3 messages).
async fn session_after_welcome(h: &Harness, dev: &TestDevice, version: u32) -> Vec<Kind> {
    let mut conn = dev.open(&h.channel).await.unwrap();
    let mut state = dev.state();
    state.trust_root_version = version;
    conn.send(pb::device_message::Body::Hello(pb::Hello {
        device_nonce: conn.nonce.to_vec(),
        state: Some(state),
        reports: vec![],
    }))
    .await;
    assert!(matches!(conn.next().await.unwrap(), Kind::Welcome(_)));
    let mut out = Vec::new();
    while out.len() < 3 {
        let k = conn.next().await.unwrap();
        let done = matches!(k, Kind::Offer(_) | Kind::CheckInLater(_));
        out.push(k);
        if done {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_lagging_device_gets_the_successors_it_lacks_before_its_offer() {
    let h = common::start(false).await;
    let token = h.token();
    let pk = h.server.server_public_key();
    let t0 = now();
    let roots = [
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    ];
    let v1 = root(
        1,
        t0 + 24 * HOUR,
        &roots[0],
        &h.keys.release,
        &pk,
        &[&roots[0]],
    );
    let v2 = root(
        2,
        t0 + 24 * HOUR,
        &roots[1],
        &h.keys.release,
        &pk,
        &[&roots[0], &roots[1]],
    );
    let v3 = root(
        3,
        t0 + 24 * HOUR,
        &roots[2],
        &h.keys.release,
        &pk,
        &[&roots[1], &roots[2]],
    );
    for v in [&v1, &v2, &v3] {
        set(&h.channel, &token, v).await.unwrap();
    }
    let release = h.keys.release("sensor-1.1.0", "1.1.0", 500, t0 + HOUR);
    h.upload(&release, 4096).await.unwrap();
    let dev = h.register("dev-lag").await;
    h.rollout("r1", "sensor-1.1.0", "").await;

    let got = session_after_welcome(&h, &dev, 1).await;
    match &got[..] {
        [Kind::TrustRootUpdate(u), Kind::Offer(_)] => {
            assert_eq!(u.chain, vec![v2.clone(), v3.clone()]);
        }
        other => panic!("expected the chain, then the offer; got {other:?}"),
    }
    // The device reported its root: the server shows it.
    let info = h.device_info("dev-lag").await;
    assert_eq!(info.trust_root_version, 1);
    // A device one version behind gets one successor.
    let got = session_after_welcome(&h, &dev, 2).await;
    assert!(
        matches!(&got[..], [Kind::TrustRootUpdate(u), Kind::Offer(_)] if u.chain == vec![v3.clone()]),
        "{got:?}"
    );
    // A current device gets no update; one whose version is not in the
    // chain cannot be helped (and is offered anyway: it will refuse and say why).
    for version in [3, 9] {
        let got = session_after_welcome(&h, &dev, version).await;
        assert!(matches!(&got[..], [Kind::Offer(_)]), "v{version}: {got:?}");
    }
}

#[tokio::test]
async fn the_server_switches_to_the_next_directive_key_once_a_root_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = TestStore::new();
    let clock = Arc::new(ManualClock::new(UnixTime(now())));
    let keys = Keys::new();
    let (server, channel) = start_at(&data, &store, &clock).await;
    let token = server.admin_token().to_owned();
    let old = server.server_public_key();
    let t0 = now();
    let v1 = root(
        1,
        t0 + 24 * HOUR,
        &keys.root,
        &keys.release,
        &old,
        &[&keys.root],
    );
    set(&channel, &token, &v1).await.unwrap();

    // The next key is made ahead of time, while the server runs.
    let next = SecretKey::generate();
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(data.join("server-key.next"))
            .unwrap();
        f.write_all(&next.to_bytes()).unwrap();
    }
    // A rotation that does not list it changes nothing.
    let v2 = root(
        2,
        t0 + 24 * HOUR,
        &keys.root,
        &keys.release,
        &old,
        &[&keys.root],
    );
    let info = set(&channel, &token, &v2).await.unwrap();
    assert_eq!(info.server_public_key, key_bytes(&old));
    assert_eq!(info.next_server_public_key, key_bytes(&next.public_key()));
    // Once a root lists it, the server signs with it.
    let v3 = root(
        3,
        t0 + 24 * HOUR,
        &keys.root,
        &keys.release,
        &next.public_key(),
        &[&keys.root],
    );
    let info = set(&channel, &token, &v3).await.unwrap();
    assert_eq!(info.server_public_key, key_bytes(&next.public_key()));
    assert!(info.next_server_public_key.is_empty());
    assert!(
        data.join("server-key.retired-v3").exists(),
        "the old key is kept"
    );
    assert_eq!(server.server_public_key(), next.public_key());

    // Its directives verify under v3 (and not under a root listing the old key).
    let release = keys.release("sensor-1.1.0", "1.1.0", 500, t0 + HOUR);
    let admin = pb::admin_service_client::AdminServiceClient::new(channel.clone());
    upload(&admin, &token, &release, release.payload.len() as u64, 4096)
        .await
        .unwrap();
    let dev = TestDevice::new("dev-k");
    admin
        .clone()
        .register_device(authed(dev.register_request(), &token))
        .await
        .unwrap();
    admin
        .clone()
        .create_rollout(authed(
            pb::CreateRolloutRequest {
                rollout_id: "r".into(),
                release_id: "sensor-1.1.0".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    let mut conn = dev.open(&channel).await.unwrap();
    let mut state = dev.state();
    state.trust_root_version = 3;
    conn.send(pb::device_message::Body::Hello(pb::Hello {
        device_nonce: conn.nonce.to_vec(),
        state: Some(state),
        reports: vec![],
    }))
    .await;
    assert!(matches!(conn.next().await.unwrap(), Kind::Welcome(_)));
    let Kind::Offer(offer) = conn.next().await.unwrap() else {
        panic!("expected an offer");
    };
    let directive = offer.directive.unwrap();
    let now = UnixTime(now());
    let v3_root = VerifiedTrustRoot::trust_on_first_use(&v3, now).unwrap();
    assert!(v3_root.verify_directive(&directive, now).is_ok());
    let v2_root = VerifiedTrustRoot::trust_on_first_use(&v2, now).unwrap();
    assert!(v2_root.verify_directive(&directive, now).is_err());
    server.shutdown().await.unwrap();

    // After a restart the server keeps signing with the new key.
    let (server, _channel) = start_at(&data, &store, &clock).await;
    assert_eq!(server.server_public_key(), next.public_key());
    server.shutdown().await.unwrap();
}
