//! `/api/v1/scans…`: start, list, read, cancel and delete scans; their findings (filtered,
//! paged, exported), compliance per control of a framework, and the difference between two scans.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::checks::{self, Status};
use super::{Account, NewScan, ScansState, engine};
use crate::error::{ApiError, Problem};
use crate::marketplace::ledger::{self, Idempotency};
use crate::web::{ApiJson, Auth, Page, invalid_filter, next_link, page_bounds};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    ScansState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_scan, list_scans))
        .routes(routes!(get_scan, delete_scan))
        .routes(routes!(cancel_scan))
        .routes(routes!(list_findings))
        .routes(routes!(export_findings))
        .routes(routes!(compliance))
        .routes(routes!(diff))
}

/// `"self"`, or a role in another account.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(untagged)]
pub enum AccountSpec {
    /// `"self"`: the deployment's own credentials (the ECS task role).
    Own(String),
    Role(RoleSpec),
}

#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// `arn:aws:iam::123456789012:role/CloudOptimizerScan`
    #[schema(example = "arn:aws:iam::123456789012:role/CloudOptimizerScan")]
    pub role_arn: String,
    /// The external id the role's trust policy demands; used for this scan and never stored.
    #[schema(min_length = 2, max_length = 1224)]
    pub external_id: Option<String>,
}

/// A list of regions, or `"enabled"`: every region enabled in the account.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(untagged)]
pub enum RegionsSpec {
    Enabled(String),
    List(Vec<String>),
}

#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// `"self"` (default) or `{"role_arn", "external_id"}`.
    #[schema(value_type = Option<AccountDoc>)]
    pub account: Option<AccountSpec>,
    /// Region names, or `"enabled"` (default): every region enabled in the account.
    #[schema(value_type = Option<RegionsDoc>)]
    pub regions: Option<RegionsSpec>,
    /// Only these services' checks (`iam`, `s3`, `ec2`, …; 422 `unknown_service` lists them).
    #[schema(min_items = 1)]
    pub services: Option<Vec<String>>,
    /// Only these checks (catalogue ids such as `iam-root-mfa-enabled`;
    /// `GET /api/v1/kb/checks?automated=true` lists them).
    #[schema(min_items = 1)]
    pub checks: Option<Vec<String>>,
    /// Only checks that evidence controls of these frameworks (`cis-aws`, `hipaa@2013`, …).
    #[schema(min_items = 1)]
    pub frameworks: Option<Vec<String>>,
}

/// The documented shape of `account` (the server reads it leniently to name the mistake).
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum AccountDoc {
    Own(OwnAccount),
    Role(RoleDoc),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum OwnAccount {
    #[serde(rename = "self")]
    Own,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RoleDoc {
    #[schema(
        pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
        example = "arn:aws:iam::123456789012:role/CloudOptimizerScan"
    )]
    role_arn: String,
    #[schema(pattern = r"^[A-Za-z0-9+=,.@:/_-]{2,1224}$")]
    external_id: Option<String>,
}

/// The documented shape of `regions`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum RegionsDoc {
    Enabled(EnabledRegions),
    /// 1 to 50 region names.
    List(Vec<RegionName>),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EnabledRegions {
    #[serde(rename = "enabled")]
    Enabled,
}

/// An AWS region name.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(value_type = String, pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", example = "us-east-1")]
pub struct RegionName(String);

#[derive(Serialize, ToSchema)]
pub struct ScanAccount {
    /// `self` or `role`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The account the credentials resolved to; null until the scan starts.
    pub account_id: Option<String>,
    pub role_arn: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Progress {
    /// (service, region) units finished.
    pub done: i32,
    pub total: i32,
}

#[derive(Serialize, ToSchema, Default)]
pub struct StatusCounts {
    pub pass: i64,
    pub fail: i64,
    pub error: i64,
    pub not_applicable: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Scan {
    pub id: Uuid,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// `api` or `schedule`.
    pub trigger: String,
    pub account: ScanAccount,
    /// As requested: a list of regions or `"enabled"`.
    #[schema(value_type = RegionsDoc)]
    pub regions_requested: Value,
    /// The regions scanned (resolved once the scan starts).
    pub regions: Vec<String>,
    pub services: Option<Vec<String>>,
    pub checks: Option<Vec<String>>,
    pub frameworks: Option<Vec<String>>,
    pub progress: Progress,
    /// Findings by status.
    pub counts: StatusCounts,
    /// Failed findings by severity (`critical`, `high`, `medium`, `low`, `informational`).
    pub failed_by_severity: BTreeMap<String, i64>,
    pub aws_calls: i64,
    /// AWS calls by operation (`IAM:GetAccountSummary`), once the scan has ended: the
    /// permissions it used.
    #[schema(value_type = Object)]
    pub aws_calls_by_operation: Value,
    /// Why the scan failed or was interrupted.
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// The `SecurityScans` usage record of this scan.
    pub usage_event_id: Option<Uuid>,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::web::timestamp::option")]
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
}

fn bad(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, detail)
}

fn bad_with(code: &'static str, detail: impl Into<String>, allowed: &[String]) -> ApiError {
    ApiError::problem(
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with("allowed", allowed),
    )
}

fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && name.len() <= 32
}

