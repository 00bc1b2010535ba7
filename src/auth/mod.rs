//! Authentication: API keys (and the bootstrap admin key), their cache, the middleware that
//! guards every `/api/v1` route, and the admin endpoints under `/api/v1/keys`.
//!
//! Validated keys are cached for a short time so a request costs no database round trip. Any
//! revocation fires a PostgreSQL `NOTIFY` (a trigger in the migration) that every replica's
//! listener turns into a cache flush; while that listener is not connected the cache is bypassed,
//! so revocation is immediate on every replica either way.

pub mod keys;
pub mod session;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::ratelimit::{self, RateLimiter};
use crate::web::{Admin, ApiJson, Auth, Page, Principal, next_link, page_bounds};
pub use keys::Scope;

/// What the authentication middleware and `/api/v1/keys` need.
#[derive(Clone)]
pub struct AuthState {
    pub db: PgPool,
    /// API key validation with its revocation-aware cache.
    pub authenticator: Arc<Authenticator>,
    /// Request budgets per API key (shared through Redis when configured).
    pub key_limiter: Arc<RateLimiter<Uuid>>,
}

const CACHE_TTL: Duration = Duration::from_secs(60);
/// Keys validated at once per replica; beyond that the least useful are evicted (TinyLFU).
const CACHE_ENTRIES: u64 = 10_000;
/// `last_used_at` is written at most this often per key: a write per request would cost more
/// than the request.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

pub struct Authenticator {
    pool: PgPool,
    bootstrap_hash: Option<[u8; 32]>,
    /// Validated keys by hash, each for `CACHE_TTL` at most.
    cache: moka::sync::Cache<[u8; 32], Principal>,
    /// True only while the revocation listener is connected.
    cache_enabled: AtomicBool,
    /// Bumped by every flush: a lookup that started before a revocation must not cache what it
    /// read.
    generation: AtomicU64,
    touch_tx: mpsc::Sender<Uuid>,
    touch_rx: std::sync::Mutex<Option<mpsc::Receiver<Uuid>>>,
}

impl Authenticator {
    pub fn new(pool: PgPool, bootstrap_key: Option<&secrecy::SecretString>) -> Self {
        let (touch_tx, touch_rx) = mpsc::channel(1024);
        Self {
            pool,
            bootstrap_hash: bootstrap_key.map(|k| keys::hash_key(k.expose_secret())),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(CACHE_TTL)
                .build(),
            cache_enabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            touch_tx,
            touch_rx: std::sync::Mutex::new(Some(touch_rx)),
        }
    }

    pub fn has_bootstrap_key(&self) -> bool {
        self.bootstrap_hash.is_some()
    }

    /// The principal of a key known without a database query: the bootstrap key, or a key
    /// validated within the cache's lifetime.
    fn known(&self, hash: &[u8; 32]) -> Option<Principal> {
        if let Some(bootstrap) = &self.bootstrap_hash
            && bool::from(bootstrap.ct_eq(hash))
        {
            return Some(Principal {
                key_id: Uuid::nil(),
                name: "bootstrap".into(),
                scope: Scope::Admin,
            });
        }
        if self.cache_enabled.load(Ordering::Acquire) {
            return self.cache.get(hash);
        }
        None
    }

    pub async fn authenticate(&self, presented: &str) -> Result<Principal, ApiError> {
        self.authenticate_hash(keys::hash_key(presented)).await
    }

    /// Like [`Self::authenticate`], for a key known only by its hash (a console session's).
    pub async fn authenticate_hash(&self, hash: [u8; 32]) -> Result<Principal, ApiError> {
        if let Some(principal) = self.known(&hash) {
            return Ok(principal);
        }
        self.look_up(hash).await
    }

    async fn look_up(&self, hash: [u8; 32]) -> Result<Principal, ApiError> {
        let generation = self.generation.load(Ordering::Acquire);
        match keys::lookup(&self.pool, &hash).await? {
            keys::Lookup::Active { id, name, scope } => {
                let principal = Principal {
                    key_id: id,
                    name,
                    scope,
                };
                if self.cache_enabled.load(Ordering::Acquire)
                    && self.generation.load(Ordering::Acquire) == generation
                {
                    self.cache.insert(hash, principal.clone());
                    // A flush between the check and the insert: what we read may be revoked.
                    if self.generation.load(Ordering::Acquire) != generation {
                        self.cache.invalidate(&hash);
                    }
                }
                // Best effort: a full queue only delays `last_used_at`.
                let _ = self.touch_tx.try_send(id);
                Ok(principal)
            }
            keys::Lookup::Revoked => Err(ApiError::Unauthorized(
                "api_key_revoked",
                "this API key has been revoked; create a new one".into(),
            )),
            keys::Lookup::Unknown => Err(ApiError::Unauthorized(
                "invalid_api_key",
                "the API key is not valid".into(),
            )),
        }
    }

