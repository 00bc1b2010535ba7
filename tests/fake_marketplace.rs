//! Exercises the fake Marketplace Metering Service through the real Rust SDK, configured the way
//! the product configures it (see `src/aws.rs`).

#[path = "support/fake_marketplace.rs"]
mod fake_marketplace;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::{ErrorKind, RetryConfig};
use aws_config::timeout::TimeoutConfig;
use aws_sdk_marketplacemetering::Client;
use aws_sdk_marketplacemetering::config::{Credentials, Region};
use aws_sdk_marketplacemetering::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_marketplacemetering::operation::meter_usage::builders::MeterUsageFluentBuilder;
use aws_sdk_marketplacemetering::primitives::DateTime as SdkDateTime;
use aws_sdk_marketplacemetering::types::{Tag, UsageAllocation};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use fake_marketplace::{DryRunReply, FakeMarketplace, TokenScope, floor_hour};
use serde_json::Value;

const PRODUCT: &str = "prod-test-1234";
const DIMENSIONS: &[&str] = &["SecurityScans", "ChatQuestions", "DocumentAnalysis"];

async fn start() -> FakeMarketplace {
    FakeMarketplace::start(PRODUCT, DIMENSIONS).await
}

async fn client_with(
    fake: &FakeMarketplace,
    access_key: &str,
    retry: RetryConfig,
    operation_timeout: Option<Duration>,
) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .endpoint_url(fake.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key,
            "fake-secret-key",
            None,
            None,
            "fake-marketplace-test",
        ))
        .retry_config(retry);
    if let Some(timeout) = operation_timeout {
        loader = loader.timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build());
    }
    Client::new(&loader.load().await)
}

async fn client(fake: &FakeMarketplace, access_key: &str) -> Client {
    client_with(fake, access_key, RetryConfig::disabled(), None).await
}

fn fast_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

/// Half past the previous hour: safely inside the 6 h window and in a closed hour.
fn last_hour() -> chrono::DateTime<Utc> {
    floor_hour(Utc::now()) - TimeDelta::minutes(30)
}

fn sdk_time(t: chrono::DateTime<Utc>) -> SdkDateTime {
    SdkDateTime::from_millis(t.timestamp_millis())
}

fn meter(
    client: &Client,
    dimension: &str,
    at: chrono::DateTime<Utc>,
    quantity: i32,
) -> MeterUsageFluentBuilder {
    client
        .meter_usage()
        .product_code(PRODUCT)
        .usage_dimension(dimension)
        .timestamp(sdk_time(at))
        .usage_quantity(quantity)
}

fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn meter_usage_is_stored_and_replays_return_the_same_id() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();

    let first = meter(&c, "ChatQuestions", at, 7)
        .client_token("ChatQuestions-1")
        .send()
        .await
        .expect("first report");
    let id = first.metering_record_id().expect("record id").to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "record id is a UUID: {id}"
    );

    // Same token, same parameters: same id.
    let again = meter(&c, "ChatQuestions", at, 7)
        .client_token("ChatQuestions-1")
        .send()
        .await
        .expect("replay");
    assert_eq!(again.metering_record_id(), Some(id.as_str()));

    // Identical record with another token (and another time within the hour): same id.
    let other_token = meter(&c, "ChatQuestions", at + TimeDelta::minutes(10), 7)
        .send()
        .await
        .expect("identical record");
    assert_eq!(other_token.metering_record_id(), Some(id.as_str()));

    let records = fake.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.task, "TASKA");
    assert_eq!(r.product_code, PRODUCT);
    assert_eq!(r.dimension, "ChatQuestions");
    assert_eq!(r.hour, floor_hour(at));
    assert_eq!(r.quantity, 7);
    assert_eq!(r.metering_record_id, id);
    assert_eq!(r.client_token.as_deref(), Some("ChatQuestions-1"));
    assert_eq!(fake.total("ChatQuestions"), 7);
    assert_eq!(fake.total("SecurityScans"), 0);
    assert_eq!(fake.calls("MeterUsage"), 3);
    assert_eq!(fake.calls("AWSMPMeteringService.MeterUsage"), 3);
    assert_eq!(fake.register_calls(), 0);
}

