//! PostgreSQL itself killed (-9) under a running server, then started
//! again: the server answers UNAVAILABLE (retry later) rather than
//! acknowledging a write it could not make durable, `/readyz` says the
//! store does not answer, and once the database is back the server serves
//! again by itself, with everything acknowledged before the crash.

mod common;

use std::time::{Duration, Instant};

use aloft_protocol::pb;
use common::pg::PrivateCluster;
use common::*;

async fn ready(addr: std::net::SocketAddr) -> (u16, String) {
    // reqwest is built without a default TLS provider (plain HTTP here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_postgres_is_reported_as_unavailable_and_recovered_from_without_a_restart() {
    let mut cluster = PrivateCluster::start();
    aloft_server::pg_store::PgStore::migrate(&cluster.url()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        aloft_server::ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.store = aloft_server::StoreBackend::Postgres(cluster.url());
    config.ops.metrics = Some("127.0.0.1:0".parse().unwrap());
    let server = aloft_server::start(config).await.unwrap();
    let token = server.admin_token().to_owned();
    let metrics = server.metrics_addr().unwrap();
    let admin =
        pb::admin_service_client::AdminServiceClient::new(connect(server.local_addr(), None).await);
    let register = |id: &'static str| {
        let mut admin = admin.clone();
        let token = token.clone();
        async move {
            admin
                .register_device(authed(TestDevice::new(id).register_request(), &token))
                .await
        }
    };
    register("before").await.unwrap();

    cluster.kill9();
    let refused = register("during").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("storage unavailable")
            && refused.message().contains("retry later"),
        "{refused:?}"
    );
    let (status, body) = ready(metrics).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the store does not answer"), "{body}");

    cluster.run();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match register("after").await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "not back within 30 s: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Ready but for the TrustRoot this test never installs.
    let (_, body) = ready(metrics).await;
    assert!(body.contains("no TrustRoot installed"), "{body}");
    let listed: Vec<String> = admin
        .clone()
        .list_devices(authed(pb::ListDevicesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .devices
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(
        listed,
        ["after", "before"],
        "the refused write is not there"
    );
    server.shutdown().await.unwrap();
}
