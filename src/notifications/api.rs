//! `/api/v1/notifications…` and `/api/v1/admin/notifications/test`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRef, OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::NotificationsState;
use super::hub::{WireEvent, format_ts};
use super::store;
use super::ws::{self, Filter};
use crate::error::{ApiError, Problem};
use crate::web::{Admin, ApiJson, Auth, Page};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    NotificationsState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(create_ticket))
        .routes(routes!(connect))
        .routes(routes!(publish_test))
}

/// Largest page of `GET /notifications`.
const MAX_LIMIT: i64 = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Events after this id (the last one you received); 0 or absent: every retained event.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Comma-separated types, exact (`kb.updated`) or families (`scan.*`); absent: all.
    types: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Events after `since` to skip (the list envelope's paging; `next` sets it).
    #[param(minimum = 0, maximum = 1000000)]
    offset: Option<i64>,
}

fn parse_types(types: Option<&str>) -> Result<Filter, ApiError> {
    Filter::parse(types.unwrap_or_default().split(','))
        .map_err(|why| ApiError::invalid("invalid_types", why))
}

/// Stored events after `since`, oldest first: what a WebSocket with `?since=` replays, paged
/// like every list (`limit`, `offset`, `next`).
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(ListParams),
    responses((status = 200, body = Page<WireEvent>), (status = 400, body = Problem),
        (status = 410, description = "`since` is older than the retention (`since_expired`)", body = Problem)),
    security(("api_key" = [])))]
async fn list(
    State(state): State<NotificationsState>,
    Auth(_caller): Auth,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<WireEvent>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let filter = parse_types(params.types.as_deref())?;
    let (limit, offset) = crate::web::page_bounds(params.limit, params.offset, 100, MAX_LIMIT)?;
    let since = params.since.unwrap_or(0);
    store::check_since(&state.db, since).await?;
    let patterns = filter.like_patterns();
    let rows = store::after_matching(&state.db, since, &patterns, limit, offset).await?;
    let total = store::count_after_matching(&state.db, since, &patterns).await?;
    let next = crate::web::next_link(&uri, limit, offset, total);
    let items = rows
        .into_iter()
        .map(|r| WireEvent {
            id: r.id,
            kind: r.kind,
            ts: format_ts(r.ts),
            data: r.data,
        })
        .collect();
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` to `/api/v1/notifications/ws`; works once, on any replica.
    pub ticket: String,
    #[serde(with = "crate::web::timestamp")]
    pub expires_at: DateTime<Utc>,
}

/// A one-time WebSocket ticket for the calling key (browsers cannot set `Authorization` on a
/// WebSocket). Expires after 30 seconds.
#[utoipa::path(post, path = "/notifications/ticket", tag = "notifications",
    responses((status = 201, body = Ticket)), security(("api_key" = [])))]
async fn create_ticket(
    State(state): State<NotificationsState>,
    Auth(caller): Auth,
) -> Result<(StatusCode, Json<Ticket>), ApiError> {
    let (ticket, expires_at) = store::create_ticket(&state.db, &caller, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(Ticket { ticket, expires_at })))
}

/// Publish a `test` event (admin) whose `data` is the posted JSON object: it reaches every
/// connected client like any other event.
#[utoipa::path(post, path = "/admin/notifications/test", tag = "notifications",
    request_body(content = Object, description = "any JSON object: the event's `data`"),
    responses((status = 201, body = WireEvent), (status = 400, body = Problem)),
    security(("api_key" = [])))]
async fn publish_test(
    State(state): State<NotificationsState>,
    Admin(_admin): Admin,
    ApiJson(data): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<WireEvent>), ApiError> {
    if !data.is_object() {
        return Err(ApiError::invalid(
            "invalid_body",
            "send a JSON object: it becomes the event's data",
        ));
    }
    let id = crate::events::publish_committed(&state.db, "test", data).await?;
    let row = store::after(&state.db, id - 1, 1)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.id == id)
        .ok_or_else(|| anyhow::anyhow!("event {id} vanished after commit"))?;
    Ok((
        StatusCode::CREATED,
        Json(WireEvent {
            id,
            kind: row.kind,
            ts: format_ts(row.ts),
            data: row.data,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectParams {
    /// Replay every stored event after this id first, then live events.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Comma-separated types (`kb.updated,scan.*`); absent: all. A `{"subscribe": [...]}`
    /// message changes it later.
    types: Option<String>,
    /// A one-time ticket from `POST /notifications/ticket`, instead of `Authorization`.
    #[allow(dead_code)]
    ticket: Option<String>,
}

/// True when a browser page from `origin` may open a socket: no `Origin` (not a browser), an
/// origin listed in `CORS_ALLOWED_ORIGINS` (or `*` there), or the server's own origin.
fn origin_allowed(state: &NotificationsState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The WebSocket of live events. Authenticate with `Authorization: Bearer <key>` or
/// `?ticket=`; every refusal (401, 403 origin, 400, 503 at the connection limit) is
/// problem+json before the upgrade. Each message is an event `{"id", "type", "ts", "data"}`.
#[utoipa::path(get, path = "/notifications/ws", tag = "notifications", params(ConnectParams),
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 410, description = "`since` is older than the retention (`since_expired`)", body = Problem),
        (status = 503, body = Problem)),
    security(("api_key" = [])))]
async fn connect(
    State(state): State<NotificationsState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    params: Result<Query<ConnectParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(ApiError::problem(Problem::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open the notification socket; add it to CORS_ALLOWED_ORIGINS",
        )));
    }
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let filter = parse_types(params.types.as_deref())?;
    if let Some(since) = params.since {
        store::check_since(&state.db, since).await?;
    }
    let upgrade = upgrade.map_err(|e| {
        ApiError::invalid(
            "websocket_upgrade_required",
            format!("open this URL as a WebSocket ({})", e.body_text()),
        )
    })?;
    let Some(slot) = state.hub.try_open(caller.key_id) else {
        let mut response = ApiError::problem(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "this instance has as many notification sockets as it accepts; retry shortly (another instance may take you)",
        ))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(response);
    };
    tracing::debug!(key_id = %caller.key_id, since = ?params.since, "notification socket opening");
    let max_message = state.config.max_message_bytes;
    let token = state.sockets.token();
    let session = ws::Session {
        state,
        since: params.since,
        filter,
        slot,
    };
    Ok(upgrade
        // axum's defaults (128 KiB each) would dominate the memory of idle sockets.
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_failed_upgrade(|err| tracing::debug!(error = %err, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            ws::serve(socket, session).await;
            drop(token);
        }))
}
