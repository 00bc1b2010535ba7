//! `/api/v1/chat…`: one-shot questions, conversations and their messages, and resuming a
//! message's event stream. A question is answered as Server-Sent Events when the client accepts
//! `text/event-stream` (and `CHAT_STREAMING_ENABLED` is on), as one JSON document otherwise.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::run::{self, ChatAnswer, Question, Run};
use super::store::{self, Conversation, ConversationDetail, Message, NewMessage, StoredEvent};
use super::understand::{self, Intent};
use super::{ChatState, understand::Understanding};
use crate::error::{ApiError, Problem};
use crate::kb::retrieve::{self as kb_retrieve, Snapshot};
use crate::marketplace::Dimension;
use crate::marketplace::ledger::{self, Idempotency};
use crate::web::{ApiJson, Auth, Page, next_link, page_bounds};

/// Longest question accepted, in characters.
const MAX_QUESTION_CHARS: usize = 4000;
const MAX_TITLE_CHARS: usize = 200;
/// How often a stream sends a comment so proxies keep an idle connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    ChatState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(ask))
        .routes(routes!(create_conversation, list_conversations))
        .routes(routes!(get_conversation, delete_conversation))
        .routes(routes!(post_message))
        .routes(routes!(get_message))
        .routes(routes!(message_events))
}

/// A one-shot question.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// 1–4000 characters, e.g. "Does HIPAA require us to encrypt EBS volumes?"
    #[schema(min_length = 1, max_length = 4000)]
    pub question: String,
}

/// A question in a conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// 1–4000 characters.
    #[schema(min_length = 1, max_length = 4000)]
    pub content: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationRequest {
    /// Up to 200 characters; without one, the conversation takes the start of its first question.
    #[schema(max_length = 200)]
    pub title: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

/// One Server-Sent Event of a chat stream, as an SSE client reads it (the schema of each event;
/// keep-alive comments are not events).
#[derive(ToSchema)]
#[allow(dead_code)] // describes the stream for the OpenAPI document only
pub struct SseEvent {
    /// `start`, `citation`, `delta`, `notice`, `done` or `error`.
    event: String,
    /// 1, 2, 3… within the message: what `Last-Event-ID` resumes after.
    id: String,
    /// The event's JSON document.
    #[schema(content_media_type = "application/json")]
    data: String,
}

const STREAM_DESCRIPTION: &str = "With `Accept: text/event-stream`: Server-Sent Events, each with an `id` \
(1, 2, 3… within the message): `start` (message_id, intent, frameworks with versions, services, \
control_ids), one `citation` per cited control, `delta` ({text}) pieces of the Markdown answer, \
`notice` ({code, message}), then `done` (message_id, citations, removed_ids, billing, duration_ms) \
or `error` (code, message). A comment every 15 s keeps idle connections open. Otherwise one JSON \
document.";

/// Ask a question without a conversation. Billed once as `ChatQuestions` (out-of-scope questions
/// are free; a failure on our side is refunded); 402 before any work when the license or trial
/// does not allow another question. Send `Idempotency-Key` to make retries safe: a retry gets the
/// first answer (or its stream) again without a second charge.
#[utoipa::path(post, path = "/chat", tag = "chat", request_body = AskRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$",
        description = "makes a retry return the first answer without a second charge")),
    responses((status = 200, description = STREAM_DESCRIPTION,
            content((ChatAnswer = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 402, body = Problem, description = "the license or trial does not allow another question"),
        (status = 406, body = Problem, description = "the client accepts neither JSON nor an event stream"),
        (status = 422, body = Problem),
        (status = 500, body = Problem, description = "JSON answers only: the answer failed (`chat_failed`, refunded)"),
        (status = 503, body = Problem, description = "JSON answers only: the server is shutting down (`server_shutting_down`, refunded)"),
        (status = 504, body = Problem, description = "JSON answers only: longer than CHAT_TIMEOUT_SECONDS (`chat_timeout`, refunded)")),
    security(("api_key" = [])))]
async fn ask(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let canonical = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    let request: AskRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable("invalid_question", e.to_string()))?;
    let question = valid_question(&request.question, "question")?;
    let reply = negotiate(&headers, state.config.streaming)?;
    answer(
        &state,
        caller.key_id,
        &headers,
        None,
        question,
        &canonical,
        reply,
        received,
    )
    .await
}

