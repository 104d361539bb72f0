//! Accepting connections before gRPC sees them: caps on connections in
//! total and per source address, a handshake deadline, TLS.
//!
//! tonic's own accept path does the TLS handshake with no deadline and
//! waits for the HTTP/2 preface forever, so a client that opens TCP
//! connections and sends nothing holds file descriptors until the server
//! runs out, and keeps a graceful shutdown waiting (threat 25). Here every
//! accepted connection must complete its TLS handshake *and* send its
//! first bytes of HTTP/2 within [`ConnLimits::handshake_timeout`] of being
//! accepted, or it is closed. A connection over a cap is closed at once, so
//! the server keeps serving the connections it has.

use crate::sync::Recover as _;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ServerError;

/// Limits on accepted connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// From accept to the first byte of HTTP/2 (TLS handshake included).
    pub handshake_timeout: Duration,
    /// Open connections at most (0 = no cap).
    pub max_connections: usize,
    /// Open connections from one source address at most (0 = no cap).
    pub max_per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_per_address: 4096,
        }
    }
}

/// How many connections each source address holds.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under the per-address cap; released on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().recover();
        let n = open.entry(ip).or_default();
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().recover();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The byte stream of an accepted connection.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, as tonic serves it: it holds its places under
/// the caps until it is dropped, and fails its first read if no byte
/// arrives before the handshake deadline.
pub(crate) struct Conn {
    io: Io,
    /// Until the first byte arrives.
    deadline: Option<Pin<Box<Sleep>>>,
    peer: SocketAddr,
    _total: Option<OwnedSemaphorePermit>,
    _address: AddressSlot,
}

/// What the service learns about a connection (`Request::extensions`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerAddr;

    fn connect_info(&self) -> PeerAddr {
        PeerAddr(self.peer)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the handshake timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS acceptor for a PEM certificate chain and key: TLS 1.2 and 1.3
/// with ring, ALPN `h2`.
pub(crate) fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::tls("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls {
            what: "certificate: the file holds no PEM certificate".into(),
            source: None,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ServerError::tls("private key PEM", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerError::tls("TLS versions", e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServerError::tls("certificate and key", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Counts of connections refused at accept, for logs and tests.
#[derive(Debug, Default)]
pub struct AcceptStats {
    /// Closed at once: over the total cap.
    pub over_total: std::sync::atomic::AtomicU64,
    /// Closed at once: over the per-address cap.
    pub over_address: std::sync::atomic::AtomicU64,
    /// TLS handshake failed or did not finish in time.
    pub handshake_failed: std::sync::atomic::AtomicU64,
}

/// Accepts on `listener` until `shutdown`, applying `limits`, and yields
/// connections ready for HTTP/2 (TLS done when `tls` is given). Accept
/// errors (e.g. out of file descriptors) pause accepting briefly; they never
/// end the stream.
pub(crate) fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<AcceptStats>,
) -> mpsc::Receiver<io::Result<Conn>> {
    use std::sync::atomic::Ordering::Relaxed;
    let (tx, rx) = mpsc::channel(256);
    let total =
        (limits.max_connections != 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let per_address = Arc::new(PerAddress::default());
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing accepts for 50 ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let total_permit = match &total {
                Some(s) => match s.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        stats.over_total.fetch_add(1, Relaxed);
                        tracing::debug!(%peer, "connection refused: at the connection cap");
                        continue;
                    }
                },
                None => None,
            };
            let Some(address) = per_address.take(peer.ip(), limits.max_per_address) else {
                stats.over_address.fetch_add(1, Relaxed);
                tracing::debug!(%peer, "connection refused: at the per-address cap");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(
                &socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)),
            );
            let deadline = Instant::now() + limits.handshake_timeout;
            let tls = tls.clone();
            let tx = tx.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let io = match tls {
                    None => Io::Plain(tcp),
                    Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
                        Ok(Ok(s)) => Io::Tls(Box::new(s)),
                        Ok(Err(e)) => {
                            stats.handshake_failed.fetch_add(1, Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            stats.handshake_failed.fetch_add(1, Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                let conn = Conn {
                    io,
                    deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
                    peer,
                    _total: total_permit,
                    _address: address,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    rx
}

/// A tower layer over the gRPC router: a call to a method or service this
/// server does not offer gets `UNIMPLEMENTED` with a message naming the
/// path and what is offered, instead of tonic's empty message.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnknownMethodLayer;

impl<S> tower::Layer<S> for UnknownMethodLayer {
    type Service = UnknownMethod<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnknownMethod { inner }
    }
}

/// See [`UnknownMethodLayer`].
#[derive(Clone, Debug)]
pub(crate) struct UnknownMethod<S> {
    inner: S,
}

impl<S, B, R> tower::Service<tonic::codegen::http::Request<B>> for UnknownMethod<S>
where
    S: tower::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<R>,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let headers = res.headers_mut();
            let unimplemented = headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"12");
            if unimplemented && headers.get("grpc-message").is_none() {
                let text = format!(
                    "unknown method {}: this server offers aloft.v1.DeviceService (Session, Download) and aloft.v1.AdminService (see proto/aloft/v1/admin.proto)",
                    path.chars()
                        .filter(|c| c.is_ascii_graphic() && *c != '%')
                        .take(200)
                        .collect::<String>()
                );
                if let Ok(v) = tonic::codegen::http::HeaderValue::from_str(&text) {
                    headers.insert("grpc-message", v);
                }
            }
            Ok(res)
        })
    }
}
