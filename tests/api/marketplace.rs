//! License, trial, the usage ledger and metering — against the fake Marketplace Metering
//! endpoint (tests/support/fake_marketplace.rs), reached through the real binary and the AWS SDK
//! with the standard endpoint override, as a customer's deployment would.
//!
//! Every test that depends on the hour runs on a [`TestClock`]: the binary
//! (`CO_TEST_CLOCK_OFFSET_SECONDS`) and the fake (`set_clock_offset`) are shifted so that "now" is
//! ten minutes into an hour, so no test can cross an hour boundary or the 60 s close grace.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::fake_marketplace::{FakeMarketplace, floor_hour};
use crate::helpers::*;

const PRODUCT: &str = "prod-cloudoptimizer-test";
const DIMENSIONS: [&str; 3] = ["SecurityScans", "ChatQuestions", "DocumentAnalysis"];
const CLOCK_VAR: &str = "CO_TEST_CLOCK_OFFSET_SECONDS";

/// The clock the binary and the fake run on in a test: the real clock plus a whole number of
/// seconds.
#[derive(Clone, Copy)]
struct TestClock {
    offset: TimeDelta,
}

impl TestClock {
    /// "Now" is ten minutes into an hour, and stays inside it for the next 50 minutes.
    fn mid_hour() -> Self {
        let real = Utc::now();
        let target = floor_hour(real) + TimeDelta::hours(1) + TimeDelta::minutes(10);
        Self {
            offset: TimeDelta::seconds((target - real).num_seconds()),
        }
    }

    /// The unshifted clock, for tests the hour does not matter to.
    fn real() -> Self {
        Self {
            offset: TimeDelta::zero(),
        }
    }

    fn later(self, by: TimeDelta) -> Self {
        Self {
            offset: self.offset + by,
        }
    }

    fn now(self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// A moment `hours` before now: inside the hour `hours` back, ten minutes in.
    fn hours_ago(self, hours: i64) -> DateTime<Utc> {
        self.now() - TimeDelta::hours(hours)
    }

    fn hour_start(self, hours_ago: i64) -> DateTime<Utc> {
        floor_hour(self.now()) - TimeDelta::hours(hours_ago)
    }

    fn set(self, env: &mut HashMap<String, String>) {
        env.insert(CLOCK_VAR.into(), self.offset.num_seconds().to_string());
    }
}

fn marketplace_env(
    db: &str,
    fake: &FakeMarketplace,
    task: &str,
    clock: TestClock,
) -> HashMap<String, String> {
    let mut env = base_env(db);
    for (k, v) in [
        ("MARKETPLACE_ENABLED", "true"),
        ("MARKETPLACE_PRODUCT_CODE", PRODUCT),
        ("MARKETPLACE_TASK_ID", task),
        ("AWS_ENDPOINT_URL_MARKETPLACE_METERING", &fake.endpoint()),
        ("AWS_ACCESS_KEY_ID", &format!("AKIA{}", task.to_uppercase())),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("METRICS_PORT", "0"),
        ("LOG_FORMAT", "json"),
    ] {
        env.insert(k.into(), v.into());
    }
    env.insert("MARKETPLACE_PUBLIC_KEY".into(), fake.public_key_pem());
    clock.set(&mut env);
    env
}

/// A one-off CLI in the same task as `env` (same AWS credentials) but, as `usage flush` run by
/// hand gets, its own random task id.
fn cli_in_same_task(env: &HashMap<String, String>) -> HashMap<String, String> {
    let mut env = env.clone();
    env.remove("MARKETPLACE_TASK_ID");
    env
}

use crate::helpers::run_binary as run;

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn serve(env: &HashMap<String, String>) -> Process {
    let mut env = env.clone();
    env.insert("PORT".into(), free_port().to_string());
    let process = Process::spawn(&env, &["serve"]);
    assert!(
        wait_ready(process.addr(), Duration::from_secs(30)).await,
        "server ready"
    );
    process
}

/// Like [`serve`], with the server's log lines written to `log`.
async fn serve_logging(env: &HashMap<String, String>, log: &std::path::Path) -> Process {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .arg("serve")
        .env_clear()
        .envs(env)
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let process = Process {
        child,
        port,
        output: Default::default(),
    };
    assert!(
        wait_ready(process.addr(), Duration::from_secs(30)).await,
        "server ready"
    );
    process
}

async fn get(process: &Process, path: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", process.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn billable(process: &Process, dimension: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/api/v1/billable-actions", process.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&serde_json::json!({"dimension": dimension, "input": "work"}))
        .send()
        .await
        .unwrap()
}

/// Writes `n` ledger events of `dimension` that happened `at` (as billable actions do).
async fn record_events(pool: &sqlx::PgPool, dimension: &str, n: i64, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO usage_events (id, dimension, occurred_at, task_id, action)
         SELECT gen_random_uuid(), $1, $3, 'test', 'test' FROM generate_series(1, $2)",
    )
    .bind(dimension)
    .bind(n)
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
}

