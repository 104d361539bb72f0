//! The dashboard listener (`--web ADDR`): the browser's files and gRPC-web
//! calls to the admin service (see the `aloft-web` crate), on its own
//! address, through the same accept path as the gRPC port (connection caps,
//! handshake deadline, the server's TLS identity).
//!
//! It is a second listener rather than a second protocol on the gRPC port
//! so that port stays HTTP/2 gRPC only, for devices and tools, while
//! browsers get HTTP/1.1 as well (plaintext browsers never speak HTTP/2).
//! Over TLS the acceptor offers HTTP/2 only, which every current browser
//! speaks. The admin service behind it is the very one of the gRPC port:
//! same role checks, same rate limits.

use std::net::SocketAddr;
use std::sync::Arc;

use aloft_protocol::pb::admin_service_server::AdminServiceServer;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::{ServerError, Shared, admin_service, listen};

/// The running dashboard listener.
pub(crate) struct WebServer {
    /// Where it listens.
    pub(crate) local_addr: SocketAddr,
    /// Serves until the shutdown signal.
    pub(crate) task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `addr` and serves the dashboard until `shutdown`.
pub(crate) async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) -> Result<WebServer, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener.local_addr()?;
    let limits = shared.limits.clone();
    let admin = AdminServiceServer::new(admin_service::AdminSvc::new(shared))
        .max_decoding_message_size(limits.max_admin_message);
    let routes = tonic::service::Routes::from(aloft_web::router(admin));
    let incoming = listen::accept(
        listener,
        tls.clone(),
        limits.connections,
        shutdown.clone(),
        Arc::new(listen::AcceptStats::default()),
    );
    let mut signal = shutdown;
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .max_concurrent_streams(Some(limits.max_streams_per_connection.max(1)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                async move { crate::stopped(&mut signal).await },
            ),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{scheme}://{local_addr}/"), "serving the dashboard");
    Ok(WebServer { local_addr, task })
}
