use crate::helpers::*;

#[tokio::test]
async fn unknown_route_is_problem_json_404() {
    let app = spawn_app().await;
    let response = app.get("/no/such/thing").send().await.unwrap();
    assert_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn wrong_method_is_problem_json_405() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn malformed_json_is_422_with_a_helpful_detail() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "malformed_json").await;
    assert!(!body["detail"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn wrong_field_types_are_422_invalid_body() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": 5, "scope": "root"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_body").await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app_with(|env| {
        env.insert("MAX_BODY_BYTES".into(), "2048".into());
    })
    .await;
    let name = "x".repeat(10_000);
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": name, "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn request_id_is_echoed_when_given_and_generated_otherwise() {
    let app = spawn_app().await;
    let response = app
        .get("/health/live")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let response = app
        .get("/nope")
        .header("x-request-id", "trace-me-456")
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 404, "not_found").await;
    assert_eq!(body["request_id"], "trace-me-456");
    let generated = app.get("/health/live").send().await.unwrap();
    assert!(generated.headers()["x-request-id"].len() >= 32);
}

#[tokio::test]
async fn security_headers_are_set_and_hsts_only_in_production() {
    let app = spawn_app().await;
    let response = app.get("/health/live").send().await.unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    assert!(!response.headers().contains_key("strict-transport-security"));

    let prod = spawn_app_with(|env| {
        env.insert("ENVIRONMENT".into(), "production".into());
    })
    .await;
    let response = prod.get("/health/live").send().await.unwrap();
    assert!(
        response.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = spawn_app_with(|env| {
        env.insert(
            "CORS_ALLOWED_ORIGINS".into(),
            "https://console.example.com".into(),
        );
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/keys"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://console.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    let denied = preflight("https://evil.example.com").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    let response = app
        .get("/openapi.json")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn openapi_document_is_3_1_and_docs_page_renders_it() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/api/v1/keys"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    let page = app.get("/docs").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/openapi.json"));
}
