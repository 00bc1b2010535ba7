//! The hourly MeterUsage reporter. For each dimension, the latest closed hour is claimed in
//! PostgreSQL by one replica (unique `(dimension, hour)`), its unreported events are attached to
//! the report and counted, a deterministic `ClientToken` is stored, and only then is AWS called;
//! the `MeteringRecordId` is stored after. A crash anywhere is recovered by resending the stored
//! token and quantity, so no event is reported twice or dropped. Events older than AWS's 6-hour
//! window are folded into the current record, never dropped.

use std::time::Duration;

use aws_sdk_marketplacemetering::error::ProvideErrorMetadata;
use aws_sdk_marketplacemetering::primitives::DateTime as AwsDateTime;
use chrono::{DateTime, Timelike, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Dimension, Marketplace};

/// An hour counts as closed this long after it ends, so transactions that began before the
/// boundary have committed.
const CLOSE_GRACE: Duration = Duration::from_secs(60);
/// A pending report claimed by a replica that stopped answering is taken over after this.
const STALE_CLAIM: Duration = Duration::from_secs(120);
/// AWS refuses records older than 6 hours.
const AWS_WINDOW_HOURS: i64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ClosedHours,
    /// On shutdown of the last replica, or `usage flush --include-current-hour`.
    IncludingCurrentHour,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PassSummary {
    pub sent: usize,
    pub retried_later: usize,
    pub failed: usize,
    pub folded: usize,
}

pub fn client_token(dimension: Dimension, hour: DateTime<Utc>) -> String {
    format!("{}-{}", dimension.as_str(), hour.format("%Y%m%d%H"))
}

fn start_of_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// The hour a new report is for: the latest closed one, or the current one when asked.
pub fn target_hour(now: DateTime<Utc>, scope: Scope) -> DateTime<Utc> {
    match scope {
        Scope::IncludingCurrentHour => start_of_hour(now),
        Scope::ClosedHours => {
            start_of_hour(now - chrono::Duration::from_std(CLOSE_GRACE).unwrap_or_default())
                - chrono::Duration::hours(1)
        }
    }
}

enum Outcome {
    Sent(String),
    Transient(String),
    /// AWS will never accept this record (too old): fold its events into a later one.
    Expired(String),
    /// The dimension cannot be reported until an operator acts.
    Permanent(String),
}

impl Marketplace {
    /// One reporting pass over every dimension. Safe to run on many replicas at once.
    /// `force` (an operator's `usage flush`) resends due-later pending reports now. A report
    /// another live replica claimed is never resent (AWS may not deduplicate tokens across
    /// tasks); one whose claim went stale is taken over.
    pub async fn report(&self, scope: Scope, force: bool) -> anyhow::Result<PassSummary> {
        let mut summary = PassSummary::default();
        if self.client.is_none() {
            return Ok(summary);
        }
        self.heartbeat().await?;
        for dimension in Dimension::ALL {
            let blocked: Option<String> = sqlx::query_scalar(
                "SELECT reason FROM usage_dimension_blocks WHERE dimension = $1",
            )
            .bind(dimension.as_str())
            .fetch_optional(&self.db)
            .await?;
            if let Some(reason) = blocked {
                tracing::debug!(%dimension, reason, "reporting stopped for this dimension");
                continue;
            }
            self.resend_pending(dimension, force, &mut summary).await?;
            if let Some((id, hour, quantity, token)) = self
                .claim(dimension, target_hour(Utc::now(), scope))
                .await?
            {
                self.send(id, dimension, hour, quantity, &token, &mut summary)
                    .await?;
            }
        }
        self.update_gauges().await;
        Ok(summary)
    }

