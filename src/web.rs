//! The HTTP pieces every capability shares: our JSON extractor, the authenticated caller and the
//! extractors that demand one. This module imports no capability, so every capability can import
//! it (see "Imports run one way" in `docs/ARCHITECTURE.md`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Problem};

/// `Json<T>` whose rejections are our problem+json errors (415, 413, 400, 422) instead of plain
/// text, and which refuses a NUL character in any JSON string: PostgreSQL cannot store one, so
/// it is refused here, in one place, with a code that says what to fix.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::problem(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::problem(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts",
            ))
        })?;
        if contains_escaped_nul(&bytes) {
            return Err(ApiError::invalid(
                "invalid_character",
                "JSON strings must not contain the NUL character (\\u0000)",
            ));
        }
        let Json(value) =
            Json::<T>::from_bytes(&bytes).map_err(|e: JsonRejection| ApiError::from(e))?;
        Ok(Self(value))
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` accepts.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// True when a JSON text has `\u0000` in a string. Valid JSON cannot carry a raw NUL (control
/// characters must be escaped), so the escape is the only form; it counts only when its
/// backslash is not itself escaped (`\\u0000` is a backslash followed by "u0000").
fn contains_escaped_nul(json: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"\\u0000";
    json.windows(ESCAPE.len()).enumerate().any(|(at, window)| {
        window == ESCAPE && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    }) || json.contains(&0)
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            other => Err(format!("{other:?} is not a scope: use admin or user")),
        }
    }
}

/// Who is calling. The authentication middleware inserts it for every authenticated request.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Principal {
    /// The key's id; the nil UUID for the bootstrap admin key.
    pub key_id: Uuid,
    pub name: String,
    pub scope: Scope,
}

impl Principal {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.scope == Scope::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this endpoint needs a key with the admin scope".into(),
            ))
        }
    }
}

/// Extractor for the authenticated caller.
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing_api_key", "authentication required".into())
            })
    }
}

/// Extractor that also demands the admin scope.
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        principal.require_admin()?;
        Ok(Admin(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::contains_escaped_nul;

    #[test]
    fn an_escaped_nul_is_found_only_when_its_backslash_is_not_escaped() {
        assert!(contains_escaped_nul(br#"{"input": "a\u0000b"}"#));
        assert!(contains_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(contains_escaped_nul(br#"["\\\u0000"]"#));
        assert!(!contains_escaped_nul(br#"{"input": "a\\u0000b"}"#));
        assert!(!contains_escaped_nul(br#"{"input": "a\u0001b"}"#));
    }
}