/// Ask a question in a conversation; answered and billed like `POST /chat`. Follow-up questions
/// that name no framework, service or control ("and for PCI?") are understood with the
/// conversation's earlier questions.
#[utoipa::path(post, path = "/chat/conversations/{id}/messages", tag = "chat", request_body = MessageRequest,
    params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$",
        description = "makes a retry return the first answer without a second charge")),
    responses((status = 200, description = STREAM_DESCRIPTION,
            content((ChatAnswer = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 402, body = Problem, description = "the license or trial does not allow another question"),
        (status = 404, body = Problem), (status = 406, body = Problem), (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn post_message(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let id = parse_id(&id, "conversation")?;
    let canonical = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    let request: MessageRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable("invalid_message", e.to_string()))?;
    let question = valid_question(&request.content, "content")?;
    let reply = negotiate(&headers, state.config.streaming)?;
    store::owns_conversation(&state.db, caller.key_id, id).await?;
    answer(
        &state,
        caller.key_id,
        &headers,
        Some(id),
        question,
        &canonical,
        reply,
        received,
    )
    .await
}

fn valid_question<'a>(raw: &'a str, field: &str) -> Result<&'a str, ApiError> {
    let question = raw.trim();
    if question.is_empty() {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_question",
                format!("{field} must not be empty"),
            )
            .with("field", field),
        ));
    }
    let chars = question.chars().count();
    if chars > MAX_QUESTION_CHARS {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "question_too_long",
                format!("{field} has {chars} characters; the most is {MAX_QUESTION_CHARS}"),
            )
            .with("field", field)
            .with("maximum", MAX_QUESTION_CHARS),
        ));
    }
    Ok(question)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Json,
    Stream,
}

/// The answer form the client prefers by its `Accept` header (quality values, then order).
/// No header, `*/*` and `application/*` mean JSON.
fn negotiate(headers: &HeaderMap, streaming: bool) -> Result<Reply, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(Reply::Json);
    };
    let accept = accept.to_str().unwrap_or_default();
    let mut best: Option<(f32, Reply)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        let reply = match media.as_str() {
            "text/event-stream" => Reply::Stream,
            "application/json" | "application/*" | "*/*" | "application/problem+json" => {
                Reply::Json
            }
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, reply));
        }
    }
    match best {
        Some((_, Reply::Stream)) if !streaming => Ok(Reply::Json),
        Some((_, reply)) => Ok(reply),
        None if accept.trim().is_empty() => Ok(Reply::Json),
        None => Err(ApiError::problem(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "chat answers are application/json or text/event-stream; send one of them in Accept",
        ))),
    }
}

