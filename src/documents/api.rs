//! `/api/v1/documents…`: upload, list, read, findings, report, delete. A document belongs to the
//! key that uploaded it: another user key gets a 404, as if it did not exist; admin keys see all.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::DocumentsState;
use super::analysis::{Kind, SEVERITIES, Status};
use super::pipeline;
use crate::error::{ApiError, Problem};
use crate::events;
use crate::marketplace::Dimension;
use crate::marketplace::ledger::{self, Idempotency};
use crate::web::{Auth, Page, Principal, Scope, invalid_filter, next_link, page_bounds};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    DocumentsState: axum::extract::FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(upload_document, list_documents))
        .routes(routes!(get_document, delete_document))
        .routes(routes!(list_document_findings))
        .routes(routes!(document_report))
}

/// The upload form.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // describes the multipart body for the OpenAPI document only
pub struct UploadForm {
    /// The document: PDF, DOCX, Markdown, plain text, a CloudFormation template (YAML or JSON),
    /// Terraform (`.tf`) or a `terraform show -json` plan. Recognised from its content.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// A name to show (1–255 characters); the file's own name when omitted.
    #[schema(min_length = 1, max_length = 255)]
    name: Option<String>,
    /// Frameworks to analyse against, comma-separated (`hipaa,pci-dss`); all that apply when
    /// omitted. `hipaa-sr`/`hipaa`, `soc2`, `pci-dss`/`pci`, `gdpr`, `cis-aws`/`cis`,
    /// `aws-fsbp`/`fsbp`, `aws-wa-security`/`well-architected`.
    frameworks: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentError {
    /// `malformed_document`, `document_too_complex`, `file_deleted`, `analysis_failed`,
    /// `analysis_abandoned`.
    pub code: String,
    pub message: String,
}

/// Findings by status.
#[derive(Debug, Default, Clone, Serialize, ToSchema, Deserialize)]
// PostgreSQL reports only the statuses that occur; the others are 0.
#[serde(default)]
pub struct Counts {
    pub pass: i64,
    pub fail: i64,
    pub unknown: i64,
    pub addressed: i64,
    pub contradicted: i64,
    pub silent: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Document {
    pub id: Uuid,
    pub name: String,
    /// `pdf`, `docx`, `markdown`, `text`, `cloudformation`, `terraform`, `terraform_plan`.
    pub kind: String,
    pub size_bytes: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// `received`, `analyzing`, `analyzed` or `failed`.
    pub status: String,
    /// 0–100.
    pub progress: i16,
    pub error: Option<DocumentError>,
    /// The frameworks asked for at upload; `null`: inferred from the content.
    pub frameworks_requested: Option<Vec<String>>,
    /// The frameworks the findings cover.
    pub frameworks: Vec<String>,
    pub counts: Counts,
    /// What the analysis read: for templates `resources`, `resource_types`, `checks_evaluated`;
    /// for prose `services`, `data_kinds`, `measures`, `frameworks`, `sentences`, `pages`, and
    /// with an LLM configured `llm` (the enrichment pass: `provider`, `model`, `proposed`, `kept`,
    /// `dropped_unknown_ids`, `dropped_out_of_scope`, `dropped_duplicates`, `dropped_unquoted`,
    /// `malformed`, `sentences_sent`, `sentences_total`, `error`).
    #[schema(value_type = Option<Object>)]
    pub facts: Option<Value>,
    /// Whether `DOCUMENT_RETENTION_DAYS` removed the uploaded file (findings stay).
    pub file_deleted: bool,
    #[serde(with = "crate::web::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::web::timestamp::option")]
    pub analyzed_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct DocumentRow {
    id: Uuid,
    name: String,
    kind: String,
    size_bytes: i64,
    sha256: String,
    status: String,
    progress: i16,
    error_code: Option<String>,
    error: Option<String>,
    frameworks_requested: Option<Vec<String>>,
    frameworks: Vec<String>,
    counts: Value,
    facts: Option<Value>,
    file_deleted: bool,
    created_at: DateTime<Utc>,
    analyzed_at: Option<DateTime<Utc>>,
}

impl From<DocumentRow> for Document {
    fn from(r: DocumentRow) -> Self {
        Document {
            id: r.id,
            name: r.name,
            kind: r.kind,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            status: r.status,
            progress: r.progress,
            error: r.error_code.map(|code| DocumentError {
                code,
                message: r.error.unwrap_or_default(),
            }),
            frameworks_requested: r.frameworks_requested,
            frameworks: r.frameworks,
            counts: serde_json::from_value(r.counts).unwrap_or_default(),
            facts: r.facts,
            file_deleted: r.file_deleted,
            created_at: r.created_at,
            analyzed_at: r.analyzed_at,
        }
    }
}

const DOCUMENT_COLUMNS: &str = "SELECT d.id, d.name, d.kind, d.size_bytes, d.sha256, d.status, d.progress, \
     d.error_code, d.error, d.frameworks_requested, d.frameworks, \
     (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}') FROM \
        (SELECT status, count(*) AS n FROM document_findings WHERE document_id = d.id GROUP BY status) s) AS counts, \
     d.facts, d.file_deleted_at IS NOT NULL AS file_deleted, d.created_at, d.analyzed_at FROM documents d";

/// The owner filter: a user key sees its own documents, an admin key every document.
fn push_owner(q: &mut QueryBuilder<Postgres>, caller: &Principal) {
    if caller.scope != Scope::Admin {
        q.push(" AND d.api_key_id = ").push_bind(caller.key_id);
    }
}

pub(super) async fn load(
    state: &DocumentsState,
    caller: &Principal,
    id: Uuid,
) -> Result<Document, ApiError> {
    let mut q = QueryBuilder::new(DOCUMENT_COLUMNS);
    q.push(" WHERE d.id = ").push_bind(id);
    push_owner(&mut q, caller);
    let row: Option<DocumentRow> = q.build_query_as().fetch_optional(&state.db).await?;
    row.map(Document::from).ok_or_else(|| no_document(id))
}

fn no_document(id: Uuid) -> ApiError {
    ApiError::problem(Problem::new(
        StatusCode::NOT_FOUND,
        "document_not_found",
        format!("no document {id}"),
    ))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::invalid(
            "invalid_document_id",
            format!("{raw:?} is not a document id (a UUID)"),
        )
    })
}

fn too_large(max: usize) -> ApiError {
    ApiError::problem(
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "document_too_large",
            format!("the file is larger than {max} bytes (DOCUMENT_MAX_BYTES)"),
        )
        .with("max_bytes", max),
    )
}

