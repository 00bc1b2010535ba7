use std::time::Duration;

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
    assert_eq!(body["components"]["ib"], "ok");
    assert_eq!(body["status"], "healthy", "every dependency is up: {body}");
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
    let revoke = app
        .client
        .delete(app.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    app.admin_json("/api/v1/kb/controls/pci-dss:8.4.2").await;
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
    assert!(body.contains(r#"route="/api/v1/keys/{id}""#), "{body}");
    assert!(
        body.contains(r#"route="/api/v1/kb/controls/{id}""#),
        "routes with a path parameter are labelled by their template: {body}"
    );
    assert!(body.contains("db_pool_connections"), "{body}");
    for metric in [
        "http_requests_total",
        "http_request_duration_seconds",
        "db_pool_connections",
    ] {
        assert!(
            body.contains(&format!("# HELP {metric} ")),
            "{metric} explains itself: {body}"
        );
    }
    assert!(!body.contains(&id), "raw paths must never become labels");
    assert!(
        !body.contains("pci-dss:8.4.2"),
        "raw paths must never become labels"
    );
    let on_api_port = app.get("/metrics").send().await.unwrap();
    assert_eq!(
        on_api_port.status(),
        404,
        "metrics are not routed on the API port"
    );
}

/// A TCP proxy in front of PostgreSQL with a switch: cut drops every connection and refuses
/// new ones (accepts and closes them at once), restore lets them through again.
struct PgProxy {
    address: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { address, up, task }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn health_follows_a_database_outage_and_its_end() {
    let db = create_migrated_database().await;
    let real = url::Url::parse(&database_url(&db)).unwrap();
    let proxy = PgProxy::start(format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5432)
    ))
    .await;
    let mut through_proxy = real.clone();
    through_proxy.set_host(Some("127.0.0.1")).unwrap();
    through_proxy.set_port(Some(proxy.address.port())).unwrap();
    let app = spawn_on_database(db, |env| {
        env.insert("DATABASE_URL".into(), through_proxy.to_string());
    })
    .await;
    let status = |path: &'static str| {
        let request = app.get(path);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(app.health().await["status"], "healthy");

    proxy.set(false);
    let down = eventually(Duration::from_secs(15), || async {
        let response = app.get("/health").send().await.unwrap();
        let code = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        code == 503 && body["status"] == "unhealthy" && body["components"]["db"] == "down"
    })
    .await;
    assert!(
        down,
        "/health must be 503 unhealthy with db down during the outage"
    );
    assert_eq!(
        status("/health/live").await,
        200,
        "liveness ignores the database"
    );
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let probe: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(probe["reason"], "database unreachable");

    proxy.set(true);
    let back = eventually(Duration::from_secs(20), || async {
        let health = app.get("/health").send().await.unwrap();
        let ready = app.get("/health/ready").send().await.unwrap();
        if health.status() != 200 || ready.status() != 200 {
            return false;
        }
        let body: serde_json::Value = health.json().await.unwrap();
        body["status"] == "healthy" && body["components"]["db"] == "ok"
    })
    .await;
    assert!(back, "health must recover once the database is back");
    assert_eq!(status("/health/live").await, 200);
}

fn source_files() -> Vec<std::path::PathBuf> {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(std::path::Path::new("src"), &mut files);
    files
}

/// Every metric the code records has a `describe_*` (its `# HELP` line) in `telemetry.rs`.
#[test]
fn every_recorded_metric_is_described() {
    let telemetry = std::fs::read_to_string("src/telemetry.rs").unwrap();
    let recorded = regex_lite_metric_names(&source_files());
    assert!(recorded.len() >= 10, "found {recorded:?}");
    for name in recorded {
        assert!(
            telemetry.contains(&format!("\"{name}\",")),
            "metric {name} has no describe_* in telemetry.rs"
        );
    }
}

/// Names passed to `metrics::counter!`/`gauge!`/`histogram!` (first string literal after it).
fn regex_lite_metric_names(files: &[std::path::PathBuf]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                if text[..at].ends_with("describe_") {
                    continue;
                }
                let rest = &text[at + macro_name.len()..];
                if let Some(start) = rest.find('"') {
                    let name: String = rest[start + 1..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// The metric names of the README's metrics table (its first column).
fn readme_metrics() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let table = readme
        .split_once("| metric | labels | what |")
        .expect("README has the metrics table")
        .1;
    table
        .lines()
        .skip(2)
        .map(str::trim)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.split('|')
                .nth(1)
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_string()
        })
        .collect()
}

/// The README lists every metric the binary records, and a fresh server (the real binary, in a
/// process of its own, asked nothing but its readiness probe) exports each of them already, at
/// its start-up value, not from the first event on.
#[tokio::test]
async fn every_metric_the_readme_lists_is_exported_from_start_up() {
    let listed = readme_metrics();
    assert_eq!(
        listed,
        regex_lite_metric_names(&source_files()),
        "the README's metrics table and the metrics the code records"
    );

    let db = create_migrated_database().await;
    let mut env = base_env(&db);
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("REDIS_URL".into(), redis_url());
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
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Sample lines as (series, value); a histogram's series are name_bucket, _sum and _count.
    let samples: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    for name in &listed {
        assert!(
            samples.iter().any(|(series, _)| {
                let metric = series.split('{').next().unwrap();
                metric == name || metric == format!("{name}_count")
            }),
            "{name} is not exported by a fresh server:\n{text}"
        );
    }
    for (series, value) in [
        (r#"http_rate_limited_total{by="key"}"#, "0"),
        (r#"http_rate_limited_total{by="ip"}"#, "0"),
        (r#"cloud_optimizer_license_status{status="disabled"}"#, "1"),
        (r#"cloud_optimizer_license_status{status="valid"}"#, "0"),
        ("cloud_optimizer_active_trials", "0"),
        (
            r#"cloud_optimizer_usage_events_total{dimension="ChatQuestions"}"#,
            "0",
        ),
        (
            r#"cloud_optimizer_usage_pending_events{dimension="SecurityScans"}"#,
            "0",
        ),
        ("notifications_connections", "0"),
        (r#"notifications_clients_cut_total{reason="too_slow"}"#, "0"),
        ("notifications_fanout_latency_seconds_count", "0"),
        ("redis_up", "1"),
    ] {
        assert!(
            samples.contains(&(series, value)),
            "{series} {value} expected in:\n{text}"
        );
    }
}