    async fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Keeps the cache honest: flushes it on every `api_keys_changed` notification, and turns
    /// caching off whenever the listener is not connected.
    pub async fn listen_for_revocations(self: Arc<Self>, stop: CancellationToken) {
        let pool = self.pool.clone();
        crate::db::follow(&pool, "api_keys_changed", self.as_ref(), stop).await;
    }

    /// Writes `last_used_at` in batches, at most once a minute per key.
    pub async fn record_usage(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = self.touch_rx.lock().expect("touch lock").take() else {
            return;
        };
        let mut last_written: HashMap<Uuid, Instant> = HashMap::new();
        let mut pending: HashSet<Uuid> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                id = rx.recv() => match id {
                    Some(id) => {
                        if last_written.get(&id).is_none_or(|t| t.elapsed() >= TOUCH_EVERY) {
                            pending.insert(id);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !pending.is_empty() {
                        let ids: Vec<Uuid> = pending.drain().collect();
                        if let Err(err) = keys::touch(&self.pool, &ids).await {
                            tracing::warn!(error = %err, "could not record key usage");
                        }
                        let now = Instant::now();
                        for id in ids {
                            last_written.insert(id, now);
                        }
                        last_written.retain(|_, t| t.elapsed() < TOUCH_EVERY);
                    }
                }
            }
        }
        if !pending.is_empty() {
            let ids: Vec<Uuid> = pending.into_iter().collect();
            let _ = keys::touch(&self.pool, &ids).await;
        }
    }
}

impl crate::db::Follower for Authenticator {
    async fn connected(&self, up: bool) {
        // Never serve from the cache while notifications might be missed.
        if !up {
            self.cache_enabled.store(false, Ordering::Release);
        }
        self.flush().await;
        self.cache_enabled.store(up, Ordering::Release);
    }

    async fn notified(&self, _payload: &str) {
        self.flush().await;
    }
}

fn bearer(parts: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = parts.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing_api_key",
            "send an API key as `Authorization: Bearer <key>`".into(),
        )
    })?;
    let value = value.to_str().unwrap_or_default();
    match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => {
            Ok(key.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "invalid_authorization_header",
            "the Authorization header must be `Bearer <key>`".into(),
        )),
    }
}

/// Guards every `/api/v1` route: authenticates, then applies the per-key rate limit. The
/// per-IP budget handed over by the IP middleware is charged here too: for a key known without
/// a database query (the hot path) both budgets are checked in one Redis round trip; otherwise
/// the address is charged before the key is looked up, so guessing keys stays throttled.
///
/// A request without `Authorization` may instead carry the console's session cookie: it stands
/// for the key it was opened with (checked like the key itself, so revocation ends it), and a
/// state-changing request must also carry the session's CSRF token.
pub async fn require_api_key(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip_check = request
        .extensions()
        .get::<ratelimit::DeferredIpCheck>()
        .map(|check| check.claim().clone());
    let session = (!request.headers().contains_key(header::AUTHORIZATION))
        .then(|| session::token(request.headers()))
        .flatten();
    let presented = match &session {
        Some(_) => Err(session::ended()),
        None => bearer(request.headers()).map(keys::hash_key),
    };
    let known = presented
        .as_ref()
        .ok()
        .and_then(|hash| state.authenticator.known(hash));
    let (principal, decision) = match known {
        Some(principal) => {
            let key_bucket = (state.key_limiter.as_ref(), &principal.key_id);
            let decision = match &ip_check {
                Some(ip) => {
                    match ratelimit::check_pair((ip.limiter.as_ref(), &ip.ip), key_bucket).await {
                        (_, Some(key)) => key,
                        (refused, None) => return ip_refused(&refused),
                    }
                }
                None => state.key_limiter.check(&principal.key_id).await,
            };
            (principal, decision)
        }
        None => {
            if let Some(ip) = &ip_check {
                let decision = ip.limiter.check(&ip.ip).await;
                if !decision.allowed {
                    return ip_refused(&decision);
                }
            }
            let principal = match (&session, presented) {
                (Some(token), _) => {
                    session_principal(&state, token, request.method(), request.headers()).await
                }
                (None, Ok(hash)) => state.authenticator.look_up(hash).await,
                (None, Err(err)) => Err(err),
            };
            let principal = match principal {
                Ok(p) => p,
                Err(err) => return with_challenge(err),
            };
            let decision = state.key_limiter.check(&principal.key_id).await;
            (principal, decision)
        }
    };
    if !decision.allowed {
        metrics::counter!("http_rate_limited_total", "by" => "key").increment(1);
        return ratelimit::too_many_requests(&decision, "this API key");
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    ratelimit::apply_headers(response.headers_mut(), &decision);
    response
}

/// The principal behind a console session cookie: the session must be live, a state-changing
/// request must carry its CSRF token, and its key must still be valid.
async fn session_principal(
    state: &AuthState,
    token: &str,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, ApiError> {
    let (key_hash, _) = session::resolve(&state.db, token)
        .await?
        .ok_or_else(session::ended)?;
    if !method.is_safe() && !session::csrf_valid(headers, token) {
        return Err(session::csrf_refused());
    }
    state.authenticator.authenticate_hash(key_hash).await
}

/// An authentication failure as a response: a 401 names its scheme (`WWW-Authenticate: Bearer`),
/// as HTTP requires of every 401.
fn with_challenge(err: ApiError) -> Response {
    let mut response = err.into_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn ip_refused(decision: &ratelimit::Decision) -> Response {
    metrics::counter!("http_rate_limited_total", "by" => "ip").increment(1);
    ratelimit::too_many_requests(decision, "this client address")
}

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(current_key))
        .routes(routes!(get_key, revoke_key))
        .routes(routes!(current_session, sign_out))
}

/// `POST /session`: the console's sign-in, which needs no credential but the key in its body.
/// Merged under `/api/v1` outside the authentication layer.
pub fn sign_in_router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(sign_in))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// An API key (`co_…`). It is exchanged for the session cookie and not kept.
    #[schema(min_length = 1, max_length = 1000)]
    pub api_key: String,
}

