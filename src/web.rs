//! The HTTP pieces every capability shares: our JSON extractor, the authenticated caller and the
//! extractors that demand one. This module imports no capability, so every capability can import
//! it (see "Imports run one way" in `docs/ARCHITECTURE.md`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Problem};

/// The envelope of every list the API returns. `next` is the path and query of the next page
/// (the request's own query with `offset` advanced), or `null` on the last page.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items matching the request over all pages.
    pub total: i64,
    /// The page size used.
    pub limit: i64,
    /// Items skipped before this page.
    pub offset: i64,
    /// Path and query of the next page, relative to the server; `null` on the last page.
    pub next: Option<String>,
}

/// A query filter with a value outside its allowed set: a 400 `invalid_filter` naming the
/// parameter and listing the values it takes.
pub fn invalid_filter<T: Serialize>(name: &str, value: &str, allowed: &[T]) -> ApiError {
    ApiError::problem(
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            format!("{name}={value:?} is not allowed; use one of the listed values"),
        )
        .with("parameter", name)
        .with("allowed", allowed),
    )
}

/// The largest `offset` any list accepts: far beyond any real page, and a bound that keeps
/// absurd values (`9223372036854775807`) out of the database and in the OpenAPI document.
pub const MAX_OFFSET: i64 = 1_000_000;

/// `limit` and `offset` of a list request, checked against its bounds: out of range is a 400
/// naming the parameter and the range.
pub fn page_bounds(
    limit: Option<i64>,
    offset: Option<i64>,
    default_limit: i64,
    max_limit: i64,
) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(default_limit);
    if !(1..=max_limit).contains(&limit) {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_limit",
                format!("limit must be between 1 and {max_limit}"),
            )
            .with("minimum", 1)
            .with("maximum", max_limit),
        ));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_offset",
                format!("offset must be between 0 and {MAX_OFFSET}"),
            )
            .with("minimum", 0)
            .with("maximum", MAX_OFFSET),
        ));
    }
    Ok((limit, offset))
}

/// The `next` link of a page: the request's path and query with `limit` and `offset` set for
/// the following page, or `None` when this page reaches the end.
pub fn next_link(uri: &axum::http::Uri, limit: i64, offset: i64, total: i64) -> Option<String> {
    let next = offset.checked_add(limit)?;
    if next >= total || next > MAX_OFFSET {
        return None;
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if name != "limit" && name != "offset" {
            query.append_pair(&name, &value);
        }
    }
    query.append_pair("limit", &limit.to_string());
    query.append_pair("offset", &next.to_string());
    Some(format!("{}?{}", uri.path(), query.finish()))
}

/// JSON text written by PostgreSQL (`json_build_object` writes `"key" : value`, `json_agg`
/// breaks lines) in the compact form serde writes every other body in, keys in their order.
/// Text that is not JSON is returned as it is (PostgreSQL never writes such).
pub fn compact_json(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut reader = serde_json::Deserializer::from_str(text);
    let mut writer = serde_json::Serializer::new(&mut out);
    match serde_transcode::transcode(&mut reader, &mut writer).and_then(|()| reader.end()) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| text.to_owned()),
        Err(_) => text.to_owned(),
    }
}

/// The page envelope around items already serialised as a JSON array (the KB builds its lists
/// in PostgreSQL; they are only compacted).
pub fn page_json(items: &str, total: i64, limit: i64, offset: i64, next: Option<&str>) -> String {
    let items = compact_json(items);
    let next = serde_json::to_string(&next).unwrap_or_else(|_| "null".into());
    format!(
        r#"{{"items":{items},"total":{total},"limit":{limit},"offset":{offset},"next":{next}}}"#
    )
}

/// Every timestamp the API writes: RFC 3339 in UTC with exactly three fractional digits
/// (`2026-12-01T06:00:00.000Z`), whatever precision the clock or the database had. Use with
/// `#[serde(with = "crate::web::timestamp")]` (`timestamp::option`, `timestamp::vec` for
/// optional and repeated values).
pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::Serializer;

    pub fn format(at: &DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(at))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_str(&format(at)),
                None => s.serialize_none(),
            }
        }
    }

    pub mod vec {
        use super::*;
        pub fn serialize<S: Serializer>(at: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(at.iter().map(format))
        }
    }
}

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

/// An optional JSON body (`Option<ApiJson<T>>`): a request with neither a body nor a
/// `Content-Type` is `None`; anything else is read as [`ApiJson`] reads it.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return <Self as FromRequest<S>>::from_request(req, state)
                .await
                .map(Some);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::problem(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts",
            ))
        })?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Err(ApiError::problem(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            )))
        }
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
    /// The key's id (as in `/keys`); the nil UUID for the bootstrap admin key.
    #[serde(rename = "id")]
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
    fn timestamps_have_millisecond_precision_in_utc() {
        use chrono::TimeZone;
        let at = chrono::Utc
            .timestamp_opt(1_795_000_000, 123_456_789)
            .unwrap();
        assert_eq!(super::timestamp::format(&at), "2026-11-18T11:06:40.123Z");
        let whole = chrono::Utc.timestamp_opt(1_795_000_000, 0).unwrap();
        assert_eq!(super::timestamp::format(&whole), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn next_link_keeps_filters_and_advances_the_offset() {
        let uri: axum::http::Uri = "/api/v1/kb/checks?service=s3&limit=5&offset=5"
            .parse()
            .unwrap();
        assert_eq!(
            super::next_link(&uri, 5, 5, 12).as_deref(),
            Some("/api/v1/kb/checks?service=s3&limit=5&offset=10")
        );
        assert_eq!(super::next_link(&uri, 5, 10, 12), None);
        assert_eq!(super::next_link(&uri, 5, 5, 10), None);
        let bare: axum::http::Uri = "/api/v1/keys".parse().unwrap();
        assert_eq!(
            super::next_link(&bare, 2, 0, 3).as_deref(),
            Some("/api/v1/keys?limit=2&offset=2")
        );
    }

    #[test]
    fn an_escaped_nul_is_found_only_when_its_backslash_is_not_escaped() {
        assert!(contains_escaped_nul(br#"{"input": "a\u0000b"}"#));
        assert!(contains_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(contains_escaped_nul(br#"["\\\u0000"]"#));
        assert!(!contains_escaped_nul(br#"{"input": "a\\u0000b"}"#));
        assert!(!contains_escaped_nul(br#"{"input": "a\u0001b"}"#));
    }
}