/// Turns a request into a validated [`NewScan`]: every refusal names what to fix.
async fn validate(db: &PgPool, body: ScanRequest, api_key_id: Uuid) -> Result<NewScan, ApiError> {
    let account = match body.account {
        None => Account::Own,
        Some(AccountSpec::Own(word)) if word == "self" => Account::Own,
        Some(AccountSpec::Own(other)) => {
            return Err(bad(
                "invalid_account",
                format!(
                    "account must be \"self\" or {{\"role_arn\", \"external_id\"}}, not {other:?}"
                ),
            ));
        }
        Some(AccountSpec::Role(role)) => {
            if super::role_account(&role.role_arn).is_none() {
                return Err(bad(
                    "invalid_role_arn",
                    "role_arn must be an IAM role ARN such as arn:aws:iam::123456789012:role/CloudOptimizerScan",
                ));
            }
            if let Some(external_id) = &role.external_id {
                let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c);
                if !(2..=1224).contains(&external_id.len()) || !external_id.chars().all(allowed) {
                    return Err(bad(
                        "invalid_external_id",
                        "external_id must be 2-1224 characters of letters, digits and +=,.@:/-_",
                    ));
                }
            }
            Account::Role {
                arn: role.role_arn,
                external_id: role.external_id,
            }
        }
    };
    let regions = match body.regions {
        None => None,
        Some(RegionsSpec::Enabled(word)) if word == "enabled" => None,
        Some(RegionsSpec::Enabled(other)) => {
            return Err(bad(
                "invalid_regions",
                format!("regions must be a list of region names or \"enabled\", not {other:?}"),
            ));
        }
        Some(RegionsSpec::List(list)) => {
            if list.is_empty() || list.len() > 50 {
                return Err(bad(
                    "invalid_regions",
                    "regions must list 1 to 50 region names, or be \"enabled\"",
                ));
            }
            let mut seen = Vec::new();
            for region in list {
                if !is_region(&region) {
                    return Err(bad(
                        "invalid_region",
                        format!("{region:?} is not an AWS region name such as us-east-1"),
                    ));
                }
                if !seen.contains(&region) {
                    seen.push(region);
                }
            }
            Some(seen)
        }
    };
    let implemented: HashSet<&'static str> = checks::implemented().collect();
    let mut wanted = implemented.clone();
    let services = match body.services {
        None => None,
        Some(list) => {
            let known: Vec<String> = checks::services()
                .iter()
                .filter(|s| !s.checks.is_empty())
                .map(|s| s.id.to_string())
                .collect();
            if list.is_empty() {
                return Err(bad_with(
                    "invalid_services",
                    "services, when given, must name at least one service",
                    &known,
                ));
            }
            for service in &list {
                if !known.contains(service) {
                    return Err(bad_with(
                        "unknown_service",
                        format!(
                            "no checks for service {service:?}; use one of the listed services"
                        ),
                        &known,
                    ));
                }
            }
            let chosen: HashSet<&'static str> = checks::services()
                .iter()
                .filter(|s| list.iter().any(|l| l == s.id))
                .flat_map(|s| s.checks.iter().copied())
                .collect();
            wanted.retain(|c| chosen.contains(c));
            Some(list)
        }
    };
    let check_list = match body.checks {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(bad(
                    "invalid_checks",
                    "checks, when given, must name at least one check",
                ));
            }
            let mut slugs = Vec::new();
            for raw in &list {
                let slug = raw.strip_prefix("check:kb:").unwrap_or(raw);
                if !implemented.contains(slug) {
                    let in_catalogue = sqlx::query_scalar!(
                        "SELECT EXISTS (SELECT 1 FROM kb_checks WHERE version_id = (SELECT id FROM kb_versions WHERE active) AND id = $1) AS \"e!\"",
                        format!("check:kb:{slug}")
                    )
                    .fetch_one(db)
                    .await?;
                    return Err(if in_catalogue {
                        bad(
                            "check_not_automated",
                            format!(
                                "check {slug:?} is in the catalogue but not automated; GET /api/v1/kb/checks?automated=true lists the ones scans run"
                            ),
                        )
                    } else {
                        bad(
                            "unknown_check",
                            format!(
                                "no check {slug:?}; GET /api/v1/kb/checks?automated=true lists the ones scans run"
                            ),
                        )
                    });
                }
                slugs.push(slug.to_string());
            }
            wanted.retain(|c| slugs.iter().any(|s| s == c));
            Some(slugs)
        }
    };
    let frameworks = match body.frameworks {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(bad(
                    "invalid_frameworks",
                    "frameworks, when given, must name at least one framework",
                ));
            }
            let keys = sqlx::query_scalar!(
                "SELECT key FROM kb_frameworks WHERE version_id = (SELECT id FROM kb_versions WHERE active) ORDER BY key"
            )
            .fetch_all(db)
            .await?;
            let mut resolved = Vec::new();
            for raw in &list {
                match crate::kb::api::match_framework(&keys, raw) {
                    Some(key) => resolved.push(key),
                    None => {
                        return Err(bad_with(
                            "unknown_framework",
                            format!("no framework {raw:?}"),
                            &keys,
                        ));
                    }
                }
            }
            let mapped = sqlx::query_scalar!(
                r#"SELECT DISTINCT substring(r.to_id FROM 10) AS "slug!"
                   FROM kb_relationships r JOIN kb_controls c ON c.version_id = r.version_id AND c.id = r.from_id
                   WHERE r.version_id = (SELECT id FROM kb_versions WHERE active) AND r.type = 'maps_to'
                     AND coalesce(r.strength, 'direct') IN ('direct', 'partial') AND c.framework = ANY($1)"#,
                &resolved
            )
            .fetch_all(db)
            .await?;
            wanted.retain(|c| mapped.iter().any(|m| m == c));
            Some(resolved)
        }
    };
    if wanted.is_empty() {
        return Err(bad(
            "no_checks_selected",
            "the services, checks and frameworks given leave no automated check to run",
        ));
    }
    Ok(NewScan {
        account,
        regions,
        services,
        checks: check_list,
        frameworks,
        wanted,
        trigger: "api",
        api_key_id: Some(api_key_id),
    })
}

