//! `/api/v1/license`, `/api/v1/usage` and `/api/v1/billable-actions` (the small billable action
//! that exercises the ledger end to end until chat, documents and scans exist).

use axum::Json;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ledger::{self, Idempotency, UsageEvent};
use super::reporter::start_of_hour;
use super::{Dimension, LicenseStatus, Marketplace};
use crate::error::ApiError;
use crate::web::{ApiJson, Auth};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Marketplace>: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(get_license))
        .routes(routes!(get_usage))
        .routes(routes!(create_billable_action))
}

#[derive(Serialize, ToSchema)]
pub struct License {
    pub status: LicenseStatus,
    pub reason: String,
    pub marketplace_enabled: bool,
    pub product_code: Option<String>,
    #[serde(with = "crate::web::timestamp")]
    pub trial_started_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp")]
    pub trial_ends_at: DateTime<Utc>,
    /// Whole days left in the trial (0 when over).
    pub trial_days_left: i64,
    /// Whether trial limits apply to billable actions now.
    pub limits_apply: bool,
    #[serde(with = "crate::web::timestamp::option")]
    pub last_check_at: Option<DateTime<Utc>>,
}

/// The license status, why, and the trial period.
#[utoipa::path(get, path = "/license", tag = "usage", responses((status = 200, body = License)), security(("api_key" = [])))]
async fn get_license(State(market): State<Arc<Marketplace>>, Auth(_caller): Auth) -> Json<License> {
    let license = market.license().await;
    let left = (market.trial_ends_at() - market.now()).num_seconds().max(0);
    Json(License {
        status: license.status,
        reason: license.reason,
        marketplace_enabled: market.config.enabled,
        product_code: market.config.product_code.clone(),
        trial_started_at: market.trial_started_at,
        trial_ends_at: market.trial_ends_at(),
        trial_days_left: (left + 86_399) / 86_400,
        limits_apply: Marketplace::limits_apply(license.status),
        last_check_at: license.last_check,
    })
}

