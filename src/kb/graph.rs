//! Graph traversals of the KB in Neo4j: control → checks, control ↔ related controls. PostgreSQL
//! answers by default (in the control documents PostgreSQL precomputes per KB version); with `NEO4J_URI` the KB
//! is mirrored into Neo4j at load time and traversals go there, falling back to PostgreSQL
//! whenever Neo4j fails. All Neo4j code is in this file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use neo4rs::{BoltType, Graph, query};
use secrecy::ExposeSecret;

use super::api::{MappedCheck, RelatedControl};
use super::model::Kb;
use crate::config::Neo4jConfig;

/// Related controls returned per control, by either engine.
const RELATED_LIMIT: i64 = 25;

/// The Neo4j mirror.
pub struct KbGraph {
    config: Neo4jConfig,
    /// `None` until a connection succeeds: Neo4j may come up after us.
    graph: tokio::sync::Mutex<Option<Graph>>,
    available: AtomicBool,
}

impl KbGraph {
    /// Never fails and does not connect yet: the first KB refresh pings (and mirrors), and an
    /// unreachable Neo4j is retried every minute.
    pub async fn connect(config: &Neo4jConfig) -> Self {
        Self {
            config: config.clone(),
            graph: tokio::sync::Mutex::new(None),
            available: AtomicBool::new(false),
        }
    }

