//! Events for every replica: one call that each capability uses to announce something
//! (`kb.updated`, `license.changed`, `usage.threshold`, …). Today they go to PostgreSQL `NOTIFY`
//! on [`CHANNEL`], which every replica's listeners follow; a notification sent inside a
//! transaction is delivered only if that transaction commits.

use sqlx::PgExecutor;

/// The PostgreSQL channel every replica listens on.
pub const CHANNEL: &str = "co_events";

/// Publishes `{"type": kind, "data": data}`. Inside a transaction it is sent at commit.
pub async fn publish<'e>(
    db: impl PgExecutor<'e>,
    kind: &str,
    data: serde_json::Value,
) -> sqlx::Result<()> {
    let event = serde_json::json!({"type": kind, "data": data});
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(event.to_string())
        .execute(db)
        .await?;
    Ok(())
}

/// [`publish`] outside a transaction, where a lost announcement must not fail the caller.
pub async fn publish_or_warn<'e>(db: impl PgExecutor<'e>, kind: &str, data: serde_json::Value) {
    if let Err(err) = publish(db, kind, data).await {
        tracing::warn!(error = %err, event = kind, "could not publish event");
    }
}
