//! Responses of the expensive KB reads (control detail, search), cached per replica.
//!
//! A KB version never changes once loaded, so a response stays right until another version
//! becomes active. Every load sends `kb.updated` on `co_events`; a listener flushes the cache on
//! it, and while that listener is not connected the cache is not used at all, so no replica
//! serves an answer from a replaced version.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// An answer nobody asked for in this long is dropped: the cache keeps the hot part of the KB,
/// not everything ever asked.
const IDLE: Duration = Duration::from_secs(3600);

pub struct KbCache {
    /// Bounded (`KB_CACHE_ENTRIES`, TinyLFU eviction); `None` when the cache is off.
    entries: Option<moka::sync::Cache<String, Bytes>>,
    enabled: AtomicBool,
}

impl KbCache {
    pub fn new(max_entries: usize) -> Self {
        let entries = (max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_entries as u64)
                .time_to_idle(IDLE)
                .build()
        });
        Self {
            entries,
            enabled: AtomicBool::new(false),
        }
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.entries.as_ref()?.get(key)
    }

    pub async fn put(&self, key: String, value: Bytes) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if let Some(entries) = &self.entries {
            entries.insert(key, value);
        }
    }

    pub async fn flush(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Follower;

    #[tokio::test]
    async fn bounded_flushed_on_kb_updated_and_off_while_not_following() {
        let cache = KbCache::new(2);
        cache.put("a".into(), Bytes::from_static(b"1")).await;
        assert_eq!(
            cache.get("a").await,
            None,
            "off until the listener connects"
        );
        cache.connected(true).await;
        for key in ["a", "b", "c", "d"] {
            cache.put(key.into(), Bytes::from_static(b"1")).await;
        }
        cache.entries.as_ref().unwrap().run_pending_tasks();
        assert!(cache.entries.as_ref().unwrap().entry_count() <= 2);
        cache.put("a".into(), Bytes::from_static(b"1")).await;
        cache.notified(r#"{"type":"kb.updated"}"#).await;
        assert_eq!(cache.get("a").await, None);
        cache.put("a".into(), Bytes::from_static(b"1")).await;
        cache.connected(false).await;
        assert_eq!(cache.get("a").await, None);
        assert!(KbCache::new(0).entries.is_none());
    }
}
