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
/// Fails with a message naming the URL, what went wrong and what to do if
/// the server cannot be reached or the TLS handshake fails.
pub async fn connect(target: &ServerTarget, auth: BearerAuth) -> anyhow::Result<AdminClient> {
    let endpoint = endpoint(target)?;
    let channel = endpoint.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        anyhow!(
            "could not connect to {}: {chain}\n  hint: {}",
            target.url,
            connect_hint(target, &chain)
        )
    })?;
    Ok(AdminServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(64 * 1024 * 1024))
}

/// What to do about a failed connection, from the text of its error.
fn connect_hint(target: &ServerTarget, chain: &str) -> String {
    let url = target.url.trim();
    let (host, port) = url
        .parse::<tonic::codegen::http::Uri>()
        .ok()
        .map(|u| (u.host().unwrap_or("").to_owned(), u.port_u16()))
        .unwrap_or_default();
    let tls = url.starts_with("https://");
    if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        return format!(
            "the server does not answer in TLS there: if it runs with --insecure-plaintext, \
             use http://{host}:{}",
            port.map_or_else(|| "PORT".to_owned(), |p| p.to_string())
        );
    }
    if chain.contains("UnknownIssuer") || chain.contains("BadSignature") {
        return "the server's certificate was not issued by the CA in --ca / ALOFT_CA: pass the \
                CA that issued it (`cargo xtask keys --out DIR` writes it to DIR/ca.pem)"
            .to_owned();
    }
    if chain.contains("NotValidForName") {
        return format!(
            "the server's certificate is not issued for {host:?}: use a host name it names \
             (`cargo xtask keys` issues it for localhost and 127.0.0.1; more with --host)"
        );
    }
    if chain.contains("Expired") && tls {
        return "the server's certificate has expired: issue a new one and restart the server"
            .to_owned();
    }
    let no_port = match port {
        None => format!(
            " (the URL names no port, so {} is used; aloft-server listens on the port of its \
             --listen, e.g. {host}:7443)",
            if tls { 443 } else { 80 }
        ),
        Some(_) => String::new(),
    };
    if chain.contains("Connection refused") {
        return format!(
            "nothing listens there{no_port}: start aloft-server, or fix --server / ALOFT_SERVER"
        );
    }
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        return format!("the host {host:?} does not resolve: check --server / ALOFT_SERVER");
    }
    if chain.contains("timed out") {
        return format!(
            "no answer within {}s{no_port}: check the host and port in --server / ALOFT_SERVER",
            CONNECT_TIMEOUT.as_secs()
        );
    }
    let tls_hint = if target.ca_pem.is_some() {
        ", and that --ca names the CA that issued its certificate"
    } else {
        ""
    };
    format!(
        "check --server / ALOFT_SERVER and that aloft-server is running there{no_port}{tls_hint}"
    )
}

