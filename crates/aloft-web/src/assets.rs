//! The dashboard's files, compiled into the binary from `assets/`.
//!
//! Plain ES modules, one style sheet and an icon: what is in `assets/` is
//! what the browser runs, so there is no build step and nothing generated
//! to drift. A test checks that [`ASSETS`] lists exactly the files of the
//! directory and that every module import resolves to one of them.

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use sha2::{Digest as _, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `assets/` (and under `/` in URLs).
    pub path: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, bytes: include_bytes!(concat!("../assets/", $path)) }),*]
    };
}

/// Every file the dashboard serves.
pub static ASSETS: &[Asset] = assets![
    "index.html",
    "app.css",
    "favicon.svg",
    "js/app.js",
    "js/api.js",
    "js/charts.js",
    "js/confirm.js",
    "js/dom.js",
    "js/fleet.js",
    "js/format.js",
    "js/grpc-web.js",
    "js/live.js",
    "js/messages.js",
    "js/proto.js",
    "js/session.js",
    "js/pages/device.js",
    "js/pages/devices.js",
    "js/pages/events.js",
    "js/pages/fleet.js",
    "js/pages/releases.js",
    "js/pages/rollout.js",
    "js/pages/rollouts.js",
    "js/pages/signin.js",
];

/// Strong validators, one per asset (SHA-256 of the bytes, quoted).
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.bytes);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

impl Asset {
    /// The `content-type` for its extension.
    pub fn content_type(&self) -> &'static str {
        match self.path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            _ => "application/octet-stream",
        }
    }
}

/// The asset a URL path names (`/` is `index.html`).
pub fn find(path: &str) -> Option<(usize, &'static Asset)> {
    let path = match path.strip_prefix('/')? {
        "" => "index.html",
        p => p,
    };
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

/// Serves an asset for GET and HEAD: `cache-control: no-cache` with an
/// ETag, so a browser revalidates and a new binary's files take effect at
/// once; `304` when the browser's copy is current; `404` for anything else.
pub async fn serve(request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only").into_response();
    }
    let Some((index, asset)) = find(request.uri().path()) else {
        return (
            StatusCode::NOT_FOUND,
            "not found: the dashboard starts at /",
        )
            .into_response();
    };
    let etag = &ETAGS[index];
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if request.method() == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(asset.bytes))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_list_is_the_directory() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = BTreeSet::new();
        files_under(&base, &base, &mut on_disk);
        let listed: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(
            listed, on_disk,
            "ASSETS in src/assets.rs must list exactly the files under assets/"
        );
    }

    /// Every `from './x.js'` / `import('./x.js')` in a module names an
    /// embedded file (a typo would be a 404 and a blank page).
    #[test]
    fn every_module_import_resolves() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
            for spec in text
                .split(['\'', '"'])
                .filter(|s| s.ends_with(".js") && (s.starts_with("./") || s.starts_with("../")))
            {
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS.iter().any(|a| a.path == target),
                    "{} imports {spec} ({target}), which is not an asset",
                    asset.path
                );
            }
        }
    }

    /// What the Content-Security-Policy forbids never appears in the
    /// sources: inline scripts, inline styles or handlers in the page, HTML
    /// strings or code strings in the modules.
    #[test]
    fn sources_need_nothing_the_policy_forbids() {
        let page = std::str::from_utf8(find("/").unwrap().1.bytes).unwrap();
        assert!(!page.contains("style="), "inline style in index.html");
        let handler = page.match_indices(" on").any(|(at, _)| {
            let rest = &page[at + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler in index.html");
        for script in page.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(tag.contains("src="), "inline <script> in index.html");
        }
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "localStorage",
                "document.cookie",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", asset.path);
            }
        }
    }

    #[test]
    fn paths_and_types() {
        assert_eq!(find("/").unwrap().1.path, "index.html");
        assert_eq!(
            find("/js/app.js").unwrap().1.content_type(),
            "text/javascript; charset=utf-8"
        );
        assert!(find("/../Cargo.toml").is_none());
        assert!(find("/js/").is_none());
        assert!(find("no-slash").is_none());
    }
}
