//! Server-sent events of the HTTP providers: `eventsource-stream` splits the body into events;
//! each provider's [`Protocol`] says what an event means.

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::StreamExt;
use futures_util::stream;

use super::{Events, LlmError, error_chain};

/// What one event means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Text(String),
    /// No text (a role, a ping, the start or end of a block), but the provider is alive.
    Skip,
    /// The end marker: the answer is complete.
    End,
}

pub(super) trait Protocol: Send + 'static {
    fn event(&mut self, event: &Event) -> Result<Step, LlmError>;
    /// The body ended without an end marker: complete for some servers, truncated for others.
    fn end_of_body(&self) -> Result<(), LlmError>;
}

/// The events of a 2xx streaming answer. The stream owns the response: dropping it closes the
/// connection.
pub(super) fn events(
    response: reqwest::Response,
    protocol: impl Protocol,
) -> Result<Events, LlmError> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("text/event-stream") {
        return Err(LlmError::Protocol(format!(
            "expected a text/event-stream answer, got {:?}",
            if content_type.is_empty() {
                "no content type"
            } else {
                content_type.as_str()
            }
        )));
    }
    let sse = response.bytes_stream().eventsource().boxed();
    Ok(stream::unfold(Some((sse, protocol)), |state| async move {
        let (mut sse, mut protocol) = state?;
        match sse.next().await {
            Some(Ok(event)) => match protocol.event(&event) {
                Ok(Step::Text(text)) => Some((Ok(Some(text)), Some((sse, protocol)))),
                Ok(Step::Skip) => Some((Ok(None), Some((sse, protocol)))),
                Ok(Step::End) => None,
                Err(e) => Some((Err(e), None)),
            },
            Some(Err(EventStreamError::Transport(e))) => Some((Err(transport_error(&e)), None)),
            Some(Err(e)) => Some((Err(LlmError::Protocol(e.to_string())), None)),
            None => protocol.end_of_body().err().map(|e| (Err(e), None)),
        }
    })
    .boxed())
}

pub(super) fn transport_error(error: &reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Connect(error_chain(error))
    }
}

/// A JSON event body, or the protocol error naming what could not be read.
pub(super) fn json(event: &Event) -> Result<serde_json::Value, LlmError> {
    serde_json::from_str(&event.data).map_err(|e| {
        LlmError::Protocol(format!(
            "event {:?} is not JSON ({e}): {}",
            event.event,
            excerpt(&event.data)
        ))
    })
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Test helper: the events a body of SSE text holds, as the client sees them.
#[cfg(test)]
pub(super) async fn parse_all(body: &str) -> Vec<Event> {
    let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> = vec![Ok(body.as_bytes().to_vec())];
    stream::iter(chunks)
        .eventsource()
        .map(|e| e.expect("valid SSE"))
        .collect()
        .await
}
