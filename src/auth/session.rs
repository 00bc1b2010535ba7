//! Console sessions: the web console signs in with an API key once and then holds only an
//! `HttpOnly` cookie, so no script on the page can read a credential.
//!
//! The cookie is 256 random bits; the database keeps its SHA-256 and the SHA-256 of the key it
//! was opened with. Every request resolves the session to that key hash and authenticates it
//! like a presented key, so a revoked key ends its sessions at once, on every replica. Sessions
//! end after [`LIFETIME`] whatever happens.
//!
//! Cross-site request forgery: the cookie is `SameSite=Strict`, and every state-changing request
//! authenticated by it must also carry `X-CSRF-Token`, a value derived from the cookie (a keyed
//! hash of it) that the page learns from the sign-in answer. A forged request from another site
//! can make the browser send the cookie in some edge cases (an old browser, a sibling subdomain)
//! but can never read the token.

use base64::Engine;
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

pub const COOKIE: &str = "co_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A console session's whole life: a working day, then sign in again.
pub const LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(12);

/// The session token the request's `Cookie` headers carry, if any.
pub fn token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|value| !value.is_empty())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The CSRF token of a session: derived from the cookie (domain-separated from its stored
/// hash), so nothing more is stored and only a holder of the cookie can compute it.
pub fn csrf_token(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cloud-optimizer csrf v1\0");
    hasher.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Whether a state-changing request carries the CSRF token of its session.
pub fn csrf_valid(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(csrf_token(token).as_bytes())))
}

pub fn csrf_refused() -> ApiError {
    ApiError::problem(crate::error::Problem::new(
        axum::http::StatusCode::FORBIDDEN,
        "csrf_token_invalid",
        "a request authenticated by the console's session cookie must send the session's \
         csrf_token in the X-CSRF-Token header",
    ))
}

pub fn ended() -> ApiError {
    ApiError::Unauthorized(
        "session_expired",
        "the console session has ended (signed out or expired); sign in again".into(),
    )
}

/// A new session for the key with this hash. Expired sessions are swept at the same time:
/// sign-ins are rare, so this keeps the table small without a background task.
pub async fn open(
    db: &PgPool,
    key_hash: &[u8; 32],
) -> Result<(String, DateTime<Utc>), sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut tx = db.begin().await?;
    sqlx::query!("DELETE FROM console_sessions WHERE expires_at <= now()")
        .execute(&mut *tx)
        .await?;
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO console_sessions (token_hash, key_hash, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING expires_at",
        &token_hash(&token)[..],
        &key_hash[..],
        LIFETIME.num_seconds() as f64,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((token, expires_at))
}

/// The key hash and end of a live session; `None` when it was closed or has expired.
pub async fn resolve(
    db: &PgPool,
    token: &str,
) -> Result<Option<([u8; 32], DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT key_hash, expires_at FROM console_sessions
         WHERE token_hash = $1 AND expires_at > now()",
        &token_hash(token)[..],
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|row| Some((row.key_hash.try_into().ok()?, row.expires_at))))
}

pub async fn close(db: &PgPool, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM console_sessions WHERE token_hash = $1",
        &token_hash(token)[..],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The `Set-Cookie` value of a session (`None`: the one that removes it). `Secure` when the
/// browser reached us over TLS, which behind a load balancer only `X-Forwarded-Proto` tells;
/// on plain HTTP (a local run, the trial's HTTP listener) a `Secure` cookie would never be sent
/// back.
pub fn set_cookie(session: Option<&str>, tls: bool) -> String {
    let max_age = match session {
        Some(_) => cookie::time::Duration::seconds(LIFETIME.num_seconds()),
        None => cookie::time::Duration::ZERO,
    };
    Cookie::build((COOKIE, session.unwrap_or_default().to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(tls)
        .max_age(max_age)
        .build()
        .to_string()
}

/// Whether the browser's connection was TLS: the first `X-Forwarded-Proto` hop says `https`.
pub fn over_tls(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_session_cookie_is_found_among_others_and_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; co_session=abc; z=1"),
        );
        assert_eq!(token(&headers).as_deref(), Some("abc"));
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("co_session="));
        assert_eq!(token(&empty), None);
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session_only() {
        let mut headers = HeaderMap::new();
        headers.insert(CSRF_HEADER, csrf_token("one").parse().unwrap());
        assert!(csrf_valid(&headers, "one"));
        assert!(!csrf_valid(&headers, "two"));
        assert!(!csrf_valid(&HeaderMap::new(), "one"));
        assert_ne!(
            csrf_token("one"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_hash("one"))
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_only_over_tls() {
        let plain = set_cookie(Some("t"), false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie(Some("t"), true).contains("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(over_tls(&headers));
    }
}