#[tokio::test]
async fn fractional_timestamps_round_down_to_the_hour_and_quantity_defaults_to_zero() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let hour = floor_hour(Utc::now()) - TimeDelta::hours(2);
    let secs = hour.timestamp() as f64 + 1234.567;
    c.meter_usage()
        .product_code(PRODUCT)
        .usage_dimension("SecurityScans")
        .timestamp(SdkDateTime::from_secs_f64(secs))
        .send()
        .await
        .expect("report without quantity");
    let records = fake.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].hour, hour);
    assert_eq!(records[0].quantity, 0);
    assert!(
        records[0].client_token.is_some(),
        "the SDK fills a ClientToken in"
    );
}

#[tokio::test]
async fn a_different_quantity_for_a_reported_hour_is_a_duplicate() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();
    meter(&c, "SecurityScans", at, 3).send().await.unwrap();
    let e = meter(&c, "SecurityScans", at + TimeDelta::minutes(5), 4)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), Some(400));
    let se = e.into_service_error();
    assert!(se.is_duplicate_request_exception(), "{se:?}");
    assert_eq!(fake.total("SecurityScans"), 3);
    // Another hour is a new record.
    meter(&c, "SecurityScans", at - TimeDelta::hours(1), 4)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.total("SecurityScans"), 7);
}

#[tokio::test]
async fn a_preloaded_record_makes_another_quantity_for_its_hour_a_duplicate() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();
    fake.preload_record("TASKA", "SecurityScans", at, 4);
    let se = meter(&c, "SecurityScans", at, 6)
        .client_token("SecurityScans-x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_duplicate_request_exception(), "{se:?}");
    assert_eq!(fake.total("SecurityScans"), 4);
    // Another task has its own record for the hour.
    let other = client(&fake, "TASKB").await;
    meter(&other, "SecurityScans", at, 6).send().await.unwrap();
    assert_eq!(fake.total("SecurityScans"), 10);
}

#[tokio::test]
async fn a_shifted_clock_moves_the_six_hour_window_and_the_current_hour() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    fake.set_clock_offset(TimeDelta::hours(8));
    assert!(fake.now() - Utc::now() >= TimeDelta::hours(8) - TimeDelta::seconds(1));
    let se = meter(&c, "SecurityScans", last_hour(), 1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        se.is_timestamp_out_of_bounds_exception(),
        "8 h old on the fake's clock: {se:?}"
    );
    // Five hours ahead of the real clock is in a closed hour of the fake's.
    meter(&c, "SecurityScans", Utc::now() + TimeDelta::hours(5), 1)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.total("SecurityScans"), 1);
}

#[tokio::test]
async fn records_older_than_six_hours_and_future_hours_are_refused() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let old = Utc::now() - TimeDelta::hours(6) - TimeDelta::minutes(1);
    let se = meter(&c, "SecurityScans", old, 1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_timestamp_out_of_bounds_exception(), "{se:?}");

    let future = floor_hour(Utc::now()) + TimeDelta::hours(1) + TimeDelta::minutes(1);
    let se = meter(&c, "SecurityScans", future, 1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_timestamp_out_of_bounds_exception(), "{se:?}");

    // Just inside the window is fine.
    let recent = Utc::now() - TimeDelta::hours(5) - TimeDelta::minutes(50);
    meter(&c, "SecurityScans", recent, 1).send().await.unwrap();
    assert!(fake.records().len() == 1);
}

#[tokio::test]
async fn unknown_dimension_wrong_product_and_missing_fields_are_refused() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let se = meter(&c, "Unicorns", last_hour(), 1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_usage_dimension_exception(), "{se:?}");

    let se = c
        .meter_usage()
        .product_code("prod-other")
        .usage_dimension("SecurityScans")
        .timestamp(sdk_time(last_hour()))
        .usage_quantity(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_product_code_exception(), "{se:?}");

    // The SDK does not check required fields; the service does.
    let e = c
        .meter_usage()
        .product_code(PRODUCT)
        .timestamp(sdk_time(last_hour()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), Some(400));
    assert_eq!(e.into_service_error().code(), Some("ValidationException"));

    let se = c
        .register_usage()
        .product_code("prod-other")
        .public_key_version(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_product_code_exception(), "{se:?}");
    assert!(fake.records().is_empty());
    assert_eq!(fake.calls("MeterUsage"), 3);
    assert_eq!(fake.register_calls(), 1);
}

#[tokio::test]
async fn a_token_reused_with_other_parameters_is_a_conflict() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();
    meter(&c, "ChatQuestions", at, 2)
        .client_token("tok-1")
        .send()
        .await
        .unwrap();
    for builder in [
        meter(&c, "ChatQuestions", at, 3),
        meter(&c, "DocumentAnalysis", at, 2),
        meter(&c, "ChatQuestions", at + TimeDelta::seconds(1), 2),
    ] {
        let e = builder.client_token("tok-1").send().await.unwrap_err();
        assert_eq!(status(&e), Some(409));
        let se = e.into_service_error();
        assert!(se.is_idempotency_conflict_exception(), "{se:?}");
    }
    assert_eq!(fake.records().len(), 1);
}

