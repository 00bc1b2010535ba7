//! The Anthropic Messages API, streamed: `POST {base}/v1/messages` with `"stream": true`,
//! `x-api-key` and `anthropic-version: 2023-06-01`. The answer is named events: `message_start`,
//! `content_block_start`, `content_block_delta` (text in `delta.text` when `delta.type` is
//! `text_delta`), `content_block_stop`, `message_delta`, `message_stop`, with `ping`s between and
//! `error` when generation fails midway. Unknown event types are skipped, as Anthropic asks.

use std::time::Duration;

use eventsource_stream::Event;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::sse::{self, Protocol, Step};
use super::{Events, LlmError};

pub(super) const API_VERSION: &str = "2023-06-01";

pub(super) struct Anthropic {
    http: reqwest::Client,
    url: String,
    api_key: SecretString,
}

impl Anthropic {
    pub(super) fn new(
        base_url: String,
        api_key: SecretString,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: super::http_client(timeout)?,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            api_key,
        })
    }

    pub(super) async fn start(
        &self,
        model: &str,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<Events, LlmError> {
        let body = json!({
            "model": model,
            "max_tokens": max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": user}],
            "stream": true,
        });
        let response = self
            .http
            .post(&self.url)
            .header("x-api-key", self.api_key.expose_secret())
            .header("anthropic-version", API_VERSION)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body)
            .send()
            .await
            .map_err(|e| sse::transport_error(&e))?;
        if !response.status().is_success() {
            return Err(super::status_error(response).await);
        }
        sse::events(response, Messages)
    }
}

/// Reads the Messages stream; the end is `message_stop`, anything short of it is cut off.
struct Messages;

impl Protocol for Messages {
    fn event(&mut self, event: &Event) -> Result<Step, LlmError> {
        // The data's `type` repeats the event name; the name is what the API documents.
        match event.event.as_str() {
            "content_block_delta" => {
                let data = sse::json(event)?;
                match data.pointer("/delta/type").and_then(|t| t.as_str()) {
                    Some("text_delta") => Ok(data
                        .pointer("/delta/text")
                        .and_then(|t| t.as_str())
                        .filter(|t| !t.is_empty())
                        .map_or(Step::Skip, |t| Step::Text(t.to_string()))),
                    // input_json_delta, thinking_delta, signature_delta, citations_delta: no text
                    // of the answer.
                    _ => Ok(Step::Skip),
                }
            }
            "message_stop" => Ok(Step::End),
            "error" => Err(stream_error(&sse::json(event)?)),
            _ => Ok(Step::Skip),
        }
    }

    fn end_of_body(&self) -> Result<(), LlmError> {
        Err(LlmError::Protocol(
            "the stream ended before message_stop: the answer is cut off".into(),
        ))
    }
}

/// An `error` event: `{"type":"error","error":{"type":"overloaded_error","message":"…"}}`. The
/// types are those of Anthropic's HTTP errors, so each maps to its documented status.
fn stream_error(data: &serde_json::Value) -> LlmError {
    let kind = data
        .pointer("/error/type")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let message = data
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or("(no message)")
        .to_string();
    let status = match kind {
        "rate_limit_error" => return LlmError::RateLimited { retry_after: None },
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "api_error" => 500,
        "overloaded_error" => 529,
        _ => 502,
    };
    LlmError::Upstream { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(body: &str) -> Vec<Result<Step, LlmError>> {
        let mut protocol = Messages;
        let mut steps = Vec::new();
        for event in sse::parse_all(body).await {
            steps.push(protocol.event(&event));
        }
        steps
    }

    #[tokio::test]
    async fn text_deltas_are_the_answer_until_message_stop() {
        let body = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\n",
            "data: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Yes \"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"[pci-dss:3.5.1]\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}\n\n",
            "event: content_block_stop\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: some_future_event\n",
            "data: {}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let steps: Vec<Step> = read(body).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            steps,
            vec![
                Step::Skip,
                Step::Skip,
                Step::Skip,
                Step::Text("Yes ".into()),
                Step::Text("[pci-dss:3.5.1]".into()),
                Step::Skip,
                Step::Skip,
                Step::Skip,
                Step::Skip,
                Step::End,
            ]
        );
    }

    #[tokio::test]
    async fn error_events_map_to_their_documented_status() {
        let steps = read(concat!(
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}\n\n",
        ))
        .await;
        match &steps[0] {
            Err(LlmError::Upstream { status, message }) => {
                assert_eq!(*status, 529);
                assert_eq!(message, "Overloaded");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(steps[1], Err(LlmError::RateLimited { .. })));
    }

    #[test]
    fn a_body_without_message_stop_is_cut_off() {
        assert!(matches!(Messages.end_of_body(), Err(LlmError::Protocol(_))));
    }
}
