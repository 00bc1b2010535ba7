//! Bedrock Runtime `ConverseStream` through the AWS SDK: signed with the task role's
//! credentials (SigV4), the endpoint resolved by the SDK (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`
//! overrides it). The answer arrives as AWS event-stream frames, which the SDK decodes:
//! `messageStart`, `contentBlockDelta` (text in `delta.text`), `contentBlockStop`,
//! `messageStop`, `metadata`, or an exception frame (`throttlingException`,
//! `modelStreamErrorException`, …) when generation fails midway.

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, Message, SystemContentBlock,
};
use futures_util::StreamExt;
use futures_util::stream;

use super::{Events, LlmError};

pub(super) struct Bedrock {
    client: Client,
}

impl Bedrock {
    pub(super) fn new(sdk: &aws_config::SdkConfig, timeout: Duration) -> Self {
        let config = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            // A throttled or failing model falls back to the built-in answer at once; the SDK's
            // retries with back-off would only delay it.
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().connect_timeout(timeout).build())
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }

    pub(super) async fn start(
        &self,
        model: &str,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<Events, LlmError> {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(user.to_string()))
            .build()
            .map_err(|e| LlmError::Protocol(e.to_string()))?;
        let output = self
            .client
            .converse_stream()
            .model_id(model)
            .system(SystemContentBlock::Text(system.to_string()))
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
                    .build(),
            )
            .send()
            .await
            .map_err(request_error)?;
        Ok(
            stream::unfold(Some((output.stream, false)), |state| async move {
                let (mut receiver, stopped) = state?;
                match receiver.recv().await {
                    Ok(Some(event)) => {
                        let text = match &event {
                            ConverseStreamOutput::ContentBlockDelta(delta) => {
                                match delta.delta() {
                                    Some(ContentBlockDelta::Text(text)) if !text.is_empty() => {
                                        Some(text.clone())
                                    }
                                    // Tool use, reasoning, citations: no text of the answer.
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        // `metadata` (usage, latency) follows `messageStop`; keep reading to it.
                        let stopped =
                            stopped || matches!(event, ConverseStreamOutput::MessageStop(_));
                        Some((Ok(text), Some((receiver, stopped))))
                    }
                    Ok(None) if stopped => None,
                    Ok(None) => Some((
                        Err(LlmError::Protocol(
                            "the stream ended before messageStop: the answer is cut off".into(),
                        )),
                        None,
                    )),
                    Err(e) => Some((Err(stream_error(e)), None)),
                }
            })
            .boxed(),
        )
    }
}

/// Errors of the request itself: the HTTP status Bedrock answered, or no answer at all.
fn request_error(error: SdkError<ConverseStreamError>) -> LlmError {
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let error = context.into_err();
            if matches!(error, ConverseStreamError::ThrottlingException(_)) || status == 429 {
                return LlmError::RateLimited { retry_after: None };
            }
            LlmError::Upstream {
                status,
                message: describe(&error),
            }
        }
        SdkError::TimeoutError(_) => LlmError::Timeout,
        SdkError::ResponseError(_) => LlmError::Protocol(DisplayErrorContext(&error).to_string()),
        // No connection, or the request could not be built or signed (no credentials): either
        // way Bedrock cannot be reached from here.
        _ => LlmError::Connect(DisplayErrorContext(&error).to_string()),
    }
}

/// Errors inside the stream: exception frames, undecodable frames, a broken connection.
fn stream_error(
    error: SdkError<ConverseStreamOutputError, aws_smithy_types::event_stream::RawMessage>,
) -> LlmError {
    match error {
        SdkError::ServiceError(context) => {
            let error = context.into_err();
            let status = match &error {
                ConverseStreamOutputError::ThrottlingException(_) => {
                    return LlmError::RateLimited { retry_after: None };
                }
                ConverseStreamOutputError::ModelStreamErrorException(e) => e
                    .original_status_code()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(502),
                ConverseStreamOutputError::ValidationException(_) => 400,
                ConverseStreamOutputError::InternalServerException(_) => 500,
                ConverseStreamOutputError::ServiceUnavailableException(_) => 503,
                _ => 502,
            };
            LlmError::Upstream {
                status,
                message: describe(&error),
            }
        }
        SdkError::TimeoutError(_) => LlmError::Timeout,
        SdkError::DispatchFailure(_) => LlmError::Connect(DisplayErrorContext(&error).to_string()),
        _ => LlmError::Protocol(DisplayErrorContext(&error).to_string()),
    }
}

/// `ThrottlingException: Too many requests`, from the error's code and message.
fn describe(error: &impl ProvideErrorMetadata) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message.to_string(),
        (None, None) => "(no message)".to_string(),
    }
}
