//! `/api/v1/kb/*`: frameworks, controls, checks, services, search. Every query reads the active
//! KB version only, so a load in progress is invisible until it commits.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, OriginalUri, Path, Query, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::KbState;
use super::{ids, search};
use crate::error::{ApiError, Problem};
use crate::web::{Page, invalid_filter, next_link, page_bounds, page_json};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    KbState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(list_frameworks))
        .routes(routes!(framework_controls))
        .routes(routes!(get_control))
        .routes(routes!(list_checks))
        .routes(routes!(get_check))
        .routes(routes!(list_services))
        .routes(routes!(get_service))
        .routes(routes!(search_kb))
}

const ACTIVE: &str = "(SELECT id FROM kb_versions WHERE active)";

#[derive(Serialize, ToSchema)]
pub struct FrameworkInfo {
    /// Stable id, e.g. `cis-aws`.
    pub id: String,
    pub version: String,
    /// `id@version`, the prefix of its control ids.
    pub key: String,
    pub name: String,
    pub publisher: String,
    pub url: String,
    pub summary: String,
    pub kinds: Vec<String>,
    /// Controls per kind.
    pub counts: BTreeMap<String, i64>,
    pub controls: i64,
    pub technical_controls: i64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// Items to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

/// Frameworks in the knowledge base with control counts.
#[utoipa::path(get, path = "/kb/frameworks", tag = "knowledge base", params(PageParams),
    responses((status = 200, body = Page<FrameworkInfo>)), security(("api_key" = [])))]
async fn list_frameworks(
    State(state): State<KbState>,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 100, 500)?;
    let page = sqlx::query!(
        r#"WITH f AS (SELECT * FROM kb_frameworks WHERE version_id = (SELECT id FROM kb_versions WHERE active)),
           page AS (SELECT * FROM f ORDER BY id, key LIMIT $1 OFFSET $2)
           SELECT coalesce(json_agg(json_build_object(
               'id', f.id, 'version', f.version, 'key', f.key, 'name', f.name, 'publisher', f.publisher,
               'url', f.url, 'summary', f.summary, 'kinds', f.kinds,
               'counts', coalesce(n.counts, '{}'), 'controls', coalesce(n.controls, 0),
               'technical_controls', coalesce(n.technical, 0)) ORDER BY f.id, f.key), '[]')::text AS "items!",
               (SELECT count(*) FROM f) AS "total!"
           FROM page f
           LEFT JOIN LATERAL (
               SELECT json_object_agg(kind, n ORDER BY kind) AS counts, sum(n) AS controls, sum(t) AS technical
               FROM (SELECT c.kind, count(*) AS n, count(*) FILTER (WHERE c.technical) AS t
                     FROM kb_controls c WHERE c.version_id = f.version_id AND c.framework = f.key
                     GROUP BY c.kind) k
           ) n ON true"#,
        limit,
        offset
    )
    .fetch_one(&state.db)
    .await?;
    Ok(page_response(&uri, &page.items, page.total, limit, offset))
}

/// A page whose items PostgreSQL serialised, in the envelope every list has.
fn page_response(uri: &Uri, items: &str, total: i64, limit: i64, offset: i64) -> Response {
    let next = next_link(uri, limit, offset, total);
    json_bytes(Bytes::from(page_json(
        items,
        total,
        limit,
        offset,
        next.as_deref(),
    )))
}

async fn framework_keys(db: &PgPool) -> Result<Vec<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT key FROM kb_frameworks WHERE version_id = (SELECT id FROM kb_versions WHERE active) ORDER BY key"
    )
    .fetch_all(db)
    .await?)
}

/// `pci-dss@4.0.1` exactly, `cis-aws@5` by version prefix, or `cis-aws` alone: the newest
/// version, as a client that names no version means the current one.
pub fn match_framework(keys: &[String], raw: &str) -> Option<String> {
    let wanted = raw.trim().to_ascii_lowercase();
    let (base, version) = wanted.split_once('@').unwrap_or((&wanted, ""));
    let mut candidates: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let (k_base, k_version) = k.split_once('@').unwrap_or((k, ""));
            k_base.eq_ignore_ascii_case(base)
                && (version.is_empty()
                    || ids::version_matches(&k_version.to_ascii_lowercase(), version))
        })
        .collect();
    candidates.sort_by(|a, b| {
        ids::compare_versions(
            a.split_once('@').map_or("", |x| x.1),
            b.split_once('@').map_or("", |x| x.1),
        )
    });
    candidates.last().map(|k| (*k).clone())
}

