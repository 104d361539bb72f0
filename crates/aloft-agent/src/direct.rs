//! Payload downloads straight from storage: the directive's `payload_url`
//! (a presigned object-store URL or a CDN), fetched over HTTP/1.1 with Range
//! requests, one or more whole chunks per request, from the installer's
//! durable resume chunk on.
//!
//! **The source is untrusted.** Every chunk goes through the same
//! installer as one from the gRPC `Download`: authenticated (AES-GCM under
//! the content key, bound to its index and the signed manifest's image
//! digest, or the signature-only Merkle proof) before any byte of it is
//! written, and the image is re-hashed at the end. What this module adds is
//! refusing an answer that is not the bytes asked for before they reach the
//! installer: a status other than 206 (a `200` full body included), a
//! `Content-Range` other than the range asked for (or another total
//! length), a declared `Content-Length` other than the range's, more bytes
//! than asked for, fewer. Any failure, and any chunk the installer refuses,
//! ends the direct download; the agent then resumes from the next chunk
//! over the gRPC `Download` ([`Event::DirectDownloadFailed`](crate::Event::DirectDownloadFailed) says why). A
//! lying CDN can therefore slow an update down, never change what is
//! installed.
//!
//! **TLS.** `https://` only, unless the agent's own server URL is
//! `http://` (local tests). The certificate is checked against
//! [`PayloadTls`]: by default the identity bundle's pinned CA, as for the
//! server (a mirror the operator runs under the fleet's CA); or the
//! platform's roots for a public CDN. Redirects are not followed (a
//! redirect is a failure, and the download falls back).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aloft_device::Installer;
use aloft_protocol::ReleaseId;
use embedded_storage::nor_flash::NorFlash;
use http_body_util::BodyExt as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::Event;

/// Default bytes asked for per Range request (whole chunks, at least one;
/// `AgentConfig::payload_request_bytes`).
pub const REQUEST_BYTES: u64 = 1 << 20;

/// Which certificates a payload URL's server may present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadTls {
    /// Chains to the identity bundle's CA, as the server's certificate must.
    #[default]
    IdentityCa,
    /// Chains to the platform's root certificates (a public CDN).
    PlatformRoots,
}

/// What kind of failure ended a direct download (see [`DirectError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectFailure {
    /// The URL is unusable (see [`DirectError::Url`]).
    Url,
    /// TCP connect failed.
    Connect,
    /// TLS setup or handshake failed.
    Tls,
    /// HTTP failed.
    Http,
    /// Not 206 Partial Content.
    Status,
    /// Content-Range is not the range asked for.
    Range,
    /// Content-Length is not the range's length.
    Length,
    /// More bytes than asked for.
    TooLong,
    /// Fewer bytes than asked for.
    Truncated,
    /// No answer in time.
    Timeout,
    /// The installer refused a chunk.
    Chunk,
}

