//! Architecture-document analysis: an uploaded design document (PDF, DOCX, Markdown, text) or
//! template (CloudFormation, Terraform, a Terraform plan), analysed in the background into
//! findings against every framework, billed as `DocumentAnalysis`.
//!
//! Owns: the `documents`, `document_contents` and `document_findings` tables, the stored files
//! (PostgreSQL or `DOCUMENTS_BUCKET`), `/api/v1/documents…`, the analysers (`iac` for templates,
//! `prose` for text, `pipeline` joining them to the KB, `enrich` the optional LLM pass over
//! prose), the job that runs one analysis on a blocking thread under a deadline, the sweep that
//! re-runs the analyses of a replica that stopped, and retention.

pub mod analysis;
pub mod api;
pub mod enrich;
pub mod files;
pub mod iac;
pub mod job;
pub mod pipeline;
pub mod prose;
pub mod report;

pub use api::router;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::DocumentsConfig;
use crate::llm::Llm;
use crate::marketplace::Marketplace;

#[derive(Clone)]
pub struct DocumentsState {
    pub db: PgPool,
    pub config: Arc<DocumentsConfig>,
    /// The ledger every accepted document is charged to.
    pub market: Arc<Marketplace>,
    /// The configured language model (`LLM_PROVIDER`, the chat's): with one, prose documents get
    /// an enrichment pass whose findings are checked against the KB and the text (`enrich`).
    pub llm: Option<Arc<Llm>>,
    /// This process's lease owner id.
    pub replica: String,
    /// Process shutdown: no new analysis starts; unfinished ones are handed back.
    pub stop: CancellationToken,
    /// Analyses running in this process, awaited (bounded) at shutdown.
    tasks: TaskTracker,
    /// `DOCUMENT_ANALYSIS_CONCURRENCY`: each analysis holds one blocking thread and one core.
    permits: Arc<Semaphore>,
    s3: Arc<OnceCell<aws_sdk_s3::Client>>,
}

impl DocumentsState {
    pub fn new(
        db: PgPool,
        config: DocumentsConfig,
        market: Arc<Marketplace>,
        llm: Option<Arc<Llm>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            db,
            llm,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config: Arc::new(config),
            market,
            replica: Uuid::new_v4().to_string(),
            stop,
            tasks: TaskTracker::new(),
            s3: Default::default(),
        }
    }

    async fn s3(&self) -> aws_sdk_s3::Client {
        self.s3.get_or_init(crate::aws::s3_client).await.clone()
    }

    /// How long this replica holds a document it analyses: past it, another replica may take it.
    fn lease(&self) -> Duration {
        self.config.analysis_timeout + Duration::from_secs(30)
    }

    /// Analyses a document this replica holds the lease of, once a permit is free.
    pub fn launch(&self, id: Uuid) {
        let state = self.clone();
        self.tasks.spawn(async move {
            let permit = tokio::select! {
                permit = state.permits.clone().acquire_owned() => permit,
                () = state.stop.cancelled() => return,
            };
            let Ok(_permit) = permit else { return };
            job::run(&state, id).await;
        });
    }
}

/// Every 5 s: takes over documents whose replica stopped before finishing them (their lease ran
/// out) and analyses them here; hourly, applies `DOCUMENT_RETENTION_DAYS`.
pub async fn sweep_loop(state: DocumentsState) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut retention_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = state.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match job::take_over(&state).await {
            Ok(ids) => ids.into_iter().for_each(|id| state.launch(id)),
            Err(err) => tracing::warn!(error = %err, "document sweep failed"),
        }
        if tokio::time::Instant::now() >= retention_due {
            retention_due += Duration::from_secs(3600);
            if let Err(err) = job::apply_retention(&state).await {
                tracing::warn!(error = format!("{err:#}"), "document retention failed");
            }
        }
    }
}

/// At shutdown: waits (at most `within`) for running analyses, then hands the unfinished ones
/// back so another replica (or this one after a restart) analyses them at once.
pub async fn drain(state: DocumentsState, within: Duration) {
    state.stop.cancelled().await;
    state.tasks.close();
    let finished = tokio::time::timeout(within, state.tasks.wait())
        .await
        .is_ok();
    let released = sqlx::query!(
        "UPDATE documents SET lease_expires_at = now(), lease_owner = NULL
         WHERE lease_owner = $1 AND status IN ('received', 'analyzing')",
        state.replica
    )
    .execute(&state.db)
    .await;
    match released {
        Ok(done) if done.rows_affected() > 0 => tracing::info!(
            documents = done.rows_affected(),
            finished,
            "unfinished document analyses handed back"
        ),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "could not hand back unfinished document analyses")
        }
    }
}

/// Registers the documents' series at start-up so dashboards see them before the first upload.
pub fn export_initial_metrics() {
    for outcome in ["analyzed", "failed"] {
        metrics::counter!("cloud_optimizer_documents_total", "outcome" => outcome).increment(0);
        // Registering the histogram is enough: it renders with empty buckets.
        let _ =
            metrics::histogram!("cloud_optimizer_document_analysis_seconds", "outcome" => outcome);
    }
    metrics::counter!("cloud_optimizer_document_enrichments_total", "result" => "ok").increment(0);
    for fate in ["kept", "dropped"] {
        metrics::counter!("cloud_optimizer_document_enrichment_findings_total", "fate" => fate)
            .increment(0);
    }
}
