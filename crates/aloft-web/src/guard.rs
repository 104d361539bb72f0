//! Which requests may reach the admin service through the dashboard's
//! listener: gRPC-web POSTs from the dashboard's own origin.
//!
//! The token travels in a header a script sets, never in a cookie, so
//! another site cannot make a browser send it (no CSRF). These checks close
//! what is left: a foreign page posting to the admin service at all (its
//! `Origin` or `Sec-Fetch-Site` gives it away), and native gRPC or plain
//! HTTP on a port that exists for browsers. Clients that are not browsers
//! send neither header and are judged by their token alone, as on the gRPC
//! port.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

/// Why a request to the admin service was turned away (the response's
/// status and text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a POST.
    Method,
    /// Not a gRPC-web content type (native gRPC belongs on the gRPC port).
    ContentType,
    /// A browser says the request comes from another site.
    CrossSite,
    /// A browser's `Origin` names another host than the request's.
    ForeignOrigin,
}

impl Refusal {
    /// The HTTP status sent.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CrossSite | Self::ForeignOrigin => StatusCode::FORBIDDEN,
        }
    }

    /// The text sent with it.
    pub fn text(self) -> &'static str {
        match self {
            Self::Method => "the admin service takes gRPC-web POST requests only",
            Self::ContentType => {
                "this listener serves the dashboard: send gRPC-web (application/grpc-web+proto); \
                 native gRPC clients use the server's gRPC address"
            }
            Self::CrossSite => "cross-site requests to the admin service are refused",
            Self::ForeignOrigin => "requests from another origin are refused (same-origin only)",
        }
    }
}

/// The check on its own: `Ok` when a request with this method and these
/// headers may reach the admin service.
pub fn check(method: &Method, authority: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    if method != Method::POST {
        return Err(Refusal::Method);
    }
    let grpc_web = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc-web"));
    if !grpc_web {
        return Err(Refusal::ContentType);
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // "none": typed by the user; "same-origin": our own pages.
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(Refusal::CrossSite);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin_authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        let same = match (origin_authority, authority) {
            (Some(o), Some(a)) => o.eq_ignore_ascii_case(a),
            _ => false,
        };
        if !same {
            return Err(Refusal::ForeignOrigin);
        }
    }
    Ok(())
}

/// Middleware on the admin service's route: [`check`], with the request's
/// authority from `Host` (HTTP/1.1) or the URI (HTTP/2's `:authority`).
pub async fn grpc_web_same_origin(request: Request, next: Next) -> Response {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match check(request.method(), authority.as_deref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => (refusal.status(), refusal.text()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const WEB: (&str, &str) = ("content-type", "application/grpc-web+proto");

    #[test]
    fn own_pages_and_non_browsers_pass() {
        let own = headers(&[
            WEB,
            ("origin", "https://localhost:7444"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check(&Method::POST, Some("localhost:7444"), &own), Ok(()));
        assert_eq!(
            check(&Method::POST, Some("LOCALHOST:7444"), &own),
            Ok(()),
            "host names compare without case"
        );
        assert_eq!(
            check(&Method::POST, Some("localhost:7444"), &headers(&[WEB])),
            Ok(())
        );
    }

    #[test]
    fn foreign_origins_and_sites_are_refused() {
        let other_port = headers(&[WEB, ("origin", "https://localhost:9999")]);
        assert_eq!(
            check(&Method::POST, Some("localhost:7444"), &other_port),
            Err(Refusal::ForeignOrigin)
        );
        let null = headers(&[WEB, ("origin", "null")]);
        assert_eq!(
            check(&Method::POST, Some("localhost:7444"), &null),
            Err(Refusal::ForeignOrigin)
        );
        let no_host = headers(&[WEB, ("origin", "https://localhost:7444")]);
        assert_eq!(
            check(&Method::POST, None, &no_host),
            Err(Refusal::ForeignOrigin)
        );
        let cross = headers(&[WEB, ("sec-fetch-site", "cross-site")]);
        assert_eq!(
            check(&Method::POST, Some("localhost:7444"), &cross),
            Err(Refusal::CrossSite)
        );
        let same_site = headers(&[WEB, ("sec-fetch-site", "same-site")]);
        assert_eq!(
            check(&Method::POST, Some("localhost:7444"), &same_site),
            Err(Refusal::CrossSite),
            "another port of the same host is another origin"
        );
    }

    #[test]
    fn only_grpc_web_posts() {
        assert_eq!(
            check(&Method::GET, Some("h"), &headers(&[WEB])),
            Err(Refusal::Method)
        );
        let native = headers(&[("content-type", "application/grpc")]);
        assert_eq!(
            check(&Method::POST, Some("h"), &native),
            Err(Refusal::ContentType)
        );
        assert_eq!(
            check(&Method::POST, Some("h"), &HeaderMap::new()),
            Err(Refusal::ContentType)
        );
    }
}
