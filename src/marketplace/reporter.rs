//! The hourly MeterUsage reporter. For each dimension, the latest closed hour is claimed in
//! PostgreSQL by one replica (unique `(dimension, hour)`), its unreported events are attached to
//! the report and counted, a deterministic `ClientToken` is stored, and only then is AWS called;
//! the `MeteringRecordId` is stored after. A crash anywhere is recovered by resending the stored
//! token and quantity from the same AWS task, so no event is reported twice or dropped. Events
//! older than AWS's 6-hour window are folded into the current record, never dropped. A report
//! AWS may already hold and we cannot confirm is never re-billed: it becomes `unconfirmed` and is
//! shown to the operator (docs/MARKETPLACE.md, "Edge cases: never bill twice").
use std::time::Duration;

use aws_sdk_marketplacemetering::config::retry::RetryConfig;
use aws_sdk_marketplacemetering::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_marketplacemetering::primitives::DateTime as AwsDateTime;
use backon::Retryable;
use chrono::{DateTime, Timelike, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{Dimension, Marketplace};

/// An hour counts as closed this long after it ends, so transactions that began before the
/// boundary have committed.
const CLOSE_GRACE: Duration = Duration::from_secs(60);
/// A pending report claimed by a replica that stopped answering is taken over after this.
const STALE_CLAIM: Duration = Duration::from_secs(120);
/// AWS refuses records older than 6 hours.
const AWS_WINDOW_HOURS: i64 = 6;
/// MeterUsage calls per report and pass. The SDK's own retries are off so that the answer to
/// every call is known (a 5xx followed by a throttle must still count as "maybe accepted").
const ATTEMPTS: u32 = 3;
/// First key of the advisory lock a sender holds on a report while it decides, calls AWS and
/// records the answer. PostgreSQL drops it with the session, so a held lock means a live sender.
const SENDER_LOCK: i32 = 0x434f_4d55;
/// How long `usage flush` waits for a live sender to finish a report before counting it skipped.
const FLUSH_WAIT: &str = "45s";

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
    /// AWS may already hold these and we cannot confirm it: kept out of every later record.
    pub unconfirmed: usize,
    /// Pending reports this pass left alone: held by another live replica, being sent by
    /// another process right now, backing off, or in a dimension stopped by a permanent error.
    pub skipped: usize,
}

impl PassSummary {
    /// Reports this pass did not get confirmed by AWS (`usage flush` exits non-zero on any).
    pub fn left_unsent(&self) -> usize {
        self.retried_later + self.failed + self.unconfirmed + self.skipped
    }
}

pub fn client_token(dimension: Dimension, hour: DateTime<Utc>) -> String {
    format!("{}-{}", dimension.as_str(), hour.format("%Y%m%d%H"))
}

