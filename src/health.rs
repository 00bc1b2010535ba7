//! `/health`, `/health/live` and `/health/ready`: the only routes open without a key.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::FromRef;
use sqlx::PgPool;
use std::sync::Arc;

use crate::redis_conn::RedisHandle;
use crate::runtime::{Components as ComponentStates, Lifecycle};

/// What the health endpoints read.
#[derive(Clone)]
pub struct HealthState {
    pub db: PgPool,
    pub redis: Option<RedisHandle>,
    pub components: Arc<ComponentStates>,
    pub lifecycle: Lifecycle,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` (serving, an optional part is down) or `unhealthy`.
    pub status: &'static str,
    pub version: String,
    pub components: Components,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    pub db: String,
    /// The knowledge base: `ok`, `not_loaded`, `loading`, or `failed: …` (previous version serving).
    pub ib: String,
    pub redis: String,
    pub neo4j: String,
    pub marketplace: String,
    /// The notification bus (PostgreSQL `LISTEN`, or Redis when configured): `ok`, `starting`,
    /// or `down: …` (live events wait; nothing is lost).
    pub notifications: String,
}

#[derive(Serialize, ToSchema)]
pub struct Probe {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    HealthState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
}

async fn db_ok(state: &HealthState) -> bool {
    let ping = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&state.db);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ping).await,
        Ok(Ok(1))
    )
}

/// Overall health with each component.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<HealthState>) -> (StatusCode, Json<Health>) {
    let db = db_ok(&state).await;
    let redis = match &state.redis {
        None => "disabled",
        Some(r) if r.is_healthy() => "ok",
        Some(_) => "down",
    };
    let components = Components {
        db: if db { "ok" } else { "down" }.into(),
        ib: state.components.ib.read().await.clone(),
        redis: redis.into(),
        neo4j: state.components.neo4j.read().await.clone(),
        marketplace: state.components.marketplace.read().await.clone(),
        notifications: state.components.notifications.read().await.clone(),
    };
    let degraded = components.redis == "down"
        || components.neo4j == "down"
        || components.ib.starts_with("failed")
        || components.marketplace.starts_with("invalid")
        || components.marketplace.starts_with("error")
        || components.notifications.starts_with("down");
    let status = if !db {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let code = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status,
            version: crate::version(),
            components,
        }),
    )
}

/// Liveness: the process answers. Never touches the database.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Probe)))]
async fn live() -> Json<Probe> {
    Json(Probe {
        status: "ok",
        reason: None,
    })
}

/// Readiness: database reachable, migrations applied, not shutting down.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Probe), (status = 503, body = Probe)))]
async fn ready(State(state): State<HealthState>) -> (StatusCode, Json<Probe>) {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe {
                status: "unavailable",
                reason: Some(reason.into()),
            }),
        )
    };
    if state.lifecycle.is_shutting_down() {
        return not_ready("shutting down");
    }
    if !db_ok(&state).await {
        return not_ready("database unreachable");
    }
    match crate::db::migrations_applied(&state.db).await {
        Ok(true) => (
            StatusCode::OK,
            Json(Probe {
                status: "ok",
                reason: None,
            }),
        ),
        _ => not_ready("database migrations not applied"),
    }
}
