//! AWS account security scans: the catalogue's checks run live against the account the product
//! runs in, or any account that lets us assume a role, with findings mapped to every framework
//! through the KB. Billed as `SecurityScans` through the usage ledger.
//!
//! Owns: the `scans` and `scan_findings` tables, `/api/v1/scans…`, the engine (one task per
//! running scan on the replica that accepted it), the lease sweeper that marks scans of a dead
//! replica `interrupted`, and the optional schedule (`SCAN_SCHEDULE`).

pub mod api;
pub mod checks;
pub mod engine;
pub mod export;

pub use api::router;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use axum::http::StatusCode;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::ScansConfig;
use crate::error::{ApiError, Problem};
use crate::marketplace::ledger::UsageEvent;
use crate::marketplace::{Dimension, Marketplace};

#[derive(Clone)]
pub struct ScansState {
    pub db: PgPool,
    pub config: Arc<ScansConfig>,
    pub market: Arc<Marketplace>,
    /// This process's lease owner id.
    pub replica: String,
    /// Cancel tokens of the scans running in this process.
    running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    /// Process shutdown: running scans end as `interrupted`.
    pub stop: CancellationToken,
    /// The running scans' tasks, awaited (bounded) at shutdown so each writes its end.
    tasks: TaskTracker,
    sdk: Arc<OnceCell<SdkConfig>>,
}

impl ScansState {
    pub fn new(
        db: PgPool,
        config: ScansConfig,
        market: Arc<Marketplace>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            config: Arc::new(config),
            market,
            replica: Uuid::new_v4().to_string(),
            running: Default::default(),
            stop,
            tasks: TaskTracker::new(),
            sdk: Default::default(),
        }
    }

    /// The deployment's own AWS configuration (the standard chain: the ECS task role, the
    /// environment, a profile), loaded on first use.
    pub async fn sdk(&self) -> SdkConfig {
        self.sdk.get_or_init(crate::aws::sdk_config).await.clone()
    }

    /// Starts the engine for an accepted scan in this process.
    pub fn launch(&self, launch: engine::Launch) {
        let cancel = self.stop.child_token();
        self.running
            .lock()
            .expect("scan registry")
            .insert(launch.id, cancel.clone());
        let state = self.clone();
        self.tasks.spawn(async move {
            let id = launch.id;
            engine::run(state.clone(), launch, cancel).await;
            state.running.lock().expect("scan registry").remove(&id);
        });
    }

    /// Cancels a scan running in this process at once (other replicas see the flag within a
    /// second through their lease renewal).
    fn cancel_local(&self, id: Uuid) {
        if let Some(token) = self.running.lock().expect("scan registry").get(&id) {
            token.cancel();
        }
    }
}

/// At shutdown: the running scans stop their AWS calls and end as `interrupted`; waits for them
/// to write that, at most `within` (the lease sweep of another replica covers the rest).
pub async fn drain(state: ScansState, within: Duration) {
    state.stop.cancelled().await;
    state.tasks.close();
    if tokio::time::timeout(within, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("scans did not record their end before shutdown");
    }
}

/// Which account a scan reads.
#[derive(Debug, Clone)]
pub enum Account {
    /// The deployment's own credentials.
    Own,
    Role {
        arn: String,
        external_id: Option<String>,
    },
}

impl Account {
    /// The key of "one running scan per account".
    fn key(&self) -> String {
        match self {
            Account::Own => "self".into(),
            Account::Role { arn, .. } => role_account(arn).unwrap_or(arn).to_string(),
        }
    }
}

/// The 12-digit account of `arn:aws:iam::123456789012:role/name`.
pub fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    (parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > 5)
        .then(|| parts[4])
}

/// A validated scan request.
pub struct NewScan {
    pub account: Account,
    /// `None`: every enabled region.
    pub regions: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub checks: Option<Vec<String>>,
    pub frameworks: Option<Vec<String>>,
    pub wanted: HashSet<&'static str>,
    pub trigger: &'static str,
    pub api_key_id: Option<Uuid>,
}

/// Inserts the scan and charges its unit inside `tx`; the caller commits, then launches.
/// A running scan of the same account is a 409 naming it.
pub async fn insert(
    state: &ScansState,
    tx: &mut sqlx::PgConnection,
    scan: &NewScan,
) -> Result<(Uuid, UsageEvent), ApiError> {
    let key = scan.account.key();
    let active = sqlx::query_scalar!(
        "SELECT id FROM scans WHERE account_key = $1 AND status IN ('queued', 'running')",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(active) = active {
        return Err(already_running(active));
    }
    let id = Uuid::new_v4();
    let usage = state
        .market
        .charge(
            tx,
            Dimension::SecurityScans,
            "scan",
            scan.api_key_id,
            Some(&id.to_string()),
        )
        .await?;
    let role_arn = match &scan.account {
        Account::Own => None,
        Account::Role { arn, .. } => Some(arn.clone()),
    };
    let regions_requested = match &scan.regions {
        Some(r) => serde_json::json!(r),
        None => serde_json::json!("enabled"),
    };
    let inserted = sqlx::query!(
        "INSERT INTO scans (id, account_key, role_arn, regions_requested, services, checks, frameworks,
                            status, trigger, api_key_id, usage_event_id, lease_expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, now() + make_interval(secs => $11), now())",
        id,
        key,
        role_arn,
        regions_requested,
        scan.services.as_deref(),
        scan.checks.as_deref(),
        scan.frameworks.as_deref(),
        scan.trigger,
        scan.api_key_id,
        usage.id,
        state.config.lease.as_secs_f64()
    )
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => Ok((id, usage)),
        // Two requests raced past the check above: the index decides, the loser charges nothing
        // (its transaction rolls back).
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("scans_one_active_per_account") =>
        {
            Err(ApiError::problem(Problem::new(
                StatusCode::CONFLICT,
                "scan_already_running",
                "a scan of this account is already queued or running; wait for it or cancel it",
            )))
        }
        Err(err) => Err(err.into()),
    }
}