#[tokio::test]
async fn throttling_and_server_errors_surface_as_sdk_errors_and_are_retried() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();

    fake.throttle_next(1);
    let e = meter(&c, "ChatQuestions", at, 1).send().await.unwrap_err();
    assert_eq!(status(&e), Some(400));
    let se = e.into_service_error();
    assert!(se.is_throttling_exception(), "{se:?}");

    fake.fail_next(1);
    let e = meter(&c, "ChatQuestions", at, 1).send().await.unwrap_err();
    assert_eq!(status(&e), Some(500));
    let se = e.into_service_error();
    assert!(se.is_internal_service_error_exception(), "{se:?}");

    fake.throttle_next(1);
    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_throttling_exception(), "{se:?}");

    fake.fail_next(1);
    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_internal_service_error_exception(), "{se:?}");
    assert!(fake.records().is_empty());

    // With the SDK's standard retries both are transient: 3 attempts, same token.
    let retrying = client_with(&fake, "TASKA", fast_retries(), None).await;
    let before = fake.meter_calls();
    fake.throttle_next(1);
    fake.fail_next(1);
    let out = meter(&retrying, "ChatQuestions", at, 1)
        .client_token("retry-1")
        .send()
        .await
        .expect("third attempt succeeds");
    assert_eq!(fake.meter_calls() - before, 3);
    assert_eq!(fake.records().len(), 1);
    assert_eq!(
        fake.records()[0].metering_record_id,
        out.metering_record_id().unwrap()
    );
}

#[tokio::test]
async fn not_entitled_refuses_both_operations() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    fake.set_entitled(false);
    let se = meter(&c, "ChatQuestions", last_hour(), 1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_customer_not_entitled_exception(), "{se:?}");
    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_customer_not_entitled_exception(), "{se:?}");
    let se = meter(&c, "ChatQuestions", last_hour(), 0)
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_customer_not_entitled_exception(), "{se:?}");

    fake.set_entitled(true);
    meter(&c, "ChatQuestions", last_hour(), 1)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn two_tasks_each_report_the_same_hour() {
    let fake = start().await;
    let a = client(&fake, "TASKA").await;
    let b = client(&fake, "TASKB").await;
    let at = last_hour();
    let ida = meter(&a, "ChatQuestions", at, 5)
        .client_token("ChatQuestions-h")
        .send()
        .await
        .unwrap();
    // Same deterministic token from another task: tokens are per task by default.
    let idb = meter(&b, "ChatQuestions", at, 6)
        .client_token("ChatQuestions-h")
        .send()
        .await
        .unwrap();
    assert_ne!(ida.metering_record_id(), idb.metering_record_id());
    assert_eq!(fake.total("ChatQuestions"), 11);
    let mut tasks: Vec<_> = fake.records().into_iter().map(|r| r.task).collect();
    tasks.sort();
    assert_eq!(tasks, ["TASKA", "TASKB"]);

    // Global token scope: the other task's retry deduplicates (or conflicts).
    fake.set_token_scope(TokenScope::Global);
    let c = client(&fake, "TASKC").await;
    let at2 = at - TimeDelta::hours(1);
    let first = meter(&a, "SecurityScans", at2, 2)
        .client_token("SecurityScans-h")
        .send()
        .await
        .unwrap();
    let replay = meter(&c, "SecurityScans", at2, 2)
        .client_token("SecurityScans-h")
        .send()
        .await
        .unwrap();
    assert_eq!(first.metering_record_id(), replay.metering_record_id());
    assert_eq!(fake.total("SecurityScans"), 2);
    let se = meter(&c, "SecurityScans", at2, 3)
        .client_token("SecurityScans-h")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_idempotency_conflict_exception(), "{se:?}");
}

