//! The HTTP surface: every router merged in one place, the tower stack, our JSON extractor, the
//! OpenAPI document and the `/docs` page.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use axum::{Json, Router};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::config::Environment;
use crate::error::{ApiError, InternalCause, PROBLEM_JSON, Problem, problem_for_status};
use crate::state::AppState;
use crate::{auth, chat, documents, health, kb, marketplace, notifications, ratelimit, scans};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cloud Optimizer API",
        description = "The HTTP API of Cloud Optimizer, a security advisor for AWS that runs in your own account. \
What exists today: API keys (`/keys`), the compliance knowledge base (frameworks, controls, checks, AWS services, \
full-text search under `/kb`), the security Q&A chat (`/chat`, streamed as Server-Sent Events), AWS account scans \
(`/scans`), architecture-document and template analysis (`/documents`), the license, trial and usage ledger \
(`/license`, `/usage`), a small billable action (`/billable-actions`), real-time notifications (`/notifications`: the event feed, one-time tickets and the \
WebSocket `/notifications/ws`) and health probes.

* **Authentication**: every `/api/v1` route needs `Authorization: Bearer <key>`, except `POST /session`, where \
the web console exchanges a key for a session cookie (`co_session`, 12 hours); requests carrying that cookie \
instead of a key must send the session's `csrf_token` as `X-CSRF-Token` on POST, PUT, PATCH and DELETE.
* **Lists** answer `{items, total, limit, offset, next}`; `next` is the path and query of the next page, `null` on the last. \
`limit` and `offset` out of their documented ranges are a 400.
* **Timestamps** are RFC 3339 in UTC with milliseconds: `2026-12-01T06:00:00.000Z`.
* **Errors** are `application/problem+json` with a stable `code`; a body that is not JSON is a 400 `malformed_json`, \
well-formed JSON that breaks a rule a 422.
* **Rate limits**: `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on every authenticated answer; \
a 429 adds `Retry-After`.",
        license(name = "Proprietary (AWS Marketplace subscription terms)", identifier = "LicenseRef-Proprietary"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness, readiness and component health (no key needed)"),
        (name = "keys", description = "API keys and console sessions"),
        (name = "knowledge base", description = "Compliance frameworks, controls, checks, AWS services and search"),
        (name = "usage", description = "License, trial and billable usage"),
        (name = "notifications", description = "Real-time events over WebSocket, their replay, one-time tickets"),
        (name = "chat", description = "Security Q&A: questions answered from the knowledge base with citations, streamed as Server-Sent Events; conversations"),
        (name = "scans", description = "AWS account security scans, their findings, compliance per framework and exports"),
        (name = "documents", description = "Architecture documents and templates analysed against every framework: findings and reports"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`co_…`) from `cloud-optimizer keys create` or `POST /api/v1/keys`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "console_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                auth::session::COOKIE,
                "The web console's session cookie, set by `POST /api/v1/session` in exchange for \
                 an API key. With it, POST, PUT, PATCH and DELETE also need the `X-CSRF-Token` \
                 header that sign-in returned. A bearer key wins when both are sent.",
            ))),
        );
    }
}

/// What every operation shares but utoipa's per-handler attributes would repeat: the error
/// answers (problem+json), the rate-limit headers, the security requirement. Applied to the
/// generated document once, so a new route gets them without writing them.
fn complete_openapi(doc: &utoipa::openapi::OpenApi) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut doc = serde_json::to_value(doc).expect("OpenAPI document serialises");
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    let rate_headers = json!({
        "RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
        "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
        "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"},
    });
    let header = |description: &str| {
        json!({"description": description, "required": true,
               "schema": {"type": "integer", "minimum": 0}})
    };
    let components = doc["components"].as_object_mut().expect("components");
    components.insert(
        "headers".into(),
        json!({
            "RateLimit-Limit": header("requests allowed per minute"),
            "RateLimit-Remaining": header("requests left in the current window"),
            "RateLimit-Reset": header("seconds until the budget is whole again"),
            "Retry-After": header("seconds to wait before retrying"),
        }),
    );
    let mut too_many = problem(
        "rate limit exceeded (`rate_limited`): per API key, or per client address before authentication",
    );
    too_many["headers"] = rate_headers.clone();
    too_many["headers"]["Retry-After"] = json!({"$ref": "#/components/headers/Retry-After"});
    let mut unauthorized = problem(
        "no, malformed, unknown or revoked API key (`missing_api_key`, `invalid_authorization_header`, `invalid_api_key`, `api_key_revoked`)",
    );
    unauthorized["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}, "required": true}});
    components.insert(
        "responses".into(),
        json!({
            "BadRequest": problem("a parameter or the URL is invalid (`invalid_query`, `invalid_limit`, `invalid_offset`, `invalid_character`, `malformed_json`, …)"),
            "Unauthorized": unauthorized,
            "Forbidden": problem("the key lacks the admin scope (`insufficient_scope`)"),
            "NotFound": problem("no such resource (`not_found`, …)"),
            "PayloadTooLarge": problem("the body is larger than `MAX_BODY_BYTES` (`payload_too_large`)"),
            "UnsupportedMediaType": problem("the body is not sent as `application/json` (`unsupported_media_type`)"),
            "UnprocessableContent": problem("well-formed JSON that breaks a rule of the schema (`invalid_body`, `invalid_name`, …), or an `Idempotency-Key` reused for another request (`idempotency_key_reused`)"),
            "TooManyRequests": too_many,
            "Error": problem("any other error, as problem+json with its `code` (405, 408, 414, 500, 503, …)"),
        }),
    );
    let response_ref = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        for (_, operation) in item.as_object_mut().expect("path item").iter_mut() {
            let has_body = operation.get("requestBody").is_some();
            let responses = operation["responses"].as_object_mut().expect("responses");
            for (status, response) in responses.iter_mut() {
                // OpenAPI requires a description on every response; utoipa omits an empty one.
                if response.get("$ref").is_none() && response.get("description").is_none() {
                    let reason = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("response");
                    response["description"] = json!(reason);
                }
                // utoipa labels every body JSON; the server sends errors as problem+json.
                if let Some(content) = response.get_mut("content").and_then(Value::as_object_mut)
                    && let Some(json) = content.remove("application/json")
                {
                    let is_problem = json["schema"]["$ref"] == "#/components/schemas/Problem";
                    content.insert(
                        if is_problem {
                            PROBLEM_JSON
                        } else {
                            "application/json"
                        }
                        .into(),
                        json,
                    );
                }
                if api && status.starts_with('2') {
                    let headers = response
                        .as_object_mut()
                        .expect("response")
                        .entry("headers")
                        .or_insert_with(|| json!({}));
                    for (name, value) in rate_headers.as_object().expect("headers") {
                        headers[name] = value.clone();
                    }
                }
            }
            let mut add = |status: &str, name: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| response_ref(name));
            };
            add("400", "BadRequest");
            if api {
                add("401", "Unauthorized");
                add("403", "Forbidden");
                add("404", "NotFound");
                add("429", "TooManyRequests");
            }
            if has_body {
                add("413", "PayloadTooLarge");
                add("415", "UnsupportedMediaType");
                add("422", "UnprocessableContent");
            }
            add("default", "Error");
            // Either credential: a bearer key, or the console's session cookie (the auth layer
            // takes both on every route that asks for a key).
            let keyed = operation
                .get("security")
                .is_none_or(|s| *s == json!([{"api_key": []}]));
            if api && keyed {
                operation["security"] = json!([{"api_key": []}, {"console_session": []}]);
            }
        }
    }
    doc
}

/// Every `/api/v1` router, before the auth layer: `tests/` walks this list to prove that each
/// route asks for a key.
pub fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(chat::router())
        .merge(documents::router())
        .merge(kb::router())
        .merge(marketplace::router())
        .merge(notifications::router())
        .merge(scans::router())
}

/// Authentication of `/api/v1`: API keys (`auth`), or, on the notification socket only, a
/// one-time ticket (`notifications`), since browsers cannot set headers on a WebSocket. Both
/// capabilities stay unaware of each other; this is where they meet.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // Inside `nest("/api/v1")` the path arrives without its prefix.
    let path = request.uri().path();
    let ticket = (matches!(path, "/notifications/ws" | "/api/v1/notifications/ws")
        && !request.headers().contains_key(header::AUTHORIZATION))
    .then(|| {
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .find(|(name, _)| name == "ticket")
            .map(|(_, value)| value.into_owned())
    })
    .flatten();
    if let Some(ticket) = ticket {
        let now = state.notifications.clock.now();
        return match notifications::store::redeem_ticket(&state.db, &ticket, now).await {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                next.run(request).await
            }
            Err(err) => err.into_response(),
        };
    }
    auth::require_api_key(axum::extract::State(state.auth.clone()), request, next).await
}

/// The whole application: routes, OpenAPI document and middleware.
pub fn app(state: AppState) -> Router {
    let protected =
        api_v1().route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/api/v1", protected.merge(auth::sign_in_router()))
        .split_for_parts();
    let openapi_json = serde_json::to_string_pretty(&complete_openapi(&openapi))
        .expect("OpenAPI document serialises");

    let routes = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi_json.clone(),
                )
            }),
        )
        .merge(crate::console::router())
        .merge(crate::docs::router())
        .fallback(|| async { ApiError::problem(problem_for_status(StatusCode::NOT_FOUND)) });

    with_middleware(routes, state)
}

/// `REQUEST_TIMEOUT_SECONDS` (408), except for chat questions: an answer (a model writing a long
/// one, or a JSON client waiting for it) is bounded by `CHAT_TIMEOUT_SECONDS` instead, and ends
/// with its own error event or problem. A document upload gets at least five minutes: 20 MiB over
/// a slow office uplink takes longer than an API call should.
async fn request_timeout(after: std::time::Duration, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if request.method() == Method::POST
        && (path == "/api/v1/chat"
            || (path.starts_with("/api/v1/chat/conversations/") && path.ends_with("/messages")))
    {
        return next.run(request).await;
    }
    let after = if request.method() == Method::POST && path == "/api/v1/documents" {
        after.max(std::time::Duration::from_secs(300))
    } else {
        after
    };
    match tokio::time::timeout(after, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// `MAX_BODY_BYTES` (413), except for document uploads: their file may be `DOCUMENT_MAX_BYTES`
/// (the handler answers a larger file with its own 413 `document_too_large`), plus room for the
/// form's other parts.
async fn body_limit(default: usize, documents: usize, request: Request, next: Next) -> Response {
    let limit = if request.method() == Method::POST && request.uri().path() == "/api/v1/documents" {
        documents.saturating_add(64 * 1024).max(default)
    } else {
        default
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let request =
        request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
    next.run(request).await
}

/// The tower stack, outermost first:
/// 1. request id: an unusable incoming id is replaced, then one is set before anything logs, so
///    every line (and every error body) carries it;
/// 2. sensitive headers: `Authorization` is redacted before the trace layer can print it;
/// 3. trace span with the matched route; 4. security headers, CORS, compression;
/// 5. problem+json normaliser and metrics, inside compression (the bodies it rebuilds are then
///    compressed like any other) and outside everything that can refuse a request, so it sees
///    the final status of timeouts and body-limit rejections too;
/// 6. URI checks (length, NUL); 7. timeout; 8. body limit; 9. per-IP rate limit (before auth,
///    so key guessing is throttled). Auth itself is a route layer on `/api/v1`.
fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let config = state.config.clone();
    let hsts = (config.environment == Environment::Production)
        .then(|| HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    let cors = cors_layer(&config.cors_allowed_origins);
    let max_uri_bytes = config.max_uri_bytes;
    let request_timeout_after = config.request_timeout;

    let ip_limited = routes.route_layer(middleware::from_fn(record_route)).layer(
        middleware::from_fn_with_state(state.ip_limit.clone(), ratelimit::limit_by_ip),
    );

    // `Router::layer` wraps everything added before it, so the calls run innermost first.
    let (max_body_bytes, max_document_bytes) = (config.max_body_bytes, config.documents.max_bytes);
    ip_limited
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            body_limit(max_body_bytes, max_document_bytes, request, next)
        }))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            request_timeout(request_timeout_after, request, next)
        }))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            check_uri(max_uri_bytes, request, next)
        }))
        .layer(middleware::from_fn(problem_and_metrics))
        .layer(CompressionLayer::new())
        .layer(tower::util::option_layer(cors))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            hsts,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_request(())
                .on_response(())
                .on_failure(()),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unusable_request_id))
        .with_state(state)
}

/// A client's `X-Request-Id` is echoed and logged, so it must be something a log line, a JSON
/// body and a header can all carry: 1-128 visible ASCII characters. Anything else is dropped and
/// a fresh id generated, rather than failing the request or logging an empty id.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = |v: &HeaderValue| {
        let bytes = v.as_bytes();
        (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
    };
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|v| !usable(v))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Refuses, before routing, URLs longer than `MAX_URI_BYTES` (414) and a NUL character in the
/// path or query, raw or percent-encoded (400): PostgreSQL cannot store a NUL, and no
/// identifier or search needs one, so every route is covered here at once.
async fn check_uri(max_uri_bytes: usize, request: Request, next: Next) -> Response {
    let uri = request.uri();
    let length = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if length > max_uri_bytes {
        return ApiError::problem(
            Problem::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!(
                    "the URL is {length} bytes, more than the {max_uri_bytes} the server accepts; \
                     send large inputs in a POST body"
                ),
            )
            .with("max_uri_bytes", max_uri_bytes),
        )
        .into_response();
    }
    let has_nul = |part: &str| {
        part.as_bytes().contains(&0)
            || part
                .as_bytes()
                .windows(3)
                .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::invalid(
            "invalid_character",
            "the URL contains a NUL character (%00), which no path or parameter accepts",
        )
        .into_response();
    }
    next.run(request).await
}

/// `None` without configured origins: no CORS headers, and no per-request work for them.
fn static_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_label(status: StatusCode) -> metrics::SharedString {
    match status.as_u16() {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        429 => "429".into(),
        other => other.to_string().into(),
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            REQUEST_ID,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([REQUEST_ID, HeaderName::from_static("retry-after")])
        .max_age(Duration::from_secs(600));
    Some(layer)
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        otel.name = %request.method(),
        otel.kind = "server",
        method = %request.method(),
        route = tracing::field::Empty,
        request_id = %request_id,
        { crate::telemetry::HTTP_STATUS_FIELD } = tracing::field::Empty,
    )
}

/// The matched route template, known only after routing: recorded on the request span and
/// handed outwards on the response for the metrics labels (never the raw path).
#[derive(Clone)]
struct RouteLabel(String);

async fn record_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched.map(|m| m.as_str().to_owned());
    if let Some(route) = &route {
        let span = tracing::Span::current();
        span.record("route", route.as_str());
        let name = format!("{} {route}", request.method());
        span.record("otel.name", name.as_str());
        // Once the OpenTelemetry span has started, only `update_name` renames it.
        opentelemetry::trace::TraceContextExt::span(
            &tracing_opentelemetry::OpenTelemetrySpanExt::context(&span),
        )
        .update_name(name);
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Turns every error response into problem+json with the request id, logs each request once
/// (internal errors with their cause chain) and records the HTTP metrics by matched route.
async fn problem_and_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    let status = response.status();
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone());

    // Health probes answer 503 with their own JSON body, which load balancers and operators read.
    let own_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !own_json {
        let mut problem = response
            .extensions()
            .get::<Problem>()
            .cloned()
            .unwrap_or_else(|| problem_for_status(status));
        problem.request_id = request_id.clone();
        if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
            tracing::error!(error = ?cause, "request failed");
        }
        let headers = std::mem::take(response.headers_mut());
        let mut rebuilt = (status, Json(problem)).into_response();
        for (name, value) in headers.iter() {
            // The body is new: its type, length and encoding are no longer those of the old one.
            if name != header::CONTENT_TYPE
                && name != header::CONTENT_LENGTH
                && name != header::CONTENT_ENCODING
            {
                rebuilt.headers_mut().insert(name, value.clone());
            }
        }
        rebuilt
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response = rebuilt;
    }

    let elapsed = started.elapsed();
    let route_label = route.unwrap_or_else(|| "unmatched".into());
    // Static strings where possible: the labels are built for every request.
    let labels = [
        metrics::Label::new("method", static_method(&method)),
        metrics::Label::new("route", route_label.clone()),
        metrics::Label::new("status", status_label(status)),
    ];
    metrics::counter!("http_requests_total", labels.iter()).increment(1);
    metrics::histogram!("http_request_duration_seconds", labels.iter())
        .record(elapsed.as_secs_f64());
    tracing::Span::current().record(crate::telemetry::HTTP_STATUS_FIELD, status.as_u16());
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), duration_ms, "request completed");
    } else if !route_label.starts_with("/health") {
        tracing::info!(status = status.as_u16(), duration_ms, "request completed");
    } else {
        tracing::debug!(status = status.as_u16(), duration_ms, "request completed");
    }
    response
}

/// Hyper answers some requests itself, before any service runs, with an empty body: a URI over
/// 64 KiB (414, a hard limit of hyper and `http::Uri`), a head larger than its buffer (431) and
/// a request line or header HTTP does not allow, e.g. a control byte (400). None of these can be
/// configured to reach our stack, so the listener wraps each connection in [`ProblemIo`], which
/// replaces those automatic answers with the problem+json every other error has.
pub struct ProblemListener<L>(pub L);

impl<L: Listener> Listener for ProblemListener<L> {
    type Io = ProblemIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (
            ProblemIo {
                inner: io,
                replacement: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose writes pass through untouched, except hyper's automatic error answers.
pub struct ProblemIo<T> {
    inner: T,
    /// The problem+json answer being written in place of hyper's, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> ProblemIo<T> {
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// The status of a response head that hyper wrote on its own. Every response of our stack
/// carries `x-request-id` (the outermost layer sets it), hyper's automatic ones never do, and
/// after one hyper closes the connection, so nothing of ours can follow it.
fn automatic_error_status(buf: &[u8]) -> Option<StatusCode> {
    let status = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = match status.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let ours = buf[..head_end]
        .windows(15)
        .any(|w| w.eq_ignore_ascii_case(b"\r\nx-request-id:"));
    (!ours).then_some(status)
}

fn automatic_error_replacement(status: StatusCode) -> Vec<u8> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut problem = problem_for_status(status);
    if status == StatusCode::BAD_REQUEST {
        problem = Problem::new(
            status,
            "malformed_request",
            "the request is not valid HTTP: the request line or a header has a character HTTP \
             does not allow (such as a control character)",
        );
    }
    problem.request_id = Some(request_id.clone());
    tracing::warn!(
        status = status.as_u16(),
        code = %problem.code,
        request_id = %request_id,
        "request refused before routing"
    );
    metrics::counter!(
        "http_requests_total",
        "method" => "OTHER",
        "route" => "unmatched",
        "status" => status_label(status)
    )
    .increment(1);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    /// Writes the pending replacement; `Ready(Ok)` once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some((bytes, written)) = &mut self.replacement else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_checked(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        total: usize,
    ) -> Option<Poll<std::io::Result<usize>>> {
        if self.replacement.is_none() {
            let status = automatic_error_status(first)?;
            self.replacement = Some((automatic_error_replacement(status), 0));
        } else if self
            .replacement
            .as_ref()
            .is_some_and(|(bytes, written)| *written >= bytes.len())
        {
            return None;
        }
        // Hyper's own bytes are reported written only once ours are all out.
        Some(self.poll_replacement(cx).map_ok(|()| total))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(done) = self.poll_write_checked(cx, buf, buf.len()) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(done) = self.poll_write_checked(cx, first, total) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_own_error_heads_are_recognised() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            automatic_error_status(hyper),
            Some(StatusCode::URI_TOO_LONG)
        );
        let ours = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 9\r\nx-request-id: a\r\n\r\n";
        assert_eq!(automatic_error_status(ours), None);
        assert_eq!(automatic_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(automatic_error_status(b"{\"HTTP/1.1 400 \"}"), None);
    }
}
