//! Real-time notifications: every event published with `events::publish` reaches every
//! WebSocket client on every replica, and survives reconnects.
//!
//! Owns `GET /api/v1/notifications` (stored events as JSON), `POST /api/v1/notifications/ticket`
//! (one-time WebSocket tickets for browsers), `POST /api/v1/admin/notifications/test`, the
//! WebSocket `GET /api/v1/notifications/ws`, this replica's bus listener ([`hub`]) and the
//! retention of `events`.

pub mod api;
pub mod hub;
pub mod redis_bus;
pub mod store;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NotificationsConfig;
use crate::marketplace::Clock;
use crate::redis_conn::RedisHandle;
use crate::runtime::Components;

pub use api::router;

/// Every `reason` label of `notifications_clients_cut_total`.
pub const CUT_REASONS: [&str; 5] = ["too_slow", "dead", "bad_message", "revoked", "error"];

/// Exports the notification metrics before the first socket: counts at 0, the latency histogram
/// empty. `increment(0)` registers a series without resetting one another replica in this
/// process (the tests run several) already counts in.
pub fn export_initial_metrics() {
    metrics::gauge!("notifications_connections").increment(0.0);
    metrics::counter!("notifications_messages_sent_total").increment(0);
    for reason in CUT_REASONS {
        metrics::counter!("notifications_clients_cut_total", "reason" => reason).increment(0);
    }
    // Registering the histogram is enough: it renders with empty buckets.
    let _ = metrics::histogram!("notifications_fanout_latency_seconds");
}

#[derive(Clone)]
pub struct NotificationsState {
    /// Stored events (replay, listing) and tickets.
    pub db: PgPool,
    /// This replica's feed of committed events.
    pub hub: Arc<hub::Hub>,
    pub config: Arc<NotificationsConfig>,
    /// Browser origins allowed to open a socket (`CORS_ALLOWED_ORIGINS`); same-origin always is.
    pub allowed_origins: Arc<[String]>,
    /// Ticket expiry goes by this clock, which tests shift (`CO_TEST_CLOCK_OFFSET_SECONDS`).
    pub clock: Clock,
    /// Cancelled at shutdown: every socket then gets a 1001 close frame.
    pub stop: CancellationToken,
    /// Open sockets, awaited (bounded) at shutdown so their close frames go out.
    pub sockets: TaskTracker,
    /// The bus state shown by `/health`.
    pub components: Arc<Components>,
    /// The bus when `REDIS_URL` is set (and its channel); PostgreSQL `LISTEN` otherwise.
    pub redis: Option<(RedisHandle, String)>,
}

impl NotificationsState {
    pub fn new(
        db: PgPool,
        config: NotificationsConfig,
        allowed_origins: &[String],
        clock: Clock,
        stop: CancellationToken,
        components: Arc<Components>,
        redis: Option<(RedisHandle, String)>,
    ) -> Self {
        Self {
            db,
            hub: Arc::new(hub::Hub::new(config.queue, config.max_connections)),
            config: Arc::new(config),
            allowed_origins: allowed_origins.to_vec().into(),
            clock,
            stop,
            sockets: TaskTracker::new(),
            components,
            redis,
        }
    }

    /// This replica's bus listener, until `stop`: Redis when configured, PostgreSQL otherwise.
    pub async fn listen(self) {
        match &self.redis {
            Some((redis, channel)) => {
                redis_bus::subscribe(
                    self.hub.clone(),
                    self.db.clone(),
                    redis.client().clone(),
                    channel.clone(),
                    self.components.clone(),
                    self.stop.clone(),
                )
                .await
            }
            None => {
                hub::listen(
                    self.hub.clone(),
                    self.db.clone(),
                    self.components.clone(),
                    self.stop.clone(),
                )
                .await
            }
        }
    }

    /// With Redis: relays `co_events` to Redis while this replica holds the relay lock.
    pub async fn relay(self) {
        if let Some((redis, channel)) = self.redis.clone() {
            redis_bus::relay(self.db.clone(), redis, channel, self.stop.clone()).await;
        }
    }

    /// Closes the sockets of keys revoked anywhere, until `stop`.
    pub async fn follow_revocations(self) {
        let follower = hub::Revocations {
            hub: self.hub.clone(),
            pool: self.db.clone(),
        };
        crate::db::follow(&self.db, "api_keys_changed", &follower, self.stop.clone()).await;
    }

    /// Deletes events past the retention (and stale tickets) every ten minutes until `stop`.
    pub async fn prune_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {
                    match store::prune(&self.db, self.config.retention, self.clock.now()).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "old notification events pruned"),
                        Err(err) => tracing::warn!(error = %err, "could not prune notification events"),
                    }
                }
            }
        }
    }

    /// After `stop`: waits (bounded) for every socket to send its close frame.
    pub async fn close_sockets(self, within: Duration) {
        self.stop.cancelled().await;
        self.sockets.close();
        let _ = tokio::time::timeout(within, self.sockets.wait()).await;
    }
}