/// Start a scan. One `SecurityScans` unit is charged when it is accepted (402 before any AWS
/// call when the license or trial does not allow it); a scan that fails before any check could
/// be evaluated (credentials, a role that cannot be assumed) is refunded. Send
/// `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/scans", tag = "scans", request_body = ScanRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$",
        description = "makes a retry return the first result without a second scan or charge")),
    responses((status = 202, body = Scan, headers(("Location" = String, description = "`/api/v1/scans/{id}`"))),
        (status = 402, body = Problem, description = "the license or trial does not allow another scan"),
        (status = 409, body = Problem, description = "a scan of this account is already queued or running (`scan_already_running`)"),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn create_scan(
    State(state): State<ScansState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let canonical = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    let request: ScanRequest =
        serde_json::from_value(body).map_err(|e| bad("invalid_scan_request", e.to_string()))?;
    let idempotency_key = ledger::key_from(&headers)?;
    let scan = validate(&state.db, request, caller.key_id).await?;
    let mut tx = state.db.begin().await?;
    if let Some(key) = &idempotency_key {
        let hash = ledger::request_hash(&[b"scans", &canonical]);
        if let Idempotency::Replay(status, stored) =
            ledger::begin(&mut tx, caller.key_id, key, &hash).await?
        {
            tx.rollback().await?;
            return Ok(ledger::mark_replayed(
                (status, Json(stored)).into_response(),
            ));
        }
    }
    let (id, usage) = super::insert(&state, &mut tx, &scan).await?;
    let view = load(&mut *tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("scan row vanished"))?;
    let json = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
    if let Some(key) = &idempotency_key {
        ledger::finish(&mut tx, caller.key_id, key, StatusCode::ACCEPTED, &json).await?;
    }
    tx.commit().await?;
    state.market.charged(&usage).await;
    let (role_arn, external_id) = match scan.account {
        Account::Own => (None, None),
        Account::Role { arn, external_id } => (Some(arn), external_id),
    };
    state.launch(engine::Launch {
        id,
        role_arn,
        external_id,
        regions: scan.regions,
        wanted: scan.wanted,
        usage_event_id: usage.id,
    });
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/scans/{id}"))],
        Json(json),
    )
        .into_response())
}

/// Reads one scan with its counts.
async fn load<'e>(db: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<Option<Scan>, ApiError> {
    let mut scans = load_many(db, &[id]).await?;
    Ok(scans.pop())
}