/// Resolves `cis-aws` or `cis-aws@3.0.0` in a path to the active framework key, or 404 naming the choices.
pub async fn framework_key(db: &PgPool, raw: &str) -> Result<String, ApiError> {
    let keys = framework_keys(db).await?;
    match_framework(&keys, raw).ok_or_else(|| {
        ApiError::problem(
            Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_framework",
                format!("no framework {raw:?}"),
            )
            .with("allowed", &keys),
        )
    })
}

/// The same for a `framework=` filter: an unknown value is a 400 listing the allowed ones.
pub async fn framework_filter(db: &PgPool, raw: &str) -> Result<String, ApiError> {
    let keys = framework_keys(db).await?;
    match_framework(&keys, raw).ok_or_else(|| invalid_filter("framework", raw, &keys))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ControlFilter {
    /// Control kind, e.g. `requirement`, `implementation_specification`, `recommendation`
    /// (the framework's own kinds; another value is a 400 `invalid_filter` listing them).
    #[param(min_length = 1)]
    kind: Option<String>,
    /// HIPAA: `required` or `addressable`.
    #[param(pattern = "^(required|addressable)$")]
    obligation: Option<String>,
    /// CIS: `1` or `2`.
    #[param(pattern = "^[12]$")]
    level: Option<String>,
    /// AWS service id (see `/kb/services`): controls that concern it or map to its checks. An id
    /// the loaded KB does not have is a 400 `invalid_filter` listing the ids.
    #[param(min_length = 1)]
    service: Option<String>,
    /// Only controls that AWS configuration can evidence.
    technical: Option<bool>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// Items to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct ControlSummary {
    pub id: String,
    pub framework: String,
    pub native_id: String,
    pub kind: String,
    pub parent_id: Option<String>,
    pub title: String,
    pub summary: String,
    pub url: String,
    pub technical: bool,
    pub services: Vec<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
}

async fn service_ids(db: &PgPool) -> Result<Vec<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM kb_services WHERE version_id = (SELECT id FROM kb_versions WHERE active) ORDER BY id"
    )
    .fetch_all(db)
    .await?)
}

pub async fn check_service(db: &PgPool, service: &str) -> Result<(), ApiError> {
    let known = service_ids(db).await?;
    if known.iter().any(|s| s == service) {
        Ok(())
    } else {
        Err(invalid_filter("service", service, &known))
    }
}

const CONTROL_COLUMNS: &str = "c.id, c.framework, c.native_id, c.kind, c.parent_id, c.title, c.summary, c.url, c.technical, c.services, c.attributes";