fn already_running(active: Uuid) -> ApiError {
    ApiError::problem(
        Problem::new(
            StatusCode::CONFLICT,
            "scan_already_running",
            format!("scan {active} of this account is already queued or running; wait for it or cancel it (POST /api/v1/scans/{active}/cancel)"),
        )
        .with("scan_id", active),
    )
}

/// Marks scans whose replica stopped renewing the lease as `interrupted` (every replica runs
/// this; the update is idempotent). A scan interrupted before any verdict is refunded.
pub async fn sweep_loop(state: ScansState) {
    let every = (state.config.lease / 2).max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = state.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = sweep(&state).await {
            tracing::warn!(error = %err, "scan lease sweep failed");
        }
    }
}

async fn sweep(state: &ScansState) -> Result<(), ApiError> {
    let lost = sqlx::query!(
        r#"UPDATE scans SET status = 'interrupted', finished_at = now(), lease_owner = NULL,
                  error = 'the replica running this scan stopped before it finished; start a new scan'
           WHERE status IN ('queued', 'running') AND lease_expires_at < now()
           RETURNING id, usage_event_id,
                     EXISTS (SELECT 1 FROM scan_findings f WHERE f.scan_id = scans.id AND f.status <> 'error') AS "evaluated!""#
    )
    .fetch_all(&state.db)
    .await?;
    for scan in lost {
        let mut refunded = false;
        if !scan.evaluated
            && let Some(event) = scan.usage_event_id
        {
            refunded = state.market.refund(event).await.unwrap_or(false);
        }
        tracing::warn!(scan = %scan.id, refunded, "scan interrupted: its replica stopped renewing the lease");
        metrics::counter!("cloud_optimizer_scans_total", "status" => "interrupted").increment(1);
        crate::events::publish_or_warn(
            &state.db,
            "scan.failed",
            serde_json::json!({"id": scan.id, "status": "interrupted", "refunded": refunded,
                "error": "the replica running this scan stopped before it finished"}),
        )
        .await;
    }
    Ok(())
}

/// `SCAN_SCHEDULE`: scans the own account (every enabled region, every check) when the last
/// scheduled scan is older than the period. Replicas agree through an advisory lock and the
/// last scheduled scan's time, so one scan starts per period however many replicas run.
pub async fn schedule_loop(state: ScansState) {
    let Some(every) = state.config.schedule else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = state.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match scheduled_scan(&state, every).await {
            Ok(Some(id)) => tracing::info!(scan = %id, "scheduled scan started"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = ?err, "scheduled scan not started"),
        }
    }
}

async fn scheduled_scan(state: &ScansState, every: Duration) -> Result<Option<Uuid>, ApiError> {
    let mut tx = state.db.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('co_scan_schedule'))")
        .execute(&mut *tx)
        .await?;
    let due = sqlx::query_scalar!(
        r#"SELECT coalesce(max(created_at) < now() - make_interval(secs => $1), true) AS "due!"
           FROM scans WHERE trigger = 'schedule'"#,
        every.as_secs_f64()
    )
    .fetch_one(&mut *tx)
    .await?;
    if !due {
        return Ok(None);
    }
    let scan = NewScan {
        account: Account::Own,
        regions: None,
        services: None,
        checks: None,
        frameworks: None,
        wanted: checks::implemented().collect(),
        trigger: "schedule",
        api_key_id: None,
    };
    let (id, usage) = insert(state, &mut tx, &scan).await?;
    tx.commit().await?;
    state.market.charged(&usage).await;
    state.launch(engine::Launch {
        id,
        role_arn: None,
        external_id: None,
        regions: None,
        wanted: scan.wanted,
        usage_event_id: usage.id,
    });
    Ok(Some(id))
}

/// Asks a scan to stop: at once when it runs here, within a second on another replica.
pub async fn request_cancel(state: &ScansState, id: Uuid) -> Result<bool, ApiError> {
    let updated = sqlx::query!(
        "UPDATE scans SET cancel_requested = true WHERE id = $1 AND status IN ('queued', 'running')",
        id
    )
    .execute(&state.db)
    .await?;
    state.cancel_local(id);
    Ok(updated.rows_affected() == 1)
}

pub fn export_initial_metrics() {
    metrics::gauge!("cloud_optimizer_scans_running").increment(0.0);
    for status in ["succeeded", "failed", "cancelled", "interrupted"] {
        metrics::counter!("cloud_optimizer_scans_total", "status" => status).increment(0);
        // Registering the histogram is enough: it renders with empty buckets.
        let _ = metrics::histogram!("cloud_optimizer_scan_duration_seconds", "status" => status);
    }
    for service in checks::services() {
        metrics::counter!("cloud_optimizer_scan_aws_calls_total", "service" => service.id)
            .increment(0);
        metrics::counter!("cloud_optimizer_scan_aws_errors_total", "service" => service.id)
            .increment(0);
    }
    for status in checks::Status::ALL {
        for severity in ["critical", "high", "medium", "low"] {
            metrics::counter!("cloud_optimizer_scan_findings_total",
                "status" => status.as_str(), "severity" => severity)
            .increment(0);
        }
    }
}
