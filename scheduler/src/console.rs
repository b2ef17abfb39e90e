//! The web console: a single page of plain HTML, CSS and JavaScript compiled into the scheduler
//! binary and served on its own address beside gRPC, so an operator opens the scheduler's URL
//! in a browser and needs no second web server nor a build step.
//!
//! The pages talk to the REST API (`/api/v1`) with the user's API token, exactly as any other
//! client would; nothing here reads the state. Every answer carries a strict
//! Content-Security-Policy (scripts and styles from this origin only, nothing inline), so a
//! value shown on a page (a table name, a log line) can never run as script. Assets are
//! revalidated by their hash, so a new scheduler binary is picked up on the next load.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// What the console may load and connect to: its own origin, nothing inline, no frames.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("dag.js", JS),
    asset!("editor.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/groups.js", JS),
    asset!("pages/datasources.js", JS),
    asset!("pages/tasks.js", JS),
    asset!("pages/instances.js", JS),
    asset!("pages/instance.js", JS),
    asset!("pages/dag.js", JS),
];

/// Entity tags of the assets (a hash of their bytes), computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..16]))
            .collect()
    })
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        let mut r = (StatusCode::NOT_FOUND, "not found\n").into_response();
        security_headers(r.headers_mut());
        return r;
    };
    let etag = &etags()[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = r.headers_mut();
    // Names carry no hash, so the browser asks every time and gets 304 while unchanged.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    security_headers(h);
    r
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

/// `/` and `/console` lead to the console; `/console/…` serves its files.
pub fn routes() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_script_is_embedded() {
        let app = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.name == "app.js")
                .map(|a| a.body)
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        for a in ASSETS.iter().filter(|a| a.name.starts_with("pages/")) {
            let module = a.name.trim_start_matches("pages/");
            assert!(
                app.contains(&format!("./pages/{module}")),
                "{} is embedded but app.js does not import it",
                a.name
            );
        }
    }

    #[test]
    fn answers_carry_the_policy_and_revalidate() {
        let r = serve("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY),
            Some(&HeaderValue::from_static(CSP))
        );
        assert_eq!(
            h.get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(JS))
        );
        let tag = h.get(header::ETAG).cloned();
        let mut again = HeaderMap::new();
        if let Some(tag) = tag {
            again.insert(header::IF_NONE_MATCH, tag);
        }
        assert_eq!(serve("app.js", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