/// Why a direct download stopped. Each says what the source did wrong; the
/// agent then falls back to the gRPC download.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// The URL is not usable by this device.
    #[error("payload URL {url:?} is unusable: {reason}")]
    Url {
        /// The URL (as the directive named it).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TCP connection failed.
    #[error("connecting to {authority}: {source}")]
    Connect {
        /// host:port.
        authority: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS configuration or handshake failed (a certificate that does
    /// not chain to [`PayloadTls`]'s roots, or names another host).
    #[error("TLS with {host}: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP exchange failed.
    #[error("HTTP with {host}: {source}")]
    Http {
        /// The host.
        host: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The answer to a Range request was not 206 Partial Content (a 200
    /// with the whole object included).
    #[error("asked for bytes {range} and got HTTP {status} instead of 206 Partial Content")]
    NotPartial {
        /// The status received.
        status: u16,
        /// The range asked for (`START-END`).
        range: String,
    },
    /// The answer covers other bytes than those asked for.
    #[error("asked for bytes {expected} and the answer's Content-Range is {got:?}")]
    WrongRange {
        /// `bytes START-END/TOTAL` as asked.
        expected: String,
        /// The header received (empty: none).
        got: String,
    },
    /// The answer declares another length than the range's.
    #[error("asked for {expected} bytes and the answer declares Content-Length {declared}")]
    LengthMismatch {
        /// The range's length.
        expected: u64,
        /// The header's value.
        declared: String,
    },
    /// The answer went on past the range asked for.
    #[error("the answer to bytes {range} went on past its {expected} bytes")]
    TooLong {
        /// The range asked for.
        range: String,
        /// Its length.
        expected: u64,
    },
    /// The answer ended before the range did.
    #[error("the answer to bytes {range} ended after {got} of its {expected} bytes")]
    Truncated {
        /// The range asked for.
        range: String,
        /// Bytes received.
        got: u64,
        /// Its length.
        expected: u64,
    },
    /// Nothing came in time.
    #[error("timed out waiting for {0} from the payload URL")]
    Timeout(&'static str),
    /// The installer refused a chunk from this source (it failed
    /// authentication): nothing of it was written.
    #[error("chunk {index} from the payload URL was refused: {source}")]
    Chunk {
        /// The chunk.
        index: u32,
        /// The device core's refusal.
        source: aloft_device::Error,
    },
}

impl DirectError {
    /// The kind of failure.
    pub fn kind(&self) -> DirectFailure {
        match self {
            Self::Url { .. } => DirectFailure::Url,
            Self::Connect { .. } => DirectFailure::Connect,
            Self::Tls { .. } => DirectFailure::Tls,
            Self::Http { .. } => DirectFailure::Http,
            Self::NotPartial { .. } => DirectFailure::Status,
            Self::WrongRange { .. } => DirectFailure::Range,
            Self::LengthMismatch { .. } => DirectFailure::Length,
            Self::TooLong { .. } => DirectFailure::TooLong,
            Self::Truncated { .. } => DirectFailure::Truncated,
            Self::Timeout(_) => DirectFailure::Timeout,
            Self::Chunk { .. } => DirectFailure::Chunk,
        }
    }
}

/// The chunk arithmetic a direct download needs from a payload layout.
pub(crate) trait ChunkRanges {
    /// Chunks in the payload.
    fn chunk_count(&self) -> u32;
    /// Wire length of chunk `index` (`None` past the end).
    fn chunk_len(&self, index: u32) -> Option<usize>;
    /// Byte offset of chunk `index` (the payload length at or past the end).
    fn chunk_offset(&self, index: u32) -> u64;
    /// Total wire length.
    fn payload_len(&self) -> u64;
}

/// How a direct download ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// Every chunk is written.
    Complete,
    /// The shutdown future completed.
    Shutdown,
}

/// A parsed payload URL and the means to reach it.
pub(crate) struct Source {
    url: String,
    host: String,
    port: u16,
    /// Path and query, as sent in the request line.
    target: String,
    /// `Host` header value.
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    local_address: Option<IpAddr>,
    timeout: Duration,
    request_bytes: u64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a presigned signature: log its host only.
        f.debug_struct("Source")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Settings of [`Source::new`].
pub(crate) struct SourceConfig<'a> {
    /// PEM of the identity bundle's CA.
    pub ca_pem: Option<&'a str>,
    /// Whether the agent reaches its server without TLS (then `http://`
    /// payload URLs are accepted too).
    pub plaintext_server: bool,
    /// Roots for `https://`.
    pub trust: PayloadTls,
    /// Source address.
    pub local_address: Option<IpAddr>,
    /// Limit for connecting and for each answer and body frame.
    pub timeout: Duration,
    /// Bytes per Range request (whole chunks, at least one).
    pub request_bytes: u64,
}

impl Source {
    /// Parses `url` and prepares its TLS configuration.
    pub(crate) fn new(url: &str, config: &SourceConfig<'_>) -> Result<Self, DirectError> {
        let bad = |reason| DirectError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if config.plaintext_server => false,
            Some("http") => {
                return Err(bad(
                    "http:// is refused while the server connection uses TLS: payload URLs must be https://",
                ));
            }
            _ => return Err(bad("the scheme must be https://")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| bad("no host"))?;
        if authority.contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let target = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let tls = if https {
            let tls_err = |source: Box<dyn std::error::Error + Send + Sync>| DirectError::Tls {
                host: host.clone(),
                source,
            };
            let roots = roots(config).map_err(tls_err)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_err(e.into()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad("the host is not a DNS name or IP address"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(client)), name))
        } else {
            None
        };
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            target,
            authority,
            tls,
            local_address: config.local_address,
            timeout: config.timeout,
            request_bytes: config.request_bytes,
        })
    }

    /// Connects (TCP, TLS) and returns a ready HTTP/1.1 sender.
    async fn connect(
        &self,
    ) -> Result<http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, DirectError> {
        let authority = format!("{}:{}", self.host, self.port);
        let connect_err = |source| DirectError::Connect {
            authority: authority.clone(),
            source,
        };
        let tcp = tokio::time::timeout(self.timeout, async {
            let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            for addr in addrs {
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                if let Some(local) = self.local_address {
                    socket.bind((local, 0).into())?;
                }
                match socket.connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
        .await
        .map_err(|_| DirectError::Timeout("the connection"))?
        .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let http_err = |source| DirectError::Http {
            host: self.host.clone(),
            source,
        };
        match &self.tls {
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| DirectError::Timeout("the TLS handshake"))?
                        .map_err(|e| DirectError::Tls {
                            host: self.host.clone(),
                            source: e.into(),
                        })?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http_err)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(sender)
            }
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(http_err)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(sender)
            }
        }
    }

    /// Feeds `installer` every chunk from its resume point to the end, one
    /// Range request of up to `request_bytes` at a time over one
    /// connection; `on_chunk` is told of each chunk written.
    pub(crate) async fn fetch<F: NorFlash>(
        &self,
        installer: &mut Installer<'_, F>,
        layout: &impl ChunkRanges,
        mut on_chunk: impl FnMut(u32),
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Result<Fetched, DirectError>, aloft_device::Error> {
        let mut sender = match tokio::select! {
            s = self.connect() => s,
            () = &mut shutdown => return Ok(Ok(Fetched::Shutdown)),
        } {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let count = layout.chunk_count();
        let mut buf = Vec::new();
        loop {
            let first = installer.next_chunk();
            if first >= count {
                return Ok(Ok(Fetched::Complete));
            }
            let end = batch_end(layout, first, self.request_bytes);
            let step = tokio::select! {
                r = self.fetch_range(&mut sender, installer, layout, first..end, &mut buf, &mut on_chunk) => r?,
                () = &mut shutdown => return Ok(Ok(Fetched::Shutdown)),
            };
            if let Err(e) = step {
                return Ok(Err(e));
            }
        }
    }

    /// One Range request for `chunks`, each chunk handed to the installer as
    /// soon as it is complete. `Err` only for a flash failure.
    async fn fetch_range<F: NorFlash>(
        &self,
        sender: &mut http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        installer: &mut Installer<'_, F>,
        layout: &impl ChunkRanges,
        chunks: std::ops::Range<u32>,
        buf: &mut Vec<u8>,
        on_chunk: &mut impl FnMut(u32),
    ) -> Result<Result<(), DirectError>, aloft_device::Error> {
        let start = layout.chunk_offset(chunks.start);
        let end = layout.chunk_offset(chunks.end);
        let expected = end - start;
        let range = format!("{start}-{}", end - 1);
        let http_err = |source| DirectError::Http {
            host: self.host.clone(),
            source,
        };
        if let Err(e) = sender.ready().await {
            return Ok(Err(http_err(e)));
        }
        let request = http::Request::get(self.target.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::RANGE, format!("bytes={range}"))
            .header(http::header::USER_AGENT, "aloft-agent")
            .body(http_body_util::Empty::new());
        let request = match request {
            Ok(r) => r,
            Err(_) => {
                return Ok(Err(DirectError::Url {
                    url: self.url.clone(),
                    reason: "not a valid request target",
                }));
            }
        };
        let response = match tokio::time::timeout(self.timeout, sender.send_request(request)).await
        {
            Err(_) => return Ok(Err(DirectError::Timeout("the answer"))),
            Ok(Err(e)) => return Ok(Err(http_err(e))),
            Ok(Ok(r)) => r,
        };
        if let Err(e) = check_head(&response, &range, expected, layout.payload_len()) {
            return Ok(Err(e));
        }
        let mut body = response.into_body();
        let mut received = 0u64;
        let mut index = chunks.start;
        buf.clear();
        loop {
            let frame = match tokio::time::timeout(self.timeout, body.frame()).await {
                Err(_) => return Ok(Err(DirectError::Timeout("the next bytes"))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Ok(Err(http_err(e))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if received + data.len() as u64 > expected {
                return Ok(Err(DirectError::TooLong { range, expected }));
            }
            received += data.len() as u64;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let want = layout.chunk_len(index).unwrap_or(0);
                let take = (want - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == want {
                    match installer.write_chunk(buf) {
                        Ok(_) => on_chunk(index),
                        Err(e @ aloft_device::Error::Flash(_)) => return Err(e),
                        Err(source) => return Ok(Err(DirectError::Chunk { index, source })),
                    }
                    buf.clear();
                    index += 1;
                }
            }
        }
        if received < expected {
            return Ok(Err(DirectError::Truncated {
                range,
                got: received,
                expected,
            }));
        }
        Ok(Ok(()))
    }
}

/// The status and headers of an answer to the Range request for `range`
/// (`START-END`, `expected` bytes) of a payload of `total` bytes.
fn check_head<B>(
    response: &http::Response<B>,
    range: &str,
    expected: u64,
    total: u64,
) -> Result<(), DirectError> {
    if response.status() != http::StatusCode::PARTIAL_CONTENT {
        return Err(DirectError::NotPartial {
            status: response.status().as_u16(),
            range: range.to_owned(),
        });
    }
    let got = response
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let with_total = format!("bytes {range}/{total}");
    let unknown_total = format!("bytes {range}/*");
    if got != with_total && got != unknown_total {
        return Err(DirectError::WrongRange {
            expected: with_total,
            got: got.to_owned(),
        });
    }
    if let Some(declared) = response.headers().get(http::header::CONTENT_LENGTH) {
        let declared = declared.to_str().unwrap_or("?").trim();
        if declared.parse::<u64>().ok() != Some(expected) {
            return Err(DirectError::LengthMismatch {
                expected,
                declared: declared.to_owned(),
            });
        }
    }
    Ok(())
}

/// The end of the run of whole chunks from `first` that fits in `bytes`
/// (at least one chunk).
fn batch_end(layout: &impl ChunkRanges, first: u32, bytes: u64) -> u32 {
    let count = layout.chunk_count();
    let start = layout.chunk_offset(first);
    let mut end = first.saturating_add(1).min(count);
    while end < count && layout.chunk_offset(end + 1) - start <= bytes {
        end += 1;
    }
    end
}

/// The root certificates for `https://` payload URLs.
fn roots(
    config: &SourceConfig<'_>,
) -> Result<rustls::RootCertStore, Box<dyn std::error::Error + Send + Sync>> {
    let mut store = rustls::RootCertStore::empty();
    match config.trust {
        PayloadTls::IdentityCa => {
            let pem = config.ca_pem.ok_or(
                "the identity bundle pins no CA (its server URL is http://); configure PayloadTls::PlatformRoots for https payload URLs",
            )?;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                store.add(cert?)?;
            }
        }
        PayloadTls::PlatformRoots => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
        }
    }
    if store.is_empty() {
        return Err("no root certificate to check the payload server against".into());
    }
    Ok(store)
}

impl ChunkRanges for aloft_protocol::signed_chunks::PayloadLayout {
    fn chunk_count(&self) -> u32 {
        Self::chunk_count(self)
    }
    fn chunk_len(&self, index: u32) -> Option<usize> {
        Self::chunk_len(self, index)
    }
    fn chunk_offset(&self, index: u32) -> u64 {
        Self::chunk_offset(self, index)
    }
    fn payload_len(&self) -> u64 {
        Self::payload_len(self)
    }
}

/// Downloads from `url` into `installer` from its resume point. `Some`:
/// complete, or shut down; `None`: it stopped (told as
/// [`Event::DirectDownloadFailed`]) and the caller goes on over gRPC from
/// `installer.next_chunk()`. `Err` only for a flash failure.
pub(crate) async fn run<F: NorFlash>(
    installer: &mut Installer<'_, F>,
    url: &str,
    config: &SourceConfig<'_>,
    layout: &impl ChunkRanges,
    release_id: &ReleaseId,
    emit: &mut impl FnMut(&Event),
    shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Result<Option<Fetched>, aloft_device::Error> {
    let failed = |e: DirectError, next_chunk: u32, emit: &mut dyn FnMut(&Event)| {
        tracing::warn!(release = %release_id, error = %e, next_chunk, "direct payload download failed; continuing over the server's download");
        emit(&Event::DirectDownloadFailed {
            release_id: release_id.clone(),
            kind: e.kind(),
            error: e.to_string(),
            next_chunk,
        });
        Ok(None)
    };
    let source = match Source::new(url, config) {
        Ok(s) => s,
        Err(e) => return failed(e, installer.next_chunk(), emit),
    };
    emit(&Event::DirectDownloadStarted {
        release_id: release_id.clone(),
        host: source.host.clone(),
        start_chunk: installer.next_chunk(),
    });
    let fetched = source
        .fetch(
            installer,
            layout,
            |index| emit(&Event::ChunkWritten { index }),
            shutdown,
        )
        .await?;
    match fetched {
        Ok(Fetched::Complete) => {
            emit(&Event::DirectDownloadCompleted {
                release_id: release_id.clone(),
            });
            Ok(Some(Fetched::Complete))
        }
        Ok(Fetched::Shutdown) => Ok(Some(Fetched::Shutdown)),
        Err(e) => failed(e, installer.next_chunk(), emit),
    }
}
