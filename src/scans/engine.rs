//! Running one scan: credentials, regions, one unit per (service, region), findings written as
//! each unit finishes, a lease renewed every second (which also carries a cancel from any
//! replica), and the end state with its event, metrics and log line.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::checks::CallLog;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ScansState;
use super::checks::{self, Finding, Service};

/// What the engine needs that is not stored: the external id lives only in memory.
pub struct Launch {
    pub id: Uuid,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// `None`: every enabled region.
    pub regions: Option<Vec<String>>,
    pub wanted: HashSet<&'static str>,
    /// The scan's `SecurityScans` unit, refunded when the scan judged nothing.
    pub usage_event_id: Uuid,
}

/// How a scan ended.
enum End {
    Succeeded,
    Cancelled,
    Interrupted(String),
    Failed(String),
}

/// Runs a scan to its end. Never panics on AWS trouble; every outcome is written to the row.
pub async fn run(state: ScansState, launch: Launch, cancel: CancellationToken) {
    let id = launch.id;
    let started = Instant::now();
    let claimed = sqlx::query!(
        "UPDATE scans SET status = 'running', started_at = now(), lease_owner = $2,
                lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND status = 'queued'",
        id,
        &state.replica,
        state.config.lease.as_secs_f64()
    )
    .execute(&state.db)
    .await;
    if !matches!(claimed, Ok(r) if r.rows_affected() == 1) {
        tracing::warn!(scan = %id, "scan was no longer queued when its run began");
        return;
    }
    metrics::gauge!("cloud_optimizer_scans_running").increment(1.0);
    let calls = Arc::new(CallLog::default());
    let done = Arc::new(AtomicU64::new(0));
    let heartbeat = tokio::spawn(heartbeat(
        state.clone(),
        id,
        cancel.clone(),
        calls.clone(),
        done.clone(),
    ));
    let outcome = tokio::select! {
        outcome = scan(&state, &launch, &calls, &done, &cancel) => outcome,
        () = cancel.cancelled() => Ok(()),
    };
    heartbeat.abort();
    let end = match outcome {
        Err(reason) => End::Failed(reason),
        Ok(()) if state.stop.is_cancelled() => {
            End::Interrupted("the server stopped during the scan".into())
        }
        Ok(()) if cancel.is_cancelled() => End::Cancelled,
        Ok(()) => End::Succeeded,
    };
    metrics::gauge!("cloud_optimizer_scans_running").decrement(1.0);
    finish(&state, &launch, end, started.elapsed(), &calls).await;
}

/// Renews the lease every second and follows a cancel made on any replica.
async fn heartbeat(
    state: ScansState,
    id: Uuid,
    cancel: CancellationToken,
    calls: Arc<CallLog>,
    done: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_progress_event: Option<Instant> = None;
    let mut last_done = 0;
    loop {
        tick.tick().await;
        let progress = done.load(Ordering::Relaxed);
        let renewed = sqlx::query!(
            r#"UPDATE scans SET lease_expires_at = now() + make_interval(secs => $3),
                      aws_calls = $4, progress_done = $5
               WHERE id = $1 AND lease_owner = $2 AND status = 'running'
               RETURNING cancel_requested, progress_total"#,
            id,
            &state.replica,
            state.config.lease.as_secs_f64(),
            calls.total() as i64,
            progress as i32
        )
        .fetch_optional(&state.db)
        .await;
        match renewed {
            Ok(Some(row)) => {
                if row.cancel_requested {
                    cancel.cancel();
                    return;
                }
                // At most one progress event a second, and only when something moved.
                if progress != last_done
                    && last_progress_event.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    last_done = progress;
                    last_progress_event = Some(Instant::now());
                    crate::events::publish_or_warn(
                        &state.db,
                        "scan.progress",
                        json!({"id": id, "done": progress, "total": row.progress_total}),
                    )
                    .await;
                }
            }
            // The row is gone (deleted) or another replica declared it interrupted.
            Ok(None) => {
                cancel.cancel();
                return;
            }
            Err(err) => tracing::warn!(scan = %id, error = %err, "could not renew the scan lease"),
        }
    }
}

