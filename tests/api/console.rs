//! The web console's server side: the document and its files, and the session that lets a
//! browser use the API without holding a key (cookie, CSRF token, sign-out, expiry, revocation).
//! The console itself is driven in a real browser by `tests/browser/console.py` (see
//! `browser.rs`).

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// Signs in with `key`; returns the cookie pair to send back, the whole `Set-Cookie` and the
/// session's JSON.
async fn sign_in(app: &TestApp, key: &str) -> (String, String, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/session"))
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("co_session="), "{set_cookie}");
    (pair, set_cookie, response.json().await.unwrap())
}

fn with_cookie(cookie: &str, csrf: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(cookie).unwrap());
    if let Some(csrf) = csrf {
        headers.insert("x-csrf-token", HeaderValue::from_str(csrf).unwrap());
    }
    headers
}

#[tokio::test]
async fn the_console_is_served_at_the_root_under_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let response = app.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("/console/app.js"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");

    for (name, content_type) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let response = app.get(&format!("/console/{name}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let etag = response.headers()["etag"].clone();
        let again = app
            .get(&format!("/console/{name}"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
    }
    // Compressed at build time, sent as gzip to whoever takes it and plain to the rest.
    let plain_client = reqwest::Client::builder().no_gzip().build().unwrap();
    let plain = plain_client
        .get(app.url("/console/app.js"))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let gzipped = plain_client
        .get(app.url("/console/app.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(gzipped.headers()["vary"], "accept-encoding");
    let gzipped = gzipped.bytes().await.unwrap();
    assert!(gzipped.len() < plain.len());
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gzipped[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain);

    let missing = app.get("/console/nothing.js").send().await.unwrap();
    assert_problem(missing, 404, "not_found").await;
    let traversal = app.get("/console/..%2FCargo.toml").send().await.unwrap();
    assert_eq!(traversal.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_cookie_stands_for_its_key_and_unsafe_requests_need_its_csrf_token() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("console user", "user").await;
    let (cookie, set_cookie, session) = sign_in(&app, &key).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert_eq!(session["name"], "console user");
    assert_eq!(session["scope"], "user");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 40);
    assert!(!cookie.contains(&key), "the cookie is not the key itself");

    // Reads need only the cookie; the key is the one signed in with.
    let me: Value = app
        .get("/api/v1/keys/self")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "console user");
    let current: Value = app
        .get("/api/v1/session")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["csrf_token"], csrf);
    assert_eq!(current["expires_at"], session["expires_at"]);

    // A write without the token (what a forged cross-site form would send) is refused.
    let forged = app
        .client
        .post(app.url("/api/v1/chat/conversations"))
        .headers(with_cookie(&cookie, None))
        .json(&json!({"title": "forged"}))
        .send()
        .await
        .unwrap();
    assert_problem(forged, 403, "csrf_token_invalid").await;
    let wrong = app
        .client
        .post(app.url("/api/v1/chat/conversations"))
        .headers(with_cookie(&cookie, Some("not-the-token")))
        .json(&json!({"title": "forged"}))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 403, "csrf_token_invalid").await;
    let genuine = app
        .client
        .post(app.url("/api/v1/chat/conversations"))
        .headers(with_cookie(&cookie, Some(&csrf)))
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), StatusCode::CREATED);
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat_conversations WHERE title = 'forged'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(conversations, 0, "nothing forged was stored");

    // The scope is the key's: a user key's session is no admin.
    let keys = app
        .get("/api/v1/keys")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_problem(keys, 403, "insufficient_scope").await;

    // An API key in Authorization still works, and wins over a cookie.
    let bearer: Value = app
        .get_as("/api/v1/keys/self", &app.admin_key)
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bearer["name"], "bootstrap");
    let no_session = app
        .get_as("/api/v1/session", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(no_session, 404, "no_session").await;
    // A valid key beside a cookie of no live session: authenticated, without a session.
    let stale = app
        .get_as("/api/v1/session", &app.admin_key)
        .header("Cookie", "co_session=made-up")
        .send()
        .await
        .unwrap();
    assert_problem(stale, 404, "no_session").await;
}

#[tokio::test]
async fn the_cookie_is_secure_behind_tls() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"api_key": app.admin_key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");
}