#[derive(Serialize, ToSchema)]
pub struct LastReport {
    #[serde(with = "crate::web::timestamp")]
    pub hour: DateTime<Utc>,
    pub quantity: i32,
    /// `pending`, `sent`, `failed`, `expired` or `unconfirmed`.
    pub status: String,
    pub metering_record_id: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "crate::web::timestamp")]
    pub at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct DimensionUsage {
    pub dimension: Dimension,
    /// Units recorded and not refunded, all time.
    pub used: i64,
    /// Trial limit, when limits apply.
    pub limit: Option<i64>,
    /// Trial units left, when limits apply.
    pub remaining: Option<i64>,
    /// Units of the current clock hour, not yet reported.
    pub current_hour_pending: i64,
    /// Units waiting to be reported (any hour; not counting `unconfirmed`).
    pub unreported: i64,
    /// Units AWS has confirmed.
    pub reported: i64,
    /// Units AWS may already have billed but never confirmed: never sent again (that could bill
    /// twice). Compare with the AWS Marketplace seller reports.
    pub unconfirmed: Unconfirmed,
    pub last_report: Option<LastReport>,
    /// Why reporting is stopped for this dimension (a permanent AWS error), if it is.
    pub reporting_blocked: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Unconfirmed {
    pub units: i64,
    /// The hours of the unconfirmed reports, oldest first.
    #[serde(with = "crate::web::timestamp::vec")]
    pub hours: Vec<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub license_status: LicenseStatus,
    pub dimensions: Vec<DimensionUsage>,
}

/// Usage per dimension: used, trial limit and remaining, pending and reported.
#[utoipa::path(get, path = "/usage", tag = "usage", responses((status = 200, body = Usage)), security(("api_key" = [])))]
async fn get_usage(
    State(market): State<Arc<Marketplace>>,
    Auth(_caller): Auth,
) -> Result<Json<Usage>, ApiError> {
    let license = market.license().await;
    let limited = Marketplace::limits_apply(license.status);
    let this_hour = start_of_hour(market.now());
    let mut dimensions = Vec::new();
    for dimension in Dimension::ALL {
        let totals = sqlx::query!(
            r#"SELECT coalesce(sum(e.quantity), 0)::bigint AS "used!",
                      coalesce(sum(e.quantity) FILTER (WHERE e.occurred_at >= $2 AND coalesce(r.status, '') NOT IN ('sent', 'unconfirmed')), 0)::bigint AS "current!",
                      coalesce(sum(e.quantity) FILTER (WHERE coalesce(r.status, '') NOT IN ('sent', 'unconfirmed')), 0)::bigint AS "unreported!",
                      coalesce(sum(e.quantity) FILTER (WHERE r.status = 'sent'), 0)::bigint AS "reported!",
                      coalesce(sum(e.quantity) FILTER (WHERE r.status = 'unconfirmed'), 0)::bigint AS "unconfirmed!"
               FROM usage_events e LEFT JOIN usage_reports r ON r.id = e.report_id
               WHERE e.dimension = $1 AND e.refunded_at IS NULL"#,
            dimension.as_str(),
            this_hour
        )
        .fetch_one(&market.db)
        .await?;
        let counter = sqlx::query_scalar!(
            "SELECT used FROM usage_counters WHERE dimension = $1",
            dimension.as_str()
        )
        .fetch_one(&market.db)
        .await?;
        let last_report = sqlx::query_as!(
            LastReport,
            r#"SELECT hour, quantity, status, metering_record_id, last_error, coalesce(sent_at, claimed_at) AS "at!"
               FROM usage_reports WHERE dimension = $1 ORDER BY id DESC LIMIT 1"#,
            dimension.as_str()
        )
        .fetch_optional(&market.db)
        .await?;
        let unconfirmed_hours = sqlx::query_scalar!(
            "SELECT hour FROM usage_reports WHERE dimension = $1 AND status = 'unconfirmed' ORDER BY hour",
            dimension.as_str()
        )
        .fetch_all(&market.db)
        .await?;
        let blocked = sqlx::query_scalar!(
            "SELECT reason FROM usage_dimension_blocks WHERE dimension = $1",
            dimension.as_str()
        )
        .fetch_optional(&market.db)
        .await?;
        let limit = limited.then(|| dimension.trial_limit(&market.config));
        dimensions.push(DimensionUsage {
            dimension,
            limit,
            remaining: limit.map(|l| (l - counter).max(0)),
            used: totals.used,
            current_hour_pending: totals.current,
            unreported: totals.unreported,
            reported: totals.reported,
            unconfirmed: Unconfirmed {
                units: totals.unconfirmed,
                hours: unconfirmed_hours,
            },
            last_report,
            reporting_blocked: blocked,
        });
    }
    Ok(Json(Usage {
        license_status: license.status,
        dimensions,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillableActionRequest {
    /// `SecurityScans`, `ChatQuestions` or `DocumentAnalysis`.
    #[schema(value_type = Dimension)]
    pub dimension: String,
    /// Any text, 1-10,000 characters; stored with the action.
    #[schema(min_length = 1, max_length = 10000)]
    pub input: String,
}

#[derive(Serialize, ToSchema)]
pub struct BillableAction {
    pub id: Uuid,
    pub dimension: Dimension,
    pub input: String,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    pub usage: UsageEvent,
}

/// Perform a small billable action: the action and its usage record commit together.
/// Send `Idempotency-Key` to make retries safe: a retry returns the first result, uncharged.
#[utoipa::path(post, path = "/billable-actions", tag = "usage", request_body = BillableActionRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$",
        description = "makes a retry return the first result without a second charge; 1-255 visible ASCII characters (a UUID is a good choice)")),
    responses((status = 201, body = BillableAction), (status = 402, body = crate::error::Problem,
        description = "the license or trial does not allow it (`trial_limit_reached`, `license_expired`, `license_invalid`)")),
    security(("api_key" = [])))]
async fn create_billable_action(
    State(market): State<Arc<Marketplace>>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BillableActionRequest>,
) -> Result<Response, ApiError> {
    let dimension = Dimension::parse(&body.dimension).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_dimension",
            "dimension must be one of SecurityScans, ChatQuestions, DocumentAnalysis",
        )
    })?;
    if body.input.is_empty() || body.input.chars().count() > 10_000 {
        return Err(ApiError::unprocessable(
            "invalid_input",
            "input must be 1 to 10,000 characters",
        ));
    }
    let idempotency_key = ledger::key_from(&headers)?;
    let mut tx = market.db.begin().await?;
    if let Some(key) = &idempotency_key {
        let hash = ledger::request_hash(&[
            b"billable-actions",
            dimension.as_str().as_bytes(),
            body.input.as_bytes(),
        ]);
        if let Idempotency::Replay(status, stored) =
            ledger::begin(&mut tx, caller.key_id, key, &hash).await?
        {
            tx.rollback().await?;
            return Ok(ledger::mark_replayed(
                (status, Json(stored)).into_response(),
            ));
        }
    }
    let id = Uuid::new_v4();
    let usage = market
        .charge(
            &mut tx,
            dimension,
            "billable-action",
            Some(caller.key_id),
            Some(&id.to_string()),
        )
        .await?;
    let created_at = sqlx::query_scalar!(
        "INSERT INTO billable_actions (id, dimension, input, api_key_id, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
        id,
        dimension.as_str(),
        &body.input,
        caller.key_id,
        market.now()
    )
    .fetch_one(&mut *tx)
    .await?;
    let action = BillableAction {
        id,
        dimension,
        input: body.input,
        created_at,
        usage: usage.clone(),
    };
    let json = serde_json::to_value(&action).map_err(anyhow::Error::from)?;
    if let Some(key) = &idempotency_key {
        ledger::finish(&mut tx, caller.key_id, key, StatusCode::CREATED, &json).await?;
    }
    tx.commit().await?;
    market.charged(&usage).await;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}