#[tokio::test]
async fn register_usage_signature_verifies_and_echoes_the_nonce() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let before = Utc::now().timestamp();
    let out = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(1)
        .nonce("nonce-42")
        .send()
        .await
        .expect("register usage");
    let token = out.signature().expect("signature");
    assert!(out.public_key_rotation_timestamp().is_none());

    let key = jsonwebtoken::DecodingKey::from_rsa_pem(fake.public_key_pem().as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("verifies");
    let claims = data.claims.as_object().unwrap();
    let mut names: Vec<_> = claims.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["iat", "nonce", "productCode", "publicKeyVersion"]);
    assert_eq!(claims["productCode"], PRODUCT);
    assert_eq!(claims["publicKeyVersion"], 1);
    assert_eq!(claims["nonce"], "nonce-42");
    let iat = claims["iat"].as_i64().unwrap();
    assert!(iat >= before && iat <= Utc::now().timestamp());

    let header_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: Value = serde_json::from_slice(&header_json).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "PS256", "typ": "JWT"}));

    // A token from another key does not verify; a tampered token does not either.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"productCode":"prod-other","publicKeyVersion":1,"iat":1}"#);
    parts[1] = &forged_claims;
    assert!(jsonwebtoken::decode::<Value>(parts.join("."), &key, &validation).is_err());

    // Without a nonce the claim is absent.
    let out = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(1)
        .send()
        .await
        .unwrap();
    let data = jsonwebtoken::decode::<Value>(out.signature().unwrap(), &key, &validation).unwrap();
    assert!(data.claims.get("nonce").is_none());
    assert_eq!(fake.register_calls(), 2);
}

#[tokio::test]
async fn register_usage_key_version_and_platform_modes() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(2)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_public_key_version_exception(), "{se:?}");
    fake.set_expected_key_version(2);
    c.register_usage()
        .product_code(PRODUCT)
        .public_key_version(2)
        .send()
        .await
        .unwrap();

    fake.set_platform_supported(false);
    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(2)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_platform_not_supported_exception(), "{se:?}");

    let se = c
        .register_usage()
        .product_code(PRODUCT)
        .public_key_version(2)
        .nonce("x".repeat(256))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(se.code(), Some("ValidationException"));
}

#[tokio::test]
async fn hang_after_accept_records_usage_and_a_retry_gets_the_same_id() {
    let fake = start().await;
    let c = client_with(
        &fake,
        "TASKA",
        RetryConfig::disabled(),
        Some(Duration::from_secs(1)),
    )
    .await;
    let at = last_hour();
    fake.hang_after_accept_next(1);
    let e = meter(&c, "DocumentAnalysis", at, 4)
        .client_token("DocumentAnalysis-h")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, SdkError::TimeoutError(_)), "{e:?}");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let record = loop {
        if let Some(r) = fake.records().into_iter().next() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "record never stored");
        tokio::task::yield_now().await;
    };
    assert_eq!(record.quantity, 4);
    assert_eq!(fake.total("DocumentAnalysis"), 4);

    let out = meter(&c, "DocumentAnalysis", at, 4)
        .client_token("DocumentAnalysis-h")
        .send()
        .await
        .expect("retry answered");
    assert_eq!(
        out.metering_record_id(),
        Some(record.metering_record_id.as_str())
    );
    assert_eq!(fake.records().len(), 1);
    assert_eq!(fake.meter_calls(), 2);
}

/// What the SDK's retry classifier sees for a dropped connection: an I/O error or a connector
/// error it already classified as transient (hyper's `IncompleteMessage`).
fn assert_transient_dispatch_failure<E: std::fmt::Debug>(e: &SdkError<E>) {
    match e {
        SdkError::DispatchFailure(f) => assert!(
            f.is_io() || f.as_other() == Some(ErrorKind::TransientError),
            "{f:?}"
        ),
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
}

#[tokio::test]
async fn down_drops_connections_which_the_sdk_treats_as_transient() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();
    // A pooled keep-alive connection exists.
    meter(&c, "ChatQuestions", at, 1).send().await.unwrap();

    fake.set_down(true);
    // The request on the pooled connection: closed unanswered.
    let e = meter(&c, "ChatQuestions", at, 1).send().await.unwrap_err();
    assert_transient_dispatch_failure(&e);
    // A fresh connection: accepted and closed at once.
    let e = meter(&c, "SecurityScans", at, 1).send().await.unwrap_err();
    assert_transient_dispatch_failure(&e);
    assert!(fake.dropped_connections() >= 2);
    assert_eq!(fake.meter_calls(), 1, "nothing answered while down");

    // The standard retry strategy retries it: 3 attempts, 3 dropped connections.
    let retrying = client_with(&fake, "TASKA", fast_retries(), None).await;
    let before = fake.dropped_connections();
    let e = meter(&retrying, "SecurityScans", at, 1)
        .send()
        .await
        .unwrap_err();
    assert_transient_dispatch_failure(&e);
    assert_eq!(fake.dropped_connections() - before, 3);

    fake.set_down(false);
    meter(&c, "SecurityScans", at, 1).send().await.unwrap();
    assert_eq!(fake.records().len(), 2);
}

