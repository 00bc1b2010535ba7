//! The LLM clients (the shared `llm` module, with the chat's prompt) against a local fake that speaks each provider's real streaming wire
//! format over TCP: OpenAI-compatible SSE chunks, Anthropic SSE events, Bedrock ConverseStream
//! event-stream frames decoded by the real AWS SDK.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use cloud_optimizer::chat::prompt::{system_prompt, user_message};
use cloud_optimizer::config::{Config, Env, LlmConfig, LlmProvider};
use cloud_optimizer::llm::{Llm, LlmError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::fake_llm::{Api, FakeLlm, Reply, Then};

const APIS: [Api; 3] = [Api::OpenAi, Api::Anthropic, Api::Bedrock];
const KEY: &str = "test-llm-key";
const ACCESS_KEY_ID: &str = "AKIDFAKELLM";
/// Generous: only the stall tests wait for a timeout, and they use [`SHORT`].
const TIMEOUT: Duration = Duration::from_secs(20);
const SHORT: Duration = Duration::from_millis(700);

fn model(api: Api) -> &'static str {
    match api {
        // A real Bedrock id: its `:` must survive the path.
        Api::Bedrock => "anthropic.claude-3-5-sonnet-20240620-v1:0",
        Api::OpenAi => "gpt-4o-mini",
        Api::Anthropic => "claude-sonnet-4-5",
    }
}

fn config(fake_base: Option<String>, api: Api, timeout: Duration) -> LlmConfig {
    LlmConfig {
        provider: match api {
            Api::OpenAi => LlmProvider::OpenAi,
            Api::Anthropic => LlmProvider::Anthropic,
            Api::Bedrock => LlmProvider::Bedrock,
        },
        model: model(api).to_string(),
        api_key: (api != Api::Bedrock).then(|| KEY.to_string().into()),
        base_url: fake_base,
        max_tokens: 256,
        timeout,
    }
}

/// The AWS configuration a task would have, pointed at `endpoint` (what
/// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` does in production) without touching the process environment.
async fn aws(endpoint: &str) -> SdkConfig {
    cloud_optimizer::ensure_crypto_provider();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https(),
        )
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            "test-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

async fn client_at(endpoint: &str, base: String, api: Api, timeout: Duration) -> Llm {
    match api {
        Api::Bedrock => {
            Llm::with_sdk_config(&config(None, api, timeout), &aws(endpoint).await).unwrap()
        }
        _ => Llm::new(&config(Some(base), api, timeout)).await.unwrap(),
    }
}

async fn client(fake: &FakeLlm, api: Api, timeout: Duration) -> Llm {
    let base = match api {
        Api::OpenAi => fake.openai_base_url(),
        _ => fake.anthropic_base_url(),
    };
    client_at(&fake.endpoint(), base, api, timeout).await
}

/// The text pieces of a stream, and the error that ended it, if any.
async fn drain(
    mut stream: BoxStream<'static, Result<String, LlmError>>,
) -> (Vec<String>, Option<LlmError>) {
    let mut pieces = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(text) => pieces.push(text),
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream goes on after {e}"
                );
                return (pieces, Some(e));
            }
        }
    }
    (pieces, None)
}

fn question() -> String {
    user_message(
        "Does HIPAA require us to encrypt EBS volumes?",
        "[hipaa-sr:164.312(a)(2)(iv)] Encryption and decryption (addressable)",
    )
}

