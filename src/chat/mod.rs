//! The security Q&A chat: conversations and their messages (`store`), one question from
//! understanding to its stored answer (`run`: understand → retrieve → answer, streamed as events
//! and persisted so a stream resumes on any replica), the built-in answerer's steps
//! (`understand`, `answer`), what the configured LLM is told (`prompt`; the client is the shared
//! `llm`) and the `/api/v1/chat…` routes (`api`). Answers come from the KB;
//! a question is billed as `ChatQuestions` through the marketplace ledger.

pub mod answer;
pub mod api;
pub mod prompt;
pub mod run;
pub mod store;
pub mod understand;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ChatConfig;
use crate::kb::KbState;
use crate::llm::Llm;
use crate::marketplace::Marketplace;

pub use api::router;

/// The PostgreSQL channel a message's writer notifies (payload: the message id) when it stored
/// new events, so readers on every replica follow a stream they did not produce.
const CHANNEL: &str = "co_chat";

#[derive(Clone)]
pub struct ChatState {
    pub db: PgPool,
    /// Where answers come from.
    pub kb: KbState,
    /// The ledger every question is charged to.
    pub market: Arc<Marketplace>,
    pub config: ChatConfig,
    /// Ends open streams (with a final event) at shutdown.
    pub stop: CancellationToken,
    /// Ids of messages that have new stored events, from this replica's `LISTEN co_chat`.
    pub feed: broadcast::Sender<Uuid>,
    /// The configured language model (`LLM_PROVIDER`); `None`: the built-in answerer only.
    pub llm: Option<Arc<Llm>>,
}

impl ChatState {
    pub fn new(
        db: PgPool,
        kb: KbState,
        market: Arc<Marketplace>,
        config: ChatConfig,
        llm: Option<Arc<Llm>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            kb,
            market,
            config,
            stop,
            feed: broadcast::channel(1024).0,
            llm,
        }
    }
}

/// Relays `co_chat` notifications to this replica's readers of resumed streams.
struct Relay(broadcast::Sender<Uuid>);

impl crate::db::Follower for Relay {
    async fn connected(&self, _up: bool) {}

    async fn notified(&self, payload: &str) {
        if let Ok(id) = payload.parse() {
            let _ = self.0.send(id);
        }
    }
}

/// Answers one question without storing or billing anything, once at start-up: the first real
/// question then finds the KB snapshot read and every rule table of understanding and ranking
/// built (about a fifth of a second otherwise in a debug build, paid by the first user after
/// each deploy).
pub async fn warm_up(kb: KbState) {
    const QUESTION: &str = "Does HIPAA require encryption of EBS volumes?";
    let snapshot = match crate::kb::retrieve::active(&kb).await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "chat warm-up: reading the KB failed"
            );
            return;
        }
    };
    let _ = tokio::task::spawn_blocking(move || {
        let u = understand::understand_on(Some(&snapshot), QUESTION);
        let grounding = answer::ground_on(Some(snapshot), QUESTION, &u);
        answer::compose(QUESTION, &u, &grounding);
    })
    .await;
}

/// Follows `co_chat` until shutdown, and now and then marks messages whose writer vanished
/// (a replica killed mid-answer) as incomplete, so their readers stop waiting.
pub async fn follow_loop(state: ChatState) {
    let relay = Relay(state.feed.clone());
    let sweep = async {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(err) =
                store::sweep_abandoned(&state.db, &state.market, state.config.timeout).await
            {
                tracing::warn!(error = %err, "marking abandoned chat answers failed");
            }
        }
    };
    tokio::select! {
        () = crate::db::follow(&state.db, CHANNEL, &relay, state.stop.clone()) => {}
        () = sweep => {}
        () = state.stop.cancelled() => {}
    }
}

/// Every chat series from start-up, so dashboards see zeros rather than gaps.
pub fn export_initial_metrics(state: &ChatState) {
    metrics::gauge!("cloud_optimizer_chat_streams_open").increment(0.0);
    let mut answerers = vec!["builtin"];
    answerers.extend(state.llm.as_ref().map(|l| l.provider_name()));
    for status in run::Status::ENDED {
        for &answerer in &answerers {
            let _ = metrics::histogram!("cloud_optimizer_chat_response_seconds",
                "status" => status.as_str(), "answerer" => answerer);
        }
    }
    let _ = metrics::histogram!("cloud_optimizer_chat_first_event_seconds");
    for intent in run::INTENTS {
        metrics::counter!("cloud_optimizer_chat_questions_total", "intent" => intent).increment(0);
    }
}