/// Controls of a framework, paged and filtered.
#[utoipa::path(get, path = "/kb/frameworks/{id}/controls", tag = "knowledge base",
    params(("id" = String, Path, description = "framework id (`pci-dss`) or key (`pci-dss@4.0.1`)", example = "pci-dss"), ControlFilter),
    responses((status = 200, body = Page<ControlSummary>), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn framework_controls(
    State(state): State<KbState>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    filter: Result<Query<ControlFilter>, QueryRejection>,
) -> Result<Json<Page<ControlSummary>>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let key = framework_key(&state.db, &id).await?;
    let (limit, offset) = page_bounds(filter.limit, filter.offset, 100, 500)?;
    let kinds: Vec<String> = sqlx::query_scalar(sql!(
        "SELECT unnest(kinds) FROM kb_frameworks WHERE version_id = {ACTIVE} AND key = $1"
    ))
    .bind(&key)
    .fetch_all(&state.db)
    .await?;
    if let Some(kind) = &filter.kind
        && !kinds.contains(kind)
    {
        return Err(invalid_filter("kind", kind, &kinds));
    }
    let allowed = |name: &str, value: &Option<String>, choices: &[&str]| -> Result<(), ApiError> {
        match value {
            Some(v) if !choices.contains(&v.as_str()) => Err(invalid_filter(name, v, choices)),
            _ => Ok(()),
        }
    };
    allowed(
        "obligation",
        &filter.obligation,
        &["required", "addressable"],
    )?;
    allowed("level", &filter.level, &["1", "2"])?;
    if let Some(service) = &filter.service {
        check_service(&state.db, service).await?;
    }
    let touches_5 = super::touches_service("$5");
    let where_clause = format!(
        "c.version_id = {ACTIVE} AND c.framework = $1
         AND ($2::text IS NULL OR c.kind = $2)
         AND ($3::text IS NULL OR c.attributes->>'obligation' = $3)
         AND ($4::text IS NULL OR c.attributes->>'level' = $4)
         AND ($5::text IS NULL OR {touches_5})
         AND ($6::bool IS NULL OR c.technical = $6)"
    );
    let total: i64 = sqlx::query_scalar(sql!(
        "SELECT count(*) FROM kb_controls c WHERE {where_clause}"
    ))
    .bind(&key)
    .bind(&filter.kind)
    .bind(&filter.obligation)
    .bind(&filter.level)
    .bind(&filter.service)
    .bind(filter.technical)
    .fetch_one(&state.db)
    .await?;
    // Natural order of ids (8.4.2 before 8.4.10) via a numeric-aware sort key.
    let items: Vec<ControlSummary> = sqlx::query_as(sql!(
        "SELECT {CONTROL_COLUMNS} FROM kb_controls c WHERE {where_clause}
         ORDER BY c.native_id COLLATE kb_natural
         LIMIT $7 OFFSET $8"
    ))
    .bind(&key)
    .bind(&filter.kind)
    .bind(&filter.obligation)
    .bind(&filter.level)
    .bind(&filter.service)
    .bind(filter.technical)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ControlDetail {
    #[serde(flatten)]
    pub control: ControlSummary,
    pub parent: Option<ControlSummary>,
    pub children: Vec<ControlSummary>,
    /// Checks that evidence this control, with the basis of each mapping.
    pub checks: Vec<MappedCheck>,
    /// AWS services the control concerns directly or through its checks.
    pub services: Vec<String>,
    /// Remediations of its checks.
    pub remediations: Vec<RemediationInfo>,
    /// Controls of other frameworks with the same objective.
    pub related: Vec<RelatedControl>,
    /// Where the graph answers came from: `postgres` or `neo4j`.
    pub graph_source: &'static str,
}

#[derive(Serialize, ToSchema, sqlx::FromRow, Clone)]
pub struct MappedCheck {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub services: Vec<String>,
    pub basis: String,
    /// How far the check's passing evidences the control: `direct` (evidence the control is met
    /// for that resource), `partial` (covers part of it) or `supporting` (context only; compliance
    /// views and related-control derivation ignore it).
    #[schema(nullable = false)]
    pub strength: Option<String>,
    /// Why the check bears on the control, in one line.
    #[schema(nullable = false)]
    pub rationale: Option<String>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct RemediationInfo {
    pub id: String,
    pub title: String,
    pub steps: Vec<String>,
    pub cli: Option<String>,
    pub cloudformation: Option<String>,
    pub terraform: Option<String>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow, Clone)]
pub struct RelatedControl {
    pub id: String,
    pub framework: String,
    pub native_id: String,
    pub title: String,
    /// `official-crosswalk`/`editorial` for curated links, `shared-checks` when derived.
    pub basis: String,
    /// For derived links: how many checks the two controls share.
    pub shared_checks: i64,
}

/// The canonical id of the control a client named, in any form people type (see [`ids`]):
/// `control:pci-dss@4.0.1:8.4.2`, `pci-dss:8.4.2`, `PCI DSS Req. 8.4.2`, `164.308(a)(7)(i)`,
/// `GDPR Article 32(1)(a)`, `cis-aws:1.4` (newest CIS), `CIS v3.0.0 1.5`, `iam.6`. An id that names
/// no framework and matches controls of several frameworks is a 400 listing them.
pub async fn resolve_control(db: &PgPool, raw: &str) -> Result<String, ApiError> {
    let typed = typed_control_id(raw)?;
    let rows = sqlx::query!(
        "SELECT id, framework FROM kb_controls
         WHERE version_id = (SELECT id FROM kb_versions WHERE active) AND alias_keys @> ARRAY[$1::text]",
        typed.key
    )
    .fetch_all(db)
    .await?;
    let rows = rows.into_iter().map(|r| (r.id, r.framework, ())).collect();
    Ok(choose_control(raw, &typed, rows)?.0)
}

/// The precomputed [`ControlDetail`] body (see the `kb_control_docs` migration) of the control a
/// client named, resolved as [`resolve_control`] does, in one statement.
async fn control_doc(db: &PgPool, raw: &str) -> Result<String, ApiError> {
    let typed = typed_control_id(raw)?;
    let rows = sqlx::query!(
        "SELECT c.id, c.framework, d.body
         FROM kb_controls c
         JOIN kb_control_docs d ON d.version_id = c.version_id AND d.id = c.id
         WHERE c.version_id = (SELECT id FROM kb_versions WHERE active) AND c.alias_keys @> ARRAY[$1::text]",
        typed.key
    )
    .fetch_all(db)
    .await?;
    let rows = rows
        .into_iter()
        .map(|r| (r.id, r.framework, r.body))
        .collect();
    Ok(choose_control(raw, &typed, rows)?.1)
}

fn typed_control_id(raw: &str) -> Result<ids::TypedId, ApiError> {
    let typed = ids::parse(raw);
    // A framework's own name is a well-formed id of no control: not found, with the way there.
    if typed.key.is_empty()
        && let Some(framework) = typed.framework
    {
        return Err(ApiError::not_found(format!(
            "{raw:?} names the framework {framework}, not one of its controls: its controls are \
             /api/v1/kb/frameworks/{{key}}/controls, one control is e.g. {framework}:<id>"
        )));
    }
    if typed.key.is_empty() {
        return Err(ApiError::invalid(
            "invalid_control_id",
            format!(
                "{raw:?} is not a control id; use control:<framework>@<version>:<id>, e.g. control:pci-dss@4.0.1:8.4.2, pci-dss:8.4.2 or PCI DSS 8.4.2"
            ),
        ));
    }
    Ok(typed)
}

/// Of the controls whose aliases match, the one the client meant: the framework and version it
/// named, else the newest release of each framework; several frameworks left is a 400.
fn choose_control<T>(
    raw: &str,
    typed: &ids::TypedId,
    rows: Vec<(String, String, T)>,
) -> Result<(String, T), ApiError> {
    let mut rows: Vec<(String, String, T)> = rows
        .into_iter()
        .filter(|(_, framework, _)| {
            let (base, version) = framework.split_once('@').unwrap_or((framework, ""));
            typed.framework.is_none_or(|f| f == base)
                && typed
                    .version
                    .as_deref()
                    .is_none_or(|v| ids::version_matches(version, v))
        })
        .collect();
    let pairs: Vec<(String, String)> = rows
        .iter()
        .map(|(id, f, _)| (id.clone(), f.clone()))
        .collect();
    let newest = ids::newest_per_framework(&pairs);
    match newest.as_slice() {
        [] => Err(ApiError::not_found(format!(
            "no control {raw:?} in the knowledge base"
        ))),
        [(id, _)] => {
            let at = rows
                .iter()
                .position(|(row, _, _)| row == id)
                .expect("newest_per_framework picks from the rows");
            let (id, _, value) = rows.swap_remove(at);
            Ok((id, value))
        }
        several => Err(ApiError::problem(
            Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                "ambiguous_control_id",
                format!(
                    "{raw:?} names a control in {} frameworks; prefix it with the framework, e.g. {}",
                    several.len(),
                    several[0].0.trim_start_matches("control:")
                ),
            )
            .with(
                "candidates",
                several.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ),
        )),
    }
}

