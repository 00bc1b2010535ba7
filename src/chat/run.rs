//! One question from its stored message to its stored answer. The answer is produced as a
//! sequence of events (`start`, `citation`, `delta`, `notice`, `done` or `error`, numbered 1, 2,
//! 3…) that go to the client as they are made and to `chat_message_events`, so a reader on any
//! replica can resume the stream by id. The run lives inside the response: a client that goes
//! away drops it, which stops generation at once and stores the message as `incomplete`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ChatState;
use super::answer::{self, Citation};
use super::prompt;
use super::store::{self, Billing, Ending, StoredEvent};
use super::understand::{FrameworkRef, Intent, Understanding};
use crate::kb::retrieve::Snapshot;
use crate::llm::{Llm, LlmError};
use crate::marketplace::ledger::UsageEvent;

/// Every intent's name, for the metrics exported at start-up.
pub const INTENTS: [&str; 7] = [
    "control_lookup",
    "requirement_question",
    "remediation",
    "service_assessment",
    "cross_framework",
    "framework_overview",
    "out_of_scope",
];

/// How often a long answer's events are written while it streams (a short one is written once,
/// with its end).
const FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Complete,
    Incomplete,
    Failed,
}

impl Status {
    pub const ENDED: [Status; 3] = [Status::Complete, Status::Incomplete, Status::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
        }
    }
}

/// An accepted question: its message row and its `start` event exist and its unit (if
/// billable) is charged.
pub struct Question {
    pub id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub text: String,
    pub understanding: Understanding,
    /// The KB version the question was understood on; the answer is grounded on the same one.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The `start` event, stored with the message row (see [`start_event`]).
    pub start: StoredEvent,
    pub usage: Option<UsageEvent>,
    /// When the request arrived: time to the first event and the response time count from here.
    pub received: Instant,
    /// The question's trace span, parent of the retrieve and answer spans.
    pub span: tracing::Span,
}

/// The `error` event's body, and the `error` of a JSON answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `chat_timeout`, `chat_failed` or `server_shutting_down`.
    pub code: String,
    pub message: String,
}

/// The JSON answer (`Accept: application/json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatAnswer {
    pub message_id: Uuid,
    pub conversation_id: Option<Uuid>,
    /// `complete`, `incomplete` or `failed`.
    pub status: String,
    /// Markdown.
    pub answer: String,
    /// Every control the answer cites; each `id` resolves with `GET /api/v1/kb/controls/{id}`.
    pub citations: Vec<Citation>,
    pub intent: Intent,
    pub frameworks: Vec<FrameworkRef>,
    pub services: Vec<String>,
    pub control_ids: Vec<String>,
    pub removed_ids: Vec<String>,
    pub answerer: String,
    pub billing: Billing,
    pub error: Option<ErrorBody>,
    pub duration_ms: i64,
}

enum End {
    Done,
    Failed(anyhow::Error),
    Timeout,
    Shutdown,
}

/// Who answers a question: the configured model, or the built-in answerer (always for
/// out-of-scope questions: a polite refusal needs no model and costs nothing).
pub fn answerer_for(state: &ChatState, intent: Intent) -> &'static str {
    match &state.llm {
        Some(llm) if intent != Intent::OutOfScope => llm.provider_name(),
        _ => "builtin",
    }
}

/// A message's first event. It is known before any answering starts, so it is stored in the
/// transaction that creates the message: a reader resuming on another replica sees it as soon
/// as the message exists, however long the answer then takes.
pub fn start_event(
    state: &ChatState,
    id: Uuid,
    conversation_id: Option<Uuid>,
    u: &Understanding,
) -> StoredEvent {
    StoredEvent {
        seq: 1,
        event: "start".into(),
        data: json!({
            "message_id": id,
            "conversation_id": conversation_id,
            "intent": u.intent,
            "frameworks": u.frameworks,
            "services": u.services,
            "control_ids": u.control_ids,
            "answerer": answerer_for(state, u.intent),
        }),
    }
}

/// A question being answered. Dropped before its end (the client went away), it stores what it
/// has as `incomplete`.
pub struct Run {
    state: ChatState,
    q: Question,
    events: Vec<StoredEvent>,
    flushed: usize,
    last_flush: Instant,
    sink: Option<mpsc::Sender<StoredEvent>>,
    answer: String,
    citations: Vec<Citation>,
    removed: Vec<String>,
    answerer: &'static str,
    billed: bool,
    status: Option<Status>,
    error: Option<ErrorBody>,
    duration_ms: i64,
}