#[tokio::test]
async fn sign_in_refuses_what_is_not_a_valid_key() {
    let app = spawn_app().await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/v1/session"))
            .json(&body)
            .send()
    };
    let wrong = post(json!({"api_key": "co_not-a-key"})).await.unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_problem(wrong, 401, "invalid_api_key").await;
    assert_problem(
        post(json!({"api_key": " "})).await.unwrap(),
        422,
        "invalid_api_key",
    )
    .await;
    assert_problem(post(json!({})).await.unwrap(), 422, "invalid_body").await;
    let (id, key) = app.create_key("gone", "user").await;
    let revoked = app
        .delete_as(&format!("/api/v1/keys/{id}"), &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_problem(
        post(json!({"api_key": key})).await.unwrap(),
        401,
        "api_key_revoked",
    )
    .await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a refused sign-in opens no session");
}

#[tokio::test]
async fn a_session_ends_on_sign_out_on_expiry_and_when_its_key_is_revoked() {
    let app = spawn_app().await;

    // Sign-out needs the CSRF token (else any site could sign you out), then ends the session
    // for every copy of the cookie, not only the browser's.
    let (cookie, _, session) = sign_in(&app, &app.admin_key).await;
    let csrf = session["csrf_token"].as_str().unwrap();
    let forged = app
        .client
        .delete(app.url("/api/v1/session"))
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_problem(forged, 403, "csrf_token_invalid").await;
    let out = app
        .client
        .delete(app.url("/api/v1/session"))
        .headers(with_cookie(&cookie, Some(csrf)))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = app
        .get("/api/v1/keys/self")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_problem(after, 401, "session_expired").await;

    // Expiry.
    let (cookie, _, _) = sign_in(&app, &app.admin_key).await;
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let expired = app
        .get("/api/v1/keys/self")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_problem(expired, 401, "session_expired").await;

    // Revocation of the key, from anywhere, ends its sessions at once.
    let (id, key) = app.create_key("short-lived", "admin").await;
    let (cookie, _, _) = sign_in(&app, &key).await;
    let ok = app
        .get("/api/v1/keys/self")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let revoked = app
        .delete_as(&format!("/api/v1/keys/{id}"), &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let after = app
        .get("/api/v1/keys/self")
        .headers(with_cookie(&cookie, None))
        .send()
        .await
        .unwrap();
    assert_problem(after, 401, "api_key_revoked").await;

    // A made-up cookie is no session.
    let made_up = app
        .get("/api/v1/usage")
        .headers(with_cookie("co_session=made-up", None))
        .send()
        .await
        .unwrap();
    assert_problem(made_up, 401, "session_expired").await;
}

#[tokio::test]
async fn the_notification_socket_accepts_the_session_cookie_from_the_same_origin_only() {
    let app = spawn_app().await;
    let (cookie, _, _) = sign_in(&app, &app.admin_key).await;
    let ws_url = format!(
        "{}/api/v1/notifications/ws?types=test",
        app.address.replacen("http", "ws", 1)
    );
    let host = app.address.trim_start_matches("http://").to_owned();

    let mut request = ws_url.clone().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("origin", format!("http://{host}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("same-origin socket with the cookie");
    let published = app
        .post_as("/api/v1/admin/notifications/test", &app.admin_key)
        .json(&json!({"hello": "console"}))
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success());
    let message = loop {
        match socket.next().await.expect("a message").unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => break text,
            _ => continue,
        }
    };
    let event: Value = serde_json::from_str(&message).unwrap();
    assert_eq!(event["type"], "test");
    assert_eq!(event["data"]["hello"], "console");

    // Another site's page: the browser would send the cookie only without SameSite=Strict, and
    // the origin check refuses it anyway.
    let mut foreign = ws_url.into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("a foreign origin must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn guessing_keys_through_sign_in_is_throttled_per_address_before_any_lookup() {
    let app = crate::helpers::spawn_app_with(|env| {
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "3".into());
    })
    .await;
    let guess = || {
        app.client
            .post(app.url("/api/v1/session"))
            .json(&json!({"api_key": "co_guess"}))
            .send()
    };
    for _ in 0..3 {
        assert_problem(guess().await.unwrap(), 401, "invalid_api_key").await;
    }
    let refused = guess().await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 429, "rate_limited").await;
    // Even the right key waits: the budget is the address's.
    let right = app
        .client
        .post(app.url("/api/v1/session"))
        .json(&json!({"api_key": app.admin_key}))
        .send()
        .await
        .unwrap();
    assert_problem(right, 429, "rate_limited").await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}
