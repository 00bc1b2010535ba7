//! License, trial, the usage ledger and metering — against the fake Marketplace Metering
//! endpoint (tests/support/fake_marketplace.rs), reached through the real binary and the AWS SDK
//! with the standard endpoint override, as a customer's deployment would.

use std::collections::HashMap;
use std::time::Duration;

use crate::fake_marketplace::FakeMarketplace;
use crate::helpers::*;

const PRODUCT: &str = "prod-cloudoptimizer-test";
const DIMENSIONS: [&str; 3] = ["SecurityScans", "ChatQuestions", "DocumentAnalysis"];

fn marketplace_env(db: &str, fake: &FakeMarketplace, task: &str) -> HashMap<String, String> {
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
    env
}

use crate::helpers::run_binary as run;

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

async fn get(process: &Process, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}{path}", process.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Writes `n` ledger events of `dimension` that happened `hours_ago` (as billable actions do).
async fn record_events(pool: &sqlx::PgPool, dimension: &str, n: i64, hours_ago: i64) {
    sqlx::query(
        "INSERT INTO usage_events (id, dimension, occurred_at, task_id, action)
         SELECT gen_random_uuid(), $1, now() - make_interval(hours => $3::int), 'test', 'test' FROM generate_series(1, $2)",
    )
    .bind(dimension)
    .bind(n)
    .bind(hours_ago)
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

// ---------------------------------------------------------------- license

#[tokio::test]
async fn subscribed_customer_gets_a_valid_license_from_a_verified_signature() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, _pool) = db_and_pool().await;
    let server = serve(&marketplace_env(&db, &fake, "t1")).await;
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
    let server = serve(&marketplace_env(&db, &fake, "t1")).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "trial", "{license}");
    assert_eq!(license["trial_days_left"], 14);
    assert_eq!(license["limits_apply"], true);
}

