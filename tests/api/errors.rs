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
async fn malformed_json_is_400_with_a_helpful_detail() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400, "malformed_json").await;
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

/// The body as sent, undecoded: gunzipped here only when the response says it is gzip.
async fn body_as_sent(response: reqwest::Response) -> (Option<String>, Vec<u8>) {
    use std::io::Read;
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let raw = response.bytes().await.unwrap().to_vec();
    let body = if encoding.as_deref() == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("a body labelled gzip is gzip");
        out
    } else {
        raw
    };
    (encoding, body)
}

fn no_decoding_client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    let response = no_decoding_client()
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (encoding, body) = body_as_sent(response).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["openapi"].is_string());
}

#[tokio::test]
async fn error_bodies_match_their_content_encoding_for_clients_that_accept_gzip() {
    let app = spawn_app().await;
    let raw = no_decoding_client();
    // (method, path, JSON body, status, code)
    let cases = [
        ("GET", "/api/v1/usage", None, 401, "missing_api_key"),
        ("GET", "/no/such/thing", None, 404, "not_found"),
        ("PUT", "/health/live", None, 405, "method_not_allowed"),
        ("POST", "/api/v1/keys", Some("{"), 400, "malformed_json"),
    ];
    for (method, path, body, status, code) in cases {
        let request = |client: &reqwest::Client| {
            let mut r = client
                .request(method.parse().unwrap(), app.url(path))
                .header("accept-encoding", "gzip");
            if let Some(body) = body {
                r = r
                    .bearer_auth(&app.admin_key)
                    .header("content-type", "application/json")
                    .body(body);
            }
            r
        };
        // What curl --compressed, httpx and requests do: ask for gzip, decode what is labelled.
        assert_problem(request(&app.client).send().await.unwrap(), status, code).await;
        let response = request(&raw).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let (encoding, bytes) = body_as_sent(response).await;
        let problem: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{code} ({encoding:?}): {e}"));
        assert_eq!(problem["code"], code);
    }
}

#[tokio::test]
async fn a_nul_character_in_a_path_query_or_json_string_is_a_400_not_a_500() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/kb/search?q=%00",
        "/api/v1/kb/search?q=a%00b",
        "/api/v1/kb/checks/%00",
        "/api/v1/kb/services/%00",
        "/api/v1/kb/controls/pci-dss:%00",
    ] {
        let response = app.get_as(path, &app.admin_key).send().await.unwrap();
        assert_problem(response, 400, "invalid_character").await;
    }
    let response = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": "a\u{0}b"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_character").await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "nul\u{0}", "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_character").await;
    // An escaped backslash followed by "u0000" is ordinary text.
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .header("content-type", "application/json")
        .body(r#"{"name": "back\\u0000slash", "scope": "user"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn values_postgresql_refuses_become_400s_with_their_sqlstate() {
    let app = spawn_app().await;
    for (sql, sqlstate) in [
        ("SELECT convert_from('\\x00'::bytea, 'UTF8')", "22021"),
        ("SELECT 'not a number'::int::text", "22P02"),
        ("SELECT (2147483647::int + 1)::text", "22003"),
    ] {
        let err = sqlx::query_scalar::<_, String>(sql)
            .fetch_one(&app.pool)
            .await
            .expect_err(sql);
        let response = axum::response::IntoResponse::into_response(
            cloud_optimizer::error::ApiError::from(err),
        );
        assert_eq!(response.status(), 400, "{sql}");
        let problem = response
            .extensions()
            .get::<cloud_optimizer::error::Problem>()
            .unwrap();
        assert_eq!(problem.code, "invalid_value", "{sql}");
        assert_eq!(problem.extra["sqlstate"], sqlstate, "{sql}");
    }
}

#[tokio::test]
async fn a_url_over_the_limit_is_a_problem_json_414_even_beyond_what_hyper_parses() {
    let app = spawn_app_with(|env| {
        env.insert("MAX_URI_BYTES".into(), "2048".into());
    })
    .await;
    // Over our limit, under hyper's: our layer answers.
    let response = app
        .get(&format!("/api/v1/kb/search?q={}", "a".repeat(3000)))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 414, "uri_too_long").await;
    assert_eq!(body["max_uri_bytes"], 2048);
    // Over hyper's own 64 KiB limit (no client library sends this): still problem+json.
    let request = format!(
        "GET /api/v1/kb/search?q={} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    raw_request(&app.address, request.as_bytes())
        .await
        .assert_problem(414, "uri_too_long");
}

#[tokio::test]
async fn a_control_byte_in_a_header_is_a_problem_json_400() {
    let app = spawn_app().await;
    let response = raw_request(
        &app.address,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\x01def\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = response.assert_problem(400, "malformed_request");
    assert_ne!(body["request_id"], "abc\u{1}def");
    // The server still serves the next connection.
    assert_eq!(app.get("/health/live").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_unusable_request_id_is_replaced_not_echoed() {
    let app = spawn_app().await;
    for unusable in [&b"caf\xc3\xa9"[..], &[b'x'; 200][..], b"two words"] {
        let response = app
            .get("/nope")
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(unusable).unwrap(),
            )
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].as_bytes().to_vec();
        assert_ne!(echoed, unusable);
        let body = assert_problem(response, 404, "not_found").await;
        assert_eq!(body["request_id"].as_str().unwrap().as_bytes(), echoed);
    }
}

#[tokio::test]
async fn openapi_request_schemas_carry_the_constraints_the_server_enforces() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    let key = &schemas["CreateKeyRequest"];
    assert_eq!(key["properties"]["name"]["minLength"], 1, "{key}");
    assert_eq!(key["properties"]["name"]["maxLength"], 100, "{key}");
    let required = |s: &serde_json::Value| -> Vec<String> {
        s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(required(key).contains(&"name".into()) && required(key).contains(&"scope".into()));
    let action = &schemas["BillableActionRequest"];
    assert_eq!(action["properties"]["input"]["minLength"], 1, "{action}");
    assert_eq!(
        action["properties"]["input"]["maxLength"], 10000,
        "{action}"
    );
    assert_eq!(
        action["properties"]["dimension"]["$ref"], "#/components/schemas/Dimension",
        "{action}"
    );
    assert!(
        required(action).contains(&"dimension".into())
            && required(action).contains(&"input".into())
    );
    let dimensions: Vec<&str> = schemas["Dimension"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", schemas["Dimension"]))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        dimensions,
        ["SecurityScans", "ChatQuestions", "DocumentAnalysis"]
    );
    // And the server refuses what the document now rules out.
    let response = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "", "input": ""}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_dimension").await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "", "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_name").await;
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