#[tokio::test]
async fn each_provider_streams_the_chunks_and_sends_model_prompt_and_credentials() {
    let chunks = [
        "Yes — encryption is ",
        "addressable ",
        "[hipaa-sr:164.312(a)(2)(iv)]; ",
        "enable EBS default encryption. é",
    ];
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::text(&chunks));
        let llm = client(&fake, api, TIMEOUT).await;
        assert_eq!(llm.model(), model(api));
        let user = question();
        let stream = llm.stream(system_prompt(), &user).await.unwrap();
        let (pieces, error) = drain(stream).await;
        assert_eq!(pieces, chunks, "{api:?}");
        assert!(error.is_none(), "{api:?}: {error:?}");

        let requests = fake.requests();
        assert_eq!(requests.len(), 1, "{api:?}: no retry, no second request");
        let request = &requests[0];
        assert_eq!(request.api, api);
        assert_eq!(request.model, model(api), "{api:?}");
        assert_eq!(request.system(), Some(system_prompt()), "{api:?}");
        assert_eq!(request.user(), Some(user.as_str()), "{api:?}");
        assert!(
            request
                .user()
                .unwrap()
                .contains("[hipaa-sr:164.312(a)(2)(iv)]"),
            "{api:?}: the KB context travels with the question"
        );
        assert_eq!(request.max_tokens(), Some(256), "{api:?}");
        match api {
            Api::OpenAi => {
                assert_eq!(llm.provider_name(), "openai");
                assert_eq!(request.body["stream"], true);
                assert_eq!(
                    request.header("authorization"),
                    Some(format!("Bearer {KEY}").as_str())
                );
            }
            Api::Anthropic => {
                assert_eq!(llm.provider_name(), "anthropic");
                assert_eq!(request.body["stream"], true);
                assert_eq!(request.header("x-api-key"), Some(KEY));
                assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(request.header("authorization"), None);
            }
            Api::Bedrock => {
                assert_eq!(llm.provider_name(), "bedrock");
                let authorization = request.header("authorization").unwrap_or_default();
                assert!(
                    authorization
                        .starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"))
                        && authorization.contains("/us-east-1/bedrock/aws4_request")
                        && authorization.contains("Signature="),
                    "not SigV4 for bedrock: {authorization:?}"
                );
                assert!(request.header("x-amz-date").is_some());
            }
        }
    }
}

#[tokio::test]
async fn an_openai_compatible_server_without_a_key_gets_no_authorization() {
    let fake = FakeLlm::start().await;
    let mut config = config(Some(fake.openai_base_url()), Api::OpenAi, TIMEOUT);
    config.api_key = None;
    let llm = Llm::new(&config).await.unwrap();
    let (pieces, _) = drain(llm.stream("s", "u").await.unwrap()).await;
    assert_eq!(pieces.concat(), "Hello from the fake LLM.");
    assert_eq!(fake.last_request().header("authorization"), None);
}

#[tokio::test]
async fn the_configuration_from_the_environment_reaches_the_fake() {
    let fake = FakeLlm::start().await;
    for api in [Api::OpenAi, Api::Anthropic] {
        let mut vars: HashMap<String, String> = fake.env(api).into_iter().collect();
        // A trailing slash is common in copied URLs.
        let base = vars["LLM_BASE_URL"].clone();
        vars.insert("LLM_BASE_URL".into(), format!("{base}/"));
        vars.insert("LLM_MAX_TOKENS".into(), "77".into());
        let config = Config::from_env(&Env::from_map(vars)).unwrap();
        let llm = Llm::new(config.llm.as_ref().unwrap()).await.unwrap();
        let (pieces, error) = drain(llm.stream("s", "u").await.unwrap()).await;
        assert!(error.is_none(), "{api:?}: {error:?}");
        assert_eq!(pieces.concat(), "Hello from the fake LLM.");
        let request = fake.last_request();
        assert_eq!(request.api, api);
        assert_eq!(request.model, "fake-model");
        assert_eq!(request.max_tokens(), Some(77));
    }
}

#[tokio::test]
async fn http_429_is_rate_limited_with_the_providers_retry_after() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::rate_limited(7));
        let llm = client(&fake, api, TIMEOUT).await;
        let error = llm.stream("s", "u").await.err().expect("an error");
        let expected = (api != Api::Bedrock).then_some(7);
        assert!(
            matches!(error, LlmError::RateLimited { retry_after } if retry_after == expected),
            "{api:?}: {error:?}"
        );
        assert_eq!(error.code(), "llm_rate_limited");
        assert_eq!(
            fake.requests().len(),
            1,
            "{api:?}: a throttled call is not retried"
        );
    }
}

#[tokio::test]
async fn http_errors_are_upstream_errors_with_status_and_message() {
    for api in APIS {
        for status in [500, 401, 503] {
            let fake = FakeLlm::start().await;
            fake.set_reply(Reply::status(status, "boom from the provider"));
            let llm = client(&fake, api, TIMEOUT).await;
            let error = llm.stream("s", "u").await.err().expect("an error");
            match &error {
                LlmError::Upstream {
                    status: got,
                    message,
                } => {
                    assert_eq!(*got, status, "{api:?}");
                    assert!(
                        message.contains("boom from the provider"),
                        "{api:?}: {message}"
                    );
                }
                other => panic!("{api:?} {status}: {other:?}"),
            }
            assert_eq!(error.code(), "llm_upstream_error");
            assert!(!error.to_string().contains(KEY));
        }
    }
}

