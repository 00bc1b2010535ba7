//! One analysis: read the file, run the analysers on a blocking thread under a deadline, with an
//! LLM configured enrich a prose document's findings (`enrich`, async, within what is left of the
//! deadline, never a cause of failure), store the findings and the end state in one transaction
//! with its event, or fail the document with a clear error and refund it. A document is analysed again (at most [`MAX_ATTEMPTS`] times)
//! only when its replica stopped before the end.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};
use uuid::Uuid;

use super::DocumentsState;
use super::analysis::{AnalysisError, Kind, Limits};
use super::enrich;
use super::pipeline::{self, Outcome};
use crate::events;
use crate::kb::retrieve::Snapshot;

/// Attempts before a document that keeps stopping its replica (a file that exhausts memory,
/// say) is failed instead of tried again.
pub const MAX_ATTEMPTS: i16 = 3;

/// The most any compressed part of a document (a DOCX entry, a PDF stream) may expand to.
const MAX_EXPANDED_BYTES: u64 = 256 * 1024 * 1024;
/// The deepest nesting accepted in YAML, JSON, HCL and XML: real templates stay under 30.
const MAX_DEPTH: usize = 64;

/// Why an analysis ended without findings: the code and text stored on the document.
struct Failure {
    code: &'static str,
    message: String,
    /// A failure on our side rather than in the file: logged as an error (every failure is
    /// refunded either way).
    internal: bool,
}

impl From<AnalysisError> for Failure {
    fn from(err: AnalysisError) -> Self {
        match err {
            AnalysisError::Malformed(message) => Failure {
                code: "malformed_document",
                message,
                internal: false,
            },
            AnalysisError::TooComplex(message) => Failure {
                code: "document_too_complex",
                message,
                internal: false,
            },
        }
    }
}

/// Analyses a document this replica holds; any other state (finished, taken over) is left alone.
pub async fn run(state: &DocumentsState, id: Uuid) {
    let started = Instant::now();
    let claimed = sqlx::query!(
        r#"UPDATE documents SET status = 'analyzing', progress = 10, attempts = attempts + 1,
                  lease_expires_at = now() + make_interval(secs => $3)
           WHERE id = $1 AND lease_owner = $2 AND status IN ('received', 'analyzing')
           RETURNING kind, name, storage, storage_key, frameworks_requested, attempts, usage_event_id, api_key_id"#,
        id,
        state.replica,
        state.lease().as_secs_f64()
    )
    .fetch_optional(&state.db)
    .await;
    let doc = match claimed {
        Ok(Some(doc)) => doc,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(document = %id, error = %err, "could not start a document analysis");
            return;
        }
    };
    if doc.attempts > MAX_ATTEMPTS {
        fail(
            state,
            id,
            doc.usage_event_id,
            Failure {
                code: "analysis_abandoned",
                message: format!(
                    "the analysis stopped its server {MAX_ATTEMPTS} times; the file was not analysed"
                ),
                internal: true,
            },
            started,
        )
        .await;
        return;
    }
    events::publish_or_warn(
        &state.db,
        "document.progress",
        json!({"id": id, "status": "analyzing", "progress": 10}),
    )
    .await;
    let outcome = analyse(
        state,
        id,
        &doc.kind,
        doc.storage,
        doc.storage_key,
        doc.frameworks_requested,
    )
    .await;
    match outcome {
        Ok(analysed) => {
            let outcome = enriched(state, id, analysed).await;
            if let Err(err) = store(state, id, &outcome, started).await {
                tracing::error!(document = %id, error = format!("{err:#}"), "could not store a document's findings");
                fail(
                    state,
                    id,
                    doc.usage_event_id,
                    Failure {
                        code: "analysis_failed",
                        message: "the findings could not be stored; upload the document again"
                            .into(),
                        internal: true,
                    },
                    started,
                )
                .await;
            }
        }
        Err(failure) => fail(state, id, doc.usage_event_id, failure, started).await,
    }
}