async fn ledger_total(pool: &sqlx::PgPool, dimension: &str) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(quantity), 0)::bigint FROM usage_events WHERE dimension = $1 AND refunded_at IS NULL")
        .bind(dimension)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn sent_total(pool: &sqlx::PgPool, dimension: &str) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(quantity), 0)::bigint FROM usage_reports WHERE dimension = $1 AND status = 'sent'")
        .bind(dimension)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Status of the report of `dimension` for the hour starting at `hour`.
async fn report_status(
    pool: &sqlx::PgPool,
    dimension: &str,
    hour: DateTime<Utc>,
) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM usage_reports WHERE dimension = $1 AND hour = $2")
        .bind(dimension)
        .bind(hour)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// One dimension's entry of `GET /api/v1/usage`.
fn dimension<'a>(usage: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    usage["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dimension"] == name)
        .unwrap()
}

async fn db_and_pool() -> (String, sqlx::PgPool) {
    let db = create_migrated_database().await;
    let pool = sqlx::PgPool::connect(&database_url(&db)).await.unwrap();
    (db, pool)
}

/// The fake, a fresh database and the clock both run on.
async fn setup(dimensions: &[&str]) -> (FakeMarketplace, String, sqlx::PgPool, TestClock) {
    let clock = TestClock::mid_hour();
    let fake = FakeMarketplace::start(PRODUCT, dimensions).await;
    fake.set_clock_offset(clock.offset);
    let (db, pool) = db_and_pool().await;
    (fake, db, pool, clock)
}

/// Runs `usage flush` as a child process and kills it (SIGKILL) once `until` holds.
async fn flush_killed_when<F: Fn() -> bool>(env: &HashMap<String, String>, until: F) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(["usage", "flush"])
        .env_clear()
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reached = eventually(Duration::from_secs(20), || async { until() }).await;
    child.kill().unwrap(); // SIGKILL: no cleanup
    child.wait().unwrap();
    assert!(reached, "the flush reached the point to kill it at");
}

// ---------------------------------------------------------------- license

#[tokio::test]
async fn subscribed_customer_gets_a_valid_license_from_a_verified_signature() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, _pool) = db_and_pool().await;
    let server = serve(&marketplace_env(&db, &fake, "t1", TestClock::real())).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "valid", "{license}");
    assert_eq!(license["product_code"], PRODUCT);
    assert_eq!(license["limits_apply"], false);
    assert!(fake.register_calls() >= 1);
    let health = get(&server, "/health").await;
    assert_eq!(health["components"]["marketplace"], "valid");
}

#[tokio::test]
async fn customer_not_entitled_runs_the_trial_with_its_days_left() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    fake.set_entitled(false);
    let (db, _pool) = db_and_pool().await;
    let server = serve(&marketplace_env(&db, &fake, "t1", TestClock::real())).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "trial", "{license}");
    assert_eq!(license["trial_days_left"], 14);
    assert_eq!(license["limits_apply"], true);
}

#[tokio::test]
async fn a_signature_from_another_key_makes_the_license_invalid_and_refuses_billable_actions() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, _pool) = db_and_pool().await;
    let mut env = marketplace_env(&db, &fake, "t1", TestClock::real());
    // A different, valid RSA public key: the signature cannot verify.
    let other = include_str!("../fixtures/unrelated-public-key.pem");
    env.insert("MARKETPLACE_PUBLIC_KEY".into(), other.into());
    let server = serve(&env).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "invalid", "{license}");
    assert!(license["reason"].as_str().unwrap().contains("signature"));
    let body = assert_problem(
        billable(&server, "ChatQuestions").await,
        402,
        "license_invalid",
    )
    .await;
    assert_eq!(body["dimension"], "ChatQuestions");
    let health = get(&server, "/health").await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        get(&server, "/api/v1/kb/frameworks").await["items"]
            .as_array()
            .unwrap()
            .len(),
        8,
        "reads still work"
    );
}

#[tokio::test]
async fn unsupported_platform_is_invalid_with_a_reason_that_says_what_to_do() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    fake.set_platform_supported(false);
    let (db, _pool) = db_and_pool().await;
    let server = serve(&marketplace_env(&db, &fake, "t1", TestClock::real())).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "invalid");
    assert!(
        license["reason"]
            .as_str()
            .unwrap()
            .contains("MARKETPLACE_ENABLED=false"),
        "{license}"
    );
}