pub fn start_of_hour(t: DateTime<Utc>) -> DateTime<Utc> {
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

fn seconds(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

/// The second key of a report's sender lock (the two-`int4` advisory lock space).
fn lock_key(report_id: i64) -> i32 {
    i32::try_from(report_id.rem_euclid(i64::from(i32::MAX))).unwrap_or_default()
}

/// What one MeterUsage call concluded.
enum Answer {
    Accepted(String),
    /// Refused before processing (throttled, or never sent): AWS certainly holds nothing.
    NotAccepted(String),
    /// A 5xx, a timeout or no answer: AWS may or may not have recorded it.
    Unknown(String),
    /// `TimestampOutOfBoundsException`: AWS will never take this hour.
    TooOld(String),
    /// `DuplicateRequestException` or `IdempotencyConflictException`: AWS already holds a
    /// record for this hour or this token, which we cannot match with ours.
    AlreadyRecorded(String),
    /// Nothing can be reported for the dimension until an operator acts.
    Permanent(String),
}

/// A report being sent: what was claimed and stored before the first call.
struct Report {
    id: i64,
    dimension: Dimension,
    hour: DateTime<Utc>,
    quantity: i32,
    token: String,
}

impl Marketplace {
    /// One reporting pass over every dimension. Safe to run on many replicas at once.
    /// `force` (an operator's `usage flush`) resends every pending report now, whatever its
    /// claim age or backoff. Either way a report that another AWS task may already have sent is
    /// never resent from this one (tokens may be per task), see [`Self::process`].
    pub async fn report(&self, scope: Scope, force: bool) -> anyhow::Result<PassSummary> {
        let mut summary = PassSummary::default();
        if self.client.is_none() {
            return Ok(summary);
        }
        let identity = self.aws_identity().await.map_err(anyhow::Error::msg)?;
        for dimension in Dimension::ALL {
            let blocked = sqlx::query_scalar!(
                "SELECT reason FROM usage_dimension_blocks WHERE dimension = $1",
                dimension.as_str()
            )
            .fetch_optional(&self.db)
            .await?;
            let pending = sqlx::query_scalar!(
                "SELECT id FROM usage_reports WHERE dimension = $1 AND status = 'pending' ORDER BY hour",
                dimension.as_str()
            )
            .fetch_all(&self.db)
            .await?;
            if let Some(reason) = blocked {
                tracing::debug!(%dimension, reason, "reporting stopped for this dimension");
                summary.skipped += pending.len();
                continue;
            }
            for id in pending {
                self.process(id, &identity, force, &mut summary).await?;
            }
            if let Some(id) = self
                .claim(dimension, target_hour(self.now(), scope))
                .await?
            {
                self.process(id, &identity, force, &mut summary).await?;
            }
        }
        self.update_gauges().await;
        Ok(summary)
    }

    /// Announces this replica as serving (the last one to stop reports the current hour).
    pub async fn heartbeat(&self) -> sqlx::Result<()> {
        sqlx::query!(
            "INSERT INTO marketplace_tasks (task_id, last_seen) VALUES ($1, $2)
             ON CONFLICT (task_id) DO UPDATE SET last_seen = $2",
            &self.config.task_id,
            self.now()
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// How long a replica counts as serving after its last heartbeat.
    fn replica_window(&self) -> chrono::Duration {
        seconds(self.config.report_interval) * 2 + chrono::Duration::seconds(30)
    }

    /// Takes one pending report under its sender lock, decides, sends, records the answer.
    async fn process(
        &self,
        id: i64,
        identity: &str,
        force: bool,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        let mut conn = self.db.acquire().await?;
        let key = lock_key(id);
        let mut locked = try_lock(&mut conn, key).await?;
        if !locked && force && wait_for_lock(&mut conn, key).await? {
            locked = try_lock(&mut conn, key).await?;
        }
        if !locked {
            tracing::debug!(report = id, "another process is sending this report");
            summary.skipped += 1;
            return Ok(());
        }
        let result = self
            .process_locked(&mut conn, id, identity, force, summary)
            .await;
        let unlocked = sqlx::query_scalar!(
            r#"SELECT pg_advisory_unlock($1, $2) AS "unlocked!""#,
            SENDER_LOCK,
            key
        )
        .fetch_one(&mut *conn)
        .await;
        if !matches!(unlocked, Ok(true)) {
            // Never hand a connection that may still hold the lock back to the pool.
            conn.close_on_drop();
        }
        result
    }

    async fn process_locked(
        &self,
        conn: &mut PgConnection,
        id: i64,
        identity: &str,
        force: bool,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        let now = self.now();
        let Some(row) = sqlx::query!(
            r#"SELECT r.dimension, r.hour, r.quantity, r.client_token, r.status, r.task_id,
                      r.claimed_at, r.next_attempt_at, r.maybe_sent_by,
                      EXISTS (SELECT 1 FROM marketplace_tasks t
                              WHERE t.task_id = r.task_id AND t.last_seen > $2) AS "claimant_live!"
               FROM usage_reports r WHERE r.id = $1"#,
            id,
            now - self.replica_window()
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(());
        };
        if row.status != "pending" {
            return Ok(()); // Another sender settled it while we waited.
        }
        let Some(dimension) = Dimension::parse(&row.dimension) else {
            anyhow::bail!(
                "usage report {id} has an unknown dimension {:?}",
                row.dimension
            );
        };
        let report = Report {
            id,
            dimension,
            hour: row.hour,
            quantity: row.quantity,
            token: row.client_token,
        };
        let own = row.task_id == self.config.task_id;
        let stale = row.claimed_at < now - seconds(STALE_CLAIM);
        if !force && (!(own || stale) || row.next_attempt_at > now) {
            summary.skipped += 1; // Its claimant sends it, or it is backing off.
            return Ok(());
        }
        // Who may resend: AWS files records per task and may scope ClientTokens per task, so
        // only the AWS identity whose call may have been accepted can resend it safely.
        if let Some(other) = row.maybe_sent_by.as_deref().filter(|o| *o != identity) {
            if row.claimant_live && !own {
                tracing::info!(%dimension, hour = %report.hour, claimant = row.task_id, "usage report held by a live replica; it resends it");
                summary.skipped += 1;
                return Ok(());
            }
            let reason = format!(
                "a MeterUsage call from another AWS task ({other}) may have been accepted; resending from {identity} could bill twice"
            );
            self.unconfirm(conn, &report, &reason, summary).await?;
            return Ok(());
        }
        let maybe_sent = row.maybe_sent_by.is_some();
        if now - report.hour >= chrono::Duration::hours(AWS_WINDOW_HOURS) {
            if maybe_sent {
                let reason = "older than the 6-hour MeterUsage window after a call whose answer never came: AWS may hold it";
                self.unconfirm(conn, &report, reason, summary).await?;
            } else {
                // AWS certainly never took it: its events join the current record.
                self.fold(
                    conn,
                    &report,
                    "older than the 6-hour MeterUsage window",
                    summary,
                )
                .await?;
            }
            return Ok(());
        }
        // Recorded before the call: if we die waiting, the next sender knows AWS may hold it.
        sqlx::query!(
            "UPDATE usage_reports SET task_id = $2, claimed_at = $3, maybe_sent_by = $4 WHERE id = $1",
            id,
            &self.config.task_id,
            now,
            identity
        )
        .execute(&mut *conn)
        .await?;
        // Any unanswered attempt means AWS may hold the record, whatever the last one said.
        let saw_unknown = std::sync::atomic::AtomicBool::new(false);
        let answer = (|| async {
            match self.meter_usage(&report).await {
                retry @ (Answer::NotAccepted(_) | Answer::Unknown(_)) => Err(retry),
                other => Ok(other),
            }
        })
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(400))
                .with_max_times(ATTEMPTS as usize - 1),
        )
        .sleep(tokio::time::sleep)
        .notify(|answer: &Answer, _| {
            if let Answer::Unknown(_) = answer {
                saw_unknown.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .await
        .unwrap_or_else(|last| last);
        let uncertain = maybe_sent
            || saw_unknown.load(std::sync::atomic::Ordering::Relaxed)
            || matches!(answer, Answer::Unknown(_));
        self.settle(conn, &report, answer, uncertain, summary).await
    }

    async fn settle(
        &self,
        conn: &mut PgConnection,
        report: &Report,
        answer: Answer,
        uncertain: bool,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        let Report {
            id,
            dimension,
            hour,
            quantity,
            ref token,
        } = *report;
        let now = self.now();
        match answer {
            Answer::Accepted(record_id) => {
                sqlx::query!(
                    "UPDATE usage_reports SET status = 'sent', metering_record_id = $2, sent_at = $3,
                            attempts = attempts + 1, last_error = NULL WHERE id = $1",
                    id,
                    &record_id,
                    now
                )
                .execute(&mut *conn)
                .await?;
                count(dimension, "sent");
                tracing::info!(%dimension, hour = %hour, quantity, client_token = token, metering_record_id = record_id, "usage reported");
                summary.sent += 1;
            }
            Answer::NotAccepted(error) | Answer::Unknown(error) => {
                // Same token and quantity next time; back off up to the report interval. A
                // report no call of which can have been accepted is free for anyone again.
                sqlx::query!(
                    "UPDATE usage_reports SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = $3::timestamptz + make_interval(secs => least(power(2, attempts) * 5, $4)),
                            maybe_sent_by = CASE WHEN $5 THEN maybe_sent_by END
                     WHERE id = $1",
                    id,
                    &error,
                    now,
                    self.config.report_interval.as_secs_f64(),
                    uncertain
                )
                .execute(&mut *conn)
                .await?;
                count(dimension, "retry");
                tracing::warn!(%dimension, hour = %hour, quantity, client_token = token, error, "usage report failed; will retry");
                summary.retried_later += 1;
            }
            Answer::TooOld(error) if uncertain => {
                let reason =
                    format!("{error} after a call whose answer never came: AWS may hold it");
                self.unconfirm(conn, report, &reason, summary).await?;
            }
            Answer::TooOld(error) => self.fold(conn, report, &error, summary).await?,
            Answer::AlreadyRecorded(error) => {
                let reason = format!("{error}: AWS already holds a record for this hour or token");
                self.unconfirm(conn, report, &reason, summary).await?;
            }
            Answer::Permanent(error) => {
                sqlx::query!(
                    "INSERT INTO usage_dimension_blocks (dimension, reason, blocked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (dimension) DO UPDATE SET reason = $2, blocked_at = $3",
                    dimension.as_str(),
                    &error,
                    now
                )
                .execute(&mut *conn)
                .await?;
                tracing::error!(%dimension, hour = %hour, quantity, error, "usage reporting stopped for this dimension; events are kept");
                if uncertain {
                    let reason =
                        format!("{error} after a call whose answer never came: AWS may hold it");
                    self.unconfirm(conn, report, &reason, summary).await?;
                } else {
                    release(conn, id, "failed", &error).await?;
                    count(dimension, "failed");
                    summary.failed += 1;
                }
            }
        }
        Ok(())
    }

    /// AWS certainly never took this report: its events return to the pool and join the next
    /// record.
    async fn fold(
        &self,
        conn: &mut PgConnection,
        report: &Report,
        error: &str,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        release(conn, report.id, "expired", error).await?;
        count(report.dimension, "expired");
        tracing::warn!(dimension = %report.dimension, hour = %report.hour, quantity = report.quantity, error, "record AWS will not take; its events fold into the next record");
        summary.folded += 1;
        Ok(())
    }

    /// AWS may already bill this report and we cannot confirm it: its events stay attached
    /// (never re-billed) and the operator is told.
    async fn unconfirm(
        &self,
        conn: &mut PgConnection,
        report: &Report,
        reason: &str,
        summary: &mut PassSummary,
    ) -> anyhow::Result<()> {
        sqlx::query!(
            "UPDATE usage_reports SET status = 'unconfirmed', last_error = $2, attempts = attempts + 1
             WHERE id = $1 AND status = 'pending'",
            report.id,
            reason
        )
        .execute(&mut *conn)
        .await?;
        count(report.dimension, "unconfirmed");
        tracing::warn!(
            dimension = %report.dimension,
            hour = %report.hour,
            quantity = report.quantity,
            client_token = report.token,
            reason,
            "usage report unconfirmed: AWS may already have billed it, so it is not sent again; \
             compare with the AWS Marketplace seller reports (GET /api/v1/usage lists it)"
        );
        summary.unconfirmed += 1;
        Ok(())
    }

    /// Claims `(dimension, hour)` and attaches every unreported event up to the end of that hour
    /// (older ones fold in). `None` when there is nothing to report or another replica has it.
    async fn claim(
        &self,
        dimension: Dimension,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<Option<i64>> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let end = hour + chrono::Duration::hours(1);
        let any = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM usage_events WHERE dimension = $1 AND report_id IS NULL
                              AND refunded_at IS NULL AND occurred_at < $2) AS "any!""#,
            dimension.as_str(),
            end
        )
        .fetch_one(&mut *tx)
        .await?;
        if !any {
            return Ok(None);
        }
        let token = client_token(dimension, hour);
        let id = sqlx::query_scalar!(
            "INSERT INTO usage_reports (dimension, hour, quantity, client_token, task_id, claimed_at, next_attempt_at)
             VALUES ($1, $2, 0, $3, $4, $5, $5) ON CONFLICT DO NOTHING RETURNING id",
            dimension.as_str(),
            hour,
            &token,
            &self.config.task_id,
            now
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None); // Claimed elsewhere (or reported): later events go to a later hour.
        };
        let quantity = sqlx::query_scalar!(
            "WITH attached AS (
                UPDATE usage_events SET report_id = $1
                WHERE dimension = $2 AND report_id IS NULL AND refunded_at IS NULL AND occurred_at < $3
                RETURNING quantity)
             SELECT sum(quantity)::bigint FROM attached",
            id,
            dimension.as_str(),
            end
        )
        .fetch_one(&mut *tx)
        .await?;
        let quantity = i32::try_from(quantity.unwrap_or(0)).unwrap_or(i32::MAX);
        if quantity == 0 {
            return Ok(None); // Raced with a refund; the transaction rolls back.
        }
        sqlx::query!(
            "UPDATE usage_reports SET quantity = $2 WHERE id = $1",
            id,
            quantity
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn meter_usage(&self, report: &Report) -> Answer {
        let Some(client) = &self.client else {
            return Answer::NotAccepted("marketplace disabled".into());
        };
        let result = client
            .meter_usage()
            .product_code(self.config.product_code.clone().unwrap_or_default())
            .timestamp(AwsDateTime::from_secs(report.hour.timestamp()))
            .usage_dimension(report.dimension.as_str())
            .usage_quantity(report.quantity)
            .client_token(&report.token)
            .customize()
            .config_override(
                aws_sdk_marketplacemetering::config::Builder::default()
                    .retry_config(RetryConfig::disabled()),
            )
            .send()
            .await;
        match result {
            Ok(out) => Answer::Accepted(out.metering_record_id().unwrap_or_default().to_string()),
            Err(SdkError::ConstructionFailure(err)) => {
                Answer::NotAccepted(format!("request not sent: {err:?}"))
            }
            Err(err) => {
                let code = err.code().unwrap_or_default().to_string();
                let status = err.raw_response().map(|r| r.status().as_u16());
                let text = format!(
                    "{code}: {}",
                    err.message().unwrap_or("no response (network or timeout)")
                );
                match code.as_str() {
                    "ThrottlingException" => Answer::NotAccepted(text),
                    "TimestampOutOfBoundsException" => Answer::TooOld(text),
                    "DuplicateRequestException" | "IdempotencyConflictException" => {
                        Answer::AlreadyRecorded(text)
                    }
                    "" | "InternalServiceErrorException" => Answer::Unknown(text),
                    _ if status.is_some_and(|s| s >= 500) => Answer::Unknown(text),
                    _ => Answer::Permanent(text),
                }
            }
        }
    }

    pub async fn update_gauges(&self) {
        let rows = sqlx::query!(
            r#"SELECT e.dimension,
                      coalesce(sum(e.quantity) FILTER (WHERE r.id IS NULL OR r.status = 'pending'), 0)::bigint AS "pending!",
                      coalesce(sum(e.quantity) FILTER (WHERE r.status = 'unconfirmed'), 0)::bigint AS "unconfirmed!"
               FROM usage_events e LEFT JOIN usage_reports r ON r.id = e.report_id
               WHERE e.refunded_at IS NULL AND (r.id IS NULL OR r.status IN ('pending', 'unconfirmed'))
               GROUP BY e.dimension"#
        )
        .fetch_all(&self.db)
        .await
        .unwrap_or_default();
        for dimension in Dimension::ALL {
            let row = rows.iter().find(|r| r.dimension == dimension.as_str());
            let pending = row.map_or(0, |r| r.pending);
            let unconfirmed = row.map_or(0, |r| r.unconfirmed);
            metrics::gauge!("cloud_optimizer_usage_pending_events", "dimension" => dimension.as_str()).set(pending as f64);
            metrics::gauge!("cloud_optimizer_usage_unconfirmed_units", "dimension" => dimension.as_str()).set(unconfirmed as f64);
        }
    }

    /// True when no other replica has been seen recently: this one reports the current hour too.
    pub async fn is_last_replica(&self) -> bool {
        let others = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM marketplace_tasks WHERE task_id <> $1 AND last_seen > $2"#,
            &self.config.task_id,
            self.now() - self.replica_window()
        )
        .fetch_one(&self.db)
        .await
        .unwrap_or(1);
        others == 0
    }

    pub async fn leave(&self) {
        let _ = sqlx::query!(
            "DELETE FROM marketplace_tasks WHERE task_id = $1",
            &self.config.task_id
        )
        .execute(&self.db)
        .await;
    }
}

/// Every `outcome` label of `cloud_optimizer_usage_reports_total`.
pub const REPORT_OUTCOMES: [&str; 5] = ["sent", "retry", "failed", "expired", "unconfirmed"];

fn count(dimension: Dimension, outcome: &'static str) {
    debug_assert!(REPORT_OUTCOMES.contains(&outcome), "{outcome}");
    metrics::counter!("cloud_optimizer_usage_reports_total", "dimension" => dimension.as_str(), "outcome" => outcome).increment(1);
}

async fn try_lock(conn: &mut PgConnection, key: i32) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1, $2) AS "locked!""#,
        SENDER_LOCK,
        key
    )
    .fetch_one(conn)
    .await
}

