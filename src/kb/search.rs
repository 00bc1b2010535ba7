//! Ranked full-text search over controls, checks and remediation. A query that names a control
//! id ("PCI DSS 8.4.2", "HIPAA 164.312(a)(2)(iv)", "Art. 32", "IAM.6") returns that control first.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Hit {
    /// `control`, `check` or `remediation`.
    pub kind: String,
    pub id: String,
    pub title: String,
    /// For controls: the framework key, e.g. `pci-dss@4.0.1`.
    pub framework: Option<String>,
    pub native_id: Option<String>,
    /// Why it matched: matched words are wrapped in `**`.
    pub snippet: String,
    pub score: f64,
    /// `id` when the query named this control, `text` otherwise.
    pub matched: String,
}

static ID_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        \b(?:art(?:icle)?\.?\s*(\d{1,2}))\b            # GDPR article
        | \b(164\.\d{3}(?:\([a-z0-9]{1,5}\))*)           # HIPAA section and paragraphs
        | \b(sec\d{2}(?:-bp\d{2})?)\b                  # Well-Architected
        | \b((?:cc|pi|a|c|p)\d\.\d{1,2})\b             # SOC 2
        | \b([a-z][a-z0-9]{1,24}\.\d{1,3})\b             # Security Hub style (IAM.6, S3.1)
        | \b((?:a\d\.)?\d{1,2}(?:\.\d{1,2}){1,3})\b      # PCI DSS / CIS numbering
        ",
    )
    .expect("static regex")
});

/// Candidate native ids named in a query, lower-cased.
pub fn id_candidates(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for caps in ID_PATTERN.captures_iter(q) {
        if let Some(article) = caps.get(1) {
            out.push(format!("art. {}", article.as_str()));
            continue;
        }
        if let Some(m) = (2..=6).filter_map(|i| caps.get(i)).next() {
            out.push(m.as_str().to_ascii_lowercase());
        }
    }
    out.dedup();
    out
}

/// Framework ids a query hints at ("PCI DSS 8.4.2" → pci-dss).
pub fn framework_hints(q: &str) -> Vec<&'static str> {
    let lower = q.to_ascii_lowercase();
    let mut out = Vec::new();
    for (needle, framework) in [
        ("pci", "pci-dss"),
        ("hipaa", "hipaa-sr"),
        ("soc 2", "soc2"),
        ("soc2", "soc2"),
        ("gdpr", "gdpr"),
        ("cis", "cis-aws"),
        ("foundational", "aws-fsbp"),
        ("fsbp", "aws-fsbp"),
        ("security hub", "aws-fsbp"),
        ("well-architected", "aws-wa-security"),
        ("well architected", "aws-wa-security"),
    ] {
        if lower.contains(needle) && !out.contains(&framework) {
            out.push(framework);
        }
    }
    out
}

const ACTIVE: &str = "(SELECT id FROM kb_versions WHERE active)";