async fn load_many<'e>(db: impl sqlx::PgExecutor<'e>, ids: &[Uuid]) -> Result<Vec<Scan>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT s.id, s.status, s.trigger, s.account_id, s.role_arn, s.regions_requested, s.regions,
                  s.services, s.checks, s.frameworks, s.progress_done, s.progress_total, s.aws_calls, s.aws_operations,
                  s.error, s.cancel_requested, s.usage_event_id, s.created_at, s.started_at, s.finished_at,
                  extract(epoch FROM s.finished_at - s.started_at)::float8 AS duration,
                  coalesce((SELECT json_object_agg(k, n) FROM (
                      SELECT f.status || ':' || f.severity AS k, count(*) AS n FROM scan_findings f
                      WHERE f.scan_id = s.id GROUP BY 1) c), '{}') AS "counts!"
           FROM scans s JOIN unnest($1::uuid[]) WITH ORDINALITY AS o(id, i) ON o.id = s.id
           ORDER BY o.i"#,
        ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut counts = StatusCounts::default();
            let mut failed_by_severity = BTreeMap::new();
            if let Value::Object(map) = &r.counts {
                for (key, n) in map {
                    let n = n.as_i64().unwrap_or(0);
                    let (status, severity) = key.split_once(':').unwrap_or((key, ""));
                    match status {
                        "pass" => counts.pass += n,
                        "fail" => {
                            counts.fail += n;
                            *failed_by_severity.entry(severity.to_string()).or_insert(0) += n;
                        }
                        "error" => counts.error += n,
                        _ => counts.not_applicable += n,
                    }
                }
            }
            Scan {
                id: r.id,
                status: r.status,
                trigger: r.trigger,
                account: ScanAccount {
                    kind: if r.role_arn.is_some() { "role" } else { "self" }.into(),
                    account_id: r.account_id,
                    role_arn: r.role_arn,
                },
                regions_requested: r.regions_requested,
                regions: r.regions,
                services: r.services,
                checks: r.checks,
                frameworks: r.frameworks,
                progress: Progress {
                    done: r.progress_done,
                    total: r.progress_total,
                },
                counts,
                failed_by_severity,
                aws_calls: r.aws_calls,
                aws_calls_by_operation: r.aws_operations,
                error: r.error,
                cancel_requested: r.cancel_requested,
                usage_event_id: r.usage_event_id,
                created_at: r.created_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
                duration_seconds: r.duration,
            }
        })
        .collect())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScanListParams {
    /// Only scans in this state.
    #[param(pattern = "^(queued|running|succeeded|failed|cancelled|interrupted)$")]
    status: Option<String>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

const SCAN_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];

/// Scans, newest first.
#[utoipa::path(get, path = "/scans", tag = "scans", params(ScanListParams),
    responses((status = 200, body = Page<Scan>), (status = 400, body = Problem)), security(("api_key" = [])))]
async fn list_scans(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<ScanListParams>, QueryRejection>,
) -> Result<Json<Page<Scan>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 50, 200)?;
    if let Some(status) = &params.status
        && !SCAN_STATUSES.contains(&status.as_str())
    {
        return Err(invalid_filter("status", status, &SCAN_STATUSES));
    }
    let ids = sqlx::query_scalar!(
        "SELECT id FROM scans WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        params.status,
        limit,
        offset
    )
    .fetch_all(&state.db)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM scans WHERE $1::text IS NULL OR status = $1"#,
        params.status
    )
    .fetch_one(&state.db)
    .await?;
    let items = load_many(&state.db, &ids).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

fn no_scan(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no scan {id}"))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::invalid(
            "invalid_scan_id",
            format!("{raw:?} is not a scan id (a UUID)"),
        )
    })
}

/// A scan: status, progress, counts by status and severity, timing.
#[utoipa::path(get, path = "/scans/{id}", tag = "scans", params(("id" = Uuid, Path)),
    responses((status = 200, body = Scan), (status = 404, body = Problem)), security(("api_key" = [])))]
async fn get_scan(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Scan>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(load(&state.db, id).await?.ok_or_else(|| no_scan(id))?))
}

/// Delete a finished scan and its findings. A queued or running scan must be cancelled first.
#[utoipa::path(delete, path = "/scans/{id}", tag = "scans", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the scan is still running (`scan_running`)")),
    security(("api_key" = [])))]
