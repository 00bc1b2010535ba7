//! Conversations, messages and stored stream events in PostgreSQL. Every read is scoped to the
//! API key that owns the row: another key's conversation is a 404, as if it did not exist.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::answer::Citation;
use super::understand::{FrameworkRef, Intent, Understanding};
use axum::http::StatusCode;

use crate::error::{ApiError, Problem};
use crate::marketplace::Marketplace;

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    /// The client's title, or the start of the first question; `null` until then.
    pub title: Option<String>,
    /// Questions asked in it so far.
    pub messages: i64,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    /// When its last question was asked (lists are newest first by this).
    #[serde(with = "crate::web::timestamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    pub id: Uuid,
    pub title: Option<String>,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp")]
    pub updated_at: DateTime<Utc>,
    /// Oldest first.
    pub messages: Vec<Message>,
}

/// Whether and how a question was billed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Billing {
    /// Always `ChatQuestions`.
    pub dimension: String,
    /// `false` for out-of-scope questions, which are free, and for refunded failures.
    pub billed: bool,
}

/// One question and its answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: Uuid,
    /// `null` for a one-shot question (`POST /chat`).
    pub conversation_id: Option<Uuid>,
    pub question: String,
    /// `streaming` (being answered), `complete`, `incomplete` (the client went away, the server
    /// stopped, or its replica vanished) or `failed` (an error or `CHAT_TIMEOUT_SECONDS`).
    #[schema(pattern = "^(streaming|complete|incomplete|failed)$")]
    pub status: String,
    pub intent: Intent,
    pub frameworks: Vec<FrameworkRef>,
    pub services: Vec<String>,
    pub control_ids: Vec<String>,
    /// Markdown; what was streamed so far for an unfinished message.
    pub answer: String,
    pub citations: Vec<Citation>,
    /// Control ids a language model wrote that do not exist in the KB; removed from `answer`.
    pub removed_ids: Vec<String>,
    /// `builtin`, or the LLM provider that wrote the answer.
    pub answerer: String,
    pub billing: Billing,
    /// The `error` event's code when the answer failed.
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp::option")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A stored stream event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i32,
    pub event: String,
    pub data: Value,
}

fn not_found(what: &'static str, id: Uuid) -> ApiError {
    let code = match what {
        "conversation" => "conversation_not_found",
        _ => "message_not_found",
    };
    ApiError::problem(Problem::new(
        StatusCode::NOT_FOUND,
        code,
        format!("no {what} {id} belongs to this API key"),
    ))
}

pub async fn create_conversation(
    db: impl sqlx::PgExecutor<'_>,
    key: Uuid,
    title: Option<&str>,
) -> Result<Conversation, ApiError> {
    let now = Utc::now();
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO chat_conversations (id, api_key_id, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        id,
        key,
        title,
        now
    )
    .execute(db)
    .await?;
    Ok(Conversation {
        id,
        title: title.map(str::to_string),
        messages: 0,
        created_at: now,
        updated_at: now,
    })
}

pub async fn list_conversations(
    db: &PgPool,
    key: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Conversation>, i64), ApiError> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM chat_conversations WHERE api_key_id = $1"#,
        key
    )
    .fetch_one(db)
    .await?;
    let items = sqlx::query_as!(
        Conversation,
        r#"SELECT c.id, c.title, c.created_at, c.updated_at,
                  (SELECT count(*) FROM chat_messages m WHERE m.conversation_id = c.id) AS "messages!"
           FROM chat_conversations c WHERE c.api_key_id = $1
           ORDER BY c.updated_at DESC, c.id DESC LIMIT $2 OFFSET $3"#,
        key,
        limit,
        offset
    )
    .fetch_all(db)
    .await?;
    Ok((items, total))
}

/// Checks the caller owns the conversation.
pub async fn owns_conversation(db: &PgPool, key: Uuid, id: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "SELECT id FROM chat_conversations WHERE id = $1 AND api_key_id = $2",
        id,
        key
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_found("conversation", id))?;
    Ok(())
}

/// The questions asked before in a conversation, oldest first (for follow-up questions).
pub async fn previous_questions(db: &PgPool, id: Uuid) -> Result<Vec<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT question FROM chat_messages WHERE conversation_id = $1 ORDER BY created_at, id",
        id
    )
    .fetch_all(db)
    .await?)
}

