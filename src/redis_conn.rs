//! The optional Redis connection, shared by rate limiting and notification fan-out.
//!
//! Redis is never required: every user of [`RedisHandle::run`] gets `None` when Redis is down and
//! falls back to its in-process or PostgreSQL path. A supervisor task connects (and reconnects)
//! in the background and keeps the health flag current.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// A Redis command slower than this counts as a failure: we would rather fall back than make
/// every request wait on a sick Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    /// A plain lock: read on every rate-limited request, written only by the supervisor, never
    /// held across an await.
    manager: Arc<RwLock<Option<ConnectionManager>>>,
    healthy: Arc<AtomicBool>,
}

impl RedisHandle {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: Arc::new(RwLock::new(None)),
            healthy: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs one operation; `None` when Redis is not connected, failed or was too slow.
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_healthy() {
            return None;
        }
        let conn = self.manager.read().expect("redis manager lock").clone()?;
        match tokio::time::timeout(COMMAND_TIMEOUT, op(conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                self.mark_down(&err.to_string());
                None
            }
            Err(_) => {
                self.mark_down("command timed out");
                None
            }
        }
    }

    fn mark_down(&self, why: &str) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = why, "redis unavailable; using in-process fallbacks");
        }
    }

    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        ConnectionManager::new_with_config(self.client.clone(), config).await
    }

    async fn ping(&self) -> bool {
        let Some(mut conn) = self.manager.read().expect("redis manager lock").clone() else {
            return false;
        };
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(COMMAND_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// One round of supervision: connect when not connected, ping, update the health flag.
    pub async fn refresh(&self) {
        let connected = self.manager.read().expect("redis manager lock").is_some();
        if !connected {
            match self.connect().await {
                Ok(conn) => *self.manager.write().expect("redis manager lock") = Some(conn),
                Err(err) => self.mark_down(&err.to_string()),
            }
        }
        let ok = self.ping().await;
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        if ok && !was {
            tracing::info!("redis connected");
        } else if !ok && was {
            tracing::warn!("redis unavailable; using in-process fallbacks");
        }
        if !ok {
            // A fresh manager next round: the old one may be stuck reconnecting.
            *self.manager.write().expect("redis manager lock") = None;
        }
    }

    /// Re-checks every `interval` until `stop` fires (the first round is done at start-up).
    pub async fn supervise(self, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.refresh().await;
        }
    }
}
