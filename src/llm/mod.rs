//! The configured language model (`LLM_PROVIDER`), shared by the capabilities that use one (the
//! chat's answers, the documents' enrichment pass): one interface over three streaming APIs.
//! What a model is told belongs to its caller; this module only carries it.
//!
//! * `bedrock`: Bedrock Runtime `ConverseStream` through the AWS SDK (the task role signs; the
//!   answer arrives as AWS event-stream frames).
//! * `openai`: any OpenAI-compatible `POST {base}/chat/completions` with `"stream": true`
//!   (OpenAI, Ollama, vLLM, LiteLLM), server-sent `data:` chunks ending in `[DONE]`.
//! * `anthropic`: `POST {base}/v1/messages` with `stream: true`, named server-sent events.
//!
//! [`Llm::stream`] waits for the first token: everything that goes wrong before it (HTTP status,
//! connection, timeout) is its `Err`, so the caller can still answer with the built-in answerer
//! before it has sent a word. Later failures end the stream with one `Err` item. Nothing is
//! spawned: the returned stream owns the upstream response, so dropping it closes the connection
//! at once. No request is retried: a chat falls back faster than a retry would succeed.

mod anthropic;
mod bedrock;
mod openai;
mod sse;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use crate::config::{LlmConfig, LlmProvider};

/// Why a completion failed; each maps to a stable `code` (the chat's `notice`/`error` events, a
/// document's `facts.llm.error`).
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM provider is rate limiting requests")]
    RateLimited {
        /// Seconds the provider asked to wait (`retry-after`), when it said.
        retry_after: Option<u64>,
    },
    #[error("the LLM did not answer in time")]
    Timeout,
    #[error("the LLM provider answered with an error ({status}): {message}")]
    Upstream { status: u16, message: String },
    #[error("the LLM provider's answer could not be read: {0}")]
    Protocol(String),
    #[error("the LLM provider could not be reached: {0}")]
    Connect(String),
}

impl LlmError {
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "llm_rate_limited",
            LlmError::Timeout => "llm_timeout",
            LlmError::Upstream { .. } => "llm_upstream_error",
            LlmError::Protocol(_) => "llm_protocol_error",
            LlmError::Connect(_) => "llm_unreachable",
        }
    }
}

/// What a provider's wire stream yields: text, or `None` for an event that carries none (a ping,
/// the start or end of a block) but shows the provider is still there.
type Events = BoxStream<'static, Result<Option<String>, LlmError>>;

enum Provider {
    Bedrock(bedrock::Bedrock),
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
}

/// The configured LLM, built once at start-up and shared (it holds one connection pool).
pub struct Llm {
    provider: Provider,
    model: String,
    max_tokens: u32,
    timeout: Duration,
}

impl Llm {
    /// Bedrock takes the shared AWS configuration ([`crate::aws::sdk_config`]): the task role,
    /// the region, `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.
    pub async fn new(config: &LlmConfig) -> anyhow::Result<Self> {
        let sdk = match config.provider {
            LlmProvider::Bedrock => Some(crate::aws::sdk_config().await),
            LlmProvider::OpenAi | LlmProvider::Anthropic => None,
        };
        Self::build(config, sdk.as_ref())
    }

    /// As [`Llm::new`], with Bedrock on a given AWS configuration (tests point it at a fake
    /// without touching the process environment). The other providers ignore `sdk`.
    pub fn with_sdk_config(
        config: &LlmConfig,
        sdk: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        Self::build(config, Some(sdk))
    }

    fn build(config: &LlmConfig, sdk: Option<&aws_config::SdkConfig>) -> anyhow::Result<Self> {
        let base_url = || {
            config
                .base_url
                .clone()
                .ok_or_else(|| anyhow::anyhow!("LLM_BASE_URL is required for this provider"))
        };
        let provider = match config.provider {
            LlmProvider::Bedrock => {
                let sdk = sdk.ok_or_else(|| anyhow::anyhow!("Bedrock needs an AWS config"))?;
                // Without a region every question would fail and fall back; say so at start-up.
                if sdk.region().is_none() {
                    anyhow::bail!(
                        "LLM_PROVIDER=bedrock needs an AWS region: set AWS_REGION (Bedrock is regional)"
                    );
                }
                Provider::Bedrock(bedrock::Bedrock::new(sdk, config.timeout))
            }
            LlmProvider::OpenAi => Provider::OpenAi(openai::OpenAi::new(
                base_url()?,
                config.api_key.clone(),
                config.timeout,
            )?),
            LlmProvider::Anthropic => Provider::Anthropic(anthropic::Anthropic::new(
                base_url()?,
                config.api_key.clone().ok_or_else(|| {
                    anyhow::anyhow!("LLM_API_KEY is required for LLM_PROVIDER=anthropic")
                })?,
                config.timeout,
            )?),
        };
        Ok(Self {
            provider,
            model: config.model.clone(),
            max_tokens: config.max_tokens,
            timeout: config.timeout,
        })
    }