#[tokio::test]
async fn a_throttled_register_usage_at_start_is_pending_with_trial_limits_then_settles() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    fake.throttle_next(usize::MAX); // AWS throttles every call until told otherwise
    let (db, _pool) = db_and_pool().await;
    let server = serve(&marketplace_env(&db, &fake, "t1", TestClock::real())).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "pending", "{license}");
    assert_eq!(license["limits_apply"], true);
    assert!(fake.register_calls() >= 2, "the start-up check retried");
    let response = billable(&server, "ChatQuestions").await;
    assert_eq!(response.status(), 201, "billable actions work meanwhile");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["remaining"], 499, "under trial limits");

    fake.throttle_next(0);
    let settled = eventually(Duration::from_secs(90), || async {
        get(&server, "/api/v1/license").await["status"] == "valid"
    })
    .await;
    assert!(
        settled,
        "the background retries reach a verdict once AWS answers"
    );
    let response = billable(&server, "ChatQuestions").await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["usage"]["remaining"],
        serde_json::Value::Null,
        "no limits once valid"
    );
    assert_eq!(
        get(&server, "/health").await["components"]["marketplace"],
        "valid"
    );
}

// ---------------------------------------------------------------- trial without Marketplace

#[tokio::test]
async fn trial_mode_without_marketplace_is_a_trial_that_expires_fourteen_days_after_the_first_start()
 {
    let (db, _pool) = db_and_pool().await;
    let mut env = base_env(&db);
    env.insert("TRIAL_MODE".into(), "true".into());
    env.insert("MARKETPLACE_ENABLED".into(), "false".into());
    let mut server = serve(&env).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "trial", "{license}");
    assert_eq!(license["trial_days_left"], 14);
    assert_eq!(license["limits_apply"], true);
    assert_eq!(billable(&server, "ChatQuestions").await.status(), 201);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));

    // The same deployment 15 days after its first start.
    TestClock::real().later(TimeDelta::days(15)).set(&mut env);
    let server = serve(&env).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "expired", "{license}");
    assert_eq!(license["trial_days_left"], 0);
    let body = assert_problem(
        billable(&server, "ChatQuestions").await,
        402,
        "license_expired",
    )
    .await;
    assert_eq!(body["dimension"], "ChatQuestions");
    assert_eq!(
        get(&server, "/health").await["components"]["marketplace"],
        "expired"
    );
    let usage = get(&server, "/api/v1/usage").await;
    assert_eq!(
        dimension(&usage, "ChatQuestions")["used"],
        1,
        "the refused action was not charged"
    );
}

/// A Marketplace on a clock the test moves, as the server builds it.
async fn market_on_movable_clock(
    db: &str,
    pool: &sqlx::PgPool,
    trial_mode: bool,
) -> (
    std::sync::Arc<cloud_optimizer::marketplace::Marketplace>,
    std::sync::Arc<std::sync::atomic::AtomicI64>,
) {
    let mut vars = base_env(db);
    vars.insert("TRIAL_MODE".into(), trial_mode.to_string());
    let config =
        cloud_optimizer::config::Config::from_env(&cloud_optimizer::config::Env::from_map(vars))
            .unwrap();
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock = cloud_optimizer::marketplace::Clock::from_fn({
        let offset = offset.clone();
        move || Utc::now() + TimeDelta::seconds(offset.load(std::sync::atomic::Ordering::SeqCst))
    });
    let market = cloud_optimizer::marketplace::Marketplace::with_clock(
        config.marketplace,
        pool.clone(),
        std::sync::Arc::new(cloud_optimizer::runtime::Components::new(false, false)),
        clock,
    )
    .await
    .unwrap();
    (market, offset)
}

/// What the server does at start and on every re-check.
async fn check_license(market: &cloud_optimizer::marketplace::Marketplace) {
    let check = cloud_optimizer::marketplace::license::check_once(market).await;
    cloud_optimizer::marketplace::license::apply(market, check).await;
}

/// Charges one unit in its own transaction; the problem code when refused.
async fn charge(
    market: &cloud_optimizer::marketplace::Marketplace,
) -> Result<Option<i64>, (u16, String)> {
    use axum::response::IntoResponse;
    let mut tx = market.db.begin().await.unwrap();
    let charged = market
        .charge(
            &mut tx,
            cloud_optimizer::marketplace::Dimension::ChatQuestions,
            "test",
            None,
            None,
        )
        .await;
    match charged {
        Ok(event) => {
            tx.commit().await.unwrap();
            Ok(event.remaining)
        }
        Err(err) => {
            let response = err.into_response();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            Err((status, body["code"].as_str().unwrap().to_string()))
        }
    }
}