const ACCEPTED_TYPES: [&str; 7] = [
    "PDF",
    "DOCX",
    "Markdown",
    "plain text (UTF-8)",
    "CloudFormation (YAML or JSON)",
    "Terraform (HCL)",
    "Terraform plan JSON (terraform show -json)",
];

fn multipart_error(err: MultipartError, max: usize) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(max);
    }
    ApiError::invalid("malformed_multipart", err.body_text())
}

struct Upload {
    bytes: Vec<u8>,
    file_name: Option<String>,
    name: Option<String>,
    frameworks: Option<String>,
}

async fn read_form(mut form: Multipart, max: usize) -> Result<Upload, ApiError> {
    let mut upload = Upload {
        bytes: Vec::new(),
        file_name: None,
        name: None,
        frameworks: None,
    };
    let mut have_file = false;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        let field_name = field.name().unwrap_or_default().to_string();
        match field_name.as_str() {
            "file" => {
                if have_file {
                    return Err(ApiError::unprocessable(
                        "one_file_only",
                        "send one `file` part per upload",
                    ));
                }
                have_file = true;
                upload.file_name = field.file_name().map(str::to_string);
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                    if upload.bytes.len() + chunk.len() > max {
                        return Err(too_large(max));
                    }
                    upload.bytes.extend_from_slice(&chunk);
                }
            }
            "name" | "frameworks" => {
                let text = field.text().await.map_err(|e| multipart_error(e, max))?;
                if text.len() > 4096 {
                    return Err(ApiError::unprocessable(
                        "field_too_long",
                        format!("`{field_name}` is longer than 4096 bytes"),
                    ));
                }
                if field_name == "name" {
                    upload.name = Some(text);
                } else {
                    upload.frameworks = Some(text);
                }
            }
            other => {
                return Err(ApiError::problem(
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown_field",
                        format!("the form has a field {other:?}; it takes `file`, `name` and `frameworks`"),
                    )
                    .with("allowed", ["file", "name", "frameworks"]),
                ));
            }
        }
    }
    if !have_file {
        return Err(ApiError::unprocessable(
            "file_required",
            "the form needs a `file` part with the document",
        ));
    }
    if upload.bytes.is_empty() {
        return Err(ApiError::unprocessable("empty_file", "the file is empty"));
    }
    Ok(upload)
}