async fn delete_scan(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let status = sqlx::query_scalar!("SELECT status FROM scans WHERE id = $1", id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| no_scan(id))?;
    if status == "queued" || status == "running" {
        return Err(ApiError::problem(Problem::new(
            StatusCode::CONFLICT,
            "scan_running",
            format!("scan {id} is {status}; cancel it first (POST /api/v1/scans/{id}/cancel)"),
        )));
    }
    sqlx::query!(
        "DELETE FROM scans WHERE id = $1 AND status NOT IN ('queued', 'running')",
        id
    )
    .execute(&state.db)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a queued or running scan: its AWS calls stop within a second; findings so far stay.
#[utoipa::path(post, path = "/scans/{id}/cancel", tag = "scans", params(("id" = Uuid, Path)),
    responses((status = 202, body = Scan), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the scan already ended (`scan_finished`)")),
    security(("api_key" = [])))]
async fn cancel_scan(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Scan>), ApiError> {
    let id = parse_id(&id)?;
    let scan = load(&state.db, id).await?.ok_or_else(|| no_scan(id))?;
    if !super::request_cancel(&state, id).await? {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::CONFLICT,
                "scan_finished",
                format!("scan {id} already ended ({})", scan.status),
            )
            .with("scan_status", &scan.status),
        ));
    }
    let scan = load(&state.db, id).await?.ok_or_else(|| no_scan(id))?;
    Ok((StatusCode::ACCEPTED, Json(scan)))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindingsParams {
    /// `pass`, `fail`, `error` or `not_applicable`.
    #[param(pattern = "^(pass|fail|error|not_applicable)$")]
    status: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `informational`.
    #[param(pattern = "^(critical|high|medium|low|informational)$")]
    severity: Option<String>,
    /// A KB service id (`iam`, `s3`, `vpc`, …).
    service: Option<String>,
    region: Option<String>,
    /// A check id (`iam-root-mfa-enabled`).
    check: Option<String>,
    /// Only checks mapped to controls of this framework (`cis-aws`, `pci-dss@4.0.1`); another
    /// value is a 400 `invalid_filter` listing the loaded ones.
    #[param(min_length = 1)]
    framework: Option<String>,
    /// Only checks mapped to this control (`control:cis-aws@3.0.0:1.5`, or `1.5` with `framework`).
    control: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow, Clone)]
pub struct FindingView {
    /// The catalogue id of the check.
    pub check: String,
    pub title: String,
    pub service: String,
    pub region: String,
    pub resource: String,
    pub resource_type: String,
    #[schema(value_type = Status)]
    pub status: String,
    pub severity: String,
    pub reason: String,
    #[schema(value_type = Object)]
    pub evidence: Value,
    #[serde(with = "crate::web::timestamp")]
    pub first_seen: DateTime<Utc>,
}

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "informational"];

/// Appends `AND …` for each filter. The filters are optional and combine freely, which a
/// compile-time-checked statement cannot express without one statement per combination; every
/// value is a bind parameter.
async fn push_filters(
    db: &PgPool,
    q: &mut QueryBuilder<Postgres>,
    p: &FindingsParams,
) -> Result<(), ApiError> {
    if let Some(status) = &p.status {
        let allowed = Status::ALL.map(Status::as_str);
        if !allowed.contains(&status.as_str()) {
            return Err(invalid_filter("status", status, &allowed));
        }
        q.push(" AND f.status = ").push_bind(status.clone());
    }
    if let Some(severity) = &p.severity {
        if !SEVERITIES.contains(&severity.as_str()) {
            return Err(invalid_filter("severity", severity, &SEVERITIES));
        }
        q.push(" AND f.severity = ").push_bind(severity.clone());
    }
    if let Some(service) = &p.service {
        q.push(" AND f.service = ").push_bind(service.clone());
    }
    if let Some(region) = &p.region {
        q.push(" AND f.region = ").push_bind(region.clone());
    }
    if let Some(check) = &p.check {
        let slug = check.strip_prefix("check:kb:").unwrap_or(check);
        q.push(" AND f.check_id = ").push_bind(slug.to_string());
    }
    let framework = match &p.framework {
        Some(raw) => Some(crate::kb::api::framework_filter(db, raw).await?),
        None => None,
    };
    if framework.is_some() || p.control.is_some() {
        q.push(
            " AND f.check_id IN (SELECT substring(r.to_id FROM 10) FROM kb_relationships r \
             JOIN kb_controls c ON c.version_id = r.version_id AND c.id = r.from_id \
             WHERE r.version_id = (SELECT id FROM kb_versions WHERE active) AND r.type = 'maps_to' \
             AND coalesce(r.strength, 'direct') IN ('direct', 'partial')",
        );
        if let Some(framework) = &framework {
            q.push(" AND c.framework = ").push_bind(framework.clone());
        }
        if let Some(control) = &p.control {
            q.push(" AND (c.id = ")
                .push_bind(control.clone())
                .push(" OR lower(c.native_id) = lower(")
                .push_bind(control.clone())
                .push("))");
        }
        q.push(")");
    }
    Ok(())
}

