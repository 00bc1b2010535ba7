//! The usage ledger: a billable action and its usage record commit in one transaction; trial
//! limits are enforced atomically; `Idempotency-Key` replays the first result without a second
//! charge; a charged action that later fails is refunded before anything is reported.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Dimension, LicenseStatus, Marketplace};
use crate::error::{ApiError, Problem};

/// A charged unit, returned so the caller can refund it if the action fails later.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageEvent {
    pub id: Uuid,
    pub dimension: Dimension,
    /// Trial units left after this one (`None` when no limit applies).
    pub remaining: Option<i64>,
}

fn refused(code: &str, dimension: Dimension, detail: String, next: &str) -> ApiError {
    ApiError::problem(
        Problem::new(StatusCode::PAYMENT_REQUIRED, code, detail)
            .with("dimension", dimension)
            .with("next_step", next),
    )
}

impl Marketplace {
    /// Checks the license and records one unit of `dimension` inside the caller's transaction.
    /// The trial counter row is locked until that transaction ends, so concurrent requests can
    /// never exceed a limit.
    pub async fn charge(
        &self,
        tx: &mut PgConnection,
        dimension: Dimension,
        action: &str,
        api_key_id: Option<Uuid>,
        resource_id: Option<&str>,
    ) -> Result<UsageEvent, ApiError> {
        #[cfg(feature = "bench-no-ledger")]
        {
            let _ = (tx, action, api_key_id, resource_id);
            return Ok(UsageEvent {
                id: Uuid::new_v4(),
                dimension,
                remaining: None,
            });
        }
        #[allow(unreachable_code)]
        let license = self.license().await;
        match license.status {
            LicenseStatus::Expired => {
                return Err(refused(
                    "license_expired",
                    dimension,
                    format!(
                        "{}; subscribe in AWS Marketplace to continue",
                        license.reason
                    ),
                    "Subscribe to Cloud Optimizer in AWS Marketplace; the license turns valid within the next license check, without a redeploy.",
                ));
            }
            LicenseStatus::Invalid => {
                return Err(refused(
                    "license_invalid",
                    dimension,
                    format!("the license is invalid: {}", license.reason),
                    "Check MARKETPLACE_PRODUCT_CODE and MARKETPLACE_PUBLIC_KEY and that the task runs on ECS, EKS or Fargate; GET /api/v1/license shows the reason.",
                ));
            }
            _ => {}
        }
        let limited = Marketplace::limits_apply(license.status);
        let mut remaining = None;
        if limited {
            let limit = dimension.trial_limit(&self.config);
            let used = sqlx::query_scalar!(
                "UPDATE usage_counters SET used = used + 1 WHERE dimension = $1 AND used + 1 <= $2 RETURNING used",
                dimension.as_str(),
                limit
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(used) = used else {
                return Err(ApiError::problem(
                    Problem::new(
                        StatusCode::PAYMENT_REQUIRED,
                        "trial_limit_reached",
                        format!("the trial allows {limit} {dimension} and all have been used"),
                    )
                    .with("dimension", dimension)
                    .with("limit", limit)
                    .with("next_step", "Subscribe to Cloud Optimizer in AWS Marketplace to lift trial limits; GET /api/v1/usage shows what is left."),
                ));
            };
            remaining = Some(limit - used);
        }
        let id = Uuid::new_v4();
        sqlx::query!(
            "INSERT INTO usage_events (id, dimension, occurred_at, task_id, api_key_id, action, resource_id, counted)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            id,
            dimension.as_str(),
            self.now(),
            &self.config.task_id,
            api_key_id,
            action,
            resource_id,
            limited
        )
        .execute(&mut *tx)
        .await?;
        Ok(UsageEvent {
            id,
            dimension,
            remaining,
        })
    }

    /// Gives a charged unit back when its action failed after committing. Only unreported units
    /// can be refunded (AWS takes no negative records); returns whether it was refunded.
    pub async fn refund(&self, event_id: Uuid) -> Result<bool, ApiError> {
        let mut tx = self.db.begin().await?;
        let refunded = self.refund_in(&mut tx, event_id).await?;
        tx.commit().await?;
        Ok(refunded)
    }

    /// [`refund`](Self::refund) in the caller's transaction, so the failure that justifies it
    /// and the refund commit together (a crash between them can neither lose the refund nor
    /// refund an action that did not fail).
    pub async fn refund_in(&self, tx: &mut PgConnection, event_id: Uuid) -> Result<bool, ApiError> {
        let refunded = sqlx::query!(
            "UPDATE usage_events SET refunded_at = $2
             WHERE id = $1 AND refunded_at IS NULL AND report_id IS NULL RETURNING dimension, counted",
            event_id,
            self.now()
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(event) = refunded.as_ref().filter(|e| e.counted) {
            sqlx::query!(
                "UPDATE usage_counters SET used = greatest(used - 1, 0) WHERE dimension = $1",
                event.dimension
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(refunded.is_some())
    }

    /// What follows a charge once its transaction committed: the usage metric and the
    /// `usage.threshold` announcements. Every billable action calls it after its commit.
    pub async fn charged(&self, event: &UsageEvent) {
        metrics::counter!("cloud_optimizer_usage_events_total", "dimension" => event.dimension.as_str())
            .increment(1);
        self.announce_thresholds(event).await;
    }

    /// Announces `usage.threshold` once when a trial dimension crosses 80 % and 100 %.
    async fn announce_thresholds(&self, event: &UsageEvent) {
        let Some(remaining) = event.remaining else {
            return;
        };
        let limit = event.dimension.trial_limit(&self.config);
        if limit <= 0 {
            return;
        }
        let used = limit - remaining;
        for percent in [80i64, 100] {
            if used * 100 < limit * percent {
                continue;
            }
            let inserted = sqlx::query!(
                "INSERT INTO usage_thresholds (dimension, percent, crossed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                event.dimension.as_str(),
                percent as i32,
                self.now()
            )
            .execute(&self.db)
            .await;
            if matches!(inserted, Ok(r) if r.rows_affected() == 1) {
                crate::events::publish_or_warn(
                    &self.db,
                    "usage.threshold",
                    serde_json::json!({"dimension": event.dimension, "percent": percent, "used": used, "limit": limit}),
                )
                .await;
            }
        }
    }
}

/// What `Idempotency-Key` found at the start of a request.
pub enum Idempotency {
    /// First time: go ahead, then call [`finish`] in the same transaction.
    Proceed,
    /// Seen before with the same request: return this response again.
    Replay(StatusCode, serde_json::Value),
}

pub fn request_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The request's `Idempotency-Key`, checked as [`validate_key`] does; `None` when it sent none.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be ASCII")
    })?;
    validate_key(key)?;
    Ok(Some(key.to_string()))
}

/// Marks the stored answer of a request retried with its `Idempotency-Key`.
pub fn mark_replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("idempotency-replayed", HeaderValue::from_static("true"));
    response
}

pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters (a UUID is a good choice)",
        ));
    }
    Ok(())
}

/// Claims `key` for this request inside `tx`. A concurrent request with the same key waits for
/// the first to commit and then replays its response.
pub async fn begin(
    tx: &mut PgConnection,
    api_key_id: Uuid,
    key: &str,
    hash: &str,
) -> Result<Idempotency, ApiError> {
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response_status, response_body)
         VALUES ($1, $2, $3, 0, 'null') ON CONFLICT DO NOTHING",
        api_key_id,
        key,
        hash
    )
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Idempotency::Proceed);
    }
    let stored = sqlx::query!(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
        api_key_id,
        key
    )
    .fetch_one(&mut *tx)
    .await?;
    let (stored_hash, status, body) = (
        stored.request_hash,
        stored.response_status,
        stored.response_body,
    );
    if stored_hash != hash {
        return Err(ApiError::problem(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )));
    }
    Ok(Idempotency::Replay(
        StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        body,
    ))
}

pub async fn finish(
    tx: &mut PgConnection,
    api_key_id: Uuid,
    key: &str,
    status: StatusCode,
    body: &serde_json::Value,
) -> Result<(), ApiError> {
    sqlx::query!(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE api_key_id = $1 AND key = $2",
        api_key_id,
        key,
        i32::from(status.as_u16()),
        body
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