fn display_name(upload: &Upload, kind: Kind) -> Result<String, ApiError> {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .trim()
            .to_string()
    };
    if let Some(name) = &upload.name {
        let name = clean(name);
        if name.is_empty() || name.chars().count() > 255 {
            return Err(ApiError::unprocessable(
                "invalid_name",
                "`name` must be 1-255 characters",
            ));
        }
        return Ok(name);
    }
    // A browser sends the file's name; keep only its last path segment.
    let from_file = upload
        .file_name
        .as_deref()
        .map(|f| clean(f.rsplit(['/', '\\']).next().unwrap_or(f)))
        .filter(|f| !f.is_empty())
        .map(|f| f.chars().take(255).collect());
    Ok(from_file.unwrap_or_else(|| format!("{} document", kind.as_str())))
}

fn parse_frameworks(raw: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut ids = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some(id) = pipeline::framework_id(part) else {
            return Err(ApiError::problem(
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_framework",
                    format!("{part:?} is not a framework this product analyses against"),
                )
                .with("allowed", pipeline::FRAMEWORKS),
            ));
        };
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    Ok(Some(ids))
}

/// Upload a document for analysis (billed as one `DocumentAnalysis`; refunded if it cannot be
/// analysed). Answers at once with the document `received`; the analysis runs in the background
/// (`document.progress`, `document.analyzed` or `document.failed` on the notifications feed).
#[utoipa::path(post, path = "/documents", tag = "documents",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]{1,255}$",
        description = "makes a retry return the first document without a second analysis or charge")),
    responses((status = 202, body = Document, headers(("Location" = String, description = "`/api/v1/documents/{id}`"))),
        (status = 402, body = Problem, description = "the license or trial does not allow another document"),
        (status = 413, body = Problem, description = "the file is larger than `DOCUMENT_MAX_BYTES` (`document_too_large`)"),
        (status = 415, body = Problem, description = "not multipart/form-data, or a file type we do not read (`unsupported_document_type`, with `accepted`)"),
        (status = 422, body = Problem)),
    security(("api_key" = [])))]
async fn upload_document(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let form = form.map_err(|e| {
        ApiError::problem(
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "multipart_required",
                format!(
                    "send the document as multipart/form-data with a `file` part ({})",
                    e.body_text()
                ),
            )
            .with("accepted", ["multipart/form-data"]),
        )
    })?;
    let idempotency_key = ledger::key_from(&headers)?;
    let max = state.config.max_bytes;
    let upload = read_form(form, max).await?;
    let frameworks = parse_frameworks(upload.frameworks.as_deref())?;
    // Detection may parse the whole file (is this YAML a CloudFormation template?): off the
    // async workers.
    let (upload, kind) = tokio::task::spawn_blocking(move || {
        let kind = pipeline::detect(&upload.bytes);
        (upload, kind)
    })
    .await
    .map_err(anyhow::Error::from)?;
    let Some(kind) = kind else {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_document_type",
                format!(
                    "the file is not a type we analyse; send one of: {}",
                    ACCEPTED_TYPES.join(", ")
                ),
            )
            .with("accepted", ACCEPTED_TYPES),
        ));
    };
    let name = display_name(&upload, kind)?;
    let sha256 = hex::encode(Sha256::digest(&upload.bytes));

    let mut tx = state.db.begin().await?;
    if let Some(key) = &idempotency_key {
        let frameworks_text = frameworks.as_ref().map(|f| f.join(",")).unwrap_or_default();
        let hash = ledger::request_hash(&[
            b"documents",
            sha256.as_bytes(),
            name.as_bytes(),
            frameworks_text.as_bytes(),
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
    let usage = state
        .market
        .charge(
            &mut tx,
            Dimension::DocumentAnalysis,
            "document",
            Some(caller.key_id),
            Some(&id.to_string()),
        )
        .await?;
    let (storage, storage_key) = super::files::placement(&state, id);
    sqlx::query!(
        "INSERT INTO documents (id, api_key_id, name, kind, size_bytes, sha256, frameworks_requested, status,
                               storage, storage_key, usage_event_id, lease_owner, lease_expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $8, $9, $10, $11, now() + make_interval(secs => $12), now())",
        id,
        caller.key_id,
        name,
        kind.as_str(),
        upload.bytes.len() as i64,
        sha256,
        frameworks.as_deref(),
        storage,
        storage_key,
        usage.id,
        state.replica,
        state.lease().as_secs_f64()
    )
    .execute(&mut *tx)
    .await?;
    if let Err(err) = super::files::put(&state, &mut tx, id, &upload.bytes).await {
        tracing::error!(
            error = format!("{err:#}"),
            "could not store an uploaded document"
        );
        return Err(ApiError::problem(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "document_storage_unavailable",
            "the document could not be stored; nothing was charged, try again",
        )));
    }
    events::publish(
        &mut *tx,
        "document.received",
        json!({"id": id, "name": name, "kind": kind.as_str(), "size_bytes": upload.bytes.len()}),
    )
    .await?;
    let view = load_in(&mut tx, id).await?;
    let body = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
    if let Some(key) = &idempotency_key {
        ledger::finish(&mut tx, caller.key_id, key, StatusCode::ACCEPTED, &body).await?;
    }
    if let Err(err) = tx.commit().await {
        if storage == "s3" {
            let _ = super::files::delete(&state, id, storage, storage_key.as_deref()).await;
        }
        return Err(err.into());
    }
    state.market.charged(&usage).await;
    state.launch(id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/documents/{id}"))],
        Json(body),
    )
        .into_response())
}