    pub fn provider_name(&self) -> &'static str {
        match self.provider {
            Provider::Bedrock(_) => LlmProvider::Bedrock.name(),
            Provider::OpenAi(_) => LlmProvider::OpenAi.name(),
            Provider::Anthropic(_) => LlmProvider::Anthropic.name(),
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Starts a streamed completion. Errors before the first token (HTTP status, connection,
    /// first-token timeout) return Err; later ones come as an Err item of the stream, which then
    /// ends. Each item is a non-empty piece of the answer. A pause longer than the timeout
    /// between two tokens ends the stream with [`LlmError::Timeout`].
    pub async fn stream(
        &self,
        system: &str,
        user: &str,
    ) -> Result<BoxStream<'static, Result<String, LlmError>>, LlmError> {
        let first = async {
            let mut events = match &self.provider {
                Provider::Bedrock(p) => p.start(&self.model, system, user, self.max_tokens).await,
                Provider::OpenAi(p) => p.start(&self.model, system, user, self.max_tokens).await,
                Provider::Anthropic(p) => p.start(&self.model, system, user, self.max_tokens).await,
            }?;
            loop {
                match events.next().await {
                    Some(Ok(Some(text))) if !text.is_empty() => return Ok((text, events)),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(LlmError::Protocol(
                            "the answer ended before any text".into(),
                        ));
                    }
                }
            }
        };
        let (text, events) = tokio::time::timeout(self.timeout, first)
            .await
            .map_err(|_| LlmError::Timeout)??;
        Ok(stream::once(async { Ok(text) })
            .chain(text_until_silent(events, self.timeout))
            .boxed())
    }
}

/// The text pieces of `events`, ending after the first error or a silence longer than `limit`.
fn text_until_silent(
    events: Events,
    limit: Duration,
) -> impl futures_util::Stream<Item = Result<String, LlmError>> + Send + 'static {
    stream::unfold(Some(events), move |state| async move {
        let mut events = state?;
        loop {
            match tokio::time::timeout(limit, events.next()).await {
                Err(_) => return Some((Err(LlmError::Timeout), None)),
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some((Err(e), None)),
                Ok(Some(Ok(Some(text)))) if !text.is_empty() => {
                    return Some((Ok(text), Some(events)));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    })
}

/// The human part of an error answer: `error.message` (OpenAI, Anthropic), `message`, `detail`
/// (vLLM, FastAPI) or `error` as a string, else the body itself; cut to keep logs readable.
fn error_message(body: &str) -> String {
    const MAX: usize = 300;
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("detail"),
            v.get("error"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str())
        .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    let text = if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    };
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// `retry-after` in whole seconds; an HTTP date is rare from these APIs and is left out.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = raw.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| seconds.ceil() as u64)
}

/// Turns a non-2xx answer into an error, reading at most a small part of its body.
async fn status_error(response: reqwest::Response) -> LlmError {
    const MAX_BODY: usize = 16 * 1024;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    if status == 429 {
        return LlmError::RateLimited { retry_after };
    }
    LlmError::Upstream {
        status,
        message: error_message(&String::from_utf8_lossy(&body)),
    }
}

/// The reqwest client of the HTTP providers: rustls on `ring` like every client of the binary;
/// no overall timeout, which would cut long answers (the stream applies its own).
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    crate::ensure_crypto_provider();
    Ok(reqwest::Client::builder()
        .connect_timeout(timeout)
        .user_agent(concat!("cloud-optimizer/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The text of a transport error with its causes ("error sending request: connection refused").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[test]
    fn error_messages_come_from_each_providers_shape() {
        assert_eq!(
            error_message(
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#
            ),
            "Incorrect API key"
        );
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message("Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(""), "(no message)");
        let long = "é".repeat(1000);
        assert_eq!(error_message(&long).chars().count(), 301);
    }

    #[test]
    fn retry_after_takes_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(7));
        headers.insert("retry-after", "1.2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(2));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    /// The chat and the documents share one `Llm` and await `stream` inside handlers and tasks.
    #[test]
    fn the_client_and_its_futures_can_cross_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Llm>();
        let _checked = |llm: &Llm| send(&llm.stream("s", "u"));
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(
            LlmError::RateLimited { retry_after: None }.code(),
            "llm_rate_limited"
        );
        assert_eq!(LlmError::Timeout.code(), "llm_timeout");
        assert_eq!(
            LlmError::Upstream {
                status: 500,
                message: String::new()
            }
            .code(),
            "llm_upstream_error"
        );
        assert_eq!(
            LlmError::Protocol(String::new()).code(),
            "llm_protocol_error"
        );
        assert_eq!(LlmError::Connect(String::new()).code(), "llm_unreachable");
    }

    #[tokio::test]
    async fn text_skips_empty_events_and_stops_after_an_error() {
        let events: Events = stream::iter([
            Ok(None),
            Ok(Some("a".to_string())),
            Ok(Some(String::new())),
            Err(LlmError::Protocol("broken".into())),
            Ok(Some("never".to_string())),
        ])
        .boxed();
        let items: Vec<_> = text_until_silent(events, Duration::from_secs(5))
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), "a");
        assert!(matches!(items[1], Err(LlmError::Protocol(_))));
    }

    #[tokio::test]
    async fn a_silence_longer_than_the_limit_ends_the_stream() {
        let events: Events = stream::iter([Ok(Some("a".to_string()))])
            .chain(stream::pending())
            .boxed();
        let items: Vec<_> = text_until_silent(events, Duration::from_millis(50))
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(LlmError::Timeout)));
    }
}