#[tokio::test]
async fn the_running_license_check_expires_a_trial_without_marketplace_and_never_a_disabled_one() {
    use cloud_optimizer::marketplace::LicenseStatus;
    let day = 86_400;
    let (db, pool) = db_and_pool().await;
    let (trial, clock) = market_on_movable_clock(&db, &pool, true).await;
    check_license(&trial).await;
    assert_eq!(trial.license().await.status, LicenseStatus::Trial);
    assert_eq!(charge(&trial).await, Ok(Some(499)));
    clock.store(13 * day, std::sync::atomic::Ordering::SeqCst);
    check_license(&trial).await;
    assert_eq!(trial.license().await.status, LicenseStatus::Trial, "day 13");
    clock.store(15 * day, std::sync::atomic::Ordering::SeqCst);
    check_license(&trial).await; // the re-check loop must not reset the trial
    assert_eq!(
        trial.license().await.status,
        LicenseStatus::Expired,
        "day 15"
    );
    assert_eq!(charge(&trial).await, Err((402, "license_expired".into())));

    let (db, pool) = db_and_pool().await;
    let (disabled, clock) = market_on_movable_clock(&db, &pool, false).await;
    check_license(&disabled).await;
    assert_eq!(disabled.license().await.status, LicenseStatus::Disabled);
    clock.store(20 * day, std::sync::atomic::Ordering::SeqCst);
    check_license(&disabled).await;
    assert_eq!(
        disabled.license().await.status,
        LicenseStatus::Disabled,
        "day 20"
    );
    assert_eq!(charge(&disabled).await, Ok(None), "no limits, no expiry");
}

// ---------------------------------------------------------------- trial and ledger (in process)

fn trial(limit: &'static str) -> impl FnOnce(&mut HashMap<String, String>) {
    move |env| {
        env.insert("TRIAL_MODE".into(), "true".into());
        env.insert("TRIAL_LIMIT_CHAT_QUESTIONS".into(), limit.into());
        env.insert("RATE_LIMIT_PER_MINUTE".into(), "100000".into());
        env.insert("RATE_LIMIT_IP_PER_MINUTE".into(), "100000".into());
        env.insert("DATABASE_MAX_CONNECTIONS".into(), "20".into());
    }
}

async fn act(app: &TestApp, input: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": input}));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn disabled_marketplace_still_records_usage_without_limits() {
    let clock = TestClock::mid_hour();
    let (db, _pool) = db_and_pool().await;
    let mut env = base_env(&db);
    clock.set(&mut env);
    let server = serve(&env).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "disabled");
    assert_eq!(license["limits_apply"], false);
    for _ in 0..3 {
        assert_eq!(billable(&server, "ChatQuestions").await.status(), 201);
    }
    let usage = get(&server, "/api/v1/usage").await;
    let chat = dimension(&usage, "ChatQuestions");
    assert_eq!(chat["used"], 3);
    assert_eq!(chat["limit"], serde_json::Value::Null);
    assert_eq!(chat["current_hour_pending"], 3);
    assert_eq!(chat["unreported"], 3);
    assert_eq!(chat["reported"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_against_ten_remaining_give_exactly_ten() {
    let app = spawn_app_with(trial("10")).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = app.url("/api/v1/billable-actions");
        let key = app.admin_key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&serde_json::json!({"dimension": "ChatQuestions", "input": format!("q{i}")}))
                .send()
                .await
                .unwrap()
        }));
    }
    let mut statuses = HashMap::<u16, usize>::new();
    let mut refusal = None;
    for task in tasks {
        let response = task.await.unwrap();
        *statuses.entry(response.status().as_u16()).or_default() += 1;
        if response.status() == 402 && refusal.is_none() {
            refusal = Some(response.json::<serde_json::Value>().await.unwrap());
        }
    }
    assert_eq!(statuses.get(&201), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&402), Some(&190), "{statuses:?}");
    let refusal = refusal.unwrap();
    assert_eq!(refusal["code"], "trial_limit_reached");
    assert_eq!(refusal["dimension"], "ChatQuestions");
    assert_eq!(refusal["limit"], 10);
    assert!(refusal["next_step"].as_str().unwrap().contains("Subscribe"));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM billable_actions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        (stored, actions),
        (10, 10),
        "every action has exactly its usage record"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_first_result_without_a_second_charge() {
    let app = spawn_app_with(trial("5")).await;
    let first = act(&app, "same question", Some("req-123")).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = act(&app, "same question", Some("req-123")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(charged, 1);
    let reused = act(&app, "a different question", Some("req-123")).await;
    assert_problem(reused, 422, "idempotency_key_reused").await;
    let bad = act(&app, "x", Some("bad key with spaces")).await;
    assert_problem(bad, 400, "invalid_idempotency_key").await;
}

#[tokio::test]
async fn bad_billable_requests_are_clear_errors() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "Hours", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_dimension").await;
    let response = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": ""}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_input").await;
}

#[tokio::test]
async fn crossing_80_and_100_percent_announces_usage_threshold_once_each() {
    let app = spawn_app_with(trial("5")).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen("co_events").await.unwrap();
    for i in 0..5 {
        assert_eq!(act(&app, &format!("q{i}"), None).await.status(), 201);
    }
    assert_problem(act(&app, "q5", None).await, 402, "trial_limit_reached").await;
    let mut seen = Vec::new();
    while let Ok(Ok(note)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        let event: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
        if event["type"] == "usage.threshold" {
            seen.push(event["data"]["percent"].as_i64().unwrap());
        }
    }
    assert_eq!(seen, vec![80, 100]);
}