#[tokio::test]
async fn a_signature_from_another_key_makes_the_license_invalid_and_refuses_billable_actions() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, _pool) = db_and_pool().await;
    let mut env = marketplace_env(&db, &fake, "t1");
    // A different, valid RSA public key: the signature cannot verify.
    let other = include_str!("../fixtures/unrelated-public-key.pem");
    env.insert("MARKETPLACE_PUBLIC_KEY".into(), other.into());
    let server = serve(&env).await;
    let license = get(&server, "/api/v1/license").await;
    assert_eq!(license["status"], "invalid", "{license}");
    assert!(license["reason"].as_str().unwrap().contains("signature"));
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/billable-actions", server.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": "hello"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 402, "license_invalid").await;
    assert_eq!(body["dimension"], "ChatQuestions");
    let health = get(&server, "/health").await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        get(&server, "/api/v1/kb/frameworks")
            .await
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
    let server = serve(&marketplace_env(&db, &fake, "t1")).await;
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
    let app = spawn_app().await;
    let license: serde_json::Value = app.admin_json("/api/v1/license").await;
    assert_eq!(license["status"], "disabled");
    for _ in 0..3 {
        assert_eq!(act(&app, "q", None).await.status(), 201);
    }
    let usage: serde_json::Value = app.admin_json("/api/v1/usage").await;
    let chat = dimension(&usage, "ChatQuestions");
    assert_eq!(chat["used"], 3);
    assert_eq!(chat["limit"], serde_json::Value::Null);
    assert_eq!(chat["current_hour_pending"], 3);
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
    assert_problem(response, 400, "invalid_dimension").await;
    let response = app
        .post_as("/api/v1/billable-actions", &app.admin_key)
        .json(&serde_json::json!({"dimension": "ChatQuestions", "input": ""}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_input").await;
}

#[tokio::test]
async fn crossing_80_and_100_percent_announces_usage_threshold_once_each() {
    let app = spawn_app_with(trial("5")).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen("co_events").await.unwrap();
    for i in 0..6 {
        act(&app, &format!("q{i}"), None).await;
    }
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
    let body: serde_json::Value = act(&app, "q", None).await.json().await.unwrap();
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
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    record_events(&pool, "ChatQuestions", 7, 2).await;
    record_events(&pool, "SecurityScans", 2, 3).await;
    record_events(&pool, "ChatQuestions", 4, 0).await; // current hour: not yet
    let env = marketplace_env(&db, &fake, "t1");
    let out = run(&env, &["usage", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.total("ChatQuestions"), 7);
    assert_eq!(fake.total("SecurityScans"), 2);
    let records = fake.records();
    assert!(records.iter().all(|r| {
        r.client_token
            .as_deref()
            .is_some_and(|t| t.starts_with(&r.dimension))
    }));
    // Again: nothing new to send, nothing sent twice.
    assert!(run(&env, &["usage", "flush"]).status.success());
    assert_eq!(fake.records().len(), records.len());
    // The current hour goes out only when asked (or when the last replica stops).
    assert!(
        run(&env, &["usage", "flush", "--include-current-hour"])
            .status
            .success()
    );
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
}

#[tokio::test(flavor = "multi_thread")]
async fn events_older_than_six_hours_fold_into_the_next_record() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    record_events(&pool, "DocumentAnalysis", 3, 9).await;
    record_events(&pool, "DocumentAnalysis", 2, 2).await;
    assert!(
        run(&marketplace_env(&db, &fake, "t1"), &["usage", "flush"])
            .status
            .success()
    );
    let records = fake.records();
    assert_eq!(records.len(), 1, "one record for the latest closed hour");
    assert_eq!(records[0].quantity, 5, "old events folded in, none dropped");
    assert!(chrono::Utc::now() - records[0].hour < chrono::Duration::hours(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_aws_accepted_then_restart_reports_nothing_twice() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    record_events(&pool, "ChatQuestions", 6, 2).await;
    let env = marketplace_env(&db, &fake, "t1");
    fake.hang_after_accept_next(1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-optimizer"))
        .args(["usage", "flush"])
        .env_clear()
        .envs(&env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let accepted = eventually(Duration::from_secs(20), || async {
        !fake.records().is_empty()
    })
    .await;
    assert!(accepted, "AWS accepted the record");
    child.kill().unwrap(); // SIGKILL: no cleanup, the record id never reached our database
    child.wait().unwrap();
    let pending: String = sqlx::query_scalar("SELECT status FROM usage_reports")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, "pending");

    let out = run(&env, &["usage", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
async fn a_long_outage_loses_nothing_and_throttling_storms_end_reported() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    record_events(&pool, "ChatQuestions", 5, 2).await;
    let env = marketplace_env(&db, &fake, "t1");
    fake.set_down(true);
    for _ in 0..3 {
        assert!(
            !run(&env, &["usage", "flush"]).status.success(),
            "flush says it could not report"
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
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    for hours_ago in 1..=4 {
        for dimension in DIMENSIONS {
            record_events(&pool, dimension, hours_ago, hours_ago).await;
        }
    }
    let a = marketplace_env(&db, &fake, "ta");
    let b = marketplace_env(&db, &fake, "tb");
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| run(&a, &["usage", "flush"]));
        let hb = s.spawn(|| run(&b, &["usage", "flush"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra.status.success() && rb.status.success());
    let mut keys: Vec<(String, chrono::DateTime<chrono::Utc>)> = fake
        .records()
        .iter()
        .map(|r| (r.dimension.clone(), r.hour))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no (dimension, hour) reported twice");
    for dimension in DIMENSIONS {
        assert_eq!(
            fake.total(dimension),
            ledger_total(&pool, dimension).await,
            "{dimension}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_stops_the_dimension_keeps_its_events_and_shows_it() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS[..2]).await; // DocumentAnalysis unknown to AWS
    let (db, pool) = db_and_pool().await;
    record_events(&pool, "DocumentAnalysis", 4, 2).await;
    record_events(&pool, "ChatQuestions", 1, 2).await;
    let env = marketplace_env(&db, &fake, "t1");
    assert!(!run(&env, &["usage", "flush"]).status.success());
    assert_eq!(
        fake.total("ChatQuestions"),
        1,
        "other dimensions still report"
    );
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
async fn sigterm_on_the_last_replica_reports_the_current_hour() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    let (db, pool) = db_and_pool().await;
    let mut server = serve(&marketplace_env(&db, &fake, "t1")).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/billable-actions", server.addr()))
        .bearer_auth(BOOTSTRAP_KEY)
        .json(&serde_json::json!({"dimension": "SecurityScans", "input": "scan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));
    assert_eq!(fake.total("SecurityScans"), 1);
    assert_eq!(sent_total(&pool, "SecurityScans").await, 1);
}

#[tokio::test]
async fn subscribing_turns_the_trial_valid_without_a_redeploy() {
    let fake = FakeMarketplace::start(PRODUCT, &DIMENSIONS).await;
    fake.set_entitled(false);
    let (db, pool) = db_and_pool().await;
    let mut env = marketplace_env(&db, &fake, "t1");
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