/// One control with its parent, children, checks, services, remediation and related controls.
/// The id may be any form [`resolve_control`] reads; the answer is the canonical control.
#[utoipa::path(get, path = "/kb/controls/{id}", tag = "knowledge base",
    params(("id" = String, Path, description = "`control:pci-dss@4.0.1:8.4.2`, the short `pci-dss:8.4.2`, or an alias people type: `PCI DSS Req. 8.4.2`, `164.308(a)(7)(i)`, `GDPR Art. 32`, `cis-aws:1.4` (no version: the newest), `IAM.6`",
        example = "pci-dss:8.4.2")),
    responses((status = 200, body = ControlDetail), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
async fn get_control(
    State(state): State<KbState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cache_key = format!("control\u{0}{id}");
    if let Some(hit) = state.cache.get(&cache_key).await {
        return Ok(json_bytes(hit));
    }
    let body = control_body(&state, &id).await?;
    let bytes = Bytes::from(crate::web::compact_json(&body));
    state.cache.put(cache_key, bytes.clone()).await;
    Ok(json_bytes(bytes))
}

fn json_bytes(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The [`ControlDetail`] body of the control a client named: precomputed by PostgreSQL per KB
/// version; with a reachable Neo4j mirror, the checks and related controls come from the mirror
/// and the rest from PostgreSQL.
async fn control_body(state: &KbState, raw: &str) -> Result<String, ApiError> {
    let db = &state.db;
    if let Some(graph) = state.graph.as_ref().filter(|g| g.is_available()) {
        let id = resolve_control(db, raw).await?;
        match graph.control_links(&id).await {
            Ok((checks, related)) => {
                let checks = serde_json::to_value(&checks).map_err(anyhow::Error::from)?;
                let related = serde_json::to_value(&related).map_err(anyhow::Error::from)?;
                return control_body_with_links(db, &id, checks, related)
                    .await?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("no control {raw:?} in the knowledge base"))
                    });
            }
            Err(err) => {
                tracing::warn!(error = %err, "neo4j query failed; answering from PostgreSQL");
            }
        }
    }
    control_doc(db, raw).await
}

