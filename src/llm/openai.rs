//! OpenAI-compatible chat completions, streamed: `POST {base}/chat/completions` with
//! `"stream": true`; the answer is `data:` events of `chat.completion.chunk` JSON whose text is
//! `choices[0].delta.content`, ended by `data: [DONE]`. OpenAI, Ollama, vLLM and LiteLLM all
//! speak it; some servers put an `{"error": …}` object in the stream when generation fails.

use std::time::Duration;

use eventsource_stream::Event;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::sse::{self, Protocol, Step};
use super::{Events, LlmError};

pub(super) struct OpenAi {
    http: reqwest::Client,
    url: String,
    api_key: Option<SecretString>,
}

impl OpenAi {
    pub(super) fn new(
        base_url: String,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: super::http_client(timeout)?,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
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
        // `max_tokens` rather than OpenAI's newer `max_completion_tokens`: every compatible
        // server (Ollama, vLLM, LiteLLM) accepts it.
        let body = json!({
            "model": model,
            "stream": true,
            "max_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        });
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(|e| sse::transport_error(&e))?;
        if !response.status().is_success() {
            return Err(super::status_error(response).await);
        }
        sse::events(response, Chunks::default())
    }
}

/// Reads `chat.completion.chunk` events.
#[derive(Default)]
struct Chunks {
    /// A chunk carried a `finish_reason`: servers that omit `[DONE]` have still finished.
    finished: bool,
}

impl Protocol for Chunks {
    fn event(&mut self, event: &Event) -> Result<Step, LlmError> {
        if event.data.trim() == "[DONE]" {
            return Ok(Step::End);
        }
        let chunk = sse::json(event)?;
        if let Some(error) = chunk.get("error") {
            return Err(stream_error(error));
        }
        // A chunk without choices carries only usage (`stream_options.include_usage`).
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(Step::Skip);
        };
        if choice
            .get("finish_reason")
            .is_some_and(|reason| !reason.is_null())
        {
            self.finished = true;
        }
        match choice.pointer("/delta/content").and_then(|c| c.as_str()) {
            Some(text) if !text.is_empty() => Ok(Step::Text(text.to_string())),
            _ => Ok(Step::Skip),
        }
    }

    fn end_of_body(&self) -> Result<(), LlmError> {
        if self.finished {
            Ok(())
        } else {
            Err(LlmError::Protocol(
                "the stream ended before [DONE]: the answer is cut off".into(),
            ))
        }
    }
}

/// An `error` object inside a 200 stream. vLLM gives the HTTP status it stands for as `code`;
/// OpenAI names a type.
fn stream_error(error: &serde_json::Value) -> LlmError {
    let message = error
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("(no message)")
        .to_string();
    let kind = error.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let code = error.get("code").and_then(|c| c.as_u64());
    let code_name = error.get("code").and_then(|c| c.as_str()).unwrap_or("");
    if code == Some(429) || kind.contains("rate_limit") || code_name.contains("rate_limit") {
        return LlmError::RateLimited { retry_after: None };
    }
    let status = match code {
        Some(code @ 400..=599) => code as u16,
        _ if kind == "server_error" => 500,
        _ => 502,
    };
    LlmError::Upstream { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(body: &str) -> (Vec<Result<Step, String>>, Result<(), LlmError>) {
        let mut protocol = Chunks::default();
        let mut steps = Vec::new();
        for event in sse::parse_all(body).await {
            steps.push(protocol.event(&event).map_err(|e| e.code().to_string()));
        }
        (steps, protocol.end_of_body())
    }

    #[tokio::test]
    async fn chunks_give_the_delta_text_until_done() {
        let body = concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Yes, \"},\"finish_reason\":null}]}\n\n",
            ": keep-alive comment\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"encrypt [hipaa-sr:164.312(a)(2)(iv)]\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let (steps, _) = read(body).await;
        assert_eq!(
            steps,
            vec![
                Ok(Step::Skip),
                Ok(Step::Text("Yes, ".into())),
                Ok(Step::Text("encrypt [hipaa-sr:164.312(a)(2)(iv)]".into())),
                Ok(Step::Skip),
                Ok(Step::Skip),
                Ok(Step::End),
            ]
        );
    }

    #[tokio::test]
    async fn an_error_object_in_the_stream_is_an_error() {
        let (steps, _) = read(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n",
            "data: {\"error\":{\"object\":\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\",\"code\":400}}\n\n",
            "data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_exceeded\"}}\n\n",
        ))
        .await;
        assert_eq!(
            steps[1..],
            [
                Err("llm_upstream_error".to_string()),
                Err("llm_upstream_error".to_string()),
                Err("llm_rate_limited".to_string()),
            ]
        );
        let mut protocol = Chunks::default();
        let events = sse::parse_all(
            "data: {\"error\":{\"object\":\"error\",\"message\":\"too long\",\"code\":400}}\n\n",
        )
        .await;
        match protocol.event(&events[0]) {
            Err(LlmError::Upstream { status, message }) => {
                assert_eq!(status, 400);
                assert_eq!(message, "too long");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_cut_before_done_or_a_finish_reason_is_truncated() {
        let (_, end) =
            read("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n").await;
        assert!(matches!(end, Err(LlmError::Protocol(_))));
        // Some servers stop after the finish reason without `[DONE]`: the answer is whole.
        let (_, end) = read(concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        ))
        .await;
        assert!(end.is_ok());
    }

    #[tokio::test]
    async fn data_that_is_not_json_is_a_protocol_error() {
        let (steps, _) = read("data: {not json\n\n").await;
        assert_eq!(steps, vec![Err("llm_protocol_error".to_string())]);
    }
}