impl Run {
    /// `sink` receives every event as it is made (a stream); `None` for a JSON answer.
    pub fn new(state: ChatState, q: Question, sink: Option<mpsc::Sender<StoredEvent>>) -> Self {
        let billed = q.usage.is_some();
        let answerer = answerer_for(&state, q.understanding.intent);
        Self {
            events: vec![q.start.clone()],
            // The start event was stored with the message.
            flushed: 1,
            state,
            q,
            last_flush: Instant::now(),
            sink,
            answer: String::new(),
            citations: Vec::new(),
            removed: Vec::new(),
            answerer,
            billed,
            status: None,
            error: None,
            duration_ms: 0,
        }
    }

    /// Answers the question to its end (done, failure, `CHAT_TIMEOUT_SECONDS` or shutdown) and
    /// stores the result.
    pub async fn drive(mut self) -> Self {
        let stop = self.state.stop.clone();
        let timeout = self.state.config.timeout;
        let span = self.q.span.clone();
        let end = tokio::select! {
            result = tokio::time::timeout(timeout, self.generate()).instrument(span) => match result {
                Ok(Ok(())) => End::Done,
                Ok(Err(err)) => End::Failed(err),
                Err(_) => End::Timeout,
            },
            () = stop.cancelled() => End::Shutdown,
        };
        self.end(end).await;
        self
    }

    async fn generate(&mut self) -> anyhow::Result<()> {
        let u = self.q.understanding.clone();
        let llm = self
            .state
            .llm
            .clone()
            .filter(|_| self.answerer != "builtin");
        let start = self.events[0].clone();
        self.deliver(&start).await;
        // Ranking is milliseconds of CPU: off the async workers, which also lets the response
        // send `start` while it runs instead of with everything else.
        let span = tracing::info_span!(parent: &self.q.span, "retrieve");
        let (snapshot, text, understood) =
            (self.q.snapshot.clone(), self.q.text.clone(), u.clone());
        let grounding = tokio::task::spawn_blocking(move || {
            span.in_scope(|| answer::ground_on(snapshot, &text, &understood))
        })
        .await?;
        if let Some(llm) = llm {
            let span =
                tracing::info_span!(parent: &self.q.span, "answer", answerer = llm.provider_name());
            match self
                .answer_with_llm(&llm, &grounding)
                .instrument(span)
                .await?
            {
                None => return Ok(()),
                Some(err) => {
                    tracing::warn!(error = %err, code = err.code(), provider = llm.provider_name(),
                        message_id = %self.q.id, "LLM answer failed; answering with the built-in answerer");
                    let restart = !self.answer.is_empty();
                    self.emit(
                        "notice",
                        json!({
                            "code": err.code(),
                            "message": format!(
                                "the language model ({}) did not answer: {err}; the built-in answer follows{}",
                                llm.provider_name(),
                                if restart { " and replaces the text so far" } else { "" }
                            ),
                            "restart": restart,
                        }),
                    )
                    .await;
                    self.answer.clear();
                    self.citations.clear();
                    self.removed.clear();
                    self.answerer = "builtin";
                }
            }
        }
        let composed = tracing::info_span!(parent: &self.q.span, "answer")
            .in_scope(|| answer::compose(&self.q.text, &u, &grounding));
        for citation in &composed.citations {
            self.emit("citation", serde_json::to_value(citation)?).await;
        }
        self.citations = composed.citations;
        for chunk in chunks(&composed.text) {
            self.answer.push_str(chunk);
            self.emit("delta", json!({ "text": chunk })).await;
        }
        Ok(())
    }

