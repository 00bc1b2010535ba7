//! Responses of the expensive KB reads (control detail, search), cached per replica.
//!
//! A KB version never changes once loaded, so a response stays right until another version
//! becomes active. Every load sends `kb.updated` on `co_events`; a listener flushes the cache on
//! it, and while that listener is not connected the cache is not used at all, so no replica
//! serves an answer from a replaced version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

pub struct KbCache {
    entries: RwLock<HashMap<String, Bytes>>,
    enabled: AtomicBool,
    /// Bounded (`KB_CACHE_ENTRIES`): when full the cache starts over (the KB has ~2,000 controls).
    max_entries: usize,
}

impl KbCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: RwLock::default(),
            enabled: AtomicBool::new(false),
            max_entries,
        }
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.entries.read().await.get(key).cloned()
    }

    pub async fn put(&self, key: String, value: Bytes) {
        if !self.enabled.load(Ordering::Acquire) || self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.write().await;
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub async fn flush(&self) {
        self.entries.write().await.clear();
    }

    /// Listens for `kb.updated` and keeps the cache consistent with the active version.
    pub async fn listen(&self, pool: PgPool, stop: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen("co_events").await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match connected.await {
                Ok(mut listener) => {
                    delay = Duration::from_millis(200);
                    self.flush().await;
                    self.enabled.store(true, Ordering::Release);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            note = listener.recv() => match note {
                                Ok(note) if note.payload().contains("\"kb.updated\"") => self.flush().await,
                                Ok(_) => {}
                                Err(err) => {
                                    tracing::warn!(error = %err, "KB event listener lost; KB cache off until it reconnects");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for KB events; KB cache off")
                }
            }
            self.enabled.store(false, Ordering::Release);
            self.flush().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
