//! The web console: one HTML document at `/` and its scripts and styles under `/console/`, all
//! compiled into the binary (nothing is read from disk at run time, so a read-only root
//! filesystem is fine). The console is a client of the public API on the same origin: it signs
//! in with an API key through `POST /api/v1/session` and then rides on the session cookie, so
//! every page shows exactly what an integrator's client would get. Why plain JavaScript and no
//! build step: see "The web console" in `docs/ARCHITECTURE.md`.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
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

/// Every file of `assets/console/`: its name, its bytes and their gzip (made by `build.rs`).
pub const FILES: &[(&str, &[u8], &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

struct Asset {
    name: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
    etag: HeaderValue,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, body, gzip)| Asset {
            name,
            body,
            gzip,
            etag: etag(body),
        })
        .collect()
});

/// Weak: the plain and the gzip answer are the same file, and either revalidates the other.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::try_from(format!("W/\"{}\"", hex::encode(&digest[..12]))).expect("hex is ASCII")
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not refused with `q=0`).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
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
fn serve(
    name: &str,
    body: Bytes,
    gzip: Option<&'static [u8]>,
    etag: HeaderValue,
    request: &HeaderMap,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
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
    // Already compressed: the compression layer passes an encoded body through untouched.
    if let Some(gzip) = gzip.filter(|_| accepts_gzip(request)) {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return (headers, gzip).into_response();
    }
    (headers, body).into_response()
}

fn file(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("CONSOLE_ASSETS_DIR") {
        // Front-end work on a debug build: edit a file, reload the page, no rebuild. Release
        // builds have no such switch.
        let known = FILES.iter().any(|(n, _, _)| *n == name)
            || (name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !name.starts_with('.'));
        if known && let Ok(body) = std::fs::read(std::path::Path::new(&dir).join(name)) {
            let tag = etag(&body);
            return Ok(serve(name, Bytes::from(body), None, tag, request));
        }
    }
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no console file {name:?}")))?;
    Ok(serve(
        name,
        Bytes::from_static(asset.body),
        Some(asset.gzip),
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

    /// The weight budget: everything the console loads, as sent compressed, under 300 KB.
    #[test]
    fn the_whole_console_weighs_under_300_kb_compressed() {
        let total: usize = FILES.iter().map(|(_, _, gzip)| gzip.len()).sum();
        assert!(total < 300 * 1024, "{total} bytes compressed");
    }

    #[test]
    fn the_compressed_copy_is_the_file() {
        use std::io::Read;
        for (name, body, gzip) in FILES {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(*gzip)
                .read_to_end(&mut plain)
                .expect("valid gzip");
            assert_eq!(&plain[..], *body, "{name}");
        }
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0, br"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_module_is_preloaded_by_the_document() {
        let index = FILES
            .iter()
            .find(|(name, _, _)| *name == "index.html")
            .map(|(_, body, _)| String::from_utf8_lossy(body).into_owned())
            .expect("index.html");
        for (name, _, _) in FILES {
            if name.ends_with(".js") && *name != "app.js" {
                assert!(
                    index.contains(&format!(
                        r#"<link rel="modulepreload" href="/console/{name}">"#
                    )),
                    "index.html must preload {name}: without it the browser finds it only \
                     after the module importing it has loaded"
                );
            }
        }
    }

    #[test]
    fn every_console_file_has_a_content_type_and_the_document_is_there() {
        assert!(FILES.iter().any(|(name, _, _)| *name == "index.html"));
        for (name, _, _) in FILES {
            assert_ne!(
                content_type(name),
                "application/octet-stream",
                "{name} needs a content type"
            );
        }
    }
}