/// Everything after validation: idempotency, understanding, the charge and the message row in
/// one transaction, then the answer.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &ChatState,
    key: Uuid,
    headers: &HeaderMap,
    conversation_id: Option<Uuid>,
    question: &str,
    canonical: &[u8],
    reply: Reply,
    received: Instant,
) -> Result<Response, ApiError> {
    let idempotency_key = ledger::key_from(headers)?;
    let id = Uuid::new_v4();
    // The trace of one question: chat → understand → retrieve → answer.
    let span = tracing::info_span!("chat", message_id = %id);
    let (understanding, snapshot) = understand_in(state, conversation_id, question)
        .instrument(tracing::info_span!(parent: &span, "understand"))
        .await?;
    let start = run::start_event(state, id, conversation_id, &understanding);
    let mut tx = state.db.begin().await?;
    if let Some(idem) = &idempotency_key {
        let scope = match conversation_id {
            Some(c) => format!("chat:{c}"),
            None => "chat".into(),
        };
        let hash = ledger::request_hash(&[scope.as_bytes(), canonical]);
        if let Idempotency::Replay(_, stored) = ledger::begin(&mut tx, key, idem, &hash).await? {
            tx.rollback().await?;
            let message = stored
                .get("message_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("idempotency record without a message id"))?;
            return Ok(ledger::mark_replayed(
                replay(state, key, message, reply).await?,
            ));
        }
    }
    let usage = if understanding.intent == Intent::OutOfScope {
        None
    } else {
        Some(
            state
                .market
                .charge(
                    &mut tx,
                    Dimension::ChatQuestions,
                    "chat.question",
                    Some(key),
                    Some(&id.to_string()),
                )
                .await?,
        )
    };
    store::insert_message(
        &mut tx,
        &NewMessage {
            id,
            conversation_id,
            key,
            question,
            understanding: &understanding,
            billed: usage.is_some(),
            usage_event_id: usage.as_ref().map(|u| u.id),
            created_at: chrono::Utc::now(),
            start: &start.data,
        },
    )
    .await?;
    if let Some(idem) = &idempotency_key {
        ledger::finish(
            &mut tx,
            key,
            idem,
            StatusCode::OK,
            &json!({ "message_id": id }),
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(usage) = &usage {
        state.market.charged(usage).await;
    }
    let question = Question {
        id,
        conversation_id,
        text: question.to_string(),
        understanding,
        snapshot,
        start,
        usage,
        received,
        span,
    };
    Ok(match reply {
        Reply::Json => {
            let answer = Run::new(state.clone(), question, None)
                .drive()
                .await
                .into_answer();
            match &answer.error {
                None => Json(answer).into_response(),
                // An answer that failed on our side is an error of the request, not a 200.
                Some(error) => {
                    let status = match error.code.as_str() {
                        "chat_timeout" => StatusCode::GATEWAY_TIMEOUT,
                        "server_shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    return Err(ApiError::problem(
                        Problem::new(status, &error.code, error.message.clone())
                            .with("message_id", answer.message_id)
                            .with("billing", &answer.billing),
                    ));
                }
            }
        }
        Reply::Stream => {
            let (sink, events) = mpsc::channel(64);
            let run = Run::new(state.clone(), question, Some(sink));
            let work = Box::pin(async move {
                run.drive().await;
            });
            sse(Driven {
                work: Some(work),
                events,
            })
        }
    })
}

/// Understands the question on the active KB version (returned: the answer is grounded on the
/// same one); a follow-up that names no framework, service or control borrows them from the
/// conversation's earlier questions.
async fn understand_in(
    state: &ChatState,
    conversation_id: Option<Uuid>,
    question: &str,
) -> Result<(Understanding, Option<Arc<Snapshot>>), ApiError> {
    let snapshot = kb_retrieve::active(&state.kb).await?;
    let mut understanding = understand::understand_on(snapshot.as_deref(), question);
    if let Some(conversation) = conversation_id
        && understanding.intent != Intent::OutOfScope
        && understanding.frameworks.is_empty()
        && understanding.services.is_empty()
        && understanding.control_ids.is_empty()
    {
        for earlier in store::previous_questions(&state.db, conversation)
            .await?
            .iter()
            .rev()
        {
            let before = understand::understand_on(snapshot.as_deref(), earlier);
            if !before.frameworks.is_empty() || !before.services.is_empty() {
                understanding.frameworks = before.frameworks;
                understanding.services = before.services;
                break;
            }
        }
    }
    Ok((understanding, snapshot))
}

/// The response of a retried request: the first request's message, as JSON or as its stream.
async fn replay(
    state: &ChatState,
    key: Uuid,
    message: Uuid,
    reply: Reply,
) -> Result<Response, ApiError> {
    match reply {
        Reply::Stream => Ok(sse(follow(state.clone(), message, 0))),
        Reply::Json => {
            // An answer still being written (the first request is streaming it) is waited for.
            follow(state.clone(), message, 0)
                .for_each(|_| async {})
                .await;
            let m = store::message(&state.db, key, message).await?;
            Ok(Json(answer_of(m)).into_response())
        }
    }
}

fn answer_of(m: Message) -> ChatAnswer {
    let error = m.error.clone().map(|code| super::run::ErrorBody {
        message: super::run::error_message(&code).into(),
        code,
    });
    ChatAnswer {
        message_id: m.id,
        conversation_id: m.conversation_id,
        status: m.status,
        answer: m.answer,
        citations: m.citations,
        intent: m.intent,
        frameworks: m.frameworks,
        services: m.services,
        control_ids: m.control_ids,
        removed_ids: m.removed_ids,
        answerer: m.answerer,
        billing: m.billing,
        error,
        duration_ms: m.duration_ms.unwrap_or_default() as i64,
    }
}

/// Start a conversation. The body may be omitted, `{}` or `null`.
#[utoipa::path(post, path = "/chat/conversations", tag = "chat",
    request_body(content = Option<ConversationRequest>, description = "optional: no body and `null` are the same as `{}`"),
    responses((status = 201, body = Conversation,
        headers(("Location" = String, description = "`/api/v1/chat/conversations/{id}`"))),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_conversation(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    body: Option<ApiJson<Option<ConversationRequest>>>,
) -> Result<Response, ApiError> {
    let request = body.and_then(|ApiJson(b)| b).unwrap_or_default();
    let title = match request.title.as_deref().map(str::trim) {
        Some(title) if title.chars().count() > MAX_TITLE_CHARS => {
            return Err(ApiError::unprocessable(
                "title_too_long",
                format!("title must be at most {MAX_TITLE_CHARS} characters"),
            ));
        }
        Some("") | None => None,
        Some(title) => Some(title),
    };
    let conversation = store::create_conversation(&state.db, caller.key_id, title).await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/v1/chat/conversations/{}", conversation.id),
        )],
        Json(conversation),
    )
        .into_response())
}

/// This API key's conversations, most recently used first.
#[utoipa::path(get, path = "/chat/conversations", tag = "chat", params(ListParams),
    responses((status = 200, body = Page<Conversation>), (status = 400, body = Problem)),
    security(("api_key" = [])))]
