//! The web console: one HTML document at `/` and its scripts and styles under `/console/`, all
//! compiled into the binary (nothing is read from disk at run time, so a read-only root
//! filesystem is fine). The console is a client of the public API on the same origin: it signs
//! in with an API key through `POST /api/v1/session` and then rides on the session cookie, so
//! every page shows exactly what an integrator's client would get. Why plain JavaScript and no
//! build step: see "The web console" in `docs/ARCHITECTURE.md`.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// No inline script, no `eval`, no inline style attribute, nothing from another origin: a
/// script injected through some API string could neither run nor send data anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Every file of `assets/console/` with its name (listed by `build.rs`).
pub const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

struct Asset {
    name: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, body)| Asset {
            name,
            body,
            etag: etag(body),
        })
        .collect()
});

fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::try_from(format!("\"{}\"", hex::encode(&digest[..12]))).expect("hex is ASCII")
}

pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A file with its validator: `no-cache` makes the browser revalidate on every load (a 304
/// costs nothing), so a new binary's console is seen at once, never a mix of old and new files.
fn serve(name: &str, body: Vec<u8>, etag: HeaderValue, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if name.ends_with(".html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|sent| sent.as_bytes() == etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    (headers, body).into_response()
}

fn file(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("CONSOLE_ASSETS_DIR") {
        // Front-end work on a debug build: edit a file, reload the page, no rebuild. Release
        // builds have no such switch.
        let known = FILES.iter().any(|(n, _)| *n == name)
            || (name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !name.starts_with('.'));
        if known && let Ok(body) = std::fs::read(std::path::Path::new(&dir).join(name)) {
            let tag = etag(&body);
            return Ok(serve(name, body, tag, request));
        }
    }
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no console file {name:?}")))?;
    Ok(serve(
        name,
        asset.body.to_vec(),
        asset.etag.clone(),
        request,
    ))
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { file("index.html", &headers) }),
        )
        .route(
            "/console/{name}",
            get(
                |Path(name): Path<String>, headers: HeaderMap| async move { file(&name, &headers) },
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight budget: everything the console loads, gzip-compressed (as the
    /// compression layer sends it), under 300 KB.
    #[test]
    fn the_whole_console_weighs_under_300_kb_compressed() {
        use std::io::Write;
        let total: usize = FILES
            .iter()
            .map(|(_, body)| {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(body).expect("in memory");
                gz.finish().expect("in memory").len()
            })
            .sum();
        assert!(total < 300 * 1024, "{total} bytes compressed");
    }

    #[test]
    fn every_console_file_has_a_content_type_and_the_document_is_there() {
        assert!(FILES.iter().any(|(name, _)| *name == "index.html"));
        for (name, _) in FILES {
            assert_ne!(
                content_type(name),
                "application/octet-stream",
                "{name} needs a content type"
            );
        }
    }
}