const FINDING_COLUMNS: &str = "SELECT f.check_id AS check, coalesce(k.title, f.check_id) AS title, f.service, f.region, \
     f.resource_arn AS resource, coalesce(k.resource_type, '') AS resource_type, f.status, f.severity, f.reason, \
     f.evidence, f.first_seen FROM scan_findings f \
     LEFT JOIN kb_checks k ON k.version_id = (SELECT id FROM kb_versions WHERE active) AND k.id = 'check:kb:' || f.check_id \
     WHERE f.scan_id = ";

async fn require_scan(db: &PgPool, id: Uuid) -> Result<(), ApiError> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM scans WHERE id = $1) AS "e!""#,
        id
    )
    .fetch_one(db)
    .await?;
    if exists { Ok(()) } else { Err(no_scan(id)) }
}

/// Findings of a scan: filter by status, severity, service, region, check, framework or control.
#[utoipa::path(get, path = "/scans/{id}/findings", tag = "scans", params(("id" = Uuid, Path), FindingsParams),
    responses((status = 200, body = Page<FindingView>), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn list_findings(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<FindingsParams>, QueryRejection>,
) -> Result<Json<Page<FindingView>>, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 100, 1000)?;
    require_scan(&state.db, id).await?;
    let mut count = QueryBuilder::new("SELECT count(*) FROM scan_findings f WHERE f.scan_id = ");
    count.push_bind(id);
    push_filters(&state.db, &mut count, &params).await?;
    let total: i64 = count.build_query_scalar().fetch_one(&state.db).await?;
    let mut q = QueryBuilder::new(FINDING_COLUMNS);
    q.push_bind(id);
    push_filters(&state.db, &mut q, &params).await?;
    q.push(" ORDER BY array_position(ARRAY['fail','error','pass','not_applicable'], f.status), \
             array_position(ARRAY['critical','high','medium','low','informational'], f.severity), f.check_id, f.resource_arn, f.n LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let items: Vec<FindingView> = q.build_query_as().fetch_all(&state.db).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `json`, `csv`, `ocsf` (OCSF 1.1 Detection Finding, as Prowler writes) or `asff` (AWS
    /// Security Finding Format, as Security Hub reads).
    #[param(pattern = "^(json|csv|ocsf|asff)$")]
    format: String,
    #[param(pattern = "^(pass|fail|error|not_applicable)$")]
    status: Option<String>,
    #[param(pattern = "^(critical|high|medium|low|informational)$")]
    severity: Option<String>,
    service: Option<String>,
    region: Option<String>,
    check: Option<String>,
    #[param(min_length = 1)]
    framework: Option<String>,
    control: Option<String>,
}

