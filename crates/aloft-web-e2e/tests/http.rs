//! The dashboard listener over real HTTP, without a browser: the files and
//! their headers, the same-origin rule, and gRPC-web calls meeting the
//! admin service's own role checks.

use std::time::Duration;

use aloft_protocol::pb;
use aloft_protocol::prost::Message;
use aloft_web_e2e::world::{World, WorldConfig};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One server at a time in this process (`cargo test` runs the tests as
/// threads; sled 0.34 is happiest with one database flushing at a time).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn world() -> (std::sync::MutexGuard<'static, ()>, World) {
    let guard = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let world = World::start(WorldConfig {
        tls: false,
        devices: 0,
        never_confirm_pct: 0.0,
    });
    (guard, world)
}

/// A gRPC-web answer: HTTP status, gRPC status and message, data frames.
struct Answer {
    http: u16,
    headers: ureq::http::HeaderMap,
    grpc_status: Option<u32>,
    grpc_message: String,
    messages: Vec<Vec<u8>>,
}

/// POSTs one gRPC-web call; `extra` headers are added (e.g. Origin).
fn grpc_web(
    world: &World,
    method: &str,
    request: &impl Message,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let body = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let mut req = agent()
        .post(&format!("{}aloft.v1.AdminService/{method}", world.web_url))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut response = req.send(&framed[..]).expect("the HTTP exchange");
    let http = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.body_mut().read_to_vec().expect("the body");
    let mut grpc_status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut grpc_message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut messages = Vec::new();
    let mut at = 0;
    let framed = header(&headers, "content-type").starts_with("application/grpc-web");
    while framed && at + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        let payload = &bytes[at + 5..at + 5 + len];
        if bytes[at] & 0x80 != 0 {
            for line in String::from_utf8_lossy(payload).split("\r\n") {
                if let Some(v) = line.strip_prefix("grpc-status:") {
                    grpc_status = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("grpc-message:") {
                    grpc_message = v.trim().to_owned();
                }
            }
        } else {
            messages.push(payload.to_vec());
        }
        at += 5 + len;
    }
    Answer {
        http,
        headers,
        grpc_status,
        grpc_message,
        messages,
    }
}

