//! Responses of the expensive KB reads (control detail, search), cached per replica.
//!
//! A KB version never changes once loaded, so a response stays right until another version
//! becomes active. Every load sends `kb.updated` on `co_events`; a listener flushes the cache on
//! it, and while that listener is not connected the cache is not used at all, so no replica
//! serves an answer from a replaced version. The same signal spares the chat a query per
//! question: the in-memory KB snapshot, once checked against the active version, stays the
//! answer until the next `kb.updated` (or a lost connection).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::retrieve::Snapshot;

/// An answer nobody asked for in this long is dropped: the cache keeps the hot part of the KB,
/// not everything ever asked.
const IDLE: Duration = Duration::from_secs(3600);

pub struct KbCache {
    /// Bounded (`KB_CACHE_ENTRIES`, TinyLFU eviction); `None` when the cache is off.
    entries: Option<moka::sync::Cache<String, Bytes>>,
    enabled: AtomicBool,
    /// Moves on every flush: what was read before it may belong to a replaced version.
    generation: AtomicU64,
    /// The snapshot of the active version (`None`: no active version) and the generation it
    /// was checked at.
    snapshot: Mutex<Option<(u64, Option<Arc<Snapshot>>)>>,
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
            generation: AtomicU64::new(0),
            snapshot: Mutex::new(None),
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
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    /// The snapshot checked since the last flush, if any and while notifications are followed
    /// (`Some(None)`: no version was active).
    pub fn checked_snapshot(&self) -> Option<Option<Arc<Snapshot>>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let now = self.generation.load(Ordering::Acquire);
        match &*self.snapshot.lock().expect("snapshot lock") {
            Some((at, snapshot)) if *at == now => Some(snapshot.clone()),
            _ => None,
        }
    }

    /// The generation to pass to [`remember_snapshot`](Self::remember_snapshot), read before
    /// the active version is: a flush in between makes the remembered snapshot stale at once.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn remember_snapshot(&self, at: u64, snapshot: Option<Arc<Snapshot>>) {
        *self.snapshot.lock().expect("snapshot lock") = Some((at, snapshot));
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

    #[tokio::test]
    async fn a_checked_snapshot_holds_until_the_next_flush_and_only_while_following() {
        let cache = KbCache::new(0);
        cache.remember_snapshot(cache.generation(), None);
        assert!(cache.checked_snapshot().is_none(), "not following yet");
        cache.connected(true).await;
        assert!(cache.checked_snapshot().is_none(), "connecting flushed it");
        cache.remember_snapshot(cache.generation(), None);
        assert!(matches!(cache.checked_snapshot(), Some(None)));
        // Checked before a kb.updated that arrived while the version was being read: stale.
        let at = cache.generation();
        cache.notified(r#"{"type":"kb.updated"}"#).await;
        cache.remember_snapshot(at, None);
        assert!(cache.checked_snapshot().is_none());
        cache.remember_snapshot(cache.generation(), None);
        cache.connected(false).await;
        assert!(
            cache.checked_snapshot().is_none(),
            "not while notifications may be missed"
        );
    }
}
