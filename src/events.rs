//! Events for every replica and every client: one call that each capability uses to announce
//! something (`kb.updated`, `license.changed`, `usage.threshold`, `scan.*`, …).
//!
//! [`publish`] inserts a row into `events`. At commit a trigger gives it its public id (in
//! commit order, so a reader that has seen id N never later finds a smaller one) and sends
//! `NOTIFY` on [`CHANNEL`] with `{"id", "type", "ts", "data"}` (`data` left out when large),
//! which every replica's listeners follow. Inside a transaction nothing is visible or sent
//! unless that transaction commits. The table is what WebSocket clients replay from
//! (`?since=`), so an event is never only in flight.

use sqlx::PgExecutor;

/// The PostgreSQL channel every replica listens on.
pub const CHANNEL: &str = "co_events";

/// Event types: lowercase dot-separated words (`scan.completed`), at most 100 characters. The
/// table has the same check; this one gives callers a clear error first.
pub fn valid_type(kind: &str) -> bool {
    kind.len() <= 100
        && !kind.is_empty()
        && kind.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Stores `{"type": kind, "data": data}` and announces it at commit (at once outside a
/// transaction). Returns nothing: the id exists only once the transaction commits.
pub async fn publish<'e>(
    db: impl PgExecutor<'e>,
    kind: &str,
    data: serde_json::Value,
) -> sqlx::Result<()> {
    if !valid_type(kind) {
        return Err(sqlx::Error::Protocol(format!(
            "{kind:?} is not an event type (lowercase dot-separated words)"
        )));
    }
    sqlx::query!(
        "INSERT INTO events (type, data) VALUES ($1, $2)",
        kind,
        data
    )
    .execute(db)
    .await?;
    Ok(())
}

/// [`publish`] on its own (committed at once), returning the event's id.
pub async fn publish_committed(
    db: &sqlx::PgPool,
    kind: &str,
    data: serde_json::Value,
) -> sqlx::Result<i64> {
    if !valid_type(kind) {
        return Err(sqlx::Error::Protocol(format!(
            "{kind:?} is not an event type (lowercase dot-separated words)"
        )));
    }
    let seq = sqlx::query_scalar!(
        "INSERT INTO events (type, data) VALUES ($1, $2) RETURNING seq",
        kind,
        data
    )
    .fetch_one(db)
    .await?;
    // The statement committed on its own, so the trigger has given the row its id.
    sqlx::query_scalar!(r#"SELECT id AS "id!" FROM events WHERE seq = $1"#, seq)
        .fetch_one(db)
        .await
}

/// [`publish`] outside a transaction, where a lost announcement must not fail the caller.
pub async fn publish_or_warn<'e>(db: impl PgExecutor<'e>, kind: &str, data: serde_json::Value) {
    if let Err(err) = publish(db, kind, data).await {
        tracing::warn!(error = %err, event = kind, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::valid_type;

    #[test]
    fn event_types_are_lowercase_dotted_words() {
        for ok in ["test", "kb.updated", "scan.step_done", "document.v2.ready"] {
            assert!(valid_type(ok), "{ok}");
        }
        for bad in [
            "",
            "Kb.updated",
            "kb..updated",
            ".kb",
            "kb.",
            "kb updated",
            "kb-updated",
        ] {
            assert!(!valid_type(bad), "{bad}");
        }
        assert!(!valid_type(&"a".repeat(101)));
    }
}
