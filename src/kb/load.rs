//! Loading a verified KB into PostgreSQL: one transaction, versioned, idempotent, one loader at a
//! time across replicas (advisory lock), and the previous version serving until commit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{PgPool, Postgres, Transaction};

use super::model::{self, Kb, MANIFEST};

/// Arbitrary but fixed: the advisory lock that serialises KB loads across replicas.
const LOAD_LOCK: i64 = 0x6b62_6c6f_6164; // "kbload"
const BATCH: usize = 5_000;
/// Bumped whenever the loader writes something an older loader did not (new columns): a version
/// loaded by an older loader is loaded again even when its data is unchanged.
pub const LOADER_VERSION: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged {
        kb_version: String,
    },
    Loaded {
        kb_version: String,
        entities: usize,
        relationships: usize,
        elapsed: Duration,
    },
}

/// Checksum of the manifest at `dir`, after checking that the data files are the ones it
/// describes (every listed file with its size and SHA-256, no unlisted data file). Hashing the
/// shipped KB takes milliseconds; trusting the manifest alone would call a directory edited
/// without `kb manifest` "unchanged" and keep serving the old version.
pub fn manifest_checksum(dir: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let manifest: model::Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid manifest", dir.join(MANIFEST).display()))?;
    let mut differing = Vec::new();
    for file in &manifest.files {
        match std::fs::read(dir.join(&file.path)) {
            Ok(data)
                if data.len() as u64 == file.bytes && model::sha256_hex(&data) == file.sha256 => {}
            Ok(_) => differing.push(format!("{} (changed)", file.path)),
            Err(_) => differing.push(format!("{} (missing)", file.path)),
        }
    }
    for path in model::data_files(dir) {
        if !manifest.files.iter().any(|f| f.path == path) {
            differing.push(format!("{path} (not listed)"));
        }
    }
    if !differing.is_empty() {
        anyhow::bail!(
            "the data files in {} differ from its {MANIFEST}: {}; run `cloud-optimizer kb manifest {}` after editing data",
            dir.display(),
            differing.join(", "),
            dir.display()
        );
    }
    Ok(model::sha256_hex(&bytes))
}

/// Checksum and kb_version of the active version, when one is active and was written by this
/// loader (an older loader's version counts as absent, so it is loaded again).
pub async fn active_checksum(pool: &PgPool) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "SELECT checksum, kb_version FROM kb_versions WHERE active AND loader_version = $1",
    )
    .bind(LOADER_VERSION)
    .fetch_optional(pool)
    .await
}

/// Loads `dir` unless the active version already has its checksum. Verification happens first
/// and nothing is written when it fails.
pub async fn load_dir(pool: &PgPool, dir: &Path, source: &str) -> anyhow::Result<Outcome> {
    let checksum = manifest_checksum(dir)?;
    if let Some((active, kb_version)) = active_checksum(pool).await?
        && active == checksum
    {
        return Ok(Outcome::Unchanged { kb_version });
    }
    let path: PathBuf = dir.to_path_buf();
    let kb = tokio::task::spawn_blocking(move || model::read_and_verify(&path)).await??;
    load(pool, &kb, source).await
}

pub async fn load(pool: &PgPool, kb: &Kb, source: &str) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOAD_LOCK)
        .execute(&mut *tx)
        .await?;
    // Another replica may have loaded the same content while we waited for the lock.
    let active: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM kb_versions WHERE active AND loader_version = $1")
            .bind(LOADER_VERSION)
            .fetch_optional(&mut *tx)
            .await?;
    if active.as_deref() == Some(kb.checksum.as_str()) {
        return Ok(Outcome::Unchanged {
            kb_version: kb.kb_version.clone(),
        });
    }
    let stats = serde_json::json!({
        "frameworks": kb.frameworks.len(),
        "controls": kb.controls.len(),
        "checks": kb.checks.len(),
        "remediations": kb.remediations.len(),
        "services": kb.services.len(),
        "relationships": kb.relationships.len(),
    });
    let version_id: i64 = sqlx::query_scalar(
        "INSERT INTO kb_versions (kb_version, checksum, source, stats, loader_version)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&kb.kb_version)
    .bind(&kb.checksum)
    .bind(source)
    .bind(&stats)
    .bind(LOADER_VERSION)
    .fetch_one(&mut *tx)
    .await?;

    insert_frameworks(&mut tx, version_id, kb).await?;
    insert_controls(&mut tx, version_id, kb).await?;
    insert_checks(&mut tx, version_id, kb).await?;
    insert_remediations(&mut tx, version_id, kb).await?;
    insert_services(&mut tx, version_id, kb).await?;
    insert_relationships(&mut tx, version_id, kb).await?;

    sqlx::query("UPDATE kb_versions SET active = false WHERE active")
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE kb_versions SET active = true WHERE id = $1")
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM kb_versions WHERE id <> $1")
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
    crate::events::publish(
        &mut *tx,
        "kb.updated",
        serde_json::json!({"kb_version": kb.kb_version, "checksum": kb.checksum, "counts": stats}),
    )
    .await?;
    tx.commit().await?;
    // Fresh statistics, or the planner guesses one row per table and traversals go quadratic.
    sqlx::query("ANALYZE kb_frameworks, kb_controls, kb_checks, kb_remediations, kb_services, kb_relationships")
        .execute(pool)
        .await?;
    Ok(Outcome::Loaded {
        kb_version: kb.kb_version.clone(),
        entities: kb.entity_count(),
        relationships: kb.relationships.len(),
        elapsed: started.elapsed(),
    })
}