/// The same body as the precomputed PostgreSQL answer (`kb_control_body` in the migrations), with
/// checks and related controls given by the Neo4j mirror.
async fn control_body_with_links(
    db: &PgPool,
    id: &str,
    checks: serde_json::Value,
    related: serde_json::Value,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        r#"WITH c AS (
            SELECT c.* FROM kb_controls c
            WHERE c.version_id = (SELECT id FROM kb_versions WHERE active) AND c.id = $1
        ),
        mapped AS (
            SELECT x.id, x.title, x.severity, x.services, x.basis, x.strength, x.rationale, k.remediation_id
            FROM c
            CROSS JOIN jsonb_to_recordset($2::jsonb)
                AS x(id text, title text, severity text, services text[], basis text, strength text, rationale text)
            LEFT JOIN kb_checks k ON k.version_id = c.version_id AND k.id = x.id
        ),
        related AS (
            SELECT x.id, x.framework, x.native_id, x.title, x.basis, x.shared_checks, x.ord
            FROM ROWS FROM (jsonb_to_recordset($3::jsonb)
                AS (id text, framework text, native_id text, title text, basis text, shared_checks bigint))
                WITH ORDINALITY AS x(id, framework, native_id, title, basis, shared_checks, ord)
        )
        SELECT json_build_object(
            'id', c.id, 'framework', c.framework, 'native_id', c.native_id, 'kind', c.kind,
            'parent_id', c.parent_id, 'title', c.title, 'summary', c.summary, 'url', c.url,
            'technical', c.technical, 'attributes', c.attributes,
            'parent', (SELECT row_to_json(p) FROM (
                SELECT p.id, p.framework, p.native_id, p.kind, p.parent_id, p.title, p.summary, p.url,
                       p.technical, p.services, p.attributes
                FROM kb_controls p WHERE p.version_id = c.version_id AND p.id = c.parent_id) p),
            'children', coalesce((SELECT json_agg(h ORDER BY h.native_id COLLATE kb_natural) FROM (
                SELECT h.id, h.framework, h.native_id, h.kind, h.parent_id, h.title, h.summary, h.url,
                       h.technical, h.services, h.attributes
                FROM kb_controls h WHERE h.version_id = c.version_id AND h.parent_id = c.id) h), '[]'),
            'checks', coalesce((SELECT json_agg(json_build_object('id', k.id, 'title', k.title,
                'severity', k.severity, 'services', k.services, 'basis', k.basis, 'strength', k.strength,
                'rationale', k.rationale) ORDER BY k.id) FROM mapped k), '[]'),
            'services', (SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}') FROM (
                SELECT unnest(c.services) UNION ALL SELECT unnest(k.services) FROM mapped k) u(s)),
            'remediations', coalesce((SELECT json_agg(m ORDER BY m.id) FROM (
                SELECT DISTINCT m.id, m.title, m.steps, m.cli, m.cloudformation, m.terraform
                FROM mapped x
                JOIN kb_remediations m ON m.version_id = c.version_id AND m.id = x.remediation_id) m), '[]'),
            'related', coalesce((SELECT json_agg(json_build_object('id', r.id, 'framework', r.framework,
                'native_id', r.native_id, 'title', r.title, 'basis', r.basis, 'shared_checks', r.shared_checks)
                ORDER BY r.ord) FROM related r), '[]'),
            'graph_source', 'neo4j'
        )::text AS "body!"
        FROM c"#,
        id,
        checks,
        related
    )
    .fetch_optional(db)
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckFilter {
    /// AWS service id (see `/kb/services`); an id the loaded KB does not have is a 400
    /// `invalid_filter` listing the ids.
    #[param(min_length = 1)]
    service: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    #[param(pattern = "^(low|medium|high|critical)$")]
    severity: Option<String>,
    /// `true`: only checks that scans run; `false`: only those they do not (yet).
    automated: Option<bool>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<i64>,
    /// Items to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct CheckSummary {
    pub id: String,
    pub title: String,
    pub description: String,
    pub services: Vec<String>,
    pub resource_type: String,
    pub severity: String,
    #[schema(value_type = Object)]
    pub refs: serde_json::Value,
    pub remediation_id: String,
    /// Whether account scans run this check (`POST /api/v1/scans`).
    pub automated: bool,
}

