use crate::helpers::*;

#[tokio::test]
async fn health_reports_components_and_version() {
    let app = spawn_app().await;
    let response = app.get("/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["components"]["db"], "ok");
    assert_eq!(body["components"]["redis"], "disabled");
    assert_eq!(body["components"]["neo4j"], "disabled");
    assert_eq!(body["components"]["marketplace"], "disabled");
    assert!(body["components"]["ib"].is_string());
    assert!(["healthy", "degraded"].contains(&body["status"].as_str().unwrap()));
    assert_eq!(body["version"], cloud_optimizer::version());
}

#[tokio::test]
async fn live_and_ready_answer_without_a_key() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").send().await.unwrap().status(), 200);
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn ready_is_503_once_shutdown_begins_while_live_stays_200() {
    let app = spawn_app_with(|env| {
        env.insert("SHUTDOWN_DRAIN_SECONDS".into(), "3".into());
    })
    .await;
    let client = app.client.clone();
    let ready_url = app.url("/health/ready");
    let live_url = app.url("/health/live");
    let stopping = tokio::spawn(app.stop());
    let became_unready = eventually(std::time::Duration::from_secs(3), || {
        let client = client.clone();
        let url = ready_url.clone();
        async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 503) }
    })
    .await;
    assert!(became_unready, "readiness must turn 503 during the drain");
    assert_eq!(client.get(&live_url).send().await.unwrap().status(), 200);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn ready_is_503_when_migrations_are_not_applied() {
    cloud_optimizer::telemetry::init_for_tests();
    let db = create_empty_database().await;
    let mut env = base_env(&db);
    env.insert("MIGRATE_ON_STARTUP".into(), "false".into());
    let config =
        cloud_optimizer::config::Config::from_env(&cloud_optimizer::config::Env::from_map(env))
            .unwrap();
    let server = cloud_optimizer::server::Server::start(config)
        .await
        .unwrap();
    let router = server.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let response = reqwest::get(format!("http://{addr}/health/ready"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "database migrations not applied");
    serve.abort();
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_labelled_by_route() {
    let app = spawn_app().await;
    let (id, _) = app.create_key("metrics", "user").await;
    let _ = app
        .get_as(&format!("/api/v1/keys/{id}"), &app.admin_key)
        .send()
        .await
        .unwrap();
    let body = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("http_requests_total"), "{body}");
    assert!(body.contains("http_request_duration_seconds"), "{body}");
    assert!(body.contains(r#"route="/api/v1/keys""#), "{body}");
    assert!(body.contains("db_pool_connections"), "{body}");
    assert!(!body.contains(&id), "raw paths must never become labels");
    let on_api_port = app.get("/metrics").send().await.unwrap();
    assert_eq!(
        on_api_port.status(),
        404,
        "metrics are not routed on the API port"
    );
}