    /// Streams the model's answer, every control id in it checked against the KB (unknown ones
    /// removed from the text and reported). `Some(error)`: the model failed and the built-in
    /// answer must take over.
    async fn answer_with_llm(
        &mut self,
        llm: &Llm,
        grounding: &answer::Grounding,
    ) -> anyhow::Result<Option<LlmError>> {
        let user = prompt::user_message(&self.q.text, &grounding.context());
        let mut tokens = match llm.stream(prompt::system_prompt(), &user).await {
            Ok(tokens) => tokens,
            Err(err) => return Ok(Some(err)),
        };
        // Text is held back to a line end (or a sentence end in a long line), so that an id is
        // checked whole before any of it reaches the client.
        let mut pending = String::new();
        while let Some(token) = tokens.next().await {
            match token {
                Ok(token) => pending.push_str(&token),
                Err(err) => return Ok(Some(err)),
            }
            if let Some(cut) = safe_cut(&pending) {
                let piece: String = pending.drain(..cut).collect();
                self.emit_checked(piece, grounding).await?;
            }
        }
        if !pending.is_empty() {
            self.emit_checked(pending, grounding).await?;
        }
        Ok(None)
    }

    /// One piece of model text: its real controls become citations (announced before the text
    /// that names them), ids the KB does not hold are cut out.
    async fn emit_checked(
        &mut self,
        mut text: String,
        grounding: &answer::Grounding,
    ) -> anyhow::Result<()> {
        let (citations, unknown) = grounding.verify(&text);
        for id in unknown {
            text = remove_id(&text, &id);
            if !self.removed.contains(&id) {
                self.removed.push(id);
            }
        }
        for citation in citations {
            if self.citations.iter().any(|c| c.id == citation.id) {
                continue;
            }
            let citation = grounding.citation(&citation.id).unwrap_or(citation);
            self.emit("citation", serde_json::to_value(&citation)?)
                .await;
            self.citations.push(citation);
        }
        if !text.is_empty() {
            self.answer.push_str(&text);
            self.emit("delta", json!({ "text": text })).await;
        }
        Ok(())
    }