/// What the blocking analysis hands to the async steps after it.
struct Analysed {
    outcome: Outcome,
    kind: Kind,
    kb: Arc<Snapshot>,
    deadline: Instant,
}

/// The outcome with the LLM's vetted findings added and `facts.llm` set, when an LLM is
/// configured and the document is prose (templates are decided by the static checks alone).
async fn enriched(state: &DocumentsState, id: Uuid, analysed: Analysed) -> Outcome {
    let Analysed {
        mut outcome,
        kind,
        kb,
        deadline,
    } = analysed;
    let Some(llm) = state.llm.as_deref() else {
        return outcome;
    };
    if kind.is_template() {
        return outcome;
    }
    let budget = deadline.saturating_duration_since(Instant::now());
    let enrichment = enrich::run(
        llm,
        &outcome.sentences,
        &outcome.frameworks,
        &outcome.rows,
        &kb,
        budget,
        &state.stop,
    )
    .await;
    let facts = &enrichment.facts;
    let result = facts["error"]["code"].as_str().unwrap_or("ok").to_string();
    metrics::counter!("cloud_optimizer_document_enrichments_total", "result" => result)
        .increment(1);
    let proposed = facts["proposed"].as_u64().unwrap_or(0);
    let kept = facts["kept"].as_u64().unwrap_or(0);
    metrics::counter!("cloud_optimizer_document_enrichment_findings_total", "fate" => "kept")
        .increment(kept);
    metrics::counter!("cloud_optimizer_document_enrichment_findings_total", "fate" => "dropped")
        .increment(proposed.saturating_sub(kept));
    if facts["error"].is_null() {
        tracing::info!(document = %id, proposed = %facts["proposed"], kept = %facts["kept"], "document enriched by the LLM");
    } else {
        // The document is still analysed; operators need to see a provider that keeps failing.
        tracing::warn!(document = %id, error = %facts["error"], "LLM enrichment failed; built-in findings only");
    }
    outcome.rows.extend(enrichment.rows);
    if let Value::Object(facts) = &mut outcome.facts {
        facts.insert("llm".into(), enrichment.facts);
    }
    outcome
}

async fn analyse(
    state: &DocumentsState,
    id: Uuid,
    kind: &str,
    storage: String,
    storage_key: Option<String>,
    requested: Option<Vec<String>>,
) -> Result<Analysed, Failure> {
    let internal = |message: String| Failure {
        code: "analysis_failed",
        message,
        internal: true,
    };
    let kind = Kind::parse(kind).ok_or_else(|| internal(format!("unknown kind {kind:?}")))?;
    let bytes = super::files::get(state, id, &storage, storage_key.as_deref())
        .await
        .map_err(|e| internal(format!("the file could not be read: {e:#}")))?
        .ok_or_else(|| Failure {
            code: "file_deleted",
            message: "the file was deleted before it was analysed".into(),
            internal: false,
        })?;
    let kb = crate::kb::retrieve::snapshot(&state.db)
        .await
        .map_err(|e| internal(format!("the knowledge base could not be read: {e:#}")))?
        .ok_or_else(|| internal("no knowledge base is loaded".into()))?;
    let limits = Limits {
        deadline: Instant::now() + state.config.analysis_timeout,
        max_expanded_bytes: MAX_EXPANDED_BYTES,
        max_depth: MAX_DEPTH,
    };
    let requested = requested.unwrap_or_default();
    let kb: Arc<Snapshot> = kb;
    let analysed_kb = kb.clone();
    // Parsers are CPU-bound and third-party: off the async workers, and a panic in one is a
    // failed document, never a dead server.
    let work = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::run(kind, &bytes, &limits, &requested, &kb)
        }))
    });
    // The analysers check the deadline themselves; this bound covers one that does not.
    let waited = tokio::time::timeout(
        state.config.analysis_timeout + std::time::Duration::from_secs(5),
        work,
    )
    .await;
    match waited {
        Err(_) => Err(Failure {
            code: "document_too_complex",
            message: format!(
                "the analysis took longer than {} s (DOCUMENT_ANALYSIS_TIMEOUT_SECONDS)",
                state.config.analysis_timeout.as_secs()
            ),
            internal: false,
        }),
        Ok(Err(join)) => Err(internal(format!("the analysis task failed: {join}"))),
        Ok(Ok(Err(_panic))) => Err(Failure {
            code: "malformed_document",
            message: "the file could not be read: its structure is broken".into(),
            internal: true,
        }),
        Ok(Ok(Ok(result))) => result.map_err(Failure::from).map(|outcome| Analysed {
            outcome,
            kind,
            kb: analysed_kb,
            deadline: limits.deadline,
        }),
    }
}