#[tokio::test]
async fn a_refund_gives_the_unit_back_before_it_is_reported() {
    let app = spawn_app_with(trial("3")).await;
    let response = act(&app, "q", None).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    let event_id: uuid::Uuid = body["usage"]["id"].as_str().unwrap().parse().unwrap();
    let mut vars = base_env(&app.db_name);
    trial("3")(&mut vars);
    let config =
        cloud_optimizer::config::Config::from_env(&cloud_optimizer::config::Env::from_map(vars))
            .unwrap();
    let market = cloud_optimizer::marketplace::Marketplace::new(
        config.marketplace,
        app.pool.clone(),
        std::sync::Arc::new(cloud_optimizer::runtime::Components::new(false, false)),
    )
    .await
    .unwrap();
    market
        .set_license(
            cloud_optimizer::marketplace::LicenseStatus::Trial,
            "test".into(),
        )
        .await;
    assert!(market.refund(event_id).await.unwrap());
    assert!(
        !market.refund(event_id).await.unwrap(),
        "a unit is refunded once"
    );
    let usage: serde_json::Value = app.admin_json("/api/v1/usage").await;
    let chat = dimension(&usage, "ChatQuestions");
    assert_eq!(chat["used"], 0);
    assert_eq!(chat["remaining"], 3);
}

// ---------------------------------------------------------------- reporting to AWS

