//! Hostile clients (threat 25) and revocation that bites at once: silent
//! connections closed after the handshake deadline, caps on connections
//! (total and per source address), on HTTP/2 streams per connection, on
//! sessions waiting for their hello, on admin requests per token; a shutdown
//! that ends in bounded time whatever the clients do; a revoked token's
//! streams closed; cancelled rollouts, excluded devices and expired
//! directives no longer authorising downloads. Each test shows a good client
//! still served while the limit is hit.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_protocol::UnixTime;
use aloft_protocol::pb::{self, server_to_device::Kind};
use aloft_server::ServerConfig;
use aloft_server::clock::ManualClock;
use common::{Harness, TestDevice, authed, connect, now, start_with};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tonic::Code;

/// Reads from `conn` until it is closed by the server; returns how long that
/// took (panics after `limit`).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, conn.read(&mut buf)).await {
            Err(_) => panic!("the server kept a silent connection open for {limit:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            // The server may say something (a TLS alert, an HTTP/2 GOAWAY).
            Ok(Ok(_)) => {}
        }
    }
}

async fn alive(h: &Harness) {
    h.admin()
        .get_server_info(authed(pb::GetServerInfoRequest {}, &h.token()))
        .await
        .expect("a good client is served");
}

async fn silent_connections_are_closed(tls: bool) {
    let h = start_with(tls, |c| {
        c.limits.connections.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = h.server.local_addr();
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    alive(&h).await;
    for conn in &mut silent {
        let took = closed_within(conn, Duration::from_secs(3)).await;
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    }
    assert_eq!(
        h.server
            .accept_stats()
            .handshake_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        if tls { 5 } else { 0 },
        "a TLS client that never says hello fails its handshake"
    );
    alive(&h).await;
}

#[tokio::test]
async fn silent_plaintext_connections_are_closed_after_the_handshake_deadline() {
    silent_connections_are_closed(false).await;
}

#[tokio::test]
async fn silent_tls_connections_are_closed_after_the_handshake_deadline() {
    silent_connections_are_closed(true).await;
}

/// A client that completes TLS but never sends the HTTP/2 preface is closed
/// too (the deadline covers the first bytes of HTTP/2, not only TLS).
#[tokio::test]
async fn a_tls_client_that_never_sends_http2_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::make_tls(dir.path());
    let files = tls.files.clone();
    let h = start_with(false, move |c| {
        c.tls = Some(files);
        c.limits.connections.handshake_timeout = Duration::from_millis(400);
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(h.server.local_addr()).await.unwrap();
    let mut tls_stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the TLS handshake completes");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), tls_stream.read(&mut buf)).await {
            Err(_) => panic!("a TLS client that sends no HTTP/2 preface was kept open"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_and_others_served() {
    let h = start_with(false, |c| {
        c.limits.connections.max_per_address = 3;
        c.limits.connections.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = h.server.local_addr();
    // The harness's own admin channel holds one connection from 127.0.0.1.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut over, Duration::from_secs(3)).await;
    assert!(
        took < Duration::from_millis(500),
        "refused at once, took {took:?}"
    );
    // Another source address is served.
    let channel = common::connect_from(addr, "127.0.0.3".parse().unwrap()).await;
    pb::admin_service_client::AdminServiceClient::new(channel)
        .get_server_info(authed(pb::GetServerInfoRequest {}, &h.token()))
        .await
        .unwrap();
    // The existing connection keeps working while the cap is hit.
    alive(&h).await;
    assert_eq!(
        h.server
            .accept_stats()
            .over_address
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Once a held connection goes, a new one fits again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ch = connect(addr, None).await;
    pb::admin_service_client::AdminServiceClient::new(ch)
        .get_server_info(authed(pb::GetServerInfoRequest {}, &h.token()))
        .await
        .unwrap();
}

#[tokio::test]
async fn connections_over_the_total_cap_are_closed() {
    let h = start_with(false, |c| {
        c.limits.connections.max_connections = 2;
        c.limits.connections.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = h.server.local_addr();
    let _held = TcpStream::connect(addr).await.unwrap();
    let mut over = TcpStream::connect(addr).await.unwrap();
    closed_within(&mut over, Duration::from_secs(3)).await;
    alive(&h).await;
    assert_eq!(
        h.server
            .accept_stats()
            .over_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn streams_per_connection_are_capped() {
    let h = start_with(false, |c| c.limits.max_streams_per_connection = 2).await;
    let watch = || {
        let admin = h.admin();
        let token = h.token();
        async move {
            admin
                .clone()
                .watch_events(authed(pb::WatchEventsRequest::default(), &token))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = watch().await.unwrap();
    let _second = watch().await.unwrap();
    // A third stream on the same connection waits for a free one.
    let third = tokio::spawn(watch());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !third.is_finished(),
        "a third concurrent stream was accepted"
    );
    // Another connection is served meanwhile.
    let ch = connect(h.server.local_addr(), None).await;
    pb::admin_service_client::AdminServiceClient::new(ch)
        .get_server_info(authed(pb::GetServerInfoRequest {}, &h.token()))
        .await
        .unwrap();
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third stream starts once one closes")
        .unwrap();
    assert!(third.is_ok());
}

#[tokio::test]
async fn sessions_waiting_for_their_hello_are_bounded() {
    let h = start_with(false, |c| {
        c.limits.max_pending_hellos = 2;
        c.limits.hello_timeout = Duration::from_millis(500);
    })
    .await;
    h.install_trust_root().await;
    let dev = h.register("dev-good").await;
    let silent_a = TestDevice::new("dev-silent-a");
    let silent_b = TestDevice::new("dev-silent-b");
    let _a = silent_a.open(&h.channel).await.unwrap();
    let _b = silent_b.open(&h.channel).await.unwrap();
    // A third session is told to come back, with a suggested delay.
    let err = match dev.open(&h.channel).await {
        Ok(mut conn) => conn.next().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry in"), "{}", err.message());
    let retry: u64 = err
        .metadata()
        .get(aloft_server::RETRY_AFTER_MS)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1000, "{retry}");
    // Once the silent ones time out, the device is served.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_conn, welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    assert!(!welcome.session_token.is_empty());
}

#[tokio::test]
async fn admin_requests_are_rate_limited_per_token() {
    let h = start_with(false, |c| {
        c.limits.admin_rate = aloft_server::auth::RateLimit {
            per_second: 5,
            burst: 5,
        };
    })
    .await;
    let other = h
        .admin()
        .create_token(authed(
            pb::CreateTokenRequest {
                name: "other".into(),
                role: pb::Role::Viewer as i32,
            },
            &h.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let call = |token: String| {
        let admin = h.admin();
        async move {
            admin
                .clone()
                .get_server_info(authed(pb::GetServerInfoRequest {}, &token))
                .await
        }
    };
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = call(h.token()).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("the token's burst is five calls");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("retry in"), "{}", err.message());
    let wait: u64 = err
        .metadata()
        .get(aloft_server::RETRY_AFTER_MS)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Another token is not affected.
    call(other).await.unwrap();
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    call(h.token()).await.unwrap();
}

#[tokio::test]
async fn revoking_a_token_ends_the_streams_it_opened() {
    let h = common::start(false).await;
    let make = |name: &str| {
        let admin = h.admin();
        let token = h.token();
        let name = name.to_owned();
        async move {
            admin
                .clone()
                .create_token(authed(
                    pb::CreateTokenRequest {
                        name,
                        role: pb::Role::Viewer as i32,
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let doomed = make("doomed").await;
    let kept = make("kept").await;
    let open = |token: String| {
        let admin = h.admin();
        async move {
            admin
                .clone()
                .watch_events(authed(pb::WatchEventsRequest::default(), &token))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut doomed_stream = open(doomed.token.clone()).await;
    let mut kept_stream = open(kept.token.clone()).await;
    h.admin()
        .revoke_token(authed(
            pb::RevokeTokenRequest {
                token_id: doomed.info.unwrap().token_id,
            },
            &h.token(),
        ))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match doomed_stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the revoked token's stream ends at once");
    let err = ended.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    // The other stream keeps going: it sees the next event.
    h.register("dev-after").await;
    let next = tokio::time::timeout(Duration::from_secs(2), kept_stream.message())
        .await
        .expect("the other stream is alive")
        .unwrap()
        .unwrap();
    assert!(!next.kind.is_empty());
}

/// Offers `dev` the release of rollout `r` and returns its session token.
async fn offered(h: &Harness, dev: &TestDevice) -> (common::Conn, Vec<u8>) {
    let (mut conn, welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    loop {
        match conn.next().await.unwrap() {
            Kind::Offer(_) => return (conn, welcome.session_token),
            Kind::TrustRootUpdate(_) => {}
            other => panic!("expected an offer, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn cancelling_a_rollout_or_excluding_a_device_withdraws_the_download() {
    let h = common::start(false).await;
    h.install_trust_root().await;
    let release = h.keys.release("sensor-1.1.0", "1.1.0", 700, now() + 3600);
    h.upload(&release, 4096).await.unwrap();
    let d1 = h.register("dev-c1").await;
    let d2 = h.register("dev-c2").await;
    h.rollout("r", "sensor-1.1.0", "").await;
    let (_c1, t1) = offered(&h, &d1).await;
    let (_c2, t2) = offered(&h, &d2).await;
    assert!(
        common::download(&h.channel, Some(&t1), "sensor-1.1.0", 0)
            .await
            .is_ok()
    );
    // Exclude d1: its download is refused, d2's is not.
    h.admin()
        .control_rollout_device(authed(
            pb::ControlRolloutDeviceRequest {
                rollout_id: "r".into(),
                device_id: "dev-c1".into(),
                action: pb::DeviceAction::Exclude as i32,
            },
            &h.token(),
        ))
        .await
        .unwrap();
    let err = common::download(&h.channel, Some(&t1), "sensor-1.1.0", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("excluded"), "{}", err.message());
    assert!(
        common::download(&h.channel, Some(&t2), "sensor-1.1.0", 0)
            .await
            .is_ok()
    );
    // Cancel the rollout: nobody downloads it any more.
    h.admin()
        .control_rollout(authed(
            pb::ControlRolloutRequest {
                rollout_id: "r".into(),
                action: pb::RolloutAction::Cancel as i32,
                reason: "test".into(),
            },
            &h.token(),
        ))
        .await
        .unwrap();
    let err = common::download(&h.channel, Some(&t2), "sensor-1.1.0", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("cancelled"), "{}", err.message());
}

#[tokio::test]
async fn an_expired_directive_no_longer_authorises_its_download() {
    let clock = Arc::new(ManualClock::new(UnixTime(now())));
    let c = clock.clone();
    let h = start_with(false, move |config: &mut ServerConfig| {
        config.clock = c;
        config.limits.directive_ttl = Duration::from_secs(600);
    })
    .await;
    h.install_trust_root().await;
    let release = h.keys.release("sensor-1.1.0", "1.1.0", 700, now() + 7200);
    h.upload(&release, 4096).await.unwrap();
    let d = h.register("dev-e").await;
    h.rollout("r", "sensor-1.1.0", "").await;
    let (_c, token) = offered(&h, &d).await;
    assert!(
        common::download(&h.channel, Some(&token), "sensor-1.1.0", 0)
            .await
            .is_ok()
    );
    clock.advance(601);
    let err = common::download(&h.channel, Some(&token), "sensor-1.1.0", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("expired"), "{}", err.message());
}

/// Whatever the clients do (silent connections, an idle HTTP/2 client, an
/// open event stream, a device session), a shutdown ends in bounded time.
#[tokio::test]
async fn shutdown_ends_in_bounded_time_whatever_the_clients_do() {
    let h = start_with(false, |c| {
        c.limits.shutdown_grace = Duration::from_secs(2);
        c.limits.connections.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    h.install_trust_root().await;
    let addr = h.server.local_addr();
    let _silent: Vec<TcpStream> = futures_silent(addr, 3).await;
    let _idle = connect(addr, None).await;
    let _events = h
        .admin()
        .watch_events(authed(pb::WatchEventsRequest::default(), &h.token()))
        .await
        .unwrap()
        .into_inner();
    let dev = h.register("dev-s").await;
    let _session = dev.connect(&h.channel, vec![]).await.unwrap();
    let started = Instant::now();
    let Harness { server, .. } = h;
    tokio::time::timeout(Duration::from_secs(6), server.shutdown())
        .await
        .expect("shutdown within its grace period")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn futures_silent(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

/// Calls `path` on the server with an empty request body.
async fn call_path(h: &Harness, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(h.channel.clone());
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<pb::GetServerInfoRequest, pb::GetServerInfoRequest>::default();
    grpc.unary(
        authed(pb::GetServerInfoRequest {}, &h.token()),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .expect_err("the server offers no such method")
}

#[tokio::test]
async fn an_unknown_method_or_service_is_named_in_the_refusal() {
    let h = start_with(false, |_| {}).await;
    for path in [
        "/aloft.v1.AdminService/NoSuchMethod",
        "/aloft.v9.Nothing/Get",
    ] {
        let status = call_path(&h, path).await;
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(
            status.message().contains(&format!("unknown method {path}")),
            "{path}: the message names the path: {:?}",
            status.message()
        );
        assert!(
            status.message().contains("aloft.v1.AdminService"),
            "{path}: the message says what is offered: {:?}",
            status.message()
        );
    }
    alive(&h).await;
}
