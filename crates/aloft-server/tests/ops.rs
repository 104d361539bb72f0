//! Operating the server, in process: the admin role on every operations
//! RPC, webhook input checks, signed in-order deliveries with retries, the
//! metrics and health endpoints, and the audit log.

mod common;
mod receiver;

use std::time::Duration;

use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use common::*;
use receiver::Receiver;
use tonic::Code;

fn ops(config: &mut aloft_server::ServerConfig) {
    config.ops.metrics = Some("127.0.0.1:0".parse().unwrap());
    config.ops.audit_head_interval = Duration::from_millis(50);
    config.ops.webhooks.retry_base = Duration::from_millis(20);
    config.ops.webhooks.retry_max = Duration::from_millis(100);
}

/// One plain HTTP/1.1 request on a real socket: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn token(h: &Harness, role: pb::Role) -> String {
    h.admin()
        .create_token(authed(
            pb::CreateTokenRequest {
                name: format!("{role:?}"),
                role: role as i32,
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

async fn audit(h: &Harness) -> (Vec<(u64, Vec<u8>)>, Vec<pb::SignedEnvelope>) {
    let r = h
        .admin()
        .list_audit(authed(pb::ListAuditRequest::default(), &h.token()))
        .await
        .unwrap()
        .into_inner();
    (
        r.entries.into_iter().map(|e| (e.seq, e.record)).collect(),
        r.heads,
    )
}

fn records(entries: &[(u64, Vec<u8>)]) -> Vec<pb::AuditRecord> {
    entries
        .iter()
        .map(|(_, b)| pb::AuditRecord::decode(b.as_slice()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_rpcs_need_the_admin_role_and_refusals_are_audited() {
    let h = start_with(false, ops).await;
    let viewer = token(&h, pb::Role::Viewer).await;
    let operator = token(&h, pb::Role::Operator).await;
    for (who, token) in [
        ("viewer", viewer.as_str()),
        ("operator", operator.as_str()),
        ("none", ""),
    ] {
        let want = if token.is_empty() {
            Code::Unauthenticated
        } else {
            Code::PermissionDenied
        };
        let mut a = h.admin();
        let codes = [
            a.add_webhook(authed(pb::AddWebhookRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            a.list_webhooks(authed(pb::ListWebhooksRequest {}, token))
                .await
                .unwrap_err()
                .code(),
            a.remove_webhook(authed(pb::RemoveWebhookRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            a.test_webhook(authed(pb::TestWebhookRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            a.list_audit(authed(pb::ListAuditRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            a.backup(authed(pb::BackupRequest {}, token))
                .await
                .unwrap_err()
                .code(),
        ];
        assert_eq!(codes, [want; 6], "{who}");
    }
    // Every refusal is in the log, with the caller when the token is known.
    let (entries, _) = audit(&h).await;
    let refused: Vec<_> = records(&entries)
        .into_iter()
        .filter(|r| r.code != 0)
        .collect();
    assert_eq!(refused.len(), 18, "{refused:#?}");
    assert!(
        refused
            .iter()
            .any(|r| r.method == "Backup" && r.role == "viewer" && r.code == 7)
    );
    assert!(
        refused
            .iter()
            .any(|r| r.method == "ListAudit" && r.token_id.is_empty() && r.code == 16)
    );
    assert!(refused.iter().all(|r| r.peer.starts_with("127.0.0.1:")));
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_are_checked_and_nothing_bad_is_stored() {
    let h = start_with(false, ops).await;
    let add = |url: &str, events: Vec<&str>, secret: Vec<u8>| {
        let mut a = h.admin();
        let req = pb::AddWebhookRequest {
            url: url.into(),
            events: events.into_iter().map(Into::into).collect(),
            secret,
        };
        let t = h.token();
        async move { a.add_webhook(authed(req, &t)).await }
    };
    let ok_secret = vec![7u8; 32];
    for (url, events, secret, says) in [
        (
            "http://hooks.example.com/in",
            vec![],
            ok_secret.clone(),
            "loopback",
        ),
        (
            "https://u:p@hooks.example.com/in",
            vec![],
            ok_secret.clone(),
            "password",
        ),
        (
            "ftp://hooks.example.com/in",
            vec![],
            ok_secret.clone(),
            "scheme",
        ),
        (
            "https://hooks.example.com/in#frag",
            vec![],
            ok_secret.clone(),
            "fragment",
        ),
        (
            "https://hooks.example.com/in",
            vec!["confirmd"],
            ok_secret.clone(),
            "unknown event kind",
        ),
        (
            "https://hooks.example.com/in",
            vec![],
            vec![1; 15],
            "15 bytes",
        ),
        (
            "https://hooks.example.com/in",
            vec![],
            vec![1; 1025],
            "1025 bytes",
        ),
        (
            "https://hooks.example.com/in",
            vec!["confirmed"; 33],
            ok_secret.clone(),
            "at most 32",
        ),
    ] {
        let e = add(url, events, secret).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{url}: {e:?}");
        assert!(e.message().contains(says), "{url}: {}", e.message());
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2100));
    assert!(
        add(&long, vec![], ok_secret.clone())
            .await
            .unwrap_err()
            .message()
            .contains("2048")
    );
    let list = h
        .admin()
        .list_webhooks(authed(pb::ListWebhooksRequest {}, &h.token()))
        .await
        .unwrap();
    assert!(
        list.into_inner().webhooks.is_empty(),
        "a refused webhook was stored"
    );

    let mut a = h.admin();
    let e = a
        .remove_webhook(authed(
            pb::RemoveWebhookRequest {
                webhook_id: "wh-000000000000".into(),
            },
            &h.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = a
        .test_webhook(authed(
            pb::TestWebhookRequest {
                webhook_id: "wh-000000000000".into(),
            },
            &h.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = a
        .remove_webhook(authed(
            pb::RemoveWebhookRequest {
                webhook_id: "../etc".into(),
            },
            &h.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // 32 webhooks at most.
    for i in 0..32 {
        add(
            &format!("https://hooks.example.com/{i}"),
            vec![],
            ok_secret.clone(),
        )
        .await
        .unwrap();
    }
    let e = add("https://hooks.example.com/33", vec![], ok_secret.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_in_order_and_tested() {
    let h = start_with(false, ops).await;
    let rx = Receiver::start(3).await;
    let secret = b"a-webhook-secret-of-32-bytes!!!!".to_vec();
    let hook = h
        .admin()
        .add_webhook(authed(
            pb::AddWebhookRequest {
                url: rx.url(),
                events: vec!["registered".into()],
                secret: secret.clone(),
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        h.register(&format!("hooked-{i}")).await;
    }
    // A token event is recorded but not wanted by this webhook.
    token(&h, pb::Role::Viewer).await;
    rx.wait(10, "five deliveries", |l| {
        l.iter().filter(|d| d.status == 200).count() == 5
    })
    .await;

    let all = rx.all();
    assert_eq!(all.len(), 8, "3 refused attempts, then 5 deliveries");
    // The first event was retried with the same key until it went through.
    assert!(all[..4].iter().all(|d| d.key == all[0].key), "{all:#?}");
    let delivered = rx.delivered();
    let devices: Vec<_> = delivered
        .iter()
        .map(|d| d.json()["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        devices,
        (0..5).map(|i| format!("hooked-{i}")).collect::<Vec<_>>(),
        "in order"
    );
    let mut keys: Vec<_> = delivered.iter().map(|d| d.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 5, "one key per event");
    for d in &all {
        assert_eq!(d.kind, "registered");
        receiver::verify(&secret, d, receiver::now()).unwrap();
        assert_eq!(
            receiver::verify(b"another-secret-of-some-length!!", d, receiver::now()),
            Err("bad signature")
        );
        assert_eq!(
            receiver::verify(&secret, d, receiver::now() + 301),
            Err("stale: older than 5 minutes (a replay?)")
        );
        let mut altered = d.clone();
        altered.body[3] ^= 1;
        assert!(receiver::verify(&secret, &altered, receiver::now()).is_err());
    }

    let key = h
        .admin()
        .test_webhook(authed(
            pb::TestWebhookRequest {
                webhook_id: hook.webhook_id.clone(),
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .idempotency_key;
    rx.wait(10, "the test event", |l| {
        l.iter().any(|d| d.key == key && d.status == 200)
    })
    .await;
    let status = h
        .admin()
        .list_webhooks(authed(pb::ListWebhooksRequest {}, &h.token()))
        .await
        .unwrap()
        .into_inner()
        .webhooks[0]
        .status
        .clone()
        .unwrap();
    assert_eq!(
        (status.delivered, status.failed_attempts, status.pending),
        (6, 3, 0),
        "{status:?}"
    );
    assert!(status.last_error.contains("HTTP 503"), "{status:?}");

    // The metrics count the attempts.
    let (_, text) = http(h.server.metrics_addr().unwrap(), "GET", "/metrics").await;
    assert!(
        text.contains("aloft_webhook_deliveries_total{result=\"delivered\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("aloft_webhook_deliveries_total{result=\"failed\"} 3"),
        "{text}"
    );

    // Removed: nothing more is sent.
    h.admin()
        .remove_webhook(authed(
            pb::RemoveWebhookRequest {
                webhook_id: hook.webhook_id,
            },
            &h.token(),
        ))
        .await
        .unwrap();
    h.register("after-removal").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.all().len(), 9);
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_tell_the_truth() {
    let h = start_with(false, ops).await;
    let addr = h.server.metrics_addr().unwrap();
    assert_eq!(http(addr, "GET", "/healthz").await, (200, "ok\n".into()));
    let (status, body) = http(addr, "GET", "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("no TrustRoot"), "{body}");
    h.install_trust_root().await;
    assert_eq!(http(addr, "GET", "/readyz").await, (200, "ready\n".into()));
    assert_eq!(http(addr, "GET", "/nope").await.0, 404);
    assert_eq!(http(addr, "POST", "/metrics").await.0, 405);

    let device = h.register("metered").await;
    let (conn, _) = device.connect(&h.channel, vec![]).await.unwrap();
    // A device nobody registered is refused, and counted by reason.
    let stranger = TestDevice::new("stranger");
    let _ = stranger.connect(&h.channel, vec![]).await;
    let (status, text) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "aloft_device_check_ins_total 1",
        "aloft_devices_connected 1",
        "aloft_trust_root_version 1",
        "aloft_device_sessions_refused_total{reason=\"unknown_device\"} 1",
        "aloft_events_total{kind=\"registered\"} 1",
        "aloft_rollouts{state=\"active\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("aloft_store_flush_seconds_count"), "{text}");
    assert!(
        text.contains("aloft_process_resident_memory_bytes"),
        "{text}"
    );
    // Nothing secret: no token, no device id.
    assert!(
        !text.contains(&h.token()) && !text.contains("metered"),
        "{text}"
    );
    drop(conn);
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_did_what_and_verifies() {
    let h = start_with(false, ops).await;
    h.install_trust_root().await;
    h.register("audited-1").await;
    let viewer = token(&h, pb::Role::Viewer).await;
    let refused = h
        .admin()
        .revoke_device(authed(
            pb::RevokeDeviceRequest {
                device_id: "audited-1".into(),
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Reads are not recorded when they succeed.
    h.device_info("audited-1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (entries, heads) = audit(&h).await;
    let recs = records(&entries);
    let summary: Vec<_> = recs
        .iter()
        .map(|r| (r.method.as_str(), r.code, r.role.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("SetTrustRoot", 0, "admin"),
            ("RegisterDevice", 0, "admin"),
            ("CreateToken", 0, "admin"),
            ("RevokeDevice", 7, "viewer"),
        ]
    );
    assert_eq!(recs[1].subjects.len(), 1, "{:?}", recs[1].subjects);
    assert!(
        recs[1].subjects[0]
            .starts_with("registered device=audited-1: key made off the device; by tok-"),
        "{:?}",
        recs[1].subjects
    );
    assert!(
        recs[2].subjects[0].starts_with("token_created"),
        "{:?}",
        recs[2].subjects
    );
    assert!(
        recs[3].message.contains("needs the operator role"),
        "{}",
        recs[3].message
    );
    assert_eq!(recs[0].token_name, "bootstrap-admin");

    assert!(!heads.is_empty(), "the head signer ran");
    let key = h.server.server_public_key();
    let report = aloft_protocol::audit::verify(&entries, &heads, &[key]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.signed_through, 4);
    // Under another key, every head is refused.
    let other = aloft_protocol::SecretKey::generate().public_key();
    let report = aloft_protocol::audit::verify(&entries, &heads, &[other]);
    assert!(matches!(
        report.findings[0],
        aloft_protocol::audit::Finding::BadHead { .. }
    ));
    h.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_calls_is_recorded_within_a_budget() {
    let h = start_with(false, ops).await;
    let mut a = h.admin();
    for _ in 0..400 {
        let _ = a
            .list_devices(authed(
                pb::ListDevicesRequest::default(),
                "aloft_not-a-token",
            ))
            .await;
    }
    h.register("after-the-flood").await;
    let (entries, _) = audit(&h).await;
    let recs = records(&entries);
    let refused = recs.iter().filter(|r| r.code != 0).count();
    assert!((200..300).contains(&refused), "{refused} refusals recorded");
    let last = recs.last().unwrap();
    assert_eq!(last.method, "RegisterDevice");
    assert!(
        last.subjects
            .iter()
            .any(|s| s.contains("refused calls before this one were not recorded")),
        "{:?}",
        last.subjects
    );
    let (_, text) = http(h.server.metrics_addr().unwrap(), "GET", "/metrics").await;
    assert!(
        text.contains("aloft_admin_refused_total{code=\"unauthenticated\"} 400"),
        "{text}"
    );
    h.server.shutdown().await.unwrap();
}
