//! Responses of the expensive KB reads (control detail, search), cached per replica.
//!
//! A KB version never changes once loaded, so a response stays right until another version
//! becomes active. Every load sends `kb.updated` on `co_events`; a listener flushes the cache on
//! it, and while that listener is not connected the cache is not used at all, so no replica
//! serves an answer from a replaced version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use sqlx::PgPool;
use std::sync::RwLock;
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
        self.entries
            .read()
            .expect("KB cache lock")
            .get(key)
            .cloned()
    }

    pub async fn put(&self, key: String, value: Bytes) {
        if !self.enabled.load(Ordering::Acquire) || self.max_entries == 0 {
            return;
        }
        let mut entries = self.entries.write().expect("KB cache lock");
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub async fn flush(&self) {
        self.entries.write().expect("KB cache lock").clear();
    }

    /// Listens for `kb.updated` and keeps the cache consistent with the active version.
    pub async fn listen(&self, pool: PgPool, stop: CancellationToken) {
        crate::db::follow(&pool, "co_events", self, stop).await;
    }
}

impl crate::db::Follower for KbCache {
    async fn connected(&self, up: bool) {
        // Never serve from the cache while notifications might be missed.
        if !up {
            self.enabled.store(false, Ordering::Release);
        }
        self.flush().await;
        self.enabled.store(up, Ordering::Release);
    }

    async fn notified(&self, payload: &str) {
        if payload.contains("\"kb.updated\"") {
            self.flush().await;
        }
    }
}
