//! Aloft's fleet dashboard as an HTTP surface: the browser's files, embedded
//! in the binary, and gRPC-web calls to the admin service, behind security
//! headers. `aloft-server --web ADDR` serves [`router`] on its own listener.
//!
//! # Design decisions
//!
//! - **The browser is one more admin client.** It speaks the admin service's
//!   own protocol (gRPC-web, translated to gRPC by `tonic-web`), with the
//!   operator's token in the `authorization` header of each call, so every
//!   action meets the role check, the rate limit and the audit trail the
//!   CLI meets. This crate adds no authority and has no API of its own: no
//!   session cookie, no JSON gateway, nothing to keep in sync with
//!   `admin.proto`.
//! - **Same origin only** ([`guard`]): a gRPC-web call must be a POST of a
//!   gRPC-web content type, and a browser's `Origin` / `Sec-Fetch-Site`
//!   must say it comes from this dashboard's own pages. No CORS header is
//!   ever sent, so other sites' scripts cannot read any answer either.
//! - **No front-end build step** ([`assets`]): plain ES modules, a style
//!   sheet and an icon, included with `include_bytes!`; no vendored
//!   library. The file list is checked against the directory by a test.
//! - **Headers** ([`headers`]): a Content-Security-Policy with no inline
//!   script or style and Trusted Types enforced, `frame-ancestors 'none'`,
//!   `nosniff`, no referrer, and no caching of API answers.
#![forbid(unsafe_code)]

use std::convert::Infallible;

use axum::http::{Request, Response};
use tonic::server::NamedService;
use tower::{Layer as _, Service};

pub mod assets;
pub mod guard;
pub mod headers;

/// The dashboard: its files at `/` and gRPC-web calls to `admin` at
/// `/{service name}/{method}`, same-origin only, every response with the
/// security headers of [`headers::secure`].
pub fn router<S>(admin: S) -> axum::Router
where
    S: Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let grpc_web = tonic_web::GrpcWebLayer::new().layer(admin);
    axum::Router::new()
        .route_service(&format!("/{}/{{method}}", S::NAME), grpc_web)
        .route_layer(axum::middleware::from_fn(guard::grpc_web_same_origin))
        .fallback(assets::serve)
        .layer(axum::middleware::map_response(headers::secure))
}