    async fn heartbeat(&self) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO marketplace_tasks (task_id) VALUES ($1)
             ON CONFLICT (task_id) DO UPDATE SET last_seen = now()",
        )
        .bind(&self.config.task_id)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Resends reports that were claimed but not confirmed: ours when due, or anyone's whose
    /// claim went stale (that replica crashed between AWS accepting and our commit, perhaps).
    async fn resend_pending(
        &self,
        dimension: Dimension,
        force: bool,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        let due: Vec<(i64, DateTime<Utc>, i32, String)> = sqlx::query_as(
            "UPDATE usage_reports SET task_id = $2, claimed_at = now()
             WHERE id IN (
                SELECT id FROM usage_reports
                WHERE dimension = $1 AND status = 'pending'
                  AND ($4 OR next_attempt_at <= now())
                  AND (task_id = $2 OR claimed_at < now() - make_interval(secs => $3))
                FOR UPDATE SKIP LOCKED)
             RETURNING id, hour, quantity, client_token",
        )
        .bind(dimension.as_str())
        .bind(&self.config.task_id)
        .bind(STALE_CLAIM.as_secs_f64())
        .bind(force)
        .fetch_all(&self.db)
        .await?;
        for (id, hour, quantity, token) in due {
            self.send(id, dimension, hour, quantity, &token, summary)
                .await?;
        }
        Ok(())
    }

    /// Claims `(dimension, hour)` and attaches every unreported event up to the end of that hour
    /// (older ones fold in). `None` when there is nothing to report or another replica has it.
    async fn claim(
        &self,
        dimension: Dimension,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<Option<(i64, DateTime<Utc>, i32, String)>> {
        let mut tx = self.db.begin().await?;
        let end = hour + chrono::Duration::hours(1);
        let any: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM usage_events WHERE dimension = $1 AND report_id IS NULL
                            AND refunded_at IS NULL AND occurred_at < $2)",
        )
        .bind(dimension.as_str())
        .bind(end)
        .fetch_one(&mut *tx)
        .await?;
        if !any {
            return Ok(None);
        }
        let token = client_token(dimension, hour);
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO usage_reports (dimension, hour, quantity, client_token, task_id)
             VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(dimension.as_str())
        .bind(hour)
        .bind(&token)
        .bind(&self.config.task_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None); // Claimed elsewhere (or reported): later events go to a later hour.
        };
        let quantity: Option<i64> = sqlx::query_scalar(
            "WITH attached AS (
                UPDATE usage_events SET report_id = $1
                WHERE dimension = $2 AND report_id IS NULL AND refunded_at IS NULL AND occurred_at < $3
                RETURNING quantity)
             SELECT sum(quantity)::bigint FROM attached",
        )
        .bind(id)
        .bind(dimension.as_str())
        .bind(end)
        .fetch_one(&mut *tx)
        .await?;
        let quantity = i32::try_from(quantity.unwrap_or(0)).unwrap_or(i32::MAX);
        if quantity == 0 {
            return Ok(None); // Raced with a refund; the transaction rolls back.
        }
        sqlx::query("UPDATE usage_reports SET quantity = $2 WHERE id = $1")
            .bind(id)
            .bind(quantity)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((id, hour, quantity, token)))
    }

    async fn send(
        &self,
        id: i64,
        dimension: Dimension,
        hour: DateTime<Utc>,
        quantity: i32,
        token: &str,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        let outcome = self.meter_usage(dimension, hour, quantity, token).await;
        let label = match &outcome {
            Outcome::Sent(_) => "sent",
            Outcome::Transient(_) => "retry",
            Outcome::Expired(_) => "expired",
            Outcome::Permanent(_) => "failed",
        };
        metrics::counter!("cloud_optimizer_usage_reports_total", "dimension" => dimension.as_str(), "outcome" => label).increment(1);
        match outcome {
            Outcome::Sent(record_id) => {
                sqlx::query(
                    "UPDATE usage_reports SET status = 'sent', metering_record_id = $2, sent_at = now(),
                            attempts = attempts + 1, last_error = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(&record_id)
                .execute(&self.db)
                .await?;
                tracing::info!(%dimension, hour = %hour, quantity, client_token = token, metering_record_id = record_id, "usage reported");
                summary.sent += 1;
            }
            Outcome::Transient(error) => {
                // Same token and quantity next time; back off up to the report interval.
                sqlx::query(
                    "UPDATE usage_reports SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = now() + make_interval(secs => least(power(2, attempts) * 5, $3))
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&error)
                .bind(self.config.report_interval.as_secs_f64())
                .execute(&self.db)
                .await?;
                tracing::warn!(%dimension, hour = %hour, quantity, client_token = token, error, "usage report failed; will retry");
                summary.retried_later += 1;
            }
            Outcome::Expired(error) => {
                self.release(id, "expired", &error).await?;
                tracing::warn!(%dimension, hour = %hour, quantity, error, "record too old for AWS; its events fold into the next record");
                summary.folded += 1;
            }
            Outcome::Permanent(error) => {
                self.release(id, "failed", &error).await?;
                sqlx::query("INSERT INTO usage_dimension_blocks (dimension, reason) VALUES ($1, $2) ON CONFLICT (dimension) DO UPDATE SET reason = $2, blocked_at = now()")
                    .bind(dimension.as_str())
                    .bind(&error)
                    .execute(&self.db)
                    .await?;
                tracing::error!(%dimension, hour = %hour, quantity, error, "usage reporting stopped for this dimension; events are kept");
                summary.failed += 1;
            }
        }
        Ok(())
    }

    /// Marks a report as never accepted and returns its events to the unreported pool.
    async fn release(&self, id: i64, status: &str, error: &str) -> sqlx::Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE usage_events SET report_id = NULL WHERE report_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE usage_reports SET status = $2, last_error = $3, attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn meter_usage(
        &self,
        dimension: Dimension,
        hour: DateTime<Utc>,
        quantity: i32,
        token: &str,
    ) -> Outcome {
        let Some(client) = &self.client else {
            return Outcome::Transient("marketplace disabled".into());
        };
        if Utc::now() - hour >= chrono::Duration::hours(AWS_WINDOW_HOURS) {
            // We never send what AWS must refuse; its events go to the current record.
            return Outcome::Expired("older than the 6-hour MeterUsage window".into());
        }
        let result = client
            .meter_usage()
            .product_code(self.config.product_code.clone().unwrap_or_default())
            .timestamp(AwsDateTime::from_secs(hour.timestamp()))
            .usage_dimension(dimension.as_str())
            .usage_quantity(quantity)
            .client_token(token)
            .send()
            .await;
        match result {
            Ok(out) => Outcome::Sent(out.metering_record_id().unwrap_or_default().to_string()),
            Err(err) => {
                let code = err.code().unwrap_or_default().to_string();
                let text = format!(
                    "{code}: {}",
                    err.message().unwrap_or("no response (network or timeout)")
                );
                match code.as_str() {
                    "" | "ThrottlingException" | "InternalServiceErrorException" => {
                        Outcome::Transient(text)
                    }
                    "TimestampOutOfBoundsException"
                    | "DuplicateRequestException"
                    | "IdempotencyConflictException" => Outcome::Expired(text),
                    _ => Outcome::Permanent(text),
                }
            }
        }
    }

    pub async fn update_gauges(&self) {
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT dimension, coalesce(sum(quantity), 0)::bigint FROM usage_events
             WHERE refunded_at IS NULL AND (report_id IS NULL OR report_id IN (SELECT id FROM usage_reports WHERE status = 'pending'))
             GROUP BY dimension",
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        for dimension in Dimension::ALL {
            let n = pending
                .iter()
                .find(|(d, _)| d == dimension.as_str())
                .map(|(_, n)| *n)
                .unwrap_or(0);
            metrics::gauge!("cloud_optimizer_usage_pending_events", "dimension" => dimension.as_str()).set(n as f64);
        }
    }

    /// True when no other replica has been seen recently: this one reports the current hour too.
    pub async fn is_last_replica(&self) -> bool {
        let window = self.config.report_interval.as_secs_f64() * 2.0 + 30.0;
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM marketplace_tasks WHERE task_id <> $1 AND last_seen > now() - make_interval(secs => $2)",
        )
        .bind(&self.config.task_id)
        .bind(window)
        .fetch_one(&self.db)
        .await
        .unwrap_or(1);
        others == 0
    }

    pub async fn leave(&self) {
        let _ = sqlx::query("DELETE FROM marketplace_tasks WHERE task_id = $1")
            .bind(&self.config.task_id)
            .execute(&self.db)
            .await;
    }
}

