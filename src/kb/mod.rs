//! The compliance knowledge base: data files and their verification (`model`), where they come
//! from (`source`), loading into PostgreSQL (`load`), the Neo4j mirror and graph traversals
//! (`graph`), search (`search`, answered from memory by `search_index`) and the `/api/v1/kb` routes (`api`).

/// SQL assembled from this module's constants only (never from request input, which is always
/// bound as a parameter), so it is safe to pass where sqlx wants audited strings.
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

/// SQL condition: control `c` concerns the AWS service `service` (a parameter or column)
/// directly, or through a check that evidences it (`direct` or `partial`; a `supporting` mapping is
/// context, not evidence).
pub(crate) fn touches_service(service: &str) -> String {
    format!(
        "{service} = ANY(c.services) OR EXISTS (
            SELECT 1 FROM kb_relationships r JOIN kb_checks k ON k.version_id = r.version_id AND k.id = r.to_id
            WHERE r.version_id = c.version_id AND r.type = 'maps_to' AND r.from_id = c.id
              AND r.strength IN ('direct', 'partial') AND {service} = ANY(k.services))"
    )
}

pub mod api;
pub mod cache;
pub mod graph;
pub mod ids;
pub mod load;
pub mod model;
pub mod retrieve;
pub mod search;
pub mod search_index;
pub mod source;
pub mod vocabulary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::runtime::Components;
pub use api::router;

/// What the KB's routes, loader and background refresh need.
#[derive(Clone)]
pub struct KbState {
    pub db: PgPool,
    /// `KB_PATH`: a directory, an https URL or an s3 URL of a bundle.
    pub source: Arc<PathBuf>,
    /// Responses of expensive KB reads, valid until the next KB version.
    pub cache: Arc<cache::KbCache>,
    /// The active version's search data in memory (answers stay uncached; see `search_index`).
    pub search: Arc<search_index::IndexSlot>,
    /// The Neo4j mirror of the KB when `NEO4J_URI` is set.
    pub graph: SharedGraph,
    /// Where the loader reports `ib` and the mirror `neo4j` for `/health`.
    pub components: Arc<Components>,
    /// Catalogue slugs of the checks scans run, handed in by the composition root (the KB
    /// imports no feature): `GET /kb/checks` marks them `automated`.
    pub automated: Arc<Vec<String>>,
}

/// Loads the configured KB if its checksum differs from the active one. A failure leaves the
/// previous version serving and is reported by `/health` as `ib: "failed: …"`.
pub async fn refresh(state: &KbState) {
    let source_text = state.source.display().to_string();
    let result = async {
        let source = source::Source::parse(&source_text)?;
        // A directory whose manifest matches the active version needs no further work.
        if let source::Source::Dir(dir) = &source
            && let Some((active, _)) = load::active_checksum(&state.db).await?
            && load::manifest_checksum(dir)? == active
        {
            return Ok::<_, anyhow::Error>((
                load::Outcome::Unchanged {
                    kb_version: String::new(),
                },
                None,
            ));
        }
        let materialized = source::materialize(&source).await?;
        let outcome = load::load_dir(&state.db, &materialized.dir, &source.describe()).await?;
        // The mirror needs the parsed KB: read it again only when the graph needs it.
        let kb = match (&outcome, &state.graph) {
            (load::Outcome::Loaded { .. }, Some(_)) => {
                let dir = materialized.dir.clone();
                Some(tokio::task::spawn_blocking(move || model::read_and_verify(&dir)).await??)
            }
            _ => None,
        };
        Ok((outcome, kb))
    }
    .await;
    match result {
        Ok((outcome, kb)) => {
            match &outcome {
                load::Outcome::Loaded {
                    kb_version,
                    entities,
                    relationships,
                    elapsed,
                } => tracing::info!(
                    kb_version,
                    entities,
                    relationships,
                    elapsed_ms = elapsed.as_millis() as u64,
                    source = %source_text,
                    "knowledge base loaded"
                ),
                load::Outcome::Unchanged { .. } => tracing::debug!("knowledge base unchanged"),
            }
            if matches!(outcome, load::Outcome::Loaded { .. }) {
                // Our own load: do not wait for the notification to come back.
                state.cache.flush().await;
            }
            *state.components.ib.write().await = "ok".into();
            sync_graph(state, kb).await;
        }
        Err(err) => {
            let active = load::active_checksum(&state.db).await.ok().flatten();
            tracing::error!(error = format!("{err:#}"), source = %source_text, "knowledge base load failed");
            let previous = if active.is_some() {
                "previous version serving"
            } else {
                "no version loaded"
            };
            *state.components.ib.write().await =
                format!("failed: {} ({previous})", first_line(&format!("{err:#}")));
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Brings the Neo4j mirror up to the active version (or reports it down).
async fn sync_graph(state: &KbState, kb: Option<model::Kb>) {
    let Some(graph) = &state.graph else { return };
    if !graph.ping().await {
        *state.components.neo4j.write().await = "down".into();
        return;
    }
    let active = load::active_checksum(&state.db)
        .await
        .ok()
        .flatten()
        .map(|(c, _)| c);
    let mirrored = graph.mirrored_checksum().await.ok().flatten();
    let kb = match kb {
        Some(kb) => Some(kb),
        None if active.is_some() && active != mirrored => {
            let dir = state.source.as_ref().clone();
            tokio::task::spawn_blocking(move || model::read_and_verify(&dir).ok())
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    if let Some(kb) = kb
        && Some(&kb.checksum) != mirrored.as_ref()
        && let Err(err) = graph.mirror(&kb).await
    {
        tracing::warn!(error = %err, "neo4j mirror failed; graph queries use PostgreSQL");
        *state.components.neo4j.write().await = "down".into();
        return;
    }
    *state.components.neo4j.write().await = "ok".into();
}

/// Re-checks the source every `interval` (`KB_REFRESH_INTERVAL`) and Neo4j every minute.
pub async fn refresh_loop(state: KbState, interval: Option<Duration>, stop: CancellationToken) {
    let mut kb_tick = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    let mut graph_tick = tokio::time::interval(Duration::from_secs(60));
    kb_tick.tick().await;
    graph_tick.tick().await;
    read_into_memory(&state).await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = kb_tick.tick(), if interval.is_some() => {
                refresh(&state).await;
                read_into_memory(&state).await;
            }
            _ = graph_tick.tick(), if state.graph.is_some() => sync_graph(&state, None).await,
        }
    }
}

/// Reads the active version into memory now (the chat's snapshot, the search index), so that
/// the first question or search after start-up, or after a new version, does not wait for it.
async fn read_into_memory(state: &KbState) {
    let started = std::time::Instant::now();
    if let Err(err) = retrieve::active(state).await {
        tracing::warn!(
            error = format!("{err:#}"),
            "reading the KB into memory failed; the first chat question will try again"
        );
    }
    // A real search: the index is loaded the way any search loads it.
    if let Err(err) = state
        .search
        .search(&state.db, "encryption", None, None, 1, 0)
        .await
    {
        tracing::warn!(error = %err, "reading the KB search index failed; the first search will try again");
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "KB read into memory"
    );
}

pub type SharedGraph = Option<Arc<graph::KbGraph>>;