    async fn emit(&mut self, event: &str, data: Value) {
        let event = self.push(event, data);
        self.deliver(&event).await;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush().await;
        }
    }

    /// Numbers an event and keeps it for storage (not yet sent).
    fn push(&mut self, event: &str, data: Value) -> StoredEvent {
        let event = StoredEvent {
            seq: self.events.len() as i32 + 1,
            event: event.to_string(),
            data,
        };
        self.events.push(event.clone());
        event
    }

    /// Sends an event to the client, if one is listening.
    async fn deliver(&self, event: &StoredEvent) {
        if event.seq == 1 {
            metrics::histogram!("cloud_optimizer_chat_first_event_seconds")
                .record(self.q.received.elapsed().as_secs_f64());
        }
        if let Some(sink) = &self.sink {
            // A closed sink means the client left; the run is about to be dropped.
            let _ = sink.send(event.clone()).await;
        }
    }

    /// Writes the events not yet stored, for readers resuming on other replicas.
    async fn flush(&mut self) {
        self.last_flush = Instant::now();
        let pending = &self.events[self.flushed..];
        if pending.is_empty() {
            return;
        }
        let written = async {
            let mut tx = self.state.db.begin().await?;
            store::append_events(&mut tx, self.q.id, pending).await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => self.flushed = self.events.len(),
            // Kept for the next flush or the end, which writes them with the message.
            Err(err) => {
                tracing::warn!(error = %err, message_id = %self.q.id, "storing chat events failed")
            }
        }
    }

    async fn end(&mut self, end: End) {
        let (status, error) = match end {
            End::Done => (Status::Complete, None),
            End::Failed(err) => {
                tracing::error!(error = format!("{err:#}"), message_id = %self.q.id, "chat answer failed");
                (
                    Status::Failed,
                    Some((
                        "chat_failed",
                        "the answer could not be completed".to_string(),
                    )),
                )
            }
            End::Timeout => (
                Status::Failed,
                Some((
                    "chat_timeout",
                    format!(
                        "the answer took longer than CHAT_TIMEOUT_SECONDS ({} s)",
                        self.state.config.timeout.as_secs()
                    ),
                )),
            ),
            End::Shutdown => (
                Status::Incomplete,
                Some((
                    "server_shutting_down",
                    "the server is restarting; ask again in a moment".to_string(),
                )),
            ),
        };
        // What fails on our side is not billed.
        if error.is_some() {
            self.refund().await;
        }
        self.duration_ms = self.q.received.elapsed().as_millis() as i64;
        let last = match &error {
            None => {
                let done = json!({
                    "message_id": self.q.id,
                    "status": status.as_str(),
                    "answerer": self.answerer,
                    "citations": self.citations,
                    "removed_ids": self.removed,
                    "billing": self.billing(),
                    "duration_ms": self.duration_ms,
                });
                self.push("done", done)
            }
            Some((code, message)) => {
                let message = if self.q.usage.is_some() && !self.billed {
                    format!("{message}; this question was not billed")
                } else {
                    message.clone()
                };
                self.error = Some(ErrorBody {
                    code: code.to_string(),
                    message: message.clone(),
                });
                let body = json!({ "code": code, "message": message, "message_id": self.q.id });
                self.push("error", body)
            }
        };
        // The answer is over: from here the run stores nothing when dropped, and the end is
        // written by a task of its own, which a client leaving (dropping this run) cannot cancel.
        // The client gets the last event only once it is stored, so `done` means "kept".
        self.status = Some(status);
        self.record(status);
        let code = self.error.as_ref().map(|e| e.code.clone());
        if let Some(stored) = self.store_end(status, code) {
            let _ = stored.await;
        }
        self.deliver(&last).await;
    }

    /// Writes the message's end and its events not yet stored, on a task of its own.
    fn store_end(
        &mut self,
        status: Status,
        error_code: Option<String>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let db = self.state.db.clone();
        let id = self.q.id;
        let events = self.events[self.flushed..].to_vec();
        self.flushed = self.events.len();
        let answer = self.answer.clone();
        let citations = self.citations.clone();
        let removed = self.removed.clone();
        let answerer = self.answerer;
        let billed = self.billed;
        let duration_ms = self.duration_ms.min(i32::MAX as i64) as i32;
        Some(runtime.spawn(async move {
            let ending = Ending {
                status: status.as_str(),
                answer: &answer,
                citations: &citations,
                removed_ids: &removed,
                answerer,
                billed,
                error_code: error_code.as_deref(),
                duration_ms,
            };
            if let Err(err) = store::finish_message(&db, id, &events, &ending).await {
                tracing::error!(error = %err, message_id = %id, "storing a chat answer failed");
            }
        }))
    }

    async fn refund(&mut self) {
        if let Some(usage) = &self.q.usage
            && self.billed
        {
            match self.state.market.refund(usage.id).await {
                Ok(refunded) => self.billed = !refunded,
                Err(err) => {
                    tracing::warn!(error = %err, message_id = %self.q.id, "refunding a failed chat answer failed")
                }
            }
        }
    }

    fn billing(&self) -> Billing {
        Billing {
            dimension: "ChatQuestions".into(),
            billed: self.billed,
        }
    }

    fn record(&self, status: Status) {
        let intent = store::intent_name(self.q.understanding.intent);
        metrics::histogram!("cloud_optimizer_chat_response_seconds",
            "status" => status.as_str(), "answerer" => self.answerer)
        .record(self.duration_ms as f64 / 1000.0);
        metrics::counter!("cloud_optimizer_chat_questions_total", "intent" => intent.clone())
            .increment(1);
        let citations: Vec<&str> = self.citations.iter().map(|c| c.id.as_str()).collect();
        tracing::info!(
            message_id = %self.q.id,
            intent,
            status = status.as_str(),
            answerer = self.answerer,
            billed = self.billed,
            duration_ms = self.duration_ms,
            citations = citations.join(" "),
            "chat answer"
        );
    }

    /// The answer as one JSON document (after [`Run::drive`]).
    pub fn into_answer(self) -> ChatAnswer {
        let u = &self.q.understanding;
        ChatAnswer {
            message_id: self.q.id,
            conversation_id: self.q.conversation_id,
            status: self.status.unwrap_or(Status::Incomplete).as_str().into(),
            answer: self.answer.clone(),
            citations: self.citations.clone(),
            intent: u.intent,
            frameworks: u.frameworks.clone(),
            services: u.services.clone(),
            control_ids: u.control_ids.clone(),
            removed_ids: self.removed.clone(),
            answerer: self.answerer.into(),
            billing: self.billing(),
            error: self.error.clone(),
            duration_ms: self.duration_ms,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // The client went away mid-answer: keep what it was sent, marked incomplete. The write
        // is one short statement; generation itself has already stopped.
        self.duration_ms = self.q.received.elapsed().as_millis() as i64;
        self.record(Status::Incomplete);
        self.store_end(Status::Incomplete, Some("client_disconnected".into()));
    }
}

