//! A local fake of the three LLM streaming APIs the chat can use, each in its real wire format:
//!
//! * OpenAI-compatible `POST /v1/chat/completions`: server-sent `data:` chunks of
//!   `chat.completion.chunk` JSON, `data: [DONE]` at the end (base URL [`FakeLlm::openai_base_url`]).
//! * Anthropic `POST /v1/messages`: named server-sent events `message_start` … `message_stop`
//!   with a `ping` (base URL [`FakeLlm::anthropic_base_url`]).
//! * Bedrock Runtime `POST /model/{modelId}/converse-stream`: `application/vnd.amazon.eventstream`
//!   binary frames (prelude, headers, payload, CRCs) with `:event-type` `messageStart`,
//!   `contentBlockDelta`, `contentBlockStop`, `messageStop`, `metadata`, and `:exception-type`
//!   frames for failures, so the real AWS SDK decodes them (endpoint [`FakeLlm::endpoint`]).
//!
//! Every frame is written in two pieces, so clients see events split across reads. What the fake
//! answers is scripted with [`FakeLlm::set_reply`]; every request is recorded (path, headers,
//! JSON body) for assertions; [`FakeLlm::open_streams`] counts answers still being streamed, so a
//! test can prove a dropped client stream closed its upstream connection. The server stops when
//! the [`FakeLlm`] is dropped.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures_util::{Stream, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How a stream goes on after its text chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The provider's normal end (finish reason and `[DONE]`, `message_stop`, `messageStop` and
    /// `metadata`).
    Finish,
    /// An in-stream server error: OpenAI `{"error":{"type":"server_error"}}`, Anthropic `error`
    /// event `api_error`, Bedrock `internalServerException` frame; then the body ends.
    Fail,
    /// An in-stream rate limit: OpenAI `rate_limit_exceeded`, Anthropic `rate_limit_error`,
    /// Bedrock `throttlingException` frame; then the body ends.
    Throttle,
    /// Nothing more is sent and the body stays open (until the client goes or the fake stops).
    Stall,
    /// The body ends without the end marker, as when a proxy cuts the connection.
    Cut,
}

/// What the fake answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200 and a stream: each chunk as its own text delta, then `then`.
    Stream { chunks: Vec<String>, then: Then },
    /// An HTTP error before any stream, in the provider's error format (`Retry-After` with 429
    /// when given).
    Status {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
}

impl Reply {
    /// A complete answer streamed as these chunks.
    pub fn text(chunks: &[&str]) -> Reply {
        Reply::Stream {
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
            then: Then::Finish,
        }
    }

    /// Headers sent, then silence: the first token never comes.
    pub fn stall() -> Reply {
        Reply::Stream {
            chunks: Vec::new(),
            then: Then::Stall,
        }
    }

    /// An HTTP error status with a message in the provider's error body.
    pub fn status(status: u16, message: &str) -> Reply {
        Reply::Status {
            status,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// HTTP 429 with `Retry-After: seconds` (OpenAI, Anthropic; Bedrock sends no such header).
    pub fn rate_limited(seconds: u64) -> Reply {
        Reply::Status {
            status: 429,
            message: "Too many requests, please wait before trying again.".into(),
            retry_after: Some(seconds),
        }
    }

    /// The same chunks, ending with `then` instead.
    pub fn then(self, then: Then) -> Reply {
        match self {
            Reply::Stream { chunks, .. } => Reply::Stream { chunks, then },
            other => other,
        }
    }
}

/// Which API a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
    Bedrock,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub api: Api,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The model: from the body (OpenAI, Anthropic) or the path (Bedrock, percent-decoded).
    pub model: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The system prompt, wherever the API puts it.
    pub fn system(&self) -> Option<&str> {
        match self.api {
            Api::OpenAi => self.body["messages"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "system")?["content"]
                .as_str(),
            Api::Anthropic => self.body["system"].as_str(),
            Api::Bedrock => self.body.pointer("/system/0/text")?.as_str(),
        }
    }

    /// The text of the (single) user message.
    pub fn user(&self) -> Option<&str> {
        match self.api {
            Api::OpenAi => self.body["messages"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "user")?["content"]
                .as_str(),
            Api::Anthropic => self.body.pointer("/messages/0/content")?.as_str(),
            Api::Bedrock => self.body.pointer("/messages/0/content/0/text")?.as_str(),
        }
    }

    pub fn max_tokens(&self) -> Option<u64> {
        match self.api {
            Api::OpenAi | Api::Anthropic => self.body["max_tokens"].as_u64(),
            Api::Bedrock => self.body.pointer("/inferenceConfig/maxTokens")?.as_u64(),
        }
    }
}

/// A running fake. Dropping it stops the server and ends every stream it is still sending.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    state: Mutex<Inner>,
    /// Bodies still being streamed (their guard not yet dropped).
    open: watch::Sender<usize>,
    shutdown: CancellationToken,
}

