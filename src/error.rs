//! The one error type of the HTTP API and its `application/problem+json` body (RFC 9457).
//!
//! Handlers return `Result<_, ApiError>` and use `?`. A response carries its [`Problem`] as an
//! extension; the `problem_and_metrics` middleware in `http` adds the request id, logs server
//! errors once with their cause chain, and turns any other error response (axum's 404/405,
//! tower-http's 413/408) into the same shape, so every error a client sees looks alike. The
//! answers hyper writes itself for requests it cannot parse are rewritten by `http::ProblemIo`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of every error response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `https://cloud-optimizer.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code to branch on, e.g. `invalid_api_key`.
    pub code: String,
    /// The `X-Request-Id` of the request, to quote to support and to find the server log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Extra fields some problems carry (allowed values, limits, dimension, …).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("https://cloud-optimizer.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            request_id: None,
            extra: serde_json::Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Kept on a 5xx response so the middleware can log the cause chain once.
#[derive(Clone)]
pub struct InternalCause(pub std::sync::Arc<anyhow::Error>);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String, &'static str),
    #[error("{detail}")]
    Invalid {
        code: &'static str,
        detail: String,
        extra: serde_json::Map<String, serde_json::Value>,
    },
    #[error("authentication required")]
    Unauthorized(&'static str, String),
    #[error("forbidden")]
    Forbidden(String),
    #[error("not found")]
    NotFound(String),
    #[error("conflict")]
    Conflict(&'static str, String),
    #[error("problem")]
    Problem(Box<Problem>),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest(detail.into(), code)
    }

    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            detail: detail.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// A well-formed body whose content breaks a rule (an empty name, an unknown dimension): 422.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::problem(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    pub fn problem(problem: Problem) -> Self {
        Self::Problem(Box::new(problem))
    }

    fn to_problem(&self) -> Problem {
        match self {
            Self::BadRequest(detail, code) => Problem::new(StatusCode::BAD_REQUEST, code, detail),
            Self::Invalid {
                code,
                detail,
                extra,
            } => {
                let mut p = Problem::new(StatusCode::BAD_REQUEST, code, detail);
                p.extra = extra.clone();
                p
            }
            Self::Unauthorized(code, detail) => {
                Problem::new(StatusCode::UNAUTHORIZED, code, detail)
            }
            Self::Forbidden(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "insufficient_scope", detail)
            }
            Self::NotFound(detail) => Problem::new(StatusCode::NOT_FOUND, "not_found", detail),
            Self::Conflict(code, detail) => Problem::new(StatusCode::CONFLICT, code, detail),
            Self::Problem(p) => (**p).clone(),
            Self::Unavailable(detail) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                detail,
            ),
            Self::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "The server failed to handle this request. Quote the request id when reporting it.",
            ),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error()
            && let Some(constraint) = db.constraint()
        {
            if db.is_unique_violation() {
                return Self::Conflict(
                    "already_exists",
                    format!("a resource with the same unique value already exists ({constraint})"),
                );
            }
            if db.is_check_violation() || db.is_foreign_key_violation() {
                return Self::Invalid {
                    code: "constraint_violation",
                    detail: format!("the request violates a data rule ({constraint})"),
                    extra: serde_json::Map::new(),
                };
            }
        }
        if let Some(db) = err.as_database_error()
            && let Some(code) = db.code()
            && let Some(problem) = input_refused_by_postgres(&code, db.message())
        {
            return Self::problem(problem);
        }
        if matches!(err, sqlx::Error::PoolTimedOut) {
            return Self::Unavailable("the database is busy; retry shortly".into());
        }
        Self::Internal(anyhow::Error::new(err).context("database query failed"))
    }
}

/// PostgreSQL refuses some values that reach it from a request: text it cannot store (a NUL,
/// SQLSTATE 22021), a string that is not of the column's type (22P02), a number out of range
/// (22003), a value too long (22001) — every "data exception" is class 22 — and values over an
/// internal limit such as a tsvector or index row (54000). The value came from the caller, so
/// the caller can fix it: a 400, never a 500.
fn input_refused_by_postgres(sqlstate: &str, message: &str) -> Option<Problem> {
    let (code, detail) = if sqlstate.starts_with("22") {
        ("invalid_value", "a value in the request cannot be stored")
    } else if sqlstate == "54000" {
        ("value_too_large", "a value in the request is too large")
    } else {
        return None;
    };
    tracing::info!(
        sqlstate,
        error = message,
        "database refused a request value"
    );
    Some(
        Problem::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("{detail}: {message}"),
        )
        .with("sqlstate", sqlstate),
    )
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            // Not JSON at all: the request itself is malformed (400). Well-formed JSON that is not
            // the expected shape is understood but unprocessable (422).
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            JsonRejection::BytesRejection(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        let detail = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            JsonRejection::BytesRejection(_) => {
                "the request body is larger than the server accepts".into()
            }
            other => other.body_text(),
        };
        Self::problem(Problem::new(status, code, detail))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.to_problem();
        let cause = match self {
            Self::Internal(err) => Some(InternalCause(std::sync::Arc::new(err))),
            _ => None,
        };
        let mut response = problem_response(problem);
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

/// Builds the response; the problem also rides along as an extension for the middleware.
pub fn problem_response(problem: Problem) -> Response {
    let status = problem.status();
    let mut response = (status, Json(problem.clone())).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response.extensions_mut().insert(problem);
    response
}

/// The problem code for an error response that did not come from an [`ApiError`].
pub fn problem_for_status(status: StatusCode) -> Problem {
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no resource at this path; see /openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request took longer than the server allows",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the Content-Type of the body is not accepted here",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ("invalid_body", "the request body could not be understood")
        }
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::URI_TOO_LONG => (
            "uri_too_long",
            "the URL is longer than the server accepts; send large inputs in a POST body",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers_too_large",
            "the request headers are larger than the server accepts",
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "rate_limited",
            "too many requests; wait for Retry-After seconds",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "service_unavailable",
            "the server cannot handle the request now",
        ),
        s if s.is_server_error() => ("internal_error", "the server failed to handle this request"),
        _ => ("error", "the request failed"),
    };
    Problem::new(status, code, detail)
}