/// What a stored error code meant, for answers read back after the fact.
pub fn error_message(code: &str) -> &'static str {
    match code {
        "chat_timeout" => "the answer took longer than CHAT_TIMEOUT_SECONDS",
        "chat_failed" => "the answer could not be completed",
        "server_shutting_down" => "the server restarted while answering; ask again",
        "client_disconnected" => "the client went away before the answer ended",
        "answer_abandoned" => "the server answering it stopped before the answer ended; ask again",
        _ => "the answer did not complete",
    }
}

/// Where model text may be released: after its last line end, or in a long line after its last
/// sentence end (not the "Art. " of a GDPR article, which an id may span).
fn safe_cut(pending: &str) -> Option<usize> {
    if let Some(at) = pending.rfind('\n') {
        return Some(at + 1);
    }
    if pending.len() < 400 {
        return None;
    }
    pending
        .rmatch_indices(". ")
        .map(|(at, _)| at)
        .find(|&at| !pending[..at].to_ascii_lowercase().ends_with("art"))
        .map(|at| at + 2)
}

/// `text` without the mentions of the unknown citation id `id` (`framework:native`, as
/// [`answer::verify`] reports it), however it was written (`control:` prefix, a space after
/// the colon, any case).
fn remove_id(text: &str, id: &str) -> String {
    let Some((framework, native)) = id.split_once(':') else {
        return text.to_string();
    };
    let pattern = format!(
        r"(?i)\[?(?:control:)?{}:\s?{}\]?",
        regex::escape(framework),
        regex::escape(native)
    );
    match regex::Regex::new(&pattern) {
        Ok(re) => re
            .replace_all(text, "(unverified reference removed)")
            .into_owned(),
        Err(_) => text.to_string(),
    }
}

/// The answer text cut into `delta` pieces of whole lines, up to 240 bytes each (a longer line
/// is cut at spaces); joined, they are the text again, byte for byte.
pub fn chunks(text: &str) -> Vec<&str> {
    const MAX: usize = 240;
    let mut out = Vec::new();
    // Start of the piece being gathered; lines are added while it stays within MAX.
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if at > start && at + line.len() - start > MAX {
            out.push(&text[start..at]);
            start = at;
        }
        at += line.len();
        while at - start > MAX {
            let piece = &text[start..at];
            let limit = piece.floor_char_boundary(MAX);
            let cut = piece[..limit]
                .rfind(' ')
                .filter(|&c| c > 0)
                .map(|c| c + 1)
                .unwrap_or(limit);
            out.push(&text[start..start + cut]);
            start += cut;
        }
    }
    if at > start {
        out.push(&text[start..at]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{chunks, remove_id, safe_cut};

    #[test]
    fn model_text_is_released_at_line_and_sentence_ends_never_inside_an_article() {
        assert_eq!(safe_cut("no end yet"), None);
        assert_eq!(safe_cut("one line\nrest"), Some(9));
        let long = format!("{}. Then Art. 32 applies", "word ".repeat(90));
        let cut = safe_cut(&long).unwrap();
        assert!(long[..cut].ends_with(". "), "{}", &long[..cut]);
        assert!(!long[..cut].ends_with("Art. "));
    }

    #[test]
    fn unknown_ids_are_cut_out_however_they_are_written() {
        let text = "see [pci-dss:99.1], control:PCI-DSS: 99.1 and pci-dss:9.1";
        assert_eq!(
            remove_id(text, "pci-dss:99.1"),
            "see (unverified reference removed), (unverified reference removed) and pci-dss:9.1"
        );
    }

    #[test]
    fn chunks_rejoin_to_the_text() {
        let long = "word ".repeat(200);
        let text = format!("First line.\n\n{long}\nÉtape — ünïcode\nlast");
        let parts = chunks(&text);
        assert!(parts.len() > 4);
        assert_eq!(
            chunks("a\n\nb\n"),
            ["a\n\nb\n"],
            "short lines travel together"
        );
        assert!(parts.iter().all(|p| p.len() <= 240 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        let unbroken = "x".repeat(300) + "é";
        assert_eq!(chunks(&unbroken).concat(), unbroken);
        let wide = "é".repeat(300);
        assert!(chunks(&wide).iter().all(|p| p.len() <= 240));
        assert_eq!(chunks(&wide).concat(), wide);
    }
}