#[tokio::test]
async fn dry_run_validates_but_records_nothing() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let out = meter(&c, "ChatQuestions", Utc::now(), 0)
        .dry_run(true)
        .send()
        .await
        .expect("dry run answered 200");
    assert!(out.metering_record_id().is_some());

    let se = meter(&c, "Unicorns", Utc::now(), 0)
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_usage_dimension_exception(), "{se:?}");

    fake.set_dry_run_reply(DryRunReply::DryRunOperationError);
    let se = meter(&c, "ChatQuestions", Utc::now(), 0)
        .dry_run(true)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.meta().code() == Some("DryRunOperation"), "{se:?}");
    assert_eq!(se.code(), Some("DryRunOperation"));
    assert!(fake.records().is_empty());
    assert_eq!(fake.meter_calls(), 3);
}

fn alloc(quantity: i32, tags: &[(&str, &str)]) -> UsageAllocation {
    let mut b = UsageAllocation::builder().allocated_usage_quantity(quantity);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(*k).value(*v).build().unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn usage_allocations_and_tags_are_checked() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();

    let se = meter(&c, "ChatQuestions", at, 5)
        .usage_allocations(alloc(2, &[("team", "a")]))
        .usage_allocations(alloc(2, &[("team", "b")]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_usage_allocations_exception(), "{se:?}");

    let six: Vec<(String, String)> = (0..6).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let six: Vec<(&str, &str)> = six.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let se = meter(&c, "ChatQuestions", at, 5)
        .usage_allocations(alloc(5, &six))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_tag_exception(), "{se:?}");

    let se = meter(&c, "ChatQuestions", at, 5)
        .usage_allocations(alloc(5, &[("bad#key", "v")]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(se.is_invalid_tag_exception(), "{se:?}");

    let mut too_many = meter(&c, "ChatQuestions", at, 2501);
    for i in 0..2501 {
        too_many = too_many.usage_allocations(alloc(1, &[("n", &i.to_string())]));
    }
    let se = too_many.send().await.unwrap_err().into_service_error();
    assert!(se.is_invalid_usage_allocations_exception(), "{se:?}");
    assert!(fake.records().is_empty());

    meter(&c, "ChatQuestions", at, 5)
        .usage_allocations(alloc(3, &[("team", "a")]))
        .usage_allocations(alloc(2, &[]))
        .send()
        .await
        .expect("valid allocations");
    let records = fake.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].allocations.len(), 2);
    assert_eq!(
        records[0].allocations[0].tags,
        [("team".to_owned(), "a".to_owned())]
    );
}

#[tokio::test]
async fn raw_protocol_requires_sigv4_and_answers_aws_json_errors() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = start().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(fake.endpoint())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "AWSMPMeteringService.MeterUsage")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.headers()["content-type"], "application/x-amz-json-1.1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["__type"], "MissingAuthenticationTokenException");
    assert!(body["message"].is_string());

    let resp = http
        .post(fake.endpoint())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "AWSMPMeteringService.MeterUsage")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=RAWTASK/20260101/us-east-1/aws-marketplace/aws4_request, \
             SignedHeaders=host, Signature=00",
        )
        .body(format!(
            r#"{{"ProductCode":"{PRODUCT}","UsageDimension":"ChatQuestions","Timestamp":{},"UsageQuantity":9}}"#,
            last_hour().timestamp()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["MeteringRecordId"].is_string());
    assert_eq!(fake.records()[0].task, "RAWTASK");
    assert_eq!(fake.calls("MeterUsage"), 2);
}

#[tokio::test]
async fn dropping_the_fake_stops_the_server_and_closes_hung_requests() {
    let fake = start().await;
    let c = client(&fake, "TASKA").await;
    let at = last_hour();
    fake.hang_after_accept_next(1);
    let hung = tokio::spawn({
        let c = c.clone();
        async move { meter(&c, "ChatQuestions", at, 1).send().await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.records().is_empty() {
        assert!(std::time::Instant::now() < deadline, "record never stored");
        tokio::task::yield_now().await;
    }
    drop(fake);

    let result = tokio::time::timeout(Duration::from_secs(5), hung)
        .await
        .expect("the hung request ends when the fake is dropped")
        .unwrap();
    let e = result.unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");

    let e = meter(&c, "ChatQuestions", at, 1).send().await.unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");
}