async fn store(
    state: &DocumentsState,
    id: Uuid,
    outcome: &Outcome,
    started: Instant,
) -> anyhow::Result<()> {
    let rows = &outcome.rows;
    let n: Vec<i32> = (1..=rows.len() as i32).collect();
    let col = |f: &dyn Fn(&pipeline::Row) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(f).collect()
    };
    let source: Vec<String> = rows.iter().map(|r| r.source.to_string()).collect();
    let check = col(&|r| r.check.clone());
    let control = col(&|r| r.control.clone());
    let framework = col(&|r| r.framework.clone());
    let measure = col(&|r| r.measure.clone());
    let status: Vec<String> = rows.iter().map(|r| r.status.as_str().to_string()).collect();
    let severity: Vec<String> = rows.iter().map(|r| r.severity.clone()).collect();
    let service = col(&|r| r.service.clone());
    let resource = col(&|r| r.resource.clone());
    let resource_type = col(&|r| r.resource_type.clone());
    let line: Vec<Option<i32>> = rows.iter().map(|r| r.line).collect();
    let page: Vec<Option<i32>> = rows.iter().map(|r| r.page).collect();
    let heading = col(&|r| r.heading.clone());
    let quote = col(&|r| r.quote.clone());
    let reason: Vec<String> = rows.iter().map(|r| r.reason.clone()).collect();
    let controls: Vec<Value> = rows.iter().map(|r| json!(r.controls)).collect();

    let mut tx = state.db.begin().await?;
    // A document taken over by another replica meanwhile is theirs to finish.
    let mine = sqlx::query_scalar!(
        "SELECT id FROM documents WHERE id = $1 AND lease_owner = $2 AND status = 'analyzing' FOR UPDATE",
        id,
        state.replica
    )
    .fetch_optional(&mut *tx)
    .await?;
    if mine.is_none() {
        return Ok(());
    }
    sqlx::query!("DELETE FROM document_findings WHERE document_id = $1", id)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        r#"INSERT INTO document_findings
             (document_id, n, source, check_id, control_id, framework, measure, status, severity, service,
              resource, resource_type, line, page, heading, quote, reason, controls)
           SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                  $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int[], $14::int[],
                  $15::text[], $16::text[], $17::text[], $18::jsonb[])"#,
        id,
        &n,
        &source,
        &check as &[Option<String>],
        &control as &[Option<String>],
        &framework as &[Option<String>],
        &measure as &[Option<String>],
        &status,
        &severity,
        &service as &[Option<String>],
        &resource as &[Option<String>],
        &resource_type as &[Option<String>],
        &line as &[Option<i32>],
        &page as &[Option<i32>],
        &heading as &[Option<String>],
        &quote as &[Option<String>],
        &reason,
        &controls
    )
    .execute(&mut *tx)
    .await
    .context("inserting findings")?;
    let counts = super::report::status_counts(rows.iter().map(|r| r.status));
    sqlx::query!(
        "UPDATE documents SET status = 'analyzed', progress = 100, facts = $2, frameworks = $3,
                analyzed_at = now(), lease_owner = NULL, lease_expires_at = NULL, error = NULL, error_code = NULL
         WHERE id = $1",
        id,
        outcome.facts,
        &outcome.frameworks
    )
    .execute(&mut *tx)
    .await?;
    let duration_ms = started.elapsed().as_millis() as u64;
    events::publish(
        &mut *tx,
        "document.analyzed",
        json!({"id": id, "status": "analyzed", "findings": rows.len(), "counts": counts,
               "frameworks": outcome.frameworks, "duration_ms": duration_ms}),
    )
    .await?;
    tx.commit().await?;
    metrics::histogram!("cloud_optimizer_document_analysis_seconds", "outcome" => "analyzed")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("cloud_optimizer_documents_total", "outcome" => "analyzed").increment(1);
    tracing::info!(document = %id, findings = rows.len(), duration_ms, "document analysed");
    Ok(())
}