/// The scan proper; `Err` is a failure before any check could run (credentials, regions).
async fn scan(
    state: &ScansState,
    launch: &Launch,
    calls: &Arc<CallLog>,
    done: &Arc<AtomicU64>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let base = state.sdk().await;
    let base = base
        .to_builder()
        .retry_config(RetryConfig::adaptive().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(state.config.call_timeout)
                .operation_attempt_timeout(state.config.call_timeout)
                .connect_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    let sdk = match &launch.role_arn {
        None => base,
        Some(role) => assume_role(&base, role, launch.external_id.as_deref()).await?,
    };
    let identity = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            format!(
                "the credentials do not work (sts:GetCallerIdentity): {}",
                checks::aws_error(&e)
            )
        })?;
    calls.record("STS", "GetCallerIdentity");
    let account_id = identity
        .account
        .ok_or("sts:GetCallerIdentity returned no account")?;
    let home = sdk
        .region()
        .map(|r| r.as_ref().to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let regions = match &launch.regions {
        Some(regions) => regions.clone(),
        None => enabled_regions(&sdk)
            .await
            .inspect(|_| calls.record("EC2", "DescribeRegions"))
            .map_err(|e| format!("cannot list the account's enabled regions: {e}"))?,
    };
    let wanted = Arc::new(launch.wanted.clone());
    let units: Vec<(&'static Service, String)> = checks::services()
        .iter()
        .filter(|s| s.checks.iter().any(|c| wanted.contains(c)))
        .flat_map(|s| {
            if s.global {
                vec![(s, home.clone())]
            } else {
                regions.iter().map(|r| (s, r.clone())).collect()
            }
        })
        .collect();
    sqlx::query!(
        "UPDATE scans SET account_id = $2, regions = $3, progress_total = $4 WHERE id = $1",
        launch.id,
        &account_id,
        &regions,
        units.len() as i32
    )
    .execute(&state.db)
    .await
    .map_err(|e| format!("database: {e}"))?;
    crate::events::publish_or_warn(
        &state.db,
        "scan.started",
        json!({"id": launch.id, "account_id": account_id, "regions": regions, "units": units.len()}),
    )
    .await;

    let next_n = Arc::new(std::sync::atomic::AtomicI32::new(0));
    // Boxed one by one: each unit owns what it needs, so the stream is `'static` and `Send`.
    type Unit = BoxFuture<'static, (&'static Service, String, Vec<Finding>)>;
    let units: Vec<Unit> = units
        .into_iter()
        .map(|(service, region)| {
            let sdk = sdk.clone();
            let account_id = account_id.clone();
            let wanted = wanted.clone();
            let calls = calls.clone();
            Box::pin(async move {
                let findings =
                    checks::run_service(service, &sdk, &region, &account_id, wanted, calls).await;
                (service, region, findings)
            }) as Unit
        })
        .collect();
    let mut runs = futures_util::stream::iter(units).buffer_unordered(state.config.concurrency);
    while let Some((service, region, findings)) = tokio::select! {
        next = runs.next() => next,
        () = cancel.cancelled() => None,
    } {
        record_errors_metric(service, &findings);
        if let Err(err) = store(state, launch.id, &account_id, &findings, &next_n).await {
            tracing::error!(scan = %launch.id, service = service.id, %region, error = %err,
                "could not store findings");
            return Err(format!("could not store findings: {err}"));
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn record_errors_metric(service: &Service, findings: &[Finding]) {
    let errors = findings
        .iter()
        .filter(|f| f.status == checks::Status::Error)
        .count();
    if errors > 0 {
        metrics::counter!("cloud_optimizer_scan_aws_errors_total", "service" => service.id)
            .increment(errors as u64);
    }
}

async fn assume_role(
    base: &SdkConfig,
    role: &str,
    external_id: Option<&str>,
) -> Result<SdkConfig, String> {
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("cloud-optimizer-scan")
        .configure(base);
    if let Some(external_id) = external_id {
        provider = provider.external_id(external_id);
    }
    let provider = provider.build().await;
    // Assume once now so a role that cannot be assumed fails the scan before any check.
    use aws_credential_types::provider::ProvideCredentials;
    provider
        .provide_credentials()
        .await
        .map_err(|e| format!("cannot assume {role}: {}", error_chain(&e)))?;
    Ok(base
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn enabled_regions(sdk: &SdkConfig) -> Result<Vec<String>, String> {
    let out = aws_sdk_ec2::Client::new(sdk)
        .describe_regions()
        .send()
        .await
        .map_err(|e| checks::aws_error(&e))?;
    let mut regions: Vec<String> = out
        .regions
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r.opt_in_status
                .as_deref()
                .is_none_or(|s| s != "not-opted-in")
        })
        .filter_map(|r| r.region_name)
        .collect();
    regions.sort();
    if regions.is_empty() {
        return Err("ec2:DescribeRegions listed no region".into());
    }
    Ok(regions)
}

/// Writes one unit's findings in one statement. Severity comes from the KB's check; first seen
/// is the earliest scan of this account that gave the same status on the same resource.
async fn store(
    state: &ScansState,
    scan: Uuid,
    account_id: &str,
    findings: &[Finding],
    next_n: &std::sync::atomic::AtomicI32,
) -> sqlx::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let first = next_n.fetch_add(findings.len() as i32, Ordering::Relaxed);
    let n: Vec<i32> = (first..first + findings.len() as i32).collect();
    let check: Vec<&str> = findings.iter().map(|f| f.check).collect();
    let service: Vec<&str> = findings.iter().map(|f| f.service).collect();
    let region: Vec<&str> = findings.iter().map(|f| f.region.as_str()).collect();
    let resource: Vec<&str> = findings.iter().map(|f| f.resource.as_str()).collect();
    let status: Vec<&str> = findings.iter().map(|f| f.status.as_str()).collect();
    let reason: Vec<&str> = findings.iter().map(|f| f.reason.as_str()).collect();
    let evidence: Vec<serde_json::Value> = findings.iter().map(|f| f.evidence.clone()).collect();
    sqlx::query!(
        r#"INSERT INTO scan_findings (scan_id, n, check_id, service, region, resource_arn, status,
                                      severity, reason, evidence, first_seen)
           SELECT $1, u.n, u.check_id,
                  coalesce(k.services[1], u.service), u.region, u.resource_arn, u.status,
                  coalesce(k.severity, 'medium'), u.reason, u.evidence,
                  coalesce((SELECT min(p.first_seen) FROM scan_findings p JOIN scans s ON s.id = p.scan_id
                            WHERE s.account_id = $2 AND p.check_id = u.check_id
                              AND p.resource_arn = u.resource_arn AND p.region = u.region
                              AND p.status = u.status), now())
           FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[])
                AS u(n, check_id, service, region, resource_arn, status, reason, evidence)
           LEFT JOIN kb_checks k ON k.version_id = (SELECT id FROM kb_versions WHERE active)
                                AND k.id = 'check:kb:' || u.check_id"#,
        scan,
        account_id,
        &n,
        &check as &[&str],
        &service as &[&str],
        &region as &[&str],
        &resource as &[&str],
        &status as &[&str],
        &reason as &[&str],
        &evidence
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Writes the end state, refunds a scan that evaluated nothing, announces and logs it.
async fn finish(state: &ScansState, launch: &Launch, end: End, elapsed: Duration, log: &CallLog) {
    let calls = log.total();
    let operations = serde_json::to_value(log.by_operation()).unwrap_or_default();
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'pass') AS "pass!",
                  count(*) FILTER (WHERE status = 'fail') AS "fail!",
                  count(*) FILTER (WHERE status = 'error') AS "error!",
                  count(*) FILTER (WHERE status = 'not_applicable') AS "not_applicable!",
                  (SELECT reason FROM scan_findings WHERE scan_id = $1 AND status = 'error' ORDER BY n LIMIT 1) AS first_error
           FROM scan_findings WHERE scan_id = $1"#,
        launch.id
    )
    .fetch_one(&state.db)
    .await;
    let (pass, fail, error, na, first_error) = match &counts {
        Ok(c) => (
            c.pass,
            c.fail,
            c.error,
            c.not_applicable,
            c.first_error.clone(),
        ),
        Err(_) => (0, 0, 0, 0, None),
    };
    let evaluated = pass + fail + na;
    let end = match end {
        // Every check errored: nothing was learnt about the account, so it is not a scan to bill.
        End::Succeeded if evaluated == 0 && error > 0 => End::Failed(format!(
            "no check could be evaluated; the first error: {}",
            first_error.unwrap_or_default()
        )),
        other => other,
    };
    let (status, reason) = match &end {
        End::Succeeded => ("succeeded", None),
        End::Cancelled => ("cancelled", None),
        End::Interrupted(reason) => ("interrupted", Some(reason.clone())),
        End::Failed(reason) => ("failed", Some(reason.clone())),
    };
    // The end state and the refund of a scan that judged nothing commit together: a crash
    // between them would otherwise bill a failed scan.
    let refundable = evaluated == 0 && matches!(end, End::Failed(_) | End::Interrupted(_));
    let written: Result<bool, crate::error::ApiError> = async {
        let mut tx = state.db.begin().await?;
        let updated = sqlx::query!(
            "UPDATE scans SET status = $2, error = $3, finished_at = now(), aws_calls = $4, aws_operations = $5,
                    progress_done = CASE WHEN $2 = 'succeeded' THEN progress_total ELSE progress_done END,
                    lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND status = 'running'",
            launch.id,
            status,
            reason,
            calls as i64,
            operations
        )
        .execute(&mut *tx)
        .await?;
        let refunded = refundable
            && updated.rows_affected() == 1
            && state.market.refund_in(&mut tx, launch.usage_event_id).await?;
        tx.commit().await?;
        Ok(refunded)
    }
    .await;
    let refunded = written.unwrap_or_else(|err| {
        tracing::error!(scan = %launch.id, error = %err, "could not write the end of the scan");
        false
    });
    let kind = match end {
        End::Succeeded | End::Cancelled => "scan.finished",
        End::Failed(_) | End::Interrupted(_) => "scan.failed",
    };
    crate::events::publish_or_warn(
        &state.db,
        kind,
        json!({"id": launch.id, "status": status, "error": reason, "refunded": refunded,
               "counts": {"pass": pass, "fail": fail, "error": error, "not_applicable": na}}),
    )
    .await;
    metrics::histogram!("cloud_optimizer_scan_duration_seconds", "status" => status)
        .record(elapsed.as_secs_f64());
    metrics::counter!("cloud_optimizer_scans_total", "status" => status).increment(1);
    tracing::info!(
        scan = %launch.id,
        status,
        error = reason.as_deref().unwrap_or(""),
        duration_ms = elapsed.as_millis() as u64,
        aws_calls = calls,
        pass,
        fail,
        error_findings = error,
        not_applicable = na,
        refunded,
        "scan ended"
    );
    if let Ok(rows) = sqlx::query!(
        "SELECT status, severity, count(*) AS \"n!\" FROM scan_findings WHERE scan_id = $1 GROUP BY 1, 2",
        launch.id
    )
    .fetch_all(&state.db)
    .await
    {
        for row in rows {
            metrics::counter!("cloud_optimizer_scan_findings_total",
                "status" => row.status, "severity" => row.severity)
            .increment(row.n as u64);
        }
    }
}