pub async fn conversation_detail(
    db: &PgPool,
    key: Uuid,
    id: Uuid,
) -> Result<ConversationDetail, ApiError> {
    let row = sqlx::query!(
        "SELECT title, created_at, updated_at FROM chat_conversations WHERE id = $1 AND api_key_id = $2",
        id,
        key
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_found("conversation", id))?;
    let ids = sqlx::query_scalar!(
        "SELECT id FROM chat_messages WHERE conversation_id = $1 ORDER BY created_at, id",
        id
    )
    .fetch_all(db)
    .await?;
    Ok(ConversationDetail {
        id,
        title: row.title,
        created_at: row.created_at,
        updated_at: row.updated_at,
        messages: messages(db, &ids).await?,
    })
}

pub async fn delete_conversation(db: &PgPool, key: Uuid, id: Uuid) -> Result<(), ApiError> {
    let deleted = sqlx::query!(
        "DELETE FROM chat_conversations WHERE id = $1 AND api_key_id = $2",
        id,
        key
    )
    .execute(db)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(not_found("conversation", id));
    }
    Ok(())
}

/// What a new message starts with.
pub struct NewMessage<'a> {
    pub id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub key: Uuid,
    pub question: &'a str,
    pub understanding: &'a Understanding,
    pub billed: bool,
    pub usage_event_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The data of the message's `start` event (seq 1), stored with it.
    pub start: &'a Value,
}