pub async fn search(
    db: &PgPool,
    q: &str,
    framework: Option<&str>,
    service: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Hit>> {
    let candidates = id_candidates(q);
    let hints = framework_hints(q);
    let touches_4 = super::touches_service("$4");
    let touches_3 = super::touches_service("$3");
    let mut hits: Vec<Hit> = if candidates.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(sql!(
            "SELECT 'control' AS kind, c.id, c.title, c.framework, c.native_id,
                    c.title || ' — ' || c.summary AS snippet, 100.0::float8 AS score, 'id' AS matched
             FROM kb_controls c
             WHERE c.version_id = {ACTIVE} AND lower(c.native_id) = ANY($1)
               AND ($2::text IS NULL OR c.framework = $2)
               AND (cardinality($3::text[]) = 0 OR split_part(c.framework, '@', 1) = ANY($3))
               AND ($4::text IS NULL OR {touches_4})
             ORDER BY array_position($1, lower(c.native_id)), c.framework
             LIMIT $5"
        ))
        .bind(&candidates)
        .bind(framework)
        .bind(hints.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .bind(service)
        .bind(limit)
        .fetch_all(db)
        .await?
    };

    let text: Vec<Hit> = sqlx::query_as(sql!(
        "WITH q AS (
            SELECT to_tsquery('english', nullif(regexp_replace(plainto_tsquery('english', $1)::text, ' & ', ' | ', 'g'), '')) AS tsq
         ),
         mapped AS (
            SELECT r.to_id AS check_id FROM kb_relationships r
            WHERE r.version_id = {ACTIVE} AND r.type = 'maps_to' AND $2::text IS NOT NULL
              AND r.from_id LIKE 'control:' || $2 || ':%'
         ),
         hits AS (
            SELECT 'control' AS kind, c.id, c.title, c.framework, c.native_id,
                   c.title || '. ' || c.summary AS body, ts_rank_cd(c.search, q.tsq, 32) AS score
            FROM kb_controls c, q
            WHERE c.version_id = {ACTIVE} AND c.search @@ q.tsq
              AND ($2::text IS NULL OR c.framework = $2)
              AND ($3::text IS NULL OR {touches_3})
            UNION ALL
            SELECT 'check', k.id, k.title, NULL, NULL, k.title || '. ' || k.description, ts_rank_cd(k.search, q.tsq, 32)
            FROM kb_checks k, q
            WHERE k.version_id = {ACTIVE} AND k.search @@ q.tsq
              AND ($2::text IS NULL OR k.id IN (SELECT check_id FROM mapped))
              AND ($3::text IS NULL OR $3 = ANY(k.services))
            UNION ALL
            SELECT 'remediation', m.id, m.title, NULL, NULL, m.title || '. ' || array_to_string(m.steps, ' '),
                   ts_rank_cd(m.search, q.tsq, 32)
            FROM kb_remediations m, q
            WHERE m.version_id = {ACTIVE} AND m.search @@ q.tsq
              AND ($2::text IS NULL AND $3::text IS NULL OR EXISTS (
                    SELECT 1 FROM kb_checks k WHERE k.version_id = m.version_id AND k.remediation_id = m.id
                      AND ($2::text IS NULL OR k.id IN (SELECT check_id FROM mapped))
                      AND ($3::text IS NULL OR $3 = ANY(k.services))))
            ORDER BY score DESC, id
            LIMIT $4
         )
         SELECT kind, id, title, framework, native_id,
                ts_headline('english', body, q.tsq, 'MaxWords=35, MinWords=12, MaxFragments=2, StartSel=**, StopSel=**') AS snippet,
                score::float8 AS score, 'text' AS matched
         FROM hits, q ORDER BY score DESC, id"
    ))
    .bind(q)
    .bind(framework)
    .bind(service)
    .bind(limit)
    .fetch_all(db)
    .await?;
    for hit in text {
        if hits.len() as i64 >= limit {
            break;
        }
        if !hits.iter().any(|h| h.id == hit.id) {
            hits.push(hit);
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ids_of_every_framework_shape() {
        assert_eq!(id_candidates("PCI DSS 8.4.2 MFA"), vec!["8.4.2"]);
        assert_eq!(
            id_candidates("HIPAA 164.312(a)(2)(iv) encryption"),
            vec!["164.312(a)(2)(iv)"]
        );
        assert_eq!(id_candidates("GDPR Article 32"), vec!["art. 32"]);
        assert_eq!(id_candidates("what is Art. 5?"), vec!["art. 5"]);
        assert_eq!(id_candidates("SOC 2 CC6.1"), vec!["cc6.1"]);
        assert_eq!(id_candidates("Security Hub IAM.6"), vec!["iam.6"]);
        assert_eq!(id_candidates("SEC08-BP02"), vec!["sec08-bp02"]);
        assert!(id_candidates("how do I encrypt s3 buckets").is_empty());
    }

    #[test]
    fn hints_frameworks() {
        assert_eq!(framework_hints("PCI DSS 8.4.2"), vec!["pci-dss"]);
        assert_eq!(framework_hints("HIPAA and GDPR"), vec!["hipaa-sr", "gdpr"]);
    }
}
