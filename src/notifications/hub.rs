//! This replica's feed of committed events: one bus listener per process fills a
//! `tokio::sync::broadcast` channel that every WebSocket of the process reads.
//!
//! The listener follows PostgreSQL `NOTIFY co_events` (sent by the `events` trigger at commit,
//! in id order). Whenever it (re)connects it first reads from `events` everything after the last
//! id it delivered, so a dropped bus connection delays events but never loses one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store;
use crate::runtime::Components;

/// One committed event, serialised once for every client of the replica.
#[derive(Debug)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    /// The WebSocket text frame: `{"id", "type", "ts", "data"}`.
    pub frame: Utf8Bytes,
}

/// What clients receive, on the WebSocket and from `GET /api/v1/notifications`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireEvent {
    /// Monotonic in commit order; resume with `?since=<id>`.
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    /// Commit time, RFC 3339 in UTC with microseconds.
    pub ts: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One format for every timestamp a client sees, whether the event came live or from a replay.
/// The one timestamp format of the API (RFC 3339, UTC, milliseconds).
pub fn format_ts(ts: DateTime<Utc>) -> String {
    crate::web::timestamp::format(&ts)
}

impl Event {
    pub fn new(id: i64, kind: String, ts: DateTime<Utc>, data: serde_json::Value) -> Self {
        let wire = WireEvent {
            id,
            kind,
            ts: format_ts(ts),
            data,
        };
        let frame = serde_json::to_string(&wire).expect("an event serialises");
        Self {
            id,
            kind: wire.kind,
            frame: frame.into(),
        }
    }
}

pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
    /// The highest id broadcast. Held while sending, and while a socket subscribes, so a
    /// subscriber knows exactly which ids it will receive live (those above the value it read).
    last: std::sync::Mutex<i64>,
    open: AtomicUsize,
    max_connections: usize,
    /// Set once the start position is known (see [`Hub::start_at_newest`]).
    positioned: AtomicBool,
    /// API keys with open sockets here, and how many each.
    keys: std::sync::Mutex<HashMap<Uuid, usize>>,
    /// Keys found revoked; bumped `revocations` tells sockets to look.
    revoked: std::sync::RwLock<HashSet<Uuid>>,
    revocations: watch::Sender<u64>,
}

impl Hub {
    /// `queue` is how far one socket may fall behind (events) before it is cut.
    pub fn new(queue: usize, max_connections: usize) -> Self {
        let (tx, _) = broadcast::channel(queue);
        Self {
            tx,
            last: std::sync::Mutex::new(0),
            open: AtomicUsize::new(0),
            max_connections,
            positioned: AtomicBool::new(false),
            keys: std::sync::Mutex::new(HashMap::new()),
            revoked: std::sync::RwLock::new(HashSet::new()),
            revocations: watch::Sender::new(0),
        }
    }

