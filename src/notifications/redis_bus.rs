//! Fan-out through Redis pub/sub, used when `REDIS_URL` is set.
//!
//! One replica at a time (whichever holds a PostgreSQL advisory lock) relays `co_events` to the
//! Redis channel `{REDIS_KEY_PREFIX}events`; every replica's hub subscribes to that channel, so
//! PostgreSQL sends each notification to one listener instead of one per replica. Each message
//! carries the id the relay sent before it (`prev`): a hub that has not delivered `prev` missed
//! something (Redis dropped it, the relay changed) and reads the gap from PostgreSQL. Whenever a
//! subscription (re)connects, or a new relay takes over, hubs catch up from PostgreSQL by id, so
//! a Redis restart delays events but loses none.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::hub::{Event, Hub, set_state};
use super::store;
use crate::redis_conn::RedisHandle;
use crate::runtime::Components;

/// The advisory lock of the relay: 7242002, used nowhere else (7242001 orders event ids).
const RELAY_LOCK: i64 = 7_242_002;
/// How often a replica that is not the relay checks whether the relay is gone.
const RELAY_RETRY: Duration = Duration::from_secs(3);
/// Bodies above this are left out of the message; hubs read them from PostgreSQL.
const MAX_INLINE_BODY: usize = 4000;

#[derive(Serialize, Deserialize)]
struct BusMessage {
    /// Absent on a catch-up request (a new relay took over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(default)]
    prev: i64,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

/// What the trigger sends on `co_events` (see `events`).
#[derive(Deserialize)]
struct Note {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    ts: DateTime<Utc>,
    data: Option<serde_json::Value>,
}

pub fn channel(prefix: &str) -> String {
    format!("{prefix}events")
}

/// True when Redis took the message.
async fn publish(redis: &RedisHandle, channel: &str, message: &BusMessage) -> bool {
    let payload = serde_json::to_string(message).expect("a bus message serialises");
    let channel = channel.to_string();
    let sent = redis
        .run(|mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
    if sent.is_none() {
        tracing::debug!("event not relayed to redis");
    }
    sent.is_some()
}

fn catch_up_request(prev: i64) -> BusMessage {
    BusMessage {
        id: None,
        prev,
        kind: String::new(),
        ts: None,
        data: None,
    }
}

/// Runs on every replica; relays while it holds the relay lock, otherwise checks again later.
pub async fn relay(pool: PgPool, redis: RedisHandle, channel: String, stop: CancellationToken) {
    loop {
        match relay_once(&pool, &redis, &channel, &stop).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "notification relay lost; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELAY_RETRY) => {}
        }
    }
}

/// `Ok(true)` when stopped, `Ok(false)` when another replica is the relay.
async fn relay_once(
    pool: &PgPool,
    redis: &RedisHandle,
    channel: &str,
    stop: &CancellationToken,
) -> sqlx::Result<bool> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    // A session lock on the listener's own connection: released when it closes, so a dead
    // relay is replaced within `RELAY_RETRY`.
    let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(&mut listener)
        .await?;
    if !leader {
        return Ok(false);
    }
    listener.listen(crate::events::CHANNEL).await?;
    let mut prev = store::newest_id(pool).await?;
    tracing::info!(from = prev, "relaying notification events to redis");
    // Whatever the previous relay left unsent is read from PostgreSQL by every hub.
    let mut owed = !publish(redis, channel, &catch_up_request(prev)).await;
    loop {
        let note = tokio::select! {
            () = stop.cancelled() => return Ok(true),
            note = listener.try_recv() => note?,
            // Redis missed a message: hubs that stayed subscribed would not know until the next
            // event, so ask them to catch up as soon as Redis takes messages again.
            () = tokio::time::sleep(Duration::from_millis(500)), if owed => {
                owed = !publish(redis, channel, &catch_up_request(prev)).await;
                continue;
            }
        };
        let Some(note) = note else {
            return Err(sqlx::Error::Protocol(
                "relay listener connection lost".into(),
            ));
        };
        let Ok(note) = serde_json::from_str::<Note>(note.payload()) else {
            continue;
        };
        if note.id <= prev {
            continue;
        }
        let data = note.data.filter(|d| d.to_string().len() <= MAX_INLINE_BODY);
        let message = BusMessage {
            id: Some(note.id),
            prev,
            kind: note.kind,
            ts: Some(note.ts),
            data,
        };
        if !publish(redis, channel, &message).await {
            owed = true;
        }
        prev = note.id;
    }
}

/// The hub's feed when Redis is configured: subscribes, catches up from PostgreSQL, follows.
pub async fn subscribe(
    hub: Arc<Hub>,
    pool: PgPool,
    client: redis::Client,
    channel: String,
    components: Arc<Components>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match subscribe_once(&hub, &pool, &client, &channel, &components, &stop).await {
            Ok(()) => return,
            Err(err) => {
                set_state(&components, format!("down: redis: {err}")).await;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe_once(
    hub: &Hub,
    pool: &PgPool,
    client: &redis::Client,
    channel: &str,
    components: &Components,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut pubsub = tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub())
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    pubsub.subscribe(channel).await?;
    hub.position(pool).await?;
    hub.catch_up(pool).await?;
    set_state(components, "ok".into()).await;
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            anyhow::bail!("subscription lost");
        };
        let payload: String = message.get_payload()?;
        let Ok(message) = serde_json::from_str::<BusMessage>(&payload) else {
            hub.catch_up(pool).await?;
            continue;
        };
        let Some(id) = message.id else {
            hub.catch_up(pool).await?;
            continue;
        };
        let last = hub.last_id();
        if id <= last {
            continue;
        }
        match (message.prev <= last, message.data, message.ts) {
            (true, Some(data), Some(ts)) => hub.deliver(Event::new(id, message.kind, ts, data), ts),
            _ => hub.catch_up_to(pool, id).await?,
        }
    }
}