pub async fn insert_message(tx: &mut PgConnection, m: &NewMessage<'_>) -> Result<(), ApiError> {
    if let Some(conversation) = m.conversation_id {
        let title: String = m.question.chars().take(80).collect();
        let updated = sqlx::query!(
            "UPDATE chat_conversations SET updated_at = $2, title = coalesce(title, $3) WHERE id = $1",
            conversation,
            m.created_at,
            title.trim()
        )
        .execute(&mut *tx)
        .await?;
        // Deleted since the request checked it.
        if updated.rows_affected() == 0 {
            return Err(not_found("conversation", conversation));
        }
    }
    let understanding = serde_json::to_value(m.understanding).map_err(anyhow::Error::from)?;
    let intent = intent_name(m.understanding.intent);
    // One statement for the row and its first event: no extra round trip in the transaction
    // that precedes the client's first byte.
    sqlx::query!(
        "WITH message AS (
             INSERT INTO chat_messages (id, conversation_id, api_key_id, question, status, intent, understanding, billed, usage_event_id, created_at)
             VALUES ($1, $2, $3, $4, 'streaming', $5, $6, $7, $8, $9) RETURNING id)
         INSERT INTO chat_message_events (message_id, seq, event, data)
         SELECT id, 1, 'start', $10 FROM message",
        m.id,
        m.conversation_id,
        m.key,
        m.question,
        intent,
        understanding,
        m.billed,
        m.usage_event_id,
        m.created_at,
        m.start
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub fn intent_name(intent: Intent) -> String {
    match serde_json::to_value(intent) {
        Ok(Value::String(name)) => name,
        _ => "unknown".into(),
    }
}

/// Stores `events` and tells every replica's readers.
pub async fn append_events(
    tx: &mut PgConnection,
    message: Uuid,
    events: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i32> = events.iter().map(|e| e.seq).collect();
    let names: Vec<String> = events.iter().map(|e| e.event.clone()).collect();
    let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    sqlx::query!(
        "INSERT INTO chat_message_events (message_id, seq, event, data)
         SELECT $1, * FROM unnest($2::int[], $3::text[], $4::jsonb[])",
        message,
        &seqs,
        &names,
        &data
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "SELECT pg_notify($1, $2)",
        super::CHANNEL,
        message.to_string()
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How a message ended.
pub struct Ending<'a> {
    pub status: &'a str,
    pub answer: &'a str,
    pub citations: &'a [Citation],
    pub removed_ids: &'a [String],
    pub answerer: &'a str,
    pub billed: bool,
    pub error_code: Option<&'a str>,
    pub duration_ms: i32,
}

/// Stores the end of a message with its last events, unless it already ended (the abandoned
/// sweep may have got there first after a long stall).
pub async fn finish_message(
    db: &PgPool,
    message: Uuid,
    events: &[StoredEvent],
    end: &Ending<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let citations = serde_json::to_value(end.citations).unwrap_or_default();
    let removed = serde_json::to_value(end.removed_ids).unwrap_or_default();
    let updated = sqlx::query!(
        "UPDATE chat_messages SET status = $2, answer = $3, citations = $4, removed_ids = $5, answerer = $6,
             billed = $7, error_code = $8, duration_ms = $9, finished_at = now()
         WHERE id = $1 AND status = 'streaming'",
        message,
        end.status,
        end.answer,
        citations,
        removed,
        end.answerer,
        end.billed,
        end.error_code,
        end.duration_ms
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 1 {
        append_events(&mut tx, message, events).await?;
    }
    tx.commit().await
}

/// The id of the final event the sweep adds to an abandoned message. A writer stores its events
/// a few at a time, so the last ones its client saw may never have reached the table: the end
/// must come after any id it could have sent, and still be a valid `Last-Event-ID` (9 digits).
pub const ABANDONED_SEQ: i32 = 999_999_999;

/// Messages still `streaming` long after any answer could have ended belong to a writer that
/// vanished (a replica killed mid-answer). Each is ended as `answer_abandoned` and, like any
/// failure on our side, refunded in the same transaction, unless its usage was already reported
/// to AWS (then it stays billed, as the report cannot be taken back).
pub async fn sweep_abandoned(
    db: &PgPool,
    market: &Marketplace,
    timeout: Duration,
) -> Result<u64, ApiError> {
    let grace = timeout.as_secs_f64() + 60.0;
    let mut tx = db.begin().await?;
    let ended = sqlx::query!(
        "UPDATE chat_messages SET status = 'incomplete', error_code = 'answer_abandoned', finished_at = now()
         WHERE status = 'streaming' AND created_at < now() - make_interval(secs => $1)
         RETURNING id, billed, usage_event_id",
        grace
    )
    .fetch_all(&mut *tx)
    .await?;
    for m in &ended {
        let refunded = match (m.billed, m.usage_event_id) {
            (true, Some(usage)) => market.refund_in(&mut tx, usage).await?,
            _ => false,
        };
        if refunded {
            sqlx::query!(
                "UPDATE chat_messages SET billed = false WHERE id = $1",
                m.id
            )
            .execute(&mut *tx)
            .await?;
        }
        // The final event its writer never sent, so readers following or resuming the
        // message see it end like any other failure (appending notifies them).
        let mut message = super::run::error_message("answer_abandoned").to_string();
        if refunded {
            message.push_str("; this question was not billed");
        }
        let end = StoredEvent {
            seq: ABANDONED_SEQ,
            event: "error".into(),
            data: serde_json::json!({
                "code": "answer_abandoned", "message": message, "message_id": m.id,
            }),
        };
        append_events(&mut tx, m.id, std::slice::from_ref(&end)).await?;
    }
    tx.commit().await?;
    Ok(ended.len() as u64)
}

pub async fn message(db: &PgPool, key: Uuid, id: Uuid) -> Result<Message, ApiError> {
    let owned = sqlx::query_scalar!(
        "SELECT id FROM chat_messages WHERE id = $1 AND api_key_id = $2",
        id,
        key
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_found("message", id))?;
    messages(db, &[owned])
        .await?
        .pop()
        .ok_or_else(|| not_found("message", id))
}

async fn messages(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Message>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT m.id, m.conversation_id, m.question, m.status, m.understanding, m.answer, m.citations,
                  m.removed_ids, m.answerer, m.billed, m.error_code, m.duration_ms, m.created_at, m.finished_at
           FROM unnest($1::uuid[]) WITH ORDINALITY AS wanted(id, n)
           JOIN chat_messages m ON m.id = wanted.id
           ORDER BY wanted.n"#,
        ids
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let understanding: Understanding =
                serde_json::from_value(r.understanding).map_err(anyhow::Error::from)?;
            Ok(Message {
                id: r.id,
                conversation_id: r.conversation_id,
                question: r.question,
                status: r.status,
                intent: understanding.intent,
                frameworks: understanding.frameworks,
                services: understanding.services,
                control_ids: understanding.control_ids,
                answer: r.answer,
                citations: serde_json::from_value(r.citations).map_err(anyhow::Error::from)?,
                removed_ids: serde_json::from_value(r.removed_ids).map_err(anyhow::Error::from)?,
                answerer: r.answerer,
                billing: Billing {
                    dimension: "ChatQuestions".into(),
                    billed: r.billed,
                },
                error: r.error_code,
                duration_ms: r.duration_ms,
                created_at: r.created_at,
                finished_at: r.finished_at,
            })
        })
        .collect()
}

/// The message's status and its stored events after `after`.
pub async fn events_after(
    db: &PgPool,
    id: Uuid,
    after: i32,
) -> Result<(String, Vec<StoredEvent>), sqlx::Error> {
    let status = sqlx::query_scalar!("SELECT status FROM chat_messages WHERE id = $1", id)
        .fetch_one(db)
        .await?;
    let events = sqlx::query_as!(
        StoredEvent,
        "SELECT seq, event, data FROM chat_message_events WHERE message_id = $1 AND seq > $2 ORDER BY seq",
        id,
        after
    )
    .fetch_all(db)
    .await?;
    Ok((status, events))
}