#[tokio::test(flavor = "multi_thread")]
async fn flush_reports_closed_hours_once_and_never_again() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "ChatQuestions", 7, clock.hours_ago(2)).await;
    record_events(&pool, "SecurityScans", 2, clock.hours_ago(3)).await;
    record_events(&pool, "ChatQuestions", 4, clock.now()).await; // current hour: not yet
    let env = marketplace_env(&db, &fake, "t1", clock);
    let out = run(&env, &["usage", "flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent 2,"),
        "{}",
        text(&out)
    );
    assert_eq!(fake.total("ChatQuestions"), 7);
    assert_eq!(fake.total("SecurityScans"), 2);
    let records = fake.records();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.hour, clock.hour_start(1), "the latest closed hour");
        assert_eq!(
            record.client_token.as_deref(),
            Some(
                format!(
                    "{}-{}",
                    record.dimension,
                    clock.hour_start(1).format("%Y%m%d%H")
                )
                .as_str()
            )
        );
    }
    // Again: nothing new to send, nothing sent twice.
    let out = run(&env, &["usage", "flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.records().len(), records.len());
    // The current hour goes out only when asked (or when the last replica stops).
    let out = run(&env, &["usage", "flush", "--include-current-hour"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.total("ChatQuestions"), 11);
    assert_eq!(
        sent_total(&pool, "ChatQuestions").await,
        ledger_total(&pool, "ChatQuestions").await
    );
    let report = run(&env, &["usage", "report"]);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        text.contains("ChatQuestions") && text.contains("sent"),
        "{text}"
    );
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM marketplace_tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0, "a CLI never registers as a serving replica");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_older_than_six_hours_fold_into_the_next_record() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "DocumentAnalysis", 3, clock.hours_ago(9)).await;
    record_events(&pool, "DocumentAnalysis", 2, clock.hours_ago(2)).await;
    let out = run(
        &marketplace_env(&db, &fake, "t1", clock),
        &["usage", "flush"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let records = fake.records();
    assert_eq!(records.len(), 1, "one record for the latest closed hour");
    assert_eq!(records[0].quantity, 5, "old events folded in, none dropped");
    assert_eq!(records[0].hour, clock.hour_start(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_aws_accepted_then_a_flush_from_the_same_task_reports_nothing_twice() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "ChatQuestions", 6, clock.hours_ago(2)).await;
    let env = cli_in_same_task(&marketplace_env(&db, &fake, "t1", clock));
    fake.hang_after_accept_next(1);
    flush_killed_when(&env, || !fake.records().is_empty()).await;
    let pending: String = sqlx::query_scalar("SELECT status FROM usage_reports")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        pending, "pending",
        "the record id never reached our database"
    );

    // At once (well within the stale-claim delay), from another process of the same task.
    let out = run(&env, &["usage", "flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("sent 1,"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fake.records().len(),
        1,
        "the resend carried the same token and quantity"
    );
    assert_eq!(fake.total("ChatQuestions"), 6);
    assert_eq!(sent_total(&pool, "ChatQuestions").await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_after_a_flush_killed_while_throttled_sends_everything_at_once() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    for (dimension, n) in [
        ("SecurityScans", 4),
        ("ChatQuestions", 30),
        ("DocumentAnalysis", 10),
    ] {
        record_events(&pool, dimension, n, clock.hours_ago(1)).await;
    }
    record_events(&pool, "ChatQuestions", 2, clock.now()).await;
    let env = cli_in_same_task(&marketplace_env(&db, &fake, "t1", clock));
    fake.throttle_next(usize::MAX);
    flush_killed_when(&env, || fake.meter_calls() >= 1).await;
    fake.throttle_next(0);

    let out = run(&env, &["usage", "flush", "--include-current-hour"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("sent 3,") && stdout.contains("skipped 0"),
        "{}",
        text(&out)
    );
    for dimension in DIMENSIONS {
        assert_eq!(
            fake.total(dimension),
            ledger_total(&pool, dimension).await,
            "{dimension}"
        );
    }
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_reports WHERE status <> 'sent'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_counts_a_report_a_live_replica_may_have_sent_as_skipped_and_fails() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    let mut replica_env = marketplace_env(&db, &fake, "ta", clock);
    replica_env.insert("MARKETPLACE_REPORT_INTERVAL_SECONDS".into(), "1".into());
    let replica = serve(&replica_env).await;
    fake.fail_next(usize::MAX); // AWS answers 500: the replica cannot know whether it was taken
    record_events(&pool, "ChatQuestions", 5, clock.hours_ago(1)).await;
    let hour = clock.hour_start(1);
    let attempted = eventually(Duration::from_secs(30), || async {
        let by: Option<Option<String>> = sqlx::query_scalar(
            "SELECT maybe_sent_by FROM usage_reports WHERE dimension = 'ChatQuestions' AND hour = $1",
        )
        .bind(hour)
        .fetch_optional(&pool)
        .await
        .unwrap();
        by.flatten().as_deref() == Some("AKIATA")
    })
    .await;
    assert!(attempted, "the replica called AWS for the hour");

    // A one-off task with other credentials: resending could bill twice.
    let out = run(
        &marketplace_env(&db, &fake, "tb", clock),
        &["usage", "flush"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("skipped 1") && stdout.contains("unconfirmed 0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        report_status(&pool, "ChatQuestions", hour).await.as_deref(),
        Some("pending")
    );

    fake.fail_next(0);
    let reported = eventually(Duration::from_secs(30), || async {
        fake.total("ChatQuestions") == 5
    })
    .await;
    assert!(reported, "the replica resends once AWS answers");
    assert!(fake.records().iter().all(|r| r.task == "AKIATA"));
    assert_eq!(fake.records().len(), 1);
    drop(replica);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_loses_nothing_and_throttling_storms_end_reported() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "ChatQuestions", 5, clock.hours_ago(2)).await;
    let env = marketplace_env(&db, &fake, "t1", clock);
    fake.set_down(true);
    for _ in 0..3 {
        let out = run(&env, &["usage", "flush"]);
        assert!(!out.status.success(), "flush says it could not report");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("retrying later 1"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(fake.total("ChatQuestions"), 0);
    fake.set_down(false);
    fake.throttle_next(7);
    let mut attempts = 0;
    while !run(&env, &["usage", "flush"]).status.success() {
        attempts += 1;
        assert!(attempts < 10, "throttling must end in a report");
    }
    assert_eq!(fake.total("ChatQuestions"), 5);
    assert_eq!(fake.records().len(), 1);
    assert_eq!(
        sent_total(&pool, "ChatQuestions").await,
        ledger_total(&pool, "ChatQuestions").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_report_the_same_hour_twice() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    for hours_ago in 1..=4 {
        for dimension in DIMENSIONS {
            record_events(&pool, dimension, hours_ago, clock.hours_ago(hours_ago)).await;
        }
    }
    let a = marketplace_env(&db, &fake, "ta", clock);
    let b = marketplace_env(&db, &fake, "tb", clock);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| run(&a, &["usage", "flush"]));
        let hb = s.spawn(|| run(&b, &["usage", "flush"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra.status.success(), "{}", text(&ra));
    assert!(rb.status.success(), "{}", text(&rb));
    let mut keys: Vec<(String, DateTime<Utc>)> = fake
        .records()
        .iter()
        .map(|r| (r.dimension.clone(), r.hour))
        .collect();
    assert_eq!(keys.len(), 3, "one record per dimension: {keys:?}");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "no (dimension, hour) reported twice");
    for dimension in DIMENSIONS {
        assert_eq!(fake.total(dimension), 10, "{dimension}");
        assert_eq!(ledger_total(&pool, dimension).await, 10, "{dimension}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_stops_the_dimension_keeps_its_events_and_shows_it() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS[..2]).await; // DocumentAnalysis unknown to AWS
    record_events(&pool, "DocumentAnalysis", 4, clock.hours_ago(2)).await;
    record_events(&pool, "ChatQuestions", 1, clock.hours_ago(2)).await;
    let env = marketplace_env(&db, &fake, "t1", clock);
    let out = run(&env, &["usage", "flush"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed 1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fake.total("ChatQuestions"),
        1,
        "other dimensions still report"
    );
    assert_eq!(fake.total("DocumentAnalysis"), 0);
    let server = serve(&env).await;
    let usage = get(&server, "/api/v1/usage").await;
    let docs = dimension(&usage, "DocumentAnalysis");
    assert!(
        docs["reporting_blocked"]
            .as_str()
            .unwrap()
            .contains("InvalidUsageDimension"),
        "{docs}"
    );
    assert_eq!(docs["unreported"], 4, "events are kept");
    assert_eq!(docs["last_report"]["status"], "failed");
}

#[tokio::test]
async fn sigterm_on_the_last_replica_reports_the_current_hour_even_after_a_cli_flush() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    let env = marketplace_env(&db, &fake, "t1", clock);
    let mut server = serve(&env).await;
    assert_eq!(billable(&server, "SecurityScans").await.status(), 201);
    // An operator's flush in between must not count as another serving replica.
    let out = run(&cli_in_same_task(&env), &["usage", "flush"]);
    assert!(out.status.success(), "{}", text(&out));
    let tasks: Vec<String> = sqlx::query_scalar("SELECT task_id FROM marketplace_tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, vec!["t1".to_string()]);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert_eq!(fake.total("SecurityScans"), 1);
    assert_eq!(fake.records()[0].hour, clock.hour_start(0));
    assert_eq!(sent_total(&pool, "SecurityScans").await, 1);
}

#[tokio::test]
async fn the_reporter_in_serve_retries_aws_500s_and_reports_the_hour_once() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    let mut env = marketplace_env(&db, &fake, "t1", clock);
    env.insert("MARKETPLACE_REPORT_INTERVAL_SECONDS".into(), "1".into());
    let mut server = serve(&env).await;
    fake.fail_next(usize::MAX);
    record_events(&pool, "ChatQuestions", 5, clock.hours_ago(1)).await;
    let failing = eventually(Duration::from_secs(30), || async {
        fake.meter_calls() >= 4
    })
    .await;
    assert!(failing, "the reporter kept trying across passes");
    assert_eq!(fake.total("ChatQuestions"), 0);
    let usage = get(&server, "/api/v1/usage").await;
    let chat = dimension(&usage, "ChatQuestions");
    assert_eq!(chat["unreported"], 5, "{chat}");
    assert_eq!(chat["last_report"]["status"], "pending", "{chat}");

    fake.fail_next(0);
    let reported = eventually(Duration::from_secs(30), || async {
        fake.total("ChatQuestions") == 5
    })
    .await;
    assert!(reported, "reported once AWS recovers");
    server.signal("TERM"); // one more (final) pass
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));
    let records = fake.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].hour, clock.hour_start(1));
    assert_eq!(records[0].quantity, 5);
    assert_eq!(sent_total(&pool, "ChatQuestions").await, 5);
}

// ---------------------------------------------------------------- never bill twice (edge cases)

#[tokio::test]
async fn a_replacement_task_with_new_credentials_never_resends_what_the_old_task_may_have_sent() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "ChatQuestions", 6, clock.hours_ago(1)).await;
    fake.hang_after_accept_next(1);
    flush_killed_when(&marketplace_env(&db, &fake, "t1", clock), || {
        !fake.records().is_empty()
    })
    .await;
    let hour = clock.hour_start(1);
    assert_eq!(
        report_status(&pool, "ChatQuestions", hour).await.as_deref(),
        Some("pending")
    );

    // Three minutes later the claim is stale and a new task (new credentials) takes over.
    let later = clock.later(TimeDelta::minutes(3));
    fake.set_clock_offset(later.offset);
    let mut env = marketplace_env(&db, &fake, "t2", later);
    let metrics_port = free_port();
    env.insert("METRICS_PORT".into(), metrics_port.to_string());
    let log = std::env::temp_dir().join(format!("co-unconfirmed-{}.log", uuid::Uuid::new_v4()));
    let server = serve_logging(&env, &log).await;
    let settled = eventually(Duration::from_secs(30), || async {
        report_status(&pool, "ChatQuestions", hour).await.as_deref() == Some("unconfirmed")
    })
    .await;
    assert!(settled, "the takeover settles the report");
    assert_eq!(
        fake.total("ChatQuestions"),
        6,
        "billed once, by the old task"
    );
    assert_eq!(fake.records().len(), 1);

    let usage = get(&server, "/api/v1/usage").await;
    let chat = dimension(&usage, "ChatQuestions");
    assert_eq!(chat["unconfirmed"]["units"], 6, "{chat}");
    assert_eq!(
        chat["unconfirmed"]["hours"],
        serde_json::json!([cloud_optimizer::web::timestamp::format(&hour)]),
        "{chat}"
    );
    assert_eq!(chat["unreported"], 0, "{chat}");
    assert_eq!(chat["last_report"]["status"], "unconfirmed");
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cloud_optimizer_usage_unconfirmed_units{dimension=\"ChatQuestions\"} 6"),
        "{metrics}"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let warning = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("unconfirmed"))
        })
        .unwrap_or_else(|| panic!("a WARN line for the operator in\n{logs}"));
    assert_eq!(warning["level"], "WARN");
    assert!(warning.to_string().contains("AKIAT1"), "{warning}");
    drop(server);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hour_aws_already_holds_a_record_for_is_unconfirmed_not_billed_again() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    let hour = clock.hour_start(1);
    fake.preload_record("AKIAT1", "ChatQuestions", hour, 4); // sent by an earlier release
    record_events(&pool, "ChatQuestions", 6, clock.hours_ago(1)).await;
    let env = marketplace_env(&db, &fake, "t1", clock);
    let out = run(&env, &["usage", "flush"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unconfirmed 1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fake.total("ChatQuestions"),
        4,
        "DuplicateRequestException: nothing added"
    );
    assert_eq!(
        report_status(&pool, "ChatQuestions", hour).await.as_deref(),
        Some("unconfirmed")
    );

    // Its events never fold into a later record.
    record_events(&pool, "ChatQuestions", 1, clock.now()).await;
    let out = run(&env, &["usage", "flush", "--include-current-hour"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.total("ChatQuestions"), 5);
    assert_eq!(sent_total(&pool, "ChatQuestions").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_aws_accepted_with_another_quantity_is_unconfirmed_not_billed_again() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "SecurityScans", 5, clock.hours_ago(1)).await;
    let env = marketplace_env(&db, &fake, "t1", clock);
    let out = run(&env, &["usage", "flush"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.total("SecurityScans"), 5);
    // The database is restored from a backup taken before that report; one more scan came in.
    sqlx::query("UPDATE usage_events SET report_id = NULL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM usage_reports")
        .execute(&pool)
        .await
        .unwrap();
    record_events(&pool, "SecurityScans", 1, clock.hours_ago(1)).await;

    let out = run(&env, &["usage", "flush"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unconfirmed 1"),
        "{}",
        text(&out)
    );
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM usage_reports WHERE status = 'unconfirmed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(error.contains("IdempotencyConflictException"), "{error}");
    assert_eq!(
        fake.total("SecurityScans"),
        5,
        "the 6 restored units are not billed again"
    );
    assert_eq!(fake.records().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_past_six_hours_is_unconfirmed_if_aws_may_hold_it_and_folded_if_aws_refused_it() {
    let (fake, db, pool, clock) = setup(&DIMENSIONS).await;
    record_events(&pool, "SecurityScans", 3, clock.hours_ago(1)).await;
    record_events(&pool, "ChatQuestions", 6, clock.hours_ago(1)).await;
    let env = cli_in_same_task(&marketplace_env(&db, &fake, "t1", clock));
    // SecurityScans (reported first) is throttled: AWS certainly did not take it. ChatQuestions
    // is accepted but the answer never comes: AWS may hold it.
    fake.throttle_next(3);
    fake.hang_after_accept_next(1);
    flush_killed_when(&env, || !fake.records().is_empty()).await;
    assert_eq!(fake.total("ChatQuestions"), 6);
    assert_eq!(fake.total("SecurityScans"), 0);

    // Seven hours later (the task's credentials unchanged), with new usage in the last hour.
    let later = clock.later(TimeDelta::hours(7));
    fake.set_clock_offset(later.offset);
    record_events(&pool, "SecurityScans", 1, later.hours_ago(1)).await;
    record_events(&pool, "ChatQuestions", 2, later.hours_ago(1)).await;
    let env = cli_in_same_task(&marketplace_env(&db, &fake, "t1", later));
    let out = run(&env, &["usage", "flush"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("unconfirmed 1") && stdout.contains("folded into a later hour 1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fake.total("ChatQuestions"),
        8,
        "6 once, then the 2 new ones"
    );
    assert_eq!(
        fake.total("SecurityScans"),
        4,
        "the refused 3 fold into the new record"
    );
    assert_eq!(
        report_status(&pool, "ChatQuestions", clock.hour_start(1))
            .await
            .as_deref(),
        Some("unconfirmed")
    );
    assert_eq!(
        report_status(&pool, "SecurityScans", clock.hour_start(1))
            .await
            .as_deref(),
        Some("expired")
    );
}

#[tokio::test]
async fn subscribing_turns_the_trial_valid_without_a_redeploy() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    fake.set_entitled(false);
    let (db, pool) = db_and_pool().await;
    let mut env = marketplace_env(&db, &fake, "t1", TestClock::real());
    env.insert("MARKETPLACE_LICENSE_CHECK_SECONDS".into(), "10".into());
    let server = serve(&env).await;
    assert_eq!(get(&server, "/api/v1/license").await["status"], "trial");
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("co_events").await.unwrap();

    fake.set_entitled(true); // the customer subscribes in AWS Marketplace
    let note = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let note = listener.recv().await.unwrap();
            if note.payload().contains("license.changed") {
                return note;
            }
        }
    })
    .await
    .expect("license.changed within the re-check interval");
    let event: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(event["data"]["status"], "valid");
    assert_eq!(get(&server, "/api/v1/license").await["status"], "valid");
}