    /// A live feed and the last id broadcast before it: it yields exactly the ids above that.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, i64) {
        let last = self.last.lock().expect("hub lock");
        (self.tx.subscribe(), *last)
    }

    pub fn last_id(&self) -> i64 {
        *self.last.lock().expect("hub lock")
    }

    pub(super) fn deliver(&self, event: Event, ts: DateTime<Utc>) {
        let mut last = self.last.lock().expect("hub lock");
        if event.id <= *last {
            return;
        }
        *last = event.id;
        let lag = (Utc::now() - ts).to_std().unwrap_or_default();
        metrics::histogram!("notifications_fanout_latency_seconds").record(lag.as_secs_f64());
        // No receiver is not an error: nobody is connected to this replica.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A connection slot for `key`, or `None` at `NOTIFICATIONS_MAX_CONNECTIONS`.
    pub fn try_open(self: &Arc<Self>, key: Uuid) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return None;
        }
        metrics::gauge!("notifications_connections").increment(1.0);
        *self.keys.lock().expect("hub keys").entry(key).or_default() += 1;
        Some(Slot {
            hub: self.clone(),
            key,
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Reads every committed event after the last delivered one, in id order.
    pub(super) async fn catch_up(&self, pool: &PgPool) -> sqlx::Result<()> {
        loop {
            let after = self.last_id();
            let rows = store::after(pool, after, 500).await?;
            let done = rows.len() < 500;
            for row in rows {
                self.deliver(Event::new(row.id, row.kind, row.ts, row.data), row.ts);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Starts after the newest committed event: a fresh replica does not re-broadcast history
    /// (clients that want it ask with `?since=`). Called before serving, so that an event
    /// committed while the listener is still connecting is caught up, not skipped.
    pub async fn start_at_newest(&self, pool: &PgPool) -> sqlx::Result<()> {
        let newest = store::newest_id(pool).await?;
        let mut last = self.last.lock().expect("hub lock");
        *last = (*last).max(newest);
        self.positioned.store(true, Ordering::Release);
        Ok(())
    }
}

impl Hub {
    /// The start position, when start-up could not read it (e.g. migrations not applied yet).
    pub(super) async fn position(&self, pool: &PgPool) -> sqlx::Result<()> {
        if self.positioned.load(Ordering::Acquire) {
            return Ok(());
        }
        self.start_at_newest(pool).await
    }

    /// Catches up until `id` is delivered. The bus may announce an event a moment before its
    /// commit is visible to other sessions, so retry briefly before leaving it to the next
    /// catch-up.
    pub(super) async fn catch_up_to(&self, pool: &PgPool, id: i64) -> sqlx::Result<()> {
        for _ in 0..20 {
            self.catch_up(pool).await?;
            if self.last_id() >= id {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// An open WebSocket; the count drops when it does.
pub struct Slot {
    hub: Arc<Hub>,
    pub key: Uuid,
}

impl Slot {
    /// Wakes when a key may have been revoked; then ask [`Slot::revoked`].
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.hub.revocations.subscribe()
    }

    pub fn revoked(&self) -> bool {
        self.hub
            .revoked
            .read()
            .expect("hub revoked")
            .contains(&self.key)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        let mut keys = self.hub.keys.lock().expect("hub keys");
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
        metrics::gauge!("notifications_connections").decrement(1.0);
    }
}

/// What the trigger sends on `co_events`.
#[derive(Deserialize)]
struct Note {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    ts: DateTime<Utc>,
    /// Left out by the trigger when large: read from PostgreSQL.
    data: Option<serde_json::Value>,
}

pub(super) async fn set_state(components: &Components, state: String) {
    let mut current = components.notifications.write().await;
    if *current != state {
        if state == "ok" {
            tracing::info!("notification bus connected");
        } else {
            tracing::warn!(state = %state, "notification bus not connected");
        }
        *current = state;
    }
}

/// The bus listener: follows `co_events` until `stop`, reconnecting with capped backoff and
/// catching up from PostgreSQL each time it connects.
pub async fn listen(
    hub: Arc<Hub>,
    pool: PgPool,
    components: Arc<Components>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let outcome = follow_once(&hub, &pool, &components, &stop).await;
        match outcome {
            Ok(()) => return,
            Err(err) => set_state(&components, format!("down: {err}")).await,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One connection of the listener. `Ok` only when stopped.
async fn follow_once(
    hub: &Hub,
    pool: &PgPool,
    components: &Components,
    stop: &CancellationToken,
) -> sqlx::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(crate::events::CHANNEL).await?;
    // Listening first, reading second: an event committed in between arrives both ways and the
    // hub keeps the first.
    hub.position(pool).await?;
    hub.catch_up(pool).await?;
    set_state(components, "ok".into()).await;
    loop {
        let note = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            note = listener.try_recv() => note?,
        };
        // `None`: the connection was lost (sqlx would reconnect silently and drop what was sent
        // meanwhile); start over with a catch-up instead.
        let Some(note) = note else {
            return Err(sqlx::Error::Protocol("listener connection lost".into()));
        };
        let Ok(note) = serde_json::from_str::<Note>(note.payload()) else {
            // Not one of ours (someone ran NOTIFY by hand): the table is the truth anyway.
            hub.catch_up(pool).await?;
            continue;
        };
        if note.id <= hub.last_id() {
            continue;
        }
        match note.data {
            Some(data) => hub.deliver(Event::new(note.id, note.kind, note.ts, data), note.ts),
            None => hub.catch_up_to(pool, note.id).await?,
        }
    }
}

/// Closes the sockets of revoked keys: follows `api_keys_changed` (sent on every revocation)
/// and marks which keys with open sockets here are revoked. While the follower is disconnected
/// a revocation can be missed, so every reconnect checks again.
pub struct Revocations {
    pub hub: Arc<Hub>,
    pub pool: PgPool,
}

impl Revocations {
    async fn check(&self) {
        let open: Vec<Uuid> = self
            .hub
            .keys
            .lock()
            .expect("hub keys")
            .keys()
            .copied()
            .collect();
        if open.is_empty() {
            return;
        }
        match store::revoked_among(&self.pool, &open).await {
            Ok(revoked) if !revoked.is_empty() => {
                self.hub
                    .revoked
                    .write()
                    .expect("hub revoked")
                    .extend(revoked);
                self.hub.revocations.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot check revoked keys of open sockets"),
        }
    }
}

impl crate::db::Follower for Revocations {
    async fn connected(&self, up: bool) {
        if up {
            self.check().await;
        }
    }

    async fn notified(&self, _payload: &str) {
        self.check().await;
    }
}
