//! The real binary: start-up, migrations across replicas, configuration errors, signals, traces.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The binary's environment; `Process::serve` picks the port.
fn binary_env(db: &str) -> std::collections::HashMap<String, String> {
    let mut env = base_env(db);
    env.insert("METRICS_PORT".into(), "0".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    env
}

use crate::helpers::run_binary as run;

#[tokio::test]
async fn three_replicas_started_together_on_an_empty_database_all_become_ready() {
    let db = create_empty_database().await;
    let env = binary_env(&db);
    let (a, b, c) = tokio::join!(
        Process::serve(&env),
        Process::serve(&env),
        Process::serve(&env)
    );
    let mut processes = vec![a, b, c];
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let (applied, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let expected = cloud_optimizer::db::MIGRATOR.iter().count() as i64;
    assert_eq!(
        (applied, distinct),
        (expected, expected),
        "each migration applied exactly once"
    );
    for process in &mut processes {
        process.signal("TERM");
        assert_eq!(process.wait_exit(Duration::from_secs(15)).await, Some(0));
    }
}

#[tokio::test]
async fn the_previous_release_starts_against_a_schema_a_newer_release_migrated() {
    let app = spawn_app().await;
    // As a newer image would leave it: one more migration than this binary knows.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (20991231000000, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // A rollback: the older binary starts (migrating on start) and serves.
    let rolled_back = spawn_replica(&app).await;
    let health = rolled_back.admin_json("/api/v1/kb/frameworks").await;
    assert!(!health["items"].as_array().unwrap().is_empty());
    let response = reqwest::get(format!("{}/health/ready", rolled_back.address))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_then_finishes_the_in_flight_request_and_exits_zero() {
    let db = create_migrated_database().await;
    let mut env = binary_env(&db);
    env.insert("SHUTDOWN_DRAIN_SECONDS".into(), "1".into());
    env.insert("SHUTDOWN_GRACE_SECONDS".into(), "20".into());
    let mut process = Process::serve(&env).await;

    // A slow client: headers and half of the body now, the rest after the signal.
    let body = r#"{"name": "made-during-shutdown", "scope": "user"}"#;
    let (head, tail) = body.split_at(10);
    let mut slow = tokio::net::TcpStream::connect(process.addr())
        .await
        .unwrap();
    let request = format!(
        "POST /api/v1/keys HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {BOOTSTRAP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    );
    slow.write_all(request.as_bytes()).await.unwrap();

    process.signal("TERM");
    let client = reqwest::Client::new();
    let ready_url = format!("http://{}/health/ready", process.addr());
    let unready = eventually(Duration::from_secs(5), || {
        let client = client.clone();
        let url = ready_url.clone();
        async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 503) }
    })
    .await;
    assert!(unready, "readiness turns 503 as soon as shutdown starts");

    let addr = process.addr();
    let refusing = eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refusing, "new connections are refused after the drain");
    assert_eq!(
        process.child.try_wait().unwrap(),
        None,
        "still running while a request is in flight"
    );

    slow.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request completes: {response}"
    );
    assert!(response.contains("made-during-shutdown"));

    assert_eq!(
        process.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "clean exit"
    );
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE name = 'made-during-shutdown'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn invalid_configuration_exits_2_with_one_line_naming_the_variable() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("LOG_FORMAT", "xml"),
        ("RATE_LIMIT_PER_MINUTE", "-1"),
        ("DATABASE_URL", "mysql://nope"),
        ("TRUSTED_PROXY_CIDRS", "10.0.0.0/99"),
        ("BOOTSTRAP_ADMIN_API_KEY", "too-short"),
        ("MIGRATE_ON_STARTUP", "maybe"),
        ("MARKETPLACE_ENABLED", "true"),
    ] {
        let mut env = std::collections::HashMap::new();
        env.insert(var.to_string(), value.to_string());
        let output = run(&env, &["serve"]);
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        let named = if var == "MARKETPLACE_ENABLED" {
            "MARKETPLACE_PRODUCT_CODE"
        } else {
            var
        };
        assert!(stderr.contains(named), "{var}: {stderr}");
    }
}