struct Inner {
    reply: Reply,
    requests: Vec<Request>,
}

impl FakeLlm {
    /// Starts on `127.0.0.1:<random port>`, answering "Hello from the fake LLM." in three chunks
    /// until told otherwise.
    pub async fn start() -> FakeLlm {
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner {
                reply: Reply::text(&["Hello", " from the fake", " LLM."]),
                requests: Vec::new(),
            }),
            open: watch::Sender::new(0),
            shutdown: CancellationToken::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LLM");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/model/{model}/converse-stream", post(bedrock))
            .with_state(shared.clone());
        let shutdown = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        FakeLlm {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the Bedrock endpoint (`endpoint_url`,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `LLM_BASE_URL` for `LLM_PROVIDER=openai`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `LLM_BASE_URL` for `LLM_PROVIDER=anthropic`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables that point the server at this fake as an OpenAI-compatible or Anthropic
    /// provider (Bedrock is reached through the AWS variables instead).
    pub fn env(&self, api: Api) -> Vec<(String, String)> {
        let (provider, base) = match api {
            Api::OpenAi => ("openai", self.openai_base_url()),
            Api::Anthropic => ("anthropic", self.anthropic_base_url()),
            Api::Bedrock => panic!("Bedrock takes AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        };
        [
            ("LLM_PROVIDER", provider.to_string()),
            ("LLM_MODEL", "fake-model".to_string()),
            ("LLM_API_KEY", "test-llm-key".to_string()),
            ("LLM_BASE_URL", base),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// What every following request gets.
    pub fn set_reply(&self, reply: Reply) {
        self.shared.lock().reply = reply;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Request {
        self.requests()
            .pop()
            .expect("the fake LLM received no request")
    }

    /// Answers still being streamed.
    pub fn open_streams(&self) -> usize {
        *self.shared.open.borrow()
    }

    /// Waits until no answer is being streamed: every client has read its stream to the end or
    /// gone away. Bound it with a timeout in tests.
    pub async fn streams_closed(&self) {
        let mut open = self.shared.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(
        &self,
        api: Api,
        path: String,
        headers: HeaderMap,
        body: &Bytes,
        model: Option<String>,
    ) -> Reply {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = model
            .or_else(|| body["model"].as_str().map(str::to_string))
            .unwrap_or_default();
        let mut inner = self.lock();
        inner.requests.push(Request {
            api,
            path,
            headers,
            body,
            model,
        });
        inner.reply.clone()
    }
}

/// Counts a body as open from its creation until hyper drops it (end or client gone).
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.send_modify(|n| *n += 1);
        Self(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// A streamed 200 answer: `frames` (each written in two pieces), then silence if `stall`.
fn streamed(
    shared: &Arc<Shared>,
    content_type: &str,
    frames: Vec<Vec<u8>>,
    stall: bool,
) -> Response {
    let guard = OpenGuard::new(shared);
    let pieces = frames.into_iter().flat_map(|frame| {
        let mid = frame.len() / 2;
        let (a, b) = frame.split_at(mid);
        [Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)]
    });
    let shutdown = shared.shutdown.clone();
    let tail: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> = if stall {
        Box::pin(
            stream::once(async move { shutdown.cancelled_owned().await })
                .filter_map(|()| async { None::<Bytes> }),
        )
    } else {
        Box::pin(stream::empty())
    };
    let body = stream::iter(pieces)
        .filter(|b| std::future::ready(!b.is_empty()))
        .chain(tail)
        .map(move |bytes| {
            let _open = &guard;
            Ok::<_, Infallible>(bytes)
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

fn json_error(status: u16, headers: &[(&str, String)], body: Value) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(body.to_string())).unwrap()
}

fn retry_after_header(retry_after: Option<u64>) -> Vec<(&'static str, String)> {
    retry_after
        .map(|s| vec![("retry-after", s.to_string())])
        .unwrap_or_default()
}

fn sse(event: Option<&str>, data: &Value) -> Vec<u8> {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n").into_bytes(),
        None => format!("data: {data}\n\n").into_bytes(),
    }
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = shared.record(
        Api::OpenAi,
        "/v1/chat/completions".into(),
        headers,
        &body,
        None,
    );
    let model = shared.lock().requests.last().unwrap().model.clone();
    let (chunks, then) = match reply {
        Reply::Status {
            status,
            message,
            retry_after,
        } => {
            let (kind, code) = match status {
                429 => ("requests", json!("rate_limit_exceeded")),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            return json_error(
                status,
                &retry_after_header(retry_after),
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
            );
        }
        Reply::Stream { chunks, then } => (chunks, then),
    };
    let chunk = |delta: Value, finish: Value| {
        sse(
            None,
            &json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            }),
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for text in &chunks {
        frames.push(chunk(json!({"content": text}), Value::Null));
    }
    match then {
        Then::Finish => {
            frames.push(chunk(json!({}), json!("stop")));
            frames.push(b"data: [DONE]\n\n".to_vec());
        }
        Then::Fail => frames.push(sse(
            None,
            &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}),
        )),
        Then::Throttle => frames.push(sse(
            None,
            &json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        )),
        Then::Stall | Then::Cut => {}
    }
    streamed(
        &shared,
        "text/event-stream; charset=utf-8",
        frames,
        then == Then::Stall,
    )
}

async fn anthropic(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = shared.record(Api::Anthropic, "/v1/messages".into(), headers, &body, None);
    let model = shared.lock().requests.last().unwrap().model.clone();
    let (chunks, then) = match reply {
        Reply::Status {
            status,
            message,
            retry_after,
        } => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            let mut headers = retry_after_header(retry_after);
            headers.push(("request-id", "req_fake".to_string()));
            return json_error(
                status,
                &headers,
                json!({"type": "error", "error": {"type": kind, "message": message}}),
            );
        }
        Reply::Stream { chunks, then } => (chunks, then),
    };
    let mut frames = vec![
        sse(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse(Some("ping"), &json!({"type": "ping"})),
    ];
    for text in &chunks {
        frames.push(sse(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    match then {
        Then::Finish => {
            frames.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            frames.push(sse(
                Some("message_delta"),
                &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": chunks.len()}}),
            ));
            frames.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        }
        Then::Fail => frames.push(sse(
            Some("error"),
            &json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        )),
        Then::Throttle => frames.push(sse(
            Some("error"),
            &json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}}),
        )),
        Then::Stall | Then::Cut => {}
    }
    streamed(
        &shared,
        "text/event-stream; charset=utf-8",
        frames,
        then == Then::Stall,
    )
}

/// One AWS event-stream frame, as Bedrock writes it.
fn frame(message_type: &str, type_header: &str, kind: &str, payload: &Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            type_header.to_string(),
            HeaderValue::String(kind.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_string().into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).expect("frame encodes");
    out
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    frame("event", ":event-type", kind, &payload)
}

fn exception(kind: &str, message: &str) -> Vec<u8> {
    frame(
        "exception",
        ":exception-type",
        kind,
        &json!({"message": message}),
    )
}

async fn bedrock(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/model/{model}/converse-stream");
    let reply = shared.record(Api::Bedrock, path, headers, &body, Some(model));
    let (chunks, then) = match reply {
        Reply::Status {
            status, message, ..
        } => {
            let kind = match status {
                400 => "ValidationException",
                403 => "AccessDeniedException",
                404 => "ResourceNotFoundException",
                429 => "ThrottlingException",
                503 => "ServiceUnavailableException",
                _ => "InternalServerException",
            };
            return json_error(
                status,
                &[
                    (
                        "x-amzn-ErrorType",
                        format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                    ),
                    (
                        "x-amzn-RequestId",
                        "00000000-0000-0000-0000-000000000000".into(),
                    ),
                ],
                json!({"message": message}),
            );
        }
        Reply::Stream { chunks, then } => (chunks, then),
    };
    // Bedrock pads each event with a random `p` field; clients must ignore it.
    let mut frames = vec![event(
        "messageStart",
        json!({"p": "abcdefgh", "role": "assistant"}),
    )];
    for text in &chunks {
        frames.push(event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}, "p": "abcd"}),
        ));
    }
    match then {
        Then::Finish => {
            frames.push(event(
                "contentBlockStop",
                json!({"contentBlockIndex": 0, "p": "ab"}),
            ));
            frames.push(event(
                "messageStop",
                json!({"p": "abc", "stopReason": "end_turn"}),
            ));
            frames.push(event(
                "metadata",
                json!({"metrics": {"latencyMs": 321}, "p": "a", "usage": {"inputTokens": 25, "outputTokens": chunks.len(), "totalTokens": 25 + chunks.len()}}),
            ));
        }
        Then::Fail => frames.push(exception(
            "internalServerException",
            "The server encountered an internal error.",
        )),
        Then::Throttle => frames.push(exception(
            "throttlingException",
            "Too many tokens, please wait before trying again.",
        )),
        Then::Stall | Then::Cut => {}
    }
    streamed(
        &shared,
        "application/vnd.amazon.eventstream",
        frames,
        then == Then::Stall,
    )
}