/// A console session: who it acts as, the token state-changing requests must send in
/// `X-CSRF-Token`, and when it ends.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// The id of the key the session was opened with (the nil UUID for the bootstrap key).
    pub key_id: Uuid,
    pub name: String,
    pub scope: Scope,
    /// Send as `X-CSRF-Token` on every POST, PUT, PATCH and DELETE made with the cookie.
    pub csrf_token: String,
    #[serde(with = "crate::web::timestamp")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl SessionInfo {
    fn new(principal: Principal, token: &str, expires_at: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            key_id: principal.key_id,
            name: principal.name,
            scope: principal.scope,
            csrf_token: session::csrf_token(token),
            expires_at,
        }
    }
}

/// Sign in to the console: exchange an API key for a session cookie (`co_session`, `HttpOnly`,
/// `SameSite=Strict`, `Secure` behind TLS) valid for 12 hours or until the key is revoked.
/// The API itself keeps accepting `Authorization: Bearer` keys.
#[utoipa::path(post, path = "/session", tag = "keys", request_body = SignInRequest,
    responses((status = 201, body = SessionInfo,
        headers(("Set-Cookie" = String, description = "the session cookie `co_session`")))),
    security(()))]
async fn sign_in(
    State(state): State<AuthState>,
    ip_check: Option<axum::Extension<ratelimit::DeferredIpCheck>>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    // Outside the authentication layer nobody else charges the address before the key is
    // looked up: do it here, so guessing keys through sign-in is throttled like anywhere else.
    let ip_decision = match ip_check {
        Some(axum::Extension(check)) => {
            let check = check.claim();
            let decision = check.limiter.check(&check.ip).await;
            if !decision.allowed {
                return Ok(ip_refused(&decision));
            }
            Some(decision)
        }
        None => None,
    };
    let key = body.api_key.trim();
    if key.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_api_key",
            "api_key must be an API key (co_…)",
        ));
    }
    let hash = keys::hash_key(key);
    let principal = match state.authenticator.authenticate_hash(hash).await {
        Ok(principal) => principal,
        Err(err) => return Ok(with_challenge(err)),
    };
    let (token, expires_at) = session::open(&state.db, &hash).await?;
    tracing::info!(key_id = %principal.key_id, "console session opened");
    let cookie = HeaderValue::try_from(session::set_cookie(
        Some(&token),
        session::over_tls(&headers),
    ))
    .map_err(anyhow::Error::from)?;
    let mut response = (
        StatusCode::CREATED,
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(SessionInfo::new(principal, &token, expires_at)),
    )
        .into_response();
    if let Some(decision) = &ip_decision {
        ratelimit::apply_headers(response.headers_mut(), decision);
    }
    Ok(response)
}

fn no_session() -> ApiError {
    ApiError::problem(crate::error::Problem::new(
        StatusCode::NOT_FOUND,
        "no_session",
        "this request is authenticated by an API key, not by a console session cookie",
    ))
}