/// Checks the URL and builds the endpoint with TLS pinned to the given CA.
pub fn endpoint(target: &ServerTarget) -> anyhow::Result<Endpoint> {
    let url = target.url.trim();
    let (host, tls) = check_url(url)?;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server URL {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    if !tls {
        if target.ca_pem.is_some() {
            bail!(
                "a CA is pinned (--ca / ALOFT_CA) but the server URL {url} is plaintext http://: use \
                 https:// for a TLS server, or unset ALOFT_CA for a plaintext one"
            );
        }
        return Ok(endpoint);
    }
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

/// Checks that `url` is `http://HOST[:PORT]` or `https://HOST[:PORT]` and
/// nothing more; returns the host (without IPv6 brackets) and whether it
/// uses TLS.
pub fn check_url(url: &str) -> anyhow::Result<(String, bool)> {
    let uri: tonic::codegen::http::Uri = url.parse().with_context(|| {
        format!("invalid server URL {url:?}: use http://HOST:PORT or https://HOST:PORT")
    })?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ if !url.contains("://") => bail!(
            "invalid server URL {url:?}: it must start with http:// (plaintext) or https:// (TLS), \
             e.g. https://{url}"
        ),
        _ => bail!(
            "invalid server URL {url:?}: it must start with http:// (plaintext) or https:// (TLS)"
        ),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("invalid server URL {url:?}: it names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!(
            "invalid server URL {url:?}: give only the scheme, host and port ({}://{}), no path",
            if tls { "https" } else { "http" },
            uri.authority().map_or("HOST:PORT", |a| a.as_str())
        );
    }
    Ok((host, tls))
}

/// Turns a failed call into an error naming the action, the problem and
/// what to do about it.
pub fn status_error(action: &str, status: &Status) -> anyhow::Error {
    let message = status.message();
    // A plaintext call to a TLS port fails in HTTP/2 framing, before any
    // gRPC status: say so rather than "the server failed".
    if message.contains("frame with invalid size") || message.contains("h2 protocol error") {
        return anyhow!(
            "{action}: the server did not answer in plaintext gRPC ({})\n  hint: if aloft-server \
             runs with TLS (--tls-cert), use https://HOST:PORT and pass its CA with --ca / ALOFT_CA",
            message.trim()
        );
    }
    let (problem, hint) = match status.code() {
        Code::Unauthenticated => (
            "the server refused the token",
            "pass a valid, unrevoked operator token with --token, ALOFT_TOKEN or --token-file \
             (a new server writes its admin token to DATA_DIR/admin-token)",
        ),
        Code::PermissionDenied => (
            "the token's role is not allowed to do this",
            "use a token with a higher role (viewer < operator < admin); a factory token only \
             registers devices and reads the devices it registered",
        ),
        Code::NotFound => (
            "not found",
            "check the id; the list commands show what exists",
        ),
        Code::AlreadyExists => (
            "it already exists",
            "ids are never reused, not even after a revoke or a cancel: choose another id \
             (for a release, build another version)",
        ),
        Code::InvalidArgument | Code::OutOfRange => (
            "the server rejected the input",
            "fix the input the server's message names (see --help for the format)",
        ),
        Code::FailedPrecondition => (
            "the server cannot do this in its current state",
            "the server's message says what is missing",
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
        let err = endpoint(&target("localhost:7443", None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://localhost:7443"), "{err}");
        let err = endpoint(&target("http://h:1/admin", None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no path") && err.contains("http://h:1"),
            "{err}"
        );
        assert!(endpoint(&target("http://h:1/", None)).is_ok());
        assert!(endpoint(&target("http://[::1]:7443", None)).is_ok());
    }

    #[test]
    fn connect_failures_say_what_to_do() {
        let plain = target("http://localhost:7443", None);
        let tls = target("https://localhost:7443", Some("pem"));
        let hint = connect_hint(
            &tls,
            "transport error: received corrupt message of type InvalidContentType",
        );
        assert!(hint.contains("use http://localhost:7443"), "{hint}");
        let hint = connect_hint(
            &tls,
            "transport error: invalid peer certificate: UnknownIssuer",
        );
        assert!(hint.contains("not issued by the CA in --ca"), "{hint}");
        let hint = connect_hint(
            &target("https://127.0.0.2:7443", Some("pem")),
            "invalid peer certificate: NotValidForName",
        );
        assert!(hint.contains("not issued for \"127.0.0.2\""), "{hint}");
        let hint = connect_hint(
            &plain,
            "tcp connect error: Connection refused (os error 111)",
        );
        assert!(
            hint.contains("nothing listens there") && !hint.contains("no port"),
            "{hint}"
        );
        let hint = connect_hint(&target("http://localhost", None), "Connection refused");
        assert!(hint.contains("names no port, so 80 is used"), "{hint}");
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
        let err = status_error(
            "reading server info",
            &Status::unknown("h2 protocol error: http2 error: connection error detected: frame with invalid size"),
        )
        .to_string();
        assert!(
            err.contains("did not answer in plaintext gRPC") && err.contains("https://"),
            "{err}"
        );
        let err = status_error(
            "provisioning device d1",
            &Status::already_exists("device d1 is already registered"),
        )
        .to_string();
        assert!(
            err.contains("never reused") && !err.contains("revoke the old one"),
            "{err}"
        );
    }
}