/// Every finding of a scan (the same filters as the list) as one download.
#[utoipa::path(get, path = "/scans/{id}/export", tag = "scans", params(("id" = Uuid, Path), ExportParams),
    responses((status = 200, description = "the findings in the asked format", content(
        (serde_json::Value = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn export_findings(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let formats = ["json", "csv", "ocsf", "asff"];
    if !formats.contains(&params.format.as_str()) {
        return Err(invalid_filter("format", &params.format, &formats));
    }
    let scan = load(&state.db, id).await?.ok_or_else(|| no_scan(id))?;
    let filters = FindingsParams {
        status: params.status,
        severity: params.severity,
        service: params.service,
        region: params.region,
        check: params.check,
        framework: params.framework,
        control: params.control,
        ..Default::default()
    };
    let mut q = QueryBuilder::new(FINDING_COLUMNS);
    q.push_bind(id);
    push_filters(&state.db, &mut q, &filters).await?;
    q.push(" ORDER BY f.n");
    let findings: Vec<FindingView> = q.build_query_as().fetch_all(&state.db).await?;
    let account = scan.account.account_id.clone().unwrap_or_default();
    let (content_type, body) = super::export::render(&params.format, &scan, &account, &findings);
    let extension = if params.format == "csv" {
        "csv"
    } else {
        "json"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"scan-{id}-{}.{extension}\"",
                    params.format
                ),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ComplianceParams {
    /// `cis-aws`, `pci-dss@4.0.1`, … (no version: the newest release); another value is a 400
    /// `invalid_filter` listing the loaded ones.
    #[param(min_length = 1)]
    framework: String,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResult {
    pub check: String,
    /// Whether scans run this check.
    pub automated: bool,
    pub pass: i64,
    pub fail: i64,
    pub error: i64,
    pub not_applicable: i64,
}

#[derive(Serialize, ToSchema)]
pub struct FailedResource {
    pub check: String,
    pub resource: String,
    pub region: String,
    pub severity: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct ControlResult {
    pub id: String,
    pub native_id: String,
    pub title: String,
    /// `fail` (a mapped check failed), `pass` (mapped checks ran and passed), `manual` (no
    /// automated check maps to it: needs evidence from people) or `not_covered` (automated
    /// checks map to it but gave no verdict in this scan: not selected, errored or not applicable).
    pub status: String,
    pub checks: Vec<CheckResult>,
    /// The failing findings behind a `fail`.
    pub findings: Vec<FailedResource>,
}

#[derive(Serialize, ToSchema)]
pub struct Compliance {
    pub scan_id: Uuid,
    pub framework: String,
    /// Controls by status.
    pub summary: BTreeMap<String, i64>,
    pub controls: Vec<ControlResult>,
}

/// Per control of a framework: pass, fail, manual or not covered, with the findings behind it.
#[utoipa::path(get, path = "/scans/{id}/compliance", tag = "scans", params(("id" = Uuid, Path), ComplianceParams),
    responses((status = 200, body = Compliance), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn compliance(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<ComplianceParams>, QueryRejection>,
) -> Result<Json<Compliance>, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    require_scan(&state.db, id).await?;
    let framework = crate::kb::api::framework_filter(&state.db, &params.framework).await?;
    let rows = sqlx::query!(
        r#"SELECT c.id, c.native_id, c.title, substring(r.to_id FROM 10) AS check_id
           FROM kb_controls c
           LEFT JOIN kb_relationships r ON r.version_id = c.version_id AND r.from_id = c.id
                AND r.type = 'maps_to' AND coalesce(r.strength, 'direct') IN ('direct', 'partial')
           WHERE c.version_id = (SELECT id FROM kb_versions WHERE active) AND c.framework = $1
             AND NOT EXISTS (SELECT 1 FROM kb_controls child WHERE child.version_id = c.version_id AND child.parent_id = c.id)
           ORDER BY c.native_id COLLATE kb_natural, check_id"#,
        framework
    )
    .fetch_all(&state.db)
    .await?;
    let counts = sqlx::query!(
        r#"SELECT check_id, status, count(*) AS "n!" FROM scan_findings WHERE scan_id = $1 GROUP BY 1, 2"#,
        id
    )
    .fetch_all(&state.db)
    .await?;
    let mut by_check: HashMap<String, [i64; 4]> = HashMap::new();
    for row in counts {
        let slot = match row.status.as_str() {
            "pass" => 0,
            "fail" => 1,
            "error" => 2,
            _ => 3,
        };
        by_check.entry(row.check_id).or_default()[slot] += row.n;
    }
    let failed = sqlx::query!(
        "SELECT check_id, resource_arn, region, severity, reason FROM scan_findings
         WHERE scan_id = $1 AND status = 'fail' ORDER BY n",
        id
    )
    .fetch_all(&state.db)
    .await?;
    let mut failed_by_check: HashMap<String, Vec<FailedResource>> = HashMap::new();
    for f in failed {
        failed_by_check
            .entry(f.check_id.clone())
            .or_default()
            .push(FailedResource {
                check: f.check_id,
                resource: f.resource_arn,
                region: f.region,
                severity: f.severity,
                reason: f.reason,
            });
    }
    let implemented: HashSet<&'static str> = checks::implemented().collect();
    let mut controls: Vec<ControlResult> = Vec::new();
    for row in rows {
        if controls.last().is_none_or(|c| c.id != row.id) {
            controls.push(ControlResult {
                id: row.id.clone(),
                native_id: row.native_id.clone(),
                title: row.title.clone(),
                status: String::new(),
                checks: Vec::new(),
                findings: Vec::new(),
            });
        }
        let control = controls.last_mut().expect("pushed above");
        if let Some(check) = row.check_id {
            let [pass, fail, error, not_applicable] =
                by_check.get(&check).copied().unwrap_or_default();
            if let Some(found) = failed_by_check.get(&check) {
                control
                    .findings
                    .extend(found.iter().map(|f| FailedResource {
                        check: f.check.clone(),
                        resource: f.resource.clone(),
                        region: f.region.clone(),
                        severity: f.severity.clone(),
                        reason: f.reason.clone(),
                    }));
            }
            control.checks.push(CheckResult {
                automated: implemented.contains(check.as_str()),
                check,
                pass,
                fail,
                error,
                not_applicable,
            });
        }
    }
    let mut summary: BTreeMap<String, i64> = ["pass", "fail", "manual", "not_covered"]
        .into_iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for control in &mut controls {
        let automated = control.checks.iter().any(|c| c.automated);
        control.status = if control.checks.iter().any(|c| c.fail > 0) {
            "fail"
        } else if control.checks.iter().any(|c| c.pass > 0) {
            "pass"
        } else if !automated {
            "manual"
        } else {
            "not_covered"
        }
        .to_string();
        *summary.entry(control.status.clone()).or_default() += 1;
    }
    Ok(Json(Compliance {
        scan_id: id,
        framework,
        summary,
        controls,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The earlier scan to compare with (same account).
    #[param(value_type = Uuid)]
    against: String,
}

#[derive(Serialize, ToSchema)]
pub struct DiffItem {
    pub check: String,
    pub resource: String,
    pub region: String,
    pub severity: String,
    /// This scan's status for the resource (`null`: not evaluated in this scan).
    pub status: Option<String>,
    /// The earlier scan's status (`null`: not evaluated then).
    pub previous_status: Option<String>,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Diff {
    pub scan_id: Uuid,
    pub against: Uuid,
    /// Failing now, not failing in the earlier scan.
    pub new: Vec<DiffItem>,
    /// Failing in the earlier scan, not failing now.
    pub resolved: Vec<DiffItem>,
    /// Failing in both.
    pub unchanged: Vec<DiffItem>,
}

/// Failed findings that are new, resolved or unchanged since an earlier scan of the same account.
#[utoipa::path(get, path = "/scans/{id}/diff", tag = "scans", params(("id" = Uuid, Path), DiffParams),
    responses((status = 200, body = Diff), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem, description = "the scans read different accounts (`different_accounts`)")),
    security(("api_key" = [])))]
async fn diff(
    State(state): State<ScansState>,
    Auth(_caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<DiffParams>, QueryRejection>,
) -> Result<Json<Diff>, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let against = Uuid::parse_str(&params.against).map_err(|_| {
        ApiError::invalid(
            "invalid_scan_id",
            format!("against={:?} is not a scan id (a UUID)", params.against),
        )
    })?;
    let this = load(&state.db, id).await?.ok_or_else(|| no_scan(id))?;
    let other = load(&state.db, against)
        .await?
        .ok_or_else(|| no_scan(against))?;
    if this.account.account_id != other.account.account_id {
        return Err(bad(
            "different_accounts",
            format!(
                "scan {id} read account {} and scan {against} read account {}; compare scans of one account",
                this.account
                    .account_id
                    .as_deref()
                    .unwrap_or("(not started)"),
                other
                    .account
                    .account_id
                    .as_deref()
                    .unwrap_or("(not started)")
            ),
        ));
    }
    let rows = sqlx::query!(
        r#"WITH now AS (SELECT DISTINCT ON (check_id, resource_arn, region) check_id, resource_arn, region, status, severity, reason
                        FROM scan_findings WHERE scan_id = $1 ORDER BY check_id, resource_arn, region, (status = 'fail') DESC),
                was AS (SELECT DISTINCT ON (check_id, resource_arn, region) check_id, resource_arn, region, status, severity, reason
                        FROM scan_findings WHERE scan_id = $2 ORDER BY check_id, resource_arn, region, (status = 'fail') DESC)
           SELECT coalesce(n.check_id, w.check_id) AS "check!", coalesce(n.resource_arn, w.resource_arn) AS "resource!",
                  coalesce(n.region, w.region) AS "region!", coalesce(n.severity, w.severity) AS "severity!",
                  n.status AS "status?", w.status AS "previous_status?", coalesce(n.reason, w.reason) AS "reason!"
           FROM now n FULL JOIN was w USING (check_id, resource_arn, region)
           WHERE n.status = 'fail' OR w.status = 'fail'
           ORDER BY 1, 2, 3"#,
        id,
        against
    )
    .fetch_all(&state.db)
    .await?;
    let mut result = Diff {
        scan_id: id,
        against,
        new: Vec::new(),
        resolved: Vec::new(),
        unchanged: Vec::new(),
    };
    for r in rows {
        let now_fail = r.status.as_deref() == Some("fail");
        let was_fail = r.previous_status.as_deref() == Some("fail");
        let item = DiffItem {
            check: r.check,
            resource: r.resource,
            region: r.region,
            severity: r.severity,
            status: r.status,
            previous_status: r.previous_status,
            reason: r.reason,
        };
        match (now_fail, was_fail) {
            (true, true) => result.unchanged.push(item),
            (true, false) => result.new.push(item),
            _ => result.resolved.push(item),
        }
    }
    Ok(Json(result))
}