async fn insert_frameworks(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    for fw in &kb.frameworks {
        sqlx::query(
            "INSERT INTO kb_frameworks (version_id, key, id, version, name, publisher, url, summary, kinds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(version)
        .bind(fw.key())
        .bind(&fw.id)
        .bind(&fw.version)
        .bind(&fw.name)
        .bind(&fw.publisher)
        .bind(&fw.url)
        .bind(&fw.summary)
        .bind(&fw.kinds)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_controls(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    let aliases = control_alias_keys(kb);
    for chunk in kb.controls.chunks(BATCH) {
        let col = |f: fn(&model::Control) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO kb_controls (version_id, id, framework, native_id, kind, parent_id, title, summary, url,
                                      technical, services, attributes, alias_keys)
             SELECT $1, id, framework, native_id, kind, parent_id, title, summary, url, technical,
                    ARRAY(SELECT jsonb_array_elements_text(services)), attributes,
                    ARRAY(SELECT jsonb_array_elements_text(alias_keys))
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::bool[], $11::jsonb[], $12::jsonb[], $13::jsonb[])
                  AS t(id, framework, native_id, kind, parent_id, title, summary, url, technical, services, attributes,
                       alias_keys)",
        )
        .bind(version)
        .bind(col(|c| c.id.clone()))
        .bind(col(|c| c.framework.clone()))
        .bind(col(|c| c.native_id.clone()))
        .bind(col(|c| c.file.kind.clone()))
        .bind(chunk.iter().map(|c| c.parent_id.clone()).collect::<Vec<Option<String>>>())
        .bind(col(|c| c.file.title.clone()))
        .bind(col(|c| c.file.summary.clone()))
        .bind(col(|c| c.file.url.clone()))
        .bind(chunk.iter().map(|c| c.file.technical).collect::<Vec<bool>>())
        .bind(chunk.iter().map(|c| serde_json::json!(c.file.services)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| serde_json::Value::Object(c.file.attributes.clone())).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| serde_json::json!(aliases.get(c.id.as_str()))).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The lookup keys of every control (`kb::ids`), by control id.
fn control_alias_keys(kb: &Kb) -> std::collections::HashMap<&str, Vec<String>> {
    let mut natives: std::collections::HashMap<&str, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for control in &kb.controls {
        natives
            .entry(control.framework.as_str())
            .or_default()
            .insert(control.native_id.clone());
    }
    kb.controls
        .iter()
        .map(|c| {
            let framework_id = c.framework.split('@').next().unwrap_or_default();
            let keys = super::ids::alias_keys(
                framework_id,
                &c.native_id,
                &c.file.kind,
                &c.file.aliases,
                &natives[c.framework.as_str()],
            );
            (c.id.as_str(), keys)
        })
        .collect()
}

async fn insert_checks(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    for chunk in kb.checks.chunks(BATCH) {
        let col = |f: fn(&model::Check) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO kb_checks (version_id, id, title, description, services, resource_type, severity, refs, remediation_id)
             SELECT $1, id, title, description, ARRAY(SELECT jsonb_array_elements_text(services)), resource_type,
                    severity, refs, remediation_id
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[], $8::jsonb[], $9::text[])
                  AS t(id, title, description, services, resource_type, severity, refs, remediation_id)",
        )
        .bind(version)
        .bind(col(|c| format!("check:kb:{}", c.id)))
        .bind(col(|c| c.title.clone()))
        .bind(col(|c| c.description.clone()))
        .bind(chunk.iter().map(|c| serde_json::json!(c.services)).collect::<Vec<_>>())
        .bind(col(|c| c.resource_type.clone()))
        .bind(col(|c| c.severity.clone()))
        .bind(chunk.iter().map(|c| serde_json::json!(c.refs)).collect::<Vec<_>>())
        .bind(col(|c| format!("remediation:kb:{}", c.remediation)))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_remediations(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    for chunk in kb.remediations.chunks(BATCH) {
        sqlx::query(
            "INSERT INTO kb_remediations (version_id, id, title, steps, cli, cloudformation, terraform, search)
             SELECT $1, id, title, ARRAY(SELECT jsonb_array_elements_text(steps)), cli, cloudformation, terraform,
                    setweight(to_tsvector('english', title), 'A') ||
                    setweight(to_tsvector('english', (SELECT string_agg(s, ' ') FROM jsonb_array_elements_text(steps) s)), 'B')
             FROM UNNEST($2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::text[])
                  AS t(id, title, steps, cli, cloudformation, terraform)",
        )
        .bind(version)
        .bind(chunk.iter().map(|r| format!("remediation:kb:{}", r.id)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.title.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| serde_json::json!(r.steps)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.cli.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.cloudformation.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.terraform.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_services(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO kb_services (version_id, id, name, category)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[])",
    )
    .bind(version)
    .bind(kb.services.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
    .bind(
        kb.services
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        kb.services
            .iter()
            .map(|s| s.category.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_relationships(
    tx: &mut Transaction<'_, Postgres>,
    version: i64,
    kb: &Kb,
) -> sqlx::Result<()> {
    for chunk in kb.relationships.chunks(BATCH * 4) {
        sqlx::query(
            "INSERT INTO kb_relationships (version_id, type, from_id, to_id, basis, strength, rationale)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])",
        )
        .bind(version)
        .bind(chunk.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.from.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.to.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.basis.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.strength.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.rationale.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