/// Waits (bounded) until the live sender of a report lets go; false when it did not in time.
async fn wait_for_lock(conn: &mut PgConnection, key: i32) -> sqlx::Result<bool> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query_scalar!("SELECT set_config('lock_timeout', $1, true)", FLUSH_WAIT)
        .fetch_one(&mut *tx)
        .await?;
    let waited = sqlx::query!("SELECT pg_advisory_xact_lock($1, $2)", SENDER_LOCK, key)
        .execute(&mut *tx)
        .await;
    match waited {
        Ok(_) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Marks a report as never accepted and returns its events to the unreported pool.
async fn release(conn: &mut PgConnection, id: i64, status: &str, error: &str) -> sqlx::Result<()> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query!(
        "UPDATE usage_events SET report_id = NULL WHERE report_id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE usage_reports SET status = $2, last_error = $3, attempts = attempts + 1 WHERE id = $1",
        id,
        status,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Clears permanent-error blocks (after the operator fixed the cause) — used by `usage flush`.
pub async fn unblock_all(db: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query!("DELETE FROM usage_dimension_blocks")
        .execute(db)
        .await?
        .rows_affected())
}

/// Reports every `MARKETPLACE_REPORT_INTERVAL_SECONDS`; on shutdown reports what is pending,
/// including the current hour when this is the last replica.
pub async fn run(market: std::sync::Arc<Marketplace>, stop: CancellationToken) {
    let interval = market.config.report_interval;
    loop {
        // Only serving replicas heartbeat: a CLI flush must not keep the last replica from
        // reporting its current hour.
        if let Err(err) = market.heartbeat().await {
            tracing::warn!(error = %err, "replica heartbeat failed");
        }
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