/// Clears permanent-error blocks (after the operator fixed the cause) — used by `usage flush`.
pub async fn unblock_all(db: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query("DELETE FROM usage_dimension_blocks")
        .execute(db)
        .await?
        .rows_affected())
}

/// Reports every `MARKETPLACE_REPORT_INTERVAL_SECONDS`; on shutdown reports what is pending,
/// including the current hour when this is the last replica.
pub async fn run(market: std::sync::Arc<Marketplace>, stop: CancellationToken) {
    let interval = market.config.report_interval;
    loop {
        if let Err(err) = market.report(Scope::ClosedHours, false).await {
            tracing::warn!(error = format!("{err:#}"), "usage reporting pass failed");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    let scope = if market.is_last_replica().await {
        Scope::IncludingCurrentHour
    } else {
        Scope::ClosedHours
    };
    match market.report(scope, false).await {
        Ok(summary) => tracing::info!(?summary, ?scope, "final usage report on shutdown"),
        Err(err) => tracing::warn!(
            error = format!("{err:#}"),
            "final usage report failed; the next replica will send it"
        ),
    }
    market.leave().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_deterministic_per_dimension_and_hour() {
        let hour = "2026-11-22T04:00:00Z".parse().unwrap();
        assert_eq!(
            client_token(Dimension::ChatQuestions, hour),
            "ChatQuestions-2026112204"
        );
    }

    #[test]
    fn closed_hour_waits_for_the_grace_period() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            target_hour(at("2026-11-22T11:00:30Z"), Scope::ClosedHours),
            at("2026-11-22T09:00:00Z")
        );
        assert_eq!(
            target_hour(at("2026-11-22T11:01:30Z"), Scope::ClosedHours),
            at("2026-11-22T10:00:00Z")
        );
        assert_eq!(
            target_hour(at("2026-11-22T11:01:30Z"), Scope::IncludingCurrentHour),
            at("2026-11-22T11:00:00Z")
        );
    }
}