async fn load_in(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<Document, ApiError> {
    let mut q = QueryBuilder::new(DOCUMENT_COLUMNS);
    q.push(" WHERE d.id = ").push_bind(id);
    let row: DocumentRow = q.build_query_as().fetch_one(&mut *tx).await?;
    Ok(row.into())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `received`, `analyzing`, `analyzed` or `failed`.
    #[param(pattern = "^(received|analyzing|analyzed|failed)$")]
    status: Option<String>,
    /// `pdf`, `docx`, `markdown`, `text`, `cloudformation`, `terraform`, `terraform_plan`.
    #[param(pattern = "^(pdf|docx|markdown|text|cloudformation|terraform|terraform_plan)$")]
    kind: Option<String>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

const DOCUMENT_STATUSES: [&str; 4] = ["received", "analyzing", "analyzed", "failed"];

/// Documents, newest first (a user key sees its own; an admin key all).
#[utoipa::path(get, path = "/documents", tag = "documents", params(ListParams),
    responses((status = 200, body = Page<Document>), (status = 400, body = Problem)),
    security(("api_key" = [])))]
async fn list_documents(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<Document>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 50, 200)?;
    let filters = |q: &mut QueryBuilder<Postgres>| -> Result<(), ApiError> {
        q.push(" WHERE true");
        push_owner(q, &caller);
        if let Some(status) = &params.status {
            if !DOCUMENT_STATUSES.contains(&status.as_str()) {
                return Err(invalid_filter("status", status, &DOCUMENT_STATUSES));
            }
            q.push(" AND d.status = ").push_bind(status.clone());
        }
        if let Some(kind) = &params.kind {
            if Kind::parse(kind).is_none() {
                let kinds = Kind::ALL.map(Kind::as_str);
                return Err(invalid_filter("kind", kind, &kinds));
            }
            q.push(" AND d.kind = ").push_bind(kind.clone());
        }
        Ok(())
    };
    let mut count = QueryBuilder::new("SELECT count(*) FROM documents d");
    filters(&mut count)?;
    let total: i64 = count.build_query_scalar().fetch_one(&state.db).await?;
    let mut q = QueryBuilder::new(DOCUMENT_COLUMNS);
    filters(&mut q)?;
    q.push(" ORDER BY d.created_at DESC, d.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows: Vec<DocumentRow> = q.build_query_as().fetch_all(&state.db).await?;
    Ok(Json(Page {
        items: rows.into_iter().map(Document::from).collect(),
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

/// A document: status, progress, type, size, counts of findings by status, what was read.
#[utoipa::path(get, path = "/documents/{id}", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 200, body = Document), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_document(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Document>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(load(&state, &caller, id).await?))
}

/// Deletes a document, its stored file (in PostgreSQL or S3) and every finding derived from it.
#[utoipa::path(delete, path = "/documents/{id}", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn delete_document(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, id).await?;
    let deleted = sqlx::query!(
        "DELETE FROM documents WHERE id = $1 RETURNING storage, storage_key",
        id
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(deleted) = deleted else {
        return Err(no_document(id));
    };
    if deleted.storage == "s3"
        && let Err(err) =
            super::files::delete(&state, id, &deleted.storage, deleted.storage_key.as_deref()).await
    {
        // The row is gone, so nothing will read the object again; the operator can remove it.
        tracing::error!(document = %id, error = format!("{err:#}"), "could not delete a document's S3 object");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindingsParams {
    /// `pass`, `fail`, `unknown` (templates); `addressed`, `contradicted`, `silent` (prose).
    #[param(pattern = "^(pass|fail|unknown|addressed|contradicted|silent)$")]
    status: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `informational`.
    #[param(pattern = "^(critical|high|medium|low|informational)$")]
    severity: Option<String>,
    /// `template` or `prose`.
    #[param(pattern = "^(template|prose)$")]
    source: Option<String>,
    /// A KB service id (`s3`, `ec2`, …) of the check.
    service: Option<String>,
    /// A check id (`s3-bucket-level-public-access-blocked`).
    check: Option<String>,
    /// A resource's logical id or Terraform address.
    resource: Option<String>,
    /// Only findings that decide controls of this framework (`hipaa-sr`, `pci-dss`, …).
    #[param(min_length = 1)]
    framework: Option<String>,
    /// Only findings that decide this control (`pci-dss:3.5.1`, as in the findings' `controls`).
    #[param(min_length = 1)]
    control: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema, FromRow, Clone, Deserialize)]
pub struct Finding {
    /// `template` (a check on a resource) or `prose` (a control and the sentence that decided).
    pub source: String,
    /// `pass`, `fail`, `unknown`, `addressed`, `contradicted` or `silent`.
    pub status: String,
    pub severity: String,
    /// The document the finding is in (its name).
    pub file: String,
    /// Template findings: the catalogue check (the same id a live scan reports).
    pub check: Option<String>,
    /// Template findings: the check's title from the KB.
    pub title: Option<String>,
    pub service: Option<String>,
    /// Template findings: logical id or Terraform address.
    pub resource: Option<String>,
    pub resource_type: Option<String>,
    /// Template findings: the line of the resource's declaration.
    pub line: Option<i32>,
    /// Prose findings: the control (`hipaa-sr:164.312(a)(2)(iv)`).
    pub control: Option<String>,
    pub framework: Option<String>,
    /// Prose findings: the measure (`encryption_at_rest`, `mfa`, …).
    pub measure: Option<String>,
    /// Prose findings: the sentence that decided, its page (PDF) and heading.
    pub quote: Option<String>,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub reason: String,
    /// Every control the finding decides; each resolves with `GET /api/v1/kb/controls/{id}`.
    #[schema(value_type = Vec<String>)]
    pub controls: Value,
}

const FINDING_COLUMNS: &str = "SELECT f.source, f.status, f.severity, \
     (SELECT name FROM documents WHERE id = f.document_id) AS file, f.check_id AS check, k.title, \
     coalesce(f.service, k.services[1]) AS service, f.resource, f.resource_type, f.line, f.control_id AS control, \
     f.framework, f.measure, f.quote, f.page, f.heading, f.reason, f.controls FROM document_findings f \
     LEFT JOIN kb_checks k ON k.version_id = (SELECT id FROM kb_versions WHERE active) AND k.id = 'check:kb:' || f.check_id \
     WHERE f.document_id = ";

/// Appends `AND …` for each filter; every value is a bind parameter. The filters combine
/// freely, which one compile-time-checked statement cannot express.
fn push_filters(q: &mut QueryBuilder<Postgres>, p: &FindingsParams) -> Result<(), ApiError> {
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
    if let Some(source) = &p.source {
        if !["template", "prose"].contains(&source.as_str()) {
            return Err(invalid_filter("source", source, &["template", "prose"]));
        }
        q.push(" AND f.source = ").push_bind(source.clone());
    }
    if let Some(service) = &p.service {
        q.push(" AND f.service = ").push_bind(service.clone());
    }
    if let Some(check) = &p.check {
        let slug = check.strip_prefix("check:kb:").unwrap_or(check);
        q.push(" AND f.check_id = ").push_bind(slug.to_string());
    }
    if let Some(resource) = &p.resource {
        q.push(" AND f.resource = ").push_bind(resource.clone());
    }
    if let Some(framework) = &p.framework {
        let Some(id) = pipeline::framework_id(framework) else {
            return Err(invalid_filter(
                "framework",
                framework,
                &pipeline::FRAMEWORKS,
            ));
        };
        // Citation ids start with the framework id, then `:` or `@version:`.
        q.push(" AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(f.controls) c WHERE c LIKE ")
            .push_bind(format!("{id}:%"))
            .push(" OR c LIKE ")
            .push_bind(format!("{id}@%"))
            .push(")");
    }
    if let Some(control) = &p.control {
        q.push(" AND f.controls @> jsonb_build_array(")
            .push_bind(control.clone())
            .push("::text)");
    }
    Ok(())
}

async fn require_document(
    state: &DocumentsState,
    caller: &Principal,
    id: Uuid,
) -> Result<(), ApiError> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM documents WHERE id = $1 AND (api_key_id = $2 OR $3)) AS "e!""#,
        id,
        caller.key_id,
        caller.scope == Scope::Admin
    )
    .fetch_one(&state.db)
    .await?;
    if exists { Ok(()) } else { Err(no_document(id)) }
}

/// Findings of a document, failing and contradicted first, then by severity: filter by status,
/// severity, source, service, check, resource, framework or control.
#[utoipa::path(get, path = "/documents/{id}/findings", tag = "documents", params(("id" = Uuid, Path), FindingsParams),
    responses((status = 200, body = Page<Finding>), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn list_document_findings(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<FindingsParams>, QueryRejection>,
) -> Result<Json<Page<Finding>>, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 100, 1000)?;
    require_document(&state, &caller, id).await?;
    let mut count =
        QueryBuilder::new("SELECT count(*) FROM document_findings f WHERE f.document_id = ");
    count.push_bind(id);
    push_filters(&mut count, &params)?;
    let total: i64 = count.build_query_scalar().fetch_one(&state.db).await?;
    let mut q = QueryBuilder::new(FINDING_COLUMNS);
    q.push_bind(id);
    push_filters(&mut q, &params)?;
    q.push(" ORDER BY f.n LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let items: Vec<Finding> = q.build_query_as().fetch_all(&state.db).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

/// Every finding of a document, in report order.
pub(super) async fn all_findings(
    state: &DocumentsState,
    id: Uuid,
) -> Result<Vec<Finding>, ApiError> {
    let mut q = QueryBuilder::new(FINDING_COLUMNS);
    q.push_bind(id);
    q.push(" ORDER BY f.n");
    Ok(q.build_query_as().fetch_all(&state.db).await?)
}

/// The report: per framework, the controls the document meets, contradicts, leaves undetermined
/// or is silent on, each with the findings that decided; JSON, or Markdown with
/// `Accept: text/markdown`. A document still being analysed is a 409 `document_not_analyzed`.
#[utoipa::path(get, path = "/documents/{id}/report", tag = "documents", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the report as JSON, or as Markdown with `Accept: text/markdown`",
            content((super::report::Report = "application/json"), (String = "text/markdown"))),
        (status = 404, body = Problem),
        (status = 406, body = Problem, description = "`Accept` allows neither JSON nor Markdown"),
        (status = 409, body = Problem, description = "the analysis has not finished (`document_not_analyzed`)")),
    security(("api_key" = [])))]
async fn document_report(
    State(state): State<DocumentsState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let markdown = super::report::wants_markdown(&headers)?;
    let document = load(&state, &caller, id).await?;
    if document.status != "analyzed" {
        return Err(ApiError::problem(
            Problem::new(
                StatusCode::CONFLICT,
                "document_not_analyzed",
                match &document.error {
                    Some(e) => format!("the document could not be analysed: {}", e.message),
                    None => format!(
                        "the document is {} ({} %); the report is ready when it is analyzed",
                        document.status, document.progress
                    ),
                },
            )
            .with("document_status", &document.status),
        ));
    }
    let findings = all_findings(&state, id).await?;
    let kb = crate::kb::retrieve::snapshot(&state.db).await?;
    let report = super::report::build(document, findings, kb.as_deref());
    if markdown {
        Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            super::report::markdown(&report),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}