    async fn graph(&self) -> anyhow::Result<Graph> {
        let mut slot = self.graph.lock().await;
        if let Some(graph) = slot.as_ref() {
            return Ok(graph.clone());
        }
        let graph = Graph::new(
            &self.config.uri,
            &self.config.user,
            self.config.password.expose_secret(),
        )
        .await?;
        *slot = Some(graph.clone());
        Ok(graph)
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Connects if needed and updates availability; `/health` reports it as `neo4j`.
    pub async fn ping(&self) -> bool {
        // neo4rs retries a refused connection with its own long backoff: never let that hold up
        // start-up or a health check.
        let attempt = async {
            let graph = self.graph().await?;
            graph.run(query("RETURN 1")).await?;
            Ok::<_, anyhow::Error>(())
        };
        let ok = match tokio::time::timeout(std::time::Duration::from_secs(3), attempt).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "neo4j not reachable");
                false
            }
            Err(_) => {
                tracing::debug!("neo4j did not answer within 3 s");
                false
            }
        };
        self.available.store(ok, Ordering::Relaxed);
        ok
    }

    /// The checksum of the KB the mirror holds, if any.
    pub async fn mirrored_checksum(&self) -> anyhow::Result<Option<String>> {
        let mut rows = self
            .graph()
            .await?
            .execute(query("MATCH (m:KbMeta) RETURN m.checksum AS checksum"))
            .await?;
        Ok(match rows.next().await? {
            Some(row) => row.get::<String>("checksum").ok(),
            None => None,
        })
    }

    /// Replaces the mirror with `kb` in one Neo4j transaction.
    pub async fn mirror(&self, kb: &Kb) -> anyhow::Result<()> {
        let mut txn = self.graph().await?.start_txn().await?;
        txn.run(query(
            "MATCH (n) WHERE n:Control OR n:Check OR n:KbMeta DETACH DELETE n",
        ))
        .await?;
        txn.run(query(
            "CREATE INDEX kb_control_id IF NOT EXISTS FOR (c:Control) ON (c.id)",
        ))
        .await
        .ok();
        for chunk in kb.controls.chunks(2000) {
            let rows: Vec<HashMap<String, BoltType>> = chunk
                .iter()
                .map(|c| {
                    HashMap::from([
                        ("id".to_string(), c.id.clone().into()),
                        ("framework".to_string(), c.framework.clone().into()),
                        ("native_id".to_string(), c.native_id.clone().into()),
                        ("title".to_string(), c.file.title.clone().into()),
                    ])
                })
                .collect();
            txn.run(
                query("UNWIND $rows AS row CREATE (c:Control) SET c = row").param("rows", rows),
            )
            .await?;
        }
        for chunk in kb.checks.chunks(2000) {
            let rows: Vec<HashMap<String, BoltType>> = chunk
                .iter()
                .map(|k| {
                    HashMap::from([
                        ("id".to_string(), format!("check:kb:{}", k.id).into()),
                        ("title".to_string(), k.title.clone().into()),
                        ("severity".to_string(), k.severity.clone().into()),
                        ("services".to_string(), k.services.clone().into()),
                    ])
                })
                .collect();
            txn.run(query("UNWIND $rows AS row CREATE (k:Check) SET k = row").param("rows", rows))
                .await?;
        }
        for (kind, cypher) in [
            (
                "maps_to",
                "UNWIND $rows AS row MATCH (c:Control {id: row.from}), (k:Check {id: row.to}) CREATE (c)-[:MAPS_TO {basis: row.basis, strength: row.strength, rationale: row.rationale}]->(k)",
            ),
            (
                "related_to",
                "UNWIND $rows AS row MATCH (a:Control {id: row.from}), (b:Control {id: row.to}) CREATE (a)-[:RELATED_TO {basis: row.basis}]->(b)",
            ),
        ] {
            let edges: Vec<HashMap<String, BoltType>> = kb
                .relationships
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| {
                    HashMap::from([
                        ("from".to_string(), r.from.clone().into()),
                        ("to".to_string(), r.to.clone().into()),
                        ("basis".to_string(), r.basis.clone().into()),
                        (
                            "strength".to_string(),
                            r.strength.clone().unwrap_or_default().into(),
                        ),
                        (
                            "rationale".to_string(),
                            r.rationale.clone().unwrap_or_default().into(),
                        ),
                    ])
                })
                .collect();
            for chunk in edges.chunks(5000) {
                txn.run(query(cypher).param("rows", chunk.to_vec())).await?;
            }
        }
        txn.run(
            query("CREATE (:KbMeta {checksum: $checksum, kb_version: $version})")
                .param("checksum", kb.checksum.clone())
                .param("version", kb.kb_version.clone()),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Checks mapped to a control and related controls of other frameworks (curated links first,
    /// then those derived from shared checks, most shared first): the same answers as the
    /// PostgreSQL function `kb_control_body` (see the migrations), from the mirror.
    pub async fn control_links(
        &self,
        control_id: &str,
    ) -> anyhow::Result<(Vec<MappedCheck>, Vec<RelatedControl>)> {
        let result = self.control_links_inner(control_id).await;
        if result.is_err() {
            self.available.store(false, Ordering::Relaxed);
        }
        result
    }

    async fn control_links_inner(
        &self,
        control_id: &str,
    ) -> anyhow::Result<(Vec<MappedCheck>, Vec<RelatedControl>)> {
        let mut checks = Vec::new();
        let mut rows = self
            .graph()
            .await?
            .execute(
                query(
                    "MATCH (:Control {id: $id})-[r:MAPS_TO]->(k:Check)
                     RETURN k.id AS id, k.title AS title, k.severity AS severity, k.services AS services, r.basis AS basis,
                            r.strength AS strength, r.rationale AS rationale
                     ORDER BY k.id",
                )
                .param("id", control_id),
            )
            .await?;
        while let Some(row) = rows.next().await? {
            checks.push(MappedCheck {
                id: row.get("id")?,
                title: row.get("title")?,
                severity: row.get("severity")?,
                services: row.get("services")?,
                basis: row.get("basis")?,
                strength: row.get::<String>("strength").ok().filter(|s| !s.is_empty()),
                rationale: row
                    .get::<String>("rationale")
                    .ok()
                    .filter(|s| !s.is_empty()),
            });
        }
        let mut related: Vec<RelatedControl> = Vec::new();
        let mut rows = self
            .graph()
            .await?
            .execute(
                query(
                    "MATCH (c:Control {id: $id})-[r:RELATED_TO]-(o:Control) WHERE o.framework <> c.framework
                     RETURN o.id AS id, o.framework AS framework, o.native_id AS native_id, o.title AS title, r.basis AS basis,
                            0 AS shared
                     UNION
                     MATCH (c:Control {id: $id})-[a:MAPS_TO]->(k:Check)<-[b:MAPS_TO]-(o:Control)
                     WHERE o.framework <> c.framework AND a.strength IN ['direct', 'partial'] AND b.strength IN ['direct', 'partial']
                     RETURN o.id AS id, o.framework AS framework, o.native_id AS native_id, o.title AS title,
                            'shared-checks' AS basis, count(k) AS shared",
                )
                .param("id", control_id),
            )
            .await?;
        while let Some(row) = rows.next().await? {
            let id: String = row.get("id")?;
            let shared: i64 = row.get("shared")?;
            let basis: String = row.get("basis")?;
            if related.iter().any(|r| r.id == id) {
                continue;
            }
            related.push(RelatedControl {
                id,
                framework: row.get("framework")?,
                native_id: row.get("native_id")?,
                title: row.get("title")?,
                basis,
                shared_checks: shared,
            });
        }
        related.sort_by(|a, b| {
            (
                a.basis == "shared-checks",
                std::cmp::Reverse(a.shared_checks),
                &a.framework,
                &a.native_id,
            )
                .cmp(&(
                    b.basis == "shared-checks",
                    std::cmp::Reverse(b.shared_checks),
                    &b.framework,
                    &b.native_id,
                ))
        });
        related.truncate(RELATED_LIMIT as usize);
        Ok((checks, related))
    }
}