/// `$2` is the list of automated check slugs.
const CHECK_COLUMNS: &str = "k.id, k.title, k.description, k.services, k.resource_type, k.severity, k.refs, k.remediation_id, substring(k.id FROM 10) = ANY($2::text[]) AS automated";

/// The check catalogue, paged and filtered.
#[utoipa::path(get, path = "/kb/checks", tag = "knowledge base", params(CheckFilter),
    responses((status = 200, body = Page<CheckSummary>), (status = 400, body = Problem)), security(("api_key" = [])))]
async fn list_checks(
    State(state): State<KbState>,
    OriginalUri(uri): OriginalUri,
    filter: Result<Query<CheckFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(filter.limit, filter.offset, 100, 500)?;
    if let Some(severity) = &filter.severity
        && !super::model::SEVERITIES.contains(&severity.as_str())
    {
        return Err(invalid_filter(
            "severity",
            severity,
            &super::model::SEVERITIES,
        ));
    }
    if let Some(service) = &filter.service {
        check_service(&state.db, service).await?;
    }
    let page = sqlx::query!(
        r#"WITH k AS (
               SELECT k.id, k.title, k.description, k.services, k.resource_type, k.severity, k.refs, k.remediation_id,
                      substring(k.id FROM 10) = ANY($5::text[]) AS automated
               FROM kb_checks k
               WHERE k.version_id = (SELECT id FROM kb_versions WHERE active)
                 AND ($1::text IS NULL OR $1 = ANY(k.services)) AND ($2::text IS NULL OR k.severity = $2)
                 AND ($6::bool IS NULL OR (substring(k.id FROM 10) = ANY($5::text[])) = $6)
           )
           SELECT coalesce((SELECT json_agg(p ORDER BY p.id) FROM (
                      SELECT * FROM k ORDER BY k.id LIMIT $3 OFFSET $4) p), '[]')::text AS "items!",
                  (SELECT count(*) FROM k) AS "total!""#,
        filter.service,
        filter.severity,
        limit,
        offset,
        state.automated.as_slice(),
        filter.automated
    )
    .fetch_one(&state.db)
    .await?;
    Ok(page_response(&uri, &page.items, page.total, limit, offset))
}

#[derive(Serialize, ToSchema)]
pub struct CheckDetail {
    #[serde(flatten)]
    pub check: CheckSummary,
    pub remediation: Option<RemediationInfo>,
    /// Controls (of every framework) that this check evidences.
    pub controls: Vec<ControlSummary>,
}

/// One check with its remediation and the controls it evidences.
#[utoipa::path(get, path = "/kb/checks/{id}", tag = "knowledge base",
    params(("id" = String, Path, description = "`check:kb:s3-account-public-access-blocked` or just the slug", example = "s3-account-public-access-blocked")),
    responses((status = 200, body = CheckDetail), (status = 404, body = Problem)), security(("api_key" = [])))]