/// The console session of this request's cookie (a reloaded page learns its CSRF token here).
#[utoipa::path(get, path = "/session", tag = "keys",
    responses((status = 200, body = SessionInfo),
        (status = 404, description = "the request has no live session cookie, only an API key (`no_session`)", body = crate::error::Problem)),
    security(("api_key" = [])))]
async fn current_session(
    State(state): State<AuthState>,
    Auth(principal): Auth,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let token = session::token(&headers).ok_or_else(no_session)?;
    // A cookie alone was resolved by the auth layer, so a dead one here came beside a valid
    // bearer key: the request is authenticated, it just has no session.
    let (_, expires_at) = session::resolve(&state.db, &token)
        .await?
        .ok_or_else(no_session)?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(SessionInfo::new(principal, &token, expires_at)),
    )
        .into_response())
}

/// Sign out of the console: the session ends on every replica and the cookie is removed.
#[utoipa::path(delete, path = "/session", tag = "keys",
    responses((status = 204, description = "signed out"),
        (status = 404, description = "the request has no session cookie (`no_session`)", body = crate::error::Problem)),
    security(("api_key" = [])))]
async fn sign_out(
    State(state): State<AuthState>,
    Auth(_principal): Auth,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let token = session::token(&headers).ok_or_else(no_session)?;
    session::close(&state.db, &token).await?;
    let cookie = HeaderValue::try_from(session::set_cookie(None, session::over_tls(&headers)))
        .map_err(anyhow::Error::from)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A label for the key, 1-100 characters (surrounding spaces are trimmed), not only
    /// spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "ci bot",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    pub scope: Scope,
}

/// Create an API key (admin). The key is in the response once and never again; `Location`
/// names the new key.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, body = keys::CreatedApiKey,
        headers(("Location" = String, description = "`/api/v1/keys/{id}` of the new key"))),
        (status = 409, description = "an active key has this name (`duplicate_name`)", body = crate::error::Problem)),
    security(("api_key" = [])))]
async fn create_key(
    State(state): State<AuthState>,
    Admin(_admin): Admin,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    let name =
        keys::KeyName::parse(&body.name).map_err(|e| ApiError::unprocessable("invalid_name", e))?;
    let created = keys::create(&state.db, &name, body.scope).await?;
    tracing::info!(key_id = %created.info.id, scope = created.info.scope.as_str(), "api key created");
    let location = HeaderValue::try_from(format!("/api/v1/keys/{}", created.info.id))
        .map_err(anyhow::Error::from)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// Keys to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

/// List API keys (admin), revoked ones included, oldest first.
#[utoipa::path(get, path = "/keys", tag = "keys", params(KeyListParams),
    responses((status = 200, body = Page<keys::ApiKeyInfo>)), security(("api_key" = [])))]
async fn list_keys(
    State(state): State<AuthState>,
    Admin(_admin): Admin,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<KeyListParams>, QueryRejection>,
) -> Result<Json<Page<keys::ApiKeyInfo>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 100, 500)?;
    let (items, total) = keys::page(&state.db, limit, offset).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

/// One API key (admin).
#[utoipa::path(get, path = "/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 200, body = keys::ApiKeyInfo)), security(("api_key" = [])))]
async fn get_key(
    State(state): State<AuthState>,
    Admin(_admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<keys::ApiKeyInfo>, ApiError> {
    let id = parse_key_id(&id)?;
    keys::get(&state.db, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no API key with id {id}")))
}

fn parse_key_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid("invalid_id", format!("{id:?} is not a key id (a UUID)")))
}

/// The key making this request.
#[utoipa::path(get, path = "/keys/self", tag = "keys",
    responses((status = 200, body = Principal)), security(("api_key" = [])))]
async fn current_key(Auth(principal): Auth) -> Json<Principal> {
    Json(principal)
}

/// Revoke an API key (admin). Effective at once on every replica.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 204, description = "revoked (revoking again changes nothing)")), security(("api_key" = [])))]
async fn revoke_key(
    State(state): State<AuthState>,
    Admin(_admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_key_id(&id)?;
    match keys::revoke(&state.db, id).await? {
        keys::Revocation::Revoked(_) => {
            // This replica forgets the key before answering; the others flush on the NOTIFY.
            state.authenticator.flush().await;
            tracing::info!(key_id = %id, "api key revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        // DELETE is idempotent: the key is revoked, as asked.
        keys::Revocation::AlreadyRevoked(_) => Ok(StatusCode::NO_CONTENT),
        keys::Revocation::NotFound => Err(ApiError::not_found(format!("no API key with id {id}"))),
    }
}