#[tokio::test]
async fn unreachable_database_fails_after_the_deadline_with_a_clear_message() {
    let mut env = std::collections::HashMap::new();
    env.insert(
        "DATABASE_URL".into(),
        format!(
            "postgres://postgres:pw-secret-123@127.0.0.1:{}/x",
            free_port()
        ),
    );
    env.insert("DATABASE_CONNECT_TIMEOUT_SECONDS".into(), "1".into());
    env.insert("PORT".into(), free_port().to_string());
    env.insert("METRICS_PORT".into(), "0".into());
    let output = run(&env, &["serve"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("pw-secret-123"),
        "password leaked: {stderr}"
    );
}

#[tokio::test]
async fn version_config_check_and_healthcheck_commands() {
    let version = run(&Default::default(), &["--version"]);
    let text = String::from_utf8(version.stdout).unwrap();
    assert!(text.trim().ends_with(&cloud_optimizer::version()), "{text}");
    assert!(text.contains(&format!("v{}-ib", env!("CARGO_PKG_VERSION"))));

    let db = create_migrated_database().await;
    let port = free_port();
    let mut env = binary_env(&db);
    env.insert("PORT".into(), port.to_string());
    env.insert(
        "REDIS_URL".into(),
        "redis://:redis-pw-456@127.0.0.1:6379".into(),
    );
    let check = run(&env, &["config", "check"]);
    assert!(check.status.success());
    let shown = String::from_utf8(check.stdout).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(parsed["PORT"], port);
    assert!(
        !shown.contains(BOOTSTRAP_KEY) && !shown.contains("redis-pw-456"),
        "secrets redacted: {shown}"
    );

    assert_eq!(
        run(&env, &["healthcheck"]).status.code(),
        Some(1),
        "nothing is listening yet"
    );
    let process = Process::serve(&env).await;
    env.insert("PORT".into(), process.port.to_string());
    assert_eq!(run(&env, &["healthcheck"]).status.code(), Some(0));
}

#[tokio::test]
async fn migrate_command_applies_the_schema() {
    let db = create_empty_database().await;
    let env = binary_env(&db);
    let output = run(&env, &["migrate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'api_keys'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn request_spans_are_exported_over_otlp_http() {
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().extend_from_slice(&body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let db = create_migrated_database().await;
    let mut env = binary_env(&db);
    env.insert(
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        format!("http://{otlp}"),
    );
    env.insert("OTEL_SERVICE_NAME".into(), "co-under-test".into());
    env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into());
    let mut process = Process::serve(&env).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1/keys/self", process.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .header("x-request-id", "otel-trace-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(15)).await, Some(0));

    let bytes = received.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("co-under-test"),
        "service name in the resource"
    );
    assert!(
        text.contains("GET /api/v1/keys/self"),
        "span named by method and route: {text:?}"
    );
    assert!(
        text.contains("otel-trace-check"),
        "request id recorded on the span"
    );
    assert!(
        text.contains("http.response.status_code"),
        "the status recorded on the span as the HTTP conventions name it"
    );
    server.abort();
}

#[tokio::test]
async fn json_logs_carry_the_documented_fields_and_metrics_the_documented_names() {
    let db = create_migrated_database().await;
    let mut env = binary_env(&db);
    env.insert("REDIS_URL".into(), redis_url());
    env.insert("RATE_LIMIT_PER_MINUTE".into(), "3".into());
    env.insert("METRICS_PORT".into(), "free".into());
    let process = Process::serve(&env).await;
    let metrics_addr = process
        .output
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "metrics listening")
        .and_then(|l| l["metrics_addr"].as_str().map(str::to_string))
        .expect("the metrics listener logs its address");
    let client = reqwest::Client::new();
    let base = format!("http://{}", process.addr());
    let response = client
        .get(format!("{base}/api/v1/kb/controls/pci-dss:8.4.2"))
        .bearer_auth(BOOTSTRAP_KEY)
        .header("x-request-id", "log-fields-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let billed = client
        .post(format!("{base}/api/v1/billable-actions"))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": "metrics"}))
        .send()
        .await
        .unwrap();
    assert_eq!(billed.status(), 201);
    for _ in 0..3 {
        client
            .get(format!("{base}/api/v1/keys/self"))
            .bearer_auth(BOOTSTRAP_KEY)
            .send()
            .await
            .unwrap();
    }

    // README "Operations": one JSON object per line with timestamp, level, message, status and
    // duration_ms, and the request's span with request_id, method and route.
    let line = {
        let mut found = None;
        let seen = eventually(Duration::from_secs(5), || {
            let lines = process.output.lock().unwrap().clone();
            found = lines
                .into_iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .find(|l| {
                    l.to_string().contains("log-fields-check")
                        && l["message"] == "request completed"
                });
            let seen = found.is_some();
            async move { seen }
        })
        .await;
        assert!(
            seen,
            "no request line: {:?}",
            process.output.lock().unwrap()
        );
        found.unwrap()
    };
    let top = |name: &str| {
        line.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {line}"))
    };
    let span = |name: &str| {
        line["span"]
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("span.{name} missing from {line}"))
    };
    assert!(top("timestamp").is_string());
    assert_eq!(top("level"), "INFO");
    assert_eq!(top("status"), 200);
    assert!(top("duration_ms").as_f64().is_some(), "{line}");
    assert_eq!(span("request_id"), "log-fields-check");
    assert_eq!(span("method"), "GET");
    assert_eq!(span("route"), "/api/v1/kb/controls/{id}");

    // README "Operations": the metric names, labelled by route template.
    let metrics = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "db_pool_connections",
        "redis_up",
        "http_rate_limited_total",
        "cloud_optimizer_usage_events_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"route="/api/v1/kb/controls/{id}""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dimension="ChatQuestions""#),
        "{metrics}"
    );
}

/// Pretty logs are for people: a request's line shows its method, route, request id and status
/// once, not the fields the trace exporter reads (`otel.*`, the span's copy of the status).
#[tokio::test]
async fn pretty_logs_leave_out_the_otel_fields() {
    let db = create_migrated_database().await;
    let mut env = binary_env(&db);
    env.insert("LOG_FORMAT".into(), "pretty".into());
    let process = Process::serve(&env).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1/kb/frameworks", process.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .header("x-request-id", "pretty-log-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = || {
        process
            .output
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("pretty-log-check") && l.contains("request completed"))
            .cloned()
    };
    let logged = eventually(Duration::from_secs(5), || {
        let found = line().is_some();
        async move { found }
    })
    .await;
    assert!(logged, "{:?}", process.output.lock().unwrap());
    let line = line().unwrap();
    assert!(
        line.contains(r#"route="/api/v1/kb/frameworks""#) && line.contains("method=GET"),
        "{line}"
    );
    assert!(!line.contains("otel."), "{line}");
    assert_eq!(line.matches("status=200").count(), 1, "{line}");
    assert!(!line.contains("status_code"), "the status once: {line}");
}
