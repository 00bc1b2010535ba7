use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

async fn statuses(app: &TestApp, key: &str, n: usize, forwarded_for: Option<&str>) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut request = app.get_as("/api/v1/keys/self", key);
        if let Some(ip) = forwarded_for {
            request = request.header("x-forwarded-for", ip);
        }
        out.push(request.send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn key_over_budget_gets_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "5".into());
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "1000".into());
    })
    .await;
    let first = app
        .get_as("/api/v1/keys/self", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["ratelimit-limit"], "5");
    assert_eq!(first.headers()["ratelimit-remaining"], "4");
    assert_eq!(statuses(&app, &app.admin_key, 4, None).await, vec![200; 4]);
    let refused = app
        .get_as("/api/v1/keys/self", &app.admin_key)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert_problem(refused, 429, "rate_limited").await;
    // Another key has its own budget.
    let (_, other) = {
        let (id, key) = {
            // Creating a key is a request by the exhausted admin key: insert directly instead.
            let name = cloud_optimizer::auth::keys::KeyName::parse("other").unwrap();
            let created = cloud_optimizer::auth::keys::create(
                &app.pool,
                &name,
                cloud_optimizer::auth::Scope::User,
            )
            .await
            .unwrap();
            (created.info.id, created.key)
        };
        (id, key)
    };
    assert_eq!(statuses(&app, &other, 1, None).await, vec![200]);
}

#[tokio::test]
async fn client_ip_budget_applies_before_auth() {
    let app = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "3".into());
    })
    .await;
    let codes = statuses(&app, "co_guessing", 4, None).await;
    assert_eq!(
        codes,
        vec![401, 401, 401, 429],
        "key guessing is throttled per IP"
    );
    // Health probes are never limited.
    assert_eq!(app.get("/health/live").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn with_redis_one_call_checks_both_budgets_and_guessing_is_still_throttled() {
    let app = spawn_app_with(|env| {
        env.insert("REDIS_URL".into(), redis_url());
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "3".into());
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "1000".into());
    })
    .await;
    assert_eq!(health_redis(&app).await, "ok");
    let key = app.admin_key.clone();
    // The address budget is spent by valid and invalid keys alike, and by paths under /api/v1
    // that match no route (where no authentication runs).
    let mut codes = statuses(&app, &key, 1, None).await;
    codes.push(
        app.get_as("/api/v1/no-such-route", &key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    );
    codes.extend(statuses(&app, "co_guessing", 2, None).await);
    codes.extend(statuses(&app, &key, 1, None).await);
    assert_eq!(codes, vec![200, 404, 401, 429, 429]);
    let refused = app.get_as("/api/v1/keys/self", &key).send().await.unwrap();
    let body = assert_problem(refused, 429, "rate_limited").await;
    assert!(
        body["detail"].as_str().unwrap().contains("client address"),
        "{body}"
    );
}

#[tokio::test]
async fn forwarded_for_is_trusted_only_from_configured_proxies() {
    let untrusted = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "2".into());
    })
    .await;
    let key = untrusted.admin_key.clone();
    let mut codes = statuses(&untrusted, &key, 2, Some("198.51.100.1")).await;
    codes.extend(statuses(&untrusted, &key, 1, Some("198.51.100.2")).await);
    assert_eq!(
        codes,
        vec![200, 200, 429],
        "a spoofed header must not buy a new budget"
    );

    let trusted = spawn_app_with(|env| {
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "2".into());
        env.insert("TRUSTED_PROXY_CIDRS".into(), "127.0.0.0/8".into());
    })
    .await;
    let key = trusted.admin_key.clone();
    let mut codes = statuses(&trusted, &key, 2, Some("198.51.100.1")).await;
    codes.extend(statuses(&trusted, &key, 1, Some("198.51.100.2")).await);
    codes.extend(statuses(&trusted, &key, 1, Some("198.51.100.1")).await);
    assert_eq!(
        codes,
        vec![200, 200, 200, 429],
        "each forwarded client has its own budget"
    );
}

#[tokio::test]
async fn redis_shares_the_budget_across_replicas() {
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let setup = |env: &mut std::collections::HashMap<String, String>| {
        env.insert("REDIS_URL".into(), redis_url());
        env.insert("REDIS_KEY_PREFIX".into(), prefix.clone());
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "4".into());
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "1000".into());
    };
    let a = spawn_app_with(setup).await;
    let b = spawn_on_database(a.db_name.clone(), setup).await;
    let health: serde_json::Value = a.health().await;
    assert_eq!(health["components"]["redis"], "ok");
    let key = a.admin_key.clone();
    let mut codes = statuses(&a, &key, 2, None).await;
    codes.extend(statuses(&b, &key, 2, None).await);
    codes.extend(statuses(&a, &key, 1, None).await);
    codes.extend(statuses(&b, &key, 1, None).await);
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429]);
}

pub(crate) struct OwnRedis {
    child: Child,
}

impl OwnRedis {
    pub(crate) fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Self { child }
    }
}

impl OwnRedis {
    /// True once the server on `port` answers and is this process (not another test's server
    /// that took the port first, in which case this one has exited).
    pub(crate) async fn is_ours(&mut self, port: u16) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let pid = self.child.id();
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Some(info) = server_info(port).await {
                return info.contains(&format!("process_id:{pid}\r\n"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

async fn server_info(port: u16) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn redis_answers(port: u16) -> bool {
    eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

async fn health_redis(app: &TestApp) -> String {
    let health: serde_json::Value = app.health().await;
    health["components"]["redis"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn server_keeps_serving_when_redis_stops_and_recovers_when_it_returns() {
    let (port, redis) = with_free_port(|port| async move {
        let mut redis = OwnRedis::start(port);
        redis.is_ours(port).await.then_some((port, redis))
    })
    .await;
    let app = spawn_app_with(|env| {
        env.insert("REDIS_URL".into(), format!("redis://127.0.0.1:{port}"));
    })
    .await;
    assert_eq!(health_redis(&app).await, "ok");

    drop(redis);
    let key = app.admin_key.clone();
    // Requests keep succeeding (in-process limits) while Redis is gone.
    assert_eq!(statuses(&app, &key, 3, None).await, vec![200, 200, 200]);
    let down = eventually(Duration::from_secs(10), || async {
        health_redis(&app).await == "down"
    })
    .await;
    assert!(down, "health must report redis down");
    let health = app.get("/health").send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "degraded");

    let _redis = OwnRedis::start(port);
    assert!(redis_answers(port).await);
    let back = eventually(Duration::from_secs(15), || async {
        health_redis(&app).await == "ok"
    })
    .await;
    assert!(back, "health must report redis ok once it is back");
    assert_eq!(statuses(&app, &key, 1, None).await, vec![200]);
}