#[tokio::test]
async fn an_error_in_the_stream_ends_it_with_an_error_item_after_the_text() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        let llm = client(&fake, api, TIMEOUT).await;

        fake.set_reply(Reply::text(&["partial ", "answer"]).then(Then::Fail));
        let (pieces, error) = drain(llm.stream("s", "u").await.unwrap()).await;
        assert_eq!(pieces, ["partial ", "answer"], "{api:?}");
        assert!(
            matches!(error, Some(LlmError::Upstream { status: 500, .. })),
            "{api:?}: {error:?}"
        );

        fake.set_reply(Reply::text(&["partial"]).then(Then::Throttle));
        let (pieces, error) = drain(llm.stream("s", "u").await.unwrap()).await;
        assert_eq!(pieces, ["partial"], "{api:?}");
        assert!(
            matches!(error, Some(LlmError::RateLimited { .. })),
            "{api:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_error_in_the_stream_before_any_text_is_the_error_of_the_call() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::text(&[]).then(Then::Throttle));
        let llm = client(&fake, api, TIMEOUT).await;
        let error = llm.stream("s", "u").await.err().expect("an error");
        assert!(
            matches!(error, LlmError::RateLimited { .. }),
            "{api:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_before_its_end_marker_is_a_protocol_error() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::text(&["half an ", "answer"]).then(Then::Cut));
        let llm = client(&fake, api, TIMEOUT).await;
        let (pieces, error) = drain(llm.stream("s", "u").await.unwrap()).await;
        assert_eq!(pieces, ["half an ", "answer"], "{api:?}");
        assert!(
            matches!(error, Some(LlmError::Protocol(_))),
            "{api:?}: {error:?}"
        );

        fake.set_reply(Reply::text(&[]).then(Then::Cut));
        let error = llm.stream("s", "u").await.err().expect("an error");
        assert_eq!(error.code(), "llm_protocol_error", "{api:?}: {error:?}");
    }
}

#[tokio::test]
async fn no_first_token_within_the_timeout_is_a_timeout() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::stall());
        let llm = client(&fake, api, SHORT).await;
        let error = llm.stream("s", "u").await.err().expect("an error");
        assert!(matches!(error, LlmError::Timeout), "{api:?}: {error:?}");
        assert_eq!(error.code(), "llm_timeout");
        tokio::time::timeout(TIMEOUT, fake.streams_closed())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: the timed-out request is still open"));
    }
}

#[tokio::test]
async fn silence_after_the_first_token_ends_the_stream_with_a_timeout() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::text(&["a start"]).then(Then::Stall));
        let llm = client(&fake, api, SHORT).await;
        let (pieces, error) = drain(llm.stream("s", "u").await.unwrap()).await;
        assert_eq!(pieces, ["a start"], "{api:?}");
        assert!(
            matches!(error, Some(LlmError::Timeout)),
            "{api:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_request_at_once() {
    for api in APIS {
        let fake = FakeLlm::start().await;
        fake.set_reply(Reply::text(&["first"]).then(Then::Stall));
        let llm = client(&fake, api, TIMEOUT).await;
        let mut stream = llm.stream("s", "u").await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "first");
        assert_eq!(fake.open_streams(), 1, "{api:?}");
        drop(stream);
        // Well inside TIMEOUT: nothing but the drop can close it (the fake never ends the body).
        tokio::time::timeout(TIMEOUT, fake.streams_closed())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: the upstream stream is still open"));
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_a_connect_error() {
    // A port nobody listens on: bound, then released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    for api in APIS {
        let base = match api {
            Api::OpenAi => format!("{endpoint}/v1"),
            _ => endpoint.clone(),
        };
        let llm = client_at(&endpoint, base, api, TIMEOUT).await;
        let error = llm.stream("s", "u").await.err().expect("an error");
        assert!(matches!(error, LlmError::Connect(_)), "{api:?}: {error:?}");
        assert_eq!(error.code(), "llm_unreachable");
    }
}

#[tokio::test]
async fn bedrock_without_a_region_is_refused_at_start_up() {
    let fake = FakeLlm::start().await;
    let sdk = aws(&fake.endpoint())
        .await
        .into_builder()
        .region(None)
        .build();
    let error = Llm::with_sdk_config(&config(None, Api::Bedrock, TIMEOUT), &sdk)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("AWS_REGION"), "{error}");
}
