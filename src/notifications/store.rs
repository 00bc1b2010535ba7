//! The SQL of notifications: stored events (written by `events::publish`), retention, and
//! one-time WebSocket tickets.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::web::{Principal, Scope};

pub struct StoredEvent {
    pub id: i64,
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// Committed events after `since`, oldest first.
pub async fn after(db: &PgPool, since: i64, limit: i64) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id AS "id!", type AS kind, ts, data FROM events
           WHERE id > $1 ORDER BY id LIMIT $2"#,
        since,
        limit
    )
    .fetch_all(db)
    .await
}

/// The newest committed id (0 when there is none).
pub async fn newest_id(db: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "id!" FROM events"#)
        .fetch_one(db)
        .await
}

/// Refuses a `since` that would silently skip events: one that no event of this deployment ever
/// had (above the highest id issued), or one older than what retention has kept.
pub async fn check_since(db: &PgPool, since: i64) -> Result<(), ApiError> {
    if since < 0 {
        return Err(ApiError::invalid(
            "invalid_since",
            "since must be an event id (0 or more)",
        ));
    }
    let (highest, pruned) = sqlx::query!(
        r#"SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq) AS "highest!",
                  (SELECT through FROM events_pruned) AS "pruned!""#
    )
    .fetch_one(db)
    .await
    .map(|r| (r.highest, r.pruned))?;
    // 0 asks for whatever is kept; only a real position can have fallen behind retention.
    if since > 0 && since < pruned {
        return Err(ApiError::problem(
            crate::error::Problem::new(
                axum::http::StatusCode::GONE,
                "since_expired",
                format!(
                    "events after {since} are no longer all kept (retention); reload the current state, then follow live events or resume from a newer id"
                ),
            )
            .with("oldest_since", pruned),
        ));
    }
    if since > highest {
        return Err(ApiError::invalid(
            "invalid_since",
            format!(
                "since={since} is above the newest event id ({highest}); send the id of the last event you received"
            ),
        ));
    }
    Ok(())
}

/// Deletes events older than the retention, and tickets long expired.
pub async fn prune(
    db: &PgPool,
    retention: std::time::Duration,
    now: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let seconds = retention.as_secs_f64();
    let events = sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM events WHERE ts < now() - make_interval(secs => $1) RETURNING id
           ), mark AS (
               UPDATE events_pruned SET through = greatest(through, (SELECT max(id) FROM gone))
               WHERE EXISTS (SELECT 1 FROM gone)
           )
           SELECT count(*) AS "n!" FROM gone"#,
        seconds
    )
    .fetch_one(db)
    .await? as u64;
    // Kept an hour past expiry so a late client is told "expired", not "unknown".
    sqlx::query!(
        "DELETE FROM notification_tickets WHERE expires_at < $1::timestamptz - interval '1 hour'",
        now
    )
    .execute(db)
    .await?;
    Ok(events)
}

/// How long a ticket may wait before it is used.
pub const TICKET_TTL: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

fn ticket_hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// A new single-use ticket for `principal`, valid until the returned time. Only its hash is
/// stored, so a ticket works on every replica and the table does not reveal it.
pub async fn create_ticket(
    db: &PgPool,
    principal: &Principal,
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>), ApiError> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let ticket = format!(
        "cot_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let expires_at = now + TICKET_TTL;
    sqlx::query!(
        "INSERT INTO notification_tickets (hash, key_id, key_name, scope, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        ticket_hash(&ticket),
        principal.key_id,
        principal.name,
        principal.scope.as_str(),
        expires_at
    )
    .execute(db)
    .await?;
    Ok((ticket, expires_at))
}

/// Uses a ticket up (whatever the outcome, it never works twice) and returns whom it was
/// issued to. The key must still be active: a ticket does not outlive a revocation.
pub async fn redeem_ticket(
    db: &PgPool,
    ticket: &str,
    now: DateTime<Utc>,
) -> Result<Principal, ApiError> {
    let row = sqlx::query!(
        r#"DELETE FROM notification_tickets t WHERE hash = $1
           RETURNING key_id, key_name, scope, expires_at,
                     (key_id = '00000000-0000-0000-0000-000000000000'::uuid
                      OR EXISTS (SELECT 1 FROM api_keys k
                                 WHERE k.id = t.key_id AND k.revoked_at IS NULL)) AS "active!""#,
        ticket_hash(ticket)
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::Unauthorized(
            "invalid_ticket",
            "the ticket is unknown or was already used; get a new one from POST /api/v1/notifications/ticket".into(),
        ));
    };
    if row.expires_at <= now {
        return Err(ApiError::Unauthorized(
            "ticket_expired",
            "the ticket expired (tickets last 30 seconds); get a new one from POST /api/v1/notifications/ticket".into(),
        ));
    }
    if !row.active {
        return Err(ApiError::Unauthorized(
            "api_key_revoked",
            "the API key this ticket was issued to has been revoked".into(),
        ));
    }
    let scope: Scope = row
        .scope
        .parse()
        .map_err(|e: String| anyhow::anyhow!("stored ticket scope: {e}"))?;
    Ok(Principal {
        key_id: row.key_id,
        name: row.key_name,
        scope,
    })
}

/// Committed events after `since` whose type matches one of `patterns` (SQL `LIKE`; none means
/// all), oldest first.
pub async fn after_matching(
    db: &PgPool,
    since: i64,
    patterns: &[String],
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id AS "id!", type AS kind, ts, data FROM events
           WHERE id > $1 AND (cardinality($2::text[]) = 0 OR type LIKE ANY($2))
           ORDER BY id LIMIT $3 OFFSET $4"#,
        since,
        patterns,
        limit,
        offset
    )
    .fetch_all(db)
    .await
}

/// How many stored events follow `since` and match `patterns`.
pub async fn count_after_matching(
    db: &PgPool,
    since: i64,
    patterns: &[String],
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM events
           WHERE id > $1 AND (cardinality($2::text[]) = 0 OR type LIKE ANY($2))"#,
        since,
        patterns
    )
    .fetch_one(db)
    .await
}

/// The keys among `keys` that are revoked (the bootstrap key, nil, never is).
pub async fn revoked_among(db: &PgPool, keys: &[uuid::Uuid]) -> sqlx::Result<Vec<uuid::Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM api_keys WHERE id = ANY($1) AND revoked_at IS NOT NULL",
        keys
    )
    .fetch_all(db)
    .await
}
