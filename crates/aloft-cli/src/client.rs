//! Connecting to the admin service: URL and TLS setup, the bearer-token
//! interceptor, and turning gRPC statuses into errors that say what to do.

use std::time::Duration;

use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use anyhow::{Context as _, anyhow, bail};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// The admin client every command uses.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, BearerAuth>>;

/// How long to wait for the TCP and TLS handshake before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `authorization: Bearer <token>` to every call. The header value is
/// marked sensitive so it never shows up in debug output.
#[derive(Clone)]
pub struct BearerAuth {
    header: AsciiMetadataValue,
}

impl BearerAuth {
    /// Builds the header for `token` (surrounding whitespace removed).
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            bail!("the operator token is empty: pass --token, ALOFT_TOKEN or --token-file");
        }
        let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| {
                anyhow!("the operator token contains characters that cannot be sent (only printable ASCII is allowed)")
            })?;
        header.set_sensitive(true);
        Ok(Self { header })
    }
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerAuth(..)")
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

/// Where and how to reach the server.
#[derive(Clone, Debug)]
pub struct ServerTarget {
    /// `http://host:port` (plaintext) or `https://host:port` (TLS).
    pub url: String,
    /// PEM of the CA the server's certificate must chain to (https only).
    pub ca_pem: Option<String>,
}

/// Opens a connection to the admin service and attaches `auth` to every call.
///
/// Fails with a message naming the URL if the server cannot be reached or
/// the TLS handshake fails.
pub async fn connect(target: &ServerTarget, auth: BearerAuth) -> anyhow::Result<AdminClient> {
    let endpoint = endpoint(target)?;
    let channel = endpoint.connect().await.map_err(|e| {
        let tls_hint = if target.ca_pem.is_some() {
            ", and that --ca names the CA that issued its certificate"
        } else {
            ""
        };
        anyhow!(
            "could not connect to {}: {}\n  hint: check --server / ALOFT_SERVER and that aloft-server is running there{tls_hint}",
            target.url,
            error_chain(&e)
        )
    })?;
    Ok(AdminServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(64 * 1024 * 1024))
}

/// Checks the URL and builds the endpoint with TLS pinned to the given CA.
pub fn endpoint(target: &ServerTarget) -> anyhow::Result<Endpoint> {
    let url = target.url.trim();
    let uri: tonic::codegen::http::Uri = url.parse().with_context(|| {
        format!("invalid server URL {url:?}: use http://HOST:PORT or https://HOST:PORT")
    })?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("invalid server URL {url:?}: it names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server URL {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    match uri.scheme_str() {
        Some("http") => {
            if target.ca_pem.is_some() {
                bail!(
                    "--ca was given but the server URL {url} is plaintext http://; use https:// to pin the CA"
                );
            }
            Ok(endpoint)
        }
        Some("https") => {
            let ca = target.ca_pem.as_ref().ok_or_else(|| {
                anyhow!(
                    "{url} uses TLS but no CA is pinned: pass --ca FILE (or ALOFT_CA) with the PEM of the CA that \
                     issued the server's certificate"
                )
            })?;
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(host);
            endpoint
                .tls_config(tls)
                .with_context(|| format!("could not set up TLS for {url}"))
        }
        _ => bail!(
            "invalid server URL {url:?}: it must start with http:// (plaintext) or https:// (TLS)"
        ),
    }
}

/// Turns a failed call into an error naming the action, the problem and
/// what to do about it.
pub fn status_error(action: &str, status: &Status) -> anyhow::Error {
    let (problem, hint) = match status.code() {
        Code::Unauthenticated => (
            "the server refused the token",
            "pass a valid, unrevoked operator token with --token, ALOFT_TOKEN or --token-file",
        ),
        Code::PermissionDenied => (
            "the token's role is not allowed to do this",
            "use a token with a higher role (viewer < operator < admin)",
        ),
        Code::NotFound => (
            "not found",
            "check the id; the list commands show what exists",
        ),
        Code::AlreadyExists => (
            "it already exists",
            "choose another id, or revoke the old one first",
        ),
        Code::InvalidArgument | Code::OutOfRange => (
            "the server rejected the input",
            "fix the input the server names above",
        ),
        Code::FailedPrecondition => (
            "the server cannot do this in its current state",
            "see the server's reason above",
        ),
        Code::ResourceExhausted => (
            "the request is too large or the server is busy",
            "check the input's size, or retry later",
        ),
        Code::Unavailable => (
            "the server is unreachable",
            "check --server / ALOFT_SERVER and that aloft-server is running",
        ),
        Code::DeadlineExceeded => (
            "the server did not answer in time",
            "retry; check the server's load",
        ),
        Code::Unimplemented => (
            "the server does not support this command",
            "upgrade aloft-server",
        ),
        Code::Cancelled => ("the call was cancelled", "retry"),
        _ => ("the server failed", "see the server's log"),
    };
    let detail = status.message().trim();
    let source = std::error::Error::source(status)
        .map(error_chain)
        .filter(|s| !s.is_empty());
    let detail = match (detail.is_empty(), source) {
        (true, None) => String::new(),
        (false, None) => format!(" ({detail})"),
        (true, Some(src)) => format!(" ({src})"),
        (false, Some(src)) => format!(" ({detail}: {src})"),
    };
    anyhow!("{action}: {problem}{detail}\n  hint: {hint}")
}

/// An error and its sources, joined with `: `, without repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    fn target(url: &str, ca: Option<&str>) -> ServerTarget {
        ServerTarget {
            url: url.into(),
            ca_pem: ca.map(str::to_owned),
        }
    }

    #[test]
    fn interceptor_sends_bearer_token() {
        let mut auth = BearerAuth::new("  secret-token\n").unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer secret-token");
        assert!(value.is_sensitive());
        assert!(!format!("{auth:?}").contains("secret"));
    }

    #[test]
    fn empty_or_unsendable_tokens_are_refused() {
        assert!(
            BearerAuth::new(" \n")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            BearerAuth::new("tok\u{7}en")
                .unwrap_err()
                .to_string()
                .contains("cannot be sent")
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(endpoint(&target("http://127.0.0.1:7443", None)).is_ok());
        let err = endpoint(&target("ftp://host:1", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://"), "{err}");
        let err = endpoint(&target("https://localhost:7443", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca"), "{err}");
        let err = endpoint(&target("http://localhost:7443", Some("pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("plaintext"), "{err}");
        assert!(endpoint(&target("not a url", None)).is_err());
    }

    #[test]
    fn statuses_become_actionable_errors() {
        let err =
            status_error("listing devices", &Status::unauthenticated("token revoked")).to_string();
        assert!(
            err.contains("listing devices: the server refused the token (token revoked)"),
            "{err}"
        );
        assert!(err.contains("--token-file"), "{err}");
        let err = status_error(
            "revoking device d1",
            &Status::permission_denied("needs operator"),
        )
        .to_string();
        assert!(err.contains("role"), "{err}");
        let err = status_error("showing device d9", &Status::not_found("no device d9")).to_string();
        assert!(err.contains("not found (no device d9)"), "{err}");
    }
}