async fn get_check(
    State(state): State<KbState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let full = if id.starts_with("check:") {
        id.clone()
    } else {
        format!("check:kb:{id}")
    };
    let body = sqlx::query_scalar!(
        r#"SELECT json_build_object(
               'id', k.id, 'title', k.title, 'description', k.description, 'services', k.services,
               'resource_type', k.resource_type, 'severity', k.severity, 'refs', k.refs,
               'remediation_id', k.remediation_id,
               'automated', substring(k.id FROM 10) = ANY($2::text[]),
               'remediation', (SELECT row_to_json(m) FROM (
                   SELECT m.id, m.title, m.steps, m.cli, m.cloudformation, m.terraform
                   FROM kb_remediations m WHERE m.version_id = k.version_id AND m.id = k.remediation_id) m),
               'controls', coalesce((SELECT json_agg(c ORDER BY c.framework, c.native_id) FROM (
                   SELECT c.id, c.framework, c.native_id, c.kind, c.parent_id, c.title, c.summary, c.url,
                          c.technical, c.services, c.attributes
                   FROM kb_relationships r JOIN kb_controls c ON c.version_id = r.version_id AND c.id = r.from_id
                   WHERE r.version_id = k.version_id AND r.type = 'maps_to' AND r.to_id = k.id) c), '[]')
           )::text AS "body!"
           FROM kb_checks k
           WHERE k.version_id = (SELECT id FROM kb_versions WHERE active) AND k.id = $1"#,
        full,
        state.automated.as_slice()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no check {id:?} in the knowledge base")))?;
    Ok(json_bytes(Bytes::from(crate::web::compact_json(&body))))
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct ServiceInfo {
    pub id: String,
    pub name: String,
    pub category: String,
    /// Checks of this service.
    pub check_count: i64,
    /// Controls that concern it directly or through one of its checks.
    pub control_count: i64,
}

fn service_counts() -> String {
    let touches_s = super::touches_service("s.id");
    format!("
    SELECT s.id, s.name, s.category,
           (SELECT count(*) FROM kb_checks k WHERE k.version_id = s.version_id AND s.id = ANY(k.services)) AS check_count,
           (SELECT count(DISTINCT c.id) FROM kb_controls c
              WHERE c.version_id = s.version_id AND ({touches_s})) AS control_count
    FROM kb_services s")
}

/// AWS services with how many checks and controls touch each.
#[utoipa::path(get, path = "/kb/services", tag = "knowledge base", params(PageParams),
    responses((status = 200, body = Page<ServiceInfo>)), security(("api_key" = [])))]
async fn list_services(
    State(state): State<KbState>,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<ServiceInfo>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let (limit, offset) = page_bounds(params.limit, params.offset, 100, 500)?;
    let service_counts = service_counts();
    let items = sqlx::query_as(sql!(
        "{service_counts} WHERE s.version_id = {ACTIVE} ORDER BY s.id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM kb_services WHERE version_id = (SELECT id FROM kb_versions WHERE active)"#
    )
    .fetch_one(&state.db)
    .await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
        next: next_link(&uri, limit, offset, total),
    }))
}

/// A service with its checks and controls: the fields of a `ServiceInfo` side by side with the
/// lists (no flattening, so no name is used twice).
#[derive(Serialize, ToSchema)]
pub struct ServiceDetail {
    pub id: String,
    pub name: String,
    pub category: String,
    pub check_count: i64,
    pub control_count: i64,
    pub checks: Vec<CheckSummary>,
    /// Controls that concern the service directly or through one of its checks.
    pub controls: Vec<ControlSummary>,
}

/// One AWS service with its checks and the controls that touch it.
#[utoipa::path(get, path = "/kb/services/{name}", tag = "knowledge base",
    params(("name" = String, Path, description = "service id, e.g. `s3`", example = "s3")),
    responses((status = 200, body = ServiceDetail), (status = 404, body = Problem)), security(("api_key" = [])))]
