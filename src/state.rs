//! The composition root's state: every capability's own state, built once in `server.rs`.
//! Capabilities never import this module; they name their own state (`KbState`, `AuthState`, …)
//! and reach it through `State<…>`, which axum derives from `AppState` with the `FromRef` impls
//! below.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::auth::AuthState;
use crate::chat::ChatState;
use crate::config::Config;
use crate::documents::DocumentsState;
use crate::health::HealthState;
use crate::kb::KbState;
use crate::marketplace::Marketplace;
use crate::notifications::NotificationsState;
use crate::ratelimit::IpLimit;
use crate::redis_conn::RedisHandle;
use crate::runtime::{Components, Lifecycle};
use crate::scans::ScansState;

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
    /// `None` when `REDIS_URL` is unset; may be down at any moment when set.
    pub redis: Option<RedisHandle>,
    /// Shutdown signal and readiness.
    pub lifecycle: Lifecycle,
    /// Component states reported by `/health` that the components update themselves.
    pub components: Arc<Components>,
    pub auth: AuthState,
    pub ip_limit: IpLimit,
    pub kb: KbState,
    /// License, trial and usage ledger; the AWS client when Marketplace is enabled.
    pub marketplace: Arc<Marketplace>,
    /// Events for WebSocket clients: this replica's bus feed, tickets, open sockets.
    pub notifications: NotificationsState,
    /// AWS account scans: the engine's registry of running scans and its configuration.
    pub scans: ScansState,
    /// The security Q&A chat: its configuration, the KB and ledger it uses, the stream relay.
    pub chat: ChatState,
    /// Architecture-document analysis: its configuration, storage, ledger and running analyses.
    pub documents: DocumentsState,
}

impl FromRef<AppState> for ChatState {
    fn from_ref(state: &AppState) -> Self {
        state.chat.clone()
    }
}

impl FromRef<AppState> for DocumentsState {
    fn from_ref(state: &AppState) -> Self {
        state.documents.clone()
    }
}

impl FromRef<AppState> for ScansState {
    fn from_ref(state: &AppState) -> Self {
        state.scans.clone()
    }
}

impl FromRef<AppState> for AuthState {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for KbState {
    fn from_ref(state: &AppState) -> Self {
        state.kb.clone()
    }
}

impl FromRef<AppState> for Arc<Marketplace> {
    fn from_ref(state: &AppState) -> Self {
        state.marketplace.clone()
    }
}

impl FromRef<AppState> for NotificationsState {
    fn from_ref(state: &AppState) -> Self {
        state.notifications.clone()
    }
}

impl FromRef<AppState> for HealthState {
    fn from_ref(state: &AppState) -> Self {
        HealthState {
            db: state.db.clone(),
            redis: state.redis.clone(),
            components: state.components.clone(),
            lifecycle: state.lifecycle.clone(),
        }
    }
}