async fn list_conversations(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<Conversation>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 50, 200)?;
    let (items, total) = store::list_conversations(&state.db, caller.key_id, limit, offset).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

/// A conversation with its messages, oldest first.
#[utoipa::path(get, path = "/chat/conversations/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_conversation(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let id = parse_id(&id, "conversation")?;
    Ok(Json(
        store::conversation_detail(&state.db, caller.key_id, id).await?,
    ))
}

/// Delete a conversation and its messages. (Usage already billed stays in the ledger.)
#[utoipa::path(delete, path = "/chat/conversations/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn delete_conversation(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "conversation")?;
    store::delete_conversation(&state.db, caller.key_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One message: the question, its answer so far or in full, citations and billing.
#[utoipa::path(get, path = "/chat/messages/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_message(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let id = parse_id(&id, "message")?;
    Ok(Json(store::message(&state.db, caller.key_id, id).await?))
}

/// A message's events after `Last-Event-ID` (all of them without it), as Server-Sent Events:
/// the rest of a stream still being written (on any replica), or the stored events of a finished
/// message. The stream ends after `done` or `error`.
#[utoipa::path(get, path = "/chat/messages/{id}/events", tag = "chat",
    params(("id" = Uuid, Path),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,9}$", description = "the `id` of the last event received")),
    responses((status = 200, content_type = "text/event-stream", body = SseEvent, description = STREAM_DESCRIPTION),
        (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn message_events(
    State(state): State<ChatState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "message")?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<i32>().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_last_event_id",
                    "Last-Event-ID must be the `id` of an event of this message (a number)",
                )
            })?,
    };
    store::message(&state.db, caller.key_id, id).await?;
    Ok(sse(follow(state, id, after)))
}

fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    let code = match what {
        "conversation" => "invalid_conversation_id",
        _ => "invalid_message_id",
    };
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid(code, format!("{raw:?} is not a {what} id (a UUID)")))
}

/// Server-Sent Events from stored-event items, with keep-alives and the headers that stop
/// proxies from buffering.
fn sse(events: impl Stream<Item = StoredEvent> + Send + 'static) -> Response {
    let open = OpenStream::new();
    let stream = events.map(move |e| {
        let _open = &open;
        Ok::<_, Infallible>(
            Event::default()
                .id(e.seq.to_string())
                .event(e.event)
                .data(e.data.to_string()),
        )
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Counts open streams for `cloud_optimizer_chat_streams_open`.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!("cloud_optimizer_chat_streams_open").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("cloud_optimizer_chat_streams_open").decrement(1.0);
    }
}

/// The events of a run, with the run itself polled by the response body: when the client goes
/// away the body is dropped, and the run with it.
struct Driven {
    work: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    events: mpsc::Receiver<StoredEvent>,
}

impl Stream for Driven {
    type Item = StoredEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoredEvent>> {
        let this = self.get_mut();
        if let Some(work) = this.work.as_mut()
            && work.as_mut().poll(cx).is_ready()
        {
            this.work = None;
        }
        // The run owns the sender: once it ended and its events are read, this is the end.
        this.events.poll_recv(cx)
    }
}

/// A message's stored events after `after`, then the ones its writer (on any replica) stores
/// later, until the message ends or the server stops.
fn follow(state: ChatState, id: Uuid, after: i32) -> impl Stream<Item = StoredEvent> + Send {
    struct Follow {
        state: ChatState,
        id: Uuid,
        after: i32,
        pending: VecDeque<StoredEvent>,
        ended: bool,
        feed: tokio::sync::broadcast::Receiver<Uuid>,
    }
    // Subscribed before the first read, so no notification falls between the two.
    let feed = state.feed.subscribe();
    let start = Follow {
        state,
        id,
        after,
        pending: VecDeque::new(),
        ended: false,
        feed,
    };
    stream::unfold(start, |mut f| async move {
        loop {
            if let Some(event) = f.pending.pop_front() {
                f.after = event.seq;
                return Some((event, f));
            }
            if f.ended {
                return None;
            }
            match store::events_after(&f.state.db, f.id, f.after).await {
                Ok((status, events)) => {
                    f.ended = status != "streaming";
                    f.pending.extend(events);
                }
                Err(err) => {
                    tracing::warn!(error = %err, message_id = %f.id, "reading chat events failed");
                    return None;
                }
            }
            if f.pending.is_empty() && !f.ended {
                let stop = f.state.stop.clone();
                let (id, feed) = (f.id, &mut f.feed);
                let wait = async {
                    loop {
                        match feed.recv().await {
                            Ok(changed) if changed == id => return,
                            Ok(_) => continue,
                            // Missed some: read again.
                            Err(_) => return,
                        }
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = wait => {}
                    // A notification lost while the listener reconnected costs at most this.
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    })
}
