//! The state every handler can reach, cheap to clone (everything inside is shared).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::redis_conn::RedisHandle;

/// Cheap to clone: one reference count. Middleware and extractors clone it for every request,
/// so everything lives behind a single `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    /// Validated once at start-up; never changes while serving.
    pub config: Arc<Config>,
    /// The source of truth for everything we persist.
    pub db: PgPool,
    /// API key validation with its revocation-aware cache.
    pub auth: Arc<Authenticator>,
    /// Shared (Redis) or in-process request budgets, per API key and per client IP.
    pub key_limiter: Arc<RateLimiter<uuid::Uuid>>,
    pub ip_limiter: Arc<RateLimiter<std::net::IpAddr>>,
    /// `None` when `REDIS_URL` is unset; may be down at any moment when set.
    pub redis: Option<RedisHandle>,
    /// Shutdown signal and readiness.
    pub lifecycle: Lifecycle,
    /// Component states reported by `/health` that the components update themselves.
    pub components: Arc<Components>,
    /// Responses of expensive KB reads, valid until the next KB version.
    pub kb_cache: Arc<crate::kb::cache::KbCache>,
    /// The Neo4j mirror of the KB when `NEO4J_URI` is set.
    pub kb_graph: crate::kb::SharedGraph,
    /// License, trial and usage ledger; the AWS client when Marketplace is enabled.
    pub marketplace: Arc<crate::marketplace::Marketplace>,
}

/// Health states set by long-lived components (KB loader, Neo4j mirror, licensing).
#[derive(Debug)]
pub struct Components {
    pub ib: RwLock<String>,
    pub neo4j: RwLock<String>,
    pub marketplace: RwLock<String>,
}

impl Components {
    pub fn new(neo4j_configured: bool, marketplace_enabled: bool) -> Self {
        Self {
            ib: RwLock::new("not_loaded".into()),
            neo4j: RwLock::new(if neo4j_configured { "down" } else { "disabled" }.into()),
            marketplace: RwLock::new(
                if marketplace_enabled {
                    "pending"
                } else {
                    "disabled"
                }
                .into(),
            ),
        }
    }
}

/// Start-up and shutdown state shared by the server, the health endpoints and background tasks.
#[derive(Clone, Default)]
pub struct Lifecycle {
    shutting_down: Arc<AtomicBool>,
    /// Cancelled when background tasks and streams must stop.
    pub stop: CancellationToken,
}

impl Lifecycle {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