async fn fail(
    state: &DocumentsState,
    id: Uuid,
    usage_event_id: Option<Uuid>,
    failure: Failure,
    started: Instant,
) {
    // The failed state and the refund commit together: a crash between them would otherwise
    // bill a document nobody could read.
    let ended: Result<Option<bool>, crate::error::ApiError> = async {
        let mut tx = state.db.begin().await?;
        let updated = sqlx::query!(
            "UPDATE documents SET status = 'failed', error_code = $2, error = $3, lease_owner = NULL,
                    lease_expires_at = NULL, analyzed_at = now()
             WHERE id = $1 AND status IN ('received', 'analyzing')",
            id,
            failure.code,
            failure.message
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Ok(None);
        }
        let refunded = match usage_event_id {
            Some(event) => state.market.refund_in(&mut tx, event).await?,
            None => false,
        };
        tx.commit().await?;
        Ok(Some(refunded))
    }
    .await;
    let refunded = match ended {
        Ok(Some(refunded)) => refunded,
        Ok(None) => return,
        Err(err) => {
            tracing::error!(document = %id, error = %err, "could not record a failed analysis");
            return;
        }
    };
    if failure.internal {
        tracing::error!(document = %id, code = failure.code, error = %failure.message, refunded, "document analysis failed");
    } else {
        tracing::info!(document = %id, code = failure.code, error = %failure.message, refunded, "document could not be analysed");
    }
    metrics::histogram!("cloud_optimizer_document_analysis_seconds", "outcome" => "failed")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("cloud_optimizer_documents_total", "outcome" => "failed").increment(1);
    events::publish_or_warn(
        &state.db,
        "document.failed",
        json!({"id": id, "status": "failed", "code": failure.code, "error": failure.message, "refunded": refunded}),
    )
    .await;
}

/// Claims documents whose replica stopped before finishing them.
pub async fn take_over(state: &DocumentsState) -> anyhow::Result<Vec<Uuid>> {
    if state.stop.is_cancelled() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar!(
        "UPDATE documents SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM documents
                      WHERE status IN ('received', 'analyzing') AND lease_expires_at < now()
                      ORDER BY created_at LIMIT 16 FOR UPDATE SKIP LOCKED)
         RETURNING id",
        state.replica,
        state.lease().as_secs_f64()
    )
    .fetch_all(&state.db)
    .await?)
}

/// Deletes uploaded files older than `DOCUMENT_RETENTION_DAYS` (the documents and their
/// findings stay, marked `file_deleted`).
pub async fn apply_retention(state: &DocumentsState) -> anyhow::Result<()> {
    let Some(retention) = state.config.retention else {
        return Ok(());
    };
    loop {
        let batch = sqlx::query!(
            "SELECT id, storage, storage_key FROM documents
             WHERE file_deleted_at IS NULL AND status IN ('analyzed', 'failed')
               AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 100",
            retention.as_secs_f64()
        )
        .fetch_all(&state.db)
        .await?;
        if batch.is_empty() {
            return Ok(());
        }
        for doc in batch {
            super::files::delete(state, doc.id, &doc.storage, doc.storage_key.as_deref()).await?;
            sqlx::query!(
                "UPDATE documents SET file_deleted_at = now() WHERE id = $1",
                doc.id
            )
            .execute(&state.db)
            .await?;
            tracing::info!(document = %doc.id, "uploaded file deleted (DOCUMENT_RETENTION_DAYS)");
        }
    }
}
