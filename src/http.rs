//! The HTTP surface: every router merged in one place, the tower stack, our JSON extractor, the
//! OpenAPI document and the `/docs` page.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::config::Environment;
use crate::error::{ApiError, InternalCause, PROBLEM_JSON, Problem, problem_for_status};
use crate::state::AppState;
use crate::{auth, health, kb, marketplace, ratelimit};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cloud Optimizer API",
        description = "Security advisor for AWS: compliance knowledge base, security Q&A, document analysis, account scans and usage. Every error is application/problem+json with a stable `code`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness, readiness and component health (no key needed)"),
        (name = "keys", description = "API keys"),
        (name = "knowledge base", description = "Compliance frameworks, controls, checks, AWS services and search"),
        (name = "usage", description = "License, trial and billable usage"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every `/api/v1` router, before the auth layer: `tests/` walks this list to prove that each
/// route asks for a key.
pub fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(kb::router())
        .merge(marketplace::router())
}

/// The whole application: routes, OpenAPI document and middleware.
pub fn app(state: AppState) -> Router {
    let protected = api_v1().route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_api_key,
    ));
    let (routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/api/v1", protected)
        .split_for_parts();
    let openapi_json = openapi
        .to_pretty_json()
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
        .merge(crate::docs::router())
        .fallback(|| async { ApiError::problem(problem_for_status(StatusCode::NOT_FOUND)) });

    with_middleware(routes, state)
}

/// The tower stack, outermost first:
/// 1. request id: set before anything logs, so every line (and every error body) carries it;
/// 2. sensitive headers: `Authorization` is redacted before the trace layer can print it;
/// 3. trace span with the matched route; 4. problem+json normaliser and metrics, which must see
///    the final status of everything below, including timeouts and body-limit rejections;
/// 5. security headers, CORS, compression; 6. timeout; 7. body limit; 8. per-IP rate limit
///    (before auth, so key guessing is throttled). Auth itself is a route layer on `/api/v1`.
fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let config = state.config.clone();
    let hsts = (config.environment == Environment::Production)
        .then(|| HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    let cors = cors_layer(&config.cors_allowed_origins);

    let ip_limited = routes.route_layer(middleware::from_fn(record_route)).layer(
        middleware::from_fn_with_state(state.ip_limit.clone(), ratelimit::limit_by_ip),
    );

    // `Router::layer` wraps everything added before it, so the calls run innermost first.
    ip_limited
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
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
        .layer(middleware::from_fn(problem_and_metrics))
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
        .with_state(state)
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
        status = tracing::field::Empty,
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
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
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
    tracing::Span::current().record("status", status.as_u16());
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
