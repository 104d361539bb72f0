//! Building the gRPC channel to the server: TLS pinned to the bundle's CA
//! for `https://`, plaintext for `http://`.

use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::AgentError;

/// HTTP/2 flow-control window the device grants per stream: a download
/// keeps 16 chunks of 16 KiB in flight instead of h2's default 64 KiB, which
/// stalls the server on window updates. It bounds unread data, not memory
/// allocated up front.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 window for the whole connection (a session and a download).
pub const CONNECTION_WINDOW: u32 = 512 * 1024;
/// Largest HTTP/2 frame the device accepts: one frame per 16 KiB chunk plus
/// its framing, instead of two at h2's default of 16 KiB.
pub const MAX_FRAME: u32 = 32 * 1024;

/// Makes the endpoint for `url`. With `https://`, the server certificate must
/// chain to `ca_pem` and only to it (no system roots are consulted) and name
/// the URL's host. `local_address` binds the client socket (simulators spread
/// connections over 127.0.0.0/8 this way).
pub(crate) fn endpoint(
    url: &str,
    ca_pem: Option<&str>,
    connect_timeout: Duration,
    local_address: Option<IpAddr>,
) -> Result<Endpoint, AgentError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| AgentError::InvalidUrl(format!("{url}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .local_address(local_address);
    if url.starts_with("https://") {
        let ca = ca_pem
            .ok_or_else(|| AgentError::InvalidUrl(format!("{url} uses TLS but no CA is pinned")))?;
        let host = endpoint.uri().host().unwrap_or_default().to_owned();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(host);
        endpoint = endpoint.tls_config(tls).map_err(AgentError::Tls)?;
    } else if !url.starts_with("http://") {
        return Err(AgentError::InvalidUrl(format!(
            "{url}: use http:// or https://"
        )));
    }
    Ok(endpoint)
}

/// Connects eagerly (TCP, TLS handshake, HTTP/2 preface), so a refused
/// certificate is an error here and not on the first call.
pub(crate) async fn connect(endpoint: &Endpoint) -> Result<Channel, AgentError> {
    endpoint.connect().await.map_err(AgentError::Connect)
}