async fn get_service(
    State(state): State<KbState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, ApiError> {
    let name = name.to_ascii_lowercase();
    let service_counts = service_counts();
    let touches_1 = super::touches_service("$1");
    let service: ServiceInfo = sqlx::query_as(sql!(
        "{service_counts} WHERE s.version_id = {ACTIVE} AND s.id = $1"
    ))
    .bind(&name)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "no AWS service {name:?} in the knowledge base; see /api/v1/kb/services"
        ))
    })?;
    let checks = sqlx::query_as(sql!("SELECT {CHECK_COLUMNS} FROM kb_checks k WHERE k.version_id = {ACTIVE} AND $1 = ANY(k.services) ORDER BY k.id"))
        .bind(&name)
        .bind(state.automated.as_slice())
        .fetch_all(&state.db)
        .await?;
    let controls = sqlx::query_as(sql!(
        "SELECT {CONTROL_COLUMNS} FROM kb_controls c WHERE c.version_id = {ACTIVE} AND ({touches_1})
         ORDER BY c.framework, c.native_id"
    ))
    .bind(&name)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(ServiceDetail {
        id: service.id,
        name: service.name,
        category: service.category,
        check_count: service.check_count,
        control_count: service.control_count,
        checks,
        controls,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words, or a control id such as `PCI DSS 8.4.2` or `HIPAA 164.312(a)(2)(iv)`.
    #[param(required = true, min_length = 1, max_length = 500, pattern = r"\S")]
    q: Option<String>,
    /// Framework id (`pci-dss`) or key (`pci-dss@4.0.1`) of the loaded KB; another value is a 400
    /// `invalid_filter` listing them.
    #[param(min_length = 1)]
    framework: Option<String>,
    /// AWS service id (see `/kb/services`); an id the loaded KB does not have is a 400
    /// `invalid_filter` listing the ids.
    #[param(min_length = 1)]
    service: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 50, default = 10)]
    limit: Option<i64>,
    /// Hits to skip.
    #[param(minimum = 0, maximum = 1000000, default = 0)]
    offset: Option<i64>,
}

/// Full-text search over controls, checks and remediation, ranked, with snippets.
#[utoipa::path(get, path = "/kb/search", tag = "knowledge base", params(SearchParams),
    responses((status = 200, body = Page<search::Hit>), (status = 400, body = Problem)), security(("api_key" = [])))]
async fn search_kb(
    State(state): State<KbState>,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::invalid(
            "missing_query",
            "q is required, e.g. ?q=encryption at rest",
        ));
    }
    if q.chars().count() > 500 {
        return Err(ApiError::invalid(
            "query_too_long",
            "q must be at most 500 characters",
        ));
    }
    let (limit, offset) = page_bounds(params.limit, params.offset, 10, 50)?;
    let framework = match &params.framework {
        Some(f) => Some(framework_filter(&state.db, f).await?),
        None => None,
    };
    if let Some(service) = &params.service {
        check_service(&state.db, service).await?;
    }
    let cache_key = format!(
        "search\u{0}{}\u{0}{}\u{0}{}\u{0}{limit}\u{0}{offset}",
        q.to_lowercase(),
        framework.as_deref().unwrap_or_default(),
        params.service.as_deref().unwrap_or_default()
    );
    // Cached as the items and total: `next` repeats the request's own query, which differs
    // between requests that share an answer (parameter order, spelling of the framework).
    let (items, total) = match state.cache.get(&cache_key).await {
        Some(hit) => split_cached_page(&hit)?,
        None => {
            // The question's words plus the KB's words for the ideas it names.
            let expanded = super::vocabulary::expand(q);
            let (items, total) = state
                .search
                .search(
                    &state.db,
                    &expanded,
                    framework.as_deref(),
                    params.service.as_deref(),
                    limit,
                    offset,
                )
                .await?;
            state
                .cache
                .put(cache_key, Bytes::from(format!("{total}\n{items}")))
                .await;
            (items, total)
        }
    };
    Ok(page_response(&uri, &items, total, limit, offset))
}

fn split_cached_page(cached: &[u8]) -> Result<(String, i64), ApiError> {
    let text = std::str::from_utf8(cached).map_err(anyhow::Error::from)?;
    let (total, items) = text
        .split_once('\n')
        .ok_or_else(|| anyhow::anyhow!("cached search page without its total"))?;
    Ok((
        items.to_string(),
        total.parse().map_err(anyhow::Error::from)?,
    ))
}