fn get(url: &str, extra: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut response = req.call().expect("the HTTP exchange");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.body_mut().read_to_vec().unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_security_headers(headers: &ureq::http::HeaderMap, what: &str) {
    for (name, value) in aloft_web::headers::HEADERS {
        assert_eq!(header(headers, name), *value, "{name} on {what}");
    }
    let csp = header(headers, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "no CORS on {what}"
    );
}

/// Every response carries the security headers; the page loads its module
/// and nothing inline; files revalidate by ETag; unknown paths are 404.
#[test]
fn files_come_with_security_headers() {
    let (_serial, w) = world();
    let (status, headers, body) = get(&w.web_url, &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_security_headers(&headers, "/");
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains(r#"<script type="module" src="/js/app.js"></script>"#),
        "{page}"
    );

    let (status, headers, body) = get(&format!("{}js/app.js", w.web_url), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(body, aloft_web::assets::find("/js/app.js").unwrap().1.bytes);
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let (status, headers, _) = get(
        &format!("{}js/app.js", w.web_url),
        &[("if-none-match", &etag)],
    );
    assert_eq!(status, 304, "a current copy is not sent again");
    assert_security_headers(&headers, "a 304");

    let (status, headers, _) = get(&format!("{}secrets.txt", w.web_url), &[]);
    assert_eq!(status, 404);
    assert_security_headers(&headers, "a 404");
    let (status, _, _) = get(&format!("{}../Cargo.toml", w.web_url), &[]);
    assert_eq!(status, 404);
}

/// gRPC-web reaches the admin service with the token's role: no token and
/// a wrong token are UNAUTHENTICATED, a viewer reads and learns its role,
/// and is PERMISSION_DENIED a control; answers are never cached.
#[test]
fn grpc_web_meets_the_admin_role_checks() {
    let (_serial, w) = world();
    let none = grpc_web(&w, "GetServerInfo", &pb::GetServerInfoRequest {}, None, &[]);
    assert_eq!(none.http, 200);
    assert_eq!(none.grpc_status, Some(16), "{}", none.grpc_message);
    let wrong = grpc_web(
        &w,
        "GetServerInfo",
        &pb::GetServerInfoRequest {},
        Some("aloft_00"),
        &[],
    );
    assert_eq!(wrong.grpc_status, Some(16), "{}", wrong.grpc_message);

    let viewer = grpc_web(
        &w,
        "GetServerInfo",
        &pb::GetServerInfoRequest {},
        Some(&w.viewer_token),
        &[],
    );
    assert_eq!(viewer.grpc_status, Some(0), "{}", viewer.grpc_message);
    assert_security_headers(&viewer.headers, "a gRPC-web answer");
    assert_eq!(header(&viewer.headers, "cache-control"), "no-store");
    let info = pb::ServerInfo::decode(&viewer.messages[0][..]).unwrap();
    assert_eq!(info.caller_role, pb::Role::Viewer as i32);
    assert!(
        info.caller_token_id.starts_with("tok-"),
        "{}",
        info.caller_token_id
    );
    let operator = grpc_web(
        &w,
        "GetServerInfo",
        &pb::GetServerInfoRequest {},
        Some(&w.operator_token),
        &[],
    );
    let info = pb::ServerInfo::decode(&operator.messages[0][..]).unwrap();
    assert_eq!(info.caller_role, pb::Role::Operator as i32);

    w.create_rollout(pb::CreateRolloutRequest {
        rollout_id: "web-r".into(),
        release_id: w.releases[1].id.clone(),
        start_paused: true,
        ..Default::default()
    });
    let resume = pb::ControlRolloutRequest {
        rollout_id: "web-r".into(),
        action: pb::RolloutAction::Resume as i32,
        reason: String::new(),
    };
    let refused = grpc_web(&w, "ControlRollout", &resume, Some(&w.viewer_token), &[]);
    assert_eq!(refused.grpc_status, Some(7), "{}", refused.grpc_message);
    assert_eq!(
        w.rollout("web-r").state,
        pb::RolloutState::Paused as i32,
        "the refused call changed nothing"
    );
    let done = grpc_web(&w, "ControlRollout", &resume, Some(&w.operator_token), &[]);
    assert_eq!(done.grpc_status, Some(0), "{}", done.grpc_message);
    assert_eq!(w.rollout("web-r").state, pb::RolloutState::Active as i32);
}

/// ListReleases names the release keys whose signatures verify.
#[test]
fn releases_name_their_signers() {
    let (_serial, w) = world();
    let answer = grpc_web(
        &w,
        "ListReleases",
        &pb::ListReleasesRequest {},
        Some(&w.viewer_token),
        &[],
    );
    assert_eq!(answer.grpc_status, Some(0), "{}", answer.grpc_message);
    let list = pb::ListReleasesResponse::decode(&answer.messages[0][..]).unwrap();
    assert_eq!(list.releases.len(), 2);
    for r in &list.releases {
        assert_eq!(
            r.signer_key_ids,
            vec![w.release_key_id.clone()],
            "{}",
            r.release_id
        );
    }
}

/// Same origin only: another origin, another site, or not gRPC-web is
/// turned away before the admin service, with no CORS header; the page's
/// own origin passes.
#[test]
fn only_the_dashboards_own_origin_may_call() {
    let (_serial, w) = world();
    let own_origin = w.web_url.trim_end_matches('/').to_owned();
    let host = own_origin.trim_start_matches("http://").to_owned();
    let req = pb::GetServerInfoRequest {};
    let ok = grpc_web(
        &w,
        "GetServerInfo",
        &req,
        Some(&w.viewer_token),
        &[("origin", &own_origin), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(
        (ok.http, ok.grpc_status),
        (200, Some(0)),
        "{}",
        ok.grpc_message
    );

    let foreign = grpc_web(
        &w,
        "GetServerInfo",
        &req,
        Some(&w.viewer_token),
        &[("origin", "http://evil.example")],
    );
    assert_eq!(foreign.http, 403);
    assert!(foreign.messages.is_empty() && foreign.grpc_status.is_none());
    assert_security_headers(&foreign.headers, "a refusal");
    let other_port = format!(
        "http://{}",
        host.replace(&format!(":{}", host.rsplit(':').next().unwrap()), ":1")
    );
    let foreign = grpc_web(
        &w,
        "GetServerInfo",
        &req,
        Some(&w.viewer_token),
        &[("origin", &other_port)],
    );
    assert_eq!(foreign.http, 403, "another port is another origin");
    let cross = grpc_web(
        &w,
        "GetServerInfo",
        &req,
        Some(&w.viewer_token),
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(cross.http, 403);

    // Native gRPC belongs on the gRPC port; a preflight gets no CORS grant.
    let mut native = agent()
        .post(&format!("{}aloft.v1.AdminService/GetServerInfo", w.web_url))
        .header("content-type", "application/grpc")
        .send(&[0u8, 0, 0, 0, 0][..])
        .unwrap();
    assert_eq!(native.status().as_u16(), 415);
    let _ = native.body_mut().read_to_vec();
    let mut preflight = agent()
        .options(&format!("{}aloft.v1.AdminService/GetServerInfo", w.web_url))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .call()
        .unwrap();
    assert!(preflight.status().as_u16() >= 400, "{}", preflight.status());
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let _ = preflight.body_mut().read_to_vec();
}
